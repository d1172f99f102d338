//! DeepSeek's expert-parallel load balancer (deepseek-ai/EPLB `rebalance_experts`), ported
//! with the tie rules of docs/reference/eplb.md: stable descending sorts (equal values
//! in increasing index order), the lowest index winning every other tie, no sort when a bin
//! holds one item. Layers are planned independently.

use serde::Serialize;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Which procedure planned the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Groups packed onto nodes, then replication and packing inside each node.
    Hierarchical,
    /// The same procedure with one group and one node.
    Global,
}

/// A placement of every layer's experts into physical slots.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EplbPlan {
    pub policy: Policy,
    /// `[layer][slot]`: the expert a slot holds; slot s is on GPU `s / (slots / gpus)`.
    pub phy2log: Vec<Vec<usize>>,
    /// `[layer][expert]`: how many slots hold the expert (at least 1).
    pub logcnt: Vec<Vec<usize>>,
    /// `[layer][slot]`: replica rank (0 = the expert's original slot).
    pub phyrank: Vec<Vec<usize>>,
    /// `[layer][expert][rank]`: the slot of each replica, padded with -1 to the largest
    /// count in the plan.
    pub log2phy: Vec<Vec<Vec<i64>>>,
}

/// Shapes the planner cannot work with; each message says which rule and by how much.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.join("\n  "))]
pub struct EplbError(pub Vec<String>);

/// Plans `weight[layer][expert]` (estimated tokens per expert) into `replicas` slots per
/// layer on `gpus` GPUs in `nodes` nodes, with experts in `groups` contiguous groups.
pub fn rebalance_experts(
    weight: &[Vec<f64>],
    replicas: usize,
    groups: usize,
    nodes: usize,
    gpus: usize,
) -> Result<EplbPlan, EplbError> {
    let experts = weight.first().map_or(0, Vec::len);
    // Zero groups or nodes would silently fall back to the global policy.
    let mut zero = Vec::new();
    for (name, v) in [("num_groups", groups), ("num_nodes", nodes)] {
        if v == 0 {
            zero.push(format!("{name} must be at least 1"));
        }
    }
    if !zero.is_empty() {
        return Err(EplbError(zero));
    }
    let hierarchical =
        groups > 0 && nodes > 0 && groups.is_multiple_of(nodes) && !(groups == 1 && nodes == 1);
    let (policy, groups, nodes) = if hierarchical {
        (Policy::Hierarchical, groups, nodes)
    } else {
        (Policy::Global, 1, 1)
    };
    check_shapes(weight, experts, replicas, groups, nodes, gpus)?;
    let layers: Vec<LayerPlan> = weight
        .iter()
        .map(|w| plan_layer(w, replicas, groups, nodes, gpus))
        .collect();
    let width = layers
        .iter()
        .flat_map(|l| l.logcnt.iter().copied())
        .max()
        .unwrap_or(1);
    let log2phy = layers
        .iter()
        .map(|l| {
            let mut table = vec![vec![-1i64; width]; experts];
            for (slot, (&e, &rank)) in l.phy2log.iter().zip(&l.phyrank).enumerate() {
                table[e][rank] = slot as i64;
            }
            table
        })
        .collect();
    Ok(EplbPlan {
        policy,
        phy2log: layers.iter().map(|l| l.phy2log.clone()).collect(),
        logcnt: layers.iter().map(|l| l.logcnt.clone()).collect(),
        phyrank: layers.iter().map(|l| l.phyrank.clone()).collect(),
        log2phy,
    })
}

fn check_shapes(
    weight: &[Vec<f64>],
    experts: usize,
    replicas: usize,
    groups: usize,
    nodes: usize,
    gpus: usize,
) -> Result<(), EplbError> {
    let mut problems = Vec::new();
    if weight.is_empty() || experts == 0 {
        problems.push("weight must have at least one layer of at least one expert".to_owned());
    }
    for (l, row) in weight.iter().enumerate() {
        if row.len() != experts {
            problems.push(format!(
                "weight[{l}] has {} experts, weight[0] has {experts}: rows must be equally long",
                row.len()
            ));
        }
        if let Some((e, v)) = row
            .iter()
            .enumerate()
            .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
        {
            problems.push(format!(
                "weight[{l}][{e}] = {v}: loads must be finite and >= 0"
            ));
        }
    }
    // Planning is O(layers x replicas x experts): refuse sizes no deployment has.
    const MAX_SLOTS: usize = 1_000_000;
    if replicas > MAX_SLOTS || experts > MAX_SLOTS || gpus > MAX_SLOTS {
        problems.push(format!(
            "num_replicas, experts and num_gpus must each be at most {MAX_SLOTS}"
        ));
        return Err(EplbError(problems));
    }
    if gpus == 0 || nodes == 0 || groups == 0 {
        problems.push("num_gpus, num_nodes and num_groups must be at least 1".to_owned());
        return Err(EplbError(problems));
    }
    if experts > 0 && !experts.is_multiple_of(groups) {
        problems.push(format!(
            "{experts} experts do not divide into {groups} groups"
        ));
    }
    if !gpus.is_multiple_of(nodes) {
        problems.push(format!("{gpus} GPUs do not divide over {nodes} nodes"));
    }
    if !replicas.is_multiple_of(gpus) {
        problems.push(format!(
            "{replicas} replicas do not divide over {gpus} GPUs ({} left over)",
            replicas % gpus
        ));
    }
    if replicas < experts {
        problems.push(format!(
            "{replicas} replicas are fewer than the {experts} experts"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(EplbError(problems))
    }
}

struct LayerPlan {
    phy2log: Vec<usize>,
    phyrank: Vec<usize>,
    logcnt: Vec<usize>,
}

/// One layer, hierarchical procedure (the global policy calls it with one group and node).
fn plan_layer(
    weight: &[f64],
    replicas: usize,
    groups: usize,
    nodes: usize,
    gpus: usize,
) -> LayerPlan {
    let experts = weight.len();
    let group_size = experts / groups;
    let slots_per_node = replicas / nodes;
    let slots_per_gpu = replicas / gpus;
    let gpus_per_node = gpus / nodes;

    // Step 1: groups to nodes; a node lists its groups in placement order.
    let group_loads: Vec<f64> = (0..groups)
        .map(|g| weight[g * group_size..(g + 1) * group_size].iter().sum())
        .collect();
    let (group_node, group_pos) = balanced_packing(&group_loads, nodes);
    let groups_per_node = groups / nodes;
    let mut node_experts = vec![vec![0usize; groups_per_node * group_size]; nodes];
    for g in 0..groups {
        for j in 0..group_size {
            node_experts[group_node[g]][group_pos[g] * group_size + j] = g * group_size + j;
        }
    }

    let mut plan = LayerPlan {
        phy2log: vec![0; replicas],
        phyrank: vec![0; replicas],
        logcnt: vec![0; experts],
    };
    for (node, local_experts) in node_experts.iter().enumerate() {
        // Step 2: replicate inside the node.
        let local_loads: Vec<f64> = local_experts.iter().map(|&e| weight[e]).collect();
        let replicated = replicate(&local_loads, slots_per_node);
        // Step 3: replicas to the node's GPUs by their share of the load.
        let shares: Vec<f64> = replicated
            .slot_expert
            .iter()
            .map(|&i| local_loads[i] / replicated.count[i] as f64)
            .collect();
        let (gpu, pos) = balanced_packing(&shares, gpus_per_node);
        for c in 0..slots_per_node {
            let slot = node * slots_per_node + gpu[c] * slots_per_gpu + pos[c];
            plan.phy2log[slot] = local_experts[replicated.slot_expert[c]];
            plan.phyrank[slot] = replicated.slot_rank[c];
        }
        for (i, &e) in local_experts.iter().enumerate() {
            plan.logcnt[e] = replicated.count[i];
        }
    }
    plan
}

/// Capacity-constrained greedy packing: items (heaviest first, ties by index) each go to
/// the lightest bin that is not full (ties to the lowest bin); every bin ends with
/// `items / bins` items. Returns each item's bin and its position in the bin. The bins
/// that are not full sit in a min-heap by (load, index): O(items log bins), the same choice
/// as scanning every bin.
pub fn balanced_packing(values: &[f64], bins: usize) -> (Vec<usize>, Vec<usize>) {
    let n = values.len();
    let cap = n / bins;
    if cap == 1 {
        return ((0..n).collect(), vec![0; n]);
    }
    let mut order: Vec<usize> = (0..n).collect();
    // Stable: equal values keep increasing index order.
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let (mut bin, mut pos) = (vec![0; n], vec![0; n]);
    let mut counts = vec![0usize; bins];
    let mut open: BinaryHeap<Reverse<(Key, usize)>> =
        (0..bins).map(|b| Reverse((Key(0.0), b))).collect();
    for i in order {
        let Some(Reverse((Key(total), b))) = open.pop() else {
            // Only when bins hold fewer than n items in all (cap rounds down): the scan
            // gave bin 0 then.
            bin[i] = 0;
            pos[i] = counts[0];
            counts[0] += 1;
            continue;
        };
        bin[i] = b;
        pos[i] = counts[b];
        counts[b] += 1;
        if counts[b] < cap {
            open.push(Reverse((Key::of(total + values[i]), b)));
        }
    }
    (bin, pos)
}

/// An f64 ordered as `<` orders it on the finite, non-negative values EPLB sees (-0 as 0,
/// which `total_cmp` alone would not).
#[derive(Debug, Clone, Copy)]
struct Key(f64);

impl Key {
    fn of(v: f64) -> Key {
        Key(v + 0.0)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

struct Replicated {
    /// The (node-local) expert each candidate slot holds: originals first, then copies.
    slot_expert: Vec<usize>,
    slot_rank: Vec<usize>,
    count: Vec<usize>,
}

/// Greedy replication: each extra slot copies the expert with the largest load per replica
/// (ties to the lowest index). The experts sit in a max-heap by (load per replica, lowest
/// index first): O(slots log experts), the same choice as scanning every expert.
fn replicate(loads: &[f64], slots: usize) -> Replicated {
    let n = loads.len();
    let mut r = Replicated {
        slot_expert: (0..n).collect(),
        slot_rank: vec![0; n],
        count: vec![1; n],
    };
    let mut heap: BinaryHeap<(Key, Reverse<usize>)> =
        (0..n).map(|i| (Key::of(loads[i]), Reverse(i))).collect();
    for _ in n..slots {
        let Some((_, Reverse(best))) = heap.pop() else {
            break;
        };
        r.slot_expert.push(best);
        r.slot_rank.push(r.count[best]);
        r.count[best] += 1;
        heap.push((Key::of(loads[best] / r.count[best] as f64), Reverse(best)));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> Vec<Value> {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/eplb-vectors.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let doc: Value = serde_json::from_str(&text).unwrap();
        doc["cases"].as_array().unwrap().clone()
    }

    fn usize_of(v: &Value) -> usize {
        v.as_u64().unwrap() as usize
    }

    #[test]
    fn zero_groups_or_nodes_are_errors() {
        let w = vec![vec![1.0; 4]];
        let err = rebalance_experts(&w, 4, 1, 0, 2).unwrap_err();
        assert_eq!(err.0, ["num_nodes must be at least 1"]);
        assert!(rebalance_experts(&w, 4, 0, 1, 2).is_err());
    }

    #[test]
    fn every_reference_vector_matches_exactly() {
        let cases = vectors();
        assert_eq!(cases.len(), 16);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let i = &case["inputs"];
            let weight: Vec<Vec<f64>> = serde_json::from_value(i["weight"].clone()).unwrap();
            let plan = rebalance_experts(
                &weight,
                usize_of(&i["num_replicas"]),
                usize_of(&i["num_groups"]),
                usize_of(&i["num_nodes"]),
                usize_of(&i["num_gpus"]),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            let got = serde_json::to_value(&plan).unwrap();
            let want = &case["expected"];
            for field in ["policy", "phy2log", "logcnt", "phyrank", "log2phy"] {
                assert_eq!(got[field], want[field], "{name}: {field}");
            }
            // GPU loads: each slot carries its expert's load / count.
            let per_gpu = usize_of(&i["num_replicas"]) / usize_of(&i["num_gpus"]);
            for (l, row) in plan.phy2log.iter().enumerate() {
                for (gpu, slots) in row.chunks(per_gpu).enumerate() {
                    let load: f64 = slots
                        .iter()
                        .map(|&e| weight[l][e] / plan.logcnt[l][e] as f64)
                        .sum();
                    let expected = want["gpu_load"][l][gpu].as_f64().unwrap();
                    assert!(
                        (load - expected).abs() <= 1e-9 * expected.abs().max(1.0),
                        "{name}: gpu_load[{l}][{gpu}]"
                    );
                }
            }
        }
    }

    #[test]
    fn packing_fills_every_bin_and_replication_conserves_slots() {
        let (bin, pos) = balanced_packing(&[5.0, 1.0, 4.0, 4.0, 2.0, 3.0], 3);
        let mut per_bin = [0; 3];
        for &b in &bin {
            per_bin[b] += 1;
        }
        assert_eq!(per_bin, [2, 2, 2]);
        assert_eq!((bin[0], pos[0]), (0, 0), "the heaviest item opens bin 0");
        assert_eq!(
            (bin[2], bin[3]),
            (1, 2),
            "equal values go in index order to the next empty bins"
        );
        let r = replicate(&[10.0, 30.0, 0.0], 6);
        assert_eq!(r.count.iter().sum::<usize>(), 6);
        // Copies go to 30 (30 > 10), 30 again (15 > 10), then 10/1 ties 30/3: lowest index.
        assert_eq!(r.count, vec![2, 3, 1]);
    }

    /// DeepSeek's procedure as written: a scan of every bin per item.
    fn scanned_packing(values: &[f64], bins: usize) -> (Vec<usize>, Vec<usize>) {
        let n = values.len();
        let cap = n / bins;
        if cap == 1 {
            return ((0..n).collect(), vec![0; n]);
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        let (mut bin, mut pos) = (vec![0; n], vec![0; n]);
        let (mut totals, mut counts) = (vec![0.0f64; bins], vec![0usize; bins]);
        for i in order {
            let mut best: Option<usize> = None;
            for b in 0..bins {
                if counts[b] < cap && best.is_none_or(|k| totals[b] < totals[k]) {
                    best = Some(b);
                }
            }
            let b = best.unwrap_or(0);
            bin[i] = b;
            pos[i] = counts[b];
            counts[b] += 1;
            totals[b] += values[i];
        }
        (bin, pos)
    }

    /// ... and a scan of every expert per copy.
    fn scanned_replication(loads: &[f64], slots: usize) -> Vec<usize> {
        let n = loads.len();
        let mut count = vec![1usize; n];
        let mut slot_expert: Vec<usize> = (0..n).collect();
        for _ in n..slots {
            let mut best = 0;
            for i in 1..n {
                if loads[i] / count[i] as f64 > loads[best] / count[best] as f64 {
                    best = i;
                }
            }
            slot_expert.push(best);
            count[best] += 1;
        }
        slot_expert
    }

    proptest::proptest! {
        /// The heaps choose what the scans choose, ties included (small integer loads tie
        /// often; zeros too).
        #[test]
        fn heaps_choose_as_the_scans_do(
            loads in proptest::collection::vec(0u8..6, 1..40),
            per_bin in 1usize..5,
            extra in 0usize..60,
            scale in proptest::sample::select(vec![1.0, 0.1, 1e-300]),
        ) {
            let values: Vec<f64> = loads.iter().map(|&v| f64::from(v) * scale).collect();
            let bins = (values.len() / per_bin).max(1);
            let items = bins * per_bin.min(values.len());
            let packed = &values[..items.min(values.len())];
            proptest::prop_assert_eq!(balanced_packing(packed, bins), scanned_packing(packed, bins));
            let slots = values.len() + extra;
            proptest::prop_assert_eq!(replicate(&values, slots).slot_expert, scanned_replication(&values, slots));
        }
    }

    #[test]
    fn bad_shapes_are_all_reported() {
        let e = rebalance_experts(&[vec![1.0, 2.0, 3.0], vec![1.0, -2.0]], 5, 2, 1, 2).unwrap_err();
        let text = e.to_string();
        for needle in [
            "weight[1] has 2 experts",
            "weight[1][1] = -2",
            "3 experts do not divide into 2 groups",
            "5 replicas do not divide over 2 GPUs",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        assert!(
            rebalance_experts(&[vec![1.0; 8]], 4, 1, 1, 2)
                .unwrap_err()
                .to_string()
                .contains("fewer than the 8 experts")
        );
    }
}
