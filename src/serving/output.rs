//! A run's files: `summary.csv` (one row per run), `requests.csv` (one row per finished
//! request, optional) and `manifest.json` (version, seed, the resolved scenario, simulation
//! statistics). Each file is written to a temporary name and renamed into place, so a file
//! is either complete or absent.

use super::metrics::{REQUEST_COLUMNS, Report};
use super::scenario::LoadedScenario;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `file` atomically: a temporary file with a unique, unpredictable name
/// created in the same folder (never following a link planted there), then renamed.
pub fn write_atomic(file: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", file.display()));
    let mut tmp = temp_beside(file, "")?;
    tmp.write_all(bytes).map_err(with_path)?;
    tmp.persist(file)
        .map(|_| ())
        .map_err(|e| io::Error::new(e.error.kind(), format!("{}: {}", file.display(), e.error)))
}

/// A new temporary file beside `file` (unique, unpredictable name; never through a planted
/// link), ending in `suffix`, to be renamed onto `file` once complete.
pub fn temp_beside(file: &Path, suffix: &str) -> io::Result<tempfile::NamedTempFile> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
    let mut builder = tempfile::Builder::new();
    builder.suffix(suffix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Results are for sharing: readable by all, as a plain create makes them under the
        // usual umask (a temporary file alone would be its owner's only).
        builder.permissions(fs::Permissions::from_mode(0o644));
    }
    builder
        .tempfile_in(dir.unwrap_or(Path::new(".")))
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))
}

/// summary.csv's text: a header and one row.
pub fn summary_csv(report: &Report) -> io::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(report.summary.iter().map(|(c, _)| *c))?;
    w.write_record(report.summary.iter().map(|(_, v)| v.as_str()))?;
    w.into_inner().map_err(|e| e.into_error())
}

pub fn requests_csv(report: &Report) -> io::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in &report.requests {
        w.serialize(row).map_err(io::Error::other)?;
    }
    if report.requests.is_empty() {
        w.write_record(REQUEST_COLUMNS)?;
    }
    w.into_inner().map_err(|e| e.into_error())
}

/// Writes the run's files into `dir` (created if needed); returns their paths.
/// `streamed` is requests.csv already written row by row during the run (see
/// [`super::sim::run_streaming`]), put in place here; without it the report's rows are.
pub fn write_run(
    dir: &Path,
    loaded: &LoadedScenario,
    report: &Report,
    streamed: Option<tempfile::NamedTempFile>,
) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{}: cannot create the output folder: {e}", dir.display()),
        )
    })?;
    let mut written = Vec::new();
    let summary = dir.join("summary.csv");
    write_atomic(&summary, &summary_csv(report)?)?;
    written.push(summary);
    if loaded.scenario.output.requests_csv {
        let requests = dir.join("requests.csv");
        match streamed {
            Some(tmp) => {
                tmp.persist(&requests).map_err(|e| {
                    io::Error::new(
                        e.error.kind(),
                        format!("{}: {}", requests.display(), e.error),
                    )
                })?;
            }
            None => write_atomic(&requests, &requests_csv(report)?)?,
        }
        written.push(requests);
    } else {
        // An earlier run's rows are not this run's.
        match fs::remove_file(dir.join("requests.csv")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let manifest = serde_json::json!({
        "epsim_version": env!("CARGO_PKG_VERSION"),
        "epsim_git_commit": env!("EPSIM_GIT_COMMIT"),
        "seed": loaded.scenario.seed,
        "topology": loaded.topology.name,
        "model": loaded.model.name,
        "scenario": loaded.scenario,
        "simulation": report.stats,
        "summary": report.summary.iter().map(|(c, v)| (c.to_string(), serde_json::Value::from(v.as_str()))).collect::<serde_json::Map<String, serde_json::Value>>(),
    });
    let manifest_file = dir.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest).map_err(io::Error::other)?;
    write_atomic(&manifest_file, format!("{text}\n").as_bytes())?;
    written.push(manifest_file);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::metrics::RequestRow;

    #[test]
    fn the_empty_requests_file_still_has_the_header_of_a_full_one() {
        let row = RequestRow {
            id: 0,
            measured: true,
            arrival_s: 0.0,
            input_tokens: 1,
            cached_tokens: 0,
            output_tokens: 1,
            generated_tokens: 1,
            first_token_s: 0.0,
            finish_s: 0.0,
            ttft_ms: 0.0,
            tpot_ms: 0.0,
            itl_p99_ms: 0.0,
            prefill_instance: String::new(),
            decode_instance: String::new(),
        };
        let stats = crate::serving::metrics::SimStats {
            events: 0,
            wall_s: 0.0,
            simulated_s: 0.0,
            events_per_wall_s: 0.0,
            simulated_s_per_wall_s: 0.0,
            iterations: 0,
            kv_bytes_started: 0.0,
            kv_bytes_delivered: 0.0,
        };
        let report = |requests| Report {
            summary: Vec::new(),
            requests,
            stats: stats.clone(),
            steady: crate::serving::steady::Verdict {
                status: crate::serving::steady::Status::Steady,
                why: Vec::new(),
                backlog_growth_per_s: 0.0,
                transient_s: 0.0,
            },
        };
        let full = String::from_utf8(requests_csv(&report(vec![row])).unwrap()).unwrap();
        let empty = String::from_utf8(requests_csv(&report(Vec::new())).unwrap()).unwrap();
        assert_eq!(full.lines().next(), empty.lines().next());
    }

    /// No predictable temporary name: a link planted where the old `.tmp` name was is left
    /// alone, and its target untouched.
    #[cfg(unix)]
    #[test]
    fn atomic_writes_never_write_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("summary.tmp")).unwrap();
        let file = dir.path().join("summary.csv");
        write_atomic(&file, b"a,b\n1,2\n").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(fs::read_to_string(&file).unwrap(), "a,b\n1,2\n");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 3, "no temporary file stays behind");
    }
}
