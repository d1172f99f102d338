//! The flow-level network model: routes over the topology graph, max-min fair sharing of
//! link bandwidth, and transfers simulated to completion as flows that start together and
//! finish as their bytes run out.

pub mod flowset;
pub mod maxmin;
pub mod routes;
pub mod transfer;

use crate::topology::{LinkKind, Sharing, Topology};
use maxmin::Resource;
use petgraph::graph::NodeIndex;

/// Achieved fractions of link bandwidth for bulk collective traffic, by link technology.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LinkEfficiency {
    pub nvlink: f64,
    /// InfiniBand / Ethernet NIC links.
    pub network: f64,
}

impl LinkEfficiency {
    /// The shipped constants for `gpu` of `topo`: NVLink from its GPU family file, network
    /// from the topology's `collectives` section; `None` if either is missing.
    pub fn for_gpu(topo: &Topology, gpu: NodeIndex) -> Option<LinkEfficiency> {
        let spec = topo.graph[gpu]
            .gpu_spec
            .as_ref()
            .and_then(|name| topo.gpu_specs.get(name))?;
        Some(LinkEfficiency {
            nvlink: spec.efficiency.nvlink_efficiency,
            network: topo.collectives.as_ref()?.network_efficiency,
        })
    }

    fn of(&self, kind: LinkKind) -> f64 {
        match kind {
            LinkKind::Nvlink => self.nvlink,
            LinkKind::Network => self.network,
            LinkKind::C2c | LinkKind::Pcie => 1.0,
        }
    }
}

/// Every link direction of a topology as a resource: capacity = lanes x bandwidth x the
/// achieved fraction for its kind. Resource `2e` runs along edge e, `2e + 1` against it.
pub fn resources(topo: &Topology, efficiency: LinkEfficiency) -> Vec<Resource> {
    topo.graph
        .edge_weights()
        .flat_map(|link| {
            let r = Resource {
                capacity: link.bandwidth_gb_s() * 1e9 * efficiency.of(link.kind),
                shared: link.sharing == Sharing::Shared,
            };
            [r, r]
        })
        .collect()
}

/// Latency of a route: the share-weighted sum of its links' latencies, in seconds (the
/// mean over its equal-cost paths).
pub fn route_latency_s(topo: &Topology, route: &routes::Route) -> f64 {
    route
        .iter()
        .map(|&(r, share)| {
            share * topo.graph[petgraph::graph::EdgeIndex::new(r / 2)].latency_ns * 1e-9
        })
        .sum()
}
