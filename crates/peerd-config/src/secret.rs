//! Passwords: where they come from, and reading them when needed.
//!
//! The config file names a *source* ([`Secret`]); the value is read only
//! when a connection needs it ([`Secret::read`]) and is wiped from memory
//! when dropped. No value ever appears in `Debug` output or in an error
//! message. The file path and the command are configuration, not secrets,
//! and are shown.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// The largest password file or command output read, in bytes.
pub const MAX_SECRET_LEN: usize = 64 * 1024;

/// How long `password_command` may take by default.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a password comes from.
#[derive(Clone)]
pub enum Secret {
    /// `password_file`: the file's content, minus one trailing newline.
    File(PathBuf),
    /// `password_command`: run with `sh -c`; the first line of its output.
    Command(String),
    /// `password`: written in the config file itself (allowed only when the
    /// config file is readable by its owner only).
    Inline(Zeroizing<String>),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Command(cmd) => f.debug_tuple("Command").field(cmd).finish(),
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
        }
    }
}

/// A user name with its password source.
#[derive(Debug, Clone)]
pub struct Login {
    /// `username`.
    pub username: String,
    /// `password_file`, `password_command` or `password`.
    pub password: Secret,
}

/// Why a password could not be read. Never contains the password, nor
/// anything the command printed on stdout.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The password file could not be read.
    #[error("cannot read password file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The password file is larger than [`MAX_SECRET_LEN`].
    #[error("password file {} is larger than {MAX_SECRET_LEN} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The password file is empty (or only a newline).
    #[error("password file {} is empty", path.display())]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// The password is not UTF-8 text.
    #[error("the password from {0} is not UTF-8 text")]
    NotUtf8(String),
    /// `sh` could not be started.
    #[error("cannot run password_command `{command}`: {source}")]
    Spawn {
        /// The command.
        command: String,
        /// What the system said.
        source: io::Error,
    },
    /// The command exited unsuccessfully.
    #[error("password_command `{command}` failed ({status})")]
    Failed {
        /// The command.
        command: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// The command did not finish in time; it was killed.
    #[error("password_command `{command}` did not finish within {}s", timeout.as_secs())]
    TimedOut {
        /// The command.
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// The command printed nothing on its first line.
    #[error("password_command `{command}` printed no password")]
    NoOutput {
        /// The command.
        command: String,
    },
}

impl SecretError {
    /// Whether trying again later may work (a command that failed or hung,
    /// a file that could not be read now) as opposed to a source that is
    /// wrong until the configuration or the file is fixed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Io { .. } | Self::Spawn { .. } | Self::Failed { .. } | Self::TimedOut { .. } => {
                true
            },
            Self::TooLarge { .. }
            | Self::EmptyFile { .. }
            | Self::NotUtf8(_)
            | Self::NoOutput { .. } => false,
        }
    }
}

impl Secret {
    /// Reads the password: a file's content without one trailing newline
    /// (`\n` or `\r\n`), or the first line a command prints on stdout (the
    /// command must exit 0 within [`DEFAULT_COMMAND_TIMEOUT`]; its stderr
    /// goes to ours), or the inline value.
    pub fn read(&self) -> Result<Zeroizing<String>, SecretError> {
        self.read_with_timeout(DEFAULT_COMMAND_TIMEOUT)
    }

    /// [`Secret::read`] with another time limit for `password_command`.
    pub fn read_with_timeout(&self, timeout: Duration) -> Result<Zeroizing<String>, SecretError> {
        match self {
            Self::File(path) => read_file(path),
            Self::Command(command) => run_command(command, timeout),
            Self::Inline(value) => Ok(value.clone()),
        }
    }
}

fn read_file(path: &PathBuf) -> Result<Zeroizing<String>, SecretError> {
    let io_err = |source| SecretError::Io {
        path: path.clone(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_SECRET_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() > MAX_SECRET_LEN {
        return Err(SecretError::TooLarge { path: path.clone() });
    }
    let mut end = bytes.len();
    if bytes[..end].ends_with(b"\n") {
        end -= 1;
        if bytes[..end].ends_with(b"\r") {
            end -= 1;
        }
    }
    if end == 0 {
        return Err(SecretError::EmptyFile { path: path.clone() });
    }
    to_string(&bytes[..end]).ok_or_else(|| SecretError::NotUtf8(path.display().to_string()))
}

fn to_string(bytes: &[u8]) -> Option<Zeroizing<String>> {
    std::str::from_utf8(bytes)
        .ok()
        .map(|s| Zeroizing::new(s.to_owned()))
}

fn run_command(command: &str, timeout: Duration) -> Result<Zeroizing<String>, SecretError> {
    let deadline = Instant::now() + timeout;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| SecretError::Spawn {
            command: command.to_owned(),
            source,
        })?;
    let timed_out = || SecretError::TimedOut {
        command: command.to_owned(),
        timeout,
    };

    // Read stdout on a thread so that a command that never closes it cannot
    // block us past the deadline.
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        thread::spawn(move || {
            let mut out = Zeroizing::new(Vec::new());
            let result = stdout
                .take(MAX_SECRET_LEN as u64)
                .read_to_end(&mut out)
                .map(|_| out);
            let _ = tx.send(result);
        });
    }
    let output = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(out)) => out,
        Ok(Err(source)) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SecretError::Spawn {
                command: command.to_owned(),
                source,
            });
        },
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(timed_out());
        },
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(timed_out());
            },
            Err(source) => {
                return Err(SecretError::Spawn {
                    command: command.to_owned(),
                    source,
                });
            },
        }
    };
    if !status.success() {
        return Err(SecretError::Failed {
            command: command.to_owned(),
            status,
        });
    }
    let line = output.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(SecretError::NoOutput {
            command: command.to_owned(),
        });
    }
    to_string(line).ok_or_else(|| SecretError::NotUtf8(format!("password_command `{command}`")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn file_with(content: &[u8]) -> (tempfile::TempDir, Secret) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass");
        fs::write(&path, content).unwrap();
        (dir, Secret::File(path))
    }

    #[test]
    fn file_trims_exactly_one_newline() {
        for (content, want) in [
            (&b"hunter2\n"[..], "hunter2"),
            (b"hunter2", "hunter2"),
            (b"hunter2\r\n", "hunter2"),
            (b"hunter2\n\n", "hunter2\n"),
            (b" spaced \n", " spaced "),
        ] {
            let (_dir, secret) = file_with(content);
            assert_eq!(secret.read().unwrap().as_str(), want, "{content:?}");
        }
    }

    #[test]
    fn file_errors_do_not_show_the_content() {
        let (_dir, secret) = file_with(b"\n");
        assert!(matches!(secret.read(), Err(SecretError::EmptyFile { .. })));
        let (_dir, secret) = file_with(b"\xffhunter2\n");
        let err = secret.read().unwrap_err();
        assert!(matches!(err, SecretError::NotUtf8(_)));
        assert!(!err.to_string().contains("hunter2"));
        let (_dir, secret) = file_with(&vec![b'x'; MAX_SECRET_LEN + 1]);
        assert!(matches!(secret.read(), Err(SecretError::TooLarge { .. })));
        let missing = Secret::File("/nonexistent/peerd/pass".into());
        let err = missing.read().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read password file /nonexistent/peerd/pass")
        );
    }

    #[test]
    fn command_takes_the_first_line_of_stdout() {
        let s = Secret::Command("printf 'hunter2\\nsecond line\\n'; echo noise >&2".into());
        assert_eq!(s.read().unwrap().as_str(), "hunter2");
        let s = Secret::Command("printf 'crlf\\r\\n'".into());
        assert_eq!(s.read().unwrap().as_str(), "crlf");
    }

    #[test]
    fn command_failures_never_show_stdout() {
        let s = Secret::Command("echo hunter2; exit 3".into());
        let err = s.read().unwrap_err();
        assert!(matches!(err, SecretError::Failed { .. }), "{err:?}");
        let text = format!("{err} {err:?}");
        assert!(text.contains("exit status: 3"), "{text}");
        assert_eq!(
            text.matches("hunter2").count(),
            2,
            "only in the command: {text}"
        );

        assert!(err.is_transient());
        let s = Secret::Command("true".into());
        assert!(matches!(s.read(), Err(SecretError::NoOutput { .. })));
        let s = Secret::Command("echo; echo later".into());
        assert!(matches!(s.read(), Err(SecretError::NoOutput { .. })));
    }

    #[test]
    fn command_that_hangs_is_killed() {
        let start = Instant::now();
        let s = Secret::Command("sleep 30".into());
        let err = s.read_with_timeout(Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, SecretError::TimedOut { .. }), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(10));
        // Output written, but the command keeps running.
        let s = Secret::Command("echo pw; exec sleep 30".into());
        let err = s.read_with_timeout(Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, SecretError::TimedOut { .. }), "{err:?}");
    }

    #[test]
    fn debug_redacts_inline_values() {
        let s = Secret::Inline(Zeroizing::new("hunter2".into()));
        assert_eq!(format!("{s:?}"), "Inline(<redacted>)");
        assert_eq!(s.read().unwrap().as_str(), "hunter2");
        let login = Login {
            username: "alice".into(),
            password: s,
        };
        assert!(!format!("{login:?}").contains("hunter2"));
        assert_eq!(
            format!("{:?}", Secret::File("/etc/peerd/smtp.pass".into())),
            "File(\"/etc/peerd/smtp.pass\")"
        );
    }
}
