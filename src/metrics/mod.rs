//! Run statistics: latency percentiles with HdrHistogram, and the t quantile of confidence
//! intervals.

use crate::engine::SimDuration;
use hdrhistogram::Histogram;

/// Latencies recorded in nanoseconds with 3 significant digits (HdrHistogram keeps any
/// percentile within 0.1% of the true value), from 1 ns to ~213 days.
#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        // 1 ns to 2^64 ps expressed in ns; constant, valid bounds.
        let histogram = Histogram::new_with_bounds(1, u64::MAX / 1_000, 3)
            .expect("constant histogram bounds are valid");
        Latencies { histogram }
    }

    pub fn record(&mut self, latency: SimDuration) {
        let ns = (latency.as_ps() / 1_000).max(1);
        // Values above the bound saturate at the highest trackable value.
        self.histogram.saturating_record(ns);
    }

    /// Records `count` equal latencies at once.
    pub fn record_n(&mut self, latency: SimDuration, count: u64) {
        let ns = (latency.as_ps() / 1_000).max(1);
        self.histogram.saturating_record_n(ns, count);
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The `q`-th quantile (0 to 1) in milliseconds; 0 when nothing was recorded.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.histogram.is_empty() {
            return 0.0;
        }
        self.histogram.value_at_quantile(q) as f64 / 1e6
    }

    pub fn mean_ms(&self) -> f64 {
        if self.histogram.is_empty() {
            return 0.0;
        }
        self.histogram.mean() / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RandomStreams;
    use rand::RngExt;

    #[test]
    fn percentiles_match_exact_ones_within_a_tenth_of_a_percent() {
        let mut rng = RandomStreams::new(1).stream("latencies");
        let mut l = Latencies::new();
        let mut exact: Vec<u64> = (0..20_000)
            .map(|_| rng.random_range(1_000_000u64..500_000_000))
            .collect();
        for &ns in &exact {
            l.record(SimDuration::from_ns(ns).unwrap());
        }
        exact.sort_unstable();
        for q in [0.5, 0.9, 0.99] {
            let truth =
                exact[((exact.len() as f64 * q).ceil() as usize).min(exact.len()) - 1] as f64 / 1e6;
            let got = l.quantile_ms(q);
            assert!((got / truth - 1.0).abs() < 1e-3, "p{q}: {got} vs {truth}");
        }
        assert_eq!(l.count(), 20_000);
        let mean = exact.iter().sum::<u64>() as f64 / exact.len() as f64 / 1e6;
        assert!((l.mean_ms() / mean - 1.0).abs() < 1e-3);
    }

    #[test]
    fn empty_and_extreme_values() {
        let mut l = Latencies::new();
        assert_eq!((l.quantile_ms(0.99), l.mean_ms()), (0.0, 0.0));
        l.record(SimDuration::ZERO);
        l.record(SimDuration::from_ps(u64::MAX));
        assert_eq!(l.count(), 2);
        assert!(l.quantile_ms(1.0) > 1e9, "saturates instead of panicking");
    }
}

pub fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len().max(1) as f64
}

/// Sample variance (n - 1).
pub fn variance(x: &[f64]) -> f64 {
    let m = mean(x);
    x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() as f64 - 1.0).max(1.0)
}

/// Student's t for a two-sided 95% interval at `df` degrees of freedom, from the standard
/// table; between its rows, the row of fewer degrees (a wider, conservative interval).
pub fn t95(df: f64) -> f64 {
    const TABLE: [(f64, f64); 25] = [
        (1.0, 12.706),
        (2.0, 4.303),
        (3.0, 3.182),
        (4.0, 2.776),
        (5.0, 2.571),
        (6.0, 2.447),
        (7.0, 2.365),
        (8.0, 2.306),
        (9.0, 2.262),
        (10.0, 2.228),
        (11.0, 2.201),
        (12.0, 2.179),
        (13.0, 2.160),
        (14.0, 2.145),
        (15.0, 2.131),
        (16.0, 2.120),
        (17.0, 2.110),
        (18.0, 2.101),
        (19.0, 2.093),
        (20.0, 2.086),
        (25.0, 2.060),
        (30.0, 2.042),
        (40.0, 2.021),
        (60.0, 2.000),
        (120.0, 1.980),
    ];
    table_row(&TABLE, df, 1.960)
}

/// The value of a t table's row for `df` degrees of freedom (between rows, the row of
/// fewer degrees); `infinite` from a million on.
fn table_row(table: &[(f64, f64)], df: f64, infinite: f64) -> f64 {
    if df >= 1e6 {
        return infinite;
    }
    table
        .iter()
        .rev()
        .find(|&&(d, _)| d <= df)
        .map_or(table[0].1, |&(_, t)| t)
}

/// Student's t exceeded with 20% chance (one-sided) at `df` degrees of freedom: with
/// [`t95`], the margin a change needs to be detected with 80% power. From the standard
/// table; between its rows, the row of fewer degrees (conservative).
pub fn t80(df: f64) -> f64 {
    const TABLE: [(f64, f64); 16] = [
        (1.0, 1.376),
        (2.0, 1.061),
        (3.0, 0.978),
        (4.0, 0.941),
        (5.0, 0.920),
        (6.0, 0.906),
        (7.0, 0.896),
        (8.0, 0.889),
        (9.0, 0.883),
        (10.0, 0.879),
        (15.0, 0.866),
        (20.0, 0.860),
        (30.0, 0.854),
        (40.0, 0.851),
        (60.0, 0.848),
        (120.0, 0.845),
    ];
    table_row(&TABLE, df, 0.842)
}

#[cfg(test)]
mod t_tests {
    use super::{t80, t95};

    #[test]
    fn t80_is_the_one_sided_80_percent_quantile() {
        assert_eq!(t80(4.0), 0.941);
        assert_eq!(t80(12.0), 0.879);
        assert_eq!(t80(1e9), 0.842);
    }

    #[test]
    fn t_quantiles_widen_with_fewer_degrees_of_freedom() {
        assert_eq!(t95(4.0), 2.776);
        assert_eq!(t95(22.5), 2.086, "between rows: the wider one");
        assert_eq!(t95(1e9), 1.960);
    }
}
