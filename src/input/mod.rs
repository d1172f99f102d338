//! Reading YAML input files with located, collected diagnostics: every problem in a file is
//! reported at once, each with file, line, column and field path.

pub mod data;
mod de;
mod tree;

pub use de::{At, Placeholder, Problem, Recover, from_node, recovering};
pub use tree::{Key, Loc, Node, Value, parse_node};

use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one input file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// Absent when the file could not be read at all.
    pub loc: Option<Loc>,
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(loc) = self.loc {
            write!(f, ":{loc}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a set of input files; the error type of all loaders.
#[derive(Debug, Clone, Default, PartialEq, thiserror::Error)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.items.len();
        writeln!(
            f,
            "{n} problem{} in the input:",
            if n == 1 { "" } else { "s" }
        )?;
        for (i, d) in self.items.iter().enumerate() {
            if i + 1 < n {
                writeln!(f, "  {d}")?;
            } else {
                write!(f, "  {d}")?;
            }
        }
        Ok(())
    }
}

impl Diagnostics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    pub fn push(&mut self, file: &Path, problem: Problem) {
        self.items.push(Diagnostic {
            file: file.to_owned(),
            loc: Some(problem.loc),
            path: problem.path,
            message: problem.message,
        });
    }

    pub fn extend(&mut self, file: &Path, problems: impl IntoIterator<Item = Problem>) {
        for p in problems {
            self.push(file, p);
        }
    }

    pub fn append(&mut self, mut other: Diagnostics) {
        self.items.append(&mut other.items);
    }

    /// Problems at field `path` of a value that came from elsewhere (the command line's
    /// `origin`): their line and column are not the file's, so they are dropped and the
    /// message names the origin.
    pub fn retell(&mut self, path: &str, origin: &str) {
        for d in self.items.iter_mut().filter(|d| d.path == path) {
            d.loc = None;
            d.message = format!("{origin}: {}", d.message);
        }
    }

    /// A problem with the file as a whole (it could not be read).
    pub fn push_file(&mut self, file: &Path, message: impl Into<String>) {
        self.items.push(Diagnostic {
            file: file.to_owned(),
            loc: None,
            path: String::new(),
            message: message.into(),
        });
    }

    /// `Ok(value)` when nothing was found, otherwise every problem, in file and line order.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.items.is_empty() {
            Ok(value)
        } else {
            Err(self.into_error())
        }
    }

    /// The problems, in file and line order, once each.
    pub fn into_error(mut self) -> Diagnostics {
        self.items.sort();
        self.items.dedup();
        self
    }
}

/// Parses YAML text into its located tree; a syntax error is reported with its position.
pub fn parse_tree(file: &Path, text: &str) -> Result<Node, Diagnostics> {
    let mut diags = Diagnostics::new();
    if text.trim().is_empty()
        || text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        diags.push(
            file,
            Problem::new(Loc { line: 1, column: 1 }, "", "the file is empty"),
        );
        return Err(diags);
    }
    match parse_node(text) {
        Ok(node) => Ok(node),
        Err(e) => {
            let loc = e.location().map_or(Loc { line: 1, column: 1 }, Loc::from);
            diags.push(file, Problem::new(loc, "", syntax_message(&e)));
            Err(diags)
        }
    }
}

/// The largest input file epsim reads: far above any scenario, topology, model, trace or
/// profile, and small enough that `/dev/zero` or a mistaken path fails fast.
pub const MAX_INPUT_BYTES: u64 = 64 << 20;

/// A text input file, refused (with its name) when unreadable or larger than
/// [`MAX_INPUT_BYTES`].
pub fn read_text(file: &Path) -> Result<String, Diagnostics> {
    let f = std::fs::File::open(file).map_err(|e| {
        let mut diags = Diagnostics::new();
        diags.push_file(file, format!("cannot read the file: {e}"));
        diags
    })?;
    read_capped(f, file)
}

/// All of `reader` (a file, standard input) as text, refused under the name `file` when
/// unreadable or larger than [`MAX_INPUT_BYTES`].
pub fn read_capped(reader: impl std::io::Read, file: &Path) -> Result<String, Diagnostics> {
    use std::io::Read;
    let fail = |message: String| {
        let mut diags = Diagnostics::new();
        diags.push_file(file, message);
        diags
    };
    let mut text = String::new();
    reader
        .take(MAX_INPUT_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(format!("cannot read the file: {e}")))?;
    if text.len() as u64 > MAX_INPUT_BYTES {
        return Err(fail(format!(
            "larger than {} MiB: not an input file",
            MAX_INPUT_BYTES >> 20
        )));
    }
    Ok(text)
}

/// Reads and deserializes a YAML file, reporting every problem in it at once.
pub fn read_yaml<T: DeserializeOwned>(file: &Path) -> Result<T, Diagnostics> {
    let text = read_text(file)?;
    parse_yaml(file, &text)
}

/// Deserializes YAML text (named `file` in messages), reporting every problem at once.
pub fn parse_yaml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, Diagnostics> {
    let root = parse_tree(file, text)?;
    from_node(&root).map_err(|problems| {
        let mut diags = Diagnostics::new();
        diags.extend(file, problems);
        diags
    })
}

/// serde-saphyr's message, first line only, without the position it appends (we print
/// positions ourselves, one line per problem).
fn syntax_message(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("invalid YAML").trim();
    let first = first.split(" at line ").next().unwrap_or(first);
    format!("invalid YAML: {first}")
}

/// Line and column of cell `i` of `record` (column 1 without a cell). A record keeps its
/// cells without the commas between them, so cell i starts i commas further on (unquoted).
pub fn csv_cell(line: u64, record: Option<&csv::StringRecord>, i: Option<usize>) -> Loc {
    let column = record
        .zip(i)
        .and_then(|(r, i)| r.range(i).map(|range| range.start + i))
        .map_or(1, |start| start + 1);
    Loc {
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(column).unwrap_or(u32::MAX),
    }
}
