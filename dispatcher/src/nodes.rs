//! Gateway selection for clients: goim's weighted load balancer behind `/goim/nodes/weighted`.
//!
//! Before a client connects it asks the dispatcher which gateways (goim "comet" servers) it should
//! use. goim answers with up to five gateways ranked by a weight that mixes each gateway's
//! configured fixed weight with its share of the live connections, so lightly loaded gateways
//! rank first. This module reproduces that algorithm (goim `internal/logic/balancer.go` and
//! `nodes.go`) as pure state: no I/O, no clocks, no locks (the caller wraps the [`Balancer`] in
//! whatever lock it needs).
//!
//! Data flow:
//!
//! 1. The registry watcher turns each registry snapshot into a list of [`Node`]s (gateway id,
//!    fixed weight, reported connection count, public addresses) and calls [`Balancer::update`].
//!    An update that would more than halve the node set, or empty it, is ignored, so a flapping
//!    registry cannot shrink the pool in one go.
//! 2. Each `/nodes/weighted` request calls [`Balancer::pick`]. It recomputes every node's current
//!    weight, ranks the nodes, returns the best five as host names (web clients) or raw addresses
//!    (everything else), and counts one simulated connection against the top node so that
//!    consecutive requests between two registry updates spread over the gateways.
//! 3. The handler wraps the list in a [`NodesReply`] (ports, heartbeat, [`Backoff`]) and
//!    serialises it with goim's JSON shape: snake_case names, zero values omitted.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::Serialize;

/// Lower clamp for nodes that carry more than their share of connections (goim `_minWeight`).
const MIN_WEIGHT: i64 = 1;
/// Upper clamp for nodes that carry less than their share of connections (goim `_maxWeight`).
const MAX_WEIGHT: i64 = 1 << 20;
/// How many nodes one reply lists (goim `_maxNodes`).
const MAX_NODES: usize = 5;
/// The platform whose clients get host names rather than addresses (goim `model.PlatformWeb`).
const PLATFORM_WEB: &str = "web";

/// One gateway as reported by the registry.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Gateway id, goim's instance hostname. Web clients connect to `id + host_domain`.
    pub id: String,
    /// Fixed weight configured on the gateway.
    pub weight: i64,
    /// Connection count the gateway last reported.
    pub conn_count: i64,
    /// Public addresses (`host:port`) handed to non-web clients.
    pub addrs: Vec<String>,
}

/// Per-node balancer state (goim `weightedNode`).
#[derive(Clone, Debug, PartialEq)]
struct NodeState {
    fixed_weight: i64,
    /// The `conn_count` this state was built from, to recognise an unchanged node on update.
    reported_conns: i64,
    /// Reported connections plus the connections simulated by [`Balancer::pick`].
    current_conns: i64,
    /// Weight computed by the last [`Balancer::pick`].
    current_weight: i64,
    addrs: Vec<String>,
}

/// goim's weighted gateway balancer (goim `LoadBalancer`), keyed by gateway id.
#[derive(Clone, Debug, Default)]
pub struct Balancer {
    nodes: BTreeMap<String, NodeState>,
}

impl Balancer {
    /// An empty balancer: [`Balancer::pick`] answers with the default domain until the first
    /// [`Balancer::update`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of gateways currently known.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no gateway is known.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Replaces the node set with a registry snapshot. Returns true when applied, false when
    /// ignored.
    ///
    /// Guard, exactly as goim (`len(ins) == 0 || float32(len(ins))/float32(len(lb.nodes)) < 0.5`):
    /// the snapshot is ignored when it is empty, or when it holds fewer than half as many nodes as
    /// the current set (10 → 5 is applied, 10 → 4 and 3 → 1 are ignored). Consequently the set
    /// can never be emptied once populated, and the first non-empty snapshot is always applied.
    /// The ratio uses the snapshot's length (duplicates included) against the number of distinct
    /// ids currently held, like goim; a duplicated id keeps its last entry.
    ///
    /// A node already present with the same `weight` and `conn_count` keeps its simulated
    /// connection count (goim keeps the old node when the registry timestamp is unchanged; a
    /// `Node` has no timestamp, so "nothing reported changed" stands in for it). Any other node
    /// starts from its reported `conn_count`. Addresses always come from the snapshot.
    pub fn update(&mut self, nodes: &[Node]) -> bool {
        if nodes.is_empty() || nodes.len().saturating_mul(2) < self.nodes.len() {
            return false;
        }
        let mut next = BTreeMap::new();
        for node in nodes {
            let current_conns = match self.nodes.get(&node.id) {
                Some(old)
                    if old.fixed_weight == node.weight && old.reported_conns == node.conn_count =>
                {
                    old.current_conns
                }
                _ => node.conn_count,
            };
            next.insert(
                node.id.clone(),
                NodeState {
                    fixed_weight: node.weight,
                    reported_conns: node.conn_count,
                    current_conns,
                    current_weight: 0,
                    addrs: node.addrs.clone(),
                },
            );
        }
        self.nodes = next;
        true
    }

    /// Chooses the gateways for one client (goim `NodeAddrs` + `NodesWeighted`).
    ///
    /// Every node's current weight is recomputed from the total fixed weight and the total
    /// (simulated) connections, the nodes are ranked by it and the first five are returned: for
    /// `platform == "web"` as `id + host_domain`, otherwise as all their addresses, flattened in
    /// rank order. The top node is charged one simulated connection. When the result would be
    /// empty (no nodes, or non-web and no addresses) the answer is `[default_domain]`.
    ///
    /// Simulated picks balance nodes of equal fixed weight, but not proportionally to unequal
    /// weights: the connection term counts half, so a heavier node keeps ranking first and takes
    /// every pick until a registry update resets the connection counts (goim behaves the same).
    ///
    /// Ties are broken by ascending id so the result is deterministic; goim ranks a randomly
    /// ordered map with an unstable sort, so its tie order is arbitrary.
    ///
    /// `region_weight` is goim's gain for nodes in the client's region. goim never resolves a
    /// client region (its `location` lookup is a stub returning ""), so the gain is always 1.0
    /// and the parameter is accepted but unused, ready for when regions exist.
    pub fn pick(
        &mut self,
        platform: &str,
        region_weight: f64,
        host_domain: &str,
        default_domain: &str,
    ) -> Vec<String> {
        let _ = region_weight;
        let gain = 1.0;
        let total_weight = self
            .nodes
            .values()
            .fold(0i64, |acc, n| acc.saturating_add(n.fixed_weight));
        let total_conns = self
            .nodes
            .values()
            .fold(0i64, |acc, n| acc.saturating_add(n.current_conns));
        for state in self.nodes.values_mut() {
            state.current_weight = calculate_weight(
                state.fixed_weight,
                state.current_conns,
                total_weight,
                total_conns,
                gain,
            );
        }

        let mut ranked: Vec<(&String, &NodeState)> = self.nodes.iter().collect();
        ranked.sort_by(rank);
        ranked.truncate(MAX_NODES);
        let top = ranked.first().map(|(id, _)| (*id).clone());

        let mut out: Vec<String> = if platform == PLATFORM_WEB {
            ranked
                .iter()
                .map(|(id, _)| format!("{id}{host_domain}"))
                .collect()
        } else {
            ranked
                .iter()
                .flat_map(|(_, state)| state.addrs.iter().cloned())
                .collect()
        };

        if let Some(state) = top.and_then(|id| self.nodes.get_mut(&id)) {
            state.current_conns = state.current_conns.saturating_add(1);
        }
        if out.is_empty() {
            out.push(default_domain.to_string());
        }
        out
    }
}

/// Ranking order: current weight descending, then id ascending.
fn rank(a: &(&String, &NodeState), b: &(&String, &NodeState)) -> Ordering {
    b.1.current_weight
        .cmp(&a.1.current_weight)
        .then_with(|| a.0.cmp(b.0))
}

/// goim `weightedNode.calcuateWeight`: the node's fixed weight (times `gain`) plus its
/// connection deficit, i.e. `(weight share - conn share / 2) * total_conns`, rounded half down.
///
/// Zero when there are no connections at all. A node above its share (negative deficit) never
/// drops below [`MIN_WEIGHT`]; a node at or below it never exceeds [`MAX_WEIGHT`] (the clamps are
/// one-sided, as in goim). Where goim divides by a zero total weight (NaN), the weight share is
/// taken as 0.
fn calculate_weight(
    fixed_weight: i64,
    current_conns: i64,
    total_weight: i64,
    total_conns: i64,
    gain: f64,
) -> i64 {
    let fixed = fixed_weight as f64 * gain;
    let total_weight = total_weight.saturating_add((fixed as i64).saturating_sub(fixed_weight));
    if total_conns <= 0 {
        return 0;
    }
    let weight_ratio = if total_weight == 0 {
        0.0
    } else {
        fixed / total_weight as f64
    };
    let conn_ratio = current_conns as f64 / total_conns as f64 * 0.5;
    let diff = weight_ratio - conn_ratio;
    let multiple = diff * total_conns as f64;
    let floor = multiple.floor();
    let weight = if floor - multiple >= -0.5 {
        (fixed + floor) as i64
    } else {
        (fixed + multiple.ceil()) as i64
    };
    if diff < 0.0 {
        weight.max(MIN_WEIGHT)
    } else {
        weight.min(MAX_WEIGHT)
    }
}

/// Client reconnect backoff advertised in the reply (goim `Backoff`). Delays are in seconds.
#[derive(Serialize, Debug, Clone, PartialEq, Default)]
pub struct Backoff {
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub max_delay: i32,
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub base_delay: i32,
    #[serde(skip_serializing_if = "is_zero_f32")]
    pub factor: f32,
    #[serde(skip_serializing_if = "is_zero_f32")]
    pub jitter: f32,
}

/// Body of `/goim/nodes/weighted` (goim `NodesReply`). Zero values are omitted from the JSON like
/// goim's `omitempty` tags. goim always sets `backoff`, so it serialises as `{}` even when every
/// field is zero; `None` omits it.
#[derive(Serialize, Debug, Clone, PartialEq, Default)]
pub struct NodesReply {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub tcp_port: i32,
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub ws_port: i32,
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub wss_port: i32,
    /// Heartbeat interval in seconds.
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub heartbeat: i32,
    /// Missed heartbeats tolerated before the gateway drops the client.
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub heartbeat_max: i32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

fn is_zero_f32(v: &f32) -> bool {
    *v == 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, weight: i64, conn_count: i64) -> Node {
        Node {
            id: id.to_string(),
            weight,
            conn_count,
            addrs: vec![format!("{id}-1:3101"), format!("{id}-2:3101")],
        }
    }

    fn balancer(nodes: &[Node]) -> Balancer {
        let mut b = Balancer::new();
        assert!(b.update(nodes));
        b
    }

    fn weight_of(b: &Balancer, id: &str) -> i64 {
        b.nodes[id].current_weight
    }

    fn conns_of(b: &Balancer, id: &str) -> i64 {
        b.nodes[id].current_conns
    }

    fn web(b: &mut Balancer) -> Vec<String> {
        b.pick("web", 1.0, ".example.com", "default.example.com")
    }

    #[test]
    fn zero_total_conns_gives_zero_weights_and_id_order() {
        // Weights differ, but with no connections goim resets every weight to 0.
        let mut b = balancer(&[node("c", 30, 0), node("a", 1, 0), node("b", 500, 0)]);
        let out = web(&mut b);
        assert_eq!(out, ["a.example.com", "b.example.com", "c.example.com"]);
        for id in ["a", "b", "c"] {
            assert_eq!(weight_of(&b, id), 0);
        }
        // The top node is charged one simulated connection, the others are untouched.
        assert_eq!(conns_of(&b, "a"), 1);
        assert_eq!(conns_of(&b, "b"), 0);
        assert_eq!(conns_of(&b, "c"), 0);
    }

    #[test]
    fn lightly_loaded_node_is_preferred() {
        // "z" sorts last by id, so it can only come first through its weight.
        let mut b = balancer(&[node("a", 10, 100), node("z", 10, 0)]);
        let out = web(&mut b);
        assert_eq!(out, ["z.example.com", "a.example.com"]);
        // a: share 0.5 - 0.5 * 1.0 = 0 -> 10. z: share 0.5 - 0 = 0.5 * 100 = 50 -> 60.
        assert_eq!(weight_of(&b, "a"), 10);
        assert_eq!(weight_of(&b, "z"), 60);
        assert_eq!(conns_of(&b, "z"), 1);
        assert_eq!(conns_of(&b, "a"), 100);
    }

    #[test]
    fn heavier_fixed_weight_wins_at_equal_load() {
        let mut b = balancer(&[node("a", 1, 10), node("b", 3, 10)]);
        // a: (0.25 - 0.25) * 20 = 0 -> 1. b: (0.75 - 0.25) * 20 = 10 -> 13.
        assert_eq!(web(&mut b)[0], "b.example.com");
        assert_eq!(weight_of(&b, "a"), 1);
        assert_eq!(weight_of(&b, "b"), 13);
    }

    #[test]
    fn rounding_is_half_down() {
        // total 4 conns, a holds 3: (0.5 - 0.375) * 4 = 0.5 -> floor. b: (0.5 - 0.125) * 4 = 1.5.
        assert_eq!(calculate_weight(10, 3, 20, 4, 1.0), 10);
        assert_eq!(calculate_weight(10, 1, 20, 4, 1.0), 11);
        // (0.5 - 0.3) * 10 = 2 -> 12; (0.6 - 0.05) * 10 = 5.5 -> 5 (half goes down).
        assert_eq!(calculate_weight(10, 6, 20, 10, 1.0), 12);
        assert_eq!(calculate_weight(6, 1, 10, 10, 1.0), 11);
        // (1/3 - 0) * 2 = 0.667 -> rounds up to 1.
        assert_eq!(calculate_weight(1, 0, 3, 2, 1.0), 2);
    }

    #[test]
    fn repeated_picks_spread_over_nodes() {
        let mut b = balancer(&[node("a", 10, 0), node("b", 10, 0), node("c", 10, 0)]);
        let mut chosen = BTreeMap::<String, u32>::new();
        for _ in 0..300 {
            let top = web(&mut b).remove(0);
            *chosen.entry(top).or_default() += 1;
        }
        assert_eq!(
            chosen.len(),
            3,
            "every node chosen at least once: {chosen:?}"
        );
        for (id, count) in &chosen {
            assert!((90..=110).contains(count), "{id} chosen {count} times");
        }
        // Simulated connections account for every pick.
        assert_eq!(
            conns_of(&b, "a") + conns_of(&b, "b") + conns_of(&b, "c"),
            300
        );
    }

    #[test]
    fn heavier_node_absorbs_simulated_picks() {
        // goim's quirk, kept on purpose: the connection share is halved, so it can never offset
        // the weight-share term of a heavier node. Picks do not split 1:3; apart from the first
        // pick (all weights 0 before any connection, id order) every pick goes to "b".
        let mut b = balancer(&[node("a", 1, 0), node("b", 3, 0)]);
        for _ in 0..400 {
            web(&mut b);
        }
        assert_eq!(conns_of(&b, "a"), 1);
        assert_eq!(conns_of(&b, "b"), 399);
    }

    #[test]
    fn web_platform_returns_domains() {
        let mut b = balancer(&[node("gw1", 10, 5), node("gw2", 10, 50)]);
        let out = b.pick("web", 1.0, ".im.example.com", "im.example.com");
        assert_eq!(out, ["gw1.im.example.com", "gw2.im.example.com"]);
    }

    #[test]
    fn other_platforms_return_flattened_addrs_in_rank_order() {
        let mut b = balancer(&[node("gw1", 10, 50), node("gw2", 10, 5)]);
        for platform in ["android", "ios", ""] {
            let mut b = b.clone();
            let out = b.pick(platform, 1.0, ".im.example.com", "im.example.com");
            assert_eq!(
                out,
                ["gw2-1:3101", "gw2-2:3101", "gw1-1:3101", "gw1-2:3101"]
            );
        }
        // A node without addresses contributes nothing.
        let mut n = node("gw3", 1_000, 0);
        n.addrs.clear();
        assert!(b.update(&[node("gw1", 10, 50), node("gw2", 10, 5), n]));
        let out = b.pick("android", 1.0, ".im.example.com", "im.example.com");
        assert_eq!(
            out,
            ["gw2-1:3101", "gw2-2:3101", "gw1-1:3101", "gw1-2:3101"]
        );
        assert_eq!(conns_of(&b, "gw3"), 1, "gw3 still ranked first and charged");
    }

    #[test]
    fn at_most_five_nodes_returned() {
        // Load grows with the id, so the rank order is a..g and the last two are cut.
        let nodes: Vec<Node> = ["a", "b", "c", "d", "e", "f", "g"]
            .iter()
            .zip(0..)
            .map(|(id, i)| node(id, 10, i * 10))
            .collect();
        let mut b = balancer(&nodes);
        let out = web(&mut b);
        assert_eq!(
            out,
            [
                "a.example.com",
                "b.example.com",
                "c.example.com",
                "d.example.com",
                "e.example.com"
            ]
        );
        let addrs = b.pick("ios", 1.0, ".example.com", "default.example.com");
        assert_eq!(addrs.len(), 10);
    }

    #[test]
    fn empty_result_falls_back_to_default_domain() {
        let mut b = Balancer::new();
        assert!(b.is_empty());
        assert_eq!(web(&mut b), ["default.example.com"]);
        assert_eq!(
            b.pick("android", 1.0, ".example.com", "default.example.com"),
            ["default.example.com"]
        );
        // Non-web with no addresses anywhere also falls back.
        let mut n = node("a", 10, 0);
        n.addrs.clear();
        assert!(b.update(&[n]));
        assert_eq!(
            b.pick("android", 1.0, ".example.com", "default.example.com"),
            ["default.example.com"]
        );
        assert_eq!(web(&mut b), ["a.example.com"]);
    }

    #[test]
    fn shrink_guard() {
        let ten: Vec<Node> = (0..10).map(|i| node(&format!("n{i}"), 10, 0)).collect();
        let mut b = balancer(&ten);
        assert_eq!(b.len(), 10);
        assert!(!b.update(&ten[..4]), "10 -> 4 is less than half");
        assert_eq!(b.len(), 10);
        assert!(b.update(&ten[..5]), "10 -> 5 is exactly half");
        assert_eq!(b.len(), 5);
        // goim compares as floats: 3 -> 1 is a third, ignored.
        assert!(b.update(&ten[..3]));
        assert!(!b.update(&ten[..1]));
        assert_eq!(b.len(), 3);
        // Growing is always fine.
        assert!(b.update(&ten));
        assert_eq!(b.len(), 10);
    }

    #[test]
    fn empty_update_is_always_ignored() {
        let mut b = Balancer::new();
        assert!(!b.update(&[]));
        assert!(b.update(&[node("a", 10, 0)]));
        assert!(
            !b.update(&[]),
            "1 -> 0 is ignored like goim's len(ins) == 0 check"
        );
        assert_eq!(b.len(), 1);
        assert_eq!(web(&mut b), ["a.example.com"]);
    }

    #[test]
    fn update_keeps_simulated_conns_only_for_unchanged_nodes() {
        let mut b = balancer(&[node("a", 10, 0), node("b", 10, 0), node("c", 10, 0)]);
        web(&mut b);
        web(&mut b);
        assert_eq!(conns_of(&b, "a"), 2);
        // a unchanged, b reports new conns, c new weight, d new.
        assert!(b.update(&[
            node("a", 10, 0),
            node("b", 10, 7),
            node("c", 20, 0),
            node("d", 10, 3),
        ]));
        assert_eq!(conns_of(&b, "a"), 2);
        assert_eq!(conns_of(&b, "b"), 7);
        assert_eq!(conns_of(&b, "c"), 0);
        assert_eq!(conns_of(&b, "d"), 3);
        // Addresses are taken from the snapshot even for a kept node.
        let mut moved = node("a", 10, 0);
        moved.addrs = vec!["new:1".to_string()];
        assert!(b.update(&[moved, node("b", 10, 7), node("c", 20, 0)]));
        assert_eq!(conns_of(&b, "a"), 2);
        assert_eq!(b.nodes["a"].addrs, ["new:1"]);
    }

    #[test]
    fn weights_clamp_to_one_and_to_max() {
        // a: share 0.01 against half of all conns -> far negative -> clamped up to 1.
        // z: share 0.99 * 10M conns -> far above 1 << 20 -> clamped down.
        let mut b = balancer(&[node("a", 1, 10_000_000), node("z", 99, 0)]);
        assert_eq!(web(&mut b), ["z.example.com", "a.example.com"]);
        assert_eq!(weight_of(&b, "a"), MIN_WEIGHT);
        assert_eq!(weight_of(&b, "z"), MAX_WEIGHT);
        assert_eq!(MAX_WEIGHT, 1 << 20);
    }

    #[test]
    fn clamps_are_one_sided() {
        // Overloaded (diff < 0) but huge fixed weight: not clamped down to the max.
        assert_eq!(
            calculate_weight(1 << 21, 100, 100 << 21, 100, 1.0),
            (1 << 21) - 49
        );
        // Underloaded (diff >= 0) with zero weight and zero conns: stays 0, not raised to 1.
        assert_eq!(calculate_weight(0, 0, 10, 5, 1.0), 0);
    }

    #[test]
    fn all_zero_weights_do_not_panic_or_nan() {
        let mut b = balancer(&[node("a", 0, 5), node("b", 0, 0), node("c", 0, 9)]);
        for _ in 0..50 {
            let out = web(&mut b);
            assert_eq!(out.len(), 3);
            for id in ["a", "b", "c"] {
                let w = weight_of(&b, id);
                assert!((0..=1).contains(&w), "{id} weight {w}");
            }
        }
        // Share 0 for everyone: loaded nodes clamp to 1, an idle one keeps 0 (diff == 0).
        assert_eq!(calculate_weight(0, 0, 0, 14, 1.0), 0);
        assert_eq!(calculate_weight(0, 5, 0, 14, 1.0), 1);
        assert_eq!(calculate_weight(0, 0, 0, 0, 1.0), 0);
    }

    #[test]
    fn region_weight_is_ignored() {
        let nodes = [node("a", 10, 40), node("b", 10, 0)];
        let mut plain = balancer(&nodes);
        let mut boosted = balancer(&nodes);
        for _ in 0..20 {
            assert_eq!(
                plain.pick("web", 1.0, ".x", "d"),
                boosted.pick("web", 1_000.0, ".x", "d")
            );
        }
    }

    #[test]
    fn nodes_reply_json_omits_zero_values() {
        let empty = NodesReply::default();
        assert_eq!(serde_json::to_string(&empty).unwrap(), "{}");

        let reply = NodesReply {
            domain: "im.example.com".to_string(),
            tcp_port: 3101,
            ws_port: 3102,
            wss_port: 0,
            heartbeat: 240,
            heartbeat_max: 3,
            nodes: vec!["gw1.im.example.com".to_string()],
            backoff: Some(Backoff {
                max_delay: 300,
                base_delay: 3,
                factor: 1.8,
                jitter: 0.0,
            }),
        };
        let value = serde_json::to_value(&reply).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "domain": "im.example.com",
                "tcp_port": 3101,
                "ws_port": 3102,
                "heartbeat": 240,
                "heartbeat_max": 3,
                "nodes": ["gw1.im.example.com"],
                "backoff": {"max_delay": 300, "base_delay": 3, "factor": 1.8f32},
            })
        );

        let zero_backoff = NodesReply {
            backoff: Some(Backoff::default()),
            ..NodesReply::default()
        };
        assert_eq!(
            serde_json::to_string(&zero_backoff).unwrap(),
            r#"{"backoff":{}}"#
        );
        let jitter_only = Backoff {
            jitter: 0.3,
            ..Backoff::default()
        };
        assert_eq!(
            serde_json::to_string(&jitter_only).unwrap(),
            r#"{"jitter":0.3}"#
        );
    }
}
