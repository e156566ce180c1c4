//! `peerd`: the daemon's command line.
//!
//! Parses the command line, sets up logging, loads the configuration and
//! the identity key, and either runs the daemon ([`peerd::run`]) or does
//! one of the one-shot commands (`check-config`, `keygen`, `pubkey`).
//! Every failure reaches the user as one `peerd: ...` line on stderr (after
//! the configuration's own `file:line:col: message` lines, if that is what
//! failed) and a sysexits(3) exit status.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Args, Parser, Subcommand, ValueEnum};
use peerd_config::Problem;
use peerd_core::{Identity, IdentityError};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{debug, info, warn};
use tracing_subscriber::EnvFilter;

/// The exit statuses peerd sets, from sysexits(3). 0 is success and 2
/// (usage error) is set by clap.
mod exit {
    /// The daemon failed while running.
    pub const FAILURE: u8 = 1;
    /// `EX_NOINPUT`: the key file does not exist (`pubkey`).
    pub const NOINPUT: u8 = 66;
    /// `EX_SOFTWARE`: a bug in peerd.
    pub const SOFTWARE: u8 = 70;
    /// `EX_OSERR`: the system failed us (no randomness, no runtime).
    pub const OSERR: u8 = 71;
    /// `EX_CANTCREAT`: the key file could not be created, or exists.
    pub const CANTCREAT: u8 = 73;
    /// `EX_IOERR`: reading the key file or writing the output failed.
    pub const IOERR: u8 = 74;
    /// `EX_NOPERM`: no permission to read the key file (`pubkey`).
    pub const NOPERM: u8 = 77;
    /// `EX_CONFIG`: the configuration or the identity key is unusable.
    pub const CONFIG: u8 = 78;
}

/// The environment variable that names the configuration file.
const CONFIG_ENV: &str = "PEERD_CONFIG";

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0   success; `run`: stopped cleanly after SIGTERM or SIGINT
  1   the daemon failed while running
  2   usage error
  66  pubkey: the key file does not exist (EX_NOINPUT)
  70  an internal error in peerd (EX_SOFTWARE)
  71  the system failed: no random numbers, no threads (EX_OSERR)
  73  keygen: the key file exists already, or cannot be created (EX_CANTCREAT)
  74  an I/O error reading the key or writing the output (EX_IOERR)
  77  pubkey: no permission to read the key file (EX_NOPERM)
  78  the configuration is invalid, or (run) the identity key is missing,
      readable by others or not a key (EX_CONFIG)";

/// The peerd daemon: find peers with changing addresses by mail, connect directly.
#[derive(Debug, Parser)]
#[command(
    name = "peerd",
    version,
    long_about = "\
The peerd daemon: find peers with changing addresses by mail, connect directly.

peerd mails each peer a signed and encrypted announcement of this host's \
current address, reads the peers' announcements from its mailbox, and \
connects to them directly. Control it with `peerctl`.

First setup:
  peerd keygen          # create this host's identity key
  peerd pubkey          # the key to give to peers, and its fingerprint
  peerd check-config    # after editing /etc/peerd/peerd.toml
  peerd run             # normally started by systemd

Logs go to stderr (the journal, under systemd). RUST_LOG sets the \
verbosity as a tracing filter (e.g. RUST_LOG=peerd=debug); --log-level \
overrides it.",
    after_help = EXIT_STATUS_HELP
)]
struct Cli {
    /// The configuration file [default: $PEERD_CONFIG, or /etc/peerd/peerd.toml].
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        help_heading = "Global options"
    )]
    config: Option<PathBuf>,

    /// How much to log (overrides RUST_LOG; default: info).
    #[arg(
        long,
        global = true,
        value_name = "LEVEL",
        value_enum,
        help_heading = "Global options"
    )]
    log_level: Option<LogLevel>,

    /// What to do (default: run).
    #[command(subcommand)]
    command: Option<Command>,
}

impl Cli {
    /// The configuration file: `--config`, else `$PEERD_CONFIG` unless it
    /// is empty, else the default.
    fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .or_else(|| {
                std::env::var_os(CONFIG_ENV)
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(peerd_config::DEFAULT_PATH))
    }
}

/// `--log-level` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogLevel {
    /// Nothing at all.
    Off,
    /// Only what needs an operator.
    Error,
    /// Also what is degraded but recovering.
    Warn,
    /// Also state changes (the default).
    Info,
    /// Also protocol steps.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon until SIGTERM or SIGINT (the default).
    #[command(long_about = "\
Run the daemon until SIGTERM or SIGINT, then stop cleanly and exit 0. \
Refuses to start (exit 78) when the configuration is invalid or the \
identity key is missing, readable by others, or not a key.")]
    Run,

    /// Check the configuration file and exit (0 valid, 78 invalid).
    #[command(long_about = "\
Check the configuration file and exit: 0 when it is valid, 78 when it is \
not. Every problem found, warnings too, is printed on stderr as \
`file:line:col: message`. Does not look at the identity key.

Example:
  peerd --config /etc/peerd/peerd.toml check-config")]
    CheckConfig,

    /// Create this host's identity key; never overwrites one.
    #[command(long_about = "\
Create this host's identity key (Ed25519) in the key file, mode 0600, and \
print its public key and fingerprint as `pubkey` does. Refuses (exit 73) \
if the file exists: peers know the key it holds. The key file is \
--key-file, or else `identity.key_file` of the configuration.")]
    Keygen(KeyFile),

    /// Print the public key (line 1) and its fingerprint (line 2).
    #[command(long_about = "\
Print this host's public key on the first line, exactly as peers paste it \
into `[[peer]] public_key` (or `peerctl peer add --key`), and its short \
fingerprint on the second, for reading aloud to check that a peer got \
the right key. The key file is --key-file, or else `identity.key_file` of \
the configuration.

Example:
  peerd pubkey | head -n 1 > alice.pub")]
    Pubkey(KeyFile),
}

/// `--key-file` of `keygen` and `pubkey`.
#[derive(Debug, Args)]
struct KeyFile {
    /// The identity key file (default: `identity.key_file` of the configuration).
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
}

/// Why peerd stops with a status other than 0.
struct Failure {
    /// The exit status.
    status: u8,
    /// The message, or `None` when everything was said already (the
    /// configuration problems of `check-config`).
    error: Option<anyhow::Error>,
}

impl Failure {
    fn new(status: u8, error: anyhow::Error) -> Self {
        Self {
            status,
            error: Some(error),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level);
    let config = cli.config_path();
    let result = match &cli.command {
        None | Some(Command::Run) => run(&config),
        Some(Command::CheckConfig) => check_config(&config),
        Some(Command::Keygen(k)) => keygen(&config, k.key_file.as_deref()),
        Some(Command::Pubkey(k)) => pubkey(&config, k.key_file.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if let Some(error) = failure.error {
                eprintln!("peerd: {error:#}");
            }
            ExitCode::from(failure.status)
        },
    }
}

/// Logs to stderr: plain lines under systemd (journald stamps them), with
/// colours only on a terminal. `--log-level` wins over `RUST_LOG`, which
/// wins over the default, `info`.
fn init_logging(level: Option<LogLevel>) {
    let mut bad_env = None;
    let filter = match level {
        Some(level) => EnvFilter::new(level.directive()),
        None => match std::env::var("RUST_LOG") {
            Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
                bad_env = Some(format!("{spec:?}: {e}"));
                EnvFilter::new("info")
            }),
            _ => EnvFilter::new("info"),
        },
    };
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = !journal && std::env::var_os("NO_COLOR").is_none() && io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(filter)
        .with_ansi(ansi);
    // Only fails if a subscriber is set already, which cannot happen here.
    let _ = if journal {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
    if let Some(bad) = bad_env {
        warn!("RUST_LOG ignored, logging at info: {bad}");
    }
}

/// `peerd run`: load everything, then run until SIGTERM or SIGINT.
fn run(config_path: &Path) -> Result<(), Failure> {
    let loaded = load_config(config_path)?;
    debug!(path = %config_path.display(), "Configuration loaded");
    for warning in &loaded.warnings {
        warn!("{warning}");
    }
    let config = loaded.config;
    let key_file = config.identity.key_file.clone();
    let identity = Identity::load(&key_file).map_err(|e| {
        let hint = match &e {
            IdentityError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                format!("; create it with `{}`", keygen_command(config_path, None))
            },
            IdentityError::Io { source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                "; run peerd as the key file's owner".to_owned()
            },
            IdentityError::Malformed { .. } => {
                format!("; check identity.key_file in {}", config_path.display())
            },
            _ => String::new(),
        };
        Failure::new(
            exit::CONFIG,
            anyhow!("cannot load the identity key: {e}{hint}"),
        )
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::OSERR, anyhow!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        // The handlers are installed before `run` says it started, so a
        // signal that follows that message always gets a clean shutdown.
        let shutdown = shutdown_signal()
            .map_err(|e| Failure::new(exit::OSERR, anyhow!("cannot handle signals: {e}")))?;
        peerd::run(config_path, config, identity, shutdown)
            .await
            .map_err(|e| Failure::new(exit::FAILURE, e.into()))
    })
}

/// Installs the SIGTERM and SIGINT handlers; the future completes on the
/// first of them.
fn shutdown_signal() -> io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
        }
    })
}

/// `peerd check-config`: every problem on stderr, warnings too.
fn check_config(config_path: &Path) -> Result<(), Failure> {
    match peerd_config::load(config_path) {
        Ok(loaded) => {
            print_problems(&loaded.warnings);
            let out = format!("{}: configuration ok\n", config_path.display());
            write_stdout(&out)
        },
        Err(problems) => {
            print_problems(&problems.0);
            Err(Failure {
                status: exit::CONFIG,
                error: None,
            })
        },
    }
}

/// `peerd keygen`: make the key, then print it as `pubkey` does.
fn keygen(config_path: &Path, key_file: Option<&Path>) -> Result<(), Failure> {
    let key_file = key_file_path(config_path, key_file)?;
    let identity = Identity::create(&key_file).map_err(|e| {
        let status = match e {
            IdentityError::Exists { .. } | IdentityError::Io { .. } => exit::CANTCREAT,
            IdentityError::Random(_) => exit::OSERR,
            IdentityError::Permissions { .. } | IdentityError::Malformed { .. } => exit::SOFTWARE,
        };
        Failure::new(status, anyhow!("cannot create the identity key: {e}"))
    })?;
    eprintln!("Created identity key {}", key_file.display());
    print_public_key(&identity)
}

/// `peerd pubkey`: the public key, then its fingerprint.
fn pubkey(config_path: &Path, key_file_arg: Option<&Path>) -> Result<(), Failure> {
    let key_file = key_file_path(config_path, key_file_arg)?;
    let identity = Identity::load(&key_file).map_err(|e| {
        let (status, hint) = match &e {
            IdentityError::Io { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => (
                    exit::NOINPUT,
                    format!(
                        "; create it with `{}`",
                        keygen_command(config_path, key_file_arg)
                    ),
                ),
                io::ErrorKind::PermissionDenied => (
                    exit::NOPERM,
                    "; run as the key file's owner or as root".to_owned(),
                ),
                _ => (exit::IOERR, String::new()),
            },
            IdentityError::Permissions { .. } | IdentityError::Malformed { .. } => {
                (exit::CONFIG, String::new())
            },
            IdentityError::Exists { .. } | IdentityError::Random(_) => {
                (exit::SOFTWARE, String::new())
            },
        };
        Failure::new(status, anyhow!("cannot read the identity key: {e}{hint}"))
    })?;
    print_public_key(&identity)
}

/// The `peerd keygen` command line that creates the key the user asked for.
fn keygen_command(config_path: &Path, key_file: Option<&Path>) -> String {
    match key_file {
        Some(path) => format!("peerd keygen --key-file {}", path.display()),
        None if config_path == Path::new(peerd_config::DEFAULT_PATH) => "peerd keygen".to_owned(),
        None => format!("peerd --config {} keygen", config_path.display()),
    }
}

/// The key file to use: `--key-file`, or else the configuration's.
fn key_file_path(config_path: &Path, key_file: Option<&Path>) -> Result<PathBuf, Failure> {
    if let Some(path) = key_file {
        return Ok(path.to_owned());
    }
    match peerd_config::load(config_path) {
        Ok(loaded) => {
            print_problems(&loaded.warnings);
            Ok(loaded.config.identity.key_file)
        },
        Err(problems) => {
            print_problems(&problems.0);
            Err(Failure::new(
                exit::CONFIG,
                anyhow!(
                    "{}: cannot find the key file in an invalid configuration (fix it, or name the key file with --key-file PATH)",
                    config_path.display()
                ),
            ))
        },
    }
}

/// Loads the configuration for `run`; an invalid one is reported, one line
/// per problem, and refused.
fn load_config(config_path: &Path) -> Result<peerd_config::Loaded, Failure> {
    peerd_config::load(config_path).map_err(|problems| {
        print_problems(&problems.0);
        Failure::new(
            exit::CONFIG,
            anyhow!(
                "{}: invalid configuration, not starting",
                config_path.display()
            ),
        )
    })
}

/// Prints `file:line:col: message` lines on stderr.
fn print_problems(problems: &[Problem]) {
    let mut err = io::stderr().lock();
    for problem in problems {
        // Nowhere better to report a failing stderr.
        let _ = writeln!(err, "{problem}");
    }
}

/// Prints the public key (as users paste it) and its fingerprint on stdout.
fn print_public_key(identity: &Identity) -> Result<(), Failure> {
    let key = identity.public_key();
    write_stdout(&format!("{key}\n{}\n", key.fingerprint()))
}

/// Writes command output; a closed stdout is an error, not a panic.
fn write_stdout(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::new(exit::IOERR, anyhow!("cannot write to stdout: {e}")))
}
