//! Problems found in a config file, and how they are printed.
//!
//! Every problem is one line, `file:line:col: message` (errors) or
//! `file:line:col: warning: message` (warnings), with 1-based line and
//! column numbers; the column counts characters, not bytes, as editors do.
//! A problem about the file as a whole (it cannot be read, it is too large)
//! has no position and prints as `file: message`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// At most this many problems are reported; a last line says how many more
/// there were (a file of random bytes has tens of thousands).
pub const MAX_PROBLEMS: usize = 100;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The configuration is refused.
    Error,
    /// Worth fixing, but peerd can run (for example a secret file that only
    /// exists inside the service, or is readable by others).
    Warning,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, as it was given (not canonicalised), so that the message
    /// names the file the user typed.
    pub path: PathBuf,
    /// 1-based line, or 0 when the problem is about the whole file.
    pub line: usize,
    /// 1-based column in characters, or 0 when the problem is about the
    /// whole file.
    pub col: usize,
    /// What is wrong and, where it helps, what to write instead. Never
    /// contains the value of a secret.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl Problem {
    /// A problem about the file as a whole (printed without a position).
    pub fn whole_file(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            line: 0,
            col: 0,
            message: message.into(),
            severity: Severity::Error,
        }
    }

    /// Whether this is an error (as opposed to a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        f.write_str(": ")?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Why a configuration was refused: every error found, plus the warnings,
/// in file order (a problem about the whole file, which has no position,
/// comes first).
///
/// `Display` prints one problem per line (no trailing newline), which is
/// exactly what `peerd check-config` writes to stderr.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Lines(.0))]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// The errors (without the warnings).
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter().filter(|p| p.is_error())
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter().filter(|p| !p.is_error())
    }
}

struct Lines<'a>(&'a [Problem]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Collects problems while a file is read, by byte offset, and turns them
/// into sorted, positioned [`Problem`]s at the end.
pub(crate) struct Collector<'a> {
    origin: &'a Path,
    text: &'a str,
    /// (byte offset, severity, message), in the order found.
    found: Vec<(usize, Severity, String)>,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(origin: &'a Path, text: &'a str) -> Self {
        Self {
            origin,
            text,
            found: Vec::new(),
        }
    }

    /// Records an error at the start of `span`.
    pub(crate) fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.found
            .push((span.start, Severity::Error, message.into()));
    }

    /// Records a warning at the start of `span`.
    pub(crate) fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.found
            .push((span.start, Severity::Warning, message.into()));
    }

    /// Whether any error was recorded.
    pub(crate) fn has_errors(&self) -> bool {
        self.found.iter().any(|(_, s, _)| *s == Severity::Error)
    }

    /// The source text the spans point into.
    pub(crate) fn text(&self) -> &'a str {
        self.text
    }

    /// The 1-based line of a byte offset (for "already defined at line N").
    pub(crate) fn line(&self, offset: usize) -> usize {
        LineIndex::new(self.text).position(offset).0
    }

    /// The problems in file order (stable for problems at one offset), at
    /// most [`MAX_PROBLEMS`] of them plus a line saying how many were left
    /// out.
    pub(crate) fn finish(mut self) -> Vec<Problem> {
        self.found.sort_by_key(|(offset, _, _)| *offset);
        let total = self.found.len();
        let index = LineIndex::new(self.text);
        let mut out: Vec<Problem> = Vec::with_capacity(total.min(MAX_PROBLEMS + 1));
        for (offset, severity, message) in self.found.into_iter().take(MAX_PROBLEMS + 1) {
            let (line, col) = index.position(offset);
            let message = if out.len() == MAX_PROBLEMS {
                format!("stopping after {MAX_PROBLEMS} problems ({total} in all)")
            } else {
                message
            };
            out.push(Problem {
                path: self.origin.to_owned(),
                line,
                col,
                message,
                severity,
            });
        }
        out
    }
}

/// Turns byte offsets into 1-based (line, column in characters).
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset where each line starts.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { text, starts }
    }

    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let col = self.text[start..offset].chars().count() + 1;
        (line, col)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "ab\nc\u{e9}d\n\nxyz";
        let idx = LineIndex::new(text);
        assert_eq!(idx.position(0), (1, 1));
        assert_eq!(idx.position(1), (1, 2));
        assert_eq!(idx.position(2), (1, 3)); // the newline itself
        assert_eq!(idx.position(3), (2, 1));
        assert_eq!(idx.position(6), (2, 3)); // after the two-byte é
        assert_eq!(idx.position(5), (2, 2)); // inside é: rounds down
        assert_eq!(idx.position(8), (3, 1));
        assert_eq!(idx.position(9), (4, 1));
        assert_eq!(idx.position(1000), (4, 4)); // past the end: end of file
        assert_eq!(LineIndex::new("").position(0), (1, 1));
    }

    #[test]
    fn display_forms() {
        let mut p = Problem {
            path: "x/peerd.toml".into(),
            line: 3,
            col: 7,
            message: "bad".into(),
            severity: Severity::Error,
        };
        assert_eq!(p.to_string(), "x/peerd.toml:3:7: bad");
        p.severity = Severity::Warning;
        assert_eq!(p.to_string(), "x/peerd.toml:3:7: warning: bad");
        let whole = Problem::whole_file(Path::new("/etc/peerd/peerd.toml"), "cannot read");
        assert_eq!(whole.to_string(), "/etc/peerd/peerd.toml: cannot read");
        let all = Problems(vec![whole.clone(), p]);
        assert_eq!(
            all.to_string(),
            "/etc/peerd/peerd.toml: cannot read\nx/peerd.toml:3:7: warning: bad"
        );
        assert_eq!(all.errors().count(), 1);
        assert_eq!(all.warnings().count(), 1);
    }

    #[test]
    fn sorted_by_position_and_capped() {
        let text = "a\nb\nc\n";
        let mut c = Collector::new(Path::new("f"), text);
        c.error(4..5, "third");
        c.warn(0..1, "first");
        c.error(2..3, "second");
        c.error(2..3, "second again");
        let out: Vec<String> = c.finish().iter().map(ToString::to_string).collect();
        assert_eq!(
            out,
            [
                "f:1:1: warning: first",
                "f:2:1: second",
                "f:2:1: second again",
                "f:3:1: third"
            ]
        );

        let mut c = Collector::new(Path::new("f"), text);
        for _ in 0..(MAX_PROBLEMS + 50) {
            c.error(0..0, "x");
        }
        let out = c.finish();
        assert_eq!(out.len(), MAX_PROBLEMS + 1);
        assert_eq!(
            out[MAX_PROBLEMS].message,
            format!(
                "stopping after {MAX_PROBLEMS} problems ({} in all)",
                MAX_PROBLEMS + 50
            )
        );
    }
}
