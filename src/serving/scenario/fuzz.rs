//! Mutated scenarios: whatever a user's editor leaves in a scenario file, loading it ends in
//! a scenario or in located problems, never in a panic. The mutations are the slips people
//! make: a value replaced by a wrong one (negative, huge, not a number, the wrong kind of
//! node), a line deleted, a line repeated.

use super::*;
use proptest::prelude::*;

/// Values that have broken loaders before: signs, overflow, floats where integers go,
/// special floats, empty and wrong-kind nodes.
const VALUES: [&str; 14] = [
    "-1",
    "0",
    "1e400",
    "-0.0",
    "18446744073709551616",
    "4294967297",
    "0.5",
    ".inf",
    "[]",
    "{}",
    "''",
    "abc",
    "0-99999999",
    "~",
];

/// `text` with mutation `m` (a kind, a line, a value) applied.
fn mutate(text: &str, kind: u8, line: usize, value: usize) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let i = line % lines.len();
    match kind % 3 {
        // The value after the line's first `: ` (or the whole item of a list line).
        0 => {
            let l = &lines[i];
            if let Some(at) = l.find(": ") {
                lines[i] = format!("{}: {}", &l[..at], VALUES[value % VALUES.len()]);
            }
        }
        1 => {
            lines.remove(i);
        }
        _ => {
            let copy = lines[i].clone();
            lines.insert(i, copy);
        }
    }
    lines.join("\n") + "\n"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Up to three slips in a shipped scenario: loading returns, with problems or without.
    #[test]
    fn mutated_scenarios_load_or_say_why(
        slips in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<usize>()), 1..4),
        which in 0usize..3,
    ) {
        let name = ["scenarios/quickstart.yaml", "scenarios/wide-ep-nvl72.yaml", "tests/scenarios/small-disaggregated.yaml"][which];
        let file = crate::testing::repo(name);
        let mut text = std::fs::read_to_string(&file).unwrap();
        for (kind, line, value) in slips {
            text = mutate(&text, kind, line, value);
        }
        if let Ok(root) = input::parse_tree(&file, &text) {
            // A sweep's scenario part is what `epsim run` loads point by point.
            let (base, _) = crate::sweep::plan::split(&root);
            match from_tree(&file, &base) {
                Ok(_) => {}
                Err(d) => prop_assert!(!d.to_string().is_empty()),
            }
        }
    }
}
