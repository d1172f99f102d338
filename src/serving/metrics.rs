//! What a run measures. Requests that arrive during the warm-up are served but left out of
//! latency statistics; tokens count towards throughput when they are produced inside the
//! measured window (warm-up to end; a drain after the end finishes requests but adds no
//! throughput). A benchmark client's run counts every request, over the time until its
//! last answer, as serving benchmarks do. The summary says how many measured requests were
//! still unfinished when the run stopped (the latency statistics cannot see them).

use super::pricing::{Price, RankWork};
use super::scenario::{Role, RunLength, Scenario};
use super::steady;
use super::workload::RequestSpec;
use crate::engine::{SimDuration, SimTime};
use crate::metrics::{self, Latencies, t95};
use serde::Serialize;

/// Where finished requests' rows go: nowhere, kept for the report, or written as each
/// request finishes.
enum Rows {
    Dropped,
    Kept(Vec<RequestRow>),
    Streamed {
        /// Boxed: the writer's buffer would make every collector large.
        writer: Box<csv::Writer<Box<dyn std::io::Write>>>,
        written: u64,
        failed: Option<String>,
    },
}

/// requests.csv's columns, the fields of [`RequestRow`] (the header of a file without
/// rows).
pub const REQUEST_COLUMNS: [&str; 14] = [
    "id",
    "measured",
    "arrival_s",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "generated_tokens",
    "first_token_s",
    "finish_s",
    "ttft_ms",
    "tpot_ms",
    "itl_p99_ms",
    "prefill_instance",
    "decode_instance",
];

/// One finished request (a row of requests.csv). Times in seconds from the start of the run,
/// latencies in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRow {
    pub id: u64,
    /// Arrived after the warm-up: part of the latency statistics.
    pub measured: bool,
    pub arrival_s: f64,
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub output_tokens: u64,
    pub generated_tokens: u64,
    pub first_token_s: f64,
    pub finish_s: f64,
    pub ttft_ms: f64,
    /// Mean time per output token after the first.
    pub tpot_ms: f64,
    /// 99th percentile of the gaps between the steps that brought it tokens.
    pub itl_p99_ms: f64,
    pub prefill_instance: String,
    pub decode_instance: String,
}

/// Everything a run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// summary.csv's columns, in order, formatted.
    pub summary: Vec<(&'static str, String)>,
    pub requests: Vec<RequestRow>,
    pub stats: SimStats,
    /// Whether the measured window was in steady state (summary.csv's `status` and
    /// `steady_state`).
    pub steady: steady::Verdict,
}

impl Report {
    /// A summary value by column name, parsed.
    pub fn value(&self, column: &str) -> Option<f64> {
        self.summary
            .iter()
            .find(|(c, _)| *c == column)
            .and_then(|(_, v)| v.parse().ok())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimStats {
    pub events: u64,
    pub wall_s: f64,
    pub simulated_s: f64,
    pub events_per_wall_s: f64,
    pub simulated_s_per_wall_s: f64,
    pub iterations: u64,
    pub kv_bytes_started: f64,
    pub kv_bytes_delivered: f64,
}

/// What the collector reads of a finished request.
#[derive(Debug, Clone, Copy)]
pub struct FinishedRequest<'a> {
    pub id: u64,
    pub spec: &'a RequestSpec,
    pub generated: u64,
    pub first_token: Option<SimTime>,
    /// Gaps between the steps that brought it tokens.
    pub gaps: &'a TailGaps,
}

/// Requests still in flight when a run stops: all of them, and those that arrived after the
/// warm-up (the latency statistics miss them: they are right-censored).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct InFlight {
    pub all: u64,
    pub measured: u64,
}

/// How a run ended: what was left, when, and what the engine and network did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunEnd {
    pub in_flight: InFlight,
    pub stopped: SimTime,
    pub events: u64,
    pub wall_s: f64,
    pub kv_bytes_started: f64,
    pub kv_bytes_delivered: f64,
}

/// Why a request was refused at arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Prompt and answer together exceed the model's context.
    Context,
    /// No rank's KV cache could ever hold it.
    Memory,
    /// The system already holds [`crate::serving::sim::MAX_IN_SYSTEM`] requests.
    Backlog,
}

/// Batches of output tokens when no `stop_when` gives their length, seconds.
pub const DEFAULT_BATCH_S: f64 = 1.0;

pub struct Collector {
    length: RunLength,
    warmup: SimTime,
    end: SimTime,
    /// A benchmark client's run: the window ends with the last answer.
    benchmark: bool,
    last_finish: SimTime,
    e2e: Latencies,
    /// Measured requests finished inside the window.
    finished_in_window: u64,
    /// Prompt tokens per second one full prefill instance takes, and its GPUs.
    prefill_capacity: Option<(f64, u64)>,
    /// Output tokens of each closed batch of the measured window (batch means).
    batch_tokens: Vec<u64>,
    tokens_at_last_batch: u64,
    /// Requests in the system, and of them waiting for a rank, at each closed batch's end
    /// (the backlog's trend).
    in_system: Vec<u64>,
    waiting: Vec<u64>,
    batch_s: f64,
    /// Measured requests' TTFT and TPOT, ms, in the order they finished (batch quantiles).
    ttft_samples: Vec<f32>,
    tpot_samples: Vec<f32>,
    ttft: Latencies,
    tpot: Latencies,
    itl: Latencies,
    arrived: u64,
    /// Output tokens asked for by the requests that arrived in the window.
    offered_output_tokens: u64,
    /// Refused requests: longer than the model's context, larger than any KV cache.
    rejected_context: u64,
    rejected_memory: u64,
    rejected_backlog: u64,
    completed: u64,
    completed_measured: u64,
    output_tokens: u64,
    input_tokens: u64,
    user_rate_sum: f64,
    user_rate_count: u64,
    iterations: u64,
    /// Decode-side iterations that started after the warm-up.
    decode_iterations: u64,
    decode_batch_sum: f64,
    kv_weighted: f64,
    decode_time: f64,
    imbalance_sum: f64,
    split: [f64; 4],
    rows: Rows,
}

impl Collector {
    /// Statistics from `warmup` to `end`, of a run of `length`.
    pub fn new(sc: &Scenario, length: RunLength, warmup: SimTime, end: SimTime) -> Self {
        Collector {
            length,
            warmup,
            end,
            benchmark: sc.workload.arrivals.is_benchmark(),
            last_finish: SimTime::ZERO,
            e2e: Latencies::new(),
            finished_in_window: 0,
            prefill_capacity: None,
            batch_tokens: Vec::new(),
            tokens_at_last_batch: 0,
            in_system: Vec::new(),
            waiting: Vec::new(),
            batch_s: sc.stop_when.map_or(DEFAULT_BATCH_S, |w| w.batch_s),
            ttft_samples: Vec::new(),
            tpot_samples: Vec::new(),
            ttft: Latencies::new(),
            tpot: Latencies::new(),
            itl: Latencies::new(),
            arrived: 0,
            offered_output_tokens: 0,
            rejected_context: 0,
            rejected_memory: 0,
            rejected_backlog: 0,
            completed: 0,
            completed_measured: 0,
            output_tokens: 0,
            input_tokens: 0,
            user_rate_sum: 0.0,
            user_rate_count: 0,
            iterations: 0,
            decode_iterations: 0,
            decode_batch_sum: 0.0,
            kv_weighted: 0.0,
            decode_time: 0.0,
            imbalance_sum: 0.0,
            split: [0.0; 4],
            rows: match sc.output.requests_csv {
                true => Rows::Kept(Vec::new()),
                false => Rows::Dropped,
            },
        }
    }

    /// Whether finished requests' rows are kept or written (their gaps are then wanted).
    pub fn wants_rows(&self) -> bool {
        !matches!(self.rows, Rows::Dropped)
    }

    /// Writes each finished request's row to `writer` as it finishes (a CSV with
    /// [`REQUEST_COLUMNS`]), instead of keeping it for the report: a long run's
    /// requests.csv without holding its rows.
    pub fn stream_rows(&mut self, writer: Box<dyn std::io::Write>) {
        self.rows = Rows::Streamed {
            writer: Box::new(csv::Writer::from_writer(writer)),
            written: 0,
            failed: None,
        };
    }

    /// Ends streamed rows (the header alone when none finished); the first write error.
    pub fn finish_rows(&mut self) -> Result<(), String> {
        let Rows::Streamed {
            writer,
            written,
            failed,
        } = &mut self.rows
        else {
            return Ok(());
        };
        if let Some(e) = failed.take() {
            return Err(e);
        }
        if *written == 0 {
            writer
                .write_record(REQUEST_COLUMNS)
                .map_err(|e| e.to_string())?;
        }
        writer.flush().map_err(|e| e.to_string())
    }

    /// What one full prefill instance of `gpus` GPUs prefills, prompt tokens per second:
    /// the rate-matching columns divide the run's prompt load by it.
    pub fn prefill_capacity(&mut self, tok_s: f64, gpus: u64) {
        self.prefill_capacity = Some((tok_s, gpus));
    }

    /// The prefill GPUs this run's prompt load needs ("rate matching", reference section 6):
    /// `input_tok_s` over one full instance's capacity, in instances, times its GPUs; and
    /// that rounded up to whole instances, what one copy of the deployment needs. The first
    /// is the prefill share when copies of the deployment share a prefill pool (x prefill
    /// workers per y decode workers), so one small copy's rounding does not count against
    /// it. 0 when serving is aggregated (every GPU is counted already).
    fn prefill_gpus(&self, input_tok_s: f64) -> (f64, u64) {
        let Some((capacity, gpus)) = self.prefill_capacity else {
            return (0.0, 0);
        };
        let instances = input_tok_s / capacity.max(1e-12);
        // A whisker over a whole instance is that instance, not the next (float sums).
        let whole = (instances - 1e-9).ceil().max(0.0) as u64;
        (instances * gpus as f64, whole * gpus)
    }

    /// Ends a batch of the measured window (batches of equal length), `in_system` requests
    /// queued or being served at its end, `waiting` of them for a rank.
    pub fn close_batch(&mut self, in_system: u64, waiting: u64) {
        self.in_system.push(in_system);
        self.waiting.push(waiting);
        self.batch_tokens
            .push(self.output_tokens - self.tokens_at_last_batch);
        self.tokens_at_last_batch = self.output_tokens;
    }

    /// The length of the measured window's batches, seconds.
    pub fn batch_s(&self) -> f64 {
        self.batch_s
    }

    pub fn batches(&self) -> usize {
        self.batch_tokens.len()
    }

    /// Requests that arrived after the warm-up and have finished.
    pub fn finished_measured(&self) -> u64 {
        self.completed_measured
    }

    /// The half-width of the 95% confidence interval of output tokens/s, relative to it,
    /// from the batch means; `None` with fewer than two batches or no tokens.
    pub fn output_relative_ci(&self) -> Option<f64> {
        let n = self.batch_tokens.len();
        if n < 2 {
            return None;
        }
        let x: Vec<f64> = self.batch_tokens.iter().map(|&t| t as f64).collect();
        let (m, se) = (metrics::mean(&x), (metrics::variance(&x) / n as f64).sqrt());
        (m > 0.0).then(|| t95((n - 1) as f64) * se / m)
    }

    /// The measured window ends at `at` (a run that stopped once it knew enough).
    pub fn end_window(&mut self, at: SimTime) {
        self.end = at;
    }

    /// When statistics start.
    pub fn warmup(&self) -> SimTime {
        self.warmup
    }

    /// Inside the measured window: after the warm-up, not in the drain.
    fn measuring(&self, now: SimTime) -> bool {
        now >= self.warmup && now <= self.end
    }

    /// A request asking for `output_tokens` arrived at `now`.
    pub fn arrived(&mut self, now: SimTime, output_tokens: u64) {
        self.arrived += 1;
        if self.measuring(now) {
            self.offered_output_tokens += output_tokens;
        }
    }

    /// Requests refused for memory, and requests finished, so far.
    #[cfg(test)]
    pub fn memory_refused_and_completed(&self) -> (u64, u64) {
        (self.rejected_memory, self.completed)
    }

    pub fn rejected(&mut self, why: Refused) {
        match why {
            Refused::Context => self.rejected_context += 1,
            Refused::Memory => self.rejected_memory += 1,
            Refused::Backlog => self.rejected_backlog += 1,
        }
    }

    pub fn output_tokens(&mut self, now: SimTime, n: u64) {
        if self.measuring(now) {
            self.output_tokens += n;
        }
    }

    /// `count` measured requests each waited `gap_us` for this step's tokens.
    pub fn token_gaps(&mut self, gap_us: u64, count: u64) {
        let gap = SimDuration::from_ns(gap_us * 1000).unwrap_or(SimDuration::ZERO);
        self.itl.record_n(gap, count);
    }

    pub fn input_tokens(&mut self, now: SimTime, n: u64) {
        if self.measuring(now) {
            self.input_tokens += n;
        }
    }

    /// An iteration starting at `now`; decode-side ones feed batch, KV and imbalance means
    /// (weighted by their duration).
    pub fn iteration(
        &mut self,
        now: SimTime,
        role: Role,
        work: &[RankWork],
        price: &Price,
        kv_share: f64,
    ) {
        self.iterations += 1;
        if !self.measuring(now) {
            return;
        }
        if role == Role::Prefill {
            return;
        }
        self.decode_iterations += 1;
        let batch: u64 = work.iter().map(|w| w.batch).sum();
        self.decode_batch_sum += batch as f64 / work.len().max(1) as f64;
        let t = price.seconds;
        self.decode_time += t;
        self.kv_weighted += kv_share * t;
        self.imbalance_sum += price.rank_imbalance;
        for (sum, part) in self.split.iter_mut().zip([
            price.dense_s,
            price.moe_s,
            price.all_to_all_s,
            price.eplb_stall_s,
        ]) {
            *sum += part;
        }
    }

    pub fn finished(&mut self, r: FinishedRequest, now: SimTime, prefill: &str, decode: &str) {
        self.completed += 1;
        self.last_finish = self.last_finish.max(now);
        let spec = r.spec;
        let measured = spec.arrival >= self.warmup;
        let first = r.first_token.unwrap_or(now);
        let since = |a: SimTime, b: SimTime| a.duration_since(b).unwrap_or(SimDuration::ZERO);
        let ttft = since(first, spec.arrival);
        let decode_s = since(now, first).as_secs_f64();
        let after_first = r.generated.saturating_sub(1);
        let tpot_s = if after_first > 0 {
            decode_s / after_first as f64
        } else {
            0.0
        };
        let itl_p99_ms = r.gaps.quantile_us(0.99) / 1e3;
        if measured {
            self.completed_measured += 1;
            self.finished_in_window += u64::from(self.measuring(now));
            self.e2e.record(since(now, spec.arrival));
            self.ttft.record(ttft);
            self.ttft_samples.push((ttft.as_secs_f64() * 1e3) as f32);
            if after_first > 0 {
                self.tpot_samples.push((tpot_s * 1e3) as f32);
                self.tpot
                    .record(SimDuration::from_secs_f64(tpot_s).unwrap_or(SimDuration::ZERO));
                self.user_rate_sum += after_first as f64 / decode_s.max(1e-12);
                self.user_rate_count += 1;
            }
        }
        if matches!(self.rows, Rows::Dropped) {
            return;
        }
        let row = RequestRow {
            id: r.id,
            measured,
            arrival_s: rounded(spec.arrival.as_secs_f64(), 1e9),
            input_tokens: spec.input_tokens,
            cached_tokens: spec.cached_tokens,
            output_tokens: spec.output_tokens,
            generated_tokens: r.generated,
            first_token_s: rounded(first.as_secs_f64(), 1e9),
            finish_s: rounded(now.as_secs_f64(), 1e9),
            ttft_ms: rounded(ttft.as_secs_f64() * 1e3, 1e6),
            tpot_ms: rounded(tpot_s * 1e3, 1e6),
            itl_p99_ms,
            prefill_instance: prefill.to_owned(),
            decode_instance: decode.to_owned(),
        };
        match &mut self.rows {
            Rows::Dropped => {}
            Rows::Kept(rows) => rows.push(row),
            Rows::Streamed {
                writer,
                written,
                failed,
            } => match writer.serialize(&row) {
                Ok(()) => *written += 1,
                Err(e) if failed.is_none() => *failed = Some(e.to_string()),
                Err(_) => {}
            },
        }
    }

    pub fn report(self, sc: &Scenario, run: RunEnd) -> Report {
        let RunEnd {
            in_flight,
            stopped,
            events,
            wall_s,
            kv_bytes_started,
            kv_bytes_delivered,
        } = run;
        let window_end = if self.benchmark {
            self.last_finish
        } else {
            self.end
        };
        let window = window_end
            .duration_since(self.warmup)
            .map_or(0.0, |d| d.as_secs_f64())
            .max(1e-12);
        let gpus: u64 = sc.instances.iter().map(|i| i.ep()).sum();
        let decode_gpus: u64 = sc
            .instances
            .iter()
            .filter(|i| i.role != Role::Prefill)
            .map(|i| i.ep())
            .sum();
        let output_tok_s = self.output_tokens as f64 / window;
        let input_tok_s = self.input_tokens as f64 / window;
        let (prefill_busy, prefill_needed) = self.prefill_gpus(input_tok_s);
        let per_decode_s = |x: f64| {
            if self.decode_iterations > 0 {
                x / self.decode_iterations as f64
            } else {
                0.0
            }
        };
        let ms = |x: f64| format!("{x:.3}");
        let num = |x: f64| format!("{x:.4}");
        let verdict = steady::verdict(&steady::Window {
            window_s: window,
            batch_s: self.batch_s,
            batch_tokens: self.batch_tokens.iter().map(|&t| t as f64).collect(),
            in_system: self.in_system.iter().map(|&n| n as f64).collect(),
            waiting: self.waiting.iter().map(|&n| n as f64).collect(),
            finished: self.completed_measured,
            unfinished: in_flight.measured,
            served_share: match self.offered_output_tokens {
                0 => 1.0,
                asked => self.output_tokens as f64 / asked as f64,
            },
        });
        // Half-widths of 95% intervals; empty where too few requests finished (the
        // steady-state verdict or the request counts say so).
        let interval = |samples: &[f32], q: f64| {
            steady::quantile_half_width(samples, q).map_or(String::new(), ms)
        };
        let summary = vec![
            ("scenario", sc.name.clone()),
            ("seed", sc.seed.to_string()),
            ("gpus", gpus.to_string()),
            ("decode_gpus", decode_gpus.to_string()),
            ("duration_s", num(self.length.duration_s)),
            ("warmup_s", num(self.length.warmup_s)),
            ("warmup_moved_s", num(self.length.moved_s)),
            ("requests_arrived", self.arrived.to_string()),
            ("requests_completed", self.completed_measured.to_string()),
            ("requests_completed_all", self.completed.to_string()),
            ("requests_pending", in_flight.all.to_string()),
            (
                "requests_unfinished_measured",
                in_flight.measured.to_string(),
            ),
            (
                "requests_rejected",
                (self.rejected_context + self.rejected_memory + self.rejected_backlog).to_string(),
            ),
            (
                "requests_rejected_context",
                self.rejected_context.to_string(),
            ),
            ("requests_rejected_memory", self.rejected_memory.to_string()),
            (
                "requests_rejected_backlog",
                self.rejected_backlog.to_string(),
            ),
            ("status", verdict.status.name().to_owned()),
            (
                "steady_state",
                match verdict.why.is_empty() {
                    true => "yes".into(),
                    false => format!("no: {}", verdict.why.join("; ")),
                },
            ),
            ("backlog_growth_per_s", num(verdict.backlog_growth_per_s)),
            ("output_tok_s", num(output_tok_s)),
            (
                "output_tok_s_per_gpu",
                num(output_tok_s / gpus.max(1) as f64),
            ),
            (
                "output_tok_s_per_decode_gpu",
                num(output_tok_s / decode_gpus.max(1) as f64),
            ),
            ("prefill_gpus_rate_matched", num(prefill_busy)),
            ("prefill_gpus_needed", prefill_needed.to_string()),
            (
                "output_tok_s_per_gpu_rate_matched",
                num(output_tok_s / (decode_gpus as f64 + prefill_busy).max(1.0)),
            ),
            (
                "output_tok_s_rel_ci95",
                self.output_relative_ci().map_or(String::new(), num),
            ),
            ("measured_s", num(window)),
            ("input_tok_s", num(input_tok_s)),
            (
                "request_throughput_per_s",
                num(self.finished_in_window as f64 / window),
            ),
            (
                "tok_s_per_user",
                // Empty when no measured request finished: there is no rate to report.
                if self.user_rate_count > 0 {
                    num(self.user_rate_sum / self.user_rate_count as f64)
                } else {
                    String::new()
                },
            ),
            ("ttft_ms_mean", mean(&self.ttft)),
            ("ttft_ms_p50", quantile(&self.ttft, 0.5)),
            ("ttft_ms_p50_ci95", interval(&self.ttft_samples, 0.5)),
            ("ttft_ms_p90", quantile(&self.ttft, 0.9)),
            ("ttft_ms_p99", quantile(&self.ttft, 0.99)),
            ("ttft_ms_p99_ci95", interval(&self.ttft_samples, 0.99)),
            ("tpot_ms_mean", mean(&self.tpot)),
            ("tpot_ms_p50", quantile(&self.tpot, 0.5)),
            ("tpot_ms_p50_ci95", interval(&self.tpot_samples, 0.5)),
            ("tpot_ms_p90", quantile(&self.tpot, 0.9)),
            ("tpot_ms_p99", quantile(&self.tpot, 0.99)),
            ("tpot_ms_p99_ci95", interval(&self.tpot_samples, 0.99)),
            ("itl_ms_p99", quantile(&self.itl, 0.99)),
            ("e2e_ms_p50", quantile(&self.e2e, 0.5)),
            ("e2e_ms_p99", quantile(&self.e2e, 0.99)),
            (
                "mean_batch_per_rank",
                num(per_decode_s(self.decode_batch_sum)),
            ),
            (
                "kv_utilisation",
                num(if self.decode_time > 0.0 {
                    self.kv_weighted / self.decode_time
                } else {
                    0.0
                }),
            ),
            ("mean_rank_imbalance", num(per_decode_s(self.imbalance_sum))),
            ("step_ms_mean", ms(per_decode_s(self.decode_time) * 1e3)),
            ("step_dense_ms_mean", ms(per_decode_s(self.split[0]) * 1e3)),
            ("step_moe_ms_mean", ms(per_decode_s(self.split[1]) * 1e3)),
            (
                "step_all_to_all_ms_mean",
                ms(per_decode_s(self.split[2]) * 1e3),
            ),
            (
                "step_eplb_stall_ms_mean",
                ms(per_decode_s(self.split[3]) * 1e3),
            ),
            ("iterations", self.decode_iterations.to_string()),
            ("events", events.to_string()),
        ];
        // A benchmark ends with its last answer, a drain when its requests are done.
        let stopped_s = stopped.as_secs_f64();
        let simulated_s = if self.benchmark {
            stopped_s
        } else {
            stopped_s.max(self.end.as_secs_f64())
        };
        Report {
            summary,
            requests: match self.rows {
                Rows::Kept(rows) => rows,
                Rows::Dropped | Rows::Streamed { .. } => Vec::new(),
            },
            stats: SimStats {
                events,
                wall_s,
                simulated_s,
                events_per_wall_s: events as f64 / wall_s.max(1e-9),
                simulated_s_per_wall_s: simulated_s / wall_s.max(1e-9),
                iterations: self.iterations,
                kv_bytes_started,
                kv_bytes_delivered,
            },
            steady: verdict,
        }
    }
}

/// A latency quantile in ms; empty when nothing was recorded.
fn mean(l: &Latencies) -> String {
    if l.count() == 0 {
        String::new()
    } else {
        format!("{:.3}", l.mean_ms())
    }
}

fn quantile(l: &Latencies, q: f64) -> String {
    if l.count() == 0 {
        String::new()
    } else {
        format!("{:.3}", l.quantile_ms(q))
    }
}

/// `x` to the nearest 1/`per_unit` (nanoseconds of a value in seconds: 1e9), so that
/// requests.csv shows no float noise.
fn rounded(x: f64, per_unit: f64) -> f64 {
    (x * per_unit).round() / per_unit
}

/// A request's gaps between token-bearing steps, in microseconds, keeping only what its
/// 99th percentile needs: the count and the largest 1% (plus one). Serving touches this
/// once per request per step, so it stays small, the smallest kept gap inline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TailGaps {
    count: u32,
    keep: u32,
    smallest_kept: u32,
    /// The largest gaps seen, ascending.
    largest: Vec<u32>,
}

impl TailGaps {
    /// For a request that will have at most `steps` gaps.
    pub fn new(steps: u64) -> Self {
        TailGaps {
            keep: (steps / 100 + 2).min(u64::from(u32::MAX)) as u32,
            ..TailGaps::default()
        }
    }

    pub fn push(&mut self, gap_us: u32) {
        self.count += 1;
        let full = self.largest.len() as u32 >= self.keep;
        if full && gap_us <= self.smallest_kept {
            return;
        }
        let at = self.largest.partition_point(|&g| g < gap_us);
        if full {
            // The smallest leaves and the gap slides into place, in one pass over a few
            // entries (at >= 1: the gap is above the smallest).
            for i in 1..at {
                self.largest[i - 1] = self.largest[i];
            }
            self.largest[at - 1] = gap_us;
        } else {
            self.largest.insert(at, gap_us);
        }
        self.smallest_kept = self.largest[0];
    }

    /// The `q` quantile (nearest rank) in microseconds, for q >= 0.99; 0 for no gaps.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q * f64::from(self.count)).ceil() as u32).clamp(1, self.count);
        let from_top = (self.count - rank) as usize;
        let n = self.largest.len();
        debug_assert!(from_top < n, "keep enough gaps for q = {q}");
        f64::from(self.largest[n - 1 - from_top.min(n - 1)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kept tail gives the exact nearest-rank percentile of all the gaps.
    #[test]
    fn tail_gaps_give_the_exact_p99() {
        use rand::RngExt;
        let mut rng = crate::engine::RandomStreams::new(4).stream("gaps");
        for n in [1u32, 7, 100, 101, 1000, 4321] {
            let gaps: Vec<u32> = (0..n).map(|_| rng.random_range(1..50_000)).collect();
            let mut tail = TailGaps::new(u64::from(n));
            for &g in &gaps {
                tail.push(g);
            }
            let mut sorted = gaps.clone();
            sorted.sort_unstable();
            for q in [0.99, 1.0] {
                let rank = ((q * f64::from(n)).ceil() as usize).clamp(1, n as usize);
                assert_eq!(
                    tail.quantile_us(q),
                    f64::from(sorted[rank - 1]),
                    "n {n} q {q}"
                );
            }
        }
        assert_eq!(TailGaps::new(10).quantile_us(0.99), 0.0);
    }
}
