//! Who may do what on the control socket.
//!
//! INTERFACE.md: "root and members of `[control] group` may do
//! everything; other local users may read, nothing else". Membership is
//! looked up afresh for every connection (a user added to the group is
//! let in without restarting peerd), through the system's user and group
//! databases (NSS: `/etc/passwd`, `/etc/group`, or whatever
//! `nsswitch.conf` names). The lookups block, so the server runs them on
//! a blocking thread.

use std::ffi::CString;

use nix::unistd::{Gid, Group, Uid, User, getgrouplist};
use peerd_control::Access;

/// The credentials of the process at the other end of a connection, from
/// `SO_PEERCRED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
    /// Its process id, if the kernel gave one.
    pub pid: Option<i32>,
}

/// The access rule: the `[control] group` whose members have full access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    group: String,
}

impl AccessPolicy {
    /// Full access for root and members of `group`.
    pub fn new(group: impl Into<String>) -> Self {
        Self {
            group: group.into(),
        }
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// What a process with these credentials may do. Blocks on the user
    /// and group databases. A group that does not exist has no members; a
    /// failed lookup grants nothing.
    pub fn access(&self, cred: &Credentials) -> Access {
        if cred.uid == 0 {
            return Access::Full;
        }
        let Ok(Some(group)) = Group::from_name(&self.group) else {
            return Access::ReadOnly;
        };
        if cred.gid == group.gid.as_raw() || user_in_group(cred.uid, &group) {
            Access::Full
        } else {
            Access::ReadOnly
        }
    }
}

/// Whether the user `uid` has `group` as primary or supplementary group.
fn user_in_group(uid: u32, group: &Group) -> bool {
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return false;
    };
    if user.gid == group.gid || group.mem.contains(&user.name) {
        return true;
    }
    CString::new(user.name.as_str())
        .ok()
        .and_then(|name| getgrouplist(&name, user.gid).ok())
        .is_some_and(|groups: Vec<Gid>| groups.contains(&group.gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(uid: u32, gid: u32) -> Credentials {
        Credentials {
            uid,
            gid,
            pid: None,
        }
    }

    // These read the real user database: Debian has root (0), daemon
    // (1/1) and nobody (65534) with primary group nogroup (65534).

    #[test]
    fn root_may_do_everything_whatever_the_group() {
        let none = AccessPolicy::new("peerd-no-such-group");
        assert_eq!(none.access(&cred(0, 0)), Access::Full);
        assert_eq!(none.access(&cred(0, 65534)), Access::Full);
    }

    #[test]
    fn members_by_process_gid_or_user_database_may_do_everything() {
        let nogroup = AccessPolicy::new("nogroup");
        // the process runs with the group
        assert_eq!(nogroup.access(&cred(1, 65534)), Access::Full);
        // nobody's primary group in /etc/passwd, whatever the process's gid
        assert_eq!(nogroup.access(&cred(65534, 1)), Access::Full);
    }

    #[test]
    fn everyone_else_may_only_read() {
        let daemon = AccessPolicy::new("daemon");
        assert_eq!(daemon.access(&cred(65534, 65534)), Access::ReadOnly);
        let none = AccessPolicy::new("peerd-no-such-group");
        assert_eq!(none.access(&cred(65534, 65534)), Access::ReadOnly);
        // a uid with no passwd entry, in no group
        assert_eq!(daemon.access(&cred(54_321, 54_321)), Access::ReadOnly);
    }
}
