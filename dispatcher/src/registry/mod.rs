//! Sessions: which gateway holds which key, and which keys a member id (mid) has. Fed by the
//! gateways' session events (online / offline, each with a connection id); read by
//! `push/keys` and `push/mids` to route pushes to the gateways that hold the connections.
//!
//! Backends: [`memory::Memory`] (default) and `redis` (goim's key scheme, shared by several
//! dispatchers).

pub mod memory;
pub mod redis;

use std::collections::BTreeMap;

use protocol::link::Session;

use crate::Result;
pub use crate::queue::BoxFut;

/// Keys grouped by the gateway that holds them (gateway id → keys).
pub type Routes = BTreeMap<String, Vec<String>>;

/// A session store.
pub trait Registry: Send + Sync {
    /// `memory`, `redis`.
    fn backend(&self) -> &'static str;
    /// Applies session events from one gateway, in order.
    fn apply<'a>(&'a self, gateway: &'a str, events: &'a [Session]) -> BoxFut<'a, Result<()>>;
    /// Forgets every session of a gateway that was removed.
    fn gateway_gone<'a>(&'a self, gateway: &'a str) -> BoxFut<'a, Result<()>>;
    /// The gateways holding these keys; unknown keys are left out (as goim).
    fn routes_by_keys<'a>(&'a self, keys: &'a [String]) -> BoxFut<'a, Result<Routes>>;
    /// The keys of these mids, by gateway; unknown mids are left out.
    fn routes_by_mids<'a>(&'a self, mids: &'a [i64]) -> BoxFut<'a, Result<Routes>>;
    /// Sessions known (metrics).
    fn sessions(&self) -> usize;
}
