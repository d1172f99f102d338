//! The README's examples are produced here, so the README cannot drift from what epsim does.

mod common;
use common::{epsim, repo, stderr};

fn readme() -> String {
    std::fs::read_to_string(repo("README.md")).expect("README.md is readable")
}

/// The body of the fenced block of `lang` that starts right after the line `after`.
fn block_after(text: &str, after: &str, lang: &str) -> String {
    let start = text
        .find(after)
        .unwrap_or_else(|| panic!("README lacks `{after}`"));
    let rest = &text[start..];
    let open = format!("```{lang}\n");
    let body = &rest[rest.find(&open).expect("a fenced block follows") + open.len()..];
    body[..body.find("```").expect("the block is closed")].to_owned()
}

#[test]
fn broken_topology_example_is_the_shipped_file_and_its_real_output() {
    let text = readme();
    let yaml = block_after(
        &text,
        "A file with problems, `examples/broken-topology.yaml`",
        "yaml",
    );
    let file = std::fs::read_to_string(repo("examples/broken-topology.yaml")).unwrap();
    assert_eq!(
        yaml, file,
        "README's YAML differs from examples/broken-topology.yaml"
    );

    let console = block_after(
        &text,
        "A file with problems, `examples/broken-topology.yaml`",
        "console",
    );
    let mut lines = console.lines();
    assert_eq!(
        lines.next(),
        Some(r#"$ epsim validate examples/broken-topology.yaml; echo "exit $?""#)
    );
    let shown: Vec<&str> = lines.collect();
    let run = epsim()
        .current_dir(repo("."))
        .args(["validate", "examples/broken-topology.yaml"])
        .assert()
        .code(2);
    let mut got: Vec<String> = stderr(&run).lines().map(str::to_owned).collect();
    got.push("exit 2".to_owned());
    assert_eq!(shown, got);
}

/// The lines of the fenced `console` block that starts with the line `command`.
fn console_block(text: &str, command: &str) -> Vec<String> {
    let start = text
        .find(&format!("```console\n{command}\n"))
        .unwrap_or_else(|| panic!("README lacks a console block for `{command}`"));
    let body = &text[start + "```console\n".len() + command.len() + 1..];
    body[..body.find("```").expect("the block is closed")]
        .lines()
        .map(str::to_owned)
        .collect()
}

fn accuracy_table(dir: &str) -> Vec<String> {
    let out = epsim()
        .current_dir(repo("."))
        .args(["accuracy", dir])
        .output()
        .expect("epsim runs");
    assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_accuracy_tables_are_what_epsim_accuracy_prints() {
    let text = readme();
    for dir in [
        "validation/",
        "validation/silicon-e2e-b200/",
        "validation/tbo-h100/",
        "validation/min-latency/",
    ] {
        let shown = console_block(&text, &format!("$ epsim accuracy {dir}"));
        assert_eq!(
            shown,
            accuracy_table(dir),
            "README's table for {dir} is stale"
        );
    }
}

#[test]
fn the_quickstart_summary_is_what_the_run_prints() {
    let text = readme();
    let shown = console_block(
        &text,
        "$ cargo run --release -- run scenarios/quickstart.yaml",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = epsim()
        .current_dir(repo("."))
        .args(["run", "scenarios/quickstart.yaml", "--out"])
        .arg(dir.path())
        .assert()
        .success();
    let printed = common::stdout(&out);
    let summary: Vec<&str> = printed.lines().take_while(|l| !l.is_empty()).collect();
    assert_eq!(&shown[..summary.len()], &summary[..]);
}

/// The step table's totals and per-GPU throughputs (EP8 and EP32, measured kernels) are
/// what `epsim step` computes.
#[test]
fn the_step_table_is_what_epsim_step_prices() {
    let text = readme();
    let row = |label: &str| -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("| {label}")))
            .unwrap_or_else(|| panic!("README lacks the step table's `{label}` row"));
        line.split('|').map(|c| c.trim().to_owned()).collect()
    };
    let (total, tput) = (row("total |"), row("output tokens/s per GPU"));
    for (column, ep, slots) in [(2, "8", "256"), (3, "32", "288")] {
        let out = epsim()
            .current_dir(repo("."))
            .args([
                "step",
                "--model",
                "deepseek-r1",
                "--gpu",
                "b200-gb200",
                "--ep",
                ep,
            ])
            .args([
                "--slots",
                slots,
                "--weights",
                "nvfp4",
                "--mtp",
                "1",
                "--batch",
                "64",
            ])
            .args(["--context", "2048", "--format", "json"])
            .output()
            .expect("epsim runs");
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let us = j["step_us"].as_f64().unwrap();
        let per_gpu = j["output_tok_s_per_gpu"].as_f64().unwrap();
        let shown = |cell: &str| {
            cell.trim_end_matches(" us")
                .replace(',', "")
                .parse::<f64>()
                .unwrap()
        };
        assert_eq!(shown(&total[column]), us.round(), "EP{ep} total");
        assert_eq!(
            shown(&tput[column]),
            per_gpu.round(),
            "EP{ep} tokens/s per GPU"
        );
    }
}

/// The lines of a README console block, in order, must be lines `epsim` prints (`...` marks
/// lines left out, `wrote` notes go to stderr).
fn shown_in_order(shown: &str, printed: &str) -> Result<(), String> {
    let mut rest = printed.lines();
    for line in shown.lines().filter(|l| *l != "...") {
        if !rest.any(|p| p == line) {
            return Err(format!(
                "the README shows a line epsim does not print (or not in this order):\n{line}\n--- epsim printed:\n{printed}"
            ));
        }
    }
    Ok(())
}

#[test]
fn the_capacity_planning_example_is_what_plan_prints() {
    let text = readme();
    let block = block_after(&text, "## Capacity planning", "console");
    let (command, shown): (Vec<&str>, Vec<&str>) = {
        let lines: Vec<&str> = block.lines().collect();
        let n = lines
            .iter()
            .position(|l| !l.ends_with('\\'))
            .expect("the command ends")
            + 1;
        (lines[..n].to_vec(), lines[n..].to_vec())
    };
    let command = command.join(" ").replace('\\', " ");
    let dir = tempfile::tempdir().unwrap();
    let emitted = dir.path().join("best.yaml");
    let args: Vec<String> = command
        .split_whitespace()
        .skip(2)
        .map(|a| match a {
            "best.yaml" => emitted.display().to_string(),
            a => a.to_owned(),
        })
        .collect();
    let out = epsim().current_dir(repo("")).args(&args).assert().success();
    let printed = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    shown_in_order(&shown.join("\n"), &printed).unwrap();
    assert!(emitted.is_file());
}

/// Every `$ epsim ...` line of the README's console blocks, with the lines shown after it
/// (up to the next command), except those other tests run (accuracy, plan) and those with
/// shell plumbing.
fn readme_commands(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for block in text.split("```console\n").skip(1) {
        let body = &block[..block.find("```").expect("the block is closed")];
        let mut lines = body.lines().peekable();
        while let Some(line) = lines.next() {
            let Some(command) = line.strip_prefix("$ epsim ") else {
                continue;
            };
            let mut shown = Vec::new();
            while let Some(next) = lines.next_if(|l| !l.starts_with("$ ")) {
                shown.push(next.to_owned());
            }
            let command = command.split(" #").next().unwrap_or("").trim();
            let tested_elsewhere = command.starts_with("accuracy ") || command.ends_with('\\');
            // Examples naming the user's own files (`--replay counts.csv`) cannot run here.
            let own_files = command.split_whitespace().any(|a| {
                [".csv", ".json", ".yaml"].iter().any(|x| a.ends_with(x)) && !repo(a).exists()
            });
            if !tested_elsewhere && !own_files && !command.contains(['|', ';', '>']) {
                out.push((command.to_owned(), shown));
            }
        }
    }
    out
}

#[test]
fn every_other_readme_command_runs_and_prints_what_is_shown() {
    let commands = readme_commands(&readme());
    assert!(commands.len() >= 10, "{commands:?}");
    for (command, shown) in commands {
        let out = epsim()
            .current_dir(repo(""))
            .args(command.split_whitespace())
            .assert()
            .success();
        let printed = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
        shown_in_order(&shown.join("\n"), &printed)
            .unwrap_or_else(|e| panic!("$ epsim {command}: {e}"));
    }
}

#[test]
fn the_memory_table_is_what_epsim_memory_plans() {
    let text = readme();
    let plan = |extra: &[&str]| -> String {
        let out = epsim()
            .args(["memory", "--model", "deepseek-r1", "--gpu", "b200-gb200"])
            .args(["--weights", "nvfp4", "--mtp", "1"])
            .args(extra)
            .assert()
            .success();
        String::from_utf8_lossy(&out.get_output().stdout).into_owned()
    };
    let (ep8, ep32) = (
        plan(&["--ep", "8"]),
        plan(&["--ep", "32", "--slots", "288"]),
    );
    // The value after `label` in a memory plan: "routed experts  43.6 GiB" -> "43.6 GiB".
    let value = |plan: &str, label: &str, unit: &str| -> String {
        let line = plan
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` in\n{plan}"));
        let number = line[line.find(label).unwrap() + label.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        match unit {
            "" => number,
            u => format!("{number} {u}"),
        }
    };
    let row = |label: &str| -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("| {label}")))
            .unwrap_or_else(|| panic!("README lacks the memory row `{label}`"));
        line.split('|')
            .skip(2)
            .take(2)
            .map(|c| c.trim().replace(',', ""))
            .collect()
    };
    for (readme_row, label, unit) in [
        ("routed expert weights", "routed experts", "GiB"),
        ("all weights", "weights", "GiB"),
        ("KV cache", "KV cache", "GiB"),
        ("requests of 1K in + 1K out", "max requests per GPU", ""),
    ] {
        assert_eq!(
            row(readme_row),
            vec![value(&ep8, label, unit), value(&ep32, label, unit)],
            "README memory row `{readme_row}`"
        );
    }
    assert!(ep8.contains("(32 experts per GPU per layer") && ep32.contains("(9 experts"));
    assert_eq!(row("experts per GPU per layer"), ["32", "9"]);
}
