//! The daemon assembled: the actors started, wired and supervised.
//!
//! [`run`] starts, in this order: the state store, the address watcher,
//! the link manager (following the watcher's snapshot), the mail courier,
//! the connector, the hooks runner, the event router (which turns
//! every actor's events into the next actor's requests, control events
//! and hooks) and the control socket; then it tells the service manager
//! `READY=1`. All of them run on one `JoinSet` under one cancellation
//! token: the first task that fails ends the daemon with its error
//! (transient trouble - a mail server down, a peer unreachable - is
//! handled inside the actors and never ends a task).
//!
//! The supervisor loop itself owns what more than one actor depends on:
//! the configuration file's contents and the effective address book
//! ([`Settings`], published on a `watch`). It changes them on SIGHUP (a
//! reload: an invalid file is reported and the running configuration
//! kept) and on `peer add/remove` (sent here by the control API), and
//! hands the result to the courier, the connector and the hooks runner.
//!
//! Shutdown (SIGTERM, SIGINT, or the caller's future): `STOPPING=1`, the
//! token is cancelled, and every task gets [`SHUTDOWN_DEADLINE`] to end:
//! the connector closes its sessions, the link manager hangs up what it
//! dialled, the courier finishes the mail in flight (its outbox is on disk
//! at every step), the control socket file is removed.
//!
//! # Layout
//! - [`run`]: start-up, the supervisor loop, reload and shutdown.
//! - [`api`]: the control API over the actors' handles.
//! - `router`: events in, requests and notifications out.
//! - `notify`: `sd_notify`.

pub mod api;
mod notify;
mod router;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use peerd_addr::{WatcherConfig, WatcherError, WatcherHandle};
use peerd_config::Config;
use peerd_connect::{ConnectError, ConnectorConfig, ConnectorHandle};
use peerd_control::{ControlError, ErrorKind, Event, EventKind, NewPeer};
use peerd_core::{Identity, PeerName};
use peerd_link::LinkError;
use peerd_mail::{CourierError, CourierHandle};
use peerd_state::{RuntimePeer, StateError, Store};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::address_book::{AddressBook, BookSources, PeerSource};
use crate::control::{self, BindError};
use crate::hooks::{self, HooksConfig, HooksError, HooksHandle};

use self::api::DaemonApi;
use self::notify::Notifier;
use self::router::Router;

/// How long the daemon waits for its tasks to end after the shutdown
/// signal (the link manager's hang-up takes at most 4 s of it).
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// How long start-up waits for the address watcher's first reading of the
/// kernel's state before it reports ready anyway.
const WATCHER_READY_WAIT: Duration = Duration::from_secs(5);

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state directory could not be created.
    #[error("cannot create the state directory {}: {source}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The state database could not be opened or read.
    #[error("state database: {0}")]
    State(#[from] StateError),
    /// The config file and the runtime address book name the same peer.
    #[error("{0}")]
    Book(#[from] crate::address_book::BookConflicts),
    /// The control socket could not be set up.
    #[error("{0}")]
    ControlBind(#[from] BindError),
    /// The control socket failed while serving.
    #[error("control socket: {0}")]
    ControlServe(std::io::Error),
    /// The mail courier failed.
    #[error("mail courier: {0}")]
    Courier(#[from] CourierError),
    /// The link manager failed.
    #[error("link manager: {0}")]
    Link(#[from] LinkError),
    /// The address watcher failed.
    #[error("address watcher: {0}")]
    Watcher(#[from] WatcherError),
    /// The connector failed (it cannot listen, say).
    #[error("connector: {0}")]
    Connect(#[from] ConnectError),
    /// The hooks runner failed.
    #[error("hooks: {0}")]
    Hooks(#[from] HooksError),
    /// The signal handlers could not be installed.
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
    /// A task ended although nothing asked it to.
    #[error("a daemon task stopped unexpectedly{0}")]
    TaskEnded(String),
    /// Some tasks did not end within [`SHUTDOWN_DEADLINE`].
    #[error("shutdown did not complete within {}s", SHUTDOWN_DEADLINE.as_secs())]
    ShutdownTimeout,
}

/// What the actors are configured with now: the config file's contents
/// with the whole address book in `peers`, and that book.
#[derive(Debug)]
pub struct Settings {
    /// The effective configuration ([`AddressBook::config_with_peers`]).
    pub config: Arc<Config>,
    /// The address book it was built from.
    pub book: AddressBook,
}

/// Requests to the supervisor loop from the control API.
pub(crate) enum BookCommand {
    /// `peer add`.
    Add {
        peer: Box<NewPeer>,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// `peer remove`.
    Remove {
        name: PeerName,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
}

/// The handles the supervisor reconfigures.
struct Actors {
    courier: CourierHandle,
    connector: ConnectorHandle,
    hooks: HooksHandle,
}

/// Runs the daemon until `shutdown` completes (or SIGTERM/SIGINT
/// arrives), then stops it cleanly. `config_path` is read again on
/// SIGHUP.
///
/// # Errors
/// When start-up fails (state database, control socket, listening
/// socket, an address book conflict), when a task fails, or when the
/// shutdown does not complete within [`SHUTDOWN_DEADLINE`].
pub async fn run(
    config_path: &Path,
    config: Config,
    identity: Identity,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let notifier = Notifier::from_env();
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let token = CancellationToken::new();
    let mut tasks: JoinSet<Result<(), DaemonError>> = JoinSet::new();
    let started = start(config_path, config, identity, &mut tasks, token.clone()).await;
    let (mut supervisor, ready) = match started {
        Ok(started) => started,
        Err(e) => {
            // The start-up error is the one to report.
            let _ = stop(&mut tasks, &token).await;
            return Err(e);
        },
    };
    ready.await;
    notifier.notify("READY=1\nSTATUS=running");
    info!("peerd ready");

    tokio::pin!(shutdown);
    let outcome = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            _ = hangup.recv() => {
                notifier.notify("RELOADING=1");
                supervisor.reload().await;
                notifier.notify("READY=1\nSTATUS=running");
            },
            Some(command) = supervisor.commands.recv() => supervisor.handle(command).await,
            Some(ended) = tasks.join_next() => break Err(task_end(ended)),
        }
    };
    if let Err(e) = &outcome {
        error!("{e}; stopping");
    }
    notifier.notify("STOPPING=1");
    info!("peerd shutting down");
    let stopped = stop(&mut tasks, &token).await;
    drop(supervisor);
    outcome?;
    stopped?;
    info!("peerd stopped cleanly");
    Ok(())
}

/// What a task's end means before shutdown: always an error.
fn task_end(ended: Result<Result<(), DaemonError>, tokio::task::JoinError>) -> DaemonError {
    match ended {
        Ok(Err(e)) => e,
        Ok(Ok(())) => DaemonError::TaskEnded(String::new()),
        Err(e) if e.is_panic() => DaemonError::TaskEnded(" (it panicked)".into()),
        Err(_) => DaemonError::TaskEnded(" (it was cancelled)".into()),
    }
}

/// Cancels the token and waits for every task, at most
/// [`SHUTDOWN_DEADLINE`].
async fn stop(
    tasks: &mut JoinSet<Result<(), DaemonError>>,
    token: &CancellationToken,
) -> Result<(), DaemonError> {
    token.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_DEADLINE, async {
        while let Some(ended) = tasks.join_next().await {
            match ended {
                Ok(Ok(())) => {},
                Ok(Err(e)) => warn!("while stopping: {e}"),
                Err(e) if e.is_panic() => error!("a task panicked while stopping"),
                Err(_) => {},
            }
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            remaining = tasks.len(),
            "tasks still running after {}s: aborting them",
            SHUTDOWN_DEADLINE.as_secs()
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        return Err(DaemonError::ShutdownTimeout);
    }
    Ok(())
}

/// Starts everything; returns the supervisor and a future that completes
/// when the daemon may say it is ready.
async fn start(
    config_path: &Path,
    config: Config,
    identity: Identity,
    tasks: &mut JoinSet<Result<(), DaemonError>>,
    token: CancellationToken,
) -> Result<(Supervisor, impl Future<Output = ()> + use<>), DaemonError> {
    let identity = Arc::new(identity);
    info!(
        name = %config.identity.name,
        fingerprint = %identity.public_key().fingerprint(),
        "peerd starting"
    );
    create_state_dir(&config.state.dir)?;
    let store = Arc::new(Store::open_in(&config.state.dir)?);
    let sources = BookSources {
        config_file: config_path.to_path_buf(),
        state_db: store.path().to_path_buf(),
    };
    let book = AddressBook::build(&config, &store.runtime_peers()?, sources)?;
    let effective = Arc::new(book.config_with_peers(&config));

    // Bound first: a second peerd on the same socket stops here, before it
    // touches the link or the mailbox.
    let socket = control::bind(&config.control)?;

    let watcher: WatcherHandle =
        peerd_addr::spawn(WatcherConfig::from_config(&effective), tasks, token.clone());
    let link = peerd_link::spawn(
        effective.link.clone(),
        watcher.watch(),
        tasks,
        token.clone(),
    );
    let courier = peerd_mail::spawn(
        Arc::clone(&effective),
        Arc::clone(&identity),
        Arc::clone(&store),
        tasks,
        token.clone(),
    );
    let connector = peerd_connect::spawn(
        &identity,
        ConnectorConfig::from_config(&effective),
        tasks,
        token.clone(),
    )?;
    info!(addresses = ?connector.listening(), "listening for peers (UDP)");
    let hooks = hooks::spawn(HooksConfig::from_config(&effective), tasks, token.clone());

    let (settings_tx, settings) = watch::channel(Arc::new(Settings {
        config: Arc::clone(&effective),
        book,
    }));
    let (events, _) = broadcast::channel(256);
    let api_events = events.clone();
    let (commands_tx, commands) = mpsc::channel(16);

    let router = Router::new(
        settings.clone(),
        watcher.clone(),
        link.clone(),
        courier.clone(),
        connector.clone(),
        hooks.clone(),
        Arc::clone(&store),
        events.clone(),
    );
    let heard = router.heard();
    let rejected = router.rejected();
    tasks.spawn(router.run(token.clone()));

    let api = Arc::new(DaemonApi {
        name: config.identity.name.clone(),
        public_key: identity.public_key(),
        settings,
        heard,
        rejected,
        events,
        book: commands_tx,
        watcher: watcher.clone(),
        link,
        courier: courier.clone(),
        connector: connector.clone(),
        shutdown: token.clone(),
    });
    if let Some(bus) = crate::dbus::Bus::from_config(&config.dbus) {
        let policy = control::access::AccessPolicy::new(config.control.group.clone());
        tasks.spawn(offer_dbus(Arc::clone(&api), bus, policy, token.clone()));
    }
    let serve_token = token.clone();
    tasks.spawn(async move {
        socket
            .serve(api, serve_token)
            .await
            .map_err(DaemonError::ControlServe)
    });

    let supervisor = Supervisor {
        config_path: config_path.to_path_buf(),
        own_key: identity.public_key(),
        config,
        store,
        settings: settings_tx,
        commands,
        actors: Actors {
            courier,
            connector,
            hooks,
        },
        events: api_events,
    };
    let ready = async move {
        match tokio::time::timeout(WATCHER_READY_WAIT, watcher.ready()).await {
            Ok(Ok(())) => debug!("address watcher ready"),
            Ok(Err(e)) => warn!("address watcher: {e}"),
            Err(_) => warn!(
                "the address watcher has not read the kernel's state after {}s",
                WATCHER_READY_WAIT.as_secs()
            ),
        }
    };
    Ok((supervisor, ready))
}

/// First wait before the D-Bus interface is tried again; doubles up to
/// [`DBUS_RETRY_MAX`].
const DBUS_RETRY_MIN: Duration = Duration::from_secs(5);
/// The longest wait between attempts to offer the D-Bus interface.
const DBUS_RETRY_MAX: Duration = Duration::from_secs(300);

/// Offers the D-Bus interface until shutdown. D-Bus is a convenience
/// beside the control socket, so its trouble never stops the daemon: a bus
/// that is not there (yet), a name another process owns, a bus that
/// restarts - each is logged and tried again after a backoff.
async fn offer_dbus(
    api: Arc<DaemonApi>,
    bus: crate::dbus::Bus,
    policy: control::access::AccessPolicy,
    token: CancellationToken,
) -> Result<(), DaemonError> {
    let mut wait = DBUS_RETRY_MIN;
    loop {
        let started = tokio::time::Instant::now();
        let served =
            crate::dbus::serve(Arc::clone(&api), bus.clone(), policy.clone(), token.clone()).await;
        if token.is_cancelled() {
            return Ok(());
        }
        if let Err(e) = served {
            warn!(
                "{e}; the D-Bus interface is tried again in {}s (the control socket works meanwhile)",
                wait.as_secs()
            );
        }
        // A connection that lasted a while starts the backoff afresh.
        if started.elapsed() > DBUS_RETRY_MAX {
            wait = DBUS_RETRY_MIN;
        }
        tokio::select! {
            () = token.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {},
        }
        wait = (wait * 2).min(DBUS_RETRY_MAX);
    }
}

/// Creates the state directory (mode 0700: it holds the peers' addresses
/// and the outbox) when it is missing, as systemd's `StateDirectory=`
/// would; an existing one is left as it is.
fn create_state_dir(dir: &Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(source) => Err(DaemonError::StateDir {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// The supervisor loop's state: the configuration and the address book.
struct Supervisor {
    config_path: PathBuf,
    /// This host's key, which no peer may have.
    own_key: peerd_core::PublicKey,
    /// The config file's contents (its own `[[peer]]`s only).
    config: Config,
    store: Arc<Store>,
    settings: watch::Sender<Arc<Settings>>,
    commands: mpsc::Receiver<BookCommand>,
    actors: Actors,
    /// Where `peer-added` and `peer-removed` go.
    events: broadcast::Sender<Event>,
}

impl Supervisor {
    async fn handle(&mut self, command: BookCommand) {
        match command {
            BookCommand::Add { peer, reply } => {
                let result = self.add_peer(*peer).await;
                let _ = reply.send(result);
            },
            BookCommand::Remove { name, reply } => {
                let result = self.remove_peer(&name).await;
                let _ = reply.send(result);
            },
        }
    }

    async fn add_peer(&mut self, new: NewPeer) -> Result<(), ControlError> {
        let mut peer = RuntimePeer::new(new.name, new.email, new.key);
        peer.announce = new.announce;
        peer.accept_unsigned = new.accept_unsigned;
        if peer.public_key == self.own_key {
            return Err(ControlError::new(
                ErrorKind::InvalidRequest,
                "this is this host's own public key: give the peer's (the first line of `peerd pubkey` on the peer)",
            ));
        }
        let current = Arc::clone(&self.settings.borrow());
        current
            .book
            .check_addition(&peer)
            .map_err(|e| ControlError::new(ErrorKind::PeerExists, e.to_string()))?;
        self.store.add_peer(&peer).map_err(|e| match e {
            StateError::PeerExists(_) | StateError::KeyInUse { .. } => {
                ControlError::new(ErrorKind::PeerExists, e.to_string())
            },
            other => ControlError::new(ErrorKind::Failed, other.to_string()),
        })?;
        info!(peer = %peer.name, fingerprint = %peer.public_key.fingerprint(), "peer added to the runtime address book");
        self.rebuild(&self.config.clone())
            .await
            .map_err(|e| ControlError::new(ErrorKind::Failed, e))
    }

    async fn remove_peer(&mut self, name: &PeerName) -> Result<(), ControlError> {
        let current = Arc::clone(&self.settings.borrow());
        match current.book.get(name.as_str()) {
            None => {
                return Err(ControlError::new(
                    ErrorKind::UnknownPeer,
                    format!("{name} is not in the address book"),
                ));
            },
            Some(p) if p.source == PeerSource::ConfigFile => {
                return Err(ControlError::new(
                    ErrorKind::Failed,
                    format!(
                        "{name} is a [[peer]] in {}: remove it there and reload (SIGHUP)",
                        self.config_path.display()
                    ),
                ));
            },
            Some(_) => {},
        }
        self.store
            .remove_peer(name)
            .map_err(|e| ControlError::new(ErrorKind::Failed, e.to_string()))?;
        info!(peer = %name, "peer removed from the runtime address book");
        self.rebuild(&self.config.clone())
            .await
            .map_err(|e| ControlError::new(ErrorKind::Failed, e))
    }

    /// SIGHUP: reads the config file again; keeps the running configuration
    /// when the new one is invalid.
    async fn reload(&mut self) {
        info!(path = %self.config_path.display(), "SIGHUP: reloading the configuration");
        let loaded = match peerd_config::load(&self.config_path) {
            Ok(loaded) => loaded,
            Err(problems) => {
                for p in &problems.0 {
                    warn!("{p}");
                }
                warn!(
                    "the configuration has {} problem(s): keeping the running configuration",
                    problems.0.len()
                );
                return;
            },
        };
        for w in &loaded.warnings {
            warn!("{w}");
        }
        let new = running_sections(&self.config, loaded.config);
        match self.rebuild(&new).await {
            Ok(()) => {
                self.config = new;
                info!("configuration reloaded");
            },
            Err(e) => warn!("{e}: keeping the running configuration"),
        }
    }

    /// Builds the address book from `config` and the runtime peers and
    /// hands it to the actors.
    async fn rebuild(&mut self, config: &Config) -> Result<(), String> {
        let runtime = self.store.runtime_peers().map_err(|e| e.to_string())?;
        let sources = BookSources {
            config_file: self.config_path.clone(),
            state_db: self.store.path().to_path_buf(),
        };
        let book = AddressBook::build(config, &runtime, sources).map_err(|e| e.to_string())?;
        let effective = Arc::new(book.config_with_peers(config));
        let a = &self.actors;
        a.courier
            .reconfigure(Arc::clone(&effective))
            .await
            .map_err(|e| e.to_string())?;
        a.connector
            .set_address_book(peerd_connect::AddressBook::from_config(&effective))
            .await
            .map_err(|e| e.to_string())?;
        a.hooks
            .reconfigure(HooksConfig::from_config(&effective))
            .await
            .map_err(|e| e.to_string())?;
        let old = self.settings.send_replace(Arc::new(Settings {
            config: effective,
            book,
        }));
        let new = Arc::clone(&self.settings.borrow());
        let names = |s: &Settings| -> Vec<PeerName> {
            s.book.peers().iter().map(|p| p.peer.name.clone()).collect()
        };
        let (before, after) = (names(&old), names(&new));
        for peer in after.iter().filter(|p| !before.contains(p)) {
            let _ = self
                .events
                .send(Event::now(EventKind::PeerAdded { peer: peer.clone() }));
        }
        for peer in before.iter().filter(|p| !after.contains(p)) {
            let _ = self
                .events
                .send(Event::now(EventKind::PeerRemoved { peer: peer.clone() }));
        }
        Ok(())
    }
}

/// `new` with the sections a reload cannot apply taken from `old`, each
/// change to them logged: the actors that read them are set up once, and
/// the rest of the daemon must keep seeing what they run with.
fn running_sections(old: &Config, new: Config) -> Config {
    for section in restart_needed(old, &new) {
        warn!("[{section}] changed: this takes effect only when peerd is restarted");
    }
    Config {
        identity: old.identity.clone(),
        state: old.state.clone(),
        control: old.control.clone(),
        dbus: old.dbus.clone(),
        link: old.link.clone(),
        listen: old.listen.clone(),
        announce: peerd_config::AnnounceConfig {
            debounce: old.announce.debounce,
            publish: old.announce.publish.clone(),
            ipv6: old.announce.ipv6,
            ..new.announce
        },
        ..new
    }
}

/// The sections whose change a reload cannot apply (their actors are
/// set up once), by name.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let mut sections = Vec::new();
    if differs(&old.identity, &new.identity) {
        sections.push("identity");
    }
    if differs(&old.state, &new.state) {
        sections.push("state");
    }
    if differs(&old.control, &new.control) {
        sections.push("control");
    }
    if differs(&old.link, &new.link) {
        sections.push("link");
    }
    if differs(&old.listen, &new.listen) {
        sections.push("listen");
    }
    let watcher = |c: &Config| {
        (
            format!("{:?}", c.announce.debounce),
            format!("{:?}", c.announce.publish),
            format!("{:?}", c.announce.ipv6),
        )
    };
    if watcher(old) != watcher(new) {
        sections.push("announce (debounce, publish, ipv6)");
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[identity]
name = "alice"
key_file = "/tmp/peerd-test.key"

[state]
dir = "/tmp/peerd-test-state"

[mail]
address = "alice@isp-a.example"

[mail.smtp]
host = "smtp.isp-a.example"

[mail.incoming]
protocol = "imap"
host = "mail.isp-a.example"
"#;

    fn config(extra: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peerd.toml");
        std::fs::write(&path, format!("{BASE}{extra}")).unwrap();
        peerd_config::load(&path).unwrap().config
    }

    #[test]
    fn a_reload_names_the_sections_that_need_a_restart() {
        let old = config("");
        assert!(restart_needed(&old, &config("")).is_empty());
        let peer =
            "\n[[peer]]\nname = \"hitoshi\"\nemail = \"h@isp-b.example\"\nformat = \"plain\"\n";
        assert!(
            restart_needed(&old, &config(peer)).is_empty(),
            "peers are applied by a reload"
        );
        assert_eq!(
            restart_needed(&old, &config("\n[listen]\nport = 7000\n")),
            ["listen"]
        );
        assert_eq!(
            restart_needed(&old, &config("\n[link]\ninterface = \"eth0\"\n")),
            ["link"]
        );
        assert_eq!(
            restart_needed(&old, &config("\n[announce]\ndebounce = \"5s\"\n")),
            ["announce (debounce, publish, ipv6)"]
        );
    }

    #[test]
    fn a_reload_keeps_the_running_link_and_listen_sections() {
        let old = config("");
        let peer =
            "\n[[peer]]\nname = \"hitoshi\"\nemail = \"h@isp-b.example\"\nformat = \"plain\"\n";
        let new = config(&format!(
            "\n[link]\ninterface = \"eth0\"\n[listen]\nport = 7000\n[announce]\ndebounce = \"5s\"\nresend = \"20m\"\n{peer}"
        ));
        let applied = running_sections(&old, new);
        assert_eq!(applied.link.interface.to_string(), "ppp0");
        assert_eq!(applied.listen.port, old.listen.port);
        assert_eq!(applied.announce.debounce, old.announce.debounce);
        // What a reload does apply.
        assert_eq!(applied.announce.resend, Duration::from_secs(20 * 60));
        assert_eq!(applied.peers.len(), 1);
    }

    #[test]
    fn a_missing_state_dir_is_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b");
        create_state_dir(&state).unwrap();
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // An existing one is fine, and left as it is.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o750)).unwrap();
        create_state_dir(&state).unwrap();
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o750);
    }
}
