//! Transfers simulated to completion (the general solver): every transfer starts at once as
//! a flow over its ECMP route; rates are max-min fair; when flows finish, the flows they
//! shared links with speed up. Each transfer also pays its route's latency.

use super::flowset::FlowSet;
use super::maxmin::{Resource, drop_repeated_constraints};
use super::route_latency_s;
use super::routes::Router;
use crate::topology::Topology;
use petgraph::graph::NodeIndex;

#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    pub src: NodeIndex,
    pub dst: NodeIndex,
    pub bytes: f64,
}

/// Seconds until each transfer has arrived, in the order given.
pub fn simulate(
    topo: &Topology,
    resources: &[Resource],
    transfers: &[Transfer],
) -> Result<Vec<f64>, String> {
    let mut router = Router::new(topo);
    let mut set = FlowSet::new(resources.to_vec());
    let mut latency = Vec::with_capacity(transfers.len());
    let mut routes = Vec::with_capacity(transfers.len());
    for t in transfers {
        let route = router.route(t.src, t.dst).ok_or_else(|| {
            format!(
                "no path from {} to {}",
                topo.graph[t.src].id, topo.graph[t.dst].id
            )
        })?;
        latency.push(route_latency_s(topo, &route));
        routes.push(route);
    }
    drop_repeated_constraints(resources, &mut routes);
    let ids = set.add_all(routes);
    let mut left: Vec<f64> = transfers.iter().map(|t| t.bytes).collect();
    let mut done: Vec<Option<f64>> = left.iter().map(|&b| (b <= 0.0).then_some(0.0)).collect();
    for (i, d) in done.iter().enumerate() {
        if d.is_some() {
            set.remove(ids[i]);
        }
    }
    let mut now = 0.0;
    loop {
        // The next transfer to run out, and everything running out with it.
        let mut next = f64::INFINITY;
        for (i, d) in done.iter().enumerate() {
            if d.is_none() {
                next = next.min(left[i] / set.rate(ids[i]));
            }
        }
        if !next.is_finite() {
            break;
        }
        now += next;
        let mut finished = Vec::new();
        for (i, d) in done.iter_mut().enumerate() {
            if d.is_none() {
                left[i] -= set.rate(ids[i]) * next;
                if left[i] <= 1e-9 * transfers[i].bytes {
                    *d = Some(now);
                    finished.push(ids[i]);
                }
            }
        }
        set.remove_all(&finished);
    }
    Ok(done
        .iter()
        .zip(latency)
        .map(|(d, l)| d.unwrap_or(0.0) + l)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::maxmin::max_min;
    use super::super::{LinkEfficiency, resources};
    use super::*;
    use proptest::prelude::*;

    /// The same transfers run to completion from scratch: every flow's rate re-solved over
    /// all live flows and the whole topology at each completion, no constraint dropped.
    fn from_scratch(topo: &Topology, res: &[Resource], transfers: &[Transfer]) -> Vec<f64> {
        let mut router = Router::new(topo);
        let routes: Vec<_> = transfers
            .iter()
            .map(|t| router.route(t.src, t.dst).unwrap())
            .collect();
        let mut left: Vec<f64> = transfers.iter().map(|t| t.bytes).collect();
        let mut done: Vec<Option<f64>> = left.iter().map(|&b| (b <= 0.0).then_some(0.0)).collect();
        let mut now = 0.0;
        loop {
            let live: Vec<usize> = (0..transfers.len())
                .filter(|&i| done[i].is_none())
                .collect();
            let slices: Vec<&[(usize, f64)]> = live.iter().map(|&i| routes[i].as_slice()).collect();
            let rates = max_min(res, &slices);
            let next = live
                .iter()
                .zip(&rates)
                .map(|(&i, r)| left[i] / r)
                .fold(f64::INFINITY, f64::min);
            if !next.is_finite() {
                break;
            }
            now += next;
            for (&i, r) in live.iter().zip(&rates) {
                left[i] -= r * next;
                if left[i] <= 1e-9 * transfers[i].bytes {
                    done[i] = Some(now);
                }
            }
        }
        done.iter()
            .zip(&routes)
            .map(|(d, r)| d.unwrap_or(0.0) + route_latency_s(topo, r))
            .collect()
    }

    /// A random cluster: nodes of GPUs on switch chips, a NIC each, and one of the three
    /// fabrics, oversubscribed or not.
    fn cluster() -> impl Strategy<Value = String> {
        (1u32..4, 2u32..5, 1u32..4, 0usize..4, 1u32..5, 1u32..6).prop_map(
            |(nodes, gpus, chips, fabric, ratio, leaf)| {
                let fabric = match fabric {
                    0 => "non_blocking".to_owned(),
                    1 => format!("rail_optimized\n  oversubscription: {ratio}"),
                    2 => format!("leaf_spine\n  oversubscription: {ratio}"),
                    _ => format!("leaf_spine\n  leaf_nics: {leaf}\n  oversubscription: {ratio}"),
                };
                format!(
                    "name: random\ngpu_specs: GPU_SPECS\nscale_up:\n  - {{name: node, count: {nodes}, gpus: {gpus}, gpu: h100-sxm, switch_chips: {chips}, link: {{bandwidth_gb_s: 25, latency_ns: 100}}}}\nscale_out:\n  host_link: {{bandwidth_gb_s: 63}}\n  nic_link: {{bandwidth_gb_s: 50, latency_ns: 600}}\n  fabric: {fabric}\n"
                )
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn incremental_equals_from_scratch_on_random_topologies(
            yaml in cluster(),
            pairs in prop::collection::vec((0usize..64, 0usize..64, 0u32..4), 1..60),
        ) {
            let topo = crate::testing::topology_from_text(&yaml).unwrap();
            let n = topo.gpus.len();
            let transfers: Vec<Transfer> = pairs
                .iter()
                .map(|&(a, b, size)| Transfer {
                    src: topo.gpus[a % n],
                    dst: topo.gpus[b % n],
                    bytes: [0.0, 1e6, 3.5e6, 8e6][size as usize],
                })
                .collect();
            let eff = LinkEfficiency { nvlink: 0.8, network: 0.9 };
            let res = resources(&topo, eff);
            let fast = simulate(&topo, &res, &transfers).unwrap();
            let slow = from_scratch(&topo, &res, &transfers);
            for (a, b) in fast.iter().zip(&slow) {
                prop_assert!((a - b).abs() <= 1e-9 * b.abs().max(1e-12), "{fast:?} vs {slow:?}");
            }
        }
    }
}
