//! Whether a run's measured window is in steady state, and the intervals of its headline
//! metrics: the checks a simulation analyst makes before trusting a run's averages.
//!
//! Three symptoms say a window is not steady, each a reason in the verdict:
//! - no measured request finished, or most are still in flight when the run stops (their
//!   latencies are right-censored: the window is shorter than a request's life);
//! - the requests in the system, or those waiting for a rank, grow through the window (a
//!   backlog: overload when the waiting pile up and the window serves less than asked, else
//!   a warm-up too short for the batches to fill);
//! - the throughput's batch means still trend: MSER-5 (White 1997; White, Cobb & Spratt
//!   2000), applied to the window's 1-second batches, cuts as much as it may (half), and
//!   what it cuts is not the rest's mean.

use crate::metrics::{mean, t95, variance};

/// MSER's batch size: the rule is applied to means of this many consecutive batches.
const MSER_BATCH: usize = 5;
/// Fewest MSER batches the rule needs to say anything (fewer: it is not applied).
const MSER_MIN_BATCHES: usize = 4;
/// A backlog counts when it grows through the window by more than this share of its mean
/// (smaller drifts are the queue's own wander), by at least [`BACKLOG_MIN_RISE`]
/// requests...
const BACKLOG_GROWTH_SHARE: f64 = 0.25;
const BACKLOG_MIN_RISE: f64 = 2.0;
/// ...and its least-squares slope is this many standard errors above zero.
const BACKLOG_SLOPE_T: f64 = 3.0;
/// A transient that moves the throughput's mean by less than this share is noise.
const TREND_SHARE: f64 = 0.05;
/// Most measured requests still in flight at the end: their latencies are censored.
const CENSORED_SHARE: f64 = 0.5;

/// Whether latencies are censored with `unfinished` of the measured requests still in
/// flight and `finished` done (more than [`CENSORED_SHARE`] in flight).
pub fn censored(finished: u64, unfinished: u64) -> bool {
    unfinished as f64 > CENSORED_SHARE * (finished + unfinished) as f64
}

/// Whether a count sampled once per batch grows through the window (see
/// [`BACKLOG_GROWTH_SHARE`]), and its least-squares slope per batch.
fn grows(counts: &[f64]) -> (bool, f64) {
    let Some((b, se)) = slope(counts) else {
        return (false, 0.0);
    };
    let rise = b * counts.len() as f64;
    let material = rise > (BACKLOG_GROWTH_SHARE * mean(counts)).max(BACKLOG_MIN_RISE);
    (material && b > BACKLOG_SLOPE_T * se, b)
}

/// The means of consecutive [`MSER_BATCH`]-batch groups of `series` (a short tail dropped).
fn batch_means(series: &[f64]) -> Vec<f64> {
    series
        .chunks_exact(MSER_BATCH)
        .map(|c| c.iter().sum::<f64>() / MSER_BATCH as f64)
        .collect()
}

/// The MSER-5 truncation: how many leading batches of `series` to drop (a multiple of 5)
/// so that the rest's squared standard error of the mean, sum((x - m)^2) / (n - d)^2, is
/// least, searched over the first half of the 5-batch means as White, Cobb & Spratt
/// advise (near the end the rule is fooled by a few close values).
pub fn mser5_cut(series: &[f64]) -> usize {
    let means = batch_means(series);
    let k = means.len();
    if k < MSER_MIN_BATCHES {
        return 0;
    }
    let score = |d: usize| {
        let rest = &means[d..];
        let m = mean(rest);
        rest.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (rest.len() as f64).powi(2)
    };
    let best = (0..=k / 2).min_by(|&a, &b| score(a).total_cmp(&score(b)));
    best.unwrap_or(0) * MSER_BATCH
}

/// The leading batches of `series` that are a transient, not the steady state: MSER-5's
/// cut, when what it cuts differs from the rest by more than [`TREND_SHARE`] of the rest's
/// mean (less is noise) and by more than the 95% interval of that difference, taken over
/// the 5-batch means (which bursty arrivals need: single batches are correlated). 0 when
/// the window starts in steady state.
pub fn transient_batches(series: &[f64]) -> usize {
    let cut = mser5_cut(series);
    if cut == 0 {
        return 0;
    }
    let (head, rest) = series.split_at(cut);
    let (h, r) = (batch_means(head), batch_means(rest));
    let m = mean(&r);
    let difference = (mean(&h) - m).abs();
    let se = (variance(&r) * (1.0 / h.len() as f64 + 1.0 / r.len() as f64)).sqrt();
    let material = difference > TREND_SHARE * m.abs();
    let significant = difference > t95((r.len() - 1) as f64) * se;
    match material && significant {
        true => cut,
        false => 0,
    }
}

/// Whether `series` still trends: its transient spans as much as MSER-5 may cut (half).
fn still_trending(series: &[f64], transient: usize) -> bool {
    let half = series.len() / MSER_BATCH / 2 * MSER_BATCH;
    transient > 0 && transient >= half
}

/// The least-squares slope of `y` against its index, and its standard error (`None` with
/// fewer than three points).
pub fn slope(y: &[f64]) -> Option<(f64, f64)> {
    let n = y.len();
    if n < 3 {
        return None;
    }
    let xs: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let (mx, my) = (mean(&xs), mean(y));
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let b = xs
        .iter()
        .zip(y)
        .map(|(x, v)| (x - mx) * (v - my))
        .sum::<f64>()
        / sxx;
    let residual: f64 = xs
        .iter()
        .zip(y)
        .map(|(x, v)| (v - my - b * (x - mx)).powi(2))
        .sum();
    Some((b, (residual / (n as f64 - 2.0) / sxx).sqrt()))
}

/// The `q` quantile of `x` (nearest rank); `x` need not be sorted.
fn quantile(x: &[f32], q: f64) -> f64 {
    let mut s = x.to_vec();
    s.sort_unstable_by(f32::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    f64::from(s[rank - 1])
}

/// Samples beyond the quantile each group holds, on average (of `q`, or of 1 - `q`): two
/// keep a group's p99 off its maximum while letting a thousand requests give five groups.
const QUANTILE_TAIL_PER_GROUP: f64 = 2.0;
/// Most groups a quantile's interval is taken over.
const QUANTILE_MAX_GROUPS: usize = 20;

/// The half-width of a 95% interval of the `q` quantile of `samples` (in the order they
/// were observed) by batch quantiles (Seila 1982): the samples cut into consecutive
/// groups, each large enough to hold two samples beyond the quantile, the quantile taken
/// in each, and Student's t over the groups. `None` when fewer than two groups fit.
pub fn quantile_half_width(samples: &[f32], q: f64) -> Option<f64> {
    let tail = q.min(1.0 - q);
    let groups =
        ((samples.len() as f64 * tail / QUANTILE_TAIL_PER_GROUP) as usize).min(QUANTILE_MAX_GROUPS);
    if groups < 2 {
        return None;
    }
    let size = samples.len() / groups;
    let per: Vec<f64> = samples
        .chunks_exact(size)
        .take(groups)
        .map(|g| quantile(g, q))
        .collect();
    Some(t95((groups - 1) as f64) * (variance(&per) / groups as f64).sqrt())
}

/// What the verdict reads of a run.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Length of the measured window and of its batches, seconds.
    pub window_s: f64,
    pub batch_s: f64,
    /// Output tokens of each batch.
    pub batch_tokens: Vec<f64>,
    /// Requests in the system (queued, prefilling or decoding) at each batch's end, and of
    /// them waiting for a prefill or decode rank.
    pub in_system: Vec<f64>,
    pub waiting: Vec<f64>,
    /// Requests that arrived in the window and finished, and that were still in flight
    /// when the run stopped.
    pub finished: u64,
    pub unfinished: u64,
    /// Output tokens made in the window over those its arrivals asked for (1 when nothing
    /// arrived: a closed loop asks for what it gets).
    pub served_share: f64,
}

/// A window that serves less than this share of what its arrivals ask for, while the
/// requests waiting for a rank pile up, is overloaded (a little less is the answers still
/// in flight at its end).
pub const SERVED_SHARE: f64 = 0.95;

/// What a run's window was, in one word for sweeps and frontiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Steady,
    /// Requests waiting for a rank pile up and it serves less than offered: its output is
    /// its capacity.
    Overloaded,
    NoFinishedRequest,
    /// Censored, filling or trending: its averages are not yet the steady state's.
    NotSteady,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Steady => "steady",
            Status::Overloaded => "overloaded",
            Status::NoFinishedRequest => "no finished request",
            Status::NotSteady => "not steady",
        }
    }
}

/// A run's steady-state verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub status: Status,
    /// Why it is not steady (empty when it is).
    pub why: Vec<String>,
    /// The backlog's growth, requests per second: the least-squares slope of the requests
    /// in the system through the window.
    pub backlog_growth_per_s: f64,
    /// How long the window's start still carries a transient (see [`transient_batches`]),
    /// seconds: 0 when the warm-up covered it.
    pub transient_s: f64,
}

pub fn verdict(w: &Window) -> Verdict {
    let (growing, per_batch) = grows(&w.in_system);
    let backlog_growth_per_s = per_batch / w.batch_s;
    let (queue_growing, _) = grows(&w.waiting);
    let mut why = Vec::new();
    if w.finished == 0 {
        why.push(format!(
            "no measured request finished ({} in flight at the end of a {:.0} s window)",
            w.unfinished, w.window_s
        ));
    } else {
        let share = w.unfinished as f64 / (w.finished + w.unfinished) as f64;
        if censored(w.finished, w.unfinished) {
            why.push(format!(
                "{:.0}% of measured requests still in flight at the end (requests live longer than half the {:.0} s window; latencies censored)",
                share * 100.0,
                w.window_s
            ));
        }
    }
    // Waiting requests can pile up while the whole system grows by less than it counts.
    if growing || queue_growing {
        why.push(format!(
            "backlog growing at {backlog_growth_per_s:.2} requests/s ({}) while serving {:.0}% of the offered output",
            match queue_growing {
                true => "requests waiting for a rank pile up",
                false => "the batches are still filling",
            },
            w.served_share * 100.0
        ));
    }
    let cut = transient_batches(&w.batch_tokens);
    if still_trending(&w.batch_tokens, cut) {
        why.push(format!(
            "throughput still trending (MSER-5 cuts the first {:.0} s of the {:.0} s window: the most it may)",
            cut as f64 * w.batch_s,
            w.window_s
        ));
    }
    let status = if queue_growing && w.served_share < SERVED_SHARE {
        Status::Overloaded
    } else if w.finished == 0 {
        Status::NoFinishedRequest
    } else if why.is_empty() {
        Status::Steady
    } else {
        Status::NotSteady
    };
    Verdict {
        status,
        why,
        backlog_growth_per_s,
        transient_s: cut as f64 * w.batch_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = crate::engine::RandomStreams::new(seed).stream("steady");
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    #[test]
    fn mser_cuts_a_transient_and_leaves_a_stationary_series() {
        let flat: Vec<f64> = noise(100, 1).iter().map(|e| 100.0 + e).collect();
        assert!(mser5_cut(&flat) <= 20, "cut {}", mser5_cut(&flat));
        // A ramp over the first 30 batches, flat after.
        let ramp: Vec<f64> = flat
            .iter()
            .enumerate()
            .map(|(i, x)| x * (i as f64 / 30.0).min(1.0))
            .collect();
        let cut = mser5_cut(&ramp);
        assert!((25..=40).contains(&cut), "cut {cut}");
        assert_eq!(transient_batches(&ramp), cut);
        assert!(!still_trending(&ramp, cut));
        // Still rising at the end: half cut, and that is a trend.
        let rising: Vec<f64> = (0..100).map(|i| i as f64 + noise(1, i)[0]).collect();
        assert_eq!(mser5_cut(&rising), 50);
        assert_eq!(transient_batches(&rising), 50);
        assert!(still_trending(&rising, 50));
        // Noise is no transient, wherever MSER-5 cuts it.
        assert_eq!(transient_batches(&flat), 0);
        assert!(!still_trending(&flat, 0));
    }

    /// Bursty but stationary throughput (batches +-40%): MSER-5 cuts where chance puts a
    /// low or high start, in 38 of these 100 windows by more than 5%, but mostly within
    /// the 5-batch means' interval: 12 have their warm-up moved (more than the nominal 5%:
    /// MSER chose the cut; a needless move costs a second run, never a wrong window).
    #[test]
    fn a_noisy_start_is_seldom_a_transient() {
        let windows: Vec<Vec<f64>> = (0..100)
            .map(|seed| {
                noise(60, 100 + seed)
                    .iter()
                    .map(|e| 100.0 + 40.0 * e)
                    .collect()
            })
            .collect();
        let flagged = windows.iter().filter(|x| transient_batches(x) > 0).count();
        let material = windows
            .iter()
            .filter(|x| {
                let cut = mser5_cut(x);
                cut > 0 && (mean(&x[..cut]) - mean(&x[cut..])).abs() > TREND_SHARE * 100.0
            })
            .count();
        assert!(
            flagged <= 15,
            "{flagged} of 100 noisy windows called transient ({material} material)"
        );
        assert!(
            material >= 3 * flagged.max(1),
            "{material} cuts moved the mean by 5%"
        );
    }

    #[test]
    fn slope_recovers_a_line() {
        let y: Vec<f64> = (0..50).map(|i| 3.0 + 0.5 * i as f64).collect();
        let (b, se) = slope(&y).unwrap();
        assert!((b - 0.5).abs() < 1e-12 && se < 1e-9);
        assert!(slope(&[1.0, 2.0]).is_none());
    }

    /// The batch-quantile interval covers the true median of a uniform most of the time,
    /// and is absent when too few samples fit two groups.
    #[test]
    fn quantile_intervals_cover_and_need_samples() {
        let mut covered = 0;
        for seed in 0..200 {
            let x: Vec<f32> = noise(400, seed).iter().map(|&v| v as f32).collect();
            let h = quantile_half_width(&x, 0.5).unwrap();
            covered += u32::from(quantile(&x, 0.5).abs() <= h);
        }
        assert!((180..=200).contains(&covered), "covered {covered} of 200");
        assert!(quantile_half_width(&[1.0; 300], 0.99).is_none());
        assert_eq!(quantile_half_width(&[1.0; 400], 0.99), Some(0.0));
    }

    fn window(in_system: Vec<f64>, finished: u64, unfinished: u64) -> Window {
        Window {
            window_s: in_system.len() as f64,
            batch_s: 1.0,
            batch_tokens: noise(in_system.len(), 9)
                .iter()
                .map(|e| 1000.0 + e)
                .collect(),
            waiting: vec![0.0; in_system.len()],
            in_system,
            finished,
            unfinished,
            served_share: 1.0,
        }
    }

    #[test]
    fn each_symptom_is_a_reason() {
        let flat: Vec<f64> = noise(60, 2).iter().map(|e| 50.0 + 3.0 * e).collect();
        let steady = verdict(&window(flat.clone(), 400, 40));
        assert_eq!((steady.status, steady.why.len()), (Status::Steady, 0));
        let none = verdict(&window(flat.clone(), 0, 40));
        assert_eq!(none.status, Status::NoFinishedRequest);
        assert!(none.why[0].contains("no measured request finished"));
        let censored = verdict(&window(flat.clone(), 40, 400));
        assert_eq!(censored.status, Status::NotSteady);
        assert!(censored.why[0].contains("91% of measured requests"));
        let mut filling = window(flat.clone(), 400, 40);
        filling.batch_tokens = (0..60).map(|i| 500.0 + 10.0 * i as f64).collect();
        let v = verdict(&filling);
        assert!(v.why[0].contains("still trending (MSER-5 cuts the first 30 s"));
        let growing: Vec<f64> = (0..60).map(|i| 50.0 + 2.0 * i as f64).collect();
        let mut w = window(growing, 400, 40);
        let v = verdict(&w);
        assert!(v.why[0].contains("backlog growing at 2.00"));
        assert!((v.backlog_growth_per_s - 2.0).abs() < 1e-9);
        // Growing, serving less than asked, but none waiting: filling, not overloaded.
        w.served_share = 0.8;
        let v = verdict(&w);
        assert_eq!(v.status, Status::NotSteady);
        assert!(v.why[0].contains("still filling"));
        w.waiting = (0..60).map(|i| i as f64).collect();
        assert_eq!(verdict(&w).status, Status::Overloaded);
        assert!(verdict(&w).why[0].contains("waiting for a rank pile up"));
        w.served_share = 1.0;
        assert_eq!(verdict(&w).status, Status::NotSteady);
        // The queue grows inside a system that grows by less than it counts: overloaded,
        // and said so (never "overloaded" with a window called steady).
        let mut w = window(vec![500.0; 60], 400, 40);
        w.waiting = (0..60).map(|i| i as f64).collect();
        w.served_share = 0.8;
        let v = verdict(&w);
        assert_eq!(v.status, Status::Overloaded);
        assert!(v.why[0].contains("waiting for a rank pile up"), "{v:?}");
    }
}
