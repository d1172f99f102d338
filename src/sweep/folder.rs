//! An output folder belongs to one run. Before a run writes anything into its folder it
//! takes the folder's lock (two runs at once would mix their rows) and checks what the
//! folder holds: nothing of a run, the same sweep (by its digest: resuming, recomputing,
//! another shard, merging), or another run, which is refused unless `--force` clears it.
//! Files epsim does not write as a run's result (plots, a user's notes) are left alone.

use super::run::{SweepManifest, read_manifest};
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

/// The lock file; held (an OS advisory lock, released when the process ends however it
/// ends) for the run's life, never part of a result.
const LOCK: &str = ".epsim.lock";

/// What a run writes as its result: a sweep's manifest, points and summary; a single
/// run's summary, requests and manifest.
const RESULTS: [&str; 5] = [
    "sweep.json",
    "points",
    "summary.csv",
    "requests.csv",
    "manifest.json",
];

/// What a folder holds of runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Holds {
    /// No run's result.
    Nothing,
    /// A sweep, by its manifest.
    Sweep(SweepManifest),
    /// Results of a run that is not a sweep with a readable manifest: a single run, an
    /// unreadable `sweep.json`, or points without one. The entries, by name.
    Other(Vec<String>),
}

/// A folder's lock, held until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// What a run is, for [`claim`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Run<'a> {
    /// A sweep (or a shard, a resume, a merge) of this digest.
    Sweep(&'a str),
    /// One scenario without a sweep: it may replace a single run's result, not a sweep's.
    Single,
}

/// What `dir` holds of runs.
pub fn holds(dir: &Path) -> Holds {
    if dir.join("sweep.json").exists() {
        return match read_manifest(dir) {
            Ok(m) => Holds::Sweep(m),
            Err(_) => Holds::Other(vec!["sweep.json (unreadable)".into()]),
        };
    }
    let present: Vec<String> = RESULTS
        .iter()
        .filter(|name| {
            let p = dir.join(name);
            match std::fs::read_dir(&p) {
                Ok(mut entries) => entries.next().is_some(),
                Err(_) => p.exists(),
            }
        })
        .map(|n| (*n).to_owned())
        .collect();
    match present.is_empty() {
        true => Holds::Nothing,
        false => Holds::Other(present),
    }
}

/// Takes `dir` (made if missing) for `run`: its lock, then what it holds checked. The same
/// sweep, or nothing of a run, is taken as it is; a single run replaces a single run's
/// result; anything else is refused, unless `force`, which removes the results it holds
/// first. `resume` needs the same sweep or nothing at all (never points without their
/// manifest). Errors are the user's to fix (exit 2).
pub fn claim(dir: &Path, run: Run, resume: bool, force: bool) -> Result<Lock, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("{}: cannot create the output folder: {e}", dir.display()))?;
    let lock = lock(dir)?;
    // Point files are written into `points/` by name: through a link they would land in
    // (and overwrite) whatever it points at.
    let points = dir.join("points");
    if std::fs::symlink_metadata(&points).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(format!(
            "{}: is a link; a run writes its points into a real folder only (remove the link)",
            points.display()
        ));
    }
    let held = holds(dir);
    let fits = match (&held, run) {
        (Holds::Nothing, _) => true,
        (Holds::Sweep(m), Run::Sweep(digest)) => m.digest == digest,
        (Holds::Other(_), Run::Single) => !resume && !points.exists(),
        _ => false,
    };
    if fits {
        return Ok(lock);
    }
    if force {
        clear(dir)?;
        return Ok(lock);
    }
    let what = match &held {
        Holds::Sweep(m) => format!(
            "another sweep ({} points of {})",
            m.total_points, m.scenario
        ),
        Holds::Other(names) => format!("another run's results ({})", names.join(", ")),
        Holds::Nothing => unreachable!("an empty folder fits every run"),
    };
    Err(format!(
        "{}: holds {what}; nothing was written. Write to another --out, or add --force to \
         remove that run's results first",
        dir.display()
    ))
}

/// The folder's lock, or an error naming it when another process holds it.
fn lock(dir: &Path) -> Result<Lock, String> {
    let path = dir.join(LOCK);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Lock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(format!(
            "{}: another epsim run is writing to this folder; wait for it, or write to \
             another --out",
            dir.display()
        )),
        Err(TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
    }
}

/// Removes the run results `dir` holds (links among them are removed, never followed).
fn clear(dir: &Path) -> Result<(), String> {
    for name in RESULTS {
        let p: PathBuf = dir.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let removed = match meta.is_dir() {
            true => std::fs::remove_dir_all(&p),
            false => std::fs::remove_file(&p),
        };
        removed.map_err(|e| format!("{}: cannot remove it: {e}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(digest: &str) -> SweepManifest {
        SweepManifest {
            epsim_version: "0".into(),
            scenario: "a.yaml".into(),
            total_points: 2,
            points: vec!["x=1".into(), "x=2".into()],
            shard: None,
            digest: digest.into(),
        }
    }

    fn sweep_folder(digest: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let text = serde_json::to_string(&manifest(digest)).unwrap();
        std::fs::write(d.path().join("sweep.json"), text).unwrap();
        std::fs::create_dir(d.path().join("points")).unwrap();
        std::fs::write(d.path().join("points/00000.csv"), "a\n1\n").unwrap();
        d
    }

    #[test]
    fn a_folder_takes_its_own_sweep_and_refuses_another() {
        let d = sweep_folder("abc");
        assert!(claim(d.path(), Run::Sweep("abc"), true, false).is_ok());
        let err = claim(d.path(), Run::Sweep("def"), false, false).unwrap_err();
        assert!(
            err.contains("holds another sweep (2 points of a.yaml)"),
            "{err}"
        );
        assert!(
            d.path().join("points/00000.csv").exists(),
            "nothing touched"
        );
        let err = claim(d.path(), Run::Single, false, false).unwrap_err();
        assert!(err.contains("another sweep"), "{err}");
        // --force removes that run's results, and only those.
        std::fs::write(d.path().join("notes.txt"), "mine").unwrap();
        assert!(claim(d.path(), Run::Sweep("def"), false, true).is_ok());
        assert_eq!(holds(d.path()), Holds::Nothing);
        assert!(d.path().join("notes.txt").exists());
    }

    #[test]
    fn points_without_a_manifest_are_no_run_to_resume() {
        let d = sweep_folder("abc");
        std::fs::remove_file(d.path().join("sweep.json")).unwrap();
        let err = claim(d.path(), Run::Sweep("abc"), true, false).unwrap_err();
        assert!(err.contains("another run's results (points)"), "{err}");
        // An empty folder, or one of plots alone, is anyone's.
        let e = tempfile::tempdir().unwrap();
        std::fs::write(e.path().join("frontier.png"), "png").unwrap();
        assert!(claim(e.path(), Run::Sweep("abc"), true, false).is_ok());
    }

    #[test]
    fn a_single_run_replaces_a_single_run() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("summary.csv"), "a\n1\n").unwrap();
        assert!(claim(d.path(), Run::Single, false, false).is_ok());
        assert!(claim(d.path(), Run::Sweep("abc"), false, false).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_link_at_points_is_refused_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let target = tempfile::tempdir().unwrap();
        std::fs::write(target.path().join("00000.csv"), "theirs").unwrap();
        std::os::unix::fs::symlink(target.path(), d.path().join("points")).unwrap();
        let err = claim(d.path(), Run::Sweep("abc"), false, true).unwrap_err();
        assert!(err.contains("is a link"), "{err}");
        let kept = std::fs::read_to_string(target.path().join("00000.csv")).unwrap();
        assert_eq!(kept, "theirs");
    }

    #[test]
    fn a_locked_folder_is_refused_until_its_run_ends() {
        let d = tempfile::tempdir().unwrap();
        let held = claim(d.path(), Run::Sweep("abc"), false, false).unwrap();
        let err = claim(d.path(), Run::Sweep("abc"), false, false).unwrap_err();
        assert!(err.contains("another epsim run is writing"), "{err}");
        drop(held);
        assert!(claim(d.path(), Run::Sweep("abc"), false, false).is_ok());
    }
}
