//! corecast's load tester: an io_uring client that holds hundreds of thousands of goim
//! connections (TCP and WebSocket) from one process and counts what the gateway sends them, as
//! goim's benchmark client does, with loss, order and latency checks on top.
//!
//! Data flows like this:
//! - **options → plan**: [`options::HoldOptions`] (or the command line, [`cli::Args`]) names
//!   the targets, rooms and pacing; `plan` derives each connection's target, source address
//!   (127.0.1.1 upwards, at most `per_source` per destination), room and auth token from its id.
//! - **plan → workers**: [`hold::run`] starts one pinned worker thread per core. Each opens its
//!   share of the connections: `socket(2)` + bind, installed into its ring's fixed-file table
//!   and closed at once (`dial`, `ring`), so no connection holds a process descriptor; then
//!   connect, auth (op 7, after the WebSocket upgrade for WS), heartbeats (op 2). A ring's
//!   table holds at most 16,000 sockets; a thread opens more rings as it needs them and polls
//!   them all: one eventfd registered on each, non-blocking reaps of every ring per loop turn,
//!   and `poll(2)` on the eventfd when a turn found nothing (see `worker`).
//! - **kernel → counts**: multishot receives land in provided buffers; `read` cuts them into
//!   goim frames or WebSocket messages and counts messages, frames, bytes, replies and close
//!   reasons; [`sequence`] checks `{"seq":..,"ts":..}` bodies for gaps and order and feeds a
//!   latency histogram. Each worker counts in its own `tally`, publishing deltas to the shared
//!   [`live::Live`] counters once per loop turn.
//! - **counts → report**: the coordinating thread prints one progress line per second, keeps
//!   the per-second message series, and at the end merges the workers' tallies into a
//!   [`report::HoldReport`].

pub mod cli;
pub mod compare;
mod conn;
pub mod cpu;
mod dial;
pub mod disrupt;
pub mod error;
pub mod hold;
mod interrupt;
pub mod listen;
pub mod live;
pub mod merge;
pub mod nodes;
pub mod options;
pub mod output;
mod plan;
pub mod progress;
pub mod publish;
mod read;
pub mod report;
mod ring;
pub mod sequence;
mod tally;
pub mod timeline;
mod wire;
mod worker;

pub use cli::Args;
pub use error::{Error, Result};
pub use live::{Live, Snapshot};
pub use options::{HoldOptions, Rooms, Target, Transport};
pub use report::{HoldReport, Latency};
