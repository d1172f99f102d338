//! Comparing replicated runs: a metric measured over several seeds in the baseline and in
//! the candidate, judged by the 95% confidence interval of the relative change of its
//! mean. Paired by seed when both sides ran the same seeds (a policy change on common
//! random numbers), Welch's unpaired interval otherwise (a change of seeds).

use crate::metrics::{mean, t80, t95, variance};

/// One metric's values, by seed, on each side.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    pub baseline: Vec<(u64, f64)>,
    pub candidate: Vec<(u64, f64)>,
}

/// The relative change of the mean, candidate over baseline minus 1, and its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub change: f64,
    pub low: f64,
    pub high: f64,
    /// Whether the seeds were paired.
    pub paired: bool,
    /// The smallest relative change these seeds detect with 80% power at 95% confidence:
    /// (t95 + t80) standard errors of the change, over the baseline mean.
    pub detectable: f64,
}

/// The interval of `s`; `None` with fewer than two values on a side or a zero baseline mean.
pub fn interval(s: &Samples) -> Option<Interval> {
    let (nb, nc) = (s.baseline.len(), s.candidate.len());
    if nb < 2 || nc < 2 {
        return None;
    }
    let values = |v: &[(u64, f64)]| v.iter().map(|&(_, x)| x).collect::<Vec<f64>>();
    let (b, c) = (values(&s.baseline), values(&s.candidate));
    let base = mean(&b);
    if base == 0.0 {
        return None;
    }
    let seeds = |v: &[(u64, f64)]| v.iter().map(|&(k, _)| k).collect::<Vec<u64>>();
    let paired = seeds(&s.baseline) == seeds(&s.candidate);
    let (diff, se, df) = if paired {
        let d: Vec<f64> = c.iter().zip(&b).map(|(x, y)| x - y).collect();
        let se = (variance(&d) / d.len() as f64).sqrt();
        (mean(&d), se, d.len() as f64 - 1.0)
    } else {
        let (vb, vc) = (variance(&b) / nb as f64, variance(&c) / nc as f64);
        let se = (vb + vc).sqrt();
        // Welch-Satterthwaite degrees of freedom.
        let df = if se > 0.0 {
            (vb + vc).powi(2) / (vb * vb / (nb as f64 - 1.0) + vc * vc / (nc as f64 - 1.0))
        } else {
            (nb + nc - 2) as f64
        };
        (mean(&c) - base, se, df)
    };
    let (half, scale) = (t95(df) * se, base.abs());
    Some(Interval {
        change: diff / scale,
        low: (diff - half) / scale,
        high: (diff + half) / scale,
        paired,
        detectable: (t95(df) + t80(df)) * se / scale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(b: &[f64], c: &[f64], offset: u64) -> Samples {
        let side = |v: &[f64], from: u64| {
            v.iter()
                .enumerate()
                .map(|(i, &x)| (from + i as u64, x))
                .collect()
        };
        Samples {
            baseline: side(b, 1),
            candidate: side(c, 1 + offset),
        }
    }

    #[test]
    fn paired_seeds_cancel_what_the_seed_moves() {
        // The seed moves both sides alike; the change is a steady +2%.
        let b = [100.0, 120.0, 90.0, 110.0];
        let c: Vec<f64> = b.iter().map(|x| x * 1.02).collect();
        let paired = interval(&samples(&b, &c, 0)).unwrap();
        assert!(
            paired.paired && paired.low > 0.0 && paired.high < 0.04,
            "{paired:?}"
        );
        let unpaired = interval(&samples(&b, &c, 10)).unwrap();
        assert!(
            !unpaired.paired && unpaired.low < 0.0 && unpaired.high > 0.04,
            "{unpaired:?}"
        );
        assert!((paired.change - 0.02).abs() < 1e-12);
        // What each design can detect: the pairs' spread is small, the seeds' is not.
        assert!(paired.detectable < 0.02 && unpaired.detectable > 0.1);
    }

    /// The detectable change is (t95 + t80) standard errors of the change: a true change
    /// of that size lands outside the 95% interval's zero side 80% of the time.
    #[test]
    fn the_detectable_change_is_the_power_margin() {
        let b = [100.0, 100.0, 100.0, 100.0, 100.0];
        let c = [101.0, 99.0, 102.0, 98.0, 100.0];
        let i = interval(&samples(&b, &c, 0)).unwrap();
        let se = (crate::metrics::variance(&[1.0, -1.0, 2.0, -2.0, 0.0]) / 5.0).sqrt();
        assert!((i.detectable - (2.776 + 0.941) * se / 100.0).abs() < 1e-12);
    }

    #[test]
    fn intervals_need_two_seeds_a_side_and_a_baseline() {
        assert!(interval(&samples(&[1.0], &[1.0, 2.0], 0)).is_none());
        assert!(interval(&samples(&[0.0, 0.0], &[1.0, 2.0], 0)).is_none());
    }
}
