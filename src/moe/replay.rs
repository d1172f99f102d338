//! Recorded expert counts, replayed as popularity: `iteration,layer,expert,tokens` rows (the
//! `iteration` column may be left out for a single recording). Iteration i of a run uses
//! the recording's iteration i modulo the number recorded, normalised per layer, so a
//! recording made at any batch size drives a run at another.

use crate::input::Diagnostics;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    /// `[recorded iteration][layer][expert]` probabilities.
    iterations: Vec<Vec<Vec<f64>>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    #[serde(default)]
    iteration: u64,
    layer: usize,
    expert: usize,
    tokens: f64,
}

impl Recording {
    /// Reads a recording for `layers` MoE layers (numbered from 0) of `experts` experts;
    /// every problem is reported with its line.
    pub fn read(file: &Path, layers: usize, experts: usize) -> Result<Recording, Diagnostics> {
        let mut diags = Diagnostics::new();
        let mut reader = match csv::Reader::from_path(file) {
            Ok(r) => r,
            Err(e) => {
                diags.push_file(file, format!("cannot read the recording: {e}"));
                return Err(diags);
            }
        };
        let mut counts: BTreeMap<u64, Vec<Vec<f64>>> = BTreeMap::new();
        for result in reader.deserialize::<Row>() {
            let row = match result {
                Ok(row) => row,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    diags.push_file(file, format!("line {line}: {e}"));
                    continue;
                }
            };
            let problem = if row.layer >= layers {
                Some(format!(
                    "layer {} is beyond the model's {layers} MoE layers (numbered from 0)",
                    row.layer
                ))
            } else if row.expert >= experts {
                Some(format!(
                    "expert {} is beyond the model's {experts} experts",
                    row.expert
                ))
            } else if !(row.tokens.is_finite() && row.tokens >= 0.0) {
                Some(format!("tokens must be >= 0, got {}", row.tokens))
            } else {
                None
            };
            if let Some(p) = problem {
                diags.push_file(
                    file,
                    format!(
                        "iteration {}, layer {}, expert {}: {p}",
                        row.iteration, row.layer, row.expert
                    ),
                );
                continue;
            }
            counts
                .entry(row.iteration)
                .or_insert_with(|| vec![vec![0.0; experts]; layers])[row.layer][row.expert] +=
                row.tokens;
        }
        if counts.is_empty() && diags.is_empty() {
            diags.push_file(file, "the recording has no rows");
        }
        for (it, layer_counts) in &counts {
            for (l, c) in layer_counts.iter().enumerate() {
                if c.iter().sum::<f64>() <= 0.0 {
                    diags.push_file(
                        file,
                        format!("iteration {it}: layer {l} has no tokens recorded"),
                    );
                }
            }
        }
        let iterations = counts
            .into_values()
            .map(|layers| {
                layers
                    .into_iter()
                    .map(|c| {
                        let total: f64 = c.iter().sum();
                        c.into_iter().map(|x| x / total).collect()
                    })
                    .collect()
            })
            .collect();
        diags.into_result(Recording { iterations })
    }

    /// Every layer's probabilities at run iteration `iteration`.
    pub fn at(&self, iteration: u64) -> &[Vec<f64>] {
        &self.iterations[(iteration % self.iterations.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("counts.csv");
        std::fs::write(&file, text).unwrap();
        (dir, file)
    }

    #[test]
    fn replays_iterations_in_a_cycle() {
        let (_d, f) =
            write("iteration,layer,expert,tokens\n0,0,0,30\n0,0,1,10\n0,1,1,5\n1,0,1,8\n1,1,0,2\n");
        let r = Recording::read(&f, 2, 2).unwrap();
        assert_eq!(r.at(0), &[vec![0.75, 0.25], vec![0.0, 1.0]][..]);
        assert_eq!(r.at(1), &[vec![0.0, 1.0], vec![1.0, 0.0]][..]);
        assert_eq!(r.at(2), r.at(0));
        let (_d, f) = write("layer,expert,tokens\n0,0,1\n0,1,3\n");
        assert_eq!(
            Recording::read(&f, 1, 2).unwrap().at(7),
            &[vec![0.25, 0.75]][..]
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let (_d, f) = write(
            "iteration,layer,expert,tokens\n0,0,0,1\n0,5,0,1\n0,0,9,1\n0,0,1,-3\n0,0,1,lots\n",
        );
        let text = Recording::read(&f, 2, 4).unwrap_err().to_string();
        for needle in [
            "layer 5 is beyond",
            "expert 9 is beyond",
            "tokens must be >= 0",
            "line 6",
            "layer 1 has no tokens",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
    }
}
