//! Writing results and classifying errors for exit codes.

use anyhow::Context;
use std::io::Write;

/// A request that cannot be carried out as asked (exit code 2): a name that does not
/// exist, or a combination of options that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Writes to stdout; a closed pipe (`epsim ... | head`) is not an error.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// Writes what a command did (files written, wall time) to stderr, so that stdout holds
/// only its results; a closed pipe is not an error.
pub fn note(text: &str) -> anyhow::Result<()> {
    let mut err = std::io::stderr().lock();
    match err.write_all(text.as_bytes()).and_then(|()| err.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stderr"),
        _ => Ok(()),
    }
}

/// Pretty JSON with a final newline.
pub fn json(value: &impl serde::Serialize) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value).context("writing JSON")? + "\n")
}
