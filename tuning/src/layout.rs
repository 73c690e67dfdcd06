//! Laying a profile out on a host's cores: on each NUMA node, the first cores are kept for the
//! NIC's interrupts and the dispatcher (as many as the profile says), and the rest run shards.

use crate::host::Host;
use crate::profile::Profile;
use crate::{Error, Result};

/// Where everything runs on one NUMA node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLayout {
    pub node: usize,
    /// Cores kept for the NIC's interrupts.
    pub irq: Vec<usize>,
    /// Cores kept for the dispatcher.
    pub dispatcher: Vec<usize>,
    /// Cores running gateway shards.
    pub shards: Vec<usize>,
}

/// A profile laid out on a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub nodes: Vec<NodeLayout>,
}

impl Layout {
    /// Lays the profile out on the host's online cores.
    pub fn of(profile: &Profile, host: &Host) -> Result<Layout> {
        let fail = |message: String| Error::Layout {
            profile: profile.name.to_string(),
            message,
        };
        let nodes = host
            .node_cores()
            .ok_or_else(|| fail("the online cores are unknown".into()))?;
        let nodes: Vec<NodeLayout> = nodes
            .into_iter()
            .map(|node| {
                let mut cores = node.cores.into_iter();
                let irq = cores.by_ref().take(profile.irq_cores_per_node).collect();
                let dispatcher = cores
                    .by_ref()
                    .take(profile.dispatcher_cores_per_node)
                    .collect();
                NodeLayout {
                    node: node.id,
                    irq,
                    dispatcher,
                    shards: cores.collect(),
                }
            })
            .collect();
        let layout = Layout { nodes };
        if layout.shards().is_empty() {
            return Err(fail(format!(
                "it keeps {} core(s) per node for NIC interrupts and the dispatcher, which leaves \
                 no core for a shard",
                profile.reserved_per_node()
            )));
        }
        Ok(layout)
    }

    /// Every shard core, in node order.
    pub fn shards(&self) -> Vec<usize> {
        self.nodes.iter().flat_map(|n| n.shards.clone()).collect()
    }

    /// Every core kept for NIC interrupts.
    pub fn irq(&self) -> Vec<usize> {
        self.nodes.iter().flat_map(|n| n.irq.clone()).collect()
    }

    /// Every core kept for the dispatcher.
    pub fn dispatcher(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .flat_map(|n| n.dispatcher.clone())
            .collect()
    }
}
