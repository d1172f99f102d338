//! Max-min fair sharing of link bandwidth by progressive filling. Every flow's rate grows
//! at the same pace until a link it crosses is full; those flows freeze, and the rest go on.
//! A flow spread over several paths (ECMP) puts a fixed share of its rate on each link.
//! Shared links divide their capacity among the flows crossing them; a fat pipe (a
//! non-blocking crossbar) gives each flow its full capacity.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

/// A resource's summed shares below this are float residue left by frozen flows, not load.
const RESIDUE_WEIGHT: f64 = 1e-15;
/// Rounding slack of the filling: a resource with at most this share of its capacity left
/// is full, and a flow this close (relatively) to its own fat-pipe limit is at it.
const FULL_SLACK: f64 = 1e-12;

/// One direction of a link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resource {
    /// Bytes per second.
    pub capacity: f64,
    pub shared: bool,
}

/// Rates for `flows` (each a list of (resource, share of the flow's rate)), max-min fair.
/// A flow that crosses no resource has no limit: its rate is infinite.
pub fn max_min(resources: &[Resource], flows: &[&[(usize, f64)]]) -> Vec<f64> {
    let mut rates = vec![0.0; flows.len()];
    Filler::default().solve(resources, flows, &mut rates);
    rates
}

/// Drops the constraints that repeat another: shared resources crossed by exactly the same
/// flows with the same shares limit them alike, so only the one of least capacity (the
/// first, among equals) can ever fill. The 18 uplinks of an NVL72 GPU, over which each of
/// its flows spreads evenly, become one. Rates are unchanged, bit for bit, and stay so
/// as flows are removed (both resources lose the same flow), not as flows are added.
pub fn drop_repeated_constraints(resources: &[Resource], routes: &mut [Vec<(usize, f64)>]) {
    let mut users: Vec<Vec<(u32, u64)>> = vec![Vec::new(); resources.len()];
    for (i, route) in routes.iter().enumerate() {
        for &(r, share) in route {
            if resources[r].shared {
                users[r].push((i as u32, share.to_bits()));
            }
        }
    }
    let mut kept: BTreeMap<&[(u32, u64)], usize> = BTreeMap::new();
    let mut keep = vec![true; resources.len()];
    for (r, signature) in users.iter().enumerate() {
        if signature.is_empty() {
            continue;
        }
        match kept.entry(signature) {
            Entry::Vacant(v) => {
                v.insert(r);
            }
            Entry::Occupied(mut o) => {
                let first = *o.get();
                if resources[r].capacity < resources[first].capacity {
                    keep[first] = false;
                    o.insert(r);
                } else {
                    keep[r] = false;
                }
            }
        }
    }
    for route in routes {
        route.retain(|&(r, _)| keep[r]);
    }
}

/// Progressive filling with its scratch space, kept between solves so that re-solving
/// (every time a flow finishes) allocates nothing.
///
/// Every flow not yet frozen has the same rate, the current *level*, so each round only
/// needs per-resource sums of the active flows' shares (kept up to date as flows freeze).
/// A solve works on the shared resources its flows cross, not on the whole topology: it
/// costs O(rounds x those resources + total route length + flows log flows).
#[derive(Debug, Clone, Default)]
pub struct Filler {
    /// Per topology resource: its position among the solve's resources + 1 (0: unused).
    local: Vec<u32>,
    /// The solve's shared resources, by topology index (so freezing visits them in the
    /// same order whatever subset a solve has).
    used: Vec<usize>,
    weight: Vec<f64>,
    left: Vec<f64>,
    /// Active flows on each resource: once none is left its weight is exactly 0
    /// (subtracting shares leaves float residue that would stall the filling forever).
    active_users: Vec<u32>,
    /// Flows crossing each resource, in flow order: `users[first[l]..first[l + 1]]`.
    first: Vec<usize>,
    users: Vec<u32>,
    /// Resources that still have active flows, in topology order.
    live: Vec<u32>,
    /// A flow's own limit from fat pipes: capacity / share, the smallest over its route.
    own_cap: Vec<f64>,
    /// Flows with a finite own limit, by that limit.
    by_own_cap: Vec<u32>,
    active: Vec<bool>,
    freeze: Vec<u32>,
}

impl Filler {
    /// Writes each flow's max-min fair rate into `rates`.
    pub fn solve(&mut self, resources: &[Resource], flows: &[&[(usize, f64)]], rates: &mut [f64]) {
        self.index_resources(resources, flows);
        self.index_users(resources, flows);
        self.fill(resources, flows, rates);
        for &r in &self.used {
            self.local[r] = 0;
        }
    }

    fn index_resources(&mut self, resources: &[Resource], flows: &[&[(usize, f64)]]) {
        if self.local.len() < resources.len() {
            self.local.resize(resources.len(), 0);
        }
        self.used.clear();
        for &(r, _) in flows.iter().flat_map(|f| f.iter()) {
            if resources[r].shared && self.local[r] == 0 {
                self.local[r] = 1;
                self.used.push(r);
            }
        }
        self.used.sort_unstable();
        for (l, &r) in self.used.iter().enumerate() {
            self.local[r] = l as u32 + 1;
        }
    }

    fn index_users(&mut self, resources: &[Resource], flows: &[&[(usize, f64)]]) {
        let n = self.used.len();
        self.weight.clear();
        self.weight.resize(n, 0.0);
        self.active_users.clear();
        self.active_users.resize(n, 0);
        self.own_cap.clear();
        self.own_cap.resize(flows.len(), f64::INFINITY);
        for (i, f) in flows.iter().enumerate() {
            for &(r, share) in *f {
                if resources[r].shared {
                    let l = self.local[r] as usize - 1;
                    self.weight[l] += share;
                    self.active_users[l] += 1;
                } else if share > 0.0 {
                    self.own_cap[i] = self.own_cap[i].min(resources[r].capacity / share);
                }
            }
        }
        self.first.clear();
        self.first.push(0);
        for l in 0..n {
            self.first
                .push(self.first[l] + self.active_users[l] as usize);
        }
        self.users.clear();
        self.users.resize(self.first[n], 0);
        let mut next = self.first[..n].to_vec();
        for (i, f) in flows.iter().enumerate() {
            for &(r, _) in *f {
                if resources[r].shared {
                    let l = self.local[r] as usize - 1;
                    self.users[next[l]] = i as u32;
                    next[l] += 1;
                }
            }
        }
        self.left.clear();
        self.left
            .extend(self.used.iter().map(|&r| resources[r].capacity));
        self.live.clear();
        self.live.extend(0..n as u32);
        self.by_own_cap.clear();
        self.by_own_cap
            .extend((0..flows.len() as u32).filter(|&i| self.own_cap[i as usize].is_finite()));
        let own_cap = &self.own_cap;
        self.by_own_cap
            .sort_by(|&a, &b| own_cap[a as usize].total_cmp(&own_cap[b as usize]));
    }

    fn fill(&mut self, resources: &[Resource], flows: &[&[(usize, f64)]], rates: &mut [f64]) {
        rates.fill(f64::INFINITY);
        self.active.clear();
        self.active.extend(flows.iter().map(|f| !f.is_empty()));
        let mut remaining = self.active.iter().filter(|&&a| a).count();
        let mut level = 0.0;
        let mut tightest_own = 0;
        while remaining > 0 {
            self.live.retain(|&l| self.active_users[l as usize] > 0);
            while tightest_own < self.by_own_cap.len()
                && !self.active[self.by_own_cap[tightest_own] as usize]
            {
                tightest_own += 1;
            }
            let step = self.next_step(level, tightest_own);
            if !step.is_finite() {
                break;
            }
            level += step;
            self.collect_frozen(resources, step, level, tightest_own);
            remaining -= self.freeze_collected(resources, flows, level, rates);
        }
    }

    /// How far the level can rise before a live shared resource fills or a flow reaches
    /// its own fat-pipe limit (the flow at `tightest_own` of those left).
    fn next_step(&self, level: f64, tightest_own: usize) -> f64 {
        let mut step = f64::INFINITY;
        for &l in &self.live {
            let l = l as usize;
            if self.weight[l] > RESIDUE_WEIGHT {
                step = step.min(self.left[l].max(0.0) / self.weight[l]);
            }
        }
        if let Some(&i) = self.by_own_cap.get(tightest_own) {
            step = step.min(self.own_cap[i as usize] - level);
        }
        step.max(0.0)
    }

    /// Freezes the collected flows at `level`, taking their shares off their resources;
    /// returns how many were still active.
    fn freeze_collected(
        &mut self,
        resources: &[Resource],
        flows: &[&[(usize, f64)]],
        level: f64,
        rates: &mut [f64],
    ) -> usize {
        let mut frozen = 0;
        for k in 0..self.freeze.len() {
            let i = self.freeze[k] as usize;
            if !self.active[i] {
                continue;
            }
            self.active[i] = false;
            frozen += 1;
            rates[i] = level;
            for &(r, share) in flows[i] {
                if resources[r].shared {
                    let l = self.local[r] as usize - 1;
                    self.active_users[l] -= 1;
                    self.weight[l] = if self.active_users[l] == 0 {
                        0.0
                    } else {
                        self.weight[l] - share
                    };
                }
            }
        }
        frozen
    }

    /// Raises every live resource by `step` and lists the flows to freeze at `level`: those
    /// on a full shared link, in topology order, then those at their own fat-pipe limit, in
    /// flow order.
    fn collect_frozen(
        &mut self,
        resources: &[Resource],
        step: f64,
        level: f64,
        tightest_own: usize,
    ) {
        self.freeze.clear();
        for &l in &self.live {
            let l = l as usize;
            if self.weight[l] > RESIDUE_WEIGHT {
                self.left[l] -= step * self.weight[l];
                let capacity = resources[self.used[l]].capacity;
                if self.left[l] <= FULL_SLACK * capacity {
                    let users = &self.users[self.first[l]..self.first[l + 1]];
                    self.freeze
                        .extend(users.iter().filter(|&&i| self.active[i as usize]));
                }
            }
        }
        let at_limit = self.freeze.len();
        for &i in &self.by_own_cap[tightest_own..] {
            if self.own_cap[i as usize] > level * (1.0 + FULL_SLACK) {
                break;
            }
            if self.active[i as usize] {
                self.freeze.push(i);
            }
        }
        self.freeze[at_limit..].sort_unstable();
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(in crate::cost::network) fn shared(c: f64) -> Resource {
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

    /// Rates for `flows` (each a list of (resource, share of the flow's rate)), max-min fair.
    /// A flow that crosses no resource has no limit: its rate is infinite.
    ///
    /// Every flow not yet frozen has the same rate, the current *level*, so each round only
    /// needs per-resource sums of the active flows' shares (kept up to date as flows freeze):
    /// a solve costs O(rounds x (resources + flows) + total route length).
    fn reference_max_min(resources: &[Resource], flows: &[&[(usize, f64)]]) -> Vec<f64> {
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

    pub(in crate::cost::network) fn instance()
    -> impl Strategy<Value = (Vec<Resource>, Vec<Vec<(usize, f64)>>)> {
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

    /// An instance with repeated constraints: some resources get twins (same flows, same
    /// shares) of equal or larger capacity, as ECMP fans make.
    fn with_twins() -> impl Strategy<Value = (Vec<Resource>, Vec<Vec<(usize, f64)>>)> {
        (
            instance(),
            prop::collection::vec((0usize..8, 1.0f64..2.0, prop::bool::ANY), 1..4),
        )
            .prop_map(|((mut resources, mut flows), twins)| {
                for (of, factor, equal) in twins {
                    let of = of % resources.len();
                    let twin = resources.len();
                    let mut r = resources[of];
                    r.capacity *= if equal { 1.0 } else { factor };
                    resources.push(r);
                    for f in &mut flows {
                        if let Some(&(_, s)) = f.iter().find(|(x, _)| *x == of) {
                            f.push((twin, s));
                        }
                    }
                }
                (resources, flows)
            })
    }

    proptest! {
        #[test]
        fn equals_the_whole_topology_solver_bit_for_bit((resources, flows) in instance()) {
            let routes: Vec<&[(usize, f64)]> = flows.iter().map(|f| f.as_slice()).collect();
            prop_assert_eq!(max_min(&resources, &routes), reference_max_min(&resources, &routes));
        }

        #[test]
        fn dropping_repeated_constraints_changes_no_rate((resources, flows) in with_twins()) {
            let routes: Vec<&[(usize, f64)]> = flows.iter().map(|f| f.as_slice()).collect();
            let before = reference_max_min(&resources, &routes);
            let mut fewer = flows.clone();
            drop_repeated_constraints(&resources, &mut fewer);
            let routes: Vec<&[(usize, f64)]> = fewer.iter().map(|f| f.as_slice()).collect();
            prop_assert_eq!(max_min(&resources, &routes), before);
        }

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
    }
}
