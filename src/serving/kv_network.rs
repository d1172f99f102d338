//! KV-cache transfers from prefill to decode GPUs as flows on the topology: each takes its
//! ECMP route, concurrent transfers share links max-min fairly, and rates are re-solved
//! whenever one starts or finishes (a fluid model: bytes drain at the current rates).

use crate::cost::network::maxmin::{Filler, Resource};
use crate::cost::network::routes::{Route, Router};
use crate::engine::{SimDuration, SimTime};
use crate::topology::Topology;
use petgraph::graph::NodeIndex;
use std::collections::BTreeMap;

struct Flow {
    route: Route,
    bytes: f64,
    left: f64,
    rate: f64,
}

pub struct KvNetwork<'a> {
    topo: &'a Topology,
    router: Router<'a>,
    resources: Vec<Resource>,
    /// Solves over the links the active flows cross only (a rack has thousands of them),
    /// its scratch kept between re-solves.
    filler: Filler,
    /// Active transfers by request id.
    flows: BTreeMap<u64, Flow>,
    updated: SimTime,
    /// Bumped at every re-solve: a completion event carries the generation it was planned in.
    pub generation: u64,
    /// Transfers were added since the last solve.
    unsettled: bool,
    /// Bytes handed to the network and bytes delivered, for the conservation check.
    pub bytes_started: f64,
    pub bytes_delivered: f64,
}

impl<'a> KvNetwork<'a> {
    pub fn new(topo: &'a Topology, resources: Vec<Resource>) -> Self {
        KvNetwork {
            topo,
            router: Router::new(topo),
            resources,
            filler: Filler::default(),
            flows: BTreeMap::new(),
            updated: SimTime::ZERO,
            generation: 0,
            unsettled: false,
            bytes_started: 0.0,
            bytes_delivered: 0.0,
        }
    }

    pub fn active(&self) -> usize {
        self.flows.len()
    }

    /// Starts moving `bytes` for `request`. Rates are re-solved by [`KvNetwork::settle`],
    /// once for all the transfers that start at the same moment.
    pub fn add(
        &mut self,
        now: SimTime,
        request: u64,
        src: NodeIndex,
        dst: NodeIndex,
        bytes: f64,
    ) -> Result<(), String> {
        let route = self.router.kept_route(src, dst).ok_or_else(|| {
            format!(
                "no path from {} to {} for a KV transfer",
                self.topo.graph[src].id, self.topo.graph[dst].id
            )
        })?;
        self.drain(now);
        self.bytes_started += bytes;
        self.flows.insert(
            request,
            Flow {
                route,
                bytes,
                left: bytes,
                rate: 0.0,
            },
        );
        self.unsettled = true;
        Ok(())
    }

    /// After transfers were added: re-solves the rates and returns when the next transfer
    /// will finish (`None` when nothing changed or nothing is moving).
    pub fn settle(&mut self, now: SimTime) -> Option<SimTime> {
        if !self.unsettled {
            return None;
        }
        self.resolve(now)
    }

    /// At a completion event of generation `generation`: the requests whose transfers are
    /// done, and when the next one will be. Stale events (planned before a later re-solve)
    /// change nothing.
    pub fn complete(&mut self, now: SimTime, generation: u64) -> (Vec<u64>, Option<SimTime>) {
        if generation != self.generation {
            return (Vec::new(), None);
        }
        self.drain(now);
        // Done: within a picosecond of the end, or a millionth of its bytes.
        let done: Vec<u64> = self
            .flows
            .iter()
            .filter(|(_, f)| f.left <= f.rate * 1e-12 || f.left <= 1e-6 * f.bytes)
            .map(|(&id, _)| id)
            .collect();
        for id in &done {
            if let Some(f) = self.flows.remove(id) {
                self.bytes_delivered += f.bytes;
            }
        }
        (done, self.resolve(now))
    }

    fn drain(&mut self, now: SimTime) {
        let dt = now
            .duration_since(self.updated)
            .map_or(0.0, |d| d.as_secs_f64());
        for f in self.flows.values_mut() {
            f.left = (f.left - f.rate * dt).max(0.0);
        }
        self.updated = now;
    }

    fn resolve(&mut self, now: SimTime) -> Option<SimTime> {
        self.generation += 1;
        self.unsettled = false;
        let routes: Vec<&[(usize, f64)]> =
            self.flows.values().map(|f| f.route.as_slice()).collect();
        let mut rates = vec![0.0; routes.len()];
        self.filler.solve(&self.resources, &routes, &mut rates);
        let mut next = f64::INFINITY;
        for (f, rate) in self.flows.values_mut().zip(rates) {
            f.rate = rate;
            next = next.min(if rate.is_infinite() {
                0.0
            } else {
                f.left / rate
            });
        }
        if !next.is_finite() {
            return None;
        }
        let wait = SimDuration::from_secs_f64(next).ok()?;
        now.checked_add(wait).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::network::{LinkEfficiency, resources};
    use crate::testing;

    #[test]
    fn two_transfers_into_one_gpu_share_its_links_and_bytes_are_conserved() {
        let topo = testing::topology("gb200-nvl72");
        let eff = LinkEfficiency::for_gpu(&topo, topo.gpus[0]).unwrap();
        let mut net = KvNetwork::new(&topo, resources(&topo, eff));
        let bytes = 1e9;
        net.add(SimTime::ZERO, 1, topo.gpus[0], topo.gpus[9], bytes)
            .unwrap();
        let t1 = net.settle(SimTime::ZERO).unwrap();
        assert_eq!(net.settle(SimTime::ZERO), None, "nothing new to solve");
        let alone = t1.as_secs_f64();
        let nvlink = topo.nvlink_gb_s(topo.gpus[9]) * 1e9 * eff.nvlink;
        assert!((alone - bytes / nvlink).abs() / alone < 1e-6, "{alone}");
        // A second transfer into the same GPU halves both rates.
        net.add(SimTime::ZERO, 2, topo.gpus[1], topo.gpus[9], bytes)
            .unwrap();
        let t2 = net.settle(SimTime::ZERO).unwrap();
        assert!((t2.as_secs_f64() / alone - 2.0).abs() < 1e-6);
        let (stale, _) = net.complete(t2, net.generation - 1);
        assert!(stale.is_empty(), "a stale event changes nothing");
        let (done, next) = net.complete(t2, net.generation);
        assert_eq!(done, vec![1, 2]);
        assert_eq!(next, None);
        assert_eq!(net.bytes_started, net.bytes_delivered);
    }
}
