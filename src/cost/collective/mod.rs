//! Communication costs of collectives over the topology: the MoE all-to-all (dispatch and
//! combine) under each kernel algorithm, KV-cache transfer, and ring all-reduce /
//! all-gather / reduce-scatter. A collective becomes *legs* (bytes from one GPU to
//! another), priced either by the general flow solver (`network::transfer`) or by the fast
//! path: the busiest port's bytes over its achieved bandwidth, plus the collective's fixed
//! latency. Ports are each GPU's NVLink (all its links together), its host link to its NIC,
//! and the NIC's network link, each way.

use super::network::routes::Router;
use super::network::transfer::{self, Transfer};
use super::network::{LinkEfficiency, resources, route_latency_s};
use crate::topology::{A2aAlgorithm, LinkKind, NodeKind, Topology};
use petgraph::graph::NodeIndex;
use petgraph::unionfind::UnionFind;
use petgraph::visit::EdgeRef;
use std::collections::BTreeMap;

/// The GPUs of an expert-parallel group and where each sits.
#[derive(Debug, Clone)]
pub struct EpGroup<'a> {
    pub topo: &'a Topology,
    pub ranks: Vec<NodeIndex>,
    /// Per rank: its NVLink domain (GPUs joined by NVLink, through switch chips), by its
    /// position among the group's domains (0..[`Self::domains`], in topology order).
    domain: Vec<usize>,
    /// Per rank: its position among the group's ranks in its domain.
    local: Vec<usize>,
    /// Per domain: the group's ranks in it, in rank order.
    members: Vec<Vec<usize>>,
    /// Node index -> rank, for the group's GPUs.
    rank_of: Vec<Option<usize>>,
    /// Per rank: NVLink bandwidth (all links), bytes per second.
    nvlink_bps: Vec<f64>,
    /// Per rank: the GPU-NIC link and the NIC's network bandwidth (bytes/s), if it has one.
    nic: Vec<Option<(f64, f64)>>,
    /// Per rank: its NIC's leaf switch (an index into `leaf_bps`), when that leaf reaches
    /// the rest of the fabric through uplinks (leaf-spine, rails); `None` on a single
    /// non-blocking switch.
    leaf: Vec<Option<usize>>,
    /// Per leaf: its uplink bandwidth, bytes per second each way.
    leaf_bps: Vec<f64>,
    /// Per ordered rank pair (row-major): the latency of its route, seconds, as the flow
    /// solver adds it (links' `latency_ns`, the mean over equal-cost paths); empty when
    /// every link's latency is 0 (all shipped topologies: their measured floors hold it).
    pair_latency_s: Vec<f64>,
    /// The largest of them (0 when empty).
    worst_latency_s: f64,
}

impl<'a> EpGroup<'a> {
    pub fn new(topo: &'a Topology, ranks: Vec<NodeIndex>) -> Self {
        let mut uf = UnionFind::<usize>::new(topo.graph.node_count());
        for e in topo.graph.edge_references() {
            if e.weight().kind == LinkKind::Nvlink {
                uf.union(e.source().index(), e.target().index());
            }
        }
        let root: Vec<usize> = ranks.iter().map(|g| uf.find(g.index())).collect();
        let mut by_root: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut local = Vec::with_capacity(ranks.len());
        for (r, &d) in root.iter().enumerate() {
            let m = by_root.entry(d).or_default();
            local.push(m.len());
            m.push(r);
        }
        let position: BTreeMap<usize, usize> =
            by_root.keys().enumerate().map(|(i, &d)| (d, i)).collect();
        let domain = root.iter().map(|d| position[d]).collect();
        let members = by_root.into_values().collect();
        let mut rank_of = vec![None; topo.graph.node_count()];
        for (r, g) in ranks.iter().enumerate() {
            rank_of[g.index()] = Some(r);
        }
        let nvlink_bps = ranks.iter().map(|&g| topo.nvlink_gb_s(g) * 1e9).collect();
        let nic = ranks.iter().map(|&g| nic_of(topo, g)).collect();
        let mut leaves: BTreeMap<NodeIndex, usize> = BTreeMap::new();
        let mut leaf_bps = Vec::new();
        let leaf = ranks
            .iter()
            .map(|&g| {
                let (switch, uplink) = leaf_of(topo, g)?;
                Some(*leaves.entry(switch).or_insert_with(|| {
                    leaf_bps.push(uplink);
                    leaf_bps.len() - 1
                }))
            })
            .collect();
        let pair_latency_s = pair_latencies(topo, &ranks);
        let worst_latency_s = pair_latency_s.iter().copied().fold(0.0, f64::max);
        EpGroup {
            topo,
            ranks,
            domain,
            local,
            members,
            rank_of,
            nvlink_bps,
            nic,
            leaf,
            leaf_bps,
            pair_latency_s,
            worst_latency_s,
        }
    }

    /// The latency of the route from rank `a` to rank `b`, seconds.
    fn latency_s(&self, a: usize, b: usize) -> f64 {
        self.pair_latency_s
            .get(a * self.size() + b)
            .copied()
            .unwrap_or(0.0)
    }

    /// Leaves the group's ranks sit under (see [`Self::leaf`]).
    fn leaves(&self) -> usize {
        self.leaf_bps.len()
    }

    pub fn size(&self) -> usize {
        self.ranks.len()
    }

    /// NVLink domains the group spans.
    pub fn domains(&self) -> usize {
        self.members.len()
    }

    /// Whether two of the group's GPUs share an NVLink domain.
    pub fn same_domain(&self, a: NodeIndex, b: NodeIndex) -> bool {
        match (self.rank_of[a.index()], self.rank_of[b.index()]) {
            (Some(x), Some(y)) => self.domain[x] == self.domain[y],
            _ => false,
        }
    }

    /// Per rank: its domain's position among the group's domains (0..[`Self::domains`]).
    pub fn domain_ordinals(&self) -> Vec<usize> {
        self.domain.clone()
    }

    /// The rank in `domain` that relays for rank `src` (same local index, wrapping).
    fn relay(&self, src: usize, domain: usize) -> usize {
        let m = &self.members[domain];
        m[self.local[src] % m.len()]
    }
}

/// [`EpGroup::pair_latency_s`]: one route per ordered pair, and none when no link has a
/// latency.
fn pair_latencies(topo: &Topology, ranks: &[NodeIndex]) -> Vec<f64> {
    if topo.graph.edge_weights().all(|l| l.latency_ns == 0.0) {
        return Vec::new();
    }
    let mut router = Router::new(topo);
    let mut out = Vec::with_capacity(ranks.len() * ranks.len());
    for &a in ranks {
        for &b in ranks {
            // No route: the leg fails where it is priced, which says why.
            let route = router.route(a, b).unwrap_or_default();
            out.push(route_latency_s(topo, &route));
        }
    }
    out
}

/// A GPU's link to its NIC and the NIC's network bandwidth, in bytes per second.
fn nic_of(topo: &Topology, gpu: NodeIndex) -> Option<(f64, f64)> {
    let (nic, host) = topo
        .links_of(gpu)
        .find(|&(n, _)| topo.graph[n].kind == NodeKind::Nic)?;
    let network: f64 = topo
        .links_of(nic)
        .filter(|(_, l)| l.kind == LinkKind::Network)
        .map(|(_, l)| l.bandwidth_gb_s())
        .sum();
    Some((host.bandwidth_gb_s() * 1e9, network * 1e9))
}

/// The leaf switch a GPU's NIC plugs into and the leaf's uplink bandwidth, bytes per second;
/// `None` without a NIC or when its switch has no uplink.
fn leaf_of(topo: &Topology, gpu: NodeIndex) -> Option<(NodeIndex, f64)> {
    let (nic, _) = topo
        .links_of(gpu)
        .find(|&(n, _)| topo.graph[n].kind == NodeKind::Nic)?;
    let (leaf, _) = topo
        .links_of(nic)
        .find(|&(n, _)| topo.graph[n].kind == NodeKind::Switch)?;
    let (_, uplink_gb_s) = topo.leaf_gb_s(leaf)?;
    Some((leaf, uplink_gb_s * 1e9))
}

/// For each source rank, each token's destination ranks, one entry per expert (a rank
/// holding two of the token's experts appears twice).
pub type Destinations = Vec<Vec<Vec<usize>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Tokens go out to their experts' ranks.
    Dispatch,
    /// Expert outputs come back (the reverse legs).
    Combine,
}

/// Bytes moved from GPU to GPU, summed per ordered pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Legs(BTreeMap<(NodeIndex, NodeIndex), f64>);

impl Legs {
    fn add(&mut self, from: NodeIndex, to: NodeIndex, bytes: f64) {
        if from != to && bytes > 0.0 {
            *self.0.entry((from, to)).or_insert(0.0) += bytes;
        }
    }

    fn reversed(&self) -> Legs {
        Legs(self.0.iter().map(|(&(a, b), &x)| ((b, a), x)).collect())
    }

    pub fn transfers(&self) -> Vec<Transfer> {
        self.0
            .iter()
            .map(|(&(src, dst), &bytes)| Transfer { src, dst, bytes })
            .collect()
    }

    /// Bytes leaving each of `gpus`.
    pub fn sent_by(&self, gpus: &[NodeIndex]) -> Vec<f64> {
        gpus.iter()
            .map(|g| {
                self.0
                    .iter()
                    .filter(|((a, _), _)| a == g)
                    .map(|(_, b)| b)
                    .sum()
            })
            .collect()
    }
}

/// The legs of one all-to-all phase.
pub fn all_to_all_legs(
    group: &EpGroup,
    destinations: &Destinations,
    algorithm: A2aAlgorithm,
    bytes_per_token: f64,
    phase: Phase,
) -> Legs {
    let mut legs = Legs::default();
    let r = &group.ranks;
    for (src, tokens) in destinations.iter().enumerate() {
        for token in tokens {
            match algorithm {
                A2aAlgorithm::LowLatency => {
                    for &dst in token {
                        legs.add(r[src], r[dst], bytes_per_token);
                    }
                }
                A2aAlgorithm::Direct => {
                    for dst in distinct(token) {
                        legs.add(r[src], r[dst], bytes_per_token);
                    }
                }
                A2aAlgorithm::Hierarchical => {
                    // Once per destination domain over the network, to the relay of the
                    // same local index, which forwards over NVLink once per GPU.
                    let mut by_domain: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
                    for dst in distinct(token) {
                        by_domain.entry(group.domain[dst]).or_default().push(dst);
                    }
                    for (domain, dsts) in by_domain {
                        let relay = if domain == group.domain[src] {
                            src
                        } else {
                            group.relay(src, domain)
                        };
                        legs.add(r[src], r[relay], bytes_per_token);
                        for dst in dsts {
                            legs.add(r[relay], r[dst], bytes_per_token);
                        }
                    }
                }
            }
        }
    }
    match phase {
        Phase::Dispatch => legs,
        Phase::Combine => legs.reversed(),
    }
}

fn distinct(token: &[usize]) -> Vec<usize> {
    let mut d = token.to_vec();
    d.sort_unstable();
    d.dedup();
    d
}

/// Per-port byte totals, and the fast-path time: the busiest port's bytes over its achieved
/// bandwidth, plus the slowest leg's route latency (as the flow solver adds it). Same-domain
/// legs use NVLink ports; others leave through the source GPU's host link and NIC and enter
/// through the destination's. O(legs).
pub fn fast_path_seconds(
    group: &EpGroup,
    legs: &Legs,
    efficiency: LinkEfficiency,
) -> Result<f64, String> {
    let mut bytes = vec![PortBytes::default(); group.size()];
    let mut leaf_bytes = vec![LeafBytes::default(); group.leaves()];
    let mut latency_s = 0.0f64;
    for (&(a, b), &x) in &legs.0 {
        let (Some(ra), Some(rb)) = (group.rank_of[a.index()], group.rank_of[b.index()]) else {
            return Err("a leg leaves the EP group".into());
        };
        latency_s = latency_s.max(group.latency_s(ra, rb));
        if group.domain[ra] == group.domain[rb] {
            bytes[ra].nvlink_out += x;
            bytes[rb].nvlink_in += x;
        } else {
            for r in [ra, rb] {
                if group.nic[r].is_none() {
                    return Err(format!(
                        "{} has no NIC to reach another NVLink domain",
                        group.topo.graph[group.ranks[r]].id
                    ));
                }
            }
            bytes[ra].network_out += x;
            bytes[rb].network_in += x;
            leaf_bytes_between(group, &mut leaf_bytes, ra, rb, x);
        }
    }
    Ok(latency_s + busiest_port_seconds(group, &bytes, &leaf_bytes, efficiency))
}

/// Bytes through one rank's ports, each way. Network bytes cross both the GPU's host link
/// and its NIC, so the slower of the two sets their pace.
#[derive(Debug, Clone, Copy, Default)]
struct PortBytes {
    nvlink_out: f64,
    nvlink_in: f64,
    network_out: f64,
    network_in: f64,
}

/// Bytes through one leaf's uplink to the spine, each way.
#[derive(Debug, Clone, Copy, Default)]
struct LeafBytes {
    out: f64,
    into: f64,
}

/// Counts `x` network bytes from rank `a` to rank `b` on their leaves' uplinks, when they
/// sit under different leaves.
fn leaf_bytes_between(group: &EpGroup, leaf: &mut [LeafBytes], a: usize, b: usize, x: f64) {
    if let (Some(la), Some(lb)) = (group.leaf[a], group.leaf[b])
        && la != lb
    {
        leaf[la].out += x;
        leaf[lb].into += x;
    }
}

/// The time of the busiest port: its bytes over its achieved bandwidth. Leaf uplinks are
/// ports too: an oversubscribed fabric makes them the busiest.
fn busiest_port_seconds(
    group: &EpGroup,
    bytes: &[PortBytes],
    leaf_bytes: &[LeafBytes],
    efficiency: LinkEfficiency,
) -> f64 {
    let mut worst = 0.0f64;
    for (l, b) in leaf_bytes.iter().enumerate() {
        let uplink = group.leaf_bps[l] * efficiency.network;
        worst = worst.max(b.out / uplink).max(b.into / uplink);
    }
    for (r, b) in bytes.iter().enumerate() {
        let nvlink = group.nvlink_bps[r] * efficiency.nvlink;
        worst = worst.max(b.nvlink_out / nvlink).max(b.nvlink_in / nvlink);
        if let Some((host, net)) = group.nic[r] {
            let network = host.min(net * efficiency.network);
            worst = worst
                .max(b.network_out / network)
                .max(b.network_in / network);
        }
    }
    worst
}

/// The fast path without per-token legs, for the serving loop: expected per-port bytes
/// when every rank sends `tokens_per_rank` tokens and a token picks expert e with
/// probability `picks[e]` (e.g. this iteration's counts / tokens), experts placed on ranks
/// by `expert_rank`. A token reaches rank r with probability
/// 1 - prod over r's experts of (1 - `picks[e]`), treating picks as independent. O(experts +
/// ranks x domains) instead of O(tokens x top-k).
/// What the ranks of an all-to-all send, in aggregate.
#[derive(Debug, Clone, Copy)]
pub struct ExpectedTraffic<'a> {
    /// Per expert: the chance a token picks it (summing to top-k).
    pub picks: &'a [f64],
    /// Per expert: the rank holding it.
    pub expert_rank: &'a [usize],
    pub tokens_per_rank: f64,
    pub bytes_per_token: f64,
    /// The chance a token reaches none of a rank's experts, per rank, and none of a
    /// domain's, per domain (by [`EpGroup::domain_ordinals`]), from a routing model that
    /// knows how a token's experts cluster (group-limited routing puts DeepSeek's 8 on at
    /// most 4 groups). Without it, a token's picks are taken as independent.
    pub miss: Option<Misses<'a>>,
}

/// See [`ExpectedTraffic::miss`].
#[derive(Debug, Clone, Copy)]
pub struct Misses<'a> {
    pub rank: &'a [f64],
    pub domain: &'a [f64],
}

pub fn expected_fast_path_seconds(
    group: &EpGroup,
    traffic: ExpectedTraffic,
    algorithm: A2aAlgorithm,
    phase: Phase,
    efficiency: LinkEfficiency,
) -> f64 {
    let ExpectedTraffic {
        picks,
        expert_rank,
        tokens_per_rank,
        bytes_per_token,
        miss: given,
    } = traffic;
    let n = group.size();
    // Per destination rank: expected copies per token (low-latency) and chance of a hit.
    let mut copies = vec![0.0; n];
    for (e, &p) in picks.iter().enumerate() {
        copies[expert_rank[e]] += p;
    }
    let mut miss = vec![1.0; n];
    // Per domain (by position): the chance a token reaches none of its ranks.
    let mut domain_miss = vec![1.0; group.domains()];
    match given {
        Some(g) => {
            miss.copy_from_slice(g.rank);
            domain_miss.copy_from_slice(g.domain);
        }
        None => {
            for (e, &p) in picks.iter().enumerate() {
                miss[expert_rank[e]] *= 1.0 - p.clamp(0.0, 1.0);
            }
            for (r, m) in miss.iter().enumerate() {
                domain_miss[group.domain[r]] *= m;
            }
        }
    }
    let hit: Vec<f64> = miss.iter().map(|m| 1.0 - m).collect();
    let per_token = |r: usize| match algorithm {
        A2aAlgorithm::LowLatency => copies[r],
        A2aAlgorithm::Direct | A2aAlgorithm::Hierarchical => hit[r],
    };
    let mut bytes = vec![PortBytes::default(); n];
    let t = tokens_per_rank * bytes_per_token;
    // Every rank sends t x per_token(d) to every other rank d: sums per domain replace the
    // double loop over (source, destination).
    let mut domain_sum = vec![(0.0, 0usize); group.domains()];
    for r in 0..n {
        let e = &mut domain_sum[group.domain[r]];
        e.0 += per_token(r);
        e.1 += 1;
    }
    let total: f64 = (0..n).map(per_token).sum();
    let direct = algorithm != A2aAlgorithm::Hierarchical;
    let mut leaf_bytes = vec![LeafBytes::default(); group.leaves()];
    if direct && group.leaves() > 0 {
        direct_leaf_bytes(group, &per_token, &domain_sum, total, t, &mut leaf_bytes);
    }
    for r in 0..n {
        let (local_sum, local_ranks) = domain_sum[group.domain[r]];
        let own = per_token(r);
        bytes[r].nvlink_out += t * (local_sum - own);
        bytes[r].nvlink_in += t * own * (local_ranks - 1) as f64;
        if direct {
            bytes[r].network_out += t * (total - local_sum);
            bytes[r].network_in += t * own * (n - local_ranks) as f64;
        }
    }
    if algorithm == A2aAlgorithm::Hierarchical {
        // Once per other domain to the relay, which forwards to the GPUs hit there. Each
        // domain's members receive once per source relayed into it, except through
        // themselves: counted per relay, so the cost is O(ranks x domains).
        let mut hit_sum = vec![0.0; group.domains()];
        for (&domain, &h) in group.domain.iter().zip(&hit) {
            hit_sum[domain] += h;
        }
        let mut relayed = vec![0usize; n];
        let mut into_domain = vec![0usize; group.domains()];
        for s in 0..n {
            for (domain, &m) in domain_miss.iter().enumerate() {
                if domain == group.domain[s] {
                    continue;
                }
                let relay = group.relay(s, domain);
                bytes[s].network_out += t * (1.0 - m);
                bytes[relay].network_in += t * (1.0 - m);
                leaf_bytes_between(group, &mut leaf_bytes, s, relay, t * (1.0 - m));
                bytes[relay].nvlink_out += t * (hit_sum[domain] - hit[relay]);
                relayed[relay] += 1;
                into_domain[domain] += 1;
            }
        }
        for d in 0..n {
            let times = into_domain[group.domain[d]] - relayed[d];
            bytes[d].nvlink_in += t * hit[d] * times as f64;
        }
    }
    if phase == Phase::Combine {
        for b in &mut bytes {
            *b = PortBytes {
                nvlink_out: b.nvlink_in,
                nvlink_in: b.nvlink_out,
                network_out: b.network_in,
                network_in: b.network_out,
            };
        }
        for l in &mut leaf_bytes {
            *l = LeafBytes {
                out: l.into,
                into: l.out,
            };
        }
    }
    // Every pair exchanges bytes at serving sizes: the group's slowest route, as the legs'
    // fast path takes the slowest leg's.
    let latency_s = if t > 0.0 { group.worst_latency_s } else { 0.0 };
    latency_s + busiest_port_seconds(group, &bytes, &leaf_bytes, efficiency)
}

/// Leaf uplink bytes of a direct all-to-all: each rank sends `t x per_token(d)` to every
/// rank `d` outside its NVLink domain; the part to ranks outside its leaf too climbs to
/// the spine. Sums per leaf and per (domain, leaf) keep it O(ranks).
fn direct_leaf_bytes(
    group: &EpGroup,
    per_token: &dyn Fn(usize) -> f64,
    domain_sum: &[(f64, usize)],
    total: f64,
    t: f64,
    leaf_bytes: &mut [LeafBytes],
) {
    let n = group.size();
    let mut leaf_sum = vec![(0.0, 0usize); group.leaves()];
    let mut both: BTreeMap<(usize, usize), (f64, usize)> = BTreeMap::new();
    for r in 0..n {
        if let Some(l) = group.leaf[r] {
            leaf_sum[l].0 += per_token(r);
            leaf_sum[l].1 += 1;
            let b = both.entry((group.domain[r], l)).or_insert((0.0, 0));
            b.0 += per_token(r);
            b.1 += 1;
        }
    }
    for r in 0..n {
        let Some(l) = group.leaf[r] else { continue };
        let (local_sum, local_ranks) = domain_sum[group.domain[r]];
        let (shared_sum, shared_ranks) = both[&(group.domain[r], l)];
        leaf_bytes[l].out += t * (total - local_sum - leaf_sum[l].0 + shared_sum);
        let outside = n + shared_ranks - local_ranks - leaf_sum[l].1;
        leaf_bytes[l].into += t * per_token(r) * outside as f64;
    }
}

/// The general solver's time: every leg a flow over its ECMP route, max-min fair, run to
/// completion; the last one's arrival.
pub fn solver_seconds(
    group: &EpGroup,
    legs: &Legs,
    efficiency: LinkEfficiency,
) -> Result<f64, String> {
    let res = resources(group.topo, efficiency);
    let done = transfer::simulate(group.topo, &res, &legs.transfers())?;
    Ok(done.into_iter().fold(0.0, f64::max))
}

/// Ring all-reduce over `ranks` of `bytes` per rank: each rank sends 2 (n - 1) / n of it to
/// its ring neighbour. (All-gather and reduce-scatter send (n - 1) / n.)
pub fn ring_legs(ranks: &[NodeIndex], bytes: f64, collective: Ring) -> Legs {
    let n = ranks.len();
    let mut legs = Legs::default();
    if n < 2 {
        return legs;
    }
    let factor = match collective {
        Ring::AllReduce => 2.0 * (n - 1) as f64 / n as f64,
        Ring::AllGather | Ring::ReduceScatter => (n - 1) as f64 / n as f64,
    };
    for i in 0..n {
        legs.add(ranks[i], ranks[(i + 1) % n], bytes * factor);
    }
    legs
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ring {
    AllReduce,
    AllGather,
    ReduceScatter,
}

/// A request's KV cache from prefill GPUs to decode GPUs: each prefill GPU holds an equal
/// share and sends it to the decode GPU of the same position (wrapping).
pub fn kv_transfer_legs(prefill: &[NodeIndex], decode: &[NodeIndex], bytes: f64) -> Legs {
    let mut legs = Legs::default();
    if prefill.is_empty() || decode.is_empty() {
        return legs;
    }
    let share = bytes / prefill.len() as f64;
    for (i, &p) in prefill.iter().enumerate() {
        legs.add(p, decode[i % decode.len()], share);
    }
    legs
}

#[cfg(test)]
mod tests;
