//! The generated scale-out network: a NIC per GPU behind its host link, then one of three
//! fabrics. Non-blocking joins every NIC to one switch. Rail-optimised and leaf-spine put
//! NICs on leaf switches (a rail's, or `leaf_nics` in GPU order) joined by a spine; each
//! leaf's uplink carries its NICs' bandwidth / the oversubscription, so traffic between
//! leaves is what an oversubscribed fabric holds back.

use super::super::schema::{Count, Fabric, ScaleOut};
use super::super::{LinkKind, NodeKind, TopoLink};
use super::Builder;
use crate::input::At;
use petgraph::graph::NodeIndex;

impl Builder<'_> {
    pub(super) fn scale_out(&mut self, so: &At<ScaleOut>) {
        let path = "scale_out";
        let host = self.link_from_spec(
            &so.value.host_link,
            LinkKind::Pcie,
            1,
            "scale_out.host_link",
        );
        let port = self.link_from_spec(
            &so.value.nic_link,
            LinkKind::Network,
            1,
            "scale_out.nic_link",
        );
        let shape = self.fabric_shape(so);
        if !self.within_size_limit(3 * self.gpus.len() as u64, so.loc, path) {
            return;
        }
        let Some((fabric, oversubscription, leaf_nics)) = shape else {
            return;
        };
        let nics = self.nics(&host, so);
        let leaves: Vec<(String, Vec<NodeIndex>)> = match fabric {
            Fabric::NonBlocking => {
                let all: Vec<NodeIndex> = nics.iter().map(|(n, _)| *n).collect();
                self.add_hub("fabric".into(), NodeKind::Switch, &all, &port, so.loc, path);
                return;
            }
            Fabric::RailOptimized => self.group_nics(&nics, |place| place.map(|p| p.local), "rail"),
            Fabric::LeafSpine => match leaf_nics {
                Some(per_leaf) => nics
                    .chunks(per_leaf)
                    .enumerate()
                    .map(|(i, c)| (format!("leaf{i}"), c.iter().map(|(n, _)| *n).collect()))
                    .collect(),
                None => self.group_nics(&nics, |place| place.map(|p| p.domain), "leaf"),
            },
        };
        self.join_through_spine(leaves, &port, oversubscription, so);
    }

    /// A switch per leaf over its NICs, and one spine above the leaves, each leaf's uplink
    /// its NIC bandwidth / `oversubscription`.
    fn join_through_spine(
        &mut self,
        leaves: Vec<(String, Vec<NodeIndex>)>,
        port: &TopoLink,
        oversubscription: u64,
        so: &At<ScaleOut>,
    ) {
        let path = "scale_out";
        let Some(spine) = self.add_node("spine".into(), NodeKind::Switch, None, so.loc, path)
        else {
            return;
        };
        for (id, members) in leaves {
            let Some(leaf) = self.add_hub(id, NodeKind::Switch, &members, port, so.loc, path)
            else {
                continue;
            };
            // As many links of a NIC's speed as that bandwidth needs, sharing it evenly.
            let nics = members.len() as u64;
            let lanes = nics.div_ceil(oversubscription).max(1);
            let uplink = TopoLink {
                lanes: u32::try_from(lanes).unwrap_or(u32::MAX),
                lane_gb_s: port.lane_gb_s * nics as f64 / (oversubscription * lanes) as f64,
                ..port.clone()
            };
            self.add_link(leaf, spine, uplink);
        }
    }

    /// The fabric, its oversubscription and NICs per leaf. An option that does not fit is
    /// reported and left at its default, so the network is still built and the checks
    /// after it do not pile on; `None` (reported) when the fabric cannot be built.
    fn fabric_shape(&mut self, so: &At<ScaleOut>) -> Option<(Fabric, u64, Option<usize>)> {
        let s = &so.value;
        let mut ratio =
            self.optional_count(s.oversubscription.as_ref(), "scale_out.oversubscription");
        let mut per_leaf = self.optional_count(s.leaf_nics.as_ref(), "scale_out.leaf_nics");
        if s.fabric == Fabric::NonBlocking
            && let Some(r) = &s.oversubscription
        {
            self.problem(r.loc, "scale_out.oversubscription", "a non_blocking fabric has no oversubscription; use `fabric: leaf_spine` or `rail_optimized`");
            ratio = None;
        }
        if s.fabric != Fabric::LeafSpine
            && let Some(n) = &s.leaf_nics
        {
            self.problem(n.loc, "scale_out.leaf_nics", "only a leaf_spine fabric takes `leaf_nics` (rails follow the GPU's index in its domain)");
            per_leaf = None;
        }
        let per_leaf = per_leaf.flatten();
        let domains_needed = s.fabric == Fabric::RailOptimized
            || (s.fabric == Fabric::LeafSpine && per_leaf.is_none());
        if domains_needed && self.place.iter().any(Option::is_none) {
            let what = match s.fabric {
                Fabric::RailOptimized => {
                    "a rail_optimized fabric needs every GPU in a scale_up domain (rails follow the GPU's index in its domain)"
                }
                _ => {
                    "a leaf_spine fabric without `leaf_nics` needs every GPU in a scale_up domain (a leaf per domain)"
                }
            };
            self.problem(so.loc, "scale_out", what);
            return None;
        }
        Some((
            s.fabric,
            ratio.flatten().unwrap_or(1),
            per_leaf.map(|n| n as usize),
        ))
    }

    /// `Some(None)` when absent, `Some(Some(n))` for a count >= 1, `None` (reported) else.
    fn optional_count(&mut self, c: Option<&At<Count>>, path: &str) -> Option<Option<u64>> {
        match c {
            None => Some(None),
            Some(c) => self.count_at_least(c, path, 1).map(Some),
        }
    }

    /// A NIC for every GPU, behind its host link, with the GPU's place.
    fn nics(
        &mut self,
        host: &TopoLink,
        so: &At<ScaleOut>,
    ) -> Vec<(NodeIndex, Option<super::Place>)> {
        self.gpus
            .clone()
            .into_iter()
            .zip(self.place.clone())
            .filter_map(|(gpu, place)| {
                let gpu_id = self.graph[gpu].id.clone();
                let nic_id = match gpu_id.rsplit_once("/gpu") {
                    Some((prefix, i)) => format!("{prefix}/nic{i}"),
                    None => format!("{gpu_id}.nic"),
                };
                let nic = self.add_node(nic_id, NodeKind::Nic, None, so.loc, "scale_out")?;
                self.add_link(gpu, nic, host.clone());
                Some((nic, place))
            })
            .collect()
    }

    /// NICs grouped by a key of their GPU's place (its rail, its domain), in key order.
    fn group_nics(
        &self,
        nics: &[(NodeIndex, Option<super::Place>)],
        key: impl Fn(Option<super::Place>) -> Option<usize>,
        name: &str,
    ) -> Vec<(String, Vec<NodeIndex>)> {
        let mut groups: std::collections::BTreeMap<usize, Vec<NodeIndex>> = Default::default();
        for &(nic, place) in nics {
            if let Some(k) = key(place) {
                groups.entry(k).or_default().push(nic);
            }
        }
        groups
            .into_iter()
            .map(|(k, members)| (format!("{name}{k}"), members))
            .collect()
    }
}
