//! How many of an iteration's tokens go to each expert of a layer.
//!
//! The model: each token picks `groups_per_token` distinct groups, then `k /
//! groups_per_token` distinct experts inside each, so its k experts are distinct and come
//! from at most `groups_per_token` groups (DeepSeek: 8 experts from at most 4 of 8 groups).
//! Distinct picks are made by splitting the candidates into as many *choice subsets* as
//! picks, each of about equal popularity, and picking one candidate from each subset in
//! proportion to popularity. The counts of a whole batch are then sums of independent
//! multinomials, which [`Router::sample`] draws with conditional binomials in O(experts),
//! whatever the number of tokens; [`Router::sample_per_token`] draws token by token from the
//! same model, as the reference the aggregate sampler is tested against.
//!
//! A limit of this model: a token spreads its experts evenly over exactly
//! `groups_per_token` groups (DeepSeek: 2 in each of 4), so one group never gets more than
//! `k / groups_per_token` of a token's experts, where a real router may concentrate more.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution};

/// One layer's routing model, built from its expert probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct Router {
    /// Choice subsets over groups, each member a group.
    group_subsets: Vec<Vec<Member>>,
    /// Per group, choice subsets over its experts, each member an expert.
    expert_subsets: Vec<Vec<Vec<Member>>>,
    experts: usize,
    /// Per group: its choice subset and the chance a token chooses it.
    group_chance: Vec<(usize, f64)>,
    /// Per expert: its choice subset (numbered over all groups, group-major) and its
    /// chance within that subset.
    expert_choice: Vec<(usize, f64)>,
}

/// A routing shape the model cannot express.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct RoutingError(String);

impl Router {
    /// `popularity[e]` for every expert; experts are in `groups` contiguous groups; each
    /// token takes `top_k` experts from at most `groups_per_token` groups.
    pub fn new(
        popularity: &[f64],
        top_k: usize,
        groups: usize,
        groups_per_token: usize,
    ) -> Result<Router, RoutingError> {
        let experts = popularity.len();
        if groups == 0 || !experts.is_multiple_of(groups) {
            return Err(RoutingError(format!(
                "{experts} experts do not divide into {groups} groups"
            )));
        }
        if groups_per_token == 0
            || groups_per_token > groups
            || !top_k.is_multiple_of(groups_per_token)
        {
            return Err(RoutingError(format!(
                "top-{top_k} from {groups_per_token} of {groups} groups needs 1 <= groups per token <= groups, dividing top-k"
            )));
        }
        let group_size = experts / groups;
        let per_group = top_k / groups_per_token;
        if per_group > group_size {
            return Err(RoutingError(format!(
                "{per_group} experts per chosen group, but groups have only {group_size}"
            )));
        }
        let group_mass: Vec<f64> = (0..groups)
            .map(|g| {
                popularity[g * group_size..(g + 1) * group_size]
                    .iter()
                    .sum()
            })
            .collect();
        let group_ids: Vec<usize> = (0..groups).collect();
        let group_subsets = choice_subsets(&group_ids, &group_mass, groups_per_token);
        let expert_subsets: Vec<Vec<Vec<(usize, f64)>>> = (0..groups)
            .map(|g| {
                let ids: Vec<usize> = (g * group_size..(g + 1) * group_size).collect();
                choice_subsets(
                    &ids,
                    &popularity[g * group_size..(g + 1) * group_size],
                    per_group,
                )
            })
            .collect();
        let mut group_chance = vec![(0, 0.0); groups];
        for (k, subset) in group_subsets.iter().enumerate() {
            for &(g, p) in subset {
                group_chance[g] = (k, p);
            }
        }
        let mut expert_choice = vec![(0, 0.0); experts];
        for (g, subsets) in expert_subsets.iter().enumerate() {
            for (j, subset) in subsets.iter().enumerate() {
                for &(e, p) in subset {
                    expert_choice[e] = (g * per_group + j, p);
                }
            }
        }
        Ok(Router {
            group_subsets: group_subsets.iter().map(|s| members(s)).collect(),
            expert_subsets: (expert_subsets.iter())
                .map(|subsets| subsets.iter().map(|s| members(s)).collect())
                .collect(),
            experts,
            group_chance,
            expert_choice,
        })
    }

    /// Per target (a rank, an NVLink domain), the chance that a token reaches none of its
    /// slots, exact under this model: each group subset chooses one group (g with chance
    /// q_g), each of g's expert subsets then picks one expert, and a pick of expert e lands
    /// on a target with the share of e's replicas there (replicas split an expert's tokens
    /// evenly). Slot s holds expert `slot_expert[s]` and lies on target `target[s]`.
    pub fn miss_chances(
        &self,
        slot_expert: &[usize],
        target: &[usize],
        targets: usize,
    ) -> Vec<f64> {
        let mut replicas = vec![0u32; self.experts];
        for &e in slot_expert {
            replicas[e] += 1;
        }
        let per_group = self.expert_subsets.first().map_or(1, Vec::len);
        let subsets = self.group_chance.len() * per_group;
        // hit[t][expert subset]: the chance the subset's pick lands on target t.
        let mut hit = vec![0.0; targets * subsets];
        for (&e, &t) in slot_expert.iter().zip(target) {
            let (subset, p) = self.expert_choice[e];
            hit[t * subsets + subset] += p / f64::from(replicas[e]);
        }
        let mut reach = vec![0.0; self.group_subsets.len()];
        hit.chunks(subsets)
            .map(|row| {
                // Per group subset: the chance its group is chosen and then reaches t.
                reach.fill(0.0);
                for (picks, &(k, q)) in row.chunks(per_group).zip(&self.group_chance) {
                    if picks.iter().any(|&x| x > 0.0) {
                        let missed: f64 = picks.iter().map(|x| 1.0 - x.min(1.0)).product();
                        reach[k] += q * (1.0 - missed);
                    }
                }
                reach.iter().map(|r| 1.0 - r.min(1.0)).product()
            })
            .collect()
    }

    /// Tokens per expert for `tokens` tokens: O(experts), exactly `tokens x top_k` in all.
    pub fn sample(&self, tokens: u64, rng: &mut ChaCha8Rng) -> Vec<u64> {
        let mut per_group = vec![0u64; self.expert_subsets.len()];
        for subset in &self.group_subsets {
            multinomial(tokens, subset, rng, |g, n| per_group[g] += n);
        }
        let mut counts = vec![0u64; self.experts];
        for (g, subsets) in self.expert_subsets.iter().enumerate() {
            for subset in subsets {
                multinomial(per_group[g], subset, rng, |e, n| counts[e] += n);
            }
        }
        counts
    }

    /// The same model drawn token by token (for tests; O(tokens x top_k x experts)).
    pub fn sample_per_token(&self, tokens: u64, rng: &mut ChaCha8Rng) -> Vec<u64> {
        let mut counts = vec![0u64; self.experts];
        for _ in 0..tokens {
            for e in self.pick(rng) {
                counts[e] += 1;
            }
        }
        counts
    }

    /// One token's experts (distinct; when the all-to-all needs to know who goes where).
    pub fn pick(&self, rng: &mut ChaCha8Rng) -> Vec<usize> {
        let mut experts = Vec::new();
        for group_subset in &self.group_subsets {
            let g = categorical(group_subset, rng);
            for subset in &self.expert_subsets[g] {
                experts.push(categorical(subset, rng));
            }
        }
        experts
    }
}

/// Splits candidates into `picks` subsets of about equal mass: heaviest first (ties by
/// index), dealt back and forth (0, 1, .., n-1, n-1, .., 0, ..). Each member carries its
/// probability within its subset.
fn choice_subsets(ids: &[usize], mass: &[f64], picks: usize) -> Vec<Vec<(usize, f64)>> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by(|&a, &b| mass[b].total_cmp(&mass[a]));
    let mut subsets: Vec<Vec<usize>> = vec![Vec::new(); picks];
    for (i, &c) in order.iter().enumerate() {
        let round = i / picks;
        let slot = if round.is_multiple_of(2) {
            i % picks
        } else {
            picks - 1 - i % picks
        };
        subsets[slot].push(c);
    }
    subsets
        .into_iter()
        .map(|members| {
            let total: f64 = members.iter().map(|&c| mass[c]).sum();
            members
                .iter()
                .map(|&c| {
                    // A subset with no mass at all picks uniformly.
                    let p = if total > 0.0 {
                        mass[c] / total
                    } else {
                        1.0 / members.len() as f64
                    };
                    (ids[c], p)
                })
                .collect()
        })
        .collect()
}

/// Draws below this many over a subset are made one by one; the counts have the same
/// distribution either way. n picks cost less than a chain of a binomial per member (each a
/// `pow` and more at small means) up to a few times the subset's size: over DeepSeek's
/// 16-expert subsets the two cost the same between 32 and 64 draws (timed on 4 calibrated
/// layers, 8 to 1,024 tokens; 8 tokens: 40 us by binomials, 13 us by picks).
const PICKED_ONE_BY_ONE_BELOW: u64 = 64;

/// One member of a choice subset: its id (a group or an expert) and probability `p` within
/// the subset; and, as a link of the subset's chain of conditional binomials, `q`, its
/// probability over the mass the members before it left (given they took their share, it
/// gets Bin(left, `q`); the last takes what is left), with `q`'s logarithms. All worked out
/// once per router.
#[derive(Debug, Clone, PartialEq)]
struct Member {
    id: usize,
    p: f64,
    q: f64,
    ln_q: f64,
    ln_1mq: f64,
}

/// A subset's members from (id, probability within the subset), in order.
fn members(subset: &[(usize, f64)]) -> Vec<Member> {
    let mut mass_left = 1.0;
    subset
        .iter()
        .map(|&(id, p)| {
            let q = (p / mass_left).clamp(0.0, 1.0);
            mass_left -= p;
            Member {
                id,
                p,
                q,
                ln_q: q.ln(),
                ln_1mq: (-q).ln_1p(),
            }
        })
        .collect()
}

/// `n` draws over a subset: one by one when few, else as its chain of conditional
/// binomials (so the total is exactly `n`).
fn multinomial(n: u64, subset: &[Member], rng: &mut ChaCha8Rng, mut add: impl FnMut(usize, u64)) {
    if n < PICKED_ONE_BY_ONE_BELOW {
        for _ in 0..n {
            add(categorical(subset, rng), 1);
        }
        return;
    }
    let mut left = n;
    for (i, member) in subset.iter().enumerate() {
        if left == 0 {
            break;
        }
        let take = if i + 1 == subset.len() {
            left
        } else {
            binomial(left, member, rng)
        };
        add(member.id, take);
        left -= take;
    }
}

/// Variance above which a binomial draw uses its normal approximation (rounded, clipped to
/// [0, n]): at n p (1 - p) >= 50 the two differ by well under 1% in every quantile that
/// matters here, and the draw is several times cheaper than an exact one (routing is the
/// largest cost of a serving iteration).
const NORMAL_APPROXIMATION_VARIANCE: f64 = 50.0;

fn binomial(n: u64, member: &Member, rng: &mut ChaCha8Rng) -> u64 {
    let q = member.q;
    let mean = n as f64 * q;
    let variance = mean * (1.0 - q);
    if variance >= NORMAL_APPROXIMATION_VARIANCE {
        let z: f64 = rand_distr::StandardNormal.sample(rng);
        (mean + z * variance.sqrt()).round().clamp(0.0, n as f64) as u64
    } else if mean >= SEARCHED_FROM_MODE_ABOVE && q < 1.0 && n < LN_FACTORIALS {
        binomial_from_mode(n, member, rng.random())
    } else {
        Binomial::new(n, q).map_or(0, |b| b.sample(rng))
    }
}

/// Means from which an exact binomial draw searches outward from the mode. Below, rand's
/// inversion from 0 takes about `mean` steps and is as cheap (rand itself switches to BTPE
/// at 10; searching from a mean of 2 timed no faster on the wide-EP sweep).
const SEARCHED_FROM_MODE_ABOVE: f64 = 10.0;
/// Trial counts up to which ln k! is looked up (a table of 512 KiB, built once). A draw
/// with variance under [`NORMAL_APPROXIMATION_VARIANCE`] and more trials has q or 1 - q
/// below 50 / 2^16 (an expert almost never picked, or almost all a subset's rest): those
/// few go to rand's BTPE.
const LN_FACTORIALS: u64 = 1 << 16;

fn ln_factorial(k: u64) -> f64 {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut sum = 0.0;
        (0..LN_FACTORIALS)
            .map(|k| {
                if k > 1 {
                    sum += (k as f64).ln();
                }
                sum
            })
            .collect()
    });
    table[k as usize]
}

/// Bin(`n`, `member.q`), exact, by inversion of `u` with the outcomes visited from the mode
/// outward (m, m+1, m-1, m+2, ...): any fixed order of the outcomes partitions [0, 1)
/// into intervals of their probabilities, and this order reaches `u`'s in about 1.6
/// standard deviations of steps, each a ratio of neighbouring probabilities. In place of
/// rand's BTPE (rejection, with several logarithms a draw) where the normal approximation
/// does not hold; `n < LN_FACTORIALS`, 0 < `q` < 1.
fn binomial_from_mode(n: u64, member: &Member, u: f64) -> u64 {
    let q = member.q;
    let mode = (((n + 1) as f64 * q) as u64).min(n);
    let p_mode = (ln_factorial(n) - ln_factorial(mode) - ln_factorial(n - mode)
        + mode as f64 * member.ln_q
        + (n - mode) as f64 * member.ln_1mq)
        .exp();
    let odds = q / (1.0 - q);
    let mut u = u - p_mode;
    let (mut up, mut p_up) = (mode, p_mode);
    let (mut down, mut p_down) = (mode, p_mode);
    while u >= 0.0 {
        if up == n && down == 0 {
            // Rounding left a sliver of [0, 1) past every outcome (a chance near 1e-15).
            return mode;
        }
        if up < n {
            p_up *= (n - up) as f64 / (up + 1) as f64 * odds;
            up += 1;
            u -= p_up;
            if u < 0.0 {
                return up;
            }
        }
        if down > 0 {
            p_down *= down as f64 / ((n - down + 1) as f64 * odds);
            down -= 1;
            u -= p_down;
        }
    }
    down
}

fn categorical(subset: &[Member], rng: &mut ChaCha8Rng) -> usize {
    let mut u: f64 = rng.random();
    for m in subset {
        if u < m.p {
            return m.id;
        }
        u -= m.p;
    }
    subset.last().map_or(0, |m| m.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RandomStreams;
    use crate::moe::popularity::Popularity;
    use proptest::prelude::*;

    /// The search from the mode inverts the binomial's distribution function exactly: over
    /// an even grid of N quantiles every outcome is hit as often as its probability says,
    /// to within one quantile (the reference: probabilities by the recurrence from 0).
    #[test]
    fn binomial_from_the_mode_inverts_exactly() {
        let quantiles = 200_000;
        for (n, q) in [
            (40u64, 0.3f64),
            (200, 0.1),
            (120, 0.45),
            (1_000, 0.02),
            (60_000, 0.0005),
        ] {
            let mut want = vec![(1.0 - q).powi(n as i32)];
            for x in 0..n {
                let next = want[x as usize] * (n - x) as f64 / (x + 1) as f64 * q / (1.0 - q);
                want.push(next);
            }
            let member = &members(&[(0, q), (1, 1.0 - q)])[0];
            let mut seen = vec![0u32; n as usize + 1];
            for i in 0..quantiles {
                let u = (i as f64 + 0.5) / quantiles as f64;
                seen[binomial_from_mode(n, member, u) as usize] += 1;
            }
            for (x, (&s, &p)) in seen.iter().zip(&want).enumerate() {
                let share = f64::from(s) / quantiles as f64;
                assert!(
                    (share - p).abs() <= 1.0 / quantiles as f64 + 1e-9,
                    "Bin({n}, {q}) at {x}: {share} vs {p}"
                );
            }
        }
    }

    fn deepseek_like(seed: u64) -> Router {
        let mut rng = RandomStreams::new(seed).stream("popularity");
        let p = Popularity::Dirichlet { concentration: 0.5 }.draw(64, &mut rng);
        Router::new(&p, 8, 8, 4).unwrap()
    }

    /// DeepSeek's 256 experts in 8 groups, top-8 from 4 groups, at EP8 with one group per
    /// rank: every token reaches exactly 4 ranks (picks taken as independent would say 5.1).
    #[test]
    fn group_limited_tokens_reach_exactly_as_many_ranks_as_groups_at_ep8() {
        let router = Router::new(&vec![1.0; 256], 8, 8, 4).unwrap();
        let slots: Vec<usize> = (0..256).collect();
        let rank: Vec<usize> = (0..256).map(|e| e / 32).collect();
        let reached: f64 = router
            .miss_chances(&slots, &rank, 8)
            .iter()
            .map(|m| 1.0 - m)
            .sum();
        assert!((reached - 4.0).abs() < 1e-9, "{reached}");
        let independent = 8.0 * (1.0 - (1.0 - 8.0 / 256.0f64).powi(32));
        assert!((independent - 5.1).abs() < 0.05, "{independent}");
    }

    /// The exact miss chances against token-by-token draws, on skewed popularity with
    /// replicas and a placement that splits groups over ranks.
    #[test]
    fn miss_chances_match_per_token_draws() {
        let mut rng = RandomStreams::new(4).stream("popularity");
        let p = Popularity::Zipf { exponent: 1.0 }.draw(64, &mut rng);
        let router = Router::new(&p, 8, 8, 4).unwrap();
        // 72 slots: the 64 experts and 8 of them twice, dealt over 6 ranks.
        let slots: Vec<usize> = (0..64).chain([0, 9, 18, 27, 36, 45, 54, 63]).collect();
        let rank: Vec<usize> = (0..slots.len()).map(|s| (s * 7) % 6).collect();
        let miss = router.miss_chances(&slots, &rank, 6);
        let mut replicas = vec![Vec::new(); 64];
        for (s, &e) in slots.iter().enumerate() {
            replicas[e].push(rank[s]);
        }
        let tokens = 100_000;
        let mut missed = [0u64; 6];
        let mut rng = RandomStreams::new(5).stream("routing");
        for _ in 0..tokens {
            let mut hit = [false; 6];
            for e in router.pick(&mut rng) {
                let on = &replicas[e];
                hit[on[rng.random_range(0..on.len())]] = true;
            }
            for (m, h) in missed.iter_mut().zip(hit) {
                *m += u64::from(!h);
            }
        }
        for (r, (&m, &n)) in miss.iter().zip(&missed).enumerate() {
            let drawn = n as f64 / tokens as f64;
            assert!((m - drawn).abs() < 0.01, "rank {r}: {m} vs {drawn}");
        }
    }

    #[test]
    fn every_token_gets_top_k_distinct_experts_from_few_groups() {
        // Per token, one expert from each (group subset x expert subset): 4 groups x 2.
        let r = deepseek_like(1);
        assert_eq!(r.group_subsets.len(), 4);
        assert!(r.expert_subsets.iter().all(|s| s.len() == 2));
        let mut rng = RandomStreams::new(2).stream("routing");
        let counts = r.sample_per_token(1, &mut rng);
        assert_eq!(counts.iter().sum::<u64>(), 8);
        assert!(counts.iter().all(|&c| c <= 1), "distinct experts");
        let groups_used = (0..8)
            .filter(|g| counts[g * 8..(g + 1) * 8].iter().any(|&c| c > 0))
            .count();
        assert!(groups_used <= 4);
    }

    /// Per-expert (mean, variance) over `batches` draws of `tokens` tokens.
    fn moments(batches: usize, mut draw: impl FnMut() -> Vec<u64>) -> Vec<(f64, f64)> {
        let draws: Vec<Vec<u64>> = (0..batches).map(|_| draw()).collect();
        (0..draws[0].len())
            .map(|e| {
                let xs: Vec<f64> = draws.iter().map(|d| d[e] as f64).collect();
                let mean = xs.iter().sum::<f64>() / xs.len() as f64;
                let var =
                    xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
                (mean, var)
            })
            .collect()
    }

    /// Experts whose means or variances differ by more than 5 standard errors.
    fn disagreeing(a: &[(f64, f64)], b: &[(f64, f64)], n: f64) -> Vec<usize> {
        (0..a.len())
            .filter(|&e| {
                let ((ma, va), (mb, vb)) = (a[e], b[e]);
                let se_mean = ((va + vb) / n).sqrt().max(1e-9);
                // A sample variance's variance is ~ 2 var^2 / n for near-normal counts and
                // ~ var / n for rare ones (mostly 0, sometimes 1); two samples, twice that.
                let v = (va + vb) / 2.0;
                let se_var = (2.0 * (2.0 * v * v + v) / n).sqrt().max(1e-9);
                (ma - mb).abs() >= 5.0 * se_mean || (va - vb).abs() >= 5.0 * se_var
            })
            .collect()
    }

    /// The aggregate sampler against the per-token one: per-expert means and variances over
    /// many batches agree within statistical tolerance.
    #[test]
    fn aggregate_sampling_matches_per_token_sampling() {
        let r = deepseek_like(3);
        let (batches, tokens) = (3000, 48);
        let mut agg_rng = RandomStreams::new(4).stream("aggregate");
        let mut tok_rng = RandomStreams::new(4).stream("per-token");
        let agg = moments(batches, || r.sample(tokens, &mut agg_rng));
        let tok = moments(batches, || r.sample_per_token(tokens, &mut tok_rng));
        assert_eq!(disagreeing(&agg, &tok, batches as f64), Vec::<usize>::new());
    }

    /// The check has power: a sampler that ignores that a token's experts are distinct
    /// (one multinomial of tokens x top-k over all experts) fails it.
    #[test]
    fn the_check_catches_a_sampler_that_ignores_distinct_choices() {
        let r = deepseek_like(3);
        let (batches, tokens) = (3000, 48);
        // Each expert's share of all picks, as the per-token model makes them.
        let mut share = vec![0.0; 64];
        for g in &r.group_subsets {
            for group in g {
                for subset in &r.expert_subsets[group.id] {
                    for expert in subset {
                        share[expert.id] += group.p * expert.p / 8.0;
                    }
                }
            }
        }
        let naive: Vec<(usize, f64)> = (0..64).map(|e| (e, share[e])).collect();
        let naive = members(&naive);
        let mut naive_rng = RandomStreams::new(4).stream("naive");
        let mut tok_rng = RandomStreams::new(4).stream("per-token");
        let wrong = moments(batches, || {
            let mut c = vec![0u64; 64];
            multinomial(tokens * 8, &naive, &mut naive_rng, |e, n| c[e] += n);
            c
        });
        let tok = moments(batches, || r.sample_per_token(tokens, &mut tok_rng));
        assert!(!disagreeing(&wrong, &tok, batches as f64).is_empty());
    }

    #[test]
    fn shapes_the_model_cannot_take() {
        let p = vec![1.0 / 12.0; 12];
        assert!(
            Router::new(&p, 8, 5, 1).is_err(),
            "groups must divide experts"
        );
        assert!(
            Router::new(&p, 6, 4, 4).is_err(),
            "groups per token must divide top-k"
        );
        assert!(
            Router::new(&p, 8, 4, 2).is_err(),
            "4 picks from groups of 3"
        );
        assert!(Router::new(&p, 2, 1, 1).is_ok());
    }

    proptest! {
        /// Tokens per expert sum to tokens x top-k, and no expert gets more than every token.
        #[test]
        fn counts_are_conserved(seed in 0u64..1000, tokens in 0u64..5000, skew in 0.05f64..5.0) {
            let mut rng = RandomStreams::new(seed).stream("popularity");
            let p = Popularity::Dirichlet { concentration: skew }.draw(256, &mut rng);
            let r = Router::new(&p, 8, 8, 4).unwrap();
            let counts = r.sample(tokens, &mut rng);
            prop_assert_eq!(counts.iter().sum::<u64>(), tokens * 8);
            prop_assert!(counts.iter().all(|&c| c <= tokens));
        }
    }
}
