//! The crate's one error type.

/// Everything a decoder or verifier in this crate can reject, with the offending values.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("frame packLen {len} exceeds the limit of {max} bytes")]
    FrameTooLong { len: i64, max: usize },
    #[error("frame packLen {len} is shorter than the 16-byte header")]
    FrameTooShort { len: i64 },
    #[error("frame headerLen is {got}, must be 16")]
    BadHeaderLen { got: i16 },
    #[error(
        "WebSocket message of {msg_len} bytes holds a goim frame with packLen {pack_len}; they must be equal"
    )]
    WsLengthMismatch { pack_len: usize, msg_len: usize },
    #[error("inner frame at offset {offset} is malformed: {reason}")]
    BadInnerFrame { offset: usize, reason: &'static str },

    #[error("bad Recover body: {0}")]
    BadRecover(String),

    #[error("WebSocket handshake: {0}")]
    Handshake(String),
    #[error("WebSocket handshake request is larger than {max} bytes")]
    HandshakeTooLarge { max: usize },
    #[error("WebSocket path {path:?} is not /sub")]
    WrongPath { path: String },
    #[error("WebSocket origin {origin:?} is not allowed")]
    OriginNotAllowed { origin: String },
    /// The server refuses the connection (a limit): `status` is the HTTP status (429 or 503).
    #[error("{reason}")]
    Refused { status: u16, reason: String },
    #[error("WebSocket frame has reserved bits set (rsv1={rsv1}, rsv2={rsv2}, rsv3={rsv3})")]
    WsReservedBits { rsv1: bool, rsv2: bool, rsv3: bool },
    #[error("WebSocket frame uses unknown opcode {0}")]
    WsUnknownOpcode(u8),
    #[error("WebSocket frame payload of {len} bytes exceeds the limit of {max}")]
    WsTooLarge { len: u64, max: usize },
    #[error("WebSocket control frame is fragmented or longer than 125 bytes")]
    WsBadControl,
    #[error("WebSocket frame header: {0}")]
    WsHeader(String),
    #[error("WebSocket continuation frame without a message to continue")]
    WsStrayContinuation,
    #[error("WebSocket data frame started while a fragmented message is still open")]
    WsInterleavedMessage,

    #[error("auth token is not valid JSON: {0}")]
    TokenNotJson(String),
    #[error("auth token has no signature (hmac mode requires \"sig\")")]
    TokenUnsigned,
    #[error("auth token has no expiry (hmac mode requires \"exp\")")]
    TokenNoExpiry,
    #[error("auth token signature does not match")]
    TokenBadSignature,
    #[error("auth token expired at {exp} (now {now})")]
    TokenExpired { exp: i64, now: i64 },
    #[error("auth token field {field} contains a newline (not allowed in signed tokens)")]
    TokenNewline { field: &'static str },

    #[error("link message of {len} bytes exceeds the limit of {max}")]
    LinkTooLong { len: usize, max: usize },
    #[error("link message does not decode: {0}")]
    LinkDecode(String),
    #[error("link message has no body")]
    LinkEmpty,

    #[error("queue message (goim PushMsg) does not decode: {0}")]
    PushDecode(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, stable name for metrics labels and close reasons (`frame_too_long`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::FrameTooLong { .. } => "frame_too_long",
            Error::FrameTooShort { .. } => "frame_too_short",
            Error::BadHeaderLen { .. } => "bad_header_len",
            Error::WsLengthMismatch { .. } => "ws_length_mismatch",
            Error::BadInnerFrame { .. } => "bad_inner_frame",
            Error::BadRecover(_) => "bad_recover",
            Error::Handshake(_) => "ws_handshake",
            Error::HandshakeTooLarge { .. } => "ws_handshake_too_large",
            Error::WrongPath { .. } => "ws_wrong_path",
            Error::OriginNotAllowed { .. } => "ws_origin_not_allowed",
            Error::Refused { .. } => "refused",
            Error::WsReservedBits { .. } => "ws_reserved_bits",
            Error::WsUnknownOpcode(_) => "ws_unknown_opcode",
            Error::WsTooLarge { .. } => "ws_too_large",
            Error::WsBadControl => "ws_bad_control",
            Error::WsHeader(_) => "ws_header",
            Error::WsStrayContinuation => "ws_stray_continuation",
            Error::WsInterleavedMessage => "ws_interleaved_message",
            Error::TokenNotJson(_) => "token_not_json",
            Error::TokenUnsigned => "token_unsigned",
            Error::TokenNoExpiry => "token_no_expiry",
            Error::TokenBadSignature => "token_bad_signature",
            Error::TokenExpired { .. } => "token_expired",
            Error::TokenNewline { .. } => "token_newline",
            Error::LinkTooLong { .. } => "link_too_long",
            Error::LinkDecode(_) => "link_decode",
            Error::LinkEmpty => "link_empty",
            Error::PushDecode(_) => "push_decode",
        }
    }
}
