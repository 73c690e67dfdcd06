//! corecast's per-core tuning: the profiles in tuning/profiles/ (gateway.toml, dispatcher.toml
//! and sysctl.conf for a 2-core laptop, a 16-core host and a two-socket 64-core host), the host
//! check behind `corecast tune check`, and `corecast tune generate`.
//!
//! Data flows like this:
//! - **host → [`host::Host`]**: everything is read under a root directory ("/" on a real host,
//!   a fake tree in tests): cores, NUMA nodes, isolated cores, NIC queues and their interrupts'
//!   affinity, limits, sysctls, io_uring (on "/" also probed by creating a ring), the kernel.
//!   Nothing read is trusted to exist; what is missing is unknown, never a panic.
//! - **profile → rules**: [`profile::Profile`] holds the three files (compiled in) and how many
//!   cores per NUMA node it keeps for NIC interrupts and the dispatcher; [`layout::Layout`]
//!   lays that out on the host's cores.
//! - **host + profile → [`check::Report`]**: one row per item, each ok, advice or BLOCKER with
//!   its reason; [`apply`] writes the sysctls the report raises (never lowering one);
//!   [`generate`] fills the profile's configs in with this host's shard cores.
//! - [`cli`] is the `corecast tune` command line the binary embeds.

pub mod apply;
pub mod check;
pub mod cli;
pub mod cpulist;
pub mod error;
pub mod fake_host;
pub mod generate;
pub mod host;
pub mod interrupts;
pub mod layout;
pub mod limits;
pub mod profile;
pub mod sysctl;

pub use error::{Error, Result};
