//! The `peerd` binary, run for real: keygen, pubkey, check-config and run.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is the test failing"
)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use peerd_core::{Identity, PublicKey};

const EX_USAGE: i32 = 2;
const EX_NOINPUT: i32 = 66;
const EX_CANTCREAT: i32 = 73;
const EX_CONFIG: i32 = 78;

/// How long a started or signalled daemon may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// `peerd` with `args`, with none of the variables it reads taken from the
/// test's environment.
fn peerd_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerd"));
    cmd.args(args)
        .env_remove("PEERD_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null());
    cmd
}

fn peerd(args: &[&str]) -> Output {
    peerd_command(args).output().expect("run peerd")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The workspace root (where `config/peerd.toml` lives).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A minimal valid configuration in `dir` whose key file is `key_file`.
fn write_config(dir: &Path, key_file: &Path) -> PathBuf {
    let config = dir.join("peerd.toml");
    fs::write(
        &config,
        format!(
            r#"[identity]
name = "alice"
key_file = "{}"

[state]
dir = "{}"

[mail]
address = "alice@isp-a.example"

[mail.smtp]
host = "smtp.isp-a.example"

[mail.incoming]
protocol = "imap"
host = "mail.isp-a.example"

[control]
socket = "{}"

[listen]
port = {}
addresses = ["127.0.0.1"]
"#,
            key_file.display(),
            dir.join("state").display(),
            dir.join("control.sock").display(),
            free_udp_port(),
        ),
    )
    .unwrap();
    config
}

/// A UDP port on 127.0.0.1 that was free a moment ago (the daemon's
/// listening port; tests run in parallel).
fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// Checks `peerd pubkey`-style output against the key in `key_file`.
fn assert_prints_key(stdout: &[u8], key_file: &Path) {
    let stdout = text(stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout:?}");
    let key: PublicKey = lines[0].parse().expect("first line is a public key");
    assert_eq!(
        lines[0],
        key.to_string(),
        "printed exactly as users paste it"
    );
    assert_eq!(key, Identity::load(key_file).unwrap().public_key());
    assert_eq!(lines[1], key.fingerprint().to_string());
}

// --- keygen ---------------------------------------------------------------

#[test]
fn keygen_creates_a_0600_key_and_refuses_a_second_time() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys/identity.key");

    let first = peerd(&["keygen", "--key-file", path_str(&key_file)]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert_eq!(mode(&key_file), 0o600);
    assert_prints_key(&first.stdout, &key_file);
    let before = fs::read(&key_file).unwrap();

    let second = peerd(&["keygen", "--key-file", path_str(&key_file)]);
    assert_eq!(second.status.code(), Some(EX_CANTCREAT));
    assert!(second.stdout.is_empty());
    let err = text(&second.stderr);
    assert!(err.starts_with("peerd: "), "{err}");
    assert!(err.contains("a key already exists"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(fs::read(&key_file).unwrap(), before, "the key is unchanged");
    assert_eq!(mode(&key_file), 0o600);
}

#[test]
fn keygen_uses_the_configured_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("identity.key");
    let config = write_config(dir.path(), &key_file);

    let out = peerd(&["--config", path_str(&config), "keygen"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(mode(&key_file), 0o600);
    assert_prints_key(&out.stdout, &key_file);
}

#[test]
fn keygen_with_an_invalid_config_suggests_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("peerd.toml");
    fs::write(&config, "[identity]\nname = \"Not A Name\"\n").unwrap();

    let out = peerd(&["--config", path_str(&config), "keygen"]);
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:", config.display())), "{err}");
    assert!(err.contains("--key-file"), "{err}");
    assert!(
        fs::read_dir(dir.path()).unwrap().count() == 1,
        "nothing created"
    );
}

// --- pubkey ---------------------------------------------------------------

#[test]
fn pubkey_prints_the_key_then_its_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("identity.key");
    Identity::create(&key_file).unwrap();

    let out = peerd(&["pubkey", "--key-file", path_str(&key_file)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_prints_key(&out.stdout, &key_file);

    // The same through the configuration's identity.key_file.
    let config = write_config(dir.path(), &key_file);
    let out = peerd(&["--config", path_str(&config), "pubkey"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_prints_key(&out.stdout, &key_file);
}

#[test]
fn pubkey_refuses_a_key_file_others_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("identity.key");
    Identity::create(&key_file).unwrap();
    fs::set_permissions(&key_file, fs::Permissions::from_mode(0o644)).unwrap();

    let out = peerd(&["pubkey", "--key-file", path_str(&key_file)]);
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(err.starts_with("peerd: "), "{err}");
    assert!(err.contains("mode 0644"), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn pubkey_refuses_a_file_that_is_not_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("identity.key");
    fs::write(&key_file, "this is not a key\n").unwrap();
    fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600)).unwrap();

    let out = peerd(&["pubkey", "--key-file", path_str(&key_file)]);
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(err.starts_with("peerd: "), "{err}");
    assert!(err.contains("not a peerd identity key"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn pubkey_without_a_key_file_points_to_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("missing.key");

    let out = peerd(&["pubkey", "--key-file", path_str(&key_file)]);
    assert_eq!(out.status.code(), Some(EX_NOINPUT));
    let err = text(&out.stderr);
    assert!(err.contains("peerd keygen"), "{err}");
    assert!(err.contains(path_str(&key_file)), "{err}");
}

// --- check-config ---------------------------------------------------------

#[test]
fn check_config_accepts_the_example() {
    let example = workspace_root().join("config/peerd.toml");
    let out = peerd(&["--config", path_str(&example), "check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).ends_with("configuration ok\n"));
}

#[test]
fn check_config_reads_peerd_config_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &dir.path().join("identity.key"));
    let out = peerd_command(&["check-config"])
        .env("PEERD_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(path_str(&config)));
}

/// The broken configs of peerd-config, each with the exact problems it
/// gives. The convention (its `tests/data/broken/README.md`): run in
/// `crates/peerd-config`, name each file by its relative path, and make
/// every fixture mode 0644 first (git does not keep modes; one fixture is
/// refused because others can read it).
#[test]
fn check_config_reports_every_broken_fixture_exactly() {
    let crate_dir = workspace_root().join("crates/peerd-config");
    let dir = Path::new("tests/data/broken");
    let mut fixtures: Vec<PathBuf> = fs::read_dir(crate_dir.join(dir))
        .unwrap()
        .map(|e| dir.join(e.unwrap().file_name()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    fixtures.sort();
    assert!(
        fixtures.len() >= 10,
        "only {} broken fixtures",
        fixtures.len()
    );
    for fixture in fixtures {
        let full = crate_dir.join(&fixture);
        fs::set_permissions(&full, fs::Permissions::from_mode(0o644)).unwrap();
        let expected = fs::read_to_string(full.with_extension("expected")).unwrap();
        let out = peerd_command(&["--config", path_str(&fixture), "check-config"])
            .current_dir(&crate_dir)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(EX_CONFIG),
            "{}: {}",
            fixture.display(),
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{}", fixture.display());
        assert_eq!(text(&out.stderr), expected, "{}", fixture.display());
    }
}

#[test]
fn check_config_on_a_missing_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = peerd(&["--config", path_str(&missing), "check-config"]);
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    assert!(text(&out.stderr).starts_with(path_str(&missing)));
}

// --- run ------------------------------------------------------------------

/// A running daemon whose stderr lines arrive on a channel.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start peerd");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_for(&mut self, needle: &str) {
        let until = Instant::now() + DEADLINE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                },
                Err(_) => panic!("no {needle:?} from peerd; stderr so far: {:#?}", self.seen),
            }
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, signal).unwrap();
    }

    /// Waits for the exit; returns its code and all of stderr.
    fn wait_exit(mut self) -> (Option<i32>, Vec<String>) {
        let until = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!("peerd did not exit; stderr: {:#?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF, which follows the exit.
        self.seen.extend(self.lines.iter());
        (status.code(), std::mem::take(&mut self.seen))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory with a valid configuration and identity key.
fn runnable() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("identity.key");
    Identity::create(&key_file).unwrap();
    let config = write_config(dir.path(), &key_file);
    (dir, config)
}

fn run_until(signal: Signal, args: &[&str]) -> Vec<String> {
    let (_dir, config) = runnable();
    let mut cmd_args = vec!["--config", path_str(&config)];
    cmd_args.extend_from_slice(args);
    let mut daemon = Daemon::start(peerd_command(&cmd_args));
    daemon.wait_for("peerd ready");
    daemon.signal(signal);
    let (code, stderr) = daemon.wait_exit();
    assert_eq!(code, Some(0), "{stderr:#?}");
    assert!(
        stderr.iter().any(|l| l.contains("peerd stopped cleanly")),
        "{stderr:#?}"
    );
    stderr
}

#[test]
fn run_stops_cleanly_on_sigterm() {
    let stderr = run_until(Signal::SIGTERM, &["run"]);
    assert!(stderr.iter().any(|l| l.contains("SIGTERM")), "{stderr:#?}");
}

#[test]
fn run_is_the_default_and_stops_cleanly_on_sigint() {
    let stderr = run_until(Signal::SIGINT, &[]);
    assert!(stderr.iter().any(|l| l.contains("SIGINT")), "{stderr:#?}");
}

#[test]
fn run_never_logs_the_secret_key() {
    let (dir, config) = runnable();
    let pem = fs::read_to_string(dir.path().join("identity.key")).unwrap();
    let secret_line = pem.lines().nth(1).unwrap().to_owned();
    let mut daemon = Daemon::start(peerd_command(&[
        "--config",
        path_str(&config),
        "--log-level",
        "trace",
    ]));
    daemon.wait_for("peerd ready");
    daemon.signal(Signal::SIGTERM);
    let (code, stderr) = daemon.wait_exit();
    assert_eq!(code, Some(0));
    assert!(!stderr.iter().any(|l| l.contains(&secret_line)));
}

#[test]
fn log_level_wins_over_rust_log() {
    let (_dir, config) = runnable();
    let mut cmd = peerd_command(&["--config", path_str(&config), "--log-level", "info"]);
    cmd.env("RUST_LOG", "off");
    let mut daemon = Daemon::start(cmd);
    daemon.wait_for("peerd ready");
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit().0, Some(0));

    // RUST_LOG alone is obeyed: debug shows what info does not.
    let debug_line = "Configuration loaded";
    let run = |rust_log: &str, level: Option<&str>| {
        let mut args = vec!["--config", path_str(&config)];
        if let Some(level) = level {
            args.extend(["--log-level", level]);
        }
        let mut cmd = peerd_command(&args);
        cmd.env("RUST_LOG", rust_log);
        let mut daemon = Daemon::start(cmd);
        daemon.wait_for("peerd ready");
        daemon.signal(Signal::SIGTERM);
        let (code, stderr) = daemon.wait_exit();
        assert_eq!(code, Some(0));
        stderr.iter().any(|l| l.contains(debug_line))
    };
    assert!(run("debug", None));
    assert!(!run("info", None));
    assert!(!run("debug", Some("info")));
}

#[test]
fn run_refuses_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("peerd.toml");
    fs::write(&config, "[identity]\nname = \"alice\"\nsurprise = 1\n").unwrap();
    let out = peerd(&["--config", path_str(&config), "run"]);
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}:3:1: ", config.display())),
        "{err}"
    );
    assert!(err.contains("peerd: "), "{err}");
}

#[test]
fn run_without_a_key_points_to_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &dir.path().join("identity.key"));
    let out = peerd(&["--config", path_str(&config)]);
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    let err = text(&out.stderr);
    let hint = format!(
        "create it with `peerd --config {} keygen`",
        config.display()
    );
    assert!(err.contains(&hint), "{err}");
    assert!(!err.contains("peerd starting"), "{err}");
}

#[test]
fn run_refuses_a_key_file_others_can_read() {
    let (dir, config) = runnable();
    let key_file = dir.path().join("identity.key");
    fs::set_permissions(&key_file, fs::Permissions::from_mode(0o640)).unwrap();
    let out = peerd(&["--config", path_str(&config), "run"]);
    assert_eq!(out.status.code(), Some(EX_CONFIG));
    let err = text(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
}

// --- usage ----------------------------------------------------------------

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["frobnicate"][..],
        &["--log-level", "loud"],
        &["--config"],
        &["keygen", "--key-file"],
        &["pubkey", "extra"],
        &["rotate-key"],
    ] {
        let out = peerd(args);
        assert_eq!(out.status.code(), Some(EX_USAGE), "{args:?}");
    }
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["check-config", "--help"],
        &["keygen", "--help"],
        &["pubkey", "--help"],
    ] {
        let out = peerd(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(text(&out.stdout).contains("Usage: peerd"), "{args:?}");
    }
    let help = text(&peerd(&["--help"]).stdout);
    for code in ["66", "73", "78"] {
        assert!(help.contains(&format!("  {code}  ")), "{help}");
    }
}
