//! The D-Bus interface: `org.peerd.Peerd1` on the system bus (or the one
//! `[dbus] bus` names), the second front end beside the control socket,
//! over the same [`ControlApi`], so that both give the same answers and
//! follow the same access rule. `docs/dbus-api.md` describes it for users;
//! `docs/dbus/*.xml` is its introspection, which a test compares with the
//! live one.
//!
//! Owns: the bus connection, the objects (the manager
//! `/org/peerd/Peerd1` and one `/org/peerd/Peerd1/peer/<escaped name>` per
//! address-book peer), a snapshot of what the properties say, and the tasks
//! that copy `OpenStream` sockets to peer streams. Inputs: method calls,
//! the daemon's events ([`ControlApi::events`]). Outputs: replies, the
//! signals of INTERFACE.md, `PropertiesChanged`.
//!
//! Properties are read from the snapshot, never by waiting on the daemon,
//! so reading them stays quick whatever the daemon is busy with (a mail
//! server that does not answer, a modem dialling). The snapshot is
//! refreshed from [`ControlApi::status`] and [`ControlApi::peers`] after
//! every event, after every method that changes something, and every
//! [`REFRESH_INTERVAL`] (for changes no event reports, like a finished
//! mail check); each refresh emits `PropertiesChanged` for the values that
//! changed and adds or removes peer objects. An event's signal is emitted
//! after the refresh it causes, so that a client reading properties when
//! the signal arrives sees the new values.
//!
//! Access, as on the control socket: root and members of `[control]
//! group` may call every method; other users may read properties and
//! receive signals. The daemon asks the bus for the caller's credentials
//! (`GetConnectionCredentials`) on every method call and applies
//! [`AccessPolicy`]; the policy file `systemd/org.peerd.Peerd1.conf` says
//! the same to the bus, so that a refused call does not even reach peerd.
//!
//! Shutdown: when the token is cancelled, [`serve`] releases the name,
//! closes every `OpenStream` socket and the connection, and returns; a
//! method call running then is answered `Unavailable` ("peerd is
//! stopping").
//!
//! # Layout
//! - [`serve`] and [`Bus`]: the entry point for the daemon.
//! - `manager`: the `org.peerd.Peerd1` object (methods, properties,
//!   signals); `peer`: the `org.peerd.Peerd1.Peer` objects.
//! - `state`: the snapshot, its refreshes, events to signals.
//! - `caller`: who calls, and what they may do.
//! - [`error`]: `org.peerd.Peerd1.Error.*`; [`path`]: object paths.

pub mod error;
pub mod path;

mod caller;
mod manager;
mod peer;
mod state;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use peerd_config::{DbusBus, DbusConfig};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use zbus::fdo::{RequestNameFlags, RequestNameReply};

use crate::control::ControlApi;
use crate::control::access::AccessPolicy;

pub use error::PeerdError;

/// The well-known bus name.
pub const BUS_NAME: &str = "org.peerd.Peerd1";
/// The manager object.
pub const MANAGER_PATH: &str = "/org/peerd/Peerd1";
/// The manager's interface.
pub const MANAGER_INTERFACE: &str = "org.peerd.Peerd1";
/// The peers' objects are below this path.
pub const PEER_PATH_PREFIX: &str = "/org/peerd/Peerd1/peer";
/// The peers' interface.
pub const PEER_INTERFACE: &str = "org.peerd.Peerd1.Peer";

/// How long the replies of calls still running when peerd stops may take.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);

/// How long connecting to the bus (up to its answer to `Hello`) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the properties are refreshed when no event comes.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(15);

/// Which bus to offer the interface on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    /// The system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, or
    /// `/run/dbus/system_bus_socket`).
    System,
    /// The session bus of the user peerd runs as
    /// (`$DBUS_SESSION_BUS_ADDRESS`).
    Session,
    /// A bus at this D-Bus address (`unix:path=/tmp/bus`), for tests.
    Address(String),
}

impl Bus {
    /// The bus `[dbus] bus` names; `None` for `"none"` (no D-Bus
    /// interface).
    pub fn from_config(config: &DbusConfig) -> Option<Self> {
        match config.bus {
            DbusBus::System => Some(Self::System),
            DbusBus::Session => Some(Self::Session),
            DbusBus::None => None,
        }
    }

    fn builder(&self) -> zbus::connection::Builder<'static> {
        match self {
            Self::System => zbus::connection::Builder::system(),
            Self::Session => zbus::connection::Builder::session(),
            Self::Address(address) => zbus::connection::Builder::address(address.as_str()),
        }
    }
}

impl fmt::Display for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::System => f.write_str("system bus"),
            Self::Session => f.write_str("session bus"),
            Self::Address(address) => write!(f, "bus at {address}"),
        }
    }
}

/// Why the D-Bus interface cannot run.
#[derive(Debug, thiserror::Error)]
pub enum DbusError {
    /// The bus is not there, or refused the connection.
    #[error("cannot connect to the D-Bus {bus}: {source}")]
    Connect {
        /// Which bus.
        bus: String,
        /// Why.
        source: zbus::Error,
    },
    /// Another process owns `org.peerd.Peerd1`.
    #[error(
        "the D-Bus name {BUS_NAME} on the {bus} is owned by another process (is another peerd running?)"
    )]
    NameTaken {
        /// Which bus.
        bus: String,
    },
    /// The bus refused the name (no policy file lets this user own it).
    #[error(
        "cannot own the D-Bus name {BUS_NAME} on the {bus} (is org.peerd.Peerd1.conf installed in /usr/share/dbus-1/system.d?): {source}"
    )]
    Name {
        /// Which bus.
        bus: String,
        /// Why.
        source: zbus::Error,
    },
    /// The objects could not be registered (a bug).
    #[error("cannot serve the D-Bus objects: {0}")]
    Objects(zbus::Error),
    /// The bus went away (dbus-daemon stopped or restarted).
    #[error("the D-Bus {bus} closed the connection")]
    Disconnected {
        /// Which bus.
        bus: String,
    },
}

/// Offers the interface on `bus` until `shutdown` is cancelled, serving
/// every call through `api`; `policy` is the `[control] group` rule.
///
/// The bus name is requested only after the objects and the first
/// snapshot are in place, so the first caller already gets the real
/// values (a caller can wait for the name to appear to know the interface
/// is ready). When `api`'s first `status`/`peers` fail, the interface
/// starts with empty values and fills them on the next refresh.
///
/// # Errors
/// When it cannot start ([`DbusError::Connect`], [`DbusError::NameTaken`],
/// [`DbusError::Name`], [`DbusError::Objects`]) and when the bus closes the
/// connection ([`DbusError::Disconnected`]); the caller decides whether
/// peerd goes on without D-Bus or tries again later.
pub async fn serve<A: ControlApi>(
    api: Arc<A>,
    bus: Bus,
    policy: AccessPolicy,
    shutdown: CancellationToken,
) -> Result<(), DbusError> {
    // A bus that takes the connection but never answers `Hello` (a
    // broken configuration) must not hang this task: the daemon retries.
    let connection = match timeout(CONNECT_TIMEOUT, bus.builder().build()).await {
        Ok(built) => built.map_err(|source| DbusError::Connect {
            bus: bus.to_string(),
            source,
        })?,
        Err(_) => {
            return Err(DbusError::Connect {
                bus: bus.to_string(),
                source: zbus::Error::Failure(format!(
                    "no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )),
            });
        },
    };
    // Subscribe before the first snapshot, so no change falls between.
    let events = api.events();
    let snapshot = Arc::new(state::Shared::default());
    let refresher = Arc::new(state::Refresher::new(
        Arc::clone(&api),
        Arc::clone(&snapshot),
    ));
    // Ends the `OpenStream` copies and running method calls when peerd
    // stops, and also when the connection is lost.
    let stop = shutdown.child_token();
    let streams = TaskTracker::new();
    let gate = caller::Gate::new(&connection, policy)
        .await
        .map_err(DbusError::Objects)?;
    let manager = manager::Manager::new(
        api,
        Arc::clone(&snapshot),
        Arc::clone(&refresher),
        gate,
        streams.clone(),
        stop.clone(),
    );
    connection
        .object_server()
        .at(MANAGER_PATH, manager)
        .await
        .map_err(DbusError::Objects)?;
    refresher.refresh(&connection).await;
    let name_error = |source| DbusError::Name {
        bus: bus.to_string(),
        source,
    };
    let taken = || DbusError::NameTaken {
        bus: bus.to_string(),
    };
    let refused = match connection
        .request_name_with_flags(BUS_NAME, RequestNameFlags::DO_NOT_QUEUE)
        .await
    {
        Ok(RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner) => None,
        Ok(RequestNameReply::InQueue | RequestNameReply::Exists) | Err(zbus::Error::NameTaken) => {
            Some(taken())
        },
        Err(e) => Some(name_error(e)),
    };
    if let Some(e) = refused {
        close::<A>(connection).await;
        return Err(e);
    }
    info!(%bus, name = BUS_NAME, "D-Bus interface up");

    let ended = refresher.run(&connection, events, &stop).await;
    stop.cancel();
    streams.close();
    streams.wait().await;
    let result = match ended {
        state::Ended::Shutdown => {
            if let Err(e) = connection.release_name(BUS_NAME).await {
                warn!(error = %e, "Cannot release the D-Bus name");
            }
            info!(%bus, "D-Bus interface stopped");
            Ok(())
        },
        state::Ended::Disconnected => {
            warn!(%bus, "The D-Bus connection was closed by the bus");
            Err(DbusError::Disconnected {
                bus: bus.to_string(),
            })
        },
    };
    close::<A>(connection).await;
    result
}

/// Closes the connection served by [`serve`].
async fn close<A: ControlApi>(connection: zbus::Connection) {
    // The manager holds a clone of the connection (to ask the bus about
    // callers), and the connection holds the manager: unregistering it
    // lets both go.
    let _ = connection
        .object_server()
        .remove::<manager::Manager<A>, _>(MANAGER_PATH)
        .await;
    // Calls that were running have been answered "peerd is stopping";
    // their replies go out before the connection closes.
    if timeout(FAREWELL_TIMEOUT, connection.graceful_shutdown())
        .await
        .is_err()
    {
        debug!("D-Bus connection closed with calls still running");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_picks_the_bus() {
        let bus = |bus| Bus::from_config(&DbusConfig { bus });
        assert_eq!(bus(DbusBus::System), Some(Bus::System));
        assert_eq!(bus(DbusBus::Session), Some(Bus::Session));
        assert_eq!(bus(DbusBus::None), None);
        assert_eq!(
            Bus::Address("unix:path=/b".into()).to_string(),
            "bus at unix:path=/b"
        );
    }
}
