//! Flows with their max-min fair rates, kept as flows come and go: a change re-solves
//! only the flows joined to it through shared links.

use super::maxmin::{Filler, Resource};

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
    filler: Filler,
    /// Scratch for [`Self::solve`]: the component's rates.
    solved: Vec<f64>,
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
            filler: Filler::default(),
            solved: Vec::new(),
        }
    }

    /// Adds a flow; returns its id.
    pub fn add(&mut self, route: Vec<(usize, f64)>) -> usize {
        self.add_all(vec![route])[0]
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
        // Each resource's flows are listed once, however many of them reach it.
        let mut listed = vec![false; self.resources.len()];
        let mut stack = vec![start];
        seen[start] = true;
        let mut out = Vec::new();
        while let Some(f) = stack.pop() {
            out.push(f);
            if let Some(route) = &self.flows[f] {
                for &(r, _) in route {
                    if self.resources[r].shared && !std::mem::replace(&mut listed[r], true) {
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
        self.solved.resize(live.len(), 0.0);
        self.filler
            .solve(&self.resources, &routes, &mut self.solved[..live.len()]);
        for (&f, &r) in live.iter().zip(&self.solved) {
            self.rates[f] = r;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::maxmin::max_min;
    use super::super::maxmin::tests::{instance, shared};
    use super::*;
    use proptest::prelude::*;

    proptest! {
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
