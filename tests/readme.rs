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
