use super::*;
use crate::input;
use crate::serving::scenario;
use crate::testing::repo;
use proptest::prelude::*;

/// A small scenario, as text, with the knobs the properties vary.
fn scenario_text(seed: u64, arrivals: &str, policy: &str, layout: &str, overlap: bool) -> String {
    format!(
        "name: prop
topology: ../../topologies/gb200-nvl72.yaml
model: ../../models/deepseek-r1.yaml
seed: {seed}
duration_s: 3
warmup_s: 0.5
workload:
  arrivals: {arrivals}
  input: {{dist: uniform, min: 8, max: 600}}
  output: {{dist: uniform, min: 1, max: 60}}
  prefix_hit: 0.5
precision: {{experts: nvfp4, other: fp8, kv: fp8}}
mtp: {{drafts: 1}}
scheduling: {{policy: {policy}, micro_batch_overlap: {overlap}}}
instances:
{layout}"
    )
}

const DISAGGREGATED: &str = "  - {name: p, role: prefill, gpus: 0-3, max_batch: 2, max_tokens: 512}
  - {name: d, role: decode, gpus: 4-11, slots: 288, eplb: online, max_batch: 16, max_tokens: 64}
";
const AGGREGATED: &str =
    "  - {name: a, role: both, gpus: 0-7, replicas: 2, eplb: static, max_batch: 8, max_tokens: 256}
";

fn load(text: &str) -> LoadedScenario {
    let file = repo("tests/scenarios/prop.yaml");
    let tree = input::parse_tree(&file, text).unwrap();
    scenario::from_tree(&file, &tree).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `sim`'s events up to the end of its arrivals.
fn run_to_end(sim: &mut Simulation) {
    let mut scheduler = Scheduler::new();
    sim.start(&mut scheduler).unwrap();
    let end = sim.end;
    scheduler.run_until(sim, end).unwrap();
}

/// Under prefill overload a KV-aware router counts what is queued at each prefill
/// instance: the queues grow together instead of one instance taking every arrival
/// while the KV it has reserved so far is no larger than the others'.
#[test]
fn kv_aware_spreads_an_overload_over_the_prefill_queues() {
    let layout =
        "  - {name: p, role: prefill, gpus: 0-3, replicas: 3, max_batch: 2, max_tokens: 1024}
  - {name: d, role: decode, gpus: 12-19, max_batch: 64, max_tokens: 128}
";
    let text = scenario_text(
        3,
        "{kind: poisson, rate_per_s: 300}",
        "kv_aware",
        layout,
        false,
    )
    .replace(
        "{dist: uniform, min: 8, max: 600}",
        "{dist: fixed, tokens: 2000}",
    );
    let loaded = load(&text);
    let mut sim = Simulation::new(&loaded, RunLength::of(&loaded.scenario)).unwrap();
    run_to_end(&mut sim);
    let queued: Vec<usize> = sim.instances[..3].iter().map(|i| i.waiting.len()).collect();
    let (least, most) = (queued.iter().min().unwrap(), queued.iter().max().unwrap());
    assert!(*least > 50, "overloaded: {queued:?}");
    assert!(*most as f64 <= 1.2 * *least as f64, "{queued:?}");
}

/// Finished requests leave memory: the store holds the requests in flight (and the
/// holes between them), not every request the run has seen.
#[test]
fn the_request_store_follows_the_requests_in_flight() {
    let loaded = load(&scenario_text(
        3,
        "{kind: poisson, rate_per_s: 100}",
        "fcfs",
        AGGREGATED,
        false,
    ));
    let mut sim = Simulation::new(&loaded, RunLength::of(&loaded.scenario)).unwrap();
    run_to_end(&mut sim);
    let (seen, live) = (sim.next_id, sim.requests.len() as u64);
    let kept = sim.requests.items.len() as u64;
    assert!(seen > 200, "{seen} requests");
    // What is held beyond the live requests: holes between them, a few.
    assert!(
        kept >= live && kept - live < seen / 4,
        "{kept} held, {live} live of {seen}"
    );
    assert_eq!(sim.requests.first_id + kept, seen);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    /// Requests are conserved, every finished request got exactly the tokens it asked
    /// for, times run forward, and KV bytes delivered never exceed those sent.
    #[test]
    fn requests_and_tokens_are_conserved(
        seed in 0u64..1000,
        open in any::<bool>(),
        policy in prop::sample::select(vec!["fcfs", "shortest_prompt_first", "kv_aware"]),
        disaggregated in any::<bool>(),
        overlap in any::<bool>(),
    ) {
        let arrivals = if open {
            "{kind: gamma, rate_per_s: 60, cv: 2}"
        } else {
            "{kind: closed_loop, users: 24, ramp_up_s: 0.2}"
        };
        let layout = if disaggregated { DISAGGREGATED } else { AGGREGATED };
        let loaded = load(&scenario_text(seed, arrivals, policy, layout, overlap));
        let report = run(&loaded).unwrap();
        let v = |c: &str| report.value(c).unwrap();
        prop_assert!(v("requests_arrived") > 0.0);
        prop_assert_eq!(
            v("requests_arrived"),
            v("requests_completed_all") + v("requests_pending") + v("requests_rejected")
        );
        prop_assert_eq!(report.requests.len() as f64, v("requests_completed_all"));
        for r in &report.requests {
            prop_assert_eq!(r.generated_tokens, r.output_tokens);
            prop_assert!(r.arrival_s <= r.first_token_s && r.first_token_s <= r.finish_s);
            prop_assert!(r.finish_s <= 3.0);
        }
        prop_assert!(report.stats.kv_bytes_delivered <= report.stats.kv_bytes_started);
        if disaggregated {
            prop_assert!(report.stats.kv_bytes_delivered > 0.0);
        }
        // The same seed, the same result.
        prop_assert_eq!(&run(&loaded).unwrap().summary, &report.summary);
    }
}

#[test]
fn kv_transfers_delay_the_second_token_in_disaggregated_serving() {
    let loaded = load(&scenario_text(
        1,
        "{kind: closed_loop, users: 4}",
        "fcfs",
        DISAGGREGATED,
        false,
    ));
    let report = run(&loaded).unwrap();
    let bytes = report.stats.kv_bytes_started;
    assert!(bytes > 0.0);
    // Every finished request with more than one token moved its prompt's KV cache.
    let moved: u64 = report
        .requests
        .iter()
        .filter(|r| r.output_tokens > 1)
        .map(|r| r.input_tokens + 1)
        .sum();
    let per_token = loaded.scenario.instances[1].plan.kv_bytes_per_token;
    assert!(
        bytes >= moved as f64 * per_token * 0.999,
        "{bytes} vs {moved} tokens"
    );
}

/// A request the prefill instance could hold but no decode instance could is refused at
/// arrival: it never takes a prefill rank (whose work would be thrown away at hand-off).
#[test]
fn what_no_decode_instance_holds_is_refused_before_its_prefill() {
    let loaded = load(&scenario_text(
        3,
        "{kind: poisson, rate_per_s: 200}",
        "fcfs",
        DISAGGREGATED,
        false,
    ));
    let mut sim = Simulation::new(&loaded, RunLength::of(&loaded.scenario)).unwrap();
    // Room for every prompt (at most 600 tokens) at prefill; at decode, for prompt plus
    // answer (up to 660) of at most 400.
    sim.instances[1].kv_capacity = 400;
    run_to_end(&mut sim);
    let (refused, completed) = sim.metrics.memory_refused_and_completed();
    assert!(refused > 10, "{refused}");
    // Ids go to kept requests only: every one finished or is in flight, none was
    // refused at its hand-off to decode.
    assert!(completed > 100, "{completed}");
    assert_eq!(completed + sim.requests.len() as u64, sim.next_id);
}
