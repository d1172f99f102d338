//! Measured latencies on a grid of shape values, interpolated log-log: kernel time is close
//! to a power law of each shape dimension between neighbouring measurements (linear in the
//! bytes or FLOPs it scales), so interpolating ln(time) in ln(size) is exact for such laws.

use serde::Serialize;

/// Where a price came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A measured shape, as measured.
    Measured,
    /// Between measured shapes, log-log.
    Interpolated,
    /// Outside the measured range: the nearest measured shape, scaled by the roofline's
    /// ratio between the asked and the measured shape.
    Extrapolated,
    /// No measurement of this op: the roofline with the family's efficiencies.
    Roofline,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Measured => "measured",
            Source::Interpolated => "interpolated",
            Source::Extrapolated => "extrapolated",
            Source::Roofline => "roofline",
        }
    }

    /// The weaker of two sources (a sum of ops is only as measured as its least measured op).
    pub fn worst(self, other: Source) -> Source {
        self.max(other)
    }
}

/// A lookup's answer: seconds at the clamped point, and that point where it was clamped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit<const D: usize> {
    pub seconds: f64,
    pub source: Source,
    /// The point priced, each coordinate clamped into the measured range.
    pub at: [f64; D],
}

/// Latencies over a full grid of `D` shape axes; missing grid points are NaN.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid<const D: usize> {
    /// Sorted distinct values of each axis.
    axes: [Vec<f64>; D],
    /// Their logarithms (interpolation is in log space; computed once, not per lookup).
    ln_axes: [Vec<f64>; D],
    /// ln(seconds) at each grid point, row-major over `axes`.
    ln_seconds: Vec<f64>,
}

impl<const D: usize> Grid<D> {
    /// A grid over the points given as (coordinates, seconds); the later of two equal
    /// coordinates wins (callers pass distinct points).
    pub fn new(points: &[([f64; D], f64)]) -> Self {
        let axes: [Vec<f64>; D] = std::array::from_fn(|a| {
            let mut v: Vec<f64> = points.iter().map(|p| p.0[a]).collect();
            v.sort_by(f64::total_cmp);
            v.dedup();
            v
        });
        let size = axes.iter().map(Vec::len).product();
        let ln_axes = std::array::from_fn(|a| axes[a].iter().map(|v: &f64| v.ln()).collect());
        let mut grid = Grid {
            axes,
            ln_axes,
            ln_seconds: vec![f64::NAN; size],
        };
        for (x, s) in points {
            let idx: [usize; D] =
                std::array::from_fn(|a| grid.axes[a].partition_point(|&v| v < x[a]));
            let flat = grid.flat(&idx);
            grid.ln_seconds[flat] = s.ln();
        }
        grid
    }

    fn flat(&self, idx: &[usize; D]) -> usize {
        self.axes
            .iter()
            .zip(idx)
            .fold(0, |flat, (axis, &i)| flat * axis.len() + i)
    }

    /// The sorted values of axis `a` the grid was measured at.
    pub fn axis(&self, a: usize) -> &[f64] {
        &self.axes[a]
    }

    /// The measured points and their seconds, in grid order.
    pub fn points(&self) -> impl Iterator<Item = ([f64; D], f64)> + '_ {
        self.ln_seconds
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_nan())
            .map(|(flat, v)| {
                let mut rest = flat;
                let mut x = [0.0; D];
                for a in (0..D).rev() {
                    let len = self.axes[a].len();
                    x[a] = self.axes[a][rest % len];
                    rest /= len;
                }
                (x, v.exp())
            })
    }

    /// Seconds at `x`, interpolated log-log between the surrounding grid points; a
    /// coordinate outside an axis's range is clamped to it (and the hit says so). `None`
    /// when a surrounding grid point was not measured.
    pub fn at(&self, x: [f64; D]) -> Option<Hit<D>> {
        let mut lo = [0usize; D];
        let mut weight = [0.0f64; D];
        let mut at = x;
        let mut source = Source::Measured;
        for a in 0..D {
            let axis = &self.axes[a];
            let (first, last) = (*axis.first()?, *axis.last()?);
            if !(x[a] >= first && x[a] <= last) {
                at[a] = x[a].clamp(first, last);
                source = Source::Extrapolated;
            }
            let i = axis.partition_point(|&v| v <= at[a]).saturating_sub(1);
            let i = i.min(axis.len().saturating_sub(2));
            lo[a] = i;
            if axis.len() > 1 && axis[i] != at[a] {
                let ln = &self.ln_axes[a];
                weight[a] = (at[a].ln() - ln[i]) / (ln[i + 1] - ln[i]);
                if weight[a] > 0.0 && weight[a] < 1.0 {
                    source = source.worst(Source::Interpolated);
                }
            }
        }
        let mut ln = 0.0;
        for corner in 0..(1usize << D) {
            let mut idx = lo;
            let mut w = 1.0;
            for a in 0..D {
                let up = corner >> a & 1 == 1;
                let wa = if up { weight[a] } else { 1.0 - weight[a] };
                if wa == 0.0 {
                    w = 0.0;
                    break;
                }
                idx[a] += usize::from(up);
                w *= wa;
            }
            if w == 0.0 {
                continue;
            }
            let v = self.ln_seconds[self.flat(&idx)];
            if v.is_nan() {
                return None;
            }
            ln += w * v;
        }
        Some(Hit {
            seconds: ln.exp(),
            source,
            at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn power_law() -> Grid<2> {
        // t = 1e-6 * m^0.5 * n, measured on a 3 x 3 grid.
        let mut pts = Vec::new();
        for m in [1.0, 4.0, 16.0] {
            for n in [10.0, 100.0, 1000.0] {
                pts.push(([m, n], 1e-6 * f64::sqrt(m) * n));
            }
        }
        Grid::new(&pts)
    }

    #[test]
    fn measured_points_come_back_as_measured() {
        let hit = power_law().at([4.0, 100.0]).unwrap();
        assert_eq!(hit.source, Source::Measured);
        assert!((hit.seconds - 2e-4).abs() < 1e-15);
    }

    #[test]
    fn points_come_back_as_given() {
        let g = power_law();
        let pts: Vec<_> = g.points().collect();
        assert_eq!(pts.len(), 9);
        for (x, s) in pts {
            assert!((s / (1e-6 * x[0].sqrt() * x[1]) - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn clamped_points_say_so() {
        let hit = power_law().at([64.0, 100.0]).unwrap();
        assert_eq!(hit.source, Source::Extrapolated);
        assert_eq!(hit.at, [16.0, 100.0]);
    }

    #[test]
    fn a_missing_neighbour_gives_none() {
        let g = Grid::new(&[([1.0], 1.0), ([4.0], 2.0)]);
        assert!(g.at([2.0]).is_some());
        let holes = Grid::new(&[([1.0, 1.0], 1.0), ([2.0, 2.0], 1.0)]);
        assert!(holes.at([1.5, 1.5]).is_none());
        assert!(holes.at([1.0, 1.0]).is_some());
    }

    proptest! {
        /// Log-log interpolation reproduces a power law exactly, anywhere inside the grid.
        #[test]
        fn power_laws_interpolate_exactly(m in 1.0f64..16.0, n in 10.0f64..1000.0) {
            let hit = power_law().at([m, n]).unwrap();
            let want = 1e-6 * m.sqrt() * n;
            prop_assert!((hit.seconds / want - 1.0).abs() < 1e-9);
            prop_assert!(hit.source <= Source::Interpolated);
        }

        /// Interpolated values lie between the smallest and largest measurement.
        #[test]
        fn interpolation_stays_within_the_measurements(
            t in proptest::collection::vec(1e-6f64..1e-2, 4), m in 1.0f64..8.0, n in 1.0f64..8.0,
        ) {
            let g = Grid::new(&[([1.0, 1.0], t[0]), ([1.0, 8.0], t[1]), ([8.0, 1.0], t[2]), ([8.0, 8.0], t[3])]);
            let s = g.at([m, n]).unwrap().seconds;
            let (lo, hi) = t.iter().fold((f64::MAX, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
            prop_assert!(s >= lo * (1.0 - 1e-9) && s <= hi * (1.0 + 1e-9));
        }
    }
}
