//! corecast's wire formats, and nothing else: no sockets, no clocks, no threads.
//!
//! Data flows through it in two directions:
//! - **client → server**: bytes from a TCP stream go through [`frame::split`] (one goim frame at a
//!   time); bytes from a WebSocket go through [`ws::parse_frame`] (RFC 6455 framing, unmasked in
//!   place) and then [`frame::decode_ws_message`]. The body of an auth frame (op 7) goes through
//!   [`token::verify`].
//! - **server → client**: pushes arrive as goim inner frames (op-9 bodies); [`batch::Batch`]
//!   encodes them once into a single buffer from which both the TCP bytes (bare inner frames) and
//!   the WebSocket bytes (WS header + outer op-9 header + inner frames) are reference-counted
//!   slices, so nothing is copied per connection.
//! - **between processes**: [`link`] holds the internal messages (prost) that gateways and
//!   dispatchers exchange, with a length-prefixed framing; [`push`] holds goim's queue message
//!   (`PushMsg`, the Kafka value between the dispatcher's logic and job roles).
//! - **room history**: [`history`] numbers a room's messages (the `seq` of their frames) and
//!   holds the bodies of the recovery ops a returning client sends and gets.
//! - **business server → dispatcher**: [`query`] decodes the parameters of goim's HTTP push API.
//!
//! Every decoder returns [`Error`] with the offending value in its message ([`query`]'s
//! accessors return a message that starts with the parameter's name); none panics on any input
//! (each has a cargo-fuzz target under `protocol/fuzz`).

pub mod batch;
pub mod error;
pub mod frame;
pub mod history;
pub mod link;
pub mod op;
pub mod push;
pub mod query;
pub mod token;
pub mod ws;

pub use error::{Error, Result};
