//! Where the bundled data lives (models/, topologies/ with GPU specs and kernel profiles),
//! so that names like `deepseek-r1` work from any folder: `$EPSIM_DATA` when set, else the
//! source tree the binary was built from (what `cargo install --path .` leaves behind),
//! else the working folder.

use std::path::{Path, PathBuf};

/// The folder holding `models/` and `topologies/`.
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("EPSIM_DATA").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR"));
    if built.join("models").is_dir() {
        return built.to_owned();
    }
    PathBuf::from(".")
}

/// Whether `text` names a bundled file rather than giving a path: no folder, no `.yaml`.
pub fn is_name(text: &str) -> bool {
    !text.contains('/') && !text.contains('\\') && !text.ends_with(".yaml")
}

/// `<data>/<folder>/<name>.yaml`.
pub fn named(folder: &str, name: &str) -> PathBuf {
    dir().join(folder).join(format!("{name}.yaml"))
}

/// `path` if it exists; else, for a relative path, the same path under the data folder if
/// that exists; else `path` (whose error then names what was asked for).
pub fn locate(path: &Path) -> PathBuf {
    if path.exists() || path.is_absolute() {
        return path.to_owned();
    }
    let bundled = dir().join(path);
    if bundled.exists() {
        bundled
    } else {
        path.to_owned()
    }
}

/// The names of the `*.yaml` files in `<data>/<folder>`, sorted.
pub fn names(folder: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir().join(folder))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension().is_some_and(|x| x == "yaml"))
                .then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .flatten()
        })
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_told_from_paths_and_found_in_the_data_folder() {
        assert!(is_name("deepseek-r1"));
        assert!(!is_name("../models/deepseek-r1.yaml") && !is_name("x.yaml"));
        assert!(named("models", "deepseek-r1").is_file());
        assert!(names("topologies").contains(&"gb200-nvl72".to_owned()));
        assert!(locate(Path::new("topologies/gb200-nvl72.yaml")).is_file());
    }
}
