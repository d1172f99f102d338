//! Which expert each physical slot holds, layer by layer, and what that means for the load
//! of each rank. Slot s lives on rank `s / slots_per_rank`; an expert held by several slots
//! (redundant copies, EPLB) has its tokens split across them.

use super::eplb;
use serde::Serialize;

/// How a replicated expert's tokens are split across its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaSplit {
    /// Evenly (SGLang's dynamic dispatch; TensorRT-LLM's spread).
    Even,
    /// Toward the replicas on the least-loaded ranks (an ideal dispatcher).
    LeastLoaded,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    ranks: usize,
    /// `[layer][slot]`: the expert each slot holds.
    phy2log: Vec<Vec<usize>>,
    /// `[layer][expert]`: the slots holding it.
    replicas: Vec<Vec<Vec<usize>>>,
}

/// A placement that cannot exist.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct PlacementError(pub String);

impl Placement {
    /// No EPLB: expert e on rank e / (experts / ranks), one slot each.
    pub fn contiguous(
        layers: usize,
        experts: usize,
        ranks: usize,
    ) -> Result<Placement, PlacementError> {
        if ranks == 0 || !experts.is_multiple_of(ranks) {
            return Err(PlacementError(format!(
                "{experts} experts do not divide over EP {ranks} without redundant slots; use EPLB (static or online) with slots a multiple of {ranks}"
            )));
        }
        Ok(Placement::from_slots(
            ranks,
            vec![(0..experts).collect(); layers],
            experts,
        ))
    }

    /// `phy2log[layer][slot]` over `ranks` ranks; every expert must hold a slot.
    pub fn from_slots(ranks: usize, phy2log: Vec<Vec<usize>>, experts: usize) -> Placement {
        let replicas = phy2log
            .iter()
            .map(|slots| {
                let mut r = vec![Vec::new(); experts];
                for (s, &e) in slots.iter().enumerate() {
                    r[e].push(s);
                }
                r
            })
            .collect();
        Placement {
            ranks,
            phy2log,
            replicas,
        }
    }

    /// DeepSeek's EPLB over `load[layer][expert]` (one node: an NVLink domain).
    pub fn eplb(
        load: &[Vec<f64>],
        slots: usize,
        groups: usize,
        ranks: usize,
    ) -> Result<Placement, PlacementError> {
        let plan = eplb::rebalance_experts(load, slots, groups, 1, ranks)
            .map_err(|e| PlacementError(e.to_string()))?;
        let experts = load.first().map_or(0, Vec::len);
        Ok(Placement::from_slots(ranks, plan.phy2log, experts))
    }

    pub fn layers(&self) -> usize {
        self.phy2log.len()
    }

    pub fn slots_per_rank(&self) -> usize {
        self.phy2log.first().map_or(0, Vec::len) / self.ranks
    }

    pub fn phy2log(&self, layer: usize) -> &[usize] {
        &self.phy2log[layer]
    }

    /// Tokens each rank's experts receive in `layer` when experts get `counts` tokens.
    pub fn rank_loads(&self, layer: usize, counts: &[u64], split: ReplicaSplit) -> Vec<f64> {
        let per_rank = self.slots_per_rank();
        let mut loads = vec![0.0; self.ranks];
        let mut shared: Vec<usize> = Vec::new();
        for (e, slots) in self.replicas[layer].iter().enumerate() {
            match (slots.len(), split) {
                (1, _) => loads[slots[0] / per_rank] += counts[e] as f64,
                (n, ReplicaSplit::Even) => {
                    for &s in slots {
                        loads[s / per_rank] += counts[e] as f64 / n as f64;
                    }
                }
                (_, ReplicaSplit::LeastLoaded) => shared.push(e),
            }
        }
        // Heaviest replicated experts first, each water-filling its replicas' ranks.
        shared.sort_by(|&a, &b| counts[b].cmp(&counts[a]));
        for e in shared {
            let mut ranks: Vec<usize> = self.replicas[layer][e]
                .iter()
                .map(|s| s / per_rank)
                .collect();
            ranks.sort_unstable();
            ranks.dedup();
            water_fill(&mut loads, &ranks, counts[e] as f64);
        }
        loads
    }

    /// Keeps slot identity across a re-plan: on every rank, an expert that stays keeps its
    /// old slot, and newcomers take the freed slots in order. Returns the aligned placement
    /// of `layer` and how many of its slots now hold a different expert on each rank.
    pub fn align_layer(&self, layer: usize, mut new: Vec<usize>) -> (Vec<usize>, Vec<usize>) {
        let per_rank = self.slots_per_rank();
        let old = &self.phy2log[layer];
        let mut changed = vec![0; self.ranks];
        for (rank, changed) in changed.iter_mut().enumerate() {
            let range = rank * per_rank..(rank + 1) * per_rank;
            let mut incoming: Vec<usize> = new[range.clone()].to_vec();
            let mut aligned: Vec<Option<usize>> = vec![None; per_rank];
            for (i, &e) in old[range.clone()].iter().enumerate() {
                if let Some(pos) = incoming.iter().position(|&x| x == e) {
                    aligned[i] = Some(e);
                    incoming.remove(pos);
                }
            }
            let mut newcomers = incoming.into_iter();
            for (i, slot) in aligned.iter_mut().enumerate() {
                if slot.is_none() {
                    *slot = newcomers.next();
                    *changed += 1;
                    debug_assert!(slot.is_some(), "rank {rank} slot {i}");
                }
            }
            for (i, e) in aligned.into_iter().enumerate() {
                new[range.start + i] = e.unwrap_or(old[range.start + i]);
            }
        }
        (new, changed)
    }

    /// Replaces one layer's slots (already aligned).
    pub fn set_layer(&mut self, layer: usize, slots: Vec<usize>) {
        let experts = self.replicas[layer].len();
        let mut r = vec![Vec::new(); experts];
        for (s, &e) in slots.iter().enumerate() {
            r[e].push(s);
        }
        self.replicas[layer] = r;
        self.phy2log[layer] = slots;
    }
}

/// Adds `amount` to the lowest of `loads[ranks]`, raising them level by level.
fn water_fill(loads: &mut [f64], ranks: &[usize], mut amount: f64) {
    let mut order: Vec<usize> = ranks.to_vec();
    order.sort_by(|&a, &b| loads[a].total_cmp(&loads[b]).then(a.cmp(&b)));
    let mut level = 1;
    while amount > 0.0 && level <= order.len() {
        let target = if level < order.len() {
            loads[order[level]]
        } else {
            f64::INFINITY
        };
        let current = loads[order[0]];
        let room = (target - current) * level as f64;
        let give = room.min(amount);
        for &r in &order[..level] {
            loads[r] = current + give / level as f64;
        }
        amount -= give;
        level += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_placement_and_loads() {
        let p = Placement::contiguous(2, 8, 4).unwrap();
        assert_eq!(p.slots_per_rank(), 2);
        let loads = p.rank_loads(0, &[1, 2, 3, 4, 5, 6, 7, 8], ReplicaSplit::Even);
        assert_eq!(loads, vec![3.0, 7.0, 11.0, 15.0]);
        assert!(
            Placement::contiguous(1, 256, 72)
                .unwrap_err()
                .0
                .contains("use EPLB")
        );
    }

    #[test]
    fn replicas_share_tokens() {
        // Expert 0 on ranks 0 and 1; experts 1, 2 on ranks 0, 1.
        let p = Placement::from_slots(2, vec![vec![0, 1, 0, 2]], 3);
        let even = p.rank_loads(0, &[10, 4, 1], ReplicaSplit::Even);
        assert_eq!(even, vec![9.0, 6.0]);
        let least = p.rank_loads(0, &[10, 4, 1], ReplicaSplit::LeastLoaded);
        assert_eq!(least, vec![7.5, 7.5]);
        let total: f64 = least.iter().sum();
        assert_eq!(total, 15.0, "tokens are conserved");
    }

    #[test]
    fn alignment_keeps_unchanged_slots() {
        let p = Placement::from_slots(2, vec![vec![0, 1, 2, 3]], 4);
        // The new plan swaps the order on rank 0 and moves expert 3 to rank 0.
        let (aligned, changed) = p.align_layer(0, vec![3, 0, 2, 1]);
        assert_eq!(aligned, vec![0, 3, 2, 1]);
        assert_eq!(changed, vec![1, 1]);
        let (same, none) = p.align_layer(0, vec![1, 0, 3, 2]);
        assert_eq!(same, vec![0, 1, 2, 3]);
        assert_eq!(none, vec![0, 0]);
    }

    #[test]
    fn water_filling_levels_the_lowest_first() {
        let mut loads = vec![1.0, 5.0, 2.0];
        water_fill(&mut loads, &[0, 1, 2], 4.0);
        assert_eq!(loads, vec![3.5, 5.0, 3.5]);
        water_fill(&mut loads, &[0, 1, 2], 6.0);
        // 3 fills ranks 0 and 2 up to 5, the last 3 spread over all three: 6 each.
        assert_eq!(loads, vec![6.0, 6.0, 6.0]);
    }
}
