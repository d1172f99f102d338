//! The `epsim` command line: thin clap commands over the library.
//!
//! Exit codes: 0 success; 1 the job failed; 2 bad usage or bad input (every problem in the
//! input is printed, each with file, line and column).

mod cli;

use clap::{CommandFactory, Parser, Subcommand};
use cli::memory::{DeploymentArgs, TableFormat};
use cli::output::UsageError;
use cli::topo::TopoFormat;
use epsim::cost::profile::Backend;
use epsim::input::Diagnostics;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "epsim",
    version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("EPSIM_GIT_COMMIT"), ")"),
    about = "Discrete-event simulator of rack-scale Mixture-of-Experts LLM inference",
    after_help = "Examples:\n  epsim topo show topologies/gb200-nvl72.yaml\n  epsim validate topologies/*.yaml\n\nExit codes: 0 success, 1 the job failed, 2 bad usage or bad input."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect hardware topologies
    #[command(subcommand)]
    Topo(TopoCommand),
    /// Check input files and report every problem in them
    #[command(
        after_help = "Example:\n  epsim validate topologies/*.yaml topologies/gpus/*.yaml models/*.yaml\n\nTopologies, GPU specs, GPU families, models and scenarios are told apart by their fields.\nExit code 0 when every file is valid, 2 otherwise (every problem is printed)."
    )]
    Validate {
        /// Files to check
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Override a topology parameter (repeatable)
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_assignment)]
        set: Vec<(String, String)>,
    },
    /// Plan one GPU's memory: weights by class, activation reserve, KV cache, requests
    #[command(
        after_help = "Examples:\n  epsim memory --model deepseek-r1 --gpu b200-gb200 --ep 32 --slots 288 --weights nvfp4 --mtp 1\n  epsim memory --model qwen3-235b-a22b --gpu h100-sxm --ep 8 --attention tp:8 --format json\n\nA deployment that cannot work (slots that do not divide over EP, a model that does not\nfit) is an error saying why and by how much, with exit code 2."
    )]
    Memory {
        #[command(flatten)]
        deployment: DeploymentArgs,
        /// Input (prompt) tokens per request
        #[arg(long, default_value_t = 1024, value_parser = cli::limits::u64_in(0, cli::limits::MAX_TOKENS))]
        isl: u64,
        /// Output tokens per request
        #[arg(long, default_value_t = 1024, value_parser = cli::limits::u64_in(0, cli::limits::MAX_TOKENS))]
        osl: u64,
        #[arg(long, value_enum, default_value_t = TableFormat::Table)]
        format: TableFormat,
    },
    /// Price the MoE all-to-all (dispatch and combine) over a topology
    #[command(
        after_help = "Examples:\n  epsim a2a --topology topologies/gb200-nvl72.yaml --ep 8,16,32,64,72 --tokens-per-rank 1,128,2048\n  epsim a2a --topology topologies/gb200-nvl72.yaml --ep 8 --tokens-per-rank 2048 --dtype bf16 --routing spread\n  epsim a2a --topology topologies/h800-cluster.yaml --ep 8,16,32 --tokens-per-rank 128 --algorithm low-latency --format csv\n\nEP ranks are the first N GPUs of the topology unless --ranks says otherwise, so EP16 on\nh800-cluster.yaml spans two nodes. Routing is sampled with --seed: output is deterministic."
    )]
    A2a(cli::a2a::A2aArgs),
    /// Place experts into slots with DeepSeek's EPLB (hierarchical or global policy)
    #[command(
        after_help = "Example:\n  echo '{\"weight\": [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86]], \"num_replicas\": 16, \"num_groups\": 4, \"num_nodes\": 2, \"num_gpus\": 8}' | epsim eplb --input -\n\nInput: {\"weight\": [[load per expert] per layer], \"num_replicas\", \"num_groups\", \"num_nodes\", \"num_gpus\"}.\nOutput: one JSON object {\"policy\", \"phy2log\", \"logcnt\", \"phyrank\", \"log2phy\"}; bad input exits 2."
    )]
    Eplb {
        /// JSON load profile, or - for standard input
        #[arg(long)]
        input: PathBuf,
    },
    /// Expert load imbalance per layer over many iterations, without or with EPLB
    #[command(
        after_help = "Examples:\n  epsim imbalance --model deepseek-r1 --ep 32\n  epsim imbalance --model deepseek-r1 --ep 32 --slots 288 --eplb online --format json\n  epsim imbalance --model deepseek-r1 --ep 64 --slots 320 --eplb static --popularity zipf:1.0 --format csv\n\nRank imbalance is (max - mean)/mean of tokens per rank (TensorRT-LLM's imbalance ratio);\nbalancedness is mean/max (SGLang's)."
    )]
    Imbalance(cli::imbalance::ImbalanceArgs),
    /// Shell completions for epsim, to stdout
    #[command(
        after_help = "Examples:\n  epsim completions bash > ~/.local/share/bash-completion/completions/epsim\n  epsim completions zsh > ~/.zfunc/_epsim\n  epsim completions fish > ~/.config/fish/completions/epsim.fish"
    )]
    Completions {
        /// The shell to complete in
        shell: clap_complete::Shell,
    },
    /// The manual page (roff), to stdout
    #[command(after_help = "Example:\n  epsim man > epsim.1 && man ./epsim.1")]
    Man,
    /// One instance of a scenario at a fixed load, with one micro-batch and with two
    #[command(
        after_help = "Examples:\n  epsim iteration validation/sglang-h100-tbo/deployment.yaml --instance decode --batch 256 --context 2048\n  epsim iteration validation/sglang-h100-tbo/deployment.yaml --instance prefill --prefill-tokens 8192 --format json\n\nEvery DP rank decodes --batch requests (or prefills a --prefill-tokens chunk); each\niteration draws its routing (the scenario's seed), prices the all-to-all and applies the\ninstance's EPLB, as `epsim run` does. overlap_gain is the throughput with two micro-batches\n(two-batch overlap) over the throughput with one."
    )]
    Iteration(cli::iteration::IterationArgs),
    /// Simulate serving a scenario (every point of its sweep); write summary.csv and more
    #[command(
        after_help = "Examples:\n  epsim run scenarios/quickstart.yaml\n  epsim run scenarios/calibration-b200-ep8.yaml --out /tmp/cal --seed 7\n  epsim run scenarios/wide-ep-nvl72.yaml -j 2\n  epsim run scenarios/wide-ep-nvl72.yaml --shard 2/3 --out shard2\n\nOne scenario: the summary is printed and written to DIR/summary.csv (one row; units in\ncolumn names), with DIR/requests.csv and DIR/manifest.json.\nA sweep: each point is written to DIR/points/NNNNN.csv as it finishes; DIR/summary.csv\n(one row per point, param_<axis> columns first) once all are there. The same scenario and\nseed give byte-identical CSV files whatever -j or --shard."
    )]
    Run {
        /// Scenario file (YAML)
        scenario: PathBuf,
        /// Output folder [default: out/<scenario name>]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Random seed [default: the scenario's, else 1]
        #[arg(long)]
        seed: Option<u64>,
        /// Sweep points run at once [default: the number of cores]
        #[arg(short = 'j', long, value_parser = clap::value_parser!(u64).range(1..=1024))]
        jobs: Option<u64>,
        /// Skip the points already in the output folder
        #[arg(long)]
        resume: bool,
        /// Run only the K-th of N slices of the sweep (for job arrays)
        #[arg(long, value_name = "K/N", value_parser = cli::run::parse_shard)]
        shard: Option<(usize, usize)>,
        /// Print the sweep's points (of the shard, if given) and exit
        #[arg(long)]
        list: bool,
        /// No progress bar (there is none when stderr is not a terminal)
        #[arg(long)]
        no_progress: bool,
        /// Set a topology parameter, as the scenario's `topology_parameters` (repeatable)
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_assignment)]
        set: Vec<(String, String)>,
        /// Remove another run's results from the output folder (else it is refused)
        #[arg(long)]
        force: bool,
    },
    /// Find the deployment with the fewest GPUs that meets a latency SLA at a rate
    #[command(
        after_help = "Example:\n  epsim plan --model deepseek-r1 --topology topologies/gb200-nvl72.yaml --rate 20 --isl 1024 --osl 1024 --ttft-p99-ms 2000 --tpot-p99-ms 20 --weights nvfp4 --mtp 1\n\nSearches deployments, fewest GPUs first: aggregated (EP 8-64, 1-4 instances) and\ndisaggregated (1-4 prefill EP8; 1-4 decode instances of EP 8-64; attention data-parallel\nor TP8, experts EP or TP8), EPLB none or static with one redundant expert per GPU, max\nbatch 64 or 256 per rank, MTP 0-3 drafts (or --mtp), and 1-8 copies of the whole\ndeployment sharing the rate. Those that cannot fit, or whose priced iterations show they\ncannot keep up, are pruned; the rest are simulated under Poisson arrivals, and none with\nmore GPUs than the answer. A deployment meets the target when its p99 TTFT and TPOT are\nwithin the SLA and it delivers at least 95% of the offered output tokens, in a run in\nsteady state (one that is not is run again 2x and 4x longer, then called undecided).\nRanked by fewer GPUs, then the wider SLA margin (the smaller of 1 - TTFT p99 / its bound\nand 1 - TPOT p99 / its bound), then fewer copies, then more output tokens/s. Prints the\nbest, the runners-up and why the smaller ones fail. Exit 1 when none meets it."
    )]
    Plan {
        /// Model name (looked up in --models-dir) or file
        #[arg(long)]
        model: String,
        #[arg(long, default_value = "models")]
        models_dir: PathBuf,
        /// Topology file
        #[arg(long)]
        topology: PathBuf,
        /// Set a topology parameter for every candidate, as a scenario's
        /// `topology_parameters` (`--set nodes=4`; repeatable)
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_assignment)]
        set: Vec<(String, String)>,
        /// Requests per second (Poisson)
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 1024, value_parser = cli::limits::u64_in(1, cli::limits::MAX_TOKENS))]
        isl: u64,
        #[arg(long, default_value_t = 1024, value_parser = cli::limits::u64_in(1, cli::limits::MAX_TOKENS))]
        osl: u64,
        /// The SLA's time to first token, 99th percentile, milliseconds
        #[arg(long)]
        ttft_p99_ms: f64,
        /// The SLA's time per output token, 99th percentile, milliseconds
        #[arg(long)]
        tpot_p99_ms: f64,
        /// Expert weight precision [default: the model's]
        #[arg(long, value_enum)]
        weights: Option<epsim::model::Precision>,
        /// MTP draft tokens per step [default: 0, 1 and 2 searched when the model has MTP]
        #[arg(long, value_parser = cli::limits::u64_in(0, 4))]
        mtp: Option<u64>,
        /// Simulated seconds per deployment, the first 20% warm-up [default: from the SLA:
        /// a warm-up of one request lifetime (TTFT + OSL x TPOT at the SLA) and a measured
        /// window of two, at least 12 + 48 s]. A run that is not in steady state is run
        /// again 2x and 4x longer before its deployment is called undecided
        #[arg(long)]
        duration_s: Option<f64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Deployments simulated at once [default: the number of cores]
        #[arg(short = 'j', long, value_parser = clap::value_parser!(u64).range(1..=1024))]
        jobs: Option<u64>,
        /// Runners-up shown
        #[arg(long, default_value_t = 5)]
        runners_up: usize,
        /// Also search the highest rate the best deployment holds at the SLA (a few more
        /// simulations)
        #[arg(long)]
        headroom: bool,
        /// Write the best deployment as a runnable scenario YAML to this file
        #[arg(long)]
        emit_scenario: Option<PathBuf>,
        /// How to print the deployments tried
        #[arg(long, value_enum, default_value_t = cli::frontier::Format::Table)]
        format: cli::frontier::Format,
    },
    /// Compare a candidate run with a baseline; exit 1 on a regression
    #[command(
        after_help = "Examples:\n  epsim compare results/policies-regression out/policies-regression\n  epsim compare base/ cand/ --metric output_tok_s_per_gpu:higher --metric ttft_ms_p99:lower --tolerance 1%\n\nRows are matched by their param_* columns. Default metrics: output_tok_s_per_gpu:higher,\ntok_s_per_user:higher, ttft_ms_p99:lower, tpot_ms_p99:lower. Exit codes: 0 within\ntolerance, 1 a regression, 2 inputs that cannot be compared (different sweeps, missing\nrows or columns)."
    )]
    Compare {
        /// Baseline output folder (or its summary.csv)
        baseline: PathBuf,
        /// Candidate output folder (or its summary.csv)
        candidate: PathBuf,
        /// COLUMN:higher or COLUMN:lower (repeatable)
        #[arg(long = "metric", value_parser = epsim::sweep::compare::parse_metric)]
        metrics: Vec<epsim::sweep::compare::Metric>,
        /// Worse by more than this is a regression: 2% or 0.02
        #[arg(long, default_value = "2%", value_parser = cli::compare::parse_tolerance)]
        tolerance: f64,
        #[arg(long, value_enum, default_value_t = cli::memory::TableFormat::Table)]
        format: cli::memory::TableFormat,
    },
    /// Pareto frontiers of a sweep's summary.csv per group, and their value at an x
    #[command(
        after_help = "Examples:\n  epsim frontier results/wide-ep-nvl72/summary.csv --x tok_s_per_user --y output_tok_s_per_decode_gpu --by ep,eplb\n  epsim frontier results/wide-ep-nvl72/summary.csv --x tok_s_per_user --y output_tok_s_per_decode_gpu --by ep --at 100 --format json\n\nThe frontier is upper-right: a point stays unless another has at least its x and more y.\n--by names columns; `ep` also finds the sweep's `param_ep`. With --at, the table's last\nline is the last group's value over the first's."
    )]
    Frontier {
        /// summary.csv of a sweep
        summary: PathBuf,
        /// The column along the frontier, more is better (e.g. tok_s_per_user)
        #[arg(long)]
        x: String,
        /// The column to maximise at each x (e.g. output_tok_s_per_gpu)
        #[arg(long)]
        y: String,
        /// Group rows by these columns (comma-separated); the rows of columns not named,
        /// seeds too, share one frontier (the best of them, not their mean: name seed to
        /// keep seeds apart)
        #[arg(long, value_delimiter = ',')]
        by: Vec<String>,
        /// The frontier's y at this x (linear interpolation)
        #[arg(long, value_parser = parse_finite)]
        at: Option<f64>,
        /// With --at: the ratio of two sides' frontier values there, e.g. 'ep=32 / ep=8'
        /// (each side: the rows matching its column=value terms, joined by commas; its
        /// frontier over all of them, per seed; printed as the seeds' mean and range)
        #[arg(long, requires = "at")]
        ratio: Option<String>,
        /// How to print the frontiers
        #[arg(long, value_enum, default_value_t = cli::frontier::Format::Table)]
        format: cli::frontier::Format,
    },
    /// Draw a sweep's results as SVG and PNG: frontier, ttft and tpot charts in its folder
    #[command(
        after_help = "Example:\n  epsim plot results/wide-ep-nvl72 --by ep,eplb --at 100\n\nfrontier.svg/.png: the Pareto frontier of --y against --x per group (NVIDIA's Wide-EP Figure\n5 shape); ttft and tpot .svg/.png: p99 latencies against --load (default: the last sweep\naxis). Replicate seeds are averaged; lines are coloured by --colour-by and dashed by\n--dash-by; an axis whose data spans decades is logarithmic."
    )]
    Plot {
        /// A sweep's output folder (holding summary.csv)
        dir: PathBuf,
        /// The frontier's x column
        #[arg(long, default_value = "tok_s_per_user")]
        x: String,
        /// The frontier's y column
        #[arg(long, default_value = "output_tok_s_per_gpu")]
        y: String,
        /// Group rows by these columns [default: every sweep axis but the load]
        #[arg(long, value_delimiter = ',')]
        by: Vec<String>,
        /// The load column for the latency charts [default: the last sweep axis]
        #[arg(long)]
        load: Option<String>,
        /// Colour lines by this grouping column [default: the first]
        #[arg(long)]
        colour_by: Option<String>,
        /// Dash lines by this grouping column [default: the first other that varies]
        #[arg(long)]
        dash_by: Option<String>,
        /// Draw a marker at this x on the frontier, each line's value written on it
        #[arg(long, value_parser = parse_finite)]
        at: Option<f64>,
    },
    /// Combine the output folders of a sweep's shards into the unsharded result
    #[command(
        after_help = "Example:\n  epsim merge shard1 shard2 shard3 --out results/wide-ep-nvl72\n\nFails (exit 2) if the folders hold different sweeps or some points are in none of them."
    )]
    Merge {
        /// Output folders of `epsim run --shard`
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// The folder to write the merged sweep to
        #[arg(long)]
        out: PathBuf,
    },
    /// Run sourced accuracy cases: how far epsim is from published and measured results
    #[command(
        after_help = "Examples:\n  epsim accuracy validation/\n  epsim accuracy validation/trtllm-b200-ep8-1k2k.yaml --format json\n\nA case names a scenario (and a summary column), an epsim command (and a JSON pointer), or a\nfolder of held-out kernel measurements; paths are relative to the case file. Prints\npublished, simulated and signed error per case, and median |error|, MAPE and worst case\nfor the set. Exit 0 when every case is within its tolerance, 1 when any is not, 2 for bad\ninput. The case format is in the README, \"Accuracy\"."
    )]
    Accuracy {
        /// Case files, or folders of them
        #[arg(required = true)]
        cases: Vec<PathBuf>,
        /// How to print the cases and their summary
        #[arg(long, value_enum, default_value_t = cli::accuracy::Format::Table)]
        format: cli::accuracy::Format,
    },
    /// Time one decode iteration of one rank, by op class
    #[command(
        after_help = "Examples:\n  epsim step --model deepseek-r1 --gpu b200-gb200 --ep 8 --weights nvfp4 --mtp 1 --batch 32 --context 2048\n  epsim step --model deepseek-r1 --gpu b200-gb200 --ep 32 --slots 288 --weights nvfp4 --mtp 1 --batch 32 --context 2048 --format json\n  epsim step --model deepseek-r1 --gpu b200-gb200 --ep 8 --weights nvfp4 --batch 64 --context 2048 --roofline\n\nOne rank's compute with balanced routing; the all-to-all needs a topology: `epsim a2a`,\nor `epsim iteration SCENARIO` for a whole iteration with routing drawn.\nEach op is priced from the GPU's kernel profile where it measures the op (measured,\ninterpolated, or extrapolated beyond the measured shapes by the roofline's trend), else\nby the roofline; the op table says which."
    )]
    Step {
        #[command(flatten)]
        deployment: DeploymentArgs,
        /// Requests in the rank's attention group (one GPU with DP attention); 0 with a
        /// prefill chunk prices prefill alone
        #[arg(long, value_parser = cli::limits::u64_in(0, cli::limits::MAX_BATCH))]
        batch: u64,
        /// Context tokens per request
        #[arg(long, value_parser = cli::limits::u64_in(1, cli::limits::MAX_TOKENS))]
        context: u64,
        /// Prompt tokens prefilled in the same iteration (chunked prefill)
        #[arg(long, default_value_t = 0, value_parser = cli::limits::u64_in(0, cli::limits::MAX_TOKENS))]
        prefill_chunk: u64,
        /// Tokens of that prompt already in the KV cache before the chunk
        #[arg(long, default_value_t = 0, value_parser = cli::limits::u64_in(0, cli::limits::MAX_TOKENS))]
        prefill_prefix: u64,
        /// Chance an MTP draft token is accepted [default: the model file's mtp_acceptance]
        #[arg(long)]
        mtp_acceptance: Option<f64>,
        /// Price every op by the roofline, ignoring the GPU's kernel profile
        #[arg(long)]
        roofline: bool,
        /// Whose kernels price the routed experts (the engine's measured tables; SGLang's
        /// DeepGEMM kernel behind DeepEP low-latency for a decode-only step, behind DeepEP
        /// normal with a prefill chunk)
        #[arg(long, value_enum, default_value_t = Backend::Trtllm)]
        kernels: Backend,
        #[arg(long, value_enum, default_value_t = TableFormat::Table)]
        format: TableFormat,
    },
}

#[derive(Debug, Subcommand)]
enum TopoCommand {
    /// Load a topology and print a summary, its JSON counts or a Graphviz graph
    #[command(
        after_help = "Examples:\n  epsim topo show topologies/gb200-nvl72.yaml\n  epsim topo show topologies/h800-cluster.yaml --set nodes=18 --format json\n  epsim topo show topologies/hgx-h100x8.yaml --format dot | dot -Tsvg > hgx.svg"
    )]
    Show {
        /// Topology file (YAML)
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = TopoFormat::Text)]
        format: TopoFormat,
        /// Override a topology parameter (repeatable)
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_assignment)]
        set: Vec<(String, String)>,
    },
}

fn parse_assignment(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected NAME=VALUE, got \"{text}\"")),
    }
}

/// A finite number (`NaN` and `inf` parse as f64, and would draw or interpolate nothing).
fn parse_finite(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("expected a finite number, got \"{text}\"")),
    }
}

/// `plan`'s numbers: positive and finite, within a scenario's limits (so every candidate is
/// a valid one), and a duration whose window holds one whole batch of the throughput
/// statistics after the plan's warm-up share.
fn check_plan_numbers(
    rate: f64,
    ttft_p99_ms: f64,
    tpot_p99_ms: f64,
    duration_s: Option<f64>,
) -> Result<(), UsageError> {
    use epsim::serving::{metrics::DEFAULT_BATCH_S, scenario};
    for (name, v) in [
        ("--rate", rate),
        ("--ttft-p99-ms", ttft_p99_ms),
        ("--tpot-p99-ms", tpot_p99_ms),
        ("--duration-s", duration_s.unwrap_or(1.0)),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Err(UsageError(format!("{name} must be a number > 0, got {v}")));
        }
    }
    let min_s = (DEFAULT_BATCH_S / (1.0 - scenario::DEFAULT_WARMUP_SHARE)).ceil();
    if let Some(d) = duration_s
        && d < min_s
    {
        return Err(UsageError(format!(
            "--duration-s must be at least {min_s} s (a measured window that holds one {DEFAULT_BATCH_S} s batch after the {:.0}% warm-up), got {d:?}",
            scenario::DEFAULT_WARMUP_SHARE * 100.0
        )));
    }
    let (max_rate, max_s) = (scenario::MAX_RATE_PER_S, scenario::MAX_DURATION_S);
    if rate > max_rate || duration_s.is_some_and(|d| d > max_s) {
        return Err(UsageError(format!(
            "--rate is at most {max_rate} requests/s and --duration-s at most {max_s} s"
        )));
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(diags) = e.downcast_ref::<Diagnostics>() {
                eprintln!("error: {diags}");
                ExitCode::from(2)
            } else if e.downcast_ref::<UsageError>().is_some() {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            } else {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Topo(TopoCommand::Show { file, format, set }) => {
            cli::topo::show(&file, format, &overrides(set))
        }
        Command::Validate { files, set } => cli::topo::validate(&files, &overrides(set)),
        Command::Memory {
            deployment,
            isl,
            osl,
            format,
        } => cli::memory::run(&deployment, isl, osl, format),
        Command::A2a(args) => cli::a2a::run(&args),
        Command::Run {
            scenario,
            out,
            seed,
            jobs,
            resume,
            shard,
            list,
            no_progress,
            set,
            force,
        } => cli::run::run(&cli::run::RunArgs {
            scenario,
            out,
            seed,
            jobs: jobs.map(|j| j as usize),
            resume,
            shard,
            list,
            progress: !no_progress,
            set,
            force,
        }),
        Command::Merge { dirs, out } => cli::run::merge(&dirs, &out),
        Command::Plan {
            model,
            models_dir,
            topology,
            set,
            rate,
            isl,
            osl,
            ttft_p99_ms,
            tpot_p99_ms,
            weights,
            mtp,
            duration_s,
            seed,
            jobs,
            runners_up,
            headroom,
            emit_scenario,
            format,
        } => {
            check_plan_numbers(rate, ttft_p99_ms, tpot_p99_ms, duration_s)?;
            cli::plan::run(cli::plan::PlanArgs {
                model,
                models_dir,
                topology,
                target: epsim::sweep::capacity::Target {
                    model_file: PathBuf::new(),
                    topology_file: PathBuf::new(),
                    rate_per_s: rate,
                    isl,
                    osl,
                    ttft_p99_ms,
                    tpot_p99_ms,
                    experts: weights.map(|w| w.name().to_owned()),
                    mtp_drafts: mtp,
                    duration_s,
                    seed,
                    topology_parameters: overrides(set),
                },
                jobs: jobs.map_or_else(
                    || std::thread::available_parallelism().map_or(1, |n| n.get()),
                    |j| j as usize,
                ),
                runners_up,
                headroom,
                emit_scenario,
                format,
            })
        }
        Command::Plot {
            dir,
            x,
            y,
            by,
            load,
            colour_by,
            dash_by,
            at,
        } => cli::plot::run(&cli::plot::PlotArgs {
            dir: &dir,
            x: &x,
            y: &y,
            by,
            load,
            colour_by,
            dash_by,
            at,
        }),
        Command::Compare {
            baseline,
            candidate,
            metrics,
            tolerance,
            format,
        } => cli::compare::run(&baseline, &candidate, metrics, tolerance, format),
        Command::Frontier {
            summary,
            x,
            y,
            by,
            at,
            ratio,
            format,
        } => cli::frontier::run(&cli::frontier::FrontierArgs {
            summary: &summary,
            x: &x,
            y: &y,
            by,
            at,
            ratio,
            format,
        }),
        Command::Eplb { input } => cli::eplb::run(&input),
        Command::Accuracy { cases, format } => cli::accuracy::run(&cases, format),
        Command::Imbalance(args) => cli::imbalance::run(&args),
        Command::Completions { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "epsim", &mut text);
            cli::output::emit(&String::from_utf8_lossy(&text)).map(|()| ExitCode::SUCCESS)
        }
        Command::Man => {
            let mut text = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut text)
                .map_err(anyhow::Error::from)
                .and_then(|()| cli::output::emit(&String::from_utf8_lossy(&text)))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Iteration(args) => cli::iteration::run(&args),
        Command::Step {
            deployment,
            batch,
            context,
            prefill_chunk,
            prefill_prefix,
            mtp_acceptance,
            roofline,
            kernels,
            format,
        } => cli::step::run(&cli::step::StepArgs {
            deployment: &deployment,
            batch,
            context,
            prefill_chunk,
            prefill_prefix,
            acceptance: mtp_acceptance,
            roofline,
            kernels,
            format,
        }),
    }
}

fn overrides(set: Vec<(String, String)>) -> BTreeMap<String, String> {
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn assignments_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_assignment("nodes=4"),
            Ok(("nodes".into(), "4".into()))
        );
        assert_eq!(parse_assignment("x=a=b"), Ok(("x".into(), "a=b".into())));
        assert!(parse_assignment("nodes").is_err());
        assert!(parse_assignment("=4").is_err());
    }
}
