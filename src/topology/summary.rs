//! What `epsim topo show` reports: counts of each kind of node and link, and NVLink
//! bandwidth per GPU.

use super::{LinkKind, NodeKind, Topology};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub name: String,
    pub description: String,
    pub parameters: BTreeMap<String, u64>,
    pub gpus: usize,
    /// GPUs per spec name.
    pub gpu_models: BTreeMap<String, usize>,
    pub nvswitch_chips: usize,
    /// Physical NVLink links (GPU-switch, switch-switch, GPU-GPU), each counted once.
    pub nvlink_links: u64,
    /// NVLink bandwidth per GPU per direction, GB/s: the smallest over all GPUs.
    pub per_gpu_nvlink_gb_s: f64,
    /// The largest, equal to `per_gpu_nvlink_gb_s` when every GPU has the same.
    pub per_gpu_nvlink_gb_s_max: f64,
    pub nics: usize,
    pub cpus: usize,
    pub network_switches: usize,
    /// Physical links of each kind (NVLink, C2C, PCIe, network), each counted once.
    pub links_by_kind: BTreeMap<LinkKind, u64>,
    /// Leaf switches (NICs below, switches above), when the fabric has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaves: Option<Leaves>,
}

/// The leaves of a two-tier fabric and their oversubscription: the NIC bandwidth into a
/// leaf over its uplink bandwidth, the smallest and the largest over the leaves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leaves {
    pub count: usize,
    pub oversubscription_min: f64,
    pub oversubscription_max: f64,
}

impl Leaves {
    fn of(topo: &Topology) -> Option<Leaves> {
        let ratios: Vec<f64> = topo
            .graph
            .node_indices()
            .filter_map(|n| topo.leaf_gb_s(n))
            .map(|(down, up)| down / up)
            .collect();
        (!ratios.is_empty()).then(|| Leaves {
            count: ratios.len(),
            oversubscription_min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
            oversubscription_max: ratios.iter().copied().fold(0.0, f64::max),
        })
    }
}

impl Summary {
    pub fn of(topo: &Topology) -> Summary {
        let mut gpu_models = BTreeMap::new();
        for &gpu in &topo.gpus {
            if let Some(spec) = &topo.graph[gpu].gpu_spec {
                *gpu_models.entry(spec.clone()).or_insert(0) += 1;
            }
        }
        let mut links_by_kind = BTreeMap::new();
        for link in topo.graph.edge_weights() {
            *links_by_kind.entry(link.kind).or_insert(0) += u64::from(link.lanes);
        }
        let per_gpu: Vec<f64> = topo.gpus.iter().map(|&g| topo.nvlink_gb_s(g)).collect();
        Summary {
            name: topo.name.clone(),
            description: topo.description.clone(),
            parameters: topo.parameters.clone(),
            gpus: topo.gpus.len(),
            gpu_models,
            nvswitch_chips: topo.count(NodeKind::Nvswitch),
            nvlink_links: links_by_kind.get(&LinkKind::Nvlink).copied().unwrap_or(0),
            // A loaded topology has at least one GPU, so the minimum is finite.
            per_gpu_nvlink_gb_s: per_gpu.iter().copied().fold(f64::INFINITY, f64::min),
            per_gpu_nvlink_gb_s_max: per_gpu.iter().copied().fold(0.0, f64::max),
            nics: topo.count(NodeKind::Nic),
            cpus: topo.count(NodeKind::Cpu),
            network_switches: topo.count(NodeKind::Switch),
            links_by_kind,
            leaves: Leaves::of(topo),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.name)?;
        if !self.description.is_empty() {
            writeln!(f, "  {}", self.description)?;
        }
        let models: Vec<String> = self
            .gpu_models
            .iter()
            .map(|(m, n)| format!("{n} x {m}"))
            .collect();
        writeln!(
            f,
            "  GPUs:              {} ({})",
            self.gpus,
            models.join(", ")
        )?;
        writeln!(f, "  NVLink switches:   {} chips", self.nvswitch_chips)?;
        writeln!(f, "  NVLink links:      {}", self.nvlink_links)?;
        if self.per_gpu_nvlink_gb_s == self.per_gpu_nvlink_gb_s_max {
            writeln!(
                f,
                "  NVLink per GPU:    {} GB/s per direction",
                self.per_gpu_nvlink_gb_s
            )?;
        } else {
            writeln!(
                f,
                "  NVLink per GPU:    {} to {} GB/s per direction",
                self.per_gpu_nvlink_gb_s, self.per_gpu_nvlink_gb_s_max
            )?;
        }
        writeln!(f, "  CPUs:              {}", self.cpus)?;
        writeln!(f, "  NICs:              {}", self.nics)?;
        writeln!(f, "  network switches:  {}", self.network_switches)?;
        if let Some(l) = &self.leaves {
            let (lo, hi) = (l.oversubscription_min, l.oversubscription_max);
            let ratio = if lo == hi {
                format!("{}:1", round2(lo))
            } else {
                format!("{}:1 to {}:1", round2(lo), round2(hi))
            };
            writeln!(
                f,
                "  leaf switches:     {}, NIC bandwidth over uplink {ratio}",
                l.count
            )?;
        }
        let kinds: Vec<String> = self
            .links_by_kind
            .iter()
            .map(|(k, n)| format!("{n} {}", kind_name(*k)))
            .collect();
        writeln!(f, "  physical links:    {}", kinds.join(", "))?;
        if !self.parameters.is_empty() {
            let params: Vec<String> = self
                .parameters
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(f, "  parameters:        {}", params.join(", "))?;
        }
        Ok(())
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn kind_name(kind: LinkKind) -> &'static str {
    match kind {
        LinkKind::Nvlink => "NVLink",
        LinkKind::C2c => "NVLink-C2C",
        LinkKind::Pcie => "PCIe",
        LinkKind::Network => "network",
    }
}
