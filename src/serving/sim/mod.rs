//! The serving model on the event engine. Requests arrive, wait in an instance's queue,
//! are admitted to a DP rank when it has a batch slot and room in its KV cache (the whole
//! prompt and answer are reserved up front, so nothing is ever evicted), and run in
//! continuously batched iterations: decode steps plus prefill chunks up to the rank's token
//! budget. Disaggregated prefill hands each request to a decode instance, whose rank
//! reserves the KV cache and pulls it over the network. MTP drafts are accepted by draws
//! from the `acceptance` stream.

use super::kv_network::KvNetwork;
use super::metrics::{Collector, FinishedRequest, InFlight, Refused, Report, RunEnd, TailGaps};
use super::policy::{self, Choice, SchedulingPolicy};
use super::pricing::{Pricer, RankWork, prefill_capacity_tok_s};
use super::scenario::{
    Arrivals, InstanceSpec, LoadedScenario, Role, RunLength, Scenario, WarmupRule,
};
use super::steady;
use super::workload::{ClosedLoop, OpenLoop, RequestSpec, Shape};
use crate::cost::network::{LinkEfficiency, resources};
use crate::cost::step::PrefillChunk;
use crate::engine::{
    Control, Model, RandomStreams, ScheduleError, Scheduler, SimDuration, SimTime,
};
use petgraph::graph::NodeIndex;
use rand::RngExt;
use rand::distr::Bernoulli;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Queued,
    Prefill,
    /// Prompt done on a prefill rank; waiting for a decode rank.
    AwaitingDecode,
    /// Its KV cache is moving to the decode rank.
    Transferring,
    Decode,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub id: u64,
    pub spec: RequestSpec,
    /// The closed-loop user who sent it.
    user: Option<u64>,
    pub stage: Stage,
    pub prefilled: u64,
    pub generated: u64,
    pub first_token: Option<SimTime>,
    last_token: SimTime,
    /// Gaps between token-bearing steps.
    pub gaps: TailGaps,
    /// (instance, rank) running it now.
    home: Option<(usize, usize)>,
    /// (instance, rank) holding its prompt's KV cache while it moves (disaggregated).
    prefill_home: Option<(usize, usize)>,
    pub prefill_instance: Option<usize>,
    pub decode_instance: Option<usize>,
}

/// Requests by id. Ids are handed out in order, so a deque indexed by id less the oldest
/// kept one holds them; a finished request leaves a hole, and holes at the front are let
/// go, so memory follows the requests in flight, not all that ever ran.
#[derive(Debug, Default)]
struct Requests {
    items: std::collections::VecDeque<Option<Request>>,
    /// Id of `items[0]`.
    first_id: u64,
    live: usize,
}

impl Requests {
    fn slot(&self, id: u64) -> Option<usize> {
        id.checked_sub(self.first_id).map(|i| i as usize)
    }

    fn insert(&mut self, id: u64, r: Request) {
        debug_assert_eq!(self.slot(id), Some(self.items.len()));
        if self.items.is_empty() {
            self.first_id = id;
        }
        self.items.push_back(Some(r));
        self.live += 1;
    }

    fn get_mut(&mut self, id: &u64) -> Option<&mut Request> {
        let i = self.slot(*id)?;
        self.items.get_mut(i).and_then(Option::as_mut)
    }

    fn remove(&mut self, id: &u64) -> Option<Request> {
        let i = self.slot(*id)?;
        let r = self.items.get_mut(i).and_then(Option::take);
        self.live -= usize::from(r.is_some());
        while let Some(None) = self.items.front() {
            self.items.pop_front();
            self.first_id += 1;
        }
        r
    }

    fn len(&self) -> usize {
        self.live
    }

    /// Live requests that arrived at or after `t`.
    fn live_since(&self, t: SimTime) -> u64 {
        self.items
            .iter()
            .flatten()
            .filter(|r| r.spec.arrival >= t)
            .count() as u64
    }
}

impl std::ops::Index<&u64> for Requests {
    type Output = Request;

    fn index(&self, id: &u64) -> &Request {
        self.slot(*id)
            .and_then(|i| self.items.get(i))
            .and_then(Option::as_ref)
            .expect("requests are looked up while they live")
    }
}

#[derive(Debug, Clone, Default)]
struct Rank {
    /// Requests prefilling or decoding here, in admission order.
    active: Vec<u64>,
    /// Batch slots taken (active, plus requests whose KV cache is on its way here).
    slots: u64,
    kv_used: u64,
}

struct Instance<'a> {
    spec: &'a InstanceSpec,
    pricer: Pricer<'a>,
    ranks: Vec<Rank>,
    /// First GPU of each DP rank (the end point of KV transfers).
    rank_gpu: Vec<NodeIndex>,
    kv_capacity: u64,
    /// (policy key, join order) -> request.
    waiting: BTreeMap<(u64, u64), u64>,
    /// KV tokens the waiting requests will reserve here.
    waiting_kv: u64,
    cursor: usize,
    /// The iteration in flight: per rank, (request, prompt tokens; 0 = a decode step).
    running: Option<Vec<Vec<(u64, u64)>>>,
}

impl Instance<'_> {
    fn kv_choice(&self, index: usize) -> Choice {
        Choice {
            index,
            kv_used: self.ranks.iter().map(|r| r.kv_used).sum(),
            kv_queued: self.waiting_kv,
            kv_capacity: self.kv_capacity * self.ranks.len() as u64,
        }
    }

    /// KV tokens a request reserves here.
    fn need(&self, spec: &RequestSpec) -> u64 {
        match self.spec.role {
            Role::Prefill => spec.input_tokens,
            Role::Decode | Role::Both => spec.input_tokens + spec.output_tokens,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Arrival,
    /// A closed-loop user's first request.
    UserStart(u64),
    IterationDone(usize),
    /// A KV transfer may have finished (planned in this generation of the network).
    KvDone(u64),
}

enum Source {
    Open(Box<OpenLoop>),
    Closed(Box<ClosedLoop>),
    Trace(std::vec::IntoIter<RequestSpec>),
}

pub struct Simulation<'a> {
    loaded: &'a LoadedScenario,
    instances: Vec<Instance<'a>>,
    policy: Box<dyn SchedulingPolicy>,
    requests: Requests,
    next_id: u64,
    joins: u64,
    source: Source,
    next_arrival: Option<RequestSpec>,
    acceptance: ChaCha8Rng,
    /// Per draft position (1-based, less one): whether the draft is accepted, given the
    /// ones before it were.
    draft_accepted: Vec<Bernoulli>,
    network: KvNetwork<'a>,
    entry_cursor: usize,
    decode_cursor: usize,
    /// Arrivals stop here.
    end: SimTime,
    /// The run stops here (after the drain), or earlier when nothing is left to do.
    stop: SimTime,
    /// Routing is drawn coarsely before this (see [`FAST_FORWARD_SHARE`]).
    fast_forward_until: SimTime,
    /// The decode instance with the largest KV cache per rank; `None` when serving is
    /// aggregated.
    largest_decode: Option<usize>,
    pub metrics: Collector,
}

/// Share of the warm-up whose iterations draw routing coarsely ([`Pricer::fast_forward`]):
/// the first half brings the batches up to their steady state, the second settles them
/// under fine draws before the window opens (as architecture simulators fast-forward, then
/// warm in detail, then measure).
const FAST_FORWARD_SHARE: f64 = 0.5;

/// The most requests a run holds (queued or in service): a backlog no deployment works
/// off (its run is overloaded long before), and ~300 MB of memory. Arrivals beyond it are
/// refused and counted (`requests_rejected_backlog`).
pub const MAX_IN_SYSTEM: usize = 1_000_000;

/// Times a run is simulated again with its warm-up moved past a transient: a transient
/// still there after two moves is a trend, which the verdict says.
const MAX_WARMUP_MOVES: usize = 2;

/// Runs the measured window in batches (their means give the throughput's confidence
/// interval) and, with `stop_when`, ends the window, the arrivals and the run (after any
/// drain) at the first batch where the interval is narrow enough.
fn run_batches(
    sim: &mut Simulation,
    s: &mut Scheduler<Event>,
    sc: &Scenario,
    length: RunLength,
) -> Result<(), String> {
    if sc.workload.arrivals.is_benchmark() {
        return Ok(());
    }
    let batch_s = sim.metrics.batch_s();
    let mut k = 1u64;
    loop {
        let t_s = length.warmup_s + k as f64 * batch_s;
        if t_s > length.limit_s {
            return Ok(());
        }
        let t = at_s(t_s)?;
        s.run_until(sim, t).map_err(|e| e.to_string())?;
        // Waiting for a rank: in an instance's queue (for prefill, or prefilled and
        // waiting for a decode rank).
        let waiting = sim.instances.iter().map(|i| i.waiting.len() as u64).sum();
        sim.metrics.close_batch(sim.requests.len() as u64, waiting);
        // Known well enough: enough batches and requests, a narrow interval, and most
        // measured requests done (their latencies not censored by the window's end).
        if let Some(w) = sc.stop_when
            && sim.metrics.batches() >= crate::serving::scenario::MIN_BATCHES
            && sim.metrics.finished_measured() >= crate::serving::scenario::MIN_FINISHED
            && sim
                .metrics
                .output_relative_ci()
                .is_some_and(|ci| ci <= w.relative_ci)
            && !steady::censored(
                sim.metrics.finished_measured(),
                sim.requests.live_since(sim.metrics.warmup()),
            )
        {
            sim.end = t;
            sim.stop = at_s(t_s + sc.drain_s)?;
            sim.metrics.end_window(t);
            return Ok(());
        }
        k += 1;
    }
}

/// The simulated time `seconds` after the start.
fn at_s(seconds: f64) -> Result<SimTime, String> {
    let d = SimDuration::from_secs_f64(seconds).map_err(|e| e.to_string())?;
    SimTime::ZERO.checked_add(d).map_err(|e| e.to_string())
}

/// Opens requests.csv afresh (emptied) for each simulation of a run.
pub type RowsSink<'s> = &'s mut dyn FnMut() -> Result<Box<dyn std::io::Write>, String>;

/// Runs a loaded scenario to its end and reports what was measured (with every finished
/// request's row when the scenario writes requests.csv).
pub fn run(loaded: &LoadedScenario) -> Result<Report, String> {
    run_rows(loaded, None)
}

/// Runs a loaded scenario, writing each finished request's row to what `rows` opens as it
/// finishes (requests.csv, in the order requests finish) instead of holding them: memory
/// stays bounded over runs of any length.
pub fn run_streaming(loaded: &LoadedScenario, rows: RowsSink) -> Result<Report, String> {
    run_rows(loaded, Some(rows))
}

/// Runs a scenario; with the MSER-5 warm-up rule, again with the warm-up moved past a
/// transient the window still starts with (at most [`MAX_WARMUP_MOVES`] times).
fn run_rows(loaded: &LoadedScenario, mut rows: Option<RowsSink>) -> Result<Report, String> {
    let sc = &loaded.scenario;
    let mut length = RunLength::of(sc);
    let mut moves = 0;
    loop {
        let sink = match rows.as_mut() {
            Some(open) => Some(open()?),
            None => None,
        };
        let report = run_once(loaded, length, sink)?;
        let transient_s = report.steady.transient_s;
        if sc.warmup_rule == WarmupRule::Fixed || transient_s <= 0.0 || moves == MAX_WARMUP_MOVES {
            return Ok(report);
        }
        length = length.moved(transient_s);
        moves += 1;
    }
}

/// One simulation of `loaded` for `length`.
fn run_once(
    loaded: &LoadedScenario,
    length: RunLength,
    rows: Option<Box<dyn std::io::Write>>,
) -> Result<Report, String> {
    let wall = std::time::Instant::now();
    let mut sim = Simulation::new(loaded, length)?;
    if let Some(w) = rows {
        sim.metrics.stream_rows(w);
    }
    let mut scheduler = Scheduler::new();
    sim.start(&mut scheduler).map_err(|e| e.to_string())?;
    run_batches(&mut sim, &mut scheduler, &loaded.scenario, length)?;
    let stop = sim.stop;
    let reason = scheduler
        .run_until(&mut sim, stop)
        .map_err(|e| e.to_string())?;
    debug_assert_ne!(reason, crate::engine::StopReason::Stopped);
    let in_flight = InFlight {
        all: sim.requests.len() as u64,
        measured: sim.requests.live_since(sim.metrics.warmup()),
    };
    let events = scheduler.events_handled();
    let run = RunEnd {
        in_flight,
        stopped: scheduler.now(),
        events,
        wall_s: wall.elapsed().as_secs_f64(),
        kv_bytes_started: sim.network.bytes_started,
        kv_bytes_delivered: sim.network.bytes_delivered,
    };
    sim.metrics
        .finish_rows()
        .map_err(|e| format!("requests.csv: {e}"))?;
    Ok(sim.metrics.report(&loaded.scenario, run))
}

impl<'a> Simulation<'a> {
    pub fn new(loaded: &'a LoadedScenario, length: RunLength) -> Result<Self, String> {
        let sc = &loaded.scenario;
        let topo = &loaded.topology;
        let streams = RandomStreams::new(sc.seed);
        let mut instances = Vec::new();
        for spec in &sc.instances {
            let pricer = Pricer::new(topo, &loaded.model, spec, &sc.moe, sc.mtp, &streams)
                .map_err(|e| format!("instance {}: {e}", spec.name))?;
            let tp = spec.attention_tp as usize;
            instances.push(Instance {
                spec,
                pricer,
                ranks: vec![Rank::default(); spec.dp_ranks()],
                rank_gpu: spec
                    .gpus
                    .iter()
                    .step_by(tp)
                    .map(|&g| topo.gpus[g])
                    .collect(),
                kv_capacity: spec.plan.kv_tokens.floor() as u64,
                waiting: BTreeMap::new(),
                waiting_kv: 0,
                cursor: 0,
                running: None,
            });
        }
        let shape = Shape {
            input: sc.workload.input.clone(),
            output: sc.workload.output.clone(),
            prefix_hit: sc.workload.prefix_hit,
        };
        let source = match &sc.workload.arrivals {
            Arrivals::Poisson { rate_per_s } => {
                Source::Open(Box::new(OpenLoop::new(*rate_per_s, 1.0, shape, &streams)?))
            }
            Arrivals::Gamma { rate_per_s, cv } => {
                Source::Open(Box::new(OpenLoop::new(*rate_per_s, *cv, shape, &streams)?))
            }
            Arrivals::ClosedLoop { users, .. } => {
                Source::Closed(Box::new(ClosedLoop::new(*users, None, shape, &streams)))
            }
            Arrivals::Benchmark {
                concurrency,
                prompts,
            } => Source::Closed(Box::new(ClosedLoop::new(
                *concurrency,
                Some(*prompts),
                shape,
                &streams,
            ))),
            Arrivals::Trace { .. } => Source::Trace(
                loaded
                    .trace
                    .clone()
                    .ok_or("the trace was not loaded")?
                    .into_iter(),
            ),
        };
        let mut metrics = Collector::new(sc, length, at_s(length.warmup_s)?, at_s(length.limit_s)?);
        if let Some(p) = sc
            .instances
            .iter()
            .filter(|i| i.role == Role::Prefill)
            .max_by_key(|i| i.ep())
        {
            let w = &sc.workload;
            let prompt = w.input.typical();
            let cached = (prompt as f64 * w.prefix_hit).floor() as u64;
            let tok_s = prefill_capacity_tok_s(
                topo,
                &loaded.model,
                p,
                &sc.moe,
                sc.mtp,
                &streams,
                (prompt - cached, cached),
            )
            .map_err(|e| format!("instance {}: {e}", p.name))?;
            metrics.prefill_capacity(tok_s, p.ep());
        }
        let eff = LinkEfficiency::for_gpu(topo, topo.gpus[sc.instances[0].gpus[0]])
            .ok_or("the topology gives no link efficiencies for its GPUs")?;
        let end = at_s(length.limit_s)?;
        let stop = at_s(length.limit_s + sc.drain_s)?;
        let largest_decode = (0..instances.len())
            .filter(|&i| instances[i].spec.role == Role::Decode)
            .max_by_key(|&i| instances[i].kv_capacity);
        let draft_accepted = (1..=sc.mtp.drafts)
            .map(|k| Bernoulli::new(sc.mtp.acceptance.at(k)).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(Simulation {
            loaded,
            instances,
            policy: policy::by_name(sc.policy, &sc.policy_parameters),
            requests: Requests::default(),
            next_id: 0,
            joins: 0,
            source,
            next_arrival: None,
            acceptance: streams.stream("acceptance"),
            draft_accepted,
            network: KvNetwork::new(topo, resources(topo, eff)),
            entry_cursor: 0,
            decode_cursor: 0,
            end,
            stop,
            fast_forward_until: at_s(length.warmup_s * FAST_FORWARD_SHARE)?,
            largest_decode,
            metrics,
        })
    }

    /// Schedules the first arrivals.
    pub fn start(&mut self, s: &mut Scheduler<Event>) -> Result<(), Error> {
        let users = match &self.source {
            Source::Closed(c) => c.users,
            _ => return self.schedule_next_arrival(s),
        };
        let ramp_up_s = match self.loaded.scenario.workload.arrivals {
            // Benchmark clients all start at once.
            Arrivals::ClosedLoop { ramp_up_s, .. } => ramp_up_s,
            _ => 0.0,
        };
        for user in 0..users {
            let at = SimDuration::from_secs_f64(ramp_up_s * user as f64 / users as f64)
                .map_err(|e| Error(e.to_string()))?;
            s.schedule_in(at, Event::UserStart(user))?;
        }
        Ok(())
    }

    fn schedule_next_arrival(&mut self, s: &mut Scheduler<Event>) -> Result<(), Error> {
        let next = match &mut self.source {
            Source::Open(o) => o.next_request(),
            Source::Trace(t) => t.next(),
            Source::Closed(_) => None,
        };
        if let Some(spec) = next.filter(|r| r.arrival <= self.end) {
            s.schedule_at(spec.arrival, Event::Arrival)?;
            self.next_arrival = Some(spec);
        }
        Ok(())
    }

    /// A new request enters: to an entry instance's queue (prefill or aggregated).
    fn arrive(
        &mut self,
        s: &mut Scheduler<Event>,
        spec: RequestSpec,
        user: Option<u64>,
    ) -> Result<(), Error> {
        self.metrics.arrived(s.now(), spec.output_tokens);
        // An overload's queue would grow until memory runs out (~300 bytes a request).
        if self.requests.len() >= MAX_IN_SYSTEM {
            self.metrics.rejected(Refused::Backlog);
            return Ok(());
        }
        // Longer than the model's context: no engine would take it.
        if self
            .loaded
            .model
            .context_tokens
            .is_some_and(|limit| spec.input_tokens + spec.output_tokens > limit)
        {
            self.metrics.rejected(Refused::Context);
            return Ok(());
        }
        let entry = |i: &Instance| matches!(i.spec.role, Role::Prefill | Role::Both);
        let choices: Vec<Choice> = (0..self.instances.len())
            .filter(|&i| entry(&self.instances[i]))
            .filter(|&i| self.instances[i].need(&spec) <= self.instances[i].kv_capacity)
            .map(|i| self.instances[i].kv_choice(i))
            .collect();
        // Disaggregated: a decode instance must hold it too, or its prefill is wasted and
        // it is refused only after waiting for it.
        let decodable = self.largest_decode.is_none_or(|d| {
            let inst = &self.instances[d];
            inst.need(&spec) <= inst.kv_capacity
        });
        if choices.is_empty() || !decodable {
            // No rank could ever hold it: refused, not queued forever (a closed-loop user
            // whose request is refused stops sending).
            self.metrics.rejected(Refused::Memory);
            return Ok(());
        }
        // Ids are handed out only to requests that are kept: the store is indexed by id.
        let id = self.next_id;
        self.next_id += 1;
        let pick = choices[self.policy.place(&choices, self.entry_cursor)].index;
        self.entry_cursor = pick + 1;
        self.requests.insert(
            id,
            Request {
                id,
                spec,
                user,
                stage: Stage::Queued,
                prefilled: 0,
                generated: 0,
                first_token: None,
                last_token: SimTime::ZERO,
                gaps: TailGaps::new(spec.output_tokens),
                home: None,
                prefill_home: None,
                prefill_instance: Some(pick),
                decode_instance: None,
            },
        );
        self.enqueue(pick, id);
        self.admit(s, pick)?;
        self.kick(s, pick)
    }

    fn enqueue(&mut self, instance: usize, id: u64) {
        let spec = &self.requests[&id].spec;
        let key = self.policy.queue_key(spec);
        self.joins += 1;
        let inst = &mut self.instances[instance];
        inst.waiting_kv += inst.need(spec);
        inst.waiting.insert((key, self.joins), id);
    }

    /// Admits waiting requests, in queue order, while a rank has a batch slot and KV room.
    fn admit(&mut self, s: &mut Scheduler<Event>, i: usize) -> Result<(), Error> {
        loop {
            let inst = &self.instances[i];
            let Some((&key, &id)) = inst.waiting.iter().next() else {
                return Ok(());
            };
            let need = inst.need(&self.requests[&id].spec);
            let choices: Vec<Choice> = inst
                .ranks
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    r.slots < inst.spec.max_batch && r.kv_used + need <= inst.kv_capacity
                })
                .map(|(index, r)| Choice {
                    index,
                    kv_used: r.kv_used,
                    kv_queued: 0,
                    kv_capacity: inst.kv_capacity,
                })
                .collect();
            if choices.is_empty() {
                return Ok(());
            }
            let rank = choices[self.policy.place(&choices, inst.cursor)].index;
            let inst = &mut self.instances[i];
            inst.cursor = rank + 1;
            inst.waiting.remove(&key);
            inst.waiting_kv -= need;
            inst.ranks[rank].slots += 1;
            inst.ranks[rank].kv_used += need;
            let role = inst.spec.role;
            let to_gpu = inst.rank_gpu[rank];
            let tp = inst.spec.attention_tp as f64;
            let kv_bytes_per_token = inst.spec.plan.kv_bytes_per_token;
            let r = self.requests.get_mut(&id).expect("queued requests exist");
            r.home = Some((i, rank));
            if role == Role::Decode {
                r.stage = Stage::Transferring;
                r.decode_instance = Some(i);
                let (pi, pr) = r
                    .prefill_home
                    .expect("decode requests come from a prefill rank");
                let from_gpu = self.instances[pi].rank_gpu[pr];
                // The prompt's KV cache (and its first token's), every layer, on each GPU of
                // the attention group.
                let bytes = (r.spec.input_tokens + 1) as f64 * kv_bytes_per_token * tp;
                self.network.add(s.now(), id, from_gpu, to_gpu, bytes)?;
            } else {
                r.stage = Stage::Prefill;
                r.prefilled = r.spec.cached_tokens;
                self.instances[i].ranks[rank].active.push(id);
            }
        }
    }

    fn schedule_kv(
        &mut self,
        s: &mut Scheduler<Event>,
        next: Option<SimTime>,
    ) -> Result<(), Error> {
        if let Some(at) = next {
            s.schedule_at(at.max(s.now()), Event::KvDone(self.network.generation))?;
        }
        Ok(())
    }

    /// Starts an iteration if the instance is idle and has work.
    fn kick(&mut self, s: &mut Scheduler<Event>, i: usize) -> Result<(), Error> {
        if self.instances[i].running.is_some() {
            return Ok(());
        }
        let drafts = self.loaded.scenario.mtp.drafts;
        let inst = &self.instances[i];
        let mut plan: Vec<Vec<(u64, u64)>> = Vec::with_capacity(inst.ranks.len());
        let mut work: Vec<RankWork> = Vec::with_capacity(inst.ranks.len());
        let mut any = false;
        let mut kv_used = 0;
        let mut prefilling: Vec<&Request> = Vec::new();
        for rank in &inst.ranks {
            kv_used += rank.kv_used;
            let mut steps = Vec::with_capacity(rank.active.len());
            let mut w = RankWork::default();
            let mut context = 0;
            prefilling.clear();
            for &id in &rank.active {
                let r = &self.requests[&id];
                match r.stage {
                    Stage::Decode => {
                        w.batch += 1;
                        context += r.spec.input_tokens + r.generated;
                        steps.push((id, 0));
                    }
                    Stage::Prefill => prefilling.push(r),
                    _ => {}
                }
            }
            let mut budget = inst.spec.max_tokens.saturating_sub(w.batch * (1 + drafts));
            for r in &prefilling {
                if budget == 0 {
                    break;
                }
                let tokens = (r.spec.input_tokens - r.prefilled).min(budget);
                budget -= tokens;
                w.chunks.push(PrefillChunk {
                    tokens,
                    prefix: r.prefilled,
                });
                steps.push((r.id, tokens));
            }
            w.context = context.checked_div(w.batch).unwrap_or(0);
            any |= !steps.is_empty();
            plan.push(steps);
            work.push(w);
        }
        if !any {
            return Ok(());
        }
        let kv_share = kv_used as f64 / (inst.kv_capacity * inst.ranks.len() as u64).max(1) as f64;
        let role = inst.spec.role;
        let pricer = &mut self.instances[i].pricer;
        pricer.fast_forward(s.now() < self.fast_forward_until);
        let price = pricer.price(&work)?;
        let duration =
            SimDuration::from_secs_f64(price.seconds).map_err(|e| Error(e.to_string()))?;
        self.metrics
            .iteration(s.now(), role, &work, &price, kv_share);
        self.instances[i].running = Some(plan);
        s.schedule_in(duration, Event::IterationDone(i))?;
        Ok(())
    }

    fn iteration_done(&mut self, s: &mut Scheduler<Event>, i: usize) -> Result<(), Error> {
        let now = s.now();
        let plan = std::mem::take(
            self.instances[i]
                .running
                .as_mut()
                .expect("an iteration was running"),
        );
        let drafts = self.loaded.scenario.mtp.drafts;
        let role = self.instances[i].spec.role;
        let mut finished = Vec::new();
        let mut handoffs = Vec::new();
        let mut decoded = 0;
        let mut gaps: Vec<(u64, u64)> = Vec::new();
        let warmup = self.metrics.warmup();
        // A request's own gaps only make its row's ITL p99.
        let own_gaps = self.metrics.wants_rows();
        for steps in &plan {
            for &(id, chunk) in steps {
                let r = self.requests.get_mut(&id).expect("running requests exist");
                if chunk == 0 {
                    let mut accepted = 1;
                    while accepted <= drafts
                        && self
                            .acceptance
                            .sample(self.draft_accepted[accepted as usize - 1])
                    {
                        accepted += 1;
                    }
                    let n = accepted.min(r.spec.output_tokens - r.generated);
                    r.generated += n;
                    let gap_us = (now.as_ps() - r.last_token.as_ps() + 500_000) / 1_000_000;
                    if own_gaps {
                        r.gaps.push(gap_us.min(u64::from(u32::MAX)) as u32);
                    }
                    if r.spec.arrival >= warmup {
                        // Most requests of a step share its gap: count them together.
                        match gaps.iter_mut().find(|(g, _)| *g == gap_us) {
                            Some((_, c)) => *c += 1,
                            None => gaps.push((gap_us, 1)),
                        }
                    }
                    r.last_token = now;
                    decoded += n;
                } else {
                    r.prefilled += chunk;
                    self.metrics.input_tokens(now, chunk);
                    if r.prefilled < r.spec.input_tokens {
                        continue;
                    }
                    r.generated = 1;
                    r.first_token = Some(now);
                    r.last_token = now;
                    self.metrics.output_tokens(now, 1);
                    if r.spec.output_tokens > 1 {
                        match role {
                            Role::Both => r.stage = Stage::Decode,
                            _ => {
                                r.stage = Stage::AwaitingDecode;
                                handoffs.push(id);
                            }
                        }
                    }
                }
                if r.generated >= r.spec.output_tokens {
                    finished.push(id);
                }
            }
        }
        self.metrics.output_tokens(now, decoded);
        for (gap_us, count) in gaps {
            self.metrics.token_gaps(gap_us, count);
        }
        // Still marked running while requests move on, so that nothing they trigger starts
        // this instance's next iteration before the finished ones have left it.
        for id in handoffs {
            self.hand_off(s, i, id)?;
        }
        for id in finished {
            self.finish(s, id)?;
        }
        self.instances[i].running = None;
        self.admit(s, i)?;
        self.kick(s, i)
    }

    /// A prefilled request leaves its prefill rank's batch (its KV cache stays until it has
    /// moved) and queues for a decode instance.
    fn hand_off(&mut self, s: &mut Scheduler<Event>, i: usize, id: u64) -> Result<(), Error> {
        let (_, rank) = self.requests[&id]
            .home
            .expect("prefilled requests have a home");
        let r = &mut self.instances[i].ranks[rank];
        r.active.retain(|&x| x != id);
        r.slots -= 1;
        let spec = self.requests[&id].spec;
        let choices: Vec<Choice> = (0..self.instances.len())
            .filter(|&d| self.instances[d].spec.role == Role::Decode)
            .filter(|&d| self.instances[d].need(&spec) <= self.instances[d].kv_capacity)
            .map(|d| self.instances[d].kv_choice(d))
            .collect();
        let req = self.requests.get_mut(&id).expect("exists");
        req.prefill_home = req.home.take();
        // Arrival refused what no decode instance holds.
        if choices.is_empty() {
            return Err(Error(format!(
                "request {id} was admitted, yet no decode instance can hold it"
            )));
        }
        let pick = choices[self.policy.place(&choices, self.decode_cursor)].index;
        self.decode_cursor = pick + 1;
        self.enqueue(pick, id);
        self.admit(s, pick)
    }

    /// Frees the KV cache a request's prompt held on its prefill rank.
    fn release_prefill(&mut self, id: u64) {
        let r = &self.requests[&id];
        if let Some((pi, pr)) = r.prefill_home {
            let need = self.instances[pi].need(&r.spec);
            self.instances[pi].ranks[pr].kv_used -= need;
        }
    }

    fn kv_done(&mut self, s: &mut Scheduler<Event>, generation: u64) -> Result<(), Error> {
        let (done, next) = self.network.complete(s.now(), generation);
        self.schedule_kv(s, next)?;
        let mut touched = Vec::new();
        for id in done {
            self.release_prefill(id);
            let r = self
                .requests
                .get_mut(&id)
                .expect("transferring requests exist");
            let (pi, _) = r
                .prefill_home
                .take()
                .expect("transfers start at a prefill rank");
            let (di, dr) = r.home.expect("transfers end at a decode rank");
            r.stage = Stage::Decode;
            self.instances[di].ranks[dr].active.push(id);
            touched.extend([pi, di]);
        }
        touched.sort_unstable();
        touched.dedup();
        for i in touched {
            self.admit(s, i)?;
            self.kick(s, i)?;
        }
        Ok(())
    }

    fn finish(&mut self, s: &mut Scheduler<Event>, id: u64) -> Result<(), Error> {
        let r = self.requests.remove(&id).expect("finished requests exist");
        if let Some((i, rank)) = r.home {
            let need = self.instances[i].need(&r.spec);
            let slot = &mut self.instances[i].ranks[rank];
            slot.active.retain(|&x| x != id);
            slot.slots -= 1;
            slot.kv_used -= need;
        }
        let name = |i: Option<usize>| i.map_or("", |i| self.instances[i].spec.name.as_str());
        let (prefill, decode) = (name(r.prefill_instance), name(r.decode_instance));
        let done = FinishedRequest {
            id: r.id,
            spec: &r.spec,
            generated: r.generated,
            first_token: r.first_token,
            gaps: &r.gaps,
        };
        self.metrics.finished(done, s.now(), prefill, decode);
        self.next_for_user(s, r.user, s.now())
    }

    /// A closed-loop user sends its next request when the last one ends.
    fn next_for_user(
        &mut self,
        s: &mut Scheduler<Event>,
        user: Option<u64>,
        now: SimTime,
    ) -> Result<(), Error> {
        if now > self.end {
            return Ok(());
        }
        if let (Some(user), Source::Closed(c)) = (user, &mut self.source)
            && let Some(spec) = c.next_request(now)
        {
            return self.arrive(s, spec, Some(user));
        }
        Ok(())
    }
}

/// Why a run could not go on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

impl From<ScheduleError> for Error {
    fn from(e: ScheduleError) -> Self {
        Error(e.to_string())
    }
}

impl From<String> for Error {
    fn from(e: String) -> Self {
        Error(e)
    }
}

impl Model for Simulation<'_> {
    type Event = Event;
    type Error = Error;

    fn handle(&mut self, s: &mut Scheduler<Event>, event: Event) -> Result<Control, Error> {
        match event {
            Event::Arrival => {
                // A run that stopped early takes no arrivals after its end.
                if let Some(spec) = self.next_arrival.take().filter(|_| s.now() <= self.end) {
                    self.arrive(s, spec, None)?;
                }
                self.schedule_next_arrival(s)?;
            }
            Event::UserStart(user) => self.next_for_user(s, Some(user), s.now())?,
            Event::IterationDone(i) => self.iteration_done(s, i)?,
            Event::KvDone(generation) => self.kv_done(s, generation)?,
        }
        // Transfers that started during this event share one solve.
        let next = self.network.settle(s.now());
        self.schedule_kv(s, next)?;
        Ok(Control::Continue)
    }
}

#[cfg(test)]
mod tests;
