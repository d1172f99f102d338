//! From a topology file to a validated graph: parameters, GPU specs, generators, explicit
//! nodes and links, then whole-graph checks. Every problem is collected, none stops the
//! others, and each points at the file, line and column it comes from.

mod fabric;

use super::schema::{
    Count, CpuAttach, LinkDecl, LinkSpec, LinksPerSwitch, NodeDecl, ScaleUpDomain, TopologyFile,
};
use super::{LinkKind, NodeKind, TopoLink, TopoNode, Topology, nvlink_gb_s};
use crate::hardware::{self, GpuSpec};
use crate::input::{self, At, Diagnostics, Loc, Problem, Recover};
use petgraph::graph::{NodeIndex, UnGraph};
use petgraph::unionfind::UnionFind;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Generators refuse to build more links than this: a typo such as `gpus: 7200000` should
/// be an error, not an out-of-memory crash. (Two NVL72 racks have ~3,000 links.)
const MAX_LINKS: u64 = 5_000_000;

/// Loads a topology with its parameters at their defaults.
pub fn load(file: &Path) -> Result<Topology, Diagnostics> {
    load_with(file, &BTreeMap::new())
}

/// Loads a topology with parameters overridden (`--set nodes=8`). Values come as text, so
/// that a value of the wrong type is reported like any other input problem.
pub fn load_with(
    file: &Path,
    overrides: &BTreeMap<String, String>,
) -> Result<Topology, Diagnostics> {
    let raw: TopologyFile = input::read_yaml(file)?;
    let spec_dir = file
        .parent()
        .unwrap_or(Path::new("."))
        .join(raw.gpu_specs.as_deref().unwrap_or("gpus"));
    let mut b = Builder::new(file, spec_dir);
    b.parameters(&raw.parameters, overrides);
    for (i, domain) in raw.scale_up.iter().enumerate() {
        if let Recover(Some(domain)) = domain {
            b.scale_up(domain, i);
        }
    }
    for (i, node) in raw.nodes.iter().enumerate() {
        if let Recover(Some(node)) = node {
            b.explicit_node(node, i);
        }
    }
    // After every GPU exists, so each gets a NIC; before explicit links, so they can name NICs.
    if let Some(scale_out) = &raw.scale_out {
        b.scale_out(scale_out);
    }
    for (i, link) in raw.links.iter().enumerate() {
        if let Recover(Some(link)) = link {
            b.explicit_link(link, i);
        }
    }
    if let Some(c) = &raw.collectives {
        b.check_collectives(c);
    }
    b.check_nvlink_against_specs();
    b.check_gpus_reach_each_other();
    b.finish(raw.name, raw.description, raw.collectives.map(|c| c.value))
}

struct Builder<'f> {
    file: &'f Path,
    diags: Diagnostics,
    params: BTreeMap<String, u64>,
    graph: UnGraph<TopoNode, TopoLink>,
    by_id: BTreeMap<String, NodeIndex>,
    /// Where each node was declared (its generator's position for generated nodes).
    origin: Vec<Loc>,
    gpus: Vec<NodeIndex>,
    /// Where each GPU sits in the scale-up domains, parallel to `gpus`.
    place: Vec<Option<Place>>,
    spec_dir: PathBuf,
    /// Specs by name; `None` for one that failed to load (already reported).
    specs: BTreeMap<String, Option<GpuSpec>>,
    links_made: u64,
    /// Scale-up domains generated so far (replicas counted one by one).
    domains_made: usize,
}

/// A generated GPU's scale-up domain and its index there (its rail).
#[derive(Debug, Clone, Copy)]
struct Place {
    domain: usize,
    local: usize,
}

impl<'f> Builder<'f> {
    fn new(file: &'f Path, spec_dir: PathBuf) -> Self {
        Builder {
            file,
            diags: Diagnostics::new(),
            params: BTreeMap::new(),
            graph: UnGraph::default(),
            by_id: BTreeMap::new(),
            origin: Vec::new(),
            gpus: Vec::new(),
            place: Vec::new(),
            spec_dir,
            specs: BTreeMap::new(),
            links_made: 0,
            domains_made: 0,
        }
    }

    fn problem(&mut self, loc: Loc, path: impl Into<String>, message: impl Into<String>) {
        self.diags.push(self.file, Problem::new(loc, path, message));
    }

    fn parameters(
        &mut self,
        declared: &BTreeMap<String, At<u64>>,
        overrides: &BTreeMap<String, String>,
    ) {
        self.params = declared.iter().map(|(k, v)| (k.clone(), v.value)).collect();
        for (name, text) in overrides {
            if !declared.contains_key(name) {
                let known = if declared.is_empty() {
                    "it declares none".to_owned()
                } else {
                    format!(
                        "it declares {}",
                        declared
                            .keys()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                self.diags.push_file(
                    self.file,
                    format!("--set {name}={text}: the topology has no parameter `{name}`; {known}"),
                );
                continue;
            }
            match text.trim().parse::<u64>() {
                Ok(v) => {
                    self.params.insert(name.clone(), v);
                }
                Err(_) => self.diags.push_file(
                    self.file,
                    format!("--set {name}={text}: parameter `{name}` takes a whole number >= 0, not \"{text}\""),
                ),
            }
        }
    }

    /// The value of a count; `None` (after reporting) for an undeclared parameter.
    fn count(&mut self, c: &At<Count>, path: &str) -> Option<u64> {
        match &c.value {
            Count::Literal(v) => Some(*v),
            Count::Parameter(name) => match self.params.get(name) {
                Some(v) => Some(*v),
                None => {
                    let declared: Vec<String> =
                        self.params.keys().map(|k| format!("`${k}`")).collect();
                    let hint = if declared.is_empty() {
                        "the file declares no `parameters`".to_owned()
                    } else {
                        format!("declared: {}", declared.join(", "))
                    };
                    self.problem(c.loc, path, format!("unknown parameter `${name}`; {hint}"));
                    None
                }
            },
        }
    }

    /// At least `min`, else a problem; `None` when absent or invalid.
    fn count_at_least(&mut self, c: &At<Count>, path: &str, min: u64) -> Option<u64> {
        let v = self.count(c, path)?;
        if v < min {
            self.problem(c.loc, path, format!("must be at least {min}, got {v}"));
            return None;
        }
        Some(v)
    }

    /// Makes sure spec `name` is loaded; reports an unknown or broken spec at `name.loc`.
    fn require_spec(&mut self, name: &At<String>, path: &str) {
        if self.specs.contains_key(&name.value) {
            return;
        }
        let spec_file = hardware::spec_path(&self.spec_dir, &name.value);
        let loaded = if spec_file.is_file() {
            match hardware::load_spec(&spec_file) {
                Ok(spec) => Some(spec),
                Err(e) => {
                    self.problem(
                        name.loc,
                        path,
                        format!("GPU spec `{}` is invalid (see below)", name.value),
                    );
                    self.diags.append(e);
                    None
                }
            }
        } else {
            let available = hardware::available_specs(&self.spec_dir);
            let listing = if available.is_empty() {
                format!("no spec files in {}", self.spec_dir.display())
            } else {
                format!(
                    "available in {}: {}",
                    self.spec_dir.display(),
                    available.join(", ")
                )
            };
            self.problem(
                name.loc,
                path,
                format!("unknown GPU spec `{}`; {listing}", name.value),
            );
            None
        };
        self.specs.insert(name.value.clone(), loaded);
    }

    fn link_from_spec(
        &mut self,
        spec: &LinkSpec,
        kind: LinkKind,
        lanes: u32,
        path: &str,
    ) -> TopoLink {
        self.check_bandwidth(&spec.bandwidth_gb_s, &format!("{path}.bandwidth_gb_s"));
        let latency_ns = self.latency(spec.latency_ns.as_ref(), &format!("{path}.latency_ns"));
        TopoLink {
            kind,
            lanes,
            lane_gb_s: spec.bandwidth_gb_s.value,
            latency_ns,
            sharing: spec.sharing.unwrap_or_default(),
        }
    }

    fn check_bandwidth(&mut self, bw: &At<f64>, path: &str) {
        if !(bw.value.is_finite() && bw.value > 0.0) {
            self.problem(
                bw.loc,
                path,
                format!(
                    "bandwidth must be a number > 0 (GB/s per direction), got {}",
                    bw.value
                ),
            );
        }
    }

    fn latency(&mut self, latency: Option<&At<f64>>, path: &str) -> f64 {
        let Some(latency) = latency else { return 0.0 };
        if !(latency.value.is_finite() && latency.value >= 0.0) {
            self.problem(
                latency.loc,
                path,
                format!("latency must be a number >= 0 (ns), got {}", latency.value),
            );
        }
        latency.value
    }

    fn add_node(
        &mut self,
        id: String,
        kind: NodeKind,
        gpu_spec: Option<String>,
        loc: Loc,
        path: &str,
    ) -> Option<NodeIndex> {
        if let Some(&existing) = self.by_id.get(&id) {
            let first = self.origin[existing.index()];
            self.problem(
                loc,
                path,
                format!(
                    "duplicate node id `{id}`: already declared at line {}",
                    first.line
                ),
            );
            return None;
        }
        let index = self.graph.add_node(TopoNode {
            id: id.clone(),
            kind,
            gpu_spec,
        });
        self.by_id.insert(id, index);
        self.origin.push(loc);
        Some(index)
    }

    fn add_gpu(
        &mut self,
        id: String,
        spec: &str,
        loc: Loc,
        path: &str,
        place: Option<Place>,
    ) -> Option<NodeIndex> {
        let index = self.add_node(id, NodeKind::Gpu, Some(spec.to_owned()), loc, path)?;
        self.gpus.push(index);
        self.place.push(place);
        Some(index)
    }

    fn add_link(&mut self, a: NodeIndex, b: NodeIndex, link: TopoLink) {
        self.links_made += 1;
        self.graph.add_edge(a, b, link);
    }

    /// Adds a hub node (switch chip, CPU, network switch) and one `link` from each member
    /// to it; `None` (after reporting) when the hub's id is taken.
    fn add_hub(
        &mut self,
        id: String,
        kind: NodeKind,
        members: &[NodeIndex],
        link: &TopoLink,
        loc: Loc,
        path: &str,
    ) -> Option<NodeIndex> {
        let hub = self.add_node(id, kind, None, loc, path)?;
        for &member in members {
            self.add_link(member, hub, link.clone());
        }
        Some(hub)
    }

    /// Reports (and refuses) a generator that would push the graph past [`MAX_LINKS`].
    fn within_size_limit(&mut self, new_links: u64, loc: Loc, path: &str) -> bool {
        if self.links_made.saturating_add(new_links) > MAX_LINKS {
            self.problem(loc, path, format!("this would create {new_links} links; epsim accepts at most {MAX_LINKS} in one topology"));
            return false;
        }
        true
    }

    fn scale_up(&mut self, domain: &At<ScaleUpDomain>, index: usize) {
        let path = format!("scale_up[{index}]");
        let d = &domain.value;
        let count = match &d.count {
            Some(c) => self.count_at_least(c, &format!("{path}.count"), 1),
            None => Some(1),
        };
        let gpus = self.count_at_least(&d.gpus, &format!("{path}.gpus"), 1);
        let chips = self.count(&d.switch_chips, &format!("{path}.switch_chips"));
        // Refuse absurd sizes before anything is allocated for them.
        for (what, n) in [("gpus", gpus), ("switch_chips", chips), ("count", count)] {
            if n.is_some_and(|n| n > MAX_LINKS) {
                self.problem(
                    domain.loc,
                    format!("{path}.{what}"),
                    format!(
                        "{} is more than epsim accepts ({MAX_LINKS})",
                        n.unwrap_or(0)
                    ),
                );
                return;
            }
        }
        self.require_spec(&d.gpu, &format!("{path}.gpu"));
        let lanes = chips.and_then(|chips| self.lanes_per_chip(d, chips, &path));
        let link = self.link_from_spec(&d.link, LinkKind::Nvlink, 1, &format!("{path}.link"));
        let cpus = d
            .cpus
            .as_ref()
            .and_then(|c| gpus.and_then(|g| self.cpu_attach(c, g, &path)));
        let (Some(count), Some(gpus), Some(lanes)) = (count, gpus, lanes) else {
            return;
        };
        let per_replica = gpus
            .saturating_mul(lanes.len() as u64 + 1)
            .saturating_add(cpus.as_ref().map_or(0, |_| gpus));
        if !self.within_size_limit(count.saturating_mul(per_replica), domain.loc, &path) {
            return;
        }
        for replica in 0..count {
            let domain_id = self.domains_made;
            self.domains_made += 1;
            let prefix = if count == 1 {
                d.name.value.clone()
            } else {
                format!("{}{replica}", d.name.value)
            };
            // A GPU whose id is taken is reported and left out; the load fails anyway.
            let gpu_ids: Vec<NodeIndex> = (0..gpus as usize)
                .filter_map(|i| {
                    let id = format!("{prefix}/gpu{i}");
                    let place = Place {
                        domain: domain_id,
                        local: i,
                    };
                    self.add_gpu(id, &d.gpu.value, domain.loc, &path, Some(place))
                })
                .collect();
            for (chip, &chip_lanes) in lanes.iter().enumerate() {
                let chip_link = TopoLink {
                    lanes: chip_lanes,
                    ..link.clone()
                };
                let id = format!("{prefix}/nvsw{chip}");
                self.add_hub(
                    id,
                    NodeKind::Nvswitch,
                    &gpu_ids,
                    &chip_link,
                    domain.loc,
                    &path,
                );
            }
            if let Some((per_cpu, cpu_link)) = &cpus {
                for (c, group) in gpu_ids.chunks(*per_cpu as usize).enumerate() {
                    let id = format!("{prefix}/cpu{c}");
                    self.add_hub(id, NodeKind::Cpu, group, cpu_link, domain.loc, &path);
                }
            }
        }
    }

    /// Lanes from each GPU to each switch chip.
    fn lanes_per_chip(&mut self, d: &ScaleUpDomain, chips: u64, path: &str) -> Option<Vec<u32>> {
        let path = format!("{path}.links_per_switch");
        let lanes = match d.links_per_switch.as_ref() {
            None => vec![1; chips as usize],
            Some(At {
                value: LinksPerSwitch::Same(n),
                ..
            }) => vec![*n; chips.min(MAX_LINKS) as usize],
            Some(At {
                value: LinksPerSwitch::PerChip(list),
                loc,
            }) => {
                if list.len() as u64 != chips {
                    self.problem(
                        *loc,
                        &path,
                        format!("lists {} chips but switch_chips is {chips}", list.len()),
                    );
                    return None;
                }
                list.clone()
            }
        };
        if let Some(zero) = lanes.iter().position(|&l| l == 0) {
            let loc = d.links_per_switch.as_ref().map_or(d.name.loc, |l| l.loc);
            self.problem(
                loc,
                &path,
                format!("every chip needs at least 1 link per GPU (chip {zero} has 0)"),
            );
            return None;
        }
        Some(lanes)
    }

    fn cpu_attach(&mut self, c: &CpuAttach, gpus: u64, path: &str) -> Option<(u64, TopoLink)> {
        let per_cpu_path = format!("{path}.cpus.gpus_per_cpu");
        let per_cpu = self.count_at_least(&c.gpus_per_cpu, &per_cpu_path, 1)?;
        let link = self.link_from_spec(&c.link, LinkKind::C2c, 1, &format!("{path}.cpus.link"));
        if !gpus.is_multiple_of(per_cpu) {
            self.problem(
                c.gpus_per_cpu.loc,
                &per_cpu_path,
                format!("{gpus} GPUs do not divide into groups of {per_cpu}"),
            );
            return None;
        }
        Some((per_cpu, link))
    }

    fn explicit_node(&mut self, node: &At<NodeDecl>, index: usize) {
        let path = format!("nodes[{index}]");
        let n = &node.value;
        match (n.kind, &n.gpu) {
            (NodeKind::Gpu, Some(spec)) => {
                self.require_spec(spec, &format!("{path}.gpu"));
                self.add_gpu(n.id.value.clone(), &spec.value, n.id.loc, &path, None);
            }
            (NodeKind::Gpu, None) => {
                self.problem(node.loc, &path, "a gpu node needs `gpu: <spec name>`");
            }
            (_, Some(spec)) => {
                self.problem(
                    spec.loc,
                    format!("{path}.gpu"),
                    "only gpu nodes take a `gpu` spec",
                );
            }
            (kind, None) => {
                self.add_node(n.id.value.clone(), kind, None, n.id.loc, &path);
            }
        }
    }

    fn explicit_link(&mut self, link: &At<LinkDecl>, index: usize) {
        let path = format!("links[{index}]");
        let l = &link.value;
        let a = self.endpoint(&l.a, &format!("{path}.a"));
        let b = self.endpoint(&l.b, &format!("{path}.b"));
        self.check_bandwidth(&l.bandwidth_gb_s, &format!("{path}.bandwidth_gb_s"));
        let latency_ns = self.latency(l.latency_ns.as_ref(), &format!("{path}.latency_ns"));
        let lanes = l.lanes.as_ref().map_or(1, |lanes| lanes.value);
        if lanes == 0 {
            let loc = l.lanes.as_ref().map_or(link.loc, |x| x.loc);
            self.problem(loc, format!("{path}.lanes"), "a link needs at least 1 lane");
        }
        let (Some(a), Some(b)) = (a, b) else { return };
        if a == b {
            self.problem(
                link.loc,
                &path,
                format!("the link joins `{}` to itself", l.a.value),
            );
            return;
        }
        let kind = match l
            .kind
            .or_else(|| infer_kind(self.graph[a].kind, self.graph[b].kind))
        {
            Some(kind) => kind,
            None => {
                let (ka, kb) = (self.graph[a].kind, self.graph[b].kind);
                self.problem(link.loc, &path, format!("cannot tell the link kind between a {ka:?} and a {kb:?}; set `kind` (nvlink, c2c, pcie or network)").to_lowercase());
                return;
            }
        };
        self.add_link(
            a,
            b,
            TopoLink {
                kind,
                lanes,
                lane_gb_s: l.bandwidth_gb_s.value,
                latency_ns,
                sharing: l.sharing.unwrap_or_default(),
            },
        );
    }

    fn endpoint(&mut self, id: &At<String>, path: &str) -> Option<NodeIndex> {
        let found = self.by_id.get(&id.value).copied();
        if found.is_none() {
            self.problem(id.loc, path, format!("no node with id `{}`", id.value));
        }
        found
    }

    /// A GPU cannot have more NVLink bandwidth than its spec says it has.
    fn check_nvlink_against_specs(&mut self) {
        let mut over: BTreeMap<Loc, (String, f64, String, f64, usize)> = BTreeMap::new();
        for &gpu in &self.gpus {
            let loc = self.origin[gpu.index()];
            let node = &self.graph[gpu];
            let Some(Some(spec)) = node.gpu_spec.as_ref().and_then(|s| self.specs.get(s)) else {
                continue;
            };
            let have = nvlink_gb_s(&self.graph, gpu);
            if have > spec.nvlink_gb_s * (1.0 + 1e-9) {
                over.entry(loc)
                    .or_insert_with(|| {
                        (
                            node.id.clone(),
                            have,
                            spec.name.clone(),
                            spec.nvlink_gb_s,
                            0,
                        )
                    })
                    .4 += 1;
            }
        }
        for (loc, (id, have, spec, allowed, n)) in over {
            let others = if n > 1 {
                format!(" (and {} more GPUs declared here)", n - 1)
            } else {
                String::new()
            };
            self.problem(loc, "", format!("GPU `{id}`{others} has {have} GB/s of NVLink per direction, more than its spec `{spec}` allows ({allowed} GB/s)"));
        }
    }

    /// Every GPU must reach every other through some path of links.
    fn check_gpus_reach_each_other(&mut self) {
        let Some(&first) = self.gpus.first() else {
            if !self.diags.is_empty() {
                return; // Broken domains or nodes explain the missing GPUs already.
            }
            self.problem(
                Loc { line: 1, column: 1 },
                "",
                "the topology has no GPUs: add a `scale_up` domain or `gpu` nodes",
            );
            return;
        };
        let mut components = UnionFind::<usize>::new(self.graph.node_count());
        for edge in self.graph.raw_edges() {
            components.union(edge.source().index(), edge.target().index());
        }
        let main = components.find(first.index());
        let mut islands: BTreeMap<usize, Vec<NodeIndex>> = BTreeMap::new();
        for &gpu in &self.gpus {
            let root = components.find(gpu.index());
            if root != main {
                islands.entry(root).or_default().push(gpu);
            }
        }
        let mut reports: Vec<(Loc, String)> = islands
            .values()
            .map(|island| {
                let head = island[0];
                let others = if island.len() > 1 {
                    format!(
                        " (nor can the {} other GPUs joined to it)",
                        island.len() - 1
                    )
                } else {
                    String::new()
                };
                (
                    self.origin[head.index()],
                    format!(
                        "GPU `{}` cannot reach GPU `{}`: no path of links joins them{others}",
                        self.graph[head].id, self.graph[first].id
                    ),
                )
            })
            .collect();
        reports.sort();
        for (loc, message) in reports {
            self.problem(loc, "", message);
        }
    }

    fn check_collectives(&mut self, c: &At<super::Collectives>) {
        let v = &c.value;
        if !(v.network_efficiency > 0.0 && v.network_efficiency <= 1.0) {
            self.problem(
                c.loc,
                "collectives.network_efficiency",
                format!("must be in (0, 1], got {}", v.network_efficiency),
            );
        }
        for (name, x) in [
            ("dispatch_latency_us", v.dispatch_latency_us),
            ("combine_latency_us", v.combine_latency_us),
        ] {
            if !(x.is_finite() && x >= 0.0) {
                self.problem(
                    c.loc,
                    format!("collectives.{name}"),
                    format!("must be a number >= 0, got {x}"),
                );
            }
        }
    }

    fn finish(
        self,
        name: String,
        description: String,
        collectives: Option<super::Collectives>,
    ) -> Result<Topology, Diagnostics> {
        let gpu_specs = self
            .specs
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
        self.diags.into_result(Topology {
            name,
            description,
            parameters: self.params,
            graph: self.graph,
            gpus: self.gpus,
            gpu_specs,
            collectives,
            by_id: self.by_id,
        })
    }
}

/// The usual kind of a link between two kinds of node, when the file does not say.
fn infer_kind(a: NodeKind, b: NodeKind) -> Option<LinkKind> {
    use NodeKind::{Cpu, Gpu, Nic, Nvswitch, Switch};
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    match (a, b) {
        (Gpu, Gpu) | (Gpu, Nvswitch) | (Nvswitch, Nvswitch) => Some(LinkKind::Nvlink),
        (Gpu, Cpu) | (Cpu, Cpu) => Some(LinkKind::C2c),
        (Gpu, Nic) | (Nic, Cpu) => Some(LinkKind::Pcie),
        (Nic, Nic) | (Nic, Switch) | (Switch, Switch) => Some(LinkKind::Network),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Summary;

    /// Writes `yaml` to a temporary file whose GPU specs are the shipped ones, and loads it.
    fn load_text(yaml: &str, overrides: &[(&str, &str)]) -> Result<Topology, Diagnostics> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.yaml");
        let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/gpus");
        std::fs::write(&file, yaml.replace("GPU_SPECS", specs.to_str().unwrap())).unwrap();
        let overrides = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load_with(&file, &overrides)
    }

    fn messages(result: Result<Topology, Diagnostics>) -> String {
        result.expect_err("should be rejected").to_string()
    }

    const TWO_NODES: &str = "\
name: two
gpu_specs: GPU_SPECS
parameters: {nodes: 2}
scale_up:
  - {name: node, count: $nodes, gpus: 4, gpu: h800-sxm, switch_chips: 2, links_per_switch: 4, link: {bandwidth_gb_s: 25}}
scale_out:
  host_link: {bandwidth_gb_s: 63}
  nic_link: {bandwidth_gb_s: 50, latency_ns: 600}
  fabric: FABRIC
";

    #[test]
    fn rail_optimised_fabric_has_a_switch_per_rail_and_a_spine() {
        let topo = load_text(&TWO_NODES.replace("FABRIC", "rail_optimized"), &[]).unwrap();
        assert_eq!(topo.count(NodeKind::Switch), 4 + 1, "4 rails + spine");
        let rail2 = topo.node("rail2").unwrap();
        let members: Vec<&str> = topo
            .graph
            .neighbors(rail2)
            .map(|n| topo.graph[n].id.as_str())
            .collect();
        assert!(
            members.contains(&"node0/nic2") && members.contains(&"node1/nic2"),
            "{members:?}"
        );
        let spine = topo.node("spine").unwrap();
        let uplink = topo
            .graph
            .edges_connecting(rail2, spine)
            .next()
            .unwrap()
            .weight();
        assert_eq!(
            uplink.lanes, 2,
            "one uplink lane per NIC on the rail: non-blocking"
        );
        assert_eq!(uplink.bandwidth_gb_s(), 100.0);
        assert_eq!(uplink.latency_ns, 600.0);
    }

    fn uplink(topo: &Topology, leaf: &str) -> (u32, f64) {
        let (leaf, spine) = (topo.node(leaf).unwrap(), topo.node("spine").unwrap());
        let l = topo
            .graph
            .edges_connecting(leaf, spine)
            .next()
            .unwrap()
            .weight();
        (l.lanes, l.bandwidth_gb_s())
    }

    #[test]
    fn leaf_spine_puts_a_leaf_per_domain_or_per_leaf_nics_with_oversubscribed_uplinks() {
        let per_node = TWO_NODES.replace("FABRIC", "leaf_spine\n  oversubscription: 2");
        let topo = load_text(&per_node, &[]).unwrap();
        assert_eq!(
            topo.count(NodeKind::Switch),
            2 + 1,
            "a leaf per node + spine"
        );
        let leaf1: Vec<&str> = topo
            .graph
            .neighbors(topo.node("leaf1").unwrap())
            .map(|n| topo.graph[n].id.as_str())
            .collect();
        assert!(
            leaf1.contains(&"node1/nic0")
                && leaf1.contains(&"node1/nic3")
                && !leaf1.contains(&"node0/nic0"),
            "{leaf1:?}"
        );
        assert_eq!(
            uplink(&topo, "leaf0"),
            (2, 100.0),
            "4 NICs x 50 GB/s / 2, on 2 links"
        );
        let leaves = Summary::of(&topo).leaves.unwrap();
        assert_eq!((leaves.count, leaves.oversubscription_max), (2, 2.0));
        let flat = load_text(&TWO_NODES.replace("FABRIC", "non_blocking"), &[]).unwrap();
        assert!(Summary::of(&flat).leaves.is_none());
        let pairs = TWO_NODES.replace("FABRIC", "leaf_spine\n  leaf_nics: 3");
        let topo = load_text(&pairs, &[]).unwrap();
        assert_eq!(topo.count(NodeKind::Switch), 3 + 1, "8 NICs in leaves of 3");
        assert_eq!(
            uplink(&topo, "leaf2"),
            (2, 100.0),
            "the last leaf holds 2, non-blocking"
        );
        let rails = TWO_NODES.replace("FABRIC", "rail_optimized\n  oversubscription: 4");
        assert_eq!(uplink(&load_text(&rails, &[]).unwrap(), "rail3"), (1, 25.0));
    }

    #[test]
    fn fabric_options_must_fit_the_fabric() {
        for (fabric, needle) in [
            (
                "non_blocking\n  oversubscription: 2",
                "10:21: scale_out.oversubscription: a non_blocking fabric has no oversubscription",
            ),
            (
                "rail_optimized\n  leaf_nics: 4",
                "10:14: scale_out.leaf_nics: only a leaf_spine fabric takes `leaf_nics`",
            ),
            (
                "leaf_spine\n  oversubscription: 0",
                "10:21: scale_out.oversubscription: must be at least 1, got 0",
            ),
            (
                "leaf_spine\n  leaf_nics: $racks",
                "10:14: scale_out.leaf_nics: unknown parameter `$racks`",
            ),
        ] {
            let text = messages(load_text(&TWO_NODES.replace("FABRIC", fabric), &[]));
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn non_blocking_fabric_joins_every_nic_to_one_switch() {
        let topo = load_text(
            &TWO_NODES.replace("FABRIC", "non_blocking"),
            &[("nodes", "3")],
        )
        .unwrap();
        let fabric = topo.node("fabric").unwrap();
        assert_eq!(topo.graph.neighbors(fabric).count(), 12);
        assert_eq!(topo.gpus.len(), 12);
        assert_eq!(
            topo.graph[topo.gpus[4]].id, "node1/gpu0",
            "GPUs in rank order"
        );
        assert_eq!(topo.nvlink_gb_s(topo.gpus[0]), 200.0);
    }

    #[test]
    fn explicit_nodes_and_links_alone_make_a_topology() {
        let yaml = "\
name: pair
gpu_specs: GPU_SPECS
nodes:
  - {id: a, kind: gpu, gpu: h100-sxm}
  - {id: b, kind: gpu, gpu: h100-sxm}
  - {id: host, kind: cpu}
links:
  - {a: a, b: b, bandwidth_gb_s: 25, lanes: 18, latency_ns: 500}
  - {a: a, b: host, bandwidth_gb_s: 32, kind: pcie}
  - {a: host, b: b, bandwidth_gb_s: 32, kind: pcie, sharing: fatpipe}
";
        let topo = load_text(yaml, &[]).unwrap();
        let (a, b, host) = (
            topo.node("a").unwrap(),
            topo.node("b").unwrap(),
            topo.node("host").unwrap(),
        );
        let direct = topo.graph.edges_connecting(a, b).next().unwrap().weight();
        assert_eq!(
            (direct.kind, direct.bandwidth_gb_s(), direct.latency_ns),
            (LinkKind::Nvlink, 450.0, 500.0)
        );
        let pcie = topo
            .graph
            .edges_connecting(host, b)
            .next()
            .unwrap()
            .weight();
        assert_eq!(
            (pcie.kind, pcie.sharing),
            (LinkKind::Pcie, super::super::Sharing::Fatpipe)
        );
        assert_eq!(Summary::of(&topo).nvlink_links, 18);
    }

    #[test]
    fn domain_shape_problems() {
        let yaml = "\
name: bad
gpu_specs: GPU_SPECS
scale_up:
  - name: r
    gpus: 6
    gpu: b200-gb200
    switch_chips: 3
    links_per_switch: [1, 1]
    link: {bandwidth_gb_s: 50, latency_ns: -1}
    cpus: {gpus_per_cpu: 4, link: {bandwidth_gb_s: 450}}
  - {name: s, count: 0, gpus: 0, gpu: b200-gb200, switch_chips: 1, link: {bandwidth_gb_s: 50}}
";
        let text = messages(load_text(yaml, &[]));
        for needle in [
            "8:23: scale_up[0].links_per_switch: lists 2 chips but switch_chips is 3",
            "9:44: scale_up[0].link.latency_ns: latency must be a number >= 0 (ns), got -1",
            "10:26: scale_up[0].cpus.gpus_per_cpu: 6 GPUs do not divide into groups of 4",
            "11:22: scale_up[1].count: must be at least 1, got 0",
            "11:31: scale_up[1].gpus: must be at least 1, got 0",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn absurd_sizes_are_refused_not_allocated() {
        let yaml = "\
name: huge
gpu_specs: GPU_SPECS
scale_up:
  - {name: r, count: 100000, gpus: 72, gpu: b200-gb200, switch_chips: 18, link: {bandwidth_gb_s: 50}}
";
        let text = messages(load_text(yaml, &[]));
        assert!(
            text.contains(
                "4:5: scale_up[0]: this would create 136800000 links; epsim accepts at most 5000000"
            ),
            "{text}"
        );
    }

    #[test]
    fn rails_need_domain_gpus_and_kinds_must_be_inferable() {
        let yaml = "\
name: mixed
gpu_specs: GPU_SPECS
nodes:
  - {id: g, kind: gpu, gpu: h100-sxm}
  - {id: sw, kind: nvswitch}
  - {id: n, kind: nic}
  - {id: c, kind: cpu, gpu: h100-sxm}
  - {id: h, kind: gpu}
links:
  - {a: g, b: sw, bandwidth_gb_s: 25, lanes: 0}
  - {a: sw, b: n, bandwidth_gb_s: 25}
scale_out:
  host_link: {bandwidth_gb_s: 63}
  nic_link: {bandwidth_gb_s: 50}
  fabric: rail_optimized
";
        let text = messages(load_text(yaml, &[]));
        for needle in [
            "7:29: nodes[3].gpu: only gpu nodes take a `gpu` spec",
            "8:5: nodes[4]: a gpu node needs `gpu: <spec name>`",
            "10:46: links[0].lanes: a link needs at least 1 lane",
            "11:5: links[1]: cannot tell the link kind between a nvswitch and a nic; set `kind`",
            "13:3: scale_out: a rail_optimized fabric needs every gpu in a scale_up domain",
        ] {
            assert!(
                text.to_lowercase().contains(&needle.to_lowercase()),
                "missing {needle:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn host_links_prefer_c2c_over_pcie() {
        let nvl72 = crate::testing::topology("gb200-nvl72");
        assert_eq!(nvl72.host_link_gb_s(nvl72.gpus[0]), Some(450.0));
        let h800 = crate::testing::topology("h800-cluster");
        assert_eq!(h800.host_link_gb_s(h800.gpus[0]), Some(63.0));
        assert_eq!(h800.nvlink_gb_s(h800.gpus[0]), 200.0);
    }

    #[test]
    fn a_topology_needs_gpus() {
        let text = messages(load_text(
            "name: none\nnodes:\n  - {id: s, kind: switch}\n",
            &[],
        ));
        assert!(text.contains("1:1: the topology has no GPUs"), "{text}");
    }
}
