//! The in-memory registry: key → (gateway, connection id, mid) and mid → keys.
//!
//! Every gateway sends its session events to every dispatcher, so each dispatcher's memory
//! registry is complete by itself. The connection id tells an old connection's offline event
//! apart from the online event of a newer connection with the same key (a duplicate-key
//! eviction, possibly on another gateway): an offline event removes the key only if it names
//! the connection the registry holds.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use protocol::link::Session;

use super::{BoxFut, Registry, Routes};
use crate::Result;

#[derive(Clone)]
struct Holder {
    gateway: String,
    conn_id: u64,
    mid: i64,
}

#[derive(Default)]
struct Tables {
    keys: HashMap<String, Holder>,
    mids: HashMap<i64, HashSet<String>>,
}

/// The default registry.
#[derive(Default)]
pub struct Memory {
    tables: Mutex<Tables>,
}

impl Tables {
    fn unlink_mid(&mut self, mid: i64, key: &str) {
        if mid > 0
            && let Some(set) = self.mids.get_mut(&mid)
        {
            set.remove(key);
            if set.is_empty() {
                self.mids.remove(&mid);
            }
        }
    }

    fn apply(&mut self, gateway: &str, s: &Session) {
        if s.online {
            let holder = Holder {
                gateway: gateway.to_string(),
                conn_id: s.conn_id,
                mid: s.mid,
            };
            if let Some(old) = self.keys.insert(s.key.clone(), holder)
                && old.mid != s.mid
            {
                self.unlink_mid(old.mid, &s.key);
            }
            if s.mid > 0 {
                self.mids.entry(s.mid).or_default().insert(s.key.clone());
            }
        } else {
            let current = self
                .keys
                .get(&s.key)
                .is_some_and(|h| h.gateway == gateway && h.conn_id == s.conn_id);
            if current && let Some(old) = self.keys.remove(&s.key) {
                self.unlink_mid(old.mid, &s.key);
            }
        }
    }
}

impl Memory {
    /// Applies events synchronously (also used by the Redis registry as its local filter).
    /// Returns, per event, whether it changed the holder of its key (an offline event for a
    /// connection that was already replaced returns false).
    pub fn apply_now(&self, gateway: &str, events: &[Session]) -> Vec<bool> {
        let mut t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .map(|s| {
                let before = t.keys.get(&s.key).map(|h| (h.gateway.clone(), h.conn_id));
                t.apply(gateway, s);
                let after = t.keys.get(&s.key).map(|h| (h.gateway.clone(), h.conn_id));
                s.online || before != after
            })
            .collect()
    }

    /// Forgets a gateway's sessions; returns the (key, mid) pairs removed.
    pub fn remove_gateway(&self, gateway: &str) -> Vec<(String, i64)> {
        let mut t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<(String, i64)> = t
            .keys
            .iter()
            .filter(|(_, h)| h.gateway == gateway)
            .map(|(k, h)| (k.clone(), h.mid))
            .collect();
        for (k, mid) in &gone {
            t.keys.remove(k);
            t.unlink_mid(*mid, k);
        }
        gone
    }

    /// Every (key, mid, gateway) held (the Redis registry refreshes TTLs from it).
    pub fn snapshot(&self) -> Vec<(String, i64, String)> {
        let t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        t.keys
            .iter()
            .map(|(k, h)| (k.clone(), h.mid, h.gateway.clone()))
            .collect()
    }

    fn by_keys(&self, keys: &[String]) -> Routes {
        let t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let mut routes = Routes::new();
        for k in keys {
            if let Some(h) = t.keys.get(k) {
                routes.entry(h.gateway.clone()).or_default().push(k.clone());
            }
        }
        routes
    }

    fn by_mids(&self, mids: &[i64]) -> Routes {
        let t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let mut routes = Routes::new();
        for mid in mids {
            let Some(keys) = t.mids.get(mid) else {
                continue;
            };
            let mut keys: Vec<&String> = keys.iter().collect();
            keys.sort();
            for k in keys {
                if let Some(h) = t.keys.get(k) {
                    routes.entry(h.gateway.clone()).or_default().push(k.clone());
                }
            }
        }
        routes
    }
}

impl Registry for Memory {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn apply<'a>(&'a self, gateway: &'a str, events: &'a [Session]) -> BoxFut<'a, Result<()>> {
        self.apply_now(gateway, events);
        Box::pin(async { Ok(()) })
    }

    fn gateway_gone<'a>(&'a self, gateway: &'a str) -> BoxFut<'a, Result<()>> {
        self.remove_gateway(gateway);
        Box::pin(async { Ok(()) })
    }

    fn routes_by_keys<'a>(&'a self, keys: &'a [String]) -> BoxFut<'a, Result<Routes>> {
        let r = self.by_keys(keys);
        Box::pin(async move { Ok(r) })
    }

    fn routes_by_mids<'a>(&'a self, mids: &'a [i64]) -> BoxFut<'a, Result<Routes>> {
        let r = self.by_mids(mids);
        Box::pin(async move { Ok(r) })
    }

    fn sessions(&self) -> usize {
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys
            .len()
    }
}

/// A session event, for the registries' tests.
#[cfg(test)]
pub(crate) fn ev(online: bool, mid: i64, key: &str, conn_id: u64) -> Session {
    Session {
        online,
        mid,
        key: key.into(),
        conn_id,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_mids_route_to_their_gateways() {
        let m = Memory::default();
        m.apply_now("g1", &[ev(true, 7, "a", 1), ev(true, 7, "b", 2)]);
        m.apply_now(
            "g2",
            &[
                ev(true, 7, "c", 1),
                ev(true, 8, "d", 2),
                ev(true, 0, "e", 3),
            ],
        );
        let r = m.by_keys(&["a".into(), "d".into(), "zz".into(), "e".into()]);
        assert_eq!(r["g1"], vec!["a"]);
        assert_eq!(r["g2"], vec!["d", "e"]);
        let r = m.by_mids(&[7, 99]);
        assert_eq!(r["g1"], vec!["a", "b"]);
        assert_eq!(r["g2"], vec!["c"]);
        assert_eq!(m.sessions(), 5);
        // mid 0 is not indexed (goim: only mid > 0).
        assert!(m.by_mids(&[0]).is_empty());
    }

    #[test]
    fn a_stale_offline_event_does_not_remove_the_newer_connection() {
        let m = Memory::default();
        m.apply_now("g1", &[ev(true, 7, "k", 1)]);
        // The same key connects on g2, then g1's evicted connection reports offline.
        m.apply_now("g2", &[ev(true, 7, "k", 5)]);
        assert_eq!(m.apply_now("g1", &[ev(false, 7, "k", 1)]), vec![false]);
        assert_eq!(m.by_keys(&["k".into()])["g2"], vec!["k"]);
        assert_eq!(m.by_mids(&[7])["g2"], vec!["k"]);
        // Its own offline event removes it, from the mid too.
        assert_eq!(m.apply_now("g2", &[ev(false, 7, "k", 5)]), vec![true]);
        assert!(m.by_keys(&["k".into()]).is_empty());
        assert!(m.by_mids(&[7]).is_empty());
    }

    #[test]
    fn a_key_reused_by_another_mid_moves() {
        let m = Memory::default();
        m.apply_now("g1", &[ev(true, 7, "k", 1), ev(true, 8, "k", 2)]);
        assert!(m.by_mids(&[7]).is_empty());
        assert_eq!(m.by_mids(&[8])["g1"], vec!["k"]);
    }

    #[test]
    fn removing_a_gateway_forgets_only_its_sessions() {
        let m = Memory::default();
        m.apply_now("g1", &[ev(true, 7, "a", 1)]);
        m.apply_now("g2", &[ev(true, 7, "b", 1)]);
        assert_eq!(m.remove_gateway("g1"), vec![("a".to_string(), 7)]);
        assert_eq!(m.by_mids(&[7])["g2"], vec!["b"]);
        assert_eq!(m.sessions(), 1);
    }
}
