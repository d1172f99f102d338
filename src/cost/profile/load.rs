//! Reading a profile's CSV tables: `#` lines are provenance comments, then a header naming
//! the columns, then one measured shape per row. Every bad cell is reported with its file,
//! line and column, all at once.

use crate::input::{Diagnostics, Loc, Problem};
use crate::model::Precision;
use std::path::Path;

/// One parsed row: the text keys and the numbers of a table, in the order asked for.
#[derive(Debug)]
pub struct Row {
    pub precisions: Vec<Precision>,
    pub numbers: Vec<f64>,
    /// Its line in the file (1-based), and the latency cell's column.
    pub at: Loc,
}

/// The columns of one table: those holding precisions, then those holding numbers (the
/// last is the latency in microseconds).
pub struct Columns<'a> {
    pub precisions: &'a [&'a str],
    pub numbers: &'a [&'a str],
}

/// A precision by the name files use ([`Precision::name`]).
fn precision(text: &str) -> Option<Precision> {
    <Precision as clap::ValueEnum>::value_variants()
        .iter()
        .copied()
        .find(|p| p.name() == text)
}

/// Reads `file`'s rows, or every problem in it.
pub fn read(file: &Path, columns: &Columns) -> Result<Vec<Row>, Diagnostics> {
    let mut diags = Diagnostics::new();
    let text = crate::input::read_text(file)?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty());
    let Some((header_at, header)) = lines.next() else {
        diags.push_file(file, "no header line (the table is empty)");
        return Err(diags);
    };
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let wanted: Vec<&str> = columns
        .precisions
        .iter()
        .chain(columns.numbers)
        .copied()
        .collect();
    let mut index = Vec::with_capacity(wanted.len());
    for w in &wanted {
        match names.iter().position(|n| n == w) {
            Some(i) => index.push(i),
            None => diags.push(
                file,
                Problem::new(loc(header_at, 1), *w, "missing column in the header"),
            ),
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    let mut rows = Vec::new();
    // Each shape's first line: a second row of the same shape would silently win.
    let mut seen = std::collections::BTreeMap::new();
    for (at, line) in lines {
        if let Some(row) = parse_row(file, at, line, &names, &index, columns, &mut diags) {
            let (_, keys) = row.numbers.split_last().unwrap_or((&0.0, &[]));
            let shape = (
                row.precisions.iter().map(|p| p.name()).collect::<Vec<_>>(),
                keys.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            );
            if let Some(first) = seen.insert(shape, at) {
                diags.push(
                    file,
                    Problem::new(
                        loc(at, 1),
                        "",
                        format!(
                            "the same shape as line {}: measure each shape once (the later row would silently replace it)",
                            first + 1
                        ),
                    ),
                );
            }
            rows.push(row);
        }
    }
    diags.into_result(rows)
}

/// Whether `file`'s header line names `column`; false when it cannot be read (then
/// [`read`] says why).
pub fn names_column(file: &Path, column: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    let header = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty());
    header.is_some_and(|h| h.split(',').any(|n| n.trim() == column))
}

fn loc(line_index: usize, column: usize) -> Loc {
    Loc {
        line: u32::try_from(line_index + 1).unwrap_or(u32::MAX),
        column: u32::try_from(column).unwrap_or(u32::MAX),
    }
}

fn parse_row(
    file: &Path,
    at: usize,
    line: &str,
    names: &[&str],
    index: &[usize],
    columns: &Columns,
    diags: &mut Diagnostics,
) -> Option<Row> {
    // Byte column (1-based) where each cell starts.
    let mut cells = Vec::with_capacity(names.len());
    let mut start = 0;
    for cell in line.split(',') {
        cells.push((start + 1, cell.trim()));
        start += cell.len() + 1;
    }
    if cells.len() != names.len() {
        diags.push(
            file,
            Problem::new(
                loc(at, 1),
                "",
                format!("{} cells, the header has {}", cells.len(), names.len()),
            ),
        );
        return None;
    }
    let before = diags.len();
    let latency_col = index.last().map_or(1, |&i| cells[i].0);
    let mut row = Row {
        precisions: Vec::new(),
        numbers: Vec::new(),
        at: loc(at, latency_col),
    };
    for (k, &i) in index.iter().enumerate() {
        let (col, text) = cells[i];
        let problem = |msg: String| Problem::new(loc(at, col), names[i], msg);
        if k < columns.precisions.len() {
            match precision(text) {
                Some(p) => row.precisions.push(p),
                None => diags.push(
                    file,
                    problem(format!(
                        "unknown precision `{text}` (bf16, fp8, nvfp4, mxfp4)"
                    )),
                ),
            }
        } else {
            match text.parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 => row.numbers.push(v),
                _ => diags.push(file, problem(format!("must be a number > 0, got `{text}`"))),
            }
        }
    }
    (diags.len() == before).then_some(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: Columns = Columns {
        precisions: &["dtype"],
        numbers: &["m", "latency_us"],
    };

    fn read_text(text: &str) -> Result<Vec<Row>, Diagnostics> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gemm.csv");
        std::fs::write(&file, text).unwrap();
        read(&file, &COLUMNS)
    }

    #[test]
    fn comments_then_header_then_rows() {
        let rows = read_text("# source\ndtype,m,latency_us\nfp8,4,12.5\nbf16,8,3\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].precisions, [Precision::Fp8]);
        assert_eq!(rows[1].numbers, [8.0, 3.0]);
    }

    #[test]
    fn every_bad_cell_is_located() {
        let err = read_text("# c\ndtype,m,latency_us\nfp9,4,1\nfp8,x,-2\nfp8,1\n")
            .unwrap_err()
            .to_string();
        for needle in [
            "gemm.csv:3:1: dtype: unknown precision `fp9`",
            "gemm.csv:4:5: m: must be a number > 0, got `x`",
            "gemm.csv:4:7: latency_us: must be a number > 0, got `-2`",
            "gemm.csv:5:1: 2 cells, the header has 3",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in\n{err}");
        }
    }

    #[test]
    fn a_shape_measured_twice_is_refused_with_both_lines() {
        let err = read_text("dtype,m,latency_us\nfp8,4,10\nbf16,4,11\nfp8,4,12\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":4:1: the same shape as line 2"), "{err}");
    }

    #[test]
    fn a_missing_column_or_file_is_named() {
        let err = read_text("dtype,latency_us\n").unwrap_err().to_string();
        assert!(err.contains("gemm.csv:1:1: m: missing column"), "{err}");
        let err = read(Path::new("/nonexistent/moe.csv"), &COLUMNS)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/moe.csv: cannot read the file"),
            "{err}"
        );
    }
}
