//! Where requests come from: arrival processes (open loop: Poisson or bursty gamma gaps;
//! closed loop: a fixed number of users; trace replay) and request lengths (fixed, uniform,
//! clipped normal, lognormal), with the share of each prompt already in the prefix cache.
//! Each draws from its own named random stream, so changing the lengths never moves the
//! arrivals.

use crate::engine::{RandomStreams, SimDuration, SimTime};
use crate::input::{Diagnostics, Problem};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, LogNormal, Normal};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A distribution of token counts.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
pub enum Lengths {
    Fixed {
        tokens: u64,
    },
    Uniform {
        min: u64,
        max: u64,
    },
    /// Normal, clipped to [min, max].
    Normal {
        mean: f64,
        sd: f64,
        min: u64,
        max: u64,
    },
    /// Lognormal with the given median and log-space sigma, clipped to [min, max].
    Lognormal {
        median: f64,
        sigma: f64,
        min: u64,
        max: u64,
    },
}

impl crate::input::Placeholder for Lengths {
    fn placeholder() -> Self {
        Lengths::Fixed { tokens: 0 }
    }
}

impl Lengths {
    /// Problems with the parameters, each a sentence.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        match *self {
            // A request of no tokens is no request (it used to become one of 1 token).
            Lengths::Fixed { tokens: 0 } => p.push("tokens must be at least 1".to_owned()),
            Lengths::Fixed { .. } => {}
            Lengths::Uniform { min, max }
            | Lengths::Normal { min, max, .. }
            | Lengths::Lognormal { min, max, .. } => {
                if min > max {
                    p.push(format!("min ({min}) is above max ({max})"));
                }
                if min == 0 {
                    p.push("min must be at least 1 token".to_owned());
                }
            }
        }
        match *self {
            Lengths::Normal { mean, sd, .. }
                if !(mean.is_finite() && sd.is_finite() && sd >= 0.0) =>
            {
                p.push(format!(
                    "normal needs a finite mean and sd >= 0, got mean {mean}, sd {sd}"
                ));
            }
            Lengths::Lognormal { median, sigma, .. }
                if !(median > 0.0 && sigma.is_finite() && sigma >= 0.0) =>
            {
                p.push(format!(
                    "lognormal needs median > 0 and sigma >= 0, got median {median}, sigma {sigma}"
                ));
            }
            _ => {}
        }
        p
    }

    /// The longest length it can give.
    pub fn largest(&self) -> u64 {
        match *self {
            Lengths::Fixed { tokens } => tokens,
            Lengths::Uniform { max, .. }
            | Lengths::Normal { max, .. }
            | Lengths::Lognormal { max, .. } => max,
        }
    }

    /// A representative value (the mean, or the median of a lognormal), for sizing.
    pub fn typical(&self) -> u64 {
        let clip = |x: f64, min: u64, max: u64| (x.round().max(min as f64).min(max as f64)) as u64;
        match *self {
            Lengths::Fixed { tokens } => tokens,
            Lengths::Uniform { min, max } => min / 2 + max / 2,
            Lengths::Normal { mean, min, max, .. } => clip(mean, min, max),
            Lengths::Lognormal {
                median, min, max, ..
            } => clip(median, min, max),
        }
    }

    pub fn sample(&self, rng: &mut ChaCha8Rng) -> u64 {
        let clip = |x: f64, min: u64, max: u64| (x.round().max(min as f64).min(max as f64)) as u64;
        match *self {
            Lengths::Fixed { tokens } => tokens,
            Lengths::Uniform { min, max } => rng.random_range(min..=max.max(min)),
            Lengths::Normal { mean, sd, min, max } => Normal::new(mean, sd)
                .map_or(clip(mean, min, max), |d| clip(d.sample(rng), min, max)),
            Lengths::Lognormal {
                median,
                sigma,
                min,
                max,
            } => LogNormal::new(median.ln(), sigma)
                .map_or(clip(median, min, max), |d| clip(d.sample(rng), min, max)),
        }
    }
}

/// One request as the workload makes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestSpec {
    pub arrival: SimTime,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Prompt tokens already in the prefix cache (no prefill compute).
    pub cached_tokens: u64,
}

/// Lengths and prefix caching, shared by every arrival process.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub input: Lengths,
    pub output: Lengths,
    /// Fraction of each prompt found in the prefix cache, in [0, 1].
    pub prefix_hit: f64,
}

impl Shape {
    fn request(&self, arrival: SimTime, rng: &mut ChaCha8Rng) -> RequestSpec {
        let input_tokens = self.input.sample(rng).max(1);
        let output_tokens = self.output.sample(rng).max(1);
        RequestSpec {
            arrival,
            input_tokens,
            output_tokens,
            cached_tokens: (input_tokens as f64 * self.prefix_hit).floor() as u64,
        }
    }
}

/// Open-loop arrivals: Poisson at `rate_per_s`, or gamma-distributed gaps with the same
/// mean and coefficient of variation `cv` (> 1 is burstier than Poisson).
#[derive(Debug, Clone)]
pub struct OpenLoop {
    gap: Gamma<f64>,
    shape: Shape,
    now: SimTime,
    arrivals: ChaCha8Rng,
    lengths: ChaCha8Rng,
}

impl OpenLoop {
    /// `cv` = 1 is Poisson (exponential gaps).
    pub fn new(
        rate_per_s: f64,
        cv: f64,
        shape: Shape,
        streams: &RandomStreams,
    ) -> Result<OpenLoop, String> {
        if !(rate_per_s.is_finite() && rate_per_s > 0.0 && cv.is_finite() && cv > 0.0) {
            return Err(format!(
                "arrivals need a rate > 0 and a cv > 0, got rate {rate_per_s}, cv {cv}"
            ));
        }
        // Gamma(k, theta): mean k theta = 1/rate, cv = 1/sqrt(k).
        let k = 1.0 / (cv * cv);
        let gap = Gamma::new(k, 1.0 / (rate_per_s * k)).map_err(|e| e.to_string())?;
        Ok(OpenLoop {
            gap,
            shape,
            now: SimTime::ZERO,
            arrivals: streams.stream("arrivals"),
            lengths: streams.stream("lengths"),
        })
    }

    /// The next request, in arrival order; `None` once time would overflow.
    pub fn next_request(&mut self) -> Option<RequestSpec> {
        let gap = SimDuration::from_secs_f64(self.gap.sample(&mut self.arrivals)).ok()?;
        self.now = self.now.checked_add(gap).ok()?;
        Some(self.shape.request(self.now, &mut self.lengths))
    }
}

/// Closed loop: `users` users, each sending its next request when its last one finishes
/// (the serving loop calls [`ClosedLoop::next_request`] at that moment).
#[derive(Debug, Clone)]
pub struct ClosedLoop {
    pub users: u64,
    /// Requests still to send (a benchmark client's prompts); `None`: no limit.
    left: Option<u64>,
    shape: Shape,
    lengths: ChaCha8Rng,
}

impl ClosedLoop {
    /// `users` users sending requests one after another, `prompts` of them in all (or
    /// without end).
    pub fn new(
        users: u64,
        prompts: Option<u64>,
        shape: Shape,
        streams: &RandomStreams,
    ) -> ClosedLoop {
        ClosedLoop {
            users,
            left: prompts,
            shape,
            lengths: streams.stream("lengths"),
        }
    }

    /// The next request, sent at `now`; `None` once the prompts are all sent.
    pub fn next_request(&mut self, now: SimTime) -> Option<RequestSpec> {
        if let Some(left) = &mut self.left {
            *left = left.checked_sub(1)?;
        }
        Some(self.shape.request(now, &mut self.lengths))
    }
}

/// Tokens of one request's prompt or answer (a documented limit, README "Reliability").
pub const MAX_REQUEST_TOKENS: u64 = 100_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceRow {
    arrival_s: f64,
    input_tokens: u64,
    output_tokens: u64,
}

/// A recorded trace: `arrival_s,input_tokens,output_tokens` rows, in any order (sorted by
/// arrival, ties in file order); every bad row is reported with its line.
pub fn read_trace(file: &Path, prefix_hit: f64) -> Result<Vec<RequestSpec>, Diagnostics> {
    let mut diags = Diagnostics::new();
    // Read like every input file (size-capped), then parsed.
    let text = crate::input::read_text(file)?;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            diags.push_file(file, format!("cannot read the header: {e}"));
            return Err(diags);
        }
    };
    let mut out = Vec::new();
    for record in reader.records() {
        match record {
            Ok(r) => match trace_row(&r, &headers, prefix_hit) {
                Ok(spec) => out.push(spec),
                Err(problems) => diags.extend(file, problems),
            },
            Err(e) => {
                let at = crate::input::csv_cell(e.position().map_or(0, |p| p.line()), None, None);
                diags.push(file, Problem::new(at, "", e.to_string()));
            }
        }
    }
    if out.is_empty() && diags.is_empty() {
        diags.push_file(file, "the trace has no requests");
    }
    out.sort_by_key(|r| r.arrival);
    diags.into_result(out)
}

/// One trace row as a request, or every problem in it (located at its cells).
fn trace_row(
    record: &csv::StringRecord,
    headers: &csv::StringRecord,
    prefix_hit: f64,
) -> Result<RequestSpec, Vec<Problem>> {
    let line = record.position().map_or(0, |p| p.line());
    let column = |name: &str| headers.iter().position(|h| h == name);
    let problem = |i: Option<usize>, field: &str, msg: String| {
        Problem::new(crate::input::csv_cell(line, Some(record), i), field, msg)
    };
    let r = record.deserialize::<TraceRow>(Some(headers)).map_err(|e| {
        // A bad cell: its field and message (without csv's own position prefix).
        let (i, msg) = match e.kind() {
            csv::ErrorKind::Deserialize { err, .. } => {
                (err.field().map(|f| f as usize), err.kind().to_string())
            }
            _ => (None, e.to_string()),
        };
        let name = i.and_then(|i| headers.get(i)).unwrap_or("").to_owned();
        vec![problem(i, &name, msg)]
    })?;
    let mut problems = Vec::new();
    for (name, n) in [
        ("input_tokens", r.input_tokens),
        ("output_tokens", r.output_tokens),
    ] {
        if !(1..=MAX_REQUEST_TOKENS).contains(&n) {
            let msg = format!("must be 1 to {MAX_REQUEST_TOKENS} tokens, got {n}");
            problems.push(problem(column(name), name, msg));
        }
    }
    let arrival = SimDuration::from_secs_f64(r.arrival_s)
        .map_err(|e| problems.push(problem(column("arrival_s"), "arrival_s", e.to_string())));
    match arrival {
        Ok(d) if problems.is_empty() => Ok(RequestSpec {
            arrival: SimTime::ZERO.checked_add(d).unwrap_or(SimTime::MAX),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_tokens: (r.input_tokens as f64 * prefix_hit).floor() as u64,
        }),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            input: Lengths::Lognormal {
                median: 1000.0,
                sigma: 0.5,
                min: 16,
                max: 8192,
            },
            output: Lengths::Uniform { min: 100, max: 300 },
            prefix_hit: 0.25,
        }
    }

    fn gaps(cv: f64, n: usize) -> Vec<f64> {
        let mut w = OpenLoop::new(50.0, cv, shape(), &RandomStreams::new(1)).unwrap();
        let mut last = 0.0;
        (0..n)
            .map(|_| {
                let t = w.next_request().unwrap().arrival.as_secs_f64();
                let g = t - last;
                last = t;
                g
            })
            .collect()
    }

    fn mean_cv(x: &[f64]) -> (f64, f64) {
        let m = x.iter().sum::<f64>() / x.len() as f64;
        let v = x.iter().map(|g| (g - m).powi(2)).sum::<f64>() / x.len() as f64;
        (m, v.sqrt() / m)
    }

    #[test]
    fn poisson_and_bursty_gaps_have_the_asked_mean_and_spread() {
        let (m, cv) = mean_cv(&gaps(1.0, 40_000));
        assert!(
            (m - 0.02).abs() < 0.0005 && (cv - 1.0).abs() < 0.03,
            "{m} {cv}"
        );
        let (m, cv) = mean_cv(&gaps(3.0, 40_000));
        assert!(
            (m - 0.02).abs() < 0.001 && (cv - 3.0).abs() < 0.15,
            "{m} {cv}"
        );
    }

    #[test]
    fn lengths_stay_in_bounds_and_prefix_hits_scale_prompts() {
        let mut w = OpenLoop::new(10.0, 1.0, shape(), &RandomStreams::new(2)).unwrap();
        let reqs: Vec<RequestSpec> = (0..5000).map(|_| w.next_request().unwrap()).collect();
        assert!(reqs.iter().all(
            |r| (16..=8192).contains(&r.input_tokens) && (100..=300).contains(&r.output_tokens)
        ));
        assert!(reqs.iter().all(|r| r.cached_tokens == r.input_tokens / 4));
        let mut inputs: Vec<u64> = reqs.iter().map(|r| r.input_tokens).collect();
        inputs.sort_unstable();
        let median = inputs[inputs.len() / 2] as f64;
        assert!((median / 1000.0 - 1.0).abs() < 0.05, "{median}");
        assert!(reqs.windows(2).all(|p| p[0].arrival <= p[1].arrival));
    }

    #[test]
    fn streams_are_separate_and_seeded() {
        let s = RandomStreams::new(3);
        let mut a = OpenLoop::new(5.0, 1.0, shape(), &s).unwrap();
        let other = Shape {
            input: Lengths::Fixed { tokens: 7 },
            ..shape()
        };
        let mut b = OpenLoop::new(5.0, 1.0, other, &s).unwrap();
        for _ in 0..100 {
            assert_eq!(
                a.next_request().unwrap().arrival,
                b.next_request().unwrap().arrival,
                "lengths never move arrivals"
            );
        }
        let mut c = ClosedLoop::new(4, None, shape(), &RandomStreams::new(3));
        let mut d = ClosedLoop::new(4, None, shape(), &RandomStreams::new(3));
        assert_eq!(c.next_request(SimTime::ZERO), d.next_request(SimTime::ZERO));
    }

    #[test]
    fn a_benchmark_client_sends_its_prompts_and_no_more() {
        let mut c = ClosedLoop::new(2, Some(3), shape(), &RandomStreams::new(3));
        let sent = (0..10)
            .filter_map(|_| c.next_request(SimTime::ZERO))
            .count();
        assert_eq!(sent, 3);
    }

    #[test]
    fn bad_parameters_are_reported() {
        assert!(OpenLoop::new(0.0, 1.0, shape(), &RandomStreams::new(1)).is_err());
        assert_eq!(
            Lengths::Uniform { min: 9, max: 3 }.problems(),
            vec!["min (9) is above max (3)".to_owned()]
        );
        assert_eq!(
            Lengths::Lognormal {
                median: -1.0,
                sigma: 0.5,
                min: 1,
                max: 9
            }
            .problems()
            .len(),
            1
        );
        let mut rng = RandomStreams::new(1).stream("lengths");
        let n = Lengths::Normal {
            mean: 500.0,
            sd: 1000.0,
            min: 10,
            max: 600,
        };
        assert!(
            (0..1000)
                .map(|_| n.sample(&mut rng))
                .all(|x| (10..=600).contains(&x))
        );
    }

    #[test]
    fn traces_replay_in_arrival_order_with_every_problem_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.csv");
        std::fs::write(
            &file,
            "arrival_s,input_tokens,output_tokens\n0.5,100,10\n0.1,200,20\n",
        )
        .unwrap();
        let t = read_trace(&file, 0.5).unwrap();
        assert_eq!((t[0].input_tokens, t[0].cached_tokens), (200, 100));
        assert_eq!(t[1].arrival, SimTime::from_ps(500_000_000_000));
        std::fs::write(
            &file,
            "arrival_s,input_tokens,output_tokens\n-1,100,10\n0.2,0,5\n0.3,x,5\n\
             0.4,5,5\n0.4,5,5\n0.4,5,5\n0.4,5,5\n0.4,5,5\n0.5,1,1000000000\n",
        )
        .unwrap();
        let e = read_trace(&file, 0.0).unwrap_err().to_string();
        // file:line:column: field: message, sorted by position (line 10 after line 2).
        for needle in [
            "t.csv:2:1: arrival_s:",
            "t.csv:3:5: input_tokens: must be 1 to 100000000 tokens, got 0",
            "t.csv:4:5: input_tokens:",
            "t.csv:10:7: output_tokens: must be 1 to 100000000 tokens, got 1000000000",
        ] {
            assert!(e.contains(needle), "{needle} in {e}");
        }
        assert!(
            e.find("t.csv:2:").unwrap() < e.find("t.csv:10:").unwrap(),
            "{e}"
        );
    }
}
