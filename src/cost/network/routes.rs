//! Routes over the topology: a flow from one node to another spreads evenly over every
//! shortest path (ECMP), such as the 18 switch chips of an NVL72. A bundled link (lanes > 1)
//! is one path: equal shares per edge, not per lane. Traffic transits only
//! switches and NICs, never another GPU or a CPU: GPU-to-GPU bytes do not detour through a
//! Grace's C2C links just because that path is as short.

use crate::topology::{NodeKind, TopoLink, Topology};
use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;
use std::collections::{BTreeMap, VecDeque};

/// A link of the topology as `edges` reports it.
type Link<'a> = petgraph::graph::EdgeReference<'a, TopoLink>;

/// A direction of a link: resource `2 * edge` runs from the edge's source to its target,
/// `2 * edge + 1` back.
pub type ResourceId = usize;

/// The share of a flow's bytes crossing each directed link.
pub type Route = Vec<(ResourceId, f64)>;

fn can_transit(kind: NodeKind) -> bool {
    matches!(kind, NodeKind::Nvswitch | NodeKind::Switch | NodeKind::Nic)
}

/// Hop distance and number of shortest paths from `from` to every node, moving only
/// through transit nodes.
fn shortest_paths(topo: &Topology, from: NodeIndex) -> (Vec<u32>, Vec<f64>) {
    let n = topo.graph.node_count();
    let (mut dist, mut count) = (vec![u32::MAX; n], vec![0.0; n]);
    dist[from.index()] = 0;
    count[from.index()] = 1.0;
    let mut queue = VecDeque::from([from]);
    while let Some(u) = queue.pop_front() {
        if u != from && !can_transit(topo.graph[u].kind) {
            continue;
        }
        for edge in topo.graph.edges(u) {
            let v = edge.target();
            let v = if v == u { edge.source() } else { v };
            let next = dist[u.index()] + 1;
            if dist[v.index()] == u32::MAX {
                dist[v.index()] = next;
                queue.push_back(v);
            }
            if dist[v.index()] == next {
                count[v.index()] += count[u.index()];
            }
        }
    }
    (dist, count)
}

/// Routes of every node to every other, from one breadth-first search per node.
pub struct Router<'a> {
    topo: &'a Topology,
    from: Vec<Option<(Vec<u32>, Vec<f64>)>>,
    /// Routes kept by [`Self::kept_route`].
    found: BTreeMap<(NodeIndex, NodeIndex), Option<Route>>,
}

impl<'a> Router<'a> {
    pub fn new(topo: &'a Topology) -> Self {
        Router {
            topo,
            from: vec![None; topo.graph.node_count()],
            found: BTreeMap::new(),
        }
    }

    /// Runs (once) the breadth-first search from `node`.
    fn search(&mut self, node: NodeIndex) {
        let topo = self.topo;
        self.from[node.index()].get_or_insert_with(|| shortest_paths(topo, node));
    }

    /// The ECMP route from `src` to `dst`, sorted by resource; empty when they are the same
    /// node, `None` when no path joins them. A directed link u->v carries the share of
    /// shortest paths through it: paths(src, u) x paths(v, dst) / paths(src, dst).
    pub fn route(&mut self, src: NodeIndex, dst: NodeIndex) -> Option<Route> {
        if src == dst {
            return Some(Vec::new());
        }
        self.search(src);
        self.search(dst);
        self.walk(src, dst)
    }

    /// [`Self::route`], kept for the next time the same pair asks (KV transfers repeat
    /// their pairs; a collective's legs each ask once, so they do not keep theirs).
    pub fn kept_route(&mut self, src: NodeIndex, dst: NodeIndex) -> Option<Route> {
        if let Some(known) = self.found.get(&(src, dst)) {
            return known.clone();
        }
        let route = self.route(src, dst);
        self.found.insert((src, dst), route.clone());
        route
    }

    /// Walks the links on shortest paths from `src` toward `dst`, hop by hop: only the
    /// nodes on those paths have their links looked at, not the whole topology.
    fn walk(&self, src: NodeIndex, dst: NodeIndex) -> Option<Route> {
        let (Some((ds, cs)), Some((dd, cd))) = (&self.from[src.index()], &self.from[dst.index()])
        else {
            return None;
        };
        if ds[dst.index()] == u32::MAX {
            return None;
        }
        let paths = cs[dst.index()];
        let graph = &self.topo.graph;
        // `edges(u)` reports every link as leaving u: its other end.
        let far = |edge: Link, u: NodeIndex| {
            if edge.target() == u {
                edge.source()
            } else {
                edge.target()
            }
        };
        // The link taken from u to v, as a resource (its direction follows the link as
        // stored), and the share of the shortest paths on it.
        let leg = |edge: Link, u: NodeIndex, v: NodeIndex| {
            let forward = graph.edge_endpoints(edge.id()).is_some_and(|(a, _)| a == u);
            let resource = 2 * edge.id().index() + usize::from(!forward);
            (resource, cs[u.index()] * cd[v.index()] / paths)
        };
        let mut route = Vec::new();
        let mut frontier = vec![src];
        let mut queued = vec![false; graph.node_count()];
        queued[src.index()] = true;
        while let Some(&first) = frontier.first() {
            // The frontier is one hop level, all as far from dst. At the last hop only the
            // links into dst qualify: one look at dst's links replaces a look at every link
            // of every node before it (a switch's 72 GPUs, at each of 18 switches).
            if dd[first.index()] == 1 {
                for edge in graph.edges(dst) {
                    let u = far(edge, dst);
                    if u != dst && queued[u.index()] && dd[u.index()] == 1 {
                        route.push(leg(edge, u, dst));
                    }
                }
                break;
            }
            let mut next = Vec::new();
            for u in frontier {
                for edge in graph.edges(u) {
                    let v = far(edge, u);
                    let on_path = dd[v.index()] != u32::MAX && dd[v.index()] + 1 == dd[u.index()];
                    if !on_path || (v != dst && !can_transit(graph[v].kind)) {
                        continue;
                    }
                    route.push(leg(edge, u, v));
                    if v != dst && !std::mem::replace(&mut queued[v.index()], true) {
                        next.push(v);
                    }
                }
            }
            frontier = next;
        }
        route.sort_unstable_by_key(|&(r, _)| r);
        Some(route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn topo(name: &str) -> Topology {
        crate::testing::topology(name)
    }

    /// Flow conservation: out of src and into dst sum to 1; at every other node what comes
    /// in goes out.
    fn assert_conserves(t: &Topology, src: NodeIndex, dst: NodeIndex, route: &Route) {
        let mut net = vec![0.0; t.graph.node_count()];
        for &(r, share) in route {
            let e = t
                .graph
                .edge_endpoints(petgraph::graph::EdgeIndex::new(r / 2))
                .unwrap();
            let (u, v) = if r % 2 == 0 { e } else { (e.1, e.0) };
            net[u.index()] -= share;
            net[v.index()] += share;
        }
        for (i, x) in net.iter().enumerate() {
            let expected = if i == src.index() {
                -1.0
            } else if i == dst.index() {
                1.0
            } else {
                0.0
            };
            assert!(
                (x - expected).abs() < 1e-12,
                "node {} net {x}",
                t.graph[NodeIndex::new(i)].id
            );
        }
    }

    /// The route as the first router found it: every link of the topology tested for lying
    /// on a shortest path.
    fn by_every_link(t: &Topology, src: NodeIndex, dst: NodeIndex) -> Route {
        let (ds, cs) = shortest_paths(t, src);
        let (dd, cd) = shortest_paths(t, dst);
        let total = ds[dst.index()];
        let transit_ok = |x: NodeIndex| x == src || x == dst || can_transit(t.graph[x].kind);
        let mut route = Vec::new();
        for edge in t.graph.edge_references() {
            let (a, b) = (edge.source(), edge.target());
            for (u, v, r) in [
                (a, b, 2 * edge.id().index()),
                (b, a, 2 * edge.id().index() + 1),
            ] {
                let reachable = ds[u.index()] != u32::MAX && dd[v.index()] != u32::MAX;
                if reachable
                    && transit_ok(u)
                    && transit_ok(v)
                    && u != dst
                    && v != src
                    && ds[u.index()] + 1 + dd[v.index()] == total
                {
                    route.push((r, cs[u.index()] * cd[v.index()] / cs[dst.index()]));
                }
            }
        }
        route
    }

    #[test]
    fn walking_the_shortest_paths_finds_what_testing_every_link_finds() {
        let topologies = [
            topo("hgx-h100x8"),
            crate::testing::topology_with("h800-cluster", &[("nodes", 3)]),
            crate::testing::topology_with(
                "hgx-h100-leaf-spine",
                &[("nodes", 3), ("leaf_nics", 12), ("oversubscription", 2)],
            ),
            crate::testing::topology_with("gb200-nvl72-leaf-spine", &[("racks", 2)]),
        ];
        for t in &topologies {
            let mut r = Router::new(t);
            let gpus: Vec<NodeIndex> = t.gpus.iter().copied().step_by(5).collect();
            for &a in &gpus {
                for &b in gpus.iter().filter(|&&b| b != a) {
                    assert_eq!(r.route(a, b).unwrap(), by_every_link(t, a, b), "{}", t.name);
                }
            }
        }
    }

    #[test]
    fn nvl72_spreads_over_all_18_switch_chips() {
        let t = topo("gb200-nvl72");
        let mut r = Router::new(&t);
        let (a, b) = (t.gpus[0], t.gpus[1]);
        let route = r.route(a, b).unwrap();
        assert_eq!(route.len(), 36, "18 chips x (up, down)");
        assert!(route.iter().all(|&(_, s)| (s - 1.0 / 18.0).abs() < 1e-12));
        assert_conserves(&t, a, b, &route);
        // GPUs 0 and 1 share a Grace CPU, but traffic does not transit it.
        assert!(route.iter().all(
            |&(res, _)| t.graph[petgraph::graph::EdgeIndex::new(res / 2)].kind
                == crate::topology::LinkKind::Nvlink
        ));
    }

    #[test]
    fn h800_nodes_talk_over_nics_and_the_fabric() {
        let t = topo("h800-cluster");
        let mut r = Router::new(&t);
        let (a, b) = (t.gpus[0], t.gpus[8]);
        let route = r.route(a, b).unwrap();
        assert_conserves(&t, a, b, &route);
        assert_eq!(
            route.len(),
            4,
            "GPU->NIC, NIC->fabric, fabric->NIC, NIC->GPU"
        );
        let inside = r.route(t.gpus[0], t.gpus[3]).unwrap();
        assert_conserves(&t, t.gpus[0], t.gpus[3], &inside);
        assert_eq!(inside.len(), 8, "4 NVSwitch chips, up and down");
    }

    #[test]
    fn hgx_shares_follow_links_per_chip() {
        // 5, 4, 4, 5 links to the 4 chips: equal-cost paths are per chip here (one bundled
        // edge each), so each chip carries a quarter.
        let t = topo("hgx-h100x8");
        let mut r = Router::new(&t);
        let route = r.route(t.gpus[0], t.gpus[7]).unwrap();
        assert_conserves(&t, t.gpus[0], t.gpus[7], &route);
        assert!(route.iter().all(|&(_, s)| (s - 0.25).abs() < 1e-12));
        assert_eq!(r.route(t.gpus[2], t.gpus[2]).unwrap(), Vec::new());
    }
}
