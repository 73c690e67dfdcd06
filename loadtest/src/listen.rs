//! `corecast listen`: one blocking goim client that joins a room and prints every message that
//! arrives, for demos and for ops (is this room getting pushes? what do they look like?).
//!
//! Data flows like this:
//! - **args → connection**: [`ListenArgs`] names the gateway (`--tcp host:port`, or `--ws` for
//!   `ws://host:port/sub`) and the token; `run` connects with `std::net::TcpStream` and, for
//!   WebSocket, writes the HTTP upgrade by hand (`wire::ws_upgrade`) and checks the `101`.
//! - **auth**: it sends op 7 with the goim open-mode JSON built from the flags (or `--token` as it
//!   is, e.g. the output of `corecast token` for hmac mode) and waits for op 8. A server that
//!   closes instead is an error naming its reason: the op-6 (DisconnectReply) body on TCP, the
//!   Close frame's code and reason on WebSocket.
//! - **bytes → frames**: received bytes collect in one buffer; on TCP [`protocol::frame::split`]
//!   cuts goim frames off it; on WebSocket [`protocol::ws::parse_frame`] cuts RFC 6455 frames
//!   (answering pings, joining fragments) and [`protocol::frame::decode_ws_message`] decodes the
//!   goim frame of each message. Anything malformed ends the run with an error, never a panic.
//! - **frames → lines**: an op-9 frame (the WebSocket form of a push) holds inner frames, each a
//!   message; on TCP the inner frames arrive bare, and every frame whose op is not one goim or
//!   corecast defines is a message. Each message becomes one line on `out` (text, or JSON with
//!   `--json`); other frames (replies, op 6) are printed compactly; heartbeat replies only when
//!   debug logging is on.
//! - **time**: the socket's read timeout is set to the time left until the next heartbeat (op 2,
//!   every `--heartbeat-secs`) or the `--seconds` deadline, whichever is first, so an idle
//!   connection sleeps in `read(2)` and wakes exactly when it has something to do.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use protocol::frame::{self, HEADER_LEN, Header};
use protocol::op;
use protocol::token::Token;
use protocol::ws::{self, Kind};
use serde::Serialize;

use crate::wire::{self, Rng};
use crate::{Error, Result};

/// Largest goim frame (TCP) or WebSocket message accepted from the server. Pushes are not held
/// to the 4112-byte client limit (a room batch can be large), so this is the link's limit.
const MAX_SERVER_FRAME: usize = protocol::link::MAX_LINK_MESSAGE;
/// Time for the TCP connect, at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time from connected to the auth reply (WebSocket upgrade included), at most.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes asked of one `read(2)`.
const READ_CHUNK: usize = 64 * 1024;
/// The port `--ws host` means when it names none (goim's WebSocket port).
const WS_DEFAULT_PORT: u16 = 3102;

/// Connect to a gateway, join a room and print every message that arrives.
#[derive(clap::Args, Debug, Clone)]
pub struct ListenArgs {
    /// The gateway's TCP address (host:port); used unless --ws is given.
    #[arg(long, default_value = "127.0.0.1:3101")]
    pub tcp: String,
    /// Listen over WebSocket instead of TCP: ws://host:port/sub, or just host:port.
    #[arg(long)]
    pub ws: Option<String>,
    /// The room to join (the token's room_id).
    #[arg(long, default_value = "live://1000")]
    pub room: String,
    /// The token's member id.
    #[arg(long, default_value_t = 0)]
    pub mid: i64,
    /// The token's connection key (empty: the gateway generates one).
    #[arg(long, default_value = "")]
    pub key: String,
    /// The token's platform.
    #[arg(long, default_value = "cli")]
    pub platform: String,
    /// Ops accepted for key pushes and broadcasts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub accepts: Vec<i32>,
    /// The op-7 body to send as it is, instead of the one built from --room, --mid, --key,
    /// --platform and --accepts (hmac mode: the output of `corecast token`).
    #[arg(long)]
    pub token: Option<String>,
    /// Exit after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Exit after this many seconds.
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Print one JSON object per line ({"op","body","ver","seq"}) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Seconds between two heartbeats (op 2).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_secs: u64,
    /// After auth, recover the room from this offset (op 26): print what the room got after
    /// it (the offset of each room message is printed as `@N`, and is `offset` in --json),
    /// then the live stream.
    #[arg(long)]
    pub since: Option<u32>,
}

impl Default for ListenArgs {
    /// The command line's defaults (`corecast listen` with no flags).
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: ListenArgs,
        }
        <Wrap as clap::Parser>::parse_from(["listen"]).args
    }
}

/// What a run received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenSummary {
    /// Messages printed: inner frames of op-9 frames, and bare push frames on TCP.
    pub messages: u64,
    /// goim frames received from the server (auth and heartbeat replies included; an op-9
    /// frame counts once, whatever it holds).
    pub frames: u64,
}

/// Connects, authenticates and prints what arrives on `out` until `--count` messages, the
/// `--seconds` deadline, or an error (the server closing the connection is one).
pub fn run(args: &ListenArgs, out: &mut dyn Write) -> Result<ListenSummary> {
    let deadline = args
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    if args.heartbeat_secs == 0 {
        return Err(Error::Options("--heartbeat-secs must be at least 1".into()));
    }
    let endpoint = Endpoint::from_args(args)?;
    let token = match &args.token {
        Some(t) => t.clone(),
        None => Token {
            mid: args.mid,
            key: args.key.clone(),
            room_id: args.room.clone(),
            platform: args.platform.clone(),
            accepts: args.accepts.clone(),
            ..Token::default()
        }
        .to_json(),
    };
    // The room the token names (what the gateway joins), for the output.
    let room = match &args.token {
        Some(t) => serde_json::from_str::<Token>(t)
            .map(|t| t.room_id)
            .unwrap_or_default(),
        None => args.room.clone(),
    };

    let mut conn = Conn::open(&endpoint, deadline)?;
    let mut printer = Printer {
        out,
        json: args.json,
        room,
    };
    let mut summary = ListenSummary::default();
    summary.frames += conn.authenticate(&token, &endpoint, deadline)?;
    printer.listening(&endpoint)?;
    if let Some(since) = args.since {
        if printer.room.is_empty() {
            return Err(Error::Options(
                "--since needs a room (--room, or a --token naming one)".into(),
            ));
        }
        let mut recover = Vec::new();
        let body = protocol::history::recover_body(since, &printer.room);
        frame::encode(&mut recover, frame::PUSH_VER, op::RECOVER, 2, &body);
        conn.send(&recover)
            .map_err(|e| Error::io(format!("sending Recover on {endpoint}"), e))?;
    }

    let context = || format!("listening on {endpoint}");
    let every = Duration::from_secs(args.heartbeat_secs);
    // The first heartbeat goes out at once, as goim's JS client does: its reply carries the
    // room's online count (printed at debug).
    let mut next_heartbeat = Instant::now();
    // The op-6 body, if one came: the reason for the close that follows.
    let mut disconnect: Option<String> = None;
    let done = |s: &ListenSummary| args.count.is_some_and(|n| s.messages >= n);
    while !done(&summary) {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        if now >= next_heartbeat {
            conn.send(&wire::heartbeat())
                .map_err(|e| Error::io(format!("sending a heartbeat on {endpoint}"), e))?;
            next_heartbeat = now + every;
        }
        let wake = deadline.map_or(next_heartbeat, |d| d.min(next_heartbeat));
        match conn.next(wake - now).map_err(|e| Error::io(context(), e))? {
            Incoming::Idle => {}
            Incoming::Closed(reason) => {
                printer.flush()?;
                let reason = reason
                    .or(disconnect)
                    .unwrap_or_else(|| "no reason given".into());
                return Err(Error::io(
                    context(),
                    io::Error::new(
                        ErrorKind::ConnectionAborted,
                        format!(
                            "the server closed the connection after {} messages: {reason}",
                            summary.messages
                        ),
                    ),
                ));
            }
            Incoming::Frame(header, body) => {
                summary.frames += 1;
                if header.op == op::DISCONNECT_REPLY {
                    disconnect = Some(String::from_utf8_lossy(&body).into_owned());
                }
                printer
                    .frame(&header, &body, &mut summary, args.count)
                    .map_err(|e| match e {
                        FrameError::Malformed(e) => Error::io(context(), e),
                        FrameError::Output(e) => e,
                    })?;
                printer.flush()?;
            }
        }
    }
    printer.flush()?;
    conn.close();
    Ok(summary)
}

/// Where to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Endpoint {
    /// `host:port`.
    Tcp(String),
    /// `host:port` of `ws://host:port/sub`.
    Ws(String),
}

impl Endpoint {
    fn from_args(args: &ListenArgs) -> Result<Endpoint> {
        match &args.ws {
            Some(spec) => ws_host(spec).map(Endpoint::Ws),
            None => Ok(Endpoint::Tcp(args.tcp.clone())),
        }
    }

    fn addr(&self) -> &str {
        match self {
            Endpoint::Tcp(a) | Endpoint::Ws(a) => a,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp {a}"),
            Endpoint::Ws(a) => write!(f, "ws ws://{a}{}", ws::PATH),
        }
    }
}

/// The `host:port` of a `--ws` value: `ws://host:port/sub`, `ws://host:port` or `host:port`
/// (a missing port is goim's 3102). goim serves WebSocket only at `/sub`, and corecast has no
/// TLS listener, so any other path or scheme is refused here rather than by a silent close.
fn ws_host(spec: &str) -> Result<String> {
    let bad = |why: &str| Err(Error::Options(format!("--ws {spec:?}: {why}")));
    let rest = match spec.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("ws") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("wss") => {
            return bad("wss is not supported (ws://host:port/sub, or host:port)");
        }
        Some((scheme, _)) => return bad(&format!("scheme {scheme} is not ws")),
        None => spec,
    };
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !(path.is_empty() || path == ws::PATH) {
        return bad(&format!(
            "the gateway serves WebSocket only at {}",
            ws::PATH
        ));
    }
    if host.is_empty() {
        return bad("no host");
    }
    // A port is present unless the text after the last ':' is not one (IPv6 "[::1]").
    let has_port = host
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    Ok(if has_port {
        host.to_string()
    } else {
        format!("{host}:{WS_DEFAULT_PORT}")
    })
}

/// The time left until `deadline`, at most `limit`.
fn capped(limit: Duration, deadline: Option<Instant>) -> Duration {
    deadline.map_or(limit, |d| {
        limit.min(d.saturating_duration_since(Instant::now()))
    })
}

/// What [`Conn::next`] found.
#[derive(Debug)]
enum Incoming {
    /// One goim frame (on WebSocket: the frame of one message).
    Frame(Header, Vec<u8>),
    /// The server closed the connection; the WebSocket close code and reason, if any.
    Closed(Option<String>),
    /// Nothing arrived within the wait.
    Idle,
}

/// One client connection over either transport, with its receive buffer.
struct Conn {
    stream: TcpStream,
    ws: bool,
    /// Received bytes; `buf[start..]` is not parsed yet.
    buf: Vec<u8>,
    start: usize,
    /// WebSocket: the payload of a fragmented message so far.
    message: Vec<u8>,
    fragmented: bool,
    rng: Rng,
}

fn malformed(what: &str, e: protocol::Error) -> io::Error {
    io::Error::new(
        ErrorKind::InvalidData,
        format!("malformed {what} from the server: {e}"),
    )
}

impl Conn {
    /// Connects (and upgrades, for WebSocket).
    fn open(endpoint: &Endpoint, deadline: Option<Instant>) -> Result<Conn> {
        let connecting = || format!("connecting to {endpoint}");
        let addrs: Vec<_> = endpoint
            .addr()
            .to_socket_addrs()
            .map_err(|e| Error::io(connecting(), e))?
            .collect();
        let mut last = io::Error::new(ErrorKind::NotFound, "the name resolves to no address");
        let mut stream = None;
        for addr in addrs {
            let wait = capped(CONNECT_TIMEOUT, deadline).max(Duration::from_millis(1));
            match TcpStream::connect_timeout(&addr, wait) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or_else(|| Error::io(connecting(), last))?;
        stream
            .set_nodelay(true)
            .map_err(|e| Error::io(connecting(), e))?;
        let mut conn = Conn {
            stream,
            ws: matches!(endpoint, Endpoint::Ws(_)),
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
            message: Vec::new(),
            fragmented: false,
            rng: Rng::seeded(std::process::id() as usize),
        };
        if let Endpoint::Ws(host) = endpoint {
            conn.upgrade(host, deadline)
                .map_err(|e| Error::io(format!("WebSocket upgrade at {endpoint}"), e))?;
        }
        Ok(conn)
    }

    /// Writes the upgrade request and reads the answer; bytes after a `101` answer are already
    /// WebSocket frames and stay in the buffer.
    fn upgrade(&mut self, host: &str, deadline: Option<Instant>) -> io::Result<()> {
        let key = wire::ws_key(&mut self.rng);
        self.stream.write_all(&wire::ws_upgrade(host, &key))?;
        let limit = capped(AUTH_TIMEOUT, deadline);
        let until = Instant::now() + limit;
        loop {
            match wire::ws_upgrade_response(&self.buf, &key) {
                Ok(Some(n)) => {
                    self.start = n;
                    return Ok(());
                }
                Ok(None) => {}
                Err(why) => {
                    // The gateway names the problem in the body of its error answer.
                    let text = String::from_utf8_lossy(&self.buf);
                    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b.trim());
                    let body: String = body.chars().take(200).collect();
                    let sep = if body.is_empty() { "" } else { ": " };
                    return Err(io::Error::other(format!(
                        "the server refused the upgrade ({why}){sep}{body}"
                    )));
                }
            }
            let wait = until.saturating_duration_since(Instant::now());
            match self.read_more(wait)? {
                Some(0) => {
                    return Err(io::Error::new(
                        ErrorKind::ConnectionAborted,
                        "the server closed the connection without answering the upgrade",
                    ));
                }
                Some(_) => {}
                None if Instant::now() >= until => {
                    return Err(io::Error::new(
                        ErrorKind::TimedOut,
                        format!("no answer to the upgrade within {limit:?}"),
                    ));
                }
                None => {}
            }
        }
    }

    /// Sends op 7 and waits for op 8; returns the frames read meanwhile (the reply included).
    fn authenticate(
        &mut self,
        token: &str,
        endpoint: &Endpoint,
        deadline: Option<Instant>,
    ) -> Result<u64> {
        let context = || format!("auth on {endpoint}");
        self.send(&wire::auth(token))
            .map_err(|e| Error::io(context(), e))?;
        let limit = capped(AUTH_TIMEOUT, deadline);
        let until = Instant::now() + limit;
        let mut frames = 0;
        let mut disconnect: Option<String> = None;
        loop {
            let now = Instant::now();
            if now >= until {
                return Err(Error::io(
                    context(),
                    io::Error::new(
                        ErrorKind::TimedOut,
                        format!("no auth reply (op 8) within {limit:?}"),
                    ),
                ));
            }
            match self
                .next(until - now)
                .map_err(|e| Error::io(context(), e))?
            {
                Incoming::Idle => {}
                Incoming::Frame(h, body) => {
                    frames += 1;
                    match h.op {
                        op::AUTH_REPLY => return Ok(frames),
                        op::DISCONNECT_REPLY => {
                            disconnect = Some(String::from_utf8_lossy(&body).into_owned());
                        }
                        other => {
                            tracing::debug!(op = other, "frame before the auth reply, ignored")
                        }
                    }
                }
                Incoming::Closed(reason) => {
                    let reason = reason.or(disconnect).unwrap_or_else(|| {
                        "no reason given (a goim comet closes silently on a bad token)".into()
                    });
                    return Err(Error::io(
                        context(),
                        io::Error::new(
                            ErrorKind::ConnectionRefused,
                            format!("the server refused the auth and closed: {reason}"),
                        ),
                    ));
                }
            }
        }
    }

    /// Sends one goim frame: as it is on TCP, as one masked binary message on WebSocket.
    fn send(&mut self, goim_frame: &[u8]) -> io::Result<()> {
        if self.ws {
            let masked = wire::ws_masked(goim_frame, self.rng.mask());
            self.stream.write_all(&masked)
        } else {
            self.stream.write_all(goim_frame)
        }
    }

    /// Says goodbye: a Close frame on WebSocket (best effort), then the socket closes on drop.
    fn close(mut self) {
        if self.ws {
            let code = ws::close_code::NORMAL.to_be_bytes();
            let frame = ws::client_frame(0x88, &code, self.rng.mask());
            let _ = self.stream.write_all(&frame);
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// The next goim frame, a close, or [`Incoming::Idle`] when nothing arrived within `wait`.
    /// Frames already buffered come back without a read.
    fn next(&mut self, wait: Duration) -> io::Result<Incoming> {
        loop {
            let parsed = if self.ws {
                self.parse_ws()?
            } else {
                self.parse_tcp()?
            };
            if let Some(incoming) = parsed {
                return Ok(incoming);
            }
            match self.read_more(wait)? {
                None => return Ok(Incoming::Idle),
                Some(0) => return Ok(Incoming::Closed(None)),
                Some(_) => {}
            }
        }
    }

    fn parse_tcp(&mut self) -> io::Result<Option<Incoming>> {
        let pending = &self.buf[self.start..];
        match frame::split(pending, MAX_SERVER_FRAME).map_err(|e| malformed("frame", e))? {
            None => Ok(None),
            Some((header, body, used)) => {
                let body = body.to_vec();
                self.start += used;
                Ok(Some(Incoming::Frame(header, body)))
            }
        }
    }

    fn parse_ws(&mut self) -> io::Result<Option<Incoming>> {
        loop {
            let Some(f) = ws::parse_frame(&mut self.buf[self.start..], MAX_SERVER_FRAME)
                .map_err(|e| malformed("WebSocket frame", e))?
            else {
                return Ok(None);
            };
            let base = self.start;
            self.start += f.len;
            let payload = base + f.payload.start..base + f.payload.end;
            match f.kind {
                Kind::Data { continuation } => {
                    if continuation != self.fragmented {
                        let e = if continuation {
                            protocol::Error::WsStrayContinuation
                        } else {
                            protocol::Error::WsInterleavedMessage
                        };
                        return Err(malformed("WebSocket frame", e));
                    }
                    self.message.extend_from_slice(&self.buf[payload]);
                    if self.message.len() > MAX_SERVER_FRAME {
                        let e = protocol::Error::WsTooLarge {
                            len: self.message.len() as u64,
                            max: MAX_SERVER_FRAME,
                        };
                        return Err(malformed("WebSocket message", e));
                    }
                    self.fragmented = !f.fin;
                    if f.fin {
                        let mut message = std::mem::take(&mut self.message);
                        let (header, _) = frame::decode_ws_message(&message, MAX_SERVER_FRAME)
                            .map_err(|e| malformed("goim frame", e))?;
                        message.drain(..HEADER_LEN);
                        return Ok(Some(Incoming::Frame(header, message)));
                    }
                }
                Kind::Ping => {
                    let pong = ws::client_frame(0x8a, &self.buf[payload], self.rng.mask());
                    self.stream.write_all(&pong)?;
                }
                Kind::Pong => {}
                Kind::Close => {
                    let reason = close_reason(&self.buf[payload.clone()]);
                    // Echo the status, as RFC 6455 asks; the server may already be gone.
                    let code = &self.buf[payload][..2.min(f.payload.len())];
                    let echo = ws::client_frame(0x88, code, self.rng.mask());
                    let _ = self.stream.write_all(&echo);
                    return Ok(Some(Incoming::Closed(Some(reason))));
                }
            }
        }
    }

    /// Reads once, waiting at most `wait`: `Some(n)` bytes (0 at end of stream) or `None` when
    /// the wait ran out. Parsed bytes are dropped from the buffer first.
    fn read_more(&mut self, wait: Duration) -> io::Result<Option<usize>> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // A zero timeout means "block forever" to the kernel: wait at least a millisecond.
        self.stream
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let len = self.buf.len();
        self.buf.resize(len + READ_CHUNK, 0);
        let result = loop {
            match self.stream.read(&mut self.buf[len..]) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(len + n);
        match result {
            Ok(n) => Ok(Some(n)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(Some(0)),
            Err(e) => Err(e),
        }
    }
}

/// "close 1008: auth: ..." from a Close frame's payload.
fn close_reason(payload: &[u8]) -> String {
    match payload {
        [] => "WebSocket close without a status".into(),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let reason = String::from_utf8_lossy(reason);
            if reason.is_empty() {
                format!("WebSocket close {code}")
            } else {
                format!("WebSocket close {code}: {reason}")
            }
        }
        [_] => "WebSocket close with a 1-byte payload".into(),
    }
}

/// Why printing a frame failed.
enum FrameError {
    /// The frame's inner frames are malformed.
    Malformed(io::Error),
    /// Writing to `out` failed.
    Output(Error),
}

/// One message or frame in `--json` output.
#[derive(Serialize)]
struct JsonLine<'a> {
    op: i32,
    body: &'a str,
    ver: i16,
    seq: i32,
    /// `seq` read as a room offset (unsigned).
    offset: u32,
}

/// Turns frames into lines on `out`.
struct Printer<'o> {
    out: &'o mut dyn Write,
    json: bool,
    room: String,
}

impl Printer<'_> {
    fn write(&mut self, line: std::fmt::Arguments<'_>) -> Result<()> {
        self.out
            .write_fmt(line)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| Error::io("writing the output", e))
    }

    fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| Error::io("writing the output", e))
    }

    fn listening(&mut self, endpoint: &Endpoint) -> Result<()> {
        if self.json {
            let (transport, addr) = match endpoint {
                Endpoint::Tcp(a) => ("tcp", a.clone()),
                Endpoint::Ws(a) => ("ws", format!("ws://{a}{}", ws::PATH)),
            };
            let line = serde_json::json!({
                "listening": { "room": self.room, "transport": transport, "addr": addr }
            });
            self.write(format_args!("{line}"))
        } else if self.room.is_empty() {
            self.write(format_args!("listening (no room) via {endpoint}"))
        } else {
            let line = format!("listening on room {} via {endpoint}", self.room);
            self.write(format_args!("{line}"))
        }
    }

    /// Prints one frame read after the auth: the messages it carries (counted in `summary`,
    /// up to `count`), or a compact line for a reply.
    fn frame(
        &mut self,
        h: &Header,
        body: &[u8],
        summary: &mut ListenSummary,
        count: Option<u64>,
    ) -> Result<(), FrameError> {
        if h.op == op::RAW {
            frame::count_inner_frames(body)
                .map_err(|e| FrameError::Malformed(malformed("op-9 frame", e)))?;
            let mut rest = body;
            while let Ok(Some((inner, inner_body, used))) = frame::split(rest, usize::MAX) {
                if count.is_some_and(|n| summary.messages >= n) {
                    break;
                }
                self.message(&inner, inner_body)
                    .map_err(FrameError::Output)?;
                summary.messages += 1;
                rest = &rest[used..];
            }
            return Ok(());
        }
        if op::name(h.op) == "application" {
            self.message(h, body).map_err(FrameError::Output)?;
            summary.messages += 1;
            return Ok(());
        }
        self.reply(h, body).map_err(FrameError::Output)
    }

    fn message(&mut self, h: &Header, body: &[u8]) -> Result<()> {
        if self.json {
            let body = String::from_utf8_lossy(body);
            self.json_line(h, &body)
        } else {
            let body = one_line(body);
            // Room messages carry the room's offset in seq (0 from a gateway fed directly).
            let line = match h.seq {
                0 => format!("[{}] op={} {body}", self.room, h.op),
                seq => format!("[{} @{}] op={} {body}", self.room, seq as u32, h.op),
            };
            self.write(format_args!("{line}"))
        }
    }

    /// A frame that is not a message: a reply, op 6, an unexpected op.
    fn reply(&mut self, h: &Header, body: &[u8]) -> Result<()> {
        if h.op == op::HEARTBEAT_REPLY {
            let online = body
                .first_chunk::<4>()
                .map(|b| i32::from_be_bytes(*b))
                .unwrap_or(0);
            tracing::debug!(online, "heartbeat reply");
            if !tracing::enabled!(tracing::Level::DEBUG) {
                return Ok(());
            }
            // The body is the room's online count as a 4-byte integer: print the number.
            return if self.json {
                self.json_line(h, &online.to_string())
            } else {
                self.write(format_args!(
                    "op={} {} online={online}",
                    h.op,
                    op::name(h.op)
                ))
            };
        }
        if self.json {
            let body = String::from_utf8_lossy(body);
            return self.json_line(h, &body);
        }
        let body = one_line(body);
        let sep = if body.is_empty() { "" } else { " " };
        self.write(format_args!("op={} {}{sep}{body}", h.op, op::name(h.op)))
    }

    fn json_line(&mut self, h: &Header, body: &str) -> Result<()> {
        let line = JsonLine {
            op: h.op,
            body,
            ver: h.ver,
            seq: h.seq,
            offset: h.seq as u32,
        };
        let line = serde_json::to_string(&line).expect("a JSON line always serializes");
        self.write(format_args!("{line}"))
    }
}

/// A body as one line of text: UTF-8 (lossy), with line breaks and other control characters
/// escaped.
fn one_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut line = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push('\t'),
            c if c.is_control() => line.extend(c.escape_default()),
            c => line.push(c),
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_command_line() {
        let a = ListenArgs::default();
        assert_eq!(a.tcp, "127.0.0.1:3101");
        assert_eq!(a.ws, None);
        assert_eq!(a.room, "live://1000");
        assert_eq!((a.mid, a.key.as_str(), a.platform.as_str()), (0, "", "cli"));
        assert_eq!(a.accepts, vec![1000]);
        assert_eq!((a.count, a.seconds, a.json), (None, None, false));
        assert_eq!(a.heartbeat_secs, 30);
    }

    #[test]
    fn ws_addresses_in_every_accepted_form() {
        for spec in [
            "ws://127.0.0.1:3102/sub",
            "ws://127.0.0.1:3102",
            "WS://127.0.0.1:3102/sub",
            "127.0.0.1:3102",
            "127.0.0.1:3102/sub",
            "127.0.0.1",
        ] {
            assert_eq!(ws_host(spec).unwrap(), "127.0.0.1:3102", "{spec}");
        }
        assert_eq!(ws_host("ws://[::1]:9/sub").unwrap(), "[::1]:9");
        assert_eq!(ws_host("[::1]").unwrap(), "[::1]:3102");
        assert_eq!(ws_host("gw.example:80").unwrap(), "gw.example:80");
        for (spec, why) in [
            ("ws://127.0.0.1:3102/foo", "only at /sub"),
            ("ws://127.0.0.1:3102/sub?x=1", "only at /sub"),
            ("wss://127.0.0.1:3103/sub", "wss is not supported"),
            ("http://127.0.0.1:3102/sub", "scheme http"),
            ("ws:///sub", "no host"),
        ] {
            let e = ws_host(spec).unwrap_err().to_string();
            assert!(e.contains(why), "{spec}: {e}");
        }
    }

    #[test]
    fn endpoints_display_transport_and_address() {
        assert_eq!(
            Endpoint::Tcp("127.0.0.1:3101".into()).to_string(),
            "tcp 127.0.0.1:3101"
        );
        assert_eq!(
            Endpoint::Ws("127.0.0.1:3102".into()).to_string(),
            "ws ws://127.0.0.1:3102/sub"
        );
    }

    #[test]
    fn bodies_print_on_one_line() {
        assert_eq!(one_line(b"{\"a\":1}"), "{\"a\":1}");
        assert_eq!(one_line(b"a\nb\r\n"), "a\\nb\\r\\n");
        assert_eq!(one_line(b"\x00x\xff"), "\\u{0}x\u{fffd}");
    }

    #[test]
    fn close_reasons() {
        assert_eq!(close_reason(b""), "WebSocket close without a status");
        assert_eq!(close_reason(&[0x03, 0xe8]), "WebSocket close 1000");
        let mut p = 1008u16.to_be_bytes().to_vec();
        p.extend_from_slice(b"auth: nope");
        assert_eq!(close_reason(&p), "WebSocket close 1008: auth: nope");
    }

    fn printed(json: bool, frames: &[(Header, Vec<u8>)], count: Option<u64>) -> (String, u64) {
        let mut out = Vec::new();
        let mut p = Printer {
            out: &mut out,
            json,
            room: "live://1".into(),
        };
        let mut s = ListenSummary::default();
        for (h, b) in frames {
            assert!(p.frame(h, b, &mut s, count).is_ok());
        }
        (String::from_utf8(out).unwrap(), s.messages)
    }

    fn header(op: i32, body_len: usize) -> Header {
        Header {
            pack_len: HEADER_LEN + body_len,
            ver: 1,
            op,
            seq: 0,
        }
    }

    #[test]
    fn op9_frames_print_each_inner_message_up_to_the_count() {
        let mut inner = Vec::new();
        for b in ["one", "two", "three"] {
            frame::encode(&mut inner, 1, 1000, 0, b.as_bytes());
        }
        let raw = (header(op::RAW, inner.len()), inner);
        let (text, n) = printed(false, std::slice::from_ref(&raw), None);
        assert_eq!(
            text,
            "[live://1] op=1000 one\n[live://1] op=1000 two\n[live://1] op=1000 three\n"
        );
        assert_eq!(n, 3);
        let (text, n) = printed(false, std::slice::from_ref(&raw), Some(2));
        assert_eq!(n, 2);
        assert_eq!(text.lines().count(), 2);
        let (json, _) = printed(true, &[raw], Some(1));
        assert_eq!(
            json,
            "{\"op\":1000,\"body\":\"one\",\"ver\":1,\"seq\":0,\"offset\":0}\n"
        );
        // A room offset (seq read unsigned) is printed with the message.
        let mut numbered = header(1000, 1);
        numbered.seq = -1;
        let (text, _) = printed(false, &[(numbered, b"x".to_vec())], None);
        assert_eq!(text, "[live://1 @4294967295] op=1000 x\n");
        let (json, _) = printed(true, &[(numbered, b"x".to_vec())], None);
        assert!(json.contains("\"seq\":-1,\"offset\":4294967295"), "{json}");
    }

    #[test]
    fn replies_print_compactly_and_heartbeat_replies_not_at_all() {
        let frames = [
            (header(op::HEARTBEAT_REPLY, 4), 5i32.to_be_bytes().to_vec()),
            (header(op::CHANGE_ROOM_REPLY, 6), b"live:2".to_vec()),
            (header(1001, 2), b"hi".to_vec()),
        ];
        let (text, n) = printed(false, &frames, None);
        assert_eq!(
            text,
            "op=13 change_room_reply live:2\n[live://1] op=1001 hi\n"
        );
        assert_eq!(n, 1);
    }

    #[test]
    fn malformed_inner_frames_are_an_error() {
        let mut inner = Vec::new();
        frame::encode(&mut inner, 1, 1000, 0, b"abc");
        inner.pop();
        let mut out = Vec::new();
        let mut p = Printer {
            out: &mut out,
            json: false,
            room: String::new(),
        };
        let r = p.frame(
            &header(op::RAW, inner.len()),
            &inner,
            &mut ListenSummary::default(),
            None,
        );
        let Err(FrameError::Malformed(e)) = r else {
            panic!("expected a malformed-frame error")
        };
        assert!(e.to_string().contains("malformed op-9 frame"), "{e}");
    }
}
