//! corecast's benchmarks: criterion micro-benchmarks (`benches/`), the bare-writer limit
//! ([`bare_writer`]) and the end-to-end harness (`corecast-bench`, in `src/bin`).
//!
//! The harness runs a server in its own process (the gateway, or the bare writer on the same
//! io_uring engine), drives clients with the bundled load tester in a child process, pushes at
//! fixed shapes, and reads the server's own CPU time per thread and memory from /proc
//! ([`procfs`]), so every gateway figure can be reported as a share of the bare writer's.
//! [`dispatch`] benchmarks the dispatcher in front of a gateway: HTTP pushes accepted per
//! second and latency from the HTTP call to the clients of a room, with a Kafka-compatible
//! [`broker`] when asked. [`suite`] runs every shape as one command and writes the summary;
//! [`up`] runs `corecast up` as a child process (the suite and the root crate's tests).

pub mod bare_writer;
pub mod broker;
pub mod dispatch;
pub mod harness;
pub mod procfs;
pub mod suite;
pub mod up;
