//! The gateway-wide key table: which shard and connection holds each authenticated key.
//!
//! It serves two things: key pushes go straight to the owning shard (one lookup, instead of
//! asking every shard), and a second connection with the same key evicts the older one, on
//! whichever shard it is. Touched on auth, close and key push, never per room message. Striped
//! over several mutexes so shards authenticating at once rarely meet.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

/// Where a key lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub shard: u16,
    pub handle: u32,
    pub gen_: u16,
}

/// One stripe of the table: key → (owner, mid).
type Stripe = HashMap<Arc<str>, (Owner, i64)>;

pub struct KeyTable {
    /// key → (owner, mid): the mid is kept for the session snapshot a new dispatcher link gets.
    stripes: Vec<Mutex<Stripe>>,
    hasher: RandomState,
}

impl Default for KeyTable {
    fn default() -> Self {
        KeyTable {
            stripes: (0..64).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl KeyTable {
    fn stripe(&self, key: &str) -> std::sync::MutexGuard<'_, Stripe> {
        let i = self.hasher.hash_one(key) as usize % self.stripes.len();
        self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `owner` (a connection of member `mid`) for `key`, sharing the connection's copy
    /// of the key; returns the previous owner, which must be evicted.
    pub fn claim(&self, key: &Arc<str>, owner: Owner, mid: i64) -> Option<Owner> {
        self.stripe(key)
            .insert(key.clone(), (owner, mid))
            .map(|(o, _)| o)
    }

    /// Forgets `key` if `owner` still holds it (a newer connection may have claimed it).
    pub fn release(&self, key: &str, owner: Owner) {
        let mut map = self.stripe(key);
        if map.get(key).map(|(o, _)| o) == Some(&owner) {
            map.remove(key);
        }
    }

    pub fn get(&self, key: &str) -> Option<Owner> {
        self.stripe(key).get(key).map(|(o, _)| *o)
    }

    /// Every (key, owner, mid), one stripe locked at a time: the sessions a dispatcher that
    /// just linked is told about.
    pub fn snapshot(&self) -> Vec<(Arc<str>, Owner, i64)> {
        let mut out = Vec::new();
        for s in &self.stripes {
            let map = s.lock().unwrap_or_else(|p| p.into_inner());
            out.extend(map.iter().map(|(k, (o, mid))| (k.clone(), *o, *mid)));
        }
        out
    }

    pub fn len(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_claim_wins_and_old_release_is_ignored() {
        let t = KeyTable::default();
        let a = Owner {
            shard: 0,
            handle: 1,
            gen_: 1,
        };
        let b = Owner {
            shard: 1,
            handle: 7,
            gen_: 3,
        };
        let k: Arc<str> = Arc::from("k");
        assert_eq!(t.claim(&k, a, 7), None);
        assert_eq!(t.claim(&k, b, 8), Some(a));
        assert_eq!(t.snapshot(), vec![(k.clone(), b, 8)]);
        t.release("k", a);
        assert_eq!(t.get("k"), Some(b));
        t.release("k", b);
        assert_eq!(t.get("k"), None);
        assert!(t.is_empty());
    }
}
