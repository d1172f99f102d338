//! Max-min fair sharing of link bandwidth by progressive filling. Every flow's rate grows
//! at the same pace until a link it crosses is full; those flows freeze, and the rest go on.
//! A flow spread over several paths (ECMP) puts a fixed share of its rate on each link.
//! Shared links divide their capacity among the flows crossing them; a fat pipe (a
//! non-blocking crossbar) gives each flow its full capacity.

/// One direction of a link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resource {
    /// Bytes per second.
    pub capacity: f64,
    pub shared: bool,
}

/// Rates for `flows` (each a list of (resource, share of the flow's rate)), max-min fair.
/// A flow that crosses no resource has no limit: its rate is infinite.
///
/// Every flow not yet frozen has the same rate, the current *level*, so each round only
/// needs per-resource sums of the active flows' shares (kept up to date as flows freeze):
/// a solve costs O(rounds x (resources + flows) + total route length).
pub fn max_min(resources: &[Resource], flows: &[&[(usize, f64)]]) -> Vec<f64> {
    let mut rate = vec![f64::INFINITY; flows.len()];
    let mut active: Vec<bool> = flows.iter().map(|f| !f.is_empty()).collect();
    let mut users: Vec<Vec<(usize, f64)>> = vec![Vec::new(); resources.len()];
    let mut weight = vec![0.0; resources.len()];
    // Active flows on each shared resource: once none is left its weight is exactly 0
    // (subtracting shares leaves float residue that would stall the filling forever).
    let mut active_users = vec![0usize; resources.len()];
    // A flow's own limit from fat pipes: capacity / share, the smallest over its route.
    let mut own_cap = vec![f64::INFINITY; flows.len()];
    for (i, f) in flows.iter().enumerate() {
        for &(r, share) in *f {
            if resources[r].shared {
                users[r].push((i, share));
                weight[r] += share;
                active_users[r] += 1;
            } else if share > 0.0 {
                own_cap[i] = own_cap[i].min(resources[r].capacity / share);
            }
        }
    }
    let mut left: Vec<f64> = resources.iter().map(|r| r.capacity).collect();
    let mut level = 0.0;
    let mut remaining = active.iter().filter(|&&a| a).count();
    while remaining > 0 {
        let mut step = f64::INFINITY;
        for (r, res) in resources.iter().enumerate() {
            if res.shared && weight[r] > 1e-15 {
                step = step.min(left[r].max(0.0) / weight[r]);
            }
        }
        for (i, &a) in active.iter().enumerate() {
            if a {
                step = step.min(own_cap[i] - level);
            }
        }
        let step = step.max(0.0);
        if !step.is_finite() {
            break;
        }
        level += step;
        for (r, res) in resources.iter().enumerate() {
            if res.shared && weight[r] > 1e-15 {
                left[r] -= step * weight[r];
            }
        }
        // Freeze flows held by a full shared link or by their own fat-pipe limit.
        let mut freeze = Vec::new();
        for (r, res) in resources.iter().enumerate() {
            if res.shared && weight[r] > 1e-15 && left[r] <= 1e-12 * res.capacity {
                freeze.extend(users[r].iter().map(|&(i, _)| i).filter(|&i| active[i]));
            }
        }
        for (i, &a) in active.iter().enumerate() {
            if a && own_cap[i] <= level * (1.0 + 1e-12) {
                freeze.push(i);
            }
        }
        for i in freeze {
            if !active[i] {
                continue;
            }
            active[i] = false;
            remaining -= 1;
            rate[i] = level;
            for &(r, share) in flows[i] {
                if resources[r].shared {
                    active_users[r] -= 1;
                    weight[r] = if active_users[r] == 0 {
                        0.0
                    } else {
                        weight[r] - share
                    };
                }
            }
        }
    }
    rate
}

/// Flows with their rates, re-solved incrementally: adding or removing a flow re-solves
/// only the flows joined to it through shared links (its component), the rest keep their
/// rates.
#[derive(Debug, Clone)]
pub struct FlowSet {
    resources: Vec<Resource>,
    flows: Vec<Option<Vec<(usize, f64)>>>,
    rates: Vec<f64>,
    /// Flows crossing each shared resource.
    users: Vec<Vec<usize>>,
    /// Flows re-solved by the last change (for tests and statistics).
    pub last_resolved: usize,
}

impl FlowSet {
    pub fn new(resources: Vec<Resource>) -> Self {
        let n = resources.len();
        FlowSet {
            resources,
            flows: Vec::new(),
            rates: Vec::new(),
            users: vec![Vec::new(); n],
            last_resolved: 0,
        }
    }

    /// Adds a flow; returns its id.
    pub fn add(&mut self, route: Vec<(usize, f64)>) -> usize {
        let id = self.flows.len();
        for &(r, _) in &route {
            if self.resources[r].shared {
                self.users[r].push(id);
            }
        }
        self.flows.push(Some(route));
        self.rates.push(0.0);
        self.resolve_component(id);
        id
    }

    /// Adds many flows and solves once (a collective's flows all start together).
    pub fn add_all(&mut self, routes: Vec<Vec<(usize, f64)>>) -> Vec<usize> {
        let first = self.flows.len();
        for (id, route) in (first..).zip(routes) {
            for &(r, _) in &route {
                if self.resources[r].shared {
                    self.users[r].push(id);
                }
            }
            self.flows.push(Some(route));
            self.rates.push(0.0);
        }
        let ids: Vec<usize> = (first..self.flows.len()).collect();
        self.resolve_touched(ids.clone());
        ids
    }

    pub fn remove(&mut self, id: usize) {
        self.remove_all(&[id]);
    }

    /// Removes flows and re-solves, once, the components they leave behind.
    pub fn remove_all(&mut self, ids: &[usize]) {
        let mut neighbours = Vec::new();
        for &id in ids {
            let Some(route) = self.flows[id].take() else {
                continue;
            };
            self.rates[id] = 0.0;
            for &(r, _) in &route {
                if self.resources[r].shared {
                    self.users[r].retain(|&f| f != id);
                    neighbours.extend(self.users[r].iter().copied());
                }
            }
        }
        self.resolve_touched(neighbours);
    }

    /// Re-solves the components of the given flows, each once.
    fn resolve_touched(&mut self, mut neighbours: Vec<usize>) {
        neighbours.sort_unstable();
        neighbours.dedup();
        let mut done = vec![false; self.flows.len()];
        self.last_resolved = 0;
        for f in neighbours {
            if !done[f] {
                let component = self.component(f);
                for &c in &component {
                    done[c] = true;
                }
                self.last_resolved += component.len();
                self.solve(&component);
            }
        }
    }

    pub fn rate(&self, id: usize) -> f64 {
        self.rates[id]
    }

    /// Flows joined to `start` through shared links, in increasing id order.
    fn component(&self, start: usize) -> Vec<usize> {
        let mut seen = vec![false; self.flows.len()];
        let mut stack = vec![start];
        seen[start] = true;
        let mut out = Vec::new();
        while let Some(f) = stack.pop() {
            out.push(f);
            if let Some(route) = &self.flows[f] {
                for &(r, _) in route {
                    if self.resources[r].shared {
                        for &g in &self.users[r] {
                            if !seen[g] {
                                seen[g] = true;
                                stack.push(g);
                            }
                        }
                    }
                }
            }
        }
        out.sort_unstable();
        out
    }

    fn resolve_component(&mut self, id: usize) {
        let component = self.component(id);
        self.last_resolved = component.len();
        self.solve(&component);
    }

    fn solve(&mut self, component: &[usize]) {
        let live: Vec<usize> = component
            .iter()
            .copied()
            .filter(|&f| self.flows[f].is_some())
            .collect();
        let routes: Vec<&[(usize, f64)]> = live
            .iter()
            .filter_map(|&f| self.flows[f].as_deref())
            .collect();
        let rates = max_min(&self.resources, &routes);
        for (f, r) in live.into_iter().zip(rates) {
            self.rates[f] = r;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shared(c: f64) -> Resource {
        Resource {
            capacity: c,
            shared: true,
        }
    }

    #[test]
    fn textbook_example() {
        // Link 0 (cap 10): flows A, B; link 1 (cap 4): flows B, C.
        // B and C split link 1: 2 each; A takes the rest of link 0: 8.
        let r = max_min(
            &[shared(10.0), shared(4.0)],
            &[&[(0, 1.0)], &[(0, 1.0), (1, 1.0)], &[(1, 1.0)]],
        );
        assert_eq!(r, vec![8.0, 2.0, 2.0]);
    }

    #[test]
    fn fat_pipes_do_not_share_and_shares_scale_use() {
        let fat = Resource {
            capacity: 5.0,
            shared: false,
        };
        let r = max_min(&[fat], &[&[(0, 1.0)], &[(0, 1.0)], &[(0, 0.5)]]);
        assert_eq!(r, vec![5.0, 5.0, 10.0]);
        // A flow spread over two links of 6 uses half of each: it can reach 12.
        let r = max_min(&[shared(6.0), shared(6.0)], &[&[(0, 0.5), (1, 0.5)]]);
        assert_eq!(r, vec![12.0]);
        assert_eq!(max_min(&[shared(1.0)], &[&[]]), vec![f64::INFINITY]);
    }

    /// A straightforward reference: raise the slowest-possible bottleneck one at a time,
    /// recomputing everything from scratch each round.
    fn naive(resources: &[Resource], flows: &[Vec<(usize, f64)>]) -> Vec<f64> {
        let n = flows.len();
        let mut rate = vec![0.0f64; n];
        let mut fixed = vec![false; n];
        while fixed.iter().any(|f| !f) {
            let mut best = f64::INFINITY;
            for (r, res) in resources.iter().enumerate() {
                let used: f64 = (0..n)
                    .filter(|&i| fixed[i])
                    .map(|i| rate[i] * share(&flows[i], r))
                    .sum();
                let w: f64 = (0..n)
                    .filter(|&i| !fixed[i])
                    .map(|i| share(&flows[i], r))
                    .sum();
                if res.shared && w > 0.0 {
                    best = best.min((res.capacity - used) / w);
                }
                if !res.shared {
                    for i in (0..n).filter(|&i| !fixed[i] && share(&flows[i], r) > 0.0) {
                        best = best.min(res.capacity / share(&flows[i], r));
                    }
                }
            }
            for i in 0..n {
                if !fixed[i] {
                    rate[i] = best;
                }
            }
            for (r, res) in resources.iter().enumerate() {
                let used: f64 = (0..n).map(|i| rate[i] * share(&flows[i], r)).sum();
                for i in 0..n {
                    let s = share(&flows[i], r);
                    let full = if res.shared {
                        used >= res.capacity * (1.0 - 1e-9)
                    } else {
                        rate[i] * s >= res.capacity * (1.0 - 1e-9)
                    };
                    if !fixed[i] && s > 0.0 && full {
                        fixed[i] = true;
                    }
                }
            }
        }
        rate
    }

    fn share(flow: &[(usize, f64)], r: usize) -> f64 {
        flow.iter().filter(|(x, _)| *x == r).map(|(_, s)| s).sum()
    }

    fn instance() -> impl Strategy<Value = (Vec<Resource>, Vec<Vec<(usize, f64)>>)> {
        (2usize..8).prop_flat_map(|nr| {
            let resources = prop::collection::vec((1.0f64..100.0, prop::bool::weighted(0.8)), nr)
                .prop_map(|v| {
                    v.into_iter()
                        .map(|(c, s)| Resource {
                            capacity: c,
                            shared: s,
                        })
                        .collect::<Vec<_>>()
                });
            let flow = prop::collection::btree_map(0..nr, 1u32..4, 1..4).prop_map(|m| {
                let total: u32 = m.values().sum();
                // Each link a flow crosses carries 1/k of it for ECMP-like splits, or all of it.
                m.into_iter()
                    .map(|(r, w)| {
                        (
                            r,
                            if total > 3 {
                                f64::from(w) / f64::from(total)
                            } else {
                                1.0
                            },
                        )
                    })
                    .collect::<Vec<_>>()
            });
            (resources, prop::collection::vec(flow, 1..10))
        })
    }

    proptest! {
        #[test]
        fn matches_the_naive_solver_and_is_fair((resources, flows) in instance()) {
            let routes: Vec<&[(usize, f64)]> = flows.iter().map(|f| f.as_slice()).collect();
            let fast = max_min(&resources, &routes);
            let slow = naive(&resources, &flows);
            for (a, b) in fast.iter().zip(&slow) {
                prop_assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{fast:?} vs {slow:?}");
            }
            // No link above capacity.
            for (r, res) in resources.iter().enumerate() {
                if res.shared {
                    let used: f64 = flows.iter().zip(&fast).map(|(f, x)| x * share(f, r)).sum();
                    prop_assert!(used <= res.capacity * (1.0 + 1e-9));
                }
            }
            // Every flow is held by a saturated link (or its fat-pipe limit).
            for (f, x) in flows.iter().zip(&fast) {
                let held = f.iter().any(|&(r, s)| {
                    let res = resources[r];
                    if res.shared {
                        let used: f64 = flows.iter().zip(&fast).map(|(g, y)| y * share(g, r)).sum();
                        used >= res.capacity * (1.0 - 1e-9)
                    } else {
                        x * s >= res.capacity * (1.0 - 1e-9)
                    }
                });
                prop_assert!(held, "flow {f:?} at {x} has no bottleneck");
            }
        }

        #[test]
        fn incremental_equals_from_scratch((resources, flows) in instance(), remove in 0usize..10) {
            let mut set = FlowSet::new(resources.clone());
            let ids: Vec<usize> = flows.iter().map(|f| set.add(f.clone())).collect();
            let gone = remove % flows.len();
            set.remove(ids[gone]);
            let kept: Vec<Vec<(usize, f64)>> = flows.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, f)| f.clone()).collect();
            let routes: Vec<&[(usize, f64)]> = kept.iter().map(|f| f.as_slice()).collect();
            let scratch = max_min(&resources, &routes);
            let incremental: Vec<f64> = ids.iter().filter(|&&i| i != ids[gone]).map(|&i| set.rate(i)).collect();
            for (a, b) in incremental.iter().zip(&scratch) {
                prop_assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{incremental:?} vs {scratch:?}");
            }
        }
    }

    #[test]
    fn a_change_re_solves_only_its_component() {
        // Two separate islands: flows 0-1 on link 0, flows 2-3 on link 1.
        let mut set = FlowSet::new(vec![shared(10.0), shared(10.0)]);
        let a = set.add(vec![(0, 1.0)]);
        set.add(vec![(0, 1.0)]);
        set.add(vec![(1, 1.0)]);
        set.add(vec![(1, 1.0)]);
        assert_eq!(
            set.last_resolved, 2,
            "adding to island 1 touches island 1 only"
        );
        set.remove(a);
        assert_eq!(set.last_resolved, 1);
        assert_eq!(set.rate(1), 10.0);
        assert_eq!((set.rate(2), set.rate(3)), (5.0, 5.0));
    }
}
