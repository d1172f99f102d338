//! Recorded expert counts, replayed as popularity: `iteration,layer,expert,tokens` rows (the
//! `iteration` column may be left out for a single recording). Iteration i of a run uses
//! the recording's iteration i modulo the number recorded, normalised per layer, so a
//! recording made at any batch size drives a run at another.

use crate::input::{self, Diagnostics, Problem};
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
    /// every problem is reported with its line and column.
    pub fn read(file: &Path, layers: usize, experts: usize) -> Result<Recording, Diagnostics> {
        let mut diags = Diagnostics::new();
        let text = input::read_text(file)?;
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = match reader.headers() {
            Ok(h) => h.clone(),
            Err(e) => {
                diags.push_file(file, format!("cannot read the header: {e}"));
                return Err(diags);
            }
        };
        let mut counts: BTreeMap<u64, Vec<Vec<f64>>> = BTreeMap::new();
        for record in reader.records() {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    let at = input::csv_cell(e.position().map_or(0, |p| p.line()), None, None);
                    diags.push(file, Problem::new(at, "", e.to_string()));
                    continue;
                }
            };
            match row(&record, &headers, layers, experts) {
                Ok(r) => {
                    counts
                        .entry(r.iteration)
                        .or_insert_with(|| vec![vec![0.0; experts]; layers])[r.layer][r.expert] +=
                        r.tokens;
                }
                Err(p) => diags.push(file, p),
            }
        }
        if counts.is_empty() && diags.is_empty() {
            diags.push_file(file, "the recording has no rows");
        }
        for (it, layer_counts) in &counts {
            let empty: Vec<usize> = (0..layers)
                .filter(|&l| layer_counts[l].iter().sum::<f64>() <= 0.0)
                .collect();
            if !empty.is_empty() {
                diags.push_file(
                    file,
                    format!(
                        "iteration {it}: layers {} have no tokens recorded (every layer needs some)",
                        ranges(&empty)
                    ),
                );
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

/// One row, or its first problem located at its cell.
fn row(
    record: &csv::StringRecord,
    headers: &csv::StringRecord,
    layers: usize,
    experts: usize,
) -> Result<Row, Problem> {
    let line = record.position().map_or(0, |p| p.line());
    let at = |name: &str| {
        let i = headers.iter().position(|h| h == name);
        input::csv_cell(line, Some(record), i)
    };
    let r: Row = record.deserialize(Some(headers)).map_err(|e| {
        let (i, msg) = match e.kind() {
            csv::ErrorKind::Deserialize { err, .. } => {
                (err.field().map(|f| f as usize), err.kind().to_string())
            }
            _ => (None, e.to_string()),
        };
        let name = i.and_then(|i| headers.get(i)).unwrap_or("");
        Problem::new(input::csv_cell(line, Some(record), i), name, msg)
    })?;
    if r.layer >= layers {
        let msg = format!(
            "{} is beyond the model's {layers} MoE layers (numbered from 0)",
            r.layer
        );
        return Err(Problem::new(at("layer"), "layer", msg));
    }
    if r.expert >= experts {
        let msg = format!("{} is beyond the model's {experts} experts", r.expert);
        return Err(Problem::new(at("expert"), "expert", msg));
    }
    if !(r.tokens.is_finite() && r.tokens >= 0.0) {
        let msg = format!("must be >= 0, got {}", r.tokens);
        return Err(Problem::new(at("tokens"), "tokens", msg));
    }
    Ok(r)
}

/// `[1, 2, 3, 7]` -> "1-3, 7".
fn ranges(sorted: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            sorted[i].to_string()
        } else {
            format!("{}-{}", sorted[i], sorted[j])
        });
        i = j + 1;
    }
    parts.join(", ")
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
            "counts.csv:3:3: layer: 5 is beyond",
            "counts.csv:4:5: expert: 9 is beyond",
            "counts.csv:5:7: tokens: must be >= 0, got -3",
            "counts.csv:6:7: tokens:",
            "iteration 0: layers 1 have no tokens",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
    }

    #[test]
    fn missing_layers_are_one_problem_with_ranges() {
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), "1-3, 7, 9-10");
        let (_d, f) = write("iteration,layer,expert,tokens\n0,0,0,1\n0,4,0,1\n");
        let text = Recording::read(&f, 58, 4).unwrap_err().to_string();
        assert!(
            text.contains("iteration 0: layers 1-3, 5-57 have no tokens recorded"),
            "{text}"
        );
        assert_eq!(text.matches("no tokens recorded").count(), 1, "{text}");
    }
}
