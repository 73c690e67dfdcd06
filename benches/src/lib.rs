//! corecast's micro-benchmarks and end-to-end harness tools.
//!
//! The micro-benchmarks are criterion benches under `benches/`; run them with
//! `cargo bench -p corecast-benches` (`-- --quick` for a short run):
//!
//! - `protocol`: the wire formats of `corecast-protocol`, i.e. goim frame split and encode,
//!   op-9 batch building, WebSocket header encode and client frame parsing, auth token
//!   verification, and link message encode/decode.
