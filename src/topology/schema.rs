//! The topology file as written: raw serde structs, checked and expanded by `build.rs`.

use super::{LinkKind, NodeKind, Sharing};
use crate::input::{At, Recover};
use serde::Deserialize;
use serde::de::{self, Visitor};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TopologyFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Directory of GPU spec files, relative to this file.
    #[serde(default)]
    pub gpu_specs: Option<String>,
    /// Named whole numbers with defaults; a count written `$name` takes its value.
    #[serde(default)]
    pub parameters: BTreeMap<String, At<u64>>,
    #[serde(default)]
    pub scale_up: Vec<Recover<At<ScaleUpDomain>>>,
    #[serde(default)]
    pub scale_out: Option<At<ScaleOut>>,
    #[serde(default)]
    pub nodes: Vec<Recover<At<NodeDecl>>>,
    #[serde(default)]
    pub links: Vec<Recover<At<LinkDecl>>>,
    /// How collectives run on this hardware (the all-to-all kernel, measured floors).
    #[serde(default)]
    pub collectives: Option<At<super::Collectives>>,
}

/// "N GPUs, each with L links to each of M switch chips", replicated `count` times.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScaleUpDomain {
    /// Prefix of the generated ids: `rack/gpu3`, or `rack1/gpu3` when `count` > 1.
    pub name: At<String>,
    #[serde(default)]
    pub count: Option<At<Count>>,
    pub gpus: At<Count>,
    /// GPU spec name (a file in the spec directory).
    pub gpu: At<String>,
    pub switch_chips: At<Count>,
    /// Links from every GPU to each switch chip: one number for all chips, or one per chip.
    #[serde(default)]
    pub links_per_switch: Option<At<LinksPerSwitch>>,
    /// One GPU-switch link (per direction).
    pub link: LinkSpec,
    #[serde(default)]
    pub cpus: Option<CpuAttach>,
}

/// Host CPUs, each joined to `gpus_per_cpu` consecutive GPUs (GB200: 1 Grace per 2 GPUs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CpuAttach {
    pub gpus_per_cpu: At<Count>,
    pub link: LinkSpec,
}

/// One NIC per GPU, joined to a fabric.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScaleOut {
    /// GPU to its NIC (PCIe).
    pub host_link: LinkSpec,
    /// NIC port to the fabric.
    pub nic_link: LinkSpec,
    pub fabric: Fabric,
    /// `leaf_spine`: NICs per leaf switch, in GPU order (default: one leaf per scale-up
    /// domain: a rack, a node).
    #[serde(default)]
    pub leaf_nics: Option<At<Count>>,
    /// `leaf_spine` and `rail_optimized`: N for N:1, the NIC bandwidth into a leaf over
    /// its uplink bandwidth to the spine (default 1: non-blocking).
    #[serde(default)]
    pub oversubscription: Option<At<Count>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Fabric {
    /// One non-blocking switch joins every NIC.
    NonBlocking,
    /// NICs of GPUs with the same local index share a rail switch; rails meet at a spine
    /// through uplinks of the rail's NIC bandwidth / `oversubscription`.
    RailOptimized,
    /// NICs share leaf switches (`leaf_nics` each); leaves meet at a spine through uplinks
    /// of the leaf's NIC bandwidth / `oversubscription`.
    LeafSpine,
}

/// Bandwidth of one physical link, per direction, and its latency.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LinkSpec {
    pub bandwidth_gb_s: At<f64>,
    #[serde(default)]
    pub latency_ns: Option<At<f64>>,
    #[serde(default)]
    pub sharing: Option<Sharing>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeDecl {
    pub id: At<String>,
    pub kind: NodeKind,
    /// GPU spec name; required for GPUs, refused for other kinds.
    #[serde(default)]
    pub gpu: Option<At<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LinkDecl {
    pub a: At<String>,
    pub b: At<String>,
    /// Per physical link (lane), per direction.
    pub bandwidth_gb_s: At<f64>,
    #[serde(default)]
    pub latency_ns: Option<At<f64>>,
    #[serde(default)]
    pub sharing: Option<Sharing>,
    /// Inferred from the endpoint kinds when absent.
    #[serde(default)]
    pub kind: Option<LinkKind>,
    /// Parallel physical links bundled in this one; default 1.
    #[serde(default)]
    pub lanes: Option<At<u32>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub(super) enum LinksPerSwitch {
    Same(u32),
    PerChip(Vec<u32>),
}

/// A whole number, written literally or as `$parameter`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Count {
    Literal(u64),
    Parameter(String),
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A bad count is recorded and absorbed (see `input::Recover`), so the rest of its
        // domain is still checked; the placeholder cannot escape, as a recorded problem
        // fails the whole file.
        let checked = Recover::<StrictCount>::deserialize(deserializer)?;
        Ok(checked.0.map_or(Count::Literal(0), |c| c.0))
    }
}

struct StrictCount(Count);

impl<'de> Deserialize<'de> for StrictCount {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl Visitor<'_> for CountVisitor {
            type Value = StrictCount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number >= 0 or a `$parameter`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrictCount, E> {
                Ok(StrictCount(Count::Literal(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrictCount, E> {
                u64::try_from(v)
                    .map(|v| StrictCount(Count::Literal(v)))
                    .map_err(|_| E::custom(format!("expected a whole number >= 0, found {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrictCount, E> {
                match v.strip_prefix('$') {
                    Some(name) if !name.is_empty() => {
                        Ok(StrictCount(Count::Parameter(name.to_owned())))
                    }
                    _ => Err(E::custom(format!(
                        "expected a whole number or a `$parameter`, found the string \"{v}\""
                    ))),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrictCount, E> {
                Err(E::custom(format!("expected a whole number, found {v}")))
            }
        }
        deserializer.deserialize_any(CountVisitor)
    }
}
