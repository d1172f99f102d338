//! Routing draws kept and replayed. Drawing and pricing an iteration's routing is most of
//! what a serving iteration costs to simulate (about 250 binomials per sampled layer), while
//! a closed-loop decode instance runs thousands of iterations at a handful of batch sizes.
//! So a priced draw is kept by its token count and replayed: each iteration at a count
//! whose draws are all kept replays one at random, except that with chance
//! [`FRESH_SHARE`] it draws afresh and the new draw replaces a random kept one. A count's
//! draws are all kept at [`KEPT_DRAWS`], or earlier (from [`MIN_KEPT_DRAWS`]) once their
//! mean price is sure to [`MEAN_PRICE_PRECISION`]: draws of thousands of tokens (prefill
//! chunks, wide decode batches) barely differ.
//!
//! Token counts are put on a grid first, so that neighbouring batch sizes share draws:
//! exact below 2^[`GRID_BITS`], above it [`GRID_BITS`] significant bits (grid points at most
//! 1/64 apart). A count between two grid points is drawn at one of them, the upper with
//! chance proportional to its nearness (stochastic rounding): the mean price of an
//! iteration is then that of its true count up to the price's curvature over 1/64 of it.
//!
//! What this costs in accuracy: an iteration's routing is a draw of the same model, but
//! draws repeat, so a run's time average of the routed price rests on fewer independent
//! draws: one in 1/[`FRESH_SHARE`] iterations plus up to [`KEPT_DRAWS`] per grid point, per
//! layer (~95 over the ~2,500 decode iterations of a 25 s window, so the mean's standard
//! error is 1/10 of one draw's spread, and the 4 sampled layers' average 1/20; fewer where
//! draws barely differ, their mean sure to [`MEAN_PRICE_PRECISION`] of itself). Measured:
//! over 3,000 iterations the mean rank imbalance is within 2% of fresh draws' (the pricer's
//! test `replayed_draws_load_the_ranks_as_fresh_draws_do_on_average`); across the wide-EP
//! sweep every frontier value at 100 tokens/s per user moved by 1.2% or less, seeds 3%
//! apart; filling grid points early (with online EPLB replaying too) moved every (EP, EPLB)
//! seed mean at 100, 75 and 60 tokens/s per user by 0.3% or less; and drawing afresh one
//! iteration in 32 instead of 16, with the warm-up's first half fast-forwarded
//! ([`Draws::grid_tokens`]), kept all 432 points' output within their 95% intervals of
//! before (the largest move 0.47%).

use super::LayerDraw;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::rc::Rc;

/// Draws kept per grid point at most: the iterations at a count replay one of these.
const KEPT_DRAWS: usize = 16;
/// Draws kept per grid point at least: the fewest whose spread says anything about the
/// next (three degrees of freedom for the standard error below).
const MIN_KEPT_DRAWS: usize = 4;
/// A grid point whose kept draws' mean price has a standard error within this share of
/// the mean is full before [`KEPT_DRAWS`]: at large counts draws barely differ (a prefill
/// chunk of thousands of tokens), and drawing more of them would buy no accuracy. 0.2% is
/// below the runs' own resolution: the wide-EP points' throughput intervals are 0.3-1%, and
/// with EPLB their seeds up to 1.6% apart.
const MEAN_PRICE_PRECISION: f64 = 0.002;
/// Chance that an iteration at a full grid point draws afresh (and replaces a kept draw):
/// enough fresh draws that their mean's error stays well inside a run's interval (above).
const FRESH_SHARE: f64 = 1.0 / 32.0;
/// Significant bits of a grid point (counts below 2^GRID_BITS are their own).
const GRID_BITS: u32 = 7;
/// Significant bits of a grid point while fast-forwarding (see [`Draws::grid_tokens`]): a
/// ramp-up then meets 8 grid points per doubling of its batch instead of 128, and its
/// iterations are priced at counts within 1/8 of their own (the warm-up is not measured).
const FAST_FORWARD_GRID_BITS: u32 = 3;

/// Priced draws by sampled layer and the token count they were drawn at.
#[derive(Default)]
pub(super) struct Draws {
    kept: BTreeMap<(usize, u64), Kept>,
}

/// The draws kept at one grid point.
#[derive(Default)]
struct Kept {
    draws: Vec<Rc<LayerDraw>>,
    /// Whether iterations here replay (and only now and then draw afresh).
    full: bool,
}

impl Kept {
    /// Full at [`KEPT_DRAWS`], or from [`MIN_KEPT_DRAWS`] once the mean price is
    /// [`MEAN_PRICE_PRECISION`] sure.
    fn is_full(&self) -> bool {
        let n = self.draws.len();
        if n >= KEPT_DRAWS {
            return true;
        }
        if n < MIN_KEPT_DRAWS {
            return false;
        }
        let prices = self.draws.iter().map(|d| d.price_s());
        let mean = prices.clone().sum::<f64>() / n as f64;
        let var = prices.map(|p| (p - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        (var / n as f64).sqrt() <= MEAN_PRICE_PRECISION * mean
    }
}

/// What an iteration does with the kept draws.
pub(super) enum Turn {
    /// Replay the kept draw in this position.
    Replay(usize, Rc<LayerDraw>),
    /// Draw afresh and keep it, in this position of the grid point's draws (one past the
    /// end: added).
    Fresh(usize),
}

impl Draws {
    /// The grid point `tokens` is drawn at (stochastic rounding between its neighbours):
    /// of [`GRID_BITS`] significant bits, or [`FAST_FORWARD_GRID_BITS`] when
    /// `fast_forward` (points 1/15 to 1/8 apart, themselves points of the fine grid).
    pub(super) fn grid_tokens(tokens: u64, fast_forward: bool, rng: &mut ChaCha8Rng) -> u64 {
        let bits = if fast_forward {
            FAST_FORWARD_GRID_BITS
        } else {
            GRID_BITS
        };
        if tokens < 1 << bits {
            return tokens;
        }
        let shift = (u64::BITS - tokens.leading_zeros()) - bits;
        let step = 1u64 << shift;
        let below = tokens >> shift << shift;
        let up: f64 = rng.random();
        if up * (step as f64) < (tokens - below) as f64 {
            below + step
        } else {
            below
        }
    }

    /// Whether to replay a kept draw of `layer` at `tokens` (a grid point), and which.
    /// When `fast_forward`, any kept draw is replayed: a grid point needs one draw.
    pub(super) fn turn(
        &self,
        layer: usize,
        tokens: u64,
        fast_forward: bool,
        rng: &mut ChaCha8Rng,
    ) -> Turn {
        let kept = self.kept.get(&(layer, tokens));
        if fast_forward && let Some(kept) = kept.filter(|k| !k.draws.is_empty()) {
            let n = kept.draws.len();
            let at = rng.random_range(0..n);
            return Turn::Replay(at, Rc::clone(&kept.draws[at]));
        }
        let Some(kept) = kept.filter(|k| k.full) else {
            return Turn::Fresh(kept.map_or(0, |k| k.draws.len()));
        };
        let kept = &kept.draws;
        // One uniform decides both: below FRESH_SHARE, a fresh draw replacing kept draw
        // u / FRESH_SHARE x n; above, replay of the kept draw at its rescaled place.
        let u: f64 = rng.random();
        let n = kept.len();
        let at = |share: f64| ((share * n as f64) as usize).min(n - 1);
        if u < FRESH_SHARE {
            Turn::Fresh(at(u / FRESH_SHARE))
        } else {
            let at = at((u - FRESH_SHARE) / (1.0 - FRESH_SHARE));
            Turn::Replay(at, Rc::clone(&kept[at]))
        }
    }

    /// Keeps a draw of `layer` at `tokens` in position `at` (from [`Turn`]: a fresh draw,
    /// or a replayed one priced again).
    pub(super) fn keep(&mut self, layer: usize, tokens: u64, at: usize, draw: Rc<LayerDraw>) {
        let kept = self.kept.entry((layer, tokens)).or_default();
        if at < kept.draws.len() {
            kept.draws[at] = draw;
        } else {
            kept.draws.push(draw);
        }
        kept.full = kept.full || kept.is_full();
    }

    /// The draws kept for `layer` at `tokens`.
    #[cfg(test)]
    pub(super) fn kept_draws(&self, layer: usize, tokens: u64) -> &[Rc<LayerDraw>] {
        self.kept.get(&(layer, tokens)).map_or(&[], |k| &k.draws)
    }

    /// Forgets every draw: the routers changed.
    pub(super) fn clear(&mut self) {
        self.kept.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RandomStreams;

    /// The mean grid point of 40,000 roundings of `tokens`, each one of `neighbours` and a
    /// point of the fine grid.
    fn mean_rounding(
        tokens: u64,
        fast_forward: bool,
        neighbours: [u64; 2],
        rng: &mut ChaCha8Rng,
    ) -> f64 {
        let n = 40_000;
        let mut sum = 0u64;
        for _ in 0..n {
            let g = Draws::grid_tokens(tokens, fast_forward, rng);
            assert!(neighbours.contains(&g), "{g}");
            assert_eq!(Draws::grid_tokens(g, false, rng), g, "a fine point");
            sum += g;
        }
        sum as f64 / n as f64
    }

    #[test]
    fn small_counts_are_exact_and_large_ones_round_to_neighbours_without_bias() {
        let mut rng = RandomStreams::new(3).stream("grid");
        for t in [0, 1, 77, 127] {
            assert_eq!(Draws::grid_tokens(t, false, &mut rng), t);
        }
        // 1,010 has 10 bits: grid step 8 (992, 1000, 1008, 1016, ...); 1,010 = 1008 + 2.
        let mean = mean_rounding(1010, false, [1008, 1016], &mut rng);
        assert!((mean - 1010.0).abs() < 0.1, "unbiased: {mean}");
        assert_eq!(
            Draws::grid_tokens(1024, false, &mut rng),
            1024,
            "a grid point"
        );
    }

    /// Fast-forwarding rounds to the coarse grid, whose points are fine-grid points too,
    /// without bias, and replays what a point keeps, one draw being enough; back at the
    /// fine grid, a point fills as before.
    #[test]
    fn fast_forwarding_rounds_coarsely_and_replays_one_draw() {
        let mut rng = RandomStreams::new(7).stream("grid");
        for t in [0, 1, 7] {
            assert_eq!(Draws::grid_tokens(t, true, &mut rng), t);
        }
        // 1,010 has 10 bits: coarse step 128 (896, 1024); 1,010 = 896 + 114.
        let mean = mean_rounding(1010, true, [896, 1024], &mut rng);
        assert!((mean - 1010.0).abs() < 1.0, "unbiased: {mean}");
        let mut draws = Draws::default();
        assert!(matches!(
            draws.turn(0, 1024, true, &mut rng),
            Turn::Fresh(0)
        ));
        draws.keep(0, 1024, 0, priced(1.0));
        assert!(
            (0..100).all(|_| matches!(draws.turn(0, 1024, true, &mut rng), Turn::Replay(0, _))),
            "one draw is enough"
        );
        assert!(
            matches!(draws.turn(0, 1024, false, &mut rng), Turn::Fresh(1)),
            "the fine grid fills on"
        );
    }

    /// A draw whose whole price is `moe_s`.
    fn priced(moe_s: f64) -> Rc<LayerDraw> {
        Rc::new(LayerDraw {
            moe_s,
            ..LayerDraw::default()
        })
    }

    #[test]
    fn draws_that_barely_differ_fill_a_grid_point_early() {
        let mut rng = RandomStreams::new(6).stream("draws");
        let mut draws = Draws::default();
        // 0.1% apart: the mean is sure well within MEAN_PRICE_PRECISION at the minimum.
        for i in 0..MIN_KEPT_DRAWS {
            assert!(matches!(draws.turn(0, 4096, false, &mut rng), Turn::Fresh(at) if at == i));
            draws.keep(0, 4096, i, priced(1.0 + 0.001 * i as f64));
        }
        let replays = (0..100)
            .filter(|_| matches!(draws.turn(0, 4096, false, &mut rng), Turn::Replay(..)))
            .count();
        assert!(replays > 80, "{replays}");
        // 20% apart: not sure before KEPT_DRAWS.
        for i in 0..KEPT_DRAWS - 1 {
            draws.keep(0, 8, i, priced(1.0 + 0.2 * (i % 2) as f64));
            assert!(matches!(draws.turn(0, 8, false, &mut rng), Turn::Fresh(at) if at == i + 1));
        }
        assert!(!draws.kept[&(0, 8)].full);
        draws.keep(0, 8, KEPT_DRAWS - 1, priced(1.0));
        assert!(draws.kept[&(0, 8)].full);
    }

    #[test]
    fn a_full_grid_point_replays_and_sometimes_draws_afresh() {
        let mut rng = RandomStreams::new(5).stream("draws");
        let mut draws = Draws::default();
        for i in 0..KEPT_DRAWS {
            let Turn::Fresh(at) = draws.turn(0, 64, false, &mut rng) else {
                panic!("fills first")
            };
            assert_eq!(at, i);
            draws.keep(0, 64, at, priced(i as f64));
        }
        let (mut fresh, mut seen) = (0, vec![0; KEPT_DRAWS]);
        let n = 32_000;
        for _ in 0..n {
            match draws.turn(0, 64, false, &mut rng) {
                Turn::Fresh(at) => {
                    assert!(at < KEPT_DRAWS);
                    fresh += 1;
                }
                Turn::Replay(_, r) => seen[r.moe_s as usize] += 1,
            }
        }
        let share = fresh as f64 / n as f64;
        assert!((share - FRESH_SHARE).abs() < 0.005, "{share}");
        let each = (n - fresh) as f64 / KEPT_DRAWS as f64;
        assert!(
            seen.iter().all(|&s| (s as f64 - each).abs() < 0.15 * each),
            "{seen:?}"
        );
        assert!(
            matches!(draws.turn(0, 65, false, &mut rng), Turn::Fresh(0)),
            "its own point"
        );
        assert!(
            matches!(draws.turn(1, 64, false, &mut rng), Turn::Fresh(0)),
            "its own layer"
        );
        draws.keep(1, 64, 0, priced(0.0));
        assert!(
            matches!(draws.turn(1, 64, false, &mut rng), Turn::Fresh(1)),
            "kept"
        );
        draws.clear();
        assert!(matches!(draws.turn(1, 64, false, &mut rng), Turn::Fresh(0)));
    }
}
