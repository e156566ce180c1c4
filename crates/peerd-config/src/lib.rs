//! peerd's configuration: `/etc/peerd/peerd.toml`, loaded and validated.
//!
//! [`load`] reads the file (and its permission bits), [`parse`] checks
//! everything: TOML syntax, every key's type and value, unknown keys, and
//! the rules that involve several keys (a sealed peer needs a key, clear
//! text only to loopback, a service names known peers, ...). It does not
//! stop at the first problem: the result is either a typed [`Config`] with
//! any [`warnings`](Loaded::warnings), or [`Problems`] listing every error
//! (and the warnings), one `file:line:col: message` per line, in file
//! order. That list is what `peerd check-config` prints before exiting 78.
//!
//! Syntax errors come first: when the file is not valid TOML, only the
//! syntax errors are reported (all of them), since checking the keys of a
//! half-read document would report problems that are not there.
//!
//! Secrets are never read here. A password is a [`Secret`] (a file, a
//! command or, only in a file of mode 0600, an inline value) and is read
//! when a connection needs it; no message or `Debug` output shows one.
//!
//! # Layout
//! - [`model`]: [`Config`] and its section structs and enums.
//! - [`secret`]: [`Secret`], [`Login`], reading passwords.
//! - [`problem`]: [`Problem`], [`Problems`], how they print.
//! - `walk` (private): walks toml's spanned document section by section,
//!   reporting wrong types and unknown keys with their spans.
//! - `values` (private): single-value parsers and checks (durations,
//!   sizes, modes, interface and host names, ...), each stating its rule.
//! - `read` (private): one reader per section, with the cross-field checks.

pub mod model;
pub mod problem;
pub mod secret;

mod read;
mod values;
mod walk;

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use toml::de::DeTable;
use zeroize::Zeroizing;

pub use model::*;
pub use problem::{MAX_PROBLEMS, Problem, Problems, Severity};
pub use secret::{Login, Secret, SecretError};

/// Where the daemon looks for its config by default.
pub const DEFAULT_PATH: &str = "/etc/peerd/peerd.toml";

/// The largest config file read (1 MiB); a real one is a few KiB.
pub const MAX_CONFIG_LEN: usize = 1 << 20;

/// A configuration that passed every check, with the warnings found.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Problems that do not stop peerd (for example a password file that
    /// others can read), in file order. Print them.
    pub warnings: Vec<Problem>,
}

/// Reads and checks the config file at `path`.
///
/// The file's permission bits decide whether an inline `password` is
/// allowed (only when no one but the owner can read it). Problems name the
/// file as `path` was given. A file that cannot be read, is not a regular
/// file, is larger than [`MAX_CONFIG_LEN`] or is not UTF-8 gives one
/// problem; the first three have no line and column (`file: message`).
pub fn load(path: &Path) -> Result<Loaded, Problems> {
    let whole = |message: String| Problems(vec![Problem::whole_file(path, message)]);
    let file = File::open(path)
        .map_err(|e| whole(format!("cannot read the config: {}", io_reason(&e))))?;
    let meta = file
        .metadata()
        .map_err(|e| whole(format!("cannot read the config: {}", io_reason(&e))))?;
    if !meta.is_file() {
        return Err(whole("the config is not a regular file".to_owned()));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_CONFIG_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| whole(format!("cannot read the config: {}", io_reason(&e))))?;
    if bytes.len() > MAX_CONFIG_LEN {
        return Err(whole(too_large()));
    }
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        Err(e) => {
            let valid = e.valid_up_to();
            let prefix = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
            let (line, col) = problem::LineIndex::new(prefix).position(valid);
            return Err(Problems(vec![Problem {
                line,
                col,
                message: format!(
                    "the file is not UTF-8 text (byte 0x{:02x}); save it as UTF-8",
                    bytes[valid]
                ),
                ..Problem::whole_file(path, "")
            }]));
        },
    };
    parse(text, path, meta.mode() & 0o7777)
}

/// Checks config text. `origin` is the file name used in problems;
/// `file_mode` the file's permission bits: an inline `password` needs
/// `file_mode & 0o077 == 0`, and a file that group or others can write is
/// warned about (it names programs peerd runs, such as `pppd` and
/// `password_command`).
pub fn parse(text: &str, origin: &Path, file_mode: u32) -> Result<Loaded, Problems> {
    if text.len() > MAX_CONFIG_LEN {
        return Err(Problems(vec![Problem::whole_file(origin, too_large())]));
    }
    let mut c = problem::Collector::new(origin, text);
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in &syntax {
            let span = e.span().unwrap_or(0..0);
            let message = syntax_message(e.message(), c.text().get(span.clone()));
            c.error(span, message);
        }
        return Err(Problems(c.finish()));
    }
    let config = read::read(&mut c, doc, file_mode);
    let refused = c.has_errors();
    let mut problems = c.finish();
    if file_mode & 0o022 != 0 {
        problems.insert(
            0,
            Problem {
                severity: Severity::Warning,
                ..Problem::whole_file(
                    origin,
                    format!(
                        "group or others can change this file (mode {:04o}), and it names programs peerd runs: chmod 644 it (600 with an inline password)",
                        file_mode & 0o7777
                    ),
                )
            },
        );
    }
    match config {
        Some(config) if !refused => Ok(Loaded {
            config,
            warnings: problems,
        }),
        _ => {
            if !problems.iter().any(Problem::is_error) {
                // Not reachable: a missing section is always reported. Kept
                // so that a refusal never comes without a reason.
                problems.push(Problem {
                    line: 1,
                    col: 1,
                    ..Problem::whole_file(origin, "the configuration is incomplete")
                });
            }
            Err(Problems(problems))
        },
    }
}

/// toml's parser messages, with the key named where toml only says
/// "duplicate key".
fn syntax_message(message: &str, at: Option<&str>) -> String {
    match (message, at) {
        ("duplicate key", Some(key)) if !key.is_empty() => {
            format!(
                "`{}` is defined twice",
                values::quote(key).trim_matches('"')
            )
        },
        ("recursion limit", _) => "nested too deeply".to_owned(),
        _ => message.to_owned(),
    }
}

fn too_large() -> String {
    format!(
        "the file is larger than {} KiB; a peerd config is a few KiB",
        MAX_CONFIG_LEN >> 10
    )
}

fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests;
