//! The hardware graph: GPUs, NVLink switch chips, NICs, CPUs and network switches, joined
//! by full-duplex links. Loaded from YAML (`topologies/*.yaml`), where compact generators
//! (a scale-up domain, a scale-out fabric) stand beside explicit node and link lists.

mod build;
mod export;
mod schema;
mod summary;

pub use build::{load, load_with};
pub use export::to_dot;
pub use summary::Summary;

use crate::hardware::GpuSpec;
use petgraph::graph::{NodeIndex, UnGraph};
use petgraph::visit::EdgeRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Gpu,
    /// An NVLink switch chip.
    Nvswitch,
    Nic,
    Cpu,
    /// A scale-out network switch (InfiniBand or Ethernet).
    Switch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    Nvlink,
    /// NVLink-C2C between a Grace CPU and its GPUs.
    C2c,
    Pcie,
    /// InfiniBand or Ethernet.
    Network,
}

/// How concurrent flows share a link.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    /// Flows divide the link's bandwidth (max-min fair).
    #[default]
    Shared,
    /// Every flow gets the full bandwidth (a non-blocking crossbar).
    Fatpipe,
}

/// MoE all-to-all kernels, which move different bytes over different links.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum A2aAlgorithm {
    /// Every rank writes straight to every rank holding one of a token's experts, once per
    /// rank (the one-sided NVLink kernels inside an NVL72).
    Direct,
    /// DeepEP's normal kernels: a token crosses the network once per destination node, to
    /// the GPU of the same local index, which forwards it over NVLink.
    Hierarchical,
    /// DeepEP's decode kernels: one copy per token and expert, straight to the destination,
    /// no forwarding.
    LowLatency,
}

impl std::fmt::Display for A2aAlgorithm {
    /// As written in topology files and on the command line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            A2aAlgorithm::Direct => "direct",
            A2aAlgorithm::Hierarchical => "hierarchical",
            A2aAlgorithm::LowLatency => "low-latency",
        })
    }
}

/// How collectives run on this hardware.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Collectives {
    /// The all-to-all kernel production systems use here.
    pub algorithm: A2aAlgorithm,
    /// Achieved fraction of NIC bandwidth for all-to-all traffic.
    pub network_efficiency: f64,
    /// Fixed cost of one dispatch (kernel, barrier), microseconds.
    pub dispatch_latency_us: f64,
    /// Fixed cost of one combine, microseconds.
    pub combine_latency_us: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopoNode {
    /// Unique id, such as `rack/gpu3` or `fabric`.
    pub id: String,
    pub kind: NodeKind,
    /// The GPU spec name, for GPUs.
    pub gpu_spec: Option<String>,
}

/// A full-duplex link: `bandwidth_gb_s()` in each direction.
#[derive(Debug, Clone, PartialEq)]
pub struct TopoLink {
    pub kind: LinkKind,
    /// Physical links bundled into this edge.
    pub lanes: u32,
    /// Per physical link, per direction, GB/s (1e9 bytes per second).
    pub lane_gb_s: f64,
    pub latency_ns: f64,
    pub sharing: Sharing,
}

impl TopoLink {
    /// Per direction, all lanes together, GB/s.
    pub fn bandwidth_gb_s(&self) -> f64 {
        f64::from(self.lanes) * self.lane_gb_s
    }
}

/// A loaded, validated topology.
#[derive(Debug, Clone)]
pub struct Topology {
    pub name: String,
    pub description: String,
    /// Parameter values in effect (defaults with overrides applied).
    pub parameters: BTreeMap<String, u64>,
    pub graph: UnGraph<TopoNode, TopoLink>,
    /// GPUs in rank order: generated domains first, in file order, then explicit GPUs.
    pub gpus: Vec<NodeIndex>,
    /// The specs of the GPUs present, by name.
    pub gpu_specs: BTreeMap<String, GpuSpec>,
    /// How collectives run here, when the file says.
    pub collectives: Option<Collectives>,
    by_id: BTreeMap<String, NodeIndex>,
}

impl Topology {
    pub fn node(&self, id: &str) -> Option<NodeIndex> {
        self.by_id.get(id).copied()
    }

    pub fn count(&self, kind: NodeKind) -> usize {
        self.graph.node_weights().filter(|n| n.kind == kind).count()
    }

    /// NVLink bandwidth of `gpu`, per direction, summed over its NVLink links, GB/s.
    pub fn nvlink_gb_s(&self, gpu: NodeIndex) -> f64 {
        nvlink_gb_s(&self.graph, gpu)
    }

    /// The nodes joined to `node`, each with the link that joins them.
    pub fn links_of(&self, node: NodeIndex) -> impl Iterator<Item = (NodeIndex, &TopoLink)> {
        self.graph.edges(node).map(move |e| {
            let other = if e.target() == node {
                e.source()
            } else {
                e.target()
            };
            (other, e.weight())
        })
    }

    /// A leaf switch's NIC bandwidth below and uplink bandwidth to other switches above, GB/s
    /// per direction; `None` unless `node` is a switch with both (a non-blocking fabric's
    /// one switch has no uplink, a spine no NIC).
    pub fn leaf_gb_s(&self, node: NodeIndex) -> Option<(f64, f64)> {
        if self.graph[node].kind != NodeKind::Switch {
            return None;
        }
        let (mut down, mut up) = (0.0, 0.0);
        for (other, link) in self.links_of(node) {
            match self.graph[other].kind {
                NodeKind::Nic => down += link.bandwidth_gb_s(),
                NodeKind::Switch => up += link.bandwidth_gb_s(),
                _ => {}
            }
        }
        (down > 0.0 && up > 0.0).then_some((down, up))
    }

    /// Bandwidth from host memory into `gpu`, per direction, GB/s: its NVLink-C2C link to a
    /// Grace CPU where it has one, else its PCIe link (to a CPU, or to its NIC).
    pub fn host_link_gb_s(&self, gpu: NodeIndex) -> Option<f64> {
        let links = || self.graph.edges(gpu).map(|e| e.weight());
        links()
            .filter(|l| l.kind == LinkKind::C2c)
            .map(TopoLink::bandwidth_gb_s)
            .reduce(f64::max)
            .or_else(|| {
                links()
                    .filter(|l| l.kind == LinkKind::Pcie)
                    .map(TopoLink::bandwidth_gb_s)
                    .reduce(f64::max)
            })
    }
}

fn nvlink_gb_s(graph: &UnGraph<TopoNode, TopoLink>, node: NodeIndex) -> f64 {
    graph
        .edges(node)
        .map(|e| e.weight())
        .filter(|l| l.kind == LinkKind::Nvlink)
        .map(TopoLink::bandwidth_gb_s)
        .sum()
}
