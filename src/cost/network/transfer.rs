//! Transfers simulated to completion (the general solver): every transfer starts at once as
//! a flow over its ECMP route; rates are max-min fair; when flows finish, the flows they
//! shared links with speed up. Each transfer also pays its route's latency.

use super::maxmin::{FlowSet, Resource, drop_repeated_constraints};
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
