//! The `epsim` command line: thin clap commands over the library.
//!
//! Exit codes: 0 success; 1 the job failed; 2 bad usage or bad input (every problem in the
//! input is printed, each with file, line and column).

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use epsim::input::{self, Diagnostics};
use epsim::topology::{self, Summary};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "epsim",
    version,
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
        after_help = "Example:\n  epsim validate topologies/*.yaml topologies/gpus/*.yaml\n\nTopology files and GPU spec files are told apart by their fields.\nExit code 0 when every file is valid, 2 otherwise (every problem is printed)."
    )]
    Validate {
        /// Files to check
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Override a topology parameter (repeatable)
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_assignment)]
        set: Vec<(String, String)>,
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
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Override a topology parameter (repeatable)
        #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_assignment)]
        set: Vec<(String, String)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A human summary
    Text,
    /// One JSON object with the counts
    Json,
    /// Graphviz DOT
    Dot,
}

fn parse_assignment(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected NAME=VALUE, got \"{text}\"")),
    }
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
            let topo = topology::load_with(&file, &overrides(set))?;
            let text = match format {
                Format::Text => Summary::of(&topo).to_string(),
                Format::Json => {
                    let json = serde_json::to_string_pretty(&Summary::of(&topo))
                        .context("writing JSON")?;
                    json + "\n"
                }
                Format::Dot => topology::to_dot(&topo),
            };
            emit(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { files, set } => validate(&files, &overrides(set)),
    }
}

fn overrides(set: Vec<(String, String)>) -> BTreeMap<String, String> {
    set.into_iter().collect()
}

/// Checks every file, printing one line per valid file and every problem of the others.
fn validate(files: &[PathBuf], overrides: &BTreeMap<String, String>) -> anyhow::Result<ExitCode> {
    let mut all = Diagnostics::new();
    let mut report = String::new();
    for file in files {
        match validate_one(file, overrides) {
            Ok(what) => report.push_str(&format!("ok: {} ({what})\n", file.display())),
            Err(diags) => all.append(diags),
        }
    }
    emit(&report)?;
    if all.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(all.into())
    }
}

fn validate_one(file: &Path, overrides: &BTreeMap<String, String>) -> Result<String, Diagnostics> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        let mut d = Diagnostics::new();
        d.push_file(file, format!("cannot read the file: {e}"));
        d
    })?;
    let root = input::parse_tree(file, &text)?;
    if is_gpu_spec(&root) {
        let spec = epsim::hardware::load_spec(file)?;
        Ok(format!("GPU spec {}", spec.name))
    } else {
        let topo = topology::load_with(file, overrides)?;
        Ok(format!("topology {}: {} GPUs", topo.name, topo.gpus.len()))
    }
}

/// A GPU spec file has `hbm_gb`; anything else is read as a topology.
fn is_gpu_spec(root: &input::Node) -> bool {
    match &root.value {
        input::Value::Map(entries) => entries.iter().any(|(k, _)| k.name == "hbm_gb"),
        _ => false,
    }
}

/// Writes to stdout; a closed pipe (`epsim ... | head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
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
