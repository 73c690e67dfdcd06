//! One client connection's state: about 40 bytes while idle. Everything only needed for a
//! while (the send buffer of the auth or upgrade, the WebSocket key, the bytes of a frame that
//! straddles two reads) lives in [`Extra`], allocated when needed and dropped after.

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// `connect` submitted.
    Connecting,
    /// WebSocket: upgrade request sent, waiting for `101`.
    Upgrading,
    /// Auth (op 7) sent, waiting for the reply (op 8).
    Authing,
    /// Authenticated: heartbeats go out, pushes come in.
    Open,
}

/// What the connection's send in flight writes (its memory must outlive the send).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sending {
    Nothing,
    /// `Extra::out`.
    Owned,
    /// The worker's TCP heartbeat frame.
    TcpHeartbeat,
    /// The worker's `n`-th masked WebSocket heartbeat frame.
    WsHeartbeat(u8),
}

/// Short-lived parts of a connection.
#[derive(Debug, Default)]
pub struct Extra {
    /// Bytes being sent (auth frame, upgrade request).
    pub out: Vec<u8>,
    /// Received bytes not yet forming a whole frame (or a whole upgrade answer).
    pub partial: Vec<u8>,
    /// The `Sec-WebSocket-Key` sent, to check the server's accept value.
    pub ws_key: [u8; 24],
}

#[derive(Debug)]
pub struct Conn {
    /// Last seq seen in a seq body (`crate::sequence`).
    pub last_seq: Option<u64>,
    pub extra: Option<Box<Extra>>,
    /// Connection id (mid, key suffix).
    pub id: u32,
    /// Milliseconds since the worker started: the connect/auth deadline before auth, the next
    /// heartbeat after.
    pub due_ms: u32,
    /// Bytes of the current send already written.
    pub send_off: u16,
    pub sending: Sending,
    pub state: State,
    pub ws: bool,
    /// A multishot receive is armed.
    pub recv_armed: bool,
    /// WebSocket: upgraded while the upgrade request's send had not completed yet; the auth
    /// goes out when it does.
    pub auth_queued: bool,
    /// Not reading (a stall, `crate::disrupt`): the receive is not re-armed.
    pub paused: bool,
    /// This connection replaces an earlier one with the same id (a reconnect), made on attempt
    /// `retry` (0: the first after the earlier one ended).
    pub again: bool,
    pub retry: u8,
    /// Index of its destination in the worker's table (a target, or a node found later).
    pub dest: u16,
}

impl Conn {
    pub fn new(id: u32, ws: bool, due_ms: u32) -> Conn {
        Conn {
            last_seq: None,
            extra: None,
            id,
            due_ms,
            send_off: 0,
            sending: Sending::Nothing,
            state: State::Connecting,
            ws,
            recv_armed: false,
            auth_queued: false,
            paused: false,
            again: false,
            retry: 0,
            dest: 0,
        }
    }

    pub fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Drops [`Extra`] once nothing in it is needed any more.
    pub fn shrink(&mut self) {
        if let Some(e) = &self.extra
            && self.state == State::Open
            && e.partial.is_empty()
            && self.sending != Sending::Owned
        {
            self.extra = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connection_is_small() {
        assert!(std::mem::size_of::<Option<Conn>>() <= 48);
    }
}
