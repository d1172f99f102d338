//! Integer simulated time. Picosecond ticks keep every golden result exact: a 900 GB/s link
//! moves one byte in ~1.1 ps, so coarser ticks would round transfers of small messages away,
//! while `u64` picoseconds still cover 213 days of simulated time.

use std::fmt;

/// Picoseconds per nanosecond, microsecond, millisecond and second.
const PS_PER_NS: u64 = 1_000;
const PS_PER_US: u64 = 1_000_000;
const PS_PER_MS: u64 = 1_000_000_000;
const PS_PER_S: u64 = 1_000_000_000_000;

/// An instant of simulated time, in picoseconds since the start of the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimTime(u64);

/// A span of simulated time, in picoseconds. Kept apart from [`SimTime`] so that adding two
/// instants is a type error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimDuration(u64);

/// Time arithmetic that would leave the representable range, or a duration built from a
/// value that is not a finite, non-negative number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    #[error("simulated time overflow: {0} + {1} exceeds the 2^64 ps (~213 days) range")]
    Overflow(SimTime, SimDuration),
    #[error("duration overflow: {what} does not fit in 2^64 ps (~213 days)")]
    DurationOverflow { what: String },
    #[error("{later} is earlier than {earlier}: durations cannot be negative")]
    Negative { earlier: SimTime, later: SimTime },
    #[error("a duration must be a finite number >= 0, got {0}")]
    NotFinite(f64),
}

impl SimTime {
    pub const ZERO: SimTime = SimTime(0);
    pub const MAX: SimTime = SimTime(u64::MAX);

    pub const fn from_ps(ps: u64) -> Self {
        SimTime(ps)
    }

    pub const fn as_ps(self) -> u64 {
        self.0
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / PS_PER_S as f64
    }

    pub fn checked_add(self, d: SimDuration) -> Result<SimTime, TimeError> {
        self.0
            .checked_add(d.0)
            .map(SimTime)
            .ok_or(TimeError::Overflow(self, d))
    }

    /// The duration from `earlier` to `self`; an error if `earlier` is later.
    pub fn duration_since(self, earlier: SimTime) -> Result<SimDuration, TimeError> {
        self.0
            .checked_sub(earlier.0)
            .map(SimDuration)
            .ok_or(TimeError::Negative {
                earlier,
                later: self,
            })
    }
}

impl SimDuration {
    pub const ZERO: SimDuration = SimDuration(0);

    pub const fn from_ps(ps: u64) -> Self {
        SimDuration(ps)
    }

    pub fn from_ns(ns: u64) -> Result<Self, TimeError> {
        Self::scaled(ns, PS_PER_NS, "ns")
    }

    pub fn from_us(us: u64) -> Result<Self, TimeError> {
        Self::scaled(us, PS_PER_US, "us")
    }

    pub fn from_ms(ms: u64) -> Result<Self, TimeError> {
        Self::scaled(ms, PS_PER_MS, "ms")
    }

    /// Seconds as a float, rounded *up* to the next picosecond: a transfer or kernel never
    /// finishes earlier than its rate says.
    pub fn from_secs_f64(secs: f64) -> Result<Self, TimeError> {
        if !secs.is_finite() || secs < 0.0 {
            return Err(TimeError::NotFinite(secs));
        }
        let ps = (secs * PS_PER_S as f64).ceil();
        // 2^64 is exactly representable; anything at or above it does not fit.
        if ps >= 18_446_744_073_709_551_616.0 {
            return Err(TimeError::DurationOverflow {
                what: format!("{secs} s"),
            });
        }
        Ok(SimDuration(ps as u64))
    }

    pub const fn as_ps(self) -> u64 {
        self.0
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / PS_PER_S as f64
    }

    pub fn as_us_f64(self) -> f64 {
        self.0 as f64 / PS_PER_US as f64
    }

    pub fn checked_add(self, other: SimDuration) -> Result<SimDuration, TimeError> {
        self.0
            .checked_add(other.0)
            .map(SimDuration)
            .ok_or_else(|| TimeError::DurationOverflow {
                what: format!("{self} + {other}"),
            })
    }

    pub fn checked_mul(self, factor: u64) -> Result<SimDuration, TimeError> {
        self.0
            .checked_mul(factor)
            .map(SimDuration)
            .ok_or_else(|| TimeError::DurationOverflow {
                what: format!("{self} x {factor}"),
            })
    }

    fn scaled(value: u64, ps_per_unit: u64, unit: &str) -> Result<Self, TimeError> {
        value
            .checked_mul(ps_per_unit)
            .map(SimDuration)
            .ok_or_else(|| TimeError::DurationOverflow {
                what: format!("{value} {unit}"),
            })
    }
}

/// Picoseconds shown in the largest unit that keeps the value >= 1, with up to 6 decimals.
fn write_ps(f: &mut fmt::Formatter<'_>, ps: u64) -> fmt::Result {
    let (scale, unit) = match ps {
        p if p >= PS_PER_S => (PS_PER_S, "s"),
        p if p >= PS_PER_MS => (PS_PER_MS, "ms"),
        p if p >= PS_PER_US => (PS_PER_US, "us"),
        p if p >= PS_PER_NS => (PS_PER_NS, "ns"),
        _ => return write!(f, "{ps} ps"),
    };
    let whole = ps / scale;
    let frac = ps % scale;
    if frac == 0 {
        return write!(f, "{whole} {unit}");
    }
    // Exact decimal of the fraction, trimmed to 6 digits and trailing zeros.
    let digits = scale.ilog10() as usize;
    let text = format!("{frac:0digits$}");
    let text = text[..digits.min(6)].trim_end_matches('0');
    if text.is_empty() {
        write!(f, "{whole} {unit}")
    } else {
        write!(f, "{whole}.{text} {unit}")
    }
}

impl fmt::Display for SimTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("t=")?;
        write_ps(f, self.0)
    }
}

impl fmt::Display for SimDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_ps(f, self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_constructors_agree() {
        assert_eq!(SimDuration::from_ns(1).unwrap().as_ps(), 1_000);
        assert_eq!(SimDuration::from_us(3).unwrap().as_ps(), 3_000_000);
        assert_eq!(SimDuration::from_ms(2).unwrap().as_ps(), 2_000_000_000);
        assert_eq!(
            SimDuration::from_secs_f64(1.5).unwrap().as_ps(),
            1_500_000_000_000
        );
    }

    #[test]
    fn float_durations_round_up_to_the_next_picosecond() {
        assert_eq!(SimDuration::from_secs_f64(1.2e-12).unwrap().as_ps(), 2);
        assert_eq!(SimDuration::from_secs_f64(0.0).unwrap(), SimDuration::ZERO);
        assert_eq!(SimDuration::from_secs_f64(1e-13).unwrap().as_ps(), 1);
    }

    #[test]
    fn bad_float_durations_are_errors() {
        for bad in [-1e-12, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(SimDuration::from_secs_f64(bad).is_err(), "{bad}");
        }
        // 2^64 ps is ~213 days: one year does not fit, 200 days does.
        assert!(SimDuration::from_secs_f64(365.0 * 86_400.0).is_err());
        assert!(SimDuration::from_secs_f64(200.0 * 86_400.0).is_ok());
    }

    #[test]
    fn overflow_is_an_error_never_a_wrap() {
        let near_end = SimTime::from_ps(u64::MAX - 5);
        assert_eq!(
            near_end.checked_add(SimDuration::from_ps(5)).unwrap(),
            SimTime::MAX
        );
        assert!(matches!(
            near_end.checked_add(SimDuration::from_ps(6)),
            Err(TimeError::Overflow(..))
        ));
        assert!(SimDuration::from_ms(u64::MAX / 1_000).is_err());
        assert!(
            SimDuration::from_ps(u64::MAX)
                .checked_add(SimDuration::from_ps(1))
                .is_err()
        );
        assert!(
            SimDuration::from_ps(u64::MAX / 2 + 1)
                .checked_mul(2)
                .is_err()
        );
        assert_eq!(
            SimDuration::from_ps(u64::MAX / 2)
                .checked_mul(2)
                .unwrap()
                .as_ps(),
            u64::MAX - 1
        );
    }

    #[test]
    fn durations_between_instants_are_never_negative() {
        let a = SimTime::from_ps(10);
        let b = SimTime::from_ps(25);
        assert_eq!(b.duration_since(a).unwrap().as_ps(), 15);
        assert_eq!(a.duration_since(a).unwrap(), SimDuration::ZERO);
        assert!(matches!(
            a.duration_since(b),
            Err(TimeError::Negative { .. })
        ));
    }

    #[test]
    fn display_picks_a_readable_unit() {
        assert_eq!(SimDuration::from_ps(999).to_string(), "999 ps");
        assert_eq!(SimDuration::from_ns(19).unwrap().to_string(), "19 ns");
        assert_eq!(SimDuration::from_ps(311_800_000).to_string(), "311.8 us");
        assert_eq!(SimDuration::from_ps(1_000_000_000_001).to_string(), "1 s");
        assert_eq!(SimTime::from_ps(1_500_000).to_string(), "t=1.5 us");
    }

    #[test]
    fn seconds_round_trip() {
        let d = SimDuration::from_us(250).unwrap();
        assert!((d.as_secs_f64() - 250e-6).abs() < 1e-18);
        assert!((d.as_us_f64() - 250.0).abs() < 1e-12);
        assert!((SimTime::from_ps(PS_PER_S).as_secs_f64() - 1.0).abs() < 1e-15);
    }
}
