//! Who calls a method, and whether they may: the bus tells the caller's
//! uid and groups (`GetConnectionCredentials`, or
//! `GetConnectionUnixUser` on a bus without it), and [`AccessPolicy`] -
//! the control socket's rule - decides. Asked afresh for every call, like
//! the control socket per connection, so that a user added to the group
//! is let in without restarting peerd.

use std::sync::Arc;

use peerd_control::Access;
use tracing::{info, warn};
use zbus::fdo::DBusProxy;
use zbus::message::Header;
use zbus::names::BusName;

use super::error::PeerdError;
use crate::control::access::{AccessPolicy, Credentials};

/// A group id no group has ((gid_t)-1), for a caller whose groups the bus
/// does not tell: then only the user database decides membership.
const NO_GID: u32 = u32::MAX;

/// Asks the bus about callers and applies the access rule.
pub(super) struct Gate {
    bus: DBusProxy<'static>,
    policy: Arc<AccessPolicy>,
}

impl Gate {
    pub(super) async fn new(
        connection: &zbus::Connection,
        policy: AccessPolicy,
    ) -> zbus::Result<Self> {
        Ok(Self {
            bus: DBusProxy::new(connection).await?,
            policy: Arc::new(policy),
        })
    }

    /// Lets the call through if its sender has full access; refuses it
    /// with `org.freedesktop.DBus.Error.AccessDenied` otherwise, or when
    /// the bus cannot say who the sender is. Logs both.
    pub(super) async fn require_full(
        &self,
        header: &Header<'_>,
        method: &str,
    ) -> Result<(), PeerdError> {
        let Some(sender) = header.sender() else {
            // Only a peer-to-peer connection has no sender; peerd never
            // serves one.
            warn!(method, "D-Bus call without a sender refused");
            return Err(PeerdError::access_denied("the caller is unknown"));
        };
        let sender = BusName::Unique(sender.to_owned());
        let (uid, gids, pid) = match self.bus.get_connection_credentials(sender.clone()).await {
            Ok(c) => match c.unix_user_id() {
                Some(uid) => (uid, c.unix_group_ids().cloned(), c.process_id()),
                None => (self.unix_user(&sender, method).await?, None, c.process_id()),
            },
            Err(_) => (self.unix_user(&sender, method).await?, None, None),
        };
        let policy = Arc::clone(&self.policy);
        let access = tokio::task::spawn_blocking(move || access(&policy, uid, gids, pid))
            .await
            .unwrap_or(Access::ReadOnly);
        if access == Access::Full {
            info!(method, uid, pid, sender = %sender, "D-Bus request");
            Ok(())
        } else {
            warn!(method, uid, pid, sender = %sender, "D-Bus request refused: permission denied");
            Err(PeerdError::access_denied(format!(
                "permission denied: {method} needs root or membership of the peerd control group ([control] group {})",
                self.policy.group()
            )))
        }
    }

    async fn unix_user(&self, sender: &BusName<'_>, method: &str) -> Result<u32, PeerdError> {
        self.bus
            .get_connection_unix_user(sender.clone())
            .await
            .map_err(|e| {
                warn!(method, sender = %sender, error = %e, "D-Bus request refused: the bus does not say who sent it");
                PeerdError::access_denied("the bus does not say who the caller is")
            })
    }
}

/// The control socket's rule for a caller with `uid` and the groups
/// `gids` (their process's groups as the bus saw them, if it did). Blocks
/// on the user and group databases.
fn access(policy: &AccessPolicy, uid: u32, gids: Option<Vec<u32>>, pid: Option<u32>) -> Access {
    let pid = pid.and_then(|p| i32::try_from(p).ok());
    let gids = gids
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| vec![NO_GID]);
    let full = gids
        .into_iter()
        .any(|gid| policy.access(&Credentials { uid, gid, pid }) == Access::Full);
    if full { Access::Full } else { Access::ReadOnly }
}

#[cfg(test)]
mod tests {
    use super::*;

    // As in control::access: Debian's daemon (1/1) and nobody
    // (65534/nogroup 65534) from the real user database.

    #[test]
    fn root_and_members_by_any_process_group_get_full_access() {
        let daemon = AccessPolicy::new("daemon");
        assert_eq!(access(&daemon, 0, None, None), Access::Full);
        // nobody, with `daemon` among the process's groups
        assert_eq!(
            access(&daemon, 65534, Some(vec![65534, 1]), Some(7)),
            Access::Full
        );
        // by the user database alone
        assert_eq!(
            access(&AccessPolicy::new("nogroup"), 65534, None, None),
            Access::Full
        );
    }

    #[test]
    fn everyone_else_only_reads() {
        let daemon = AccessPolicy::new("daemon");
        assert_eq!(
            access(&daemon, 65534, Some(vec![65534]), None),
            Access::ReadOnly
        );
        assert_eq!(access(&daemon, 65534, Some(vec![]), None), Access::ReadOnly);
        assert_eq!(access(&daemon, 54_321, None, None), Access::ReadOnly);
    }
}
