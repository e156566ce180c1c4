//! Starting, stopping and describing one mail stack.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::Error;

/// Port offsets are multiples of 100 in `100..=30_000`, so every port of a
/// stack (base ports 1110..=2525) stays below 32768, where Linux starts
/// handing out ephemeral ports for outgoing connections. Offset 0 (the
/// script's default ports) is left for people starting a stack by hand.
const OFFSET_SLOTS: u32 = 300;
/// How many offsets to try when the chosen ports turn out to be busy.
const START_ATTEMPTS: usize = 25;
/// The start script may install Debian packages first (about 30 s here).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);
/// One lock file per offset, shared by every test process on the machine,
/// so concurrent stacks (threads of one test binary, or nextest processes)
/// never pick the same ports.
const LOCK_DIR: &str = "/tmp/peerd-mailstack-locks";
/// State dirs are `/tmp/pms-XXXXXX`: short, because Dovecot's unix socket
/// paths under it must fit in 108 bytes.
const DIR_PREFIX: &str = "pms-";
/// Keeps the state dir (and its logs) after the stack is dropped.
const KEEP_ENV: &str = "PEERD_MAILSTACK_KEEP";
/// Overrides where the scripts are (default: `tests/mailstack` of the workspace).
const SCRIPTS_ENV: &str = "PEERD_MAILSTACK_SCRIPTS";

/// The TCP ports of a running stack (all on [`MailStack::addr`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// SMTP submission: STARTTLS offered, AUTH PLAIN/LOGIN required to relay.
    pub smtp: u16,
    /// SMTP submission over implicit TLS, AUTH required.
    pub smtps: u16,
    /// MX-style SMTP: no AUTH, accepts mail for the stack's own users only.
    pub mx: u16,
    /// POP3 with STLS.
    pub pop3: u16,
    /// POP3 over implicit TLS.
    pub pop3s: u16,
    /// IMAP with STARTTLS and IDLE.
    pub imap: u16,
    /// IMAP over implicit TLS.
    pub imaps: u16,
}

/// Who lives on a stack. The default is what the issue asks for: domains
/// `isp-a.test` and `isp-b.test`, users `alice`, `hitoshi`, `mallory` in each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Mail domains hosted by the stack (the first one is its own name).
    pub domains: Vec<String>,
    /// Local parts; every user exists in every domain.
    pub users: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            domains: vec!["isp-a.test".into(), "isp-b.test".into()],
            users: vec!["alice".into(), "hitoshi".into(), "mallory".into()],
        }
    }
}

/// A running Postfix + Dovecot pair on loopback, with all its state in a
/// private dir under `/tmp`. Dropping it stops both daemons (waiting until
/// they have exited) and removes the dir; set `PEERD_MAILSTACK_KEEP=1` to
/// keep the dir and its logs for a post-mortem.
#[derive(Debug)]
pub struct MailStack {
    state_dir: PathBuf,
    scripts: PathBuf,
    addr: IpAddr,
    ports: Ports,
    offset: u32,
    ca: PathBuf,
    dovecot_conf: PathBuf,
    postfix_conf: PathBuf,
    domains: Vec<String>,
    users: Vec<String>,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// Held for the stack's lifetime: no other harness takes this offset.
    offset_lock: File,
}

impl MailStack {
    /// Starts a stack with the default users and domains, panicking with the
    /// start script's message (and the daemon log tail) if it cannot: a test
    /// that needs the mail stack fails loudly without it.
    pub async fn start() -> MailStack {
        match Self::start_with(Options::default()).await {
            Ok(stack) => stack,
            Err(e) => panic!("peerd-testkit: the real mail stack did not start: {e}"),
        }
    }

    /// Starts a stack with the given domains and users.
    pub async fn start_with(options: Options) -> crate::Result<MailStack> {
        if !running_as_root() {
            return Err(Error::Stack(
                "the real mail stack needs root (it installs and runs Postfix and Dovecot); \
                 run the tests as root, as CI does"
                    .into(),
            ));
        }
        let scripts = scripts_dir()?;
        let mut busy = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let (offset, mut lock) = claim_offset(&scripts)?;
            let state_dir = tempfile::Builder::new()
                .prefix(DIR_PREFIX)
                .tempdir_in("/tmp")
                .map_err(Error::io("creating the state dir under /tmp"))?
                .keep();
            // Name the dir in the lock file, so a harness that takes this
            // offset after this process was killed can stop the leftovers.
            lock.write_all(state_dir.as_os_str().as_encoded_bytes())
                .and_then(|()| lock.flush())
                .map_err(Error::io("writing the offset lock file"))?;
            let out = run_script(
                &scripts.join("start"),
                &[state_dir.as_os_str()],
                &[
                    ("MAILSTACK_ADDR", "127.0.0.1".to_owned()),
                    ("MAILSTACK_PORT_OFFSET", offset.to_string()),
                    ("MAILSTACK_DOMAINS", options.domains.join(" ")),
                    ("MAILSTACK_USERS", options.users.join(" ")),
                ],
            )
            .await?;
            match out.status.code() {
                Some(0) => {
                    return Self::from_env_file(state_dir.clone(), scripts.clone(), offset, lock)
                        .inspect_err(|_| {
                            // started, but unusable: take it down again
                            stop_blocking(&scripts, &state_dir, true);
                        });
                },
                Some(3) => {
                    // a port of this offset is taken by something else: try another
                    busy.push(format!("offset {offset}: {}", out.stderr.trim()));
                    stop_blocking(&scripts, &state_dir, true);
                },
                _ => {
                    stop_blocking(&scripts, &state_dir, true);
                    return Err(Error::Stack(format!(
                        "{} {} failed ({}):\n{}{}",
                        scripts.join("start").display(),
                        state_dir.display(),
                        out.status,
                        out.stdout,
                        out.stderr
                    )));
                },
            }
        }
        Err(Error::Stack(format!(
            "no free port offset after {START_ATTEMPTS} attempts:\n{}",
            busy.join("\n")
        )))
    }

    fn from_env_file(
        state_dir: PathBuf,
        scripts: PathBuf,
        offset: u32,
        lock: File,
    ) -> crate::Result<MailStack> {
        let env_path = state_dir.join("mailstack.env");
        let text = std::fs::read_to_string(&env_path)
            .map_err(Error::io(format!("reading {}", env_path.display())))?;
        let env: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .collect();
        let get = |key: &str| {
            env.get(key)
                .copied()
                .ok_or_else(|| Error::Stack(format!("{} has no {key}", env_path.display())))
        };
        let port = |key: &str| {
            get(key)?
                .parse::<u16>()
                .map_err(|e| Error::Stack(format!("{key} in {}: {e}", env_path.display())))
        };
        let addr = get("MAILSTACK_ADDR")?
            .parse()
            .map_err(|e| Error::Stack(format!("MAILSTACK_ADDR: {e}")))?;
        let ports = Ports {
            smtp: port("MAILSTACK_SMTP_PORT")?,
            smtps: port("MAILSTACK_SMTPS_PORT")?,
            mx: port("MAILSTACK_MX_PORT")?,
            pop3: port("MAILSTACK_POP3_PORT")?,
            pop3s: port("MAILSTACK_POP3S_PORT")?,
            imap: port("MAILSTACK_IMAP_PORT")?,
            imaps: port("MAILSTACK_IMAPS_PORT")?,
        };
        let words = |key: &str| -> crate::Result<Vec<String>> {
            Ok(get(key)?.split_whitespace().map(str::to_owned).collect())
        };
        let ca = PathBuf::from(get("MAILSTACK_CA")?);
        let tls = client_config(&ca)?;
        Ok(MailStack {
            addr,
            ports,
            offset,
            dovecot_conf: get("MAILSTACK_DOVECOT_CONF")?.into(),
            postfix_conf: get("MAILSTACK_POSTFIX_CONF")?.into(),
            domains: words("MAILSTACK_DOMAINS")?,
            users: words("MAILSTACK_USERS")?,
            ca,
            tls,
            state_dir,
            scripts,
            offset_lock: lock,
        })
    }

    /// The address every port listens on (`127.0.0.1`).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The stack's ports.
    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// The port offset this stack runs at (`MAILSTACK_PORT_OFFSET`).
    pub fn port_offset(&self) -> u32 {
        self.offset
    }

    /// The PEM file of the CA made at start-up; the servers' certificate
    /// (names `localhost`, `127.0.0.1`, each domain and `mail.<domain>`)
    /// chains to it and to nothing else.
    pub fn ca_path(&self) -> &Path {
        &self.ca
    }

    /// The state dir (configs, keys, queue, maildirs, logs, pid files).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Dovecot's config file (for `doveadm -c`).
    pub fn dovecot_conf(&self) -> &Path {
        &self.dovecot_conf
    }

    /// Postfix's config dir (for `postfix -c`, `postqueue -c`).
    pub fn postfix_conf(&self) -> &Path {
        &self.postfix_conf
    }

    /// The hosted domains.
    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// The local parts of the users (each exists in every domain).
    pub fn users(&self) -> &[String] {
        &self.users
    }

    /// The password of `user` (`alice` or `alice@isp-a.test`): `secret-alice`.
    pub fn password(&self, user: &str) -> String {
        let local = user.split('@').next().unwrap_or(user);
        format!("secret-{local}")
    }

    /// The TLS name the servers' certificate is checked against by the
    /// helpers: `localhost`.
    pub fn tls_server_name(&self) -> rustls_pki_types::ServerName<'static> {
        rustls_pki_types::ServerName::try_from("localhost")
            .unwrap_or_else(|_| unreachable!("localhost is a valid DNS name"))
    }

    /// A rustls client config (ring provider) that trusts only this stack's
    /// CA, not the system store.
    pub fn rustls_client_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.tls)
    }

    /// The last lines of Postfix's and Dovecot's logs, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for log in [
            self.state_dir.join("postfix/log/maillog"),
            self.state_dir.join("dovecot/log/dovecot.log"),
        ] {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("---- {} ----\n", log.display()));
            for line in &lines[lines.len().saturating_sub(30)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Stops Postfix only (SMTP goes away; IMAP and POP3 stay), waiting
    /// until its processes have exited. [`Self::start_postfix`] brings it
    /// back on the same ports.
    pub async fn stop_postfix(&self) -> crate::Result<()> {
        self.control("stop", "postfix").await
    }

    /// Starts Postfix again after [`Self::stop_postfix`], on the same ports,
    /// and waits until its three ports greet.
    pub async fn start_postfix(&self) -> crate::Result<()> {
        self.control("start", "postfix").await
    }

    /// Stops Dovecot only (IMAP, POP3 and delivery go away; Postfix queues).
    pub async fn stop_dovecot(&self) -> crate::Result<()> {
        self.control("stop", "dovecot").await
    }

    /// Starts Dovecot again after [`Self::stop_dovecot`], on the same ports.
    pub async fn start_dovecot(&self) -> crate::Result<()> {
        self.control("start", "dovecot").await
    }

    async fn control(&self, script: &str, daemon: &str) -> crate::Result<()> {
        let out = run_script(
            &self.scripts.join(script),
            &[
                self.state_dir.as_os_str(),
                "--only".as_ref(),
                daemon.as_ref(),
            ],
            &[],
        )
        .await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Stack(format!(
                "{script} --only {daemon} failed ({}):\n{}{}",
                out.status, out.stdout, out.stderr
            )))
        }
    }

    /// Runs `doveadm -c <this stack's config> ARGS...` and returns its stdout.
    pub async fn doveadm(&self, args: &[&str]) -> crate::Result<String> {
        let out = tokio::process::Command::new("doveadm")
            .arg("-c")
            .arg(&self.dovecot_conf)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(Error::io("running doveadm"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Stack(format!(
                "doveadm {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// The number of messages in `user`'s `folder`, asked through `doveadm`
    /// (no IMAP session, nothing marked).
    pub async fn message_count(&self, user: &str, folder: &str) -> crate::Result<u32> {
        let out = self
            .doveadm(&["mailbox", "status", "-u", user, "messages", folder])
            .await?;
        // "<folder> messages=<n>"
        out.trim()
            .rsplit_once("messages=")
            .and_then(|(_, n)| n.parse().ok())
            .ok_or_else(|| Error::Stack(format!("unexpected doveadm output: {out:?}")))
    }

    /// Expunges every message in `user`'s `folder` (`doveadm expunge`).
    pub async fn expunge_all(&self, user: &str, folder: &str) -> crate::Result<()> {
        self.doveadm(&["expunge", "-u", user, "mailbox", folder, "all"])
            .await
            .map(drop)
    }
}

impl Drop for MailStack {
    fn drop(&mut self) {
        let keep = std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty() && v != "0");
        stop_blocking(&self.scripts, &self.state_dir, !keep);
        if keep {
            // the next holder of this offset must not clean the kept dir away
            let _ = self.offset_lock.set_len(0);
            eprintln!(
                "peerd-testkit: kept the mail stack state dir {} ({KEEP_ENV} is set)",
                self.state_dir.display()
            );
        }
    }
}

/// Stops the stack in `state_dir` (blocking: used from `Drop`) and removes
/// the dir when `purge`. Problems are reported on stderr: `Drop` cannot fail.
fn stop_blocking(scripts: &Path, state_dir: &Path, purge: bool) {
    let mut cmd = std::process::Command::new(scripts.join("stop"));
    cmd.arg(state_dir).stdin(Stdio::null());
    if purge {
        cmd.arg("--purge");
    }
    match cmd.output() {
        Ok(out) if out.status.success() => {},
        Ok(out) => eprintln!(
            "peerd-testkit: stopping the mail stack in {} failed ({}): {}",
            state_dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!(
            "peerd-testkit: cannot run {}: {e}",
            scripts.join("stop").display()
        ),
    }
    if purge && state_dir.exists() {
        let _ = std::fs::remove_dir_all(state_dir);
    }
}

struct ScriptOutput {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs one of the mailstack scripts with only our `MAILSTACK_*` knobs set
/// (inherited ones are removed), capturing its output. The daemons it
/// starts do not hold the pipes open, so this returns when the script does.
async fn run_script(
    script: &Path,
    args: &[&std::ffi::OsStr],
    knobs: &[(&str, String)],
) -> crate::Result<ScriptOutput> {
    let mut cmd = tokio::process::Command::new(script);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MAILSTACK_") {
            cmd.env_remove(key);
        }
    }
    for (key, value) in knobs {
        cmd.env(key, value);
    }
    let what = format!("{}", script.display());
    let out = match tokio::time::timeout(SCRIPT_TIMEOUT, cmd.output()).await {
        Ok(out) => out.map_err(Error::io(format!("running {what}")))?,
        Err(_) => {
            return Err(Error::Timeout {
                what,
                after: SCRIPT_TIMEOUT,
            });
        },
    };
    Ok(ScriptOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn default_scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/mailstack")
}

/// `tests/mailstack` of the workspace this crate was built from, or
/// `$PEERD_MAILSTACK_SCRIPTS`.
fn scripts_dir() -> crate::Result<PathBuf> {
    let dir = std::env::var_os(SCRIPTS_ENV).map_or_else(default_scripts_dir, PathBuf::from);
    let dir = dir.canonicalize().map_err(Error::io(format!(
        "finding the mailstack scripts in {}",
        dir.display()
    )))?;
    for script in ["start", "stop"] {
        if !dir.join(script).is_file() {
            return Err(Error::Stack(format!(
                "{} is missing (set {SCRIPTS_ENV} to the dir holding start and stop)",
                dir.join(script).display()
            )));
        }
    }
    Ok(dir)
}

/// Whether the effective uid is 0 (from `/proc/self/status`: no libc here).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            // real, effective, saved, filesystem
            uids.split_whitespace().nth(1).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// Picks a random free offset and locks it (an exclusive `flock` on a file
/// per offset) for as long as the returned file lives.
///
/// A lock file names the state dir of the stack that held it last. If that
/// dir still exists, its process died without dropping the stack (SIGKILL,
/// a test timeout): its daemons are stopped and the dir removed first.
fn claim_offset(scripts: &Path) -> crate::Result<(u32, File)> {
    std::fs::create_dir_all(LOCK_DIR).map_err(Error::io(format!("creating {LOCK_DIR}")))?;
    for _ in 0..OFFSET_SLOTS * 4 {
        let offset = fastrand::u32(1..=OFFSET_SLOTS) * 100;
        let path = Path::new(LOCK_DIR).join(format!("offset-{offset}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(Error::io(format!("opening {}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {
                let mut previous = String::new();
                let mut file = file;
                file.read_to_string(&mut previous)
                    .map_err(Error::io(format!("reading {}", path.display())))?;
                let previous = Path::new(previous.trim());
                let ours = previous.parent() == Some(Path::new("/tmp"))
                    && previous
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(DIR_PREFIX));
                if ours && previous.is_dir() {
                    eprintln!(
                        "peerd-testkit: stopping a stack left behind in {}",
                        previous.display()
                    );
                    stop_blocking(scripts, previous, true);
                }
                file.set_len(0)
                    .and_then(|()| file.rewind())
                    .map_err(Error::io(format!("truncating {}", path.display())))?;
                return Ok((offset, file));
            },
            Err(TryLockError::WouldBlock) => {},
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", path.display()))(e));
            },
        }
    }
    Err(Error::Stack(format!(
        "every port offset in {LOCK_DIR} is locked by another running stack"
    )))
}

/// A client config trusting only the CA in `ca` (PEM).
fn client_config(ca: &Path) -> crate::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| Error::Tls(format!("reading {}: {e}", ca.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| Error::Tls(format!("parsing {}: {e}", ca.display())))?;
        roots
            .add(cert)
            .map_err(|e| Error::Tls(format!("adding {} as a root: {e}", ca.display())))?;
    }
    if roots.is_empty() {
        return Err(Error::Tls(format!("{} holds no certificate", ca.display())));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
