//! A private system-style `dbus-daemon` for the D-Bus tests: Debian's
//! system bus rules plus the repo's own policy file
//! (`systemd/org.peerd.Peerd1.conf`), included as the system bus includes
//! it. Shared by `dbus.rs` (the front end over a stand-in API) and
//! `e2e_dbus.rs` (the real `peerd` binary).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    reason = "test helpers, shared by test files that use different parts"
)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The rules of Debian's /usr/share/dbus-1/system.conf: method calls are
/// denied unless a policy file allows them; root may monitor.
const SYSTEM_DEFAULTS: &str = r#"
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>"#;

/// What the bus lets through to peerd.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The repo's policy file, included as the system bus includes it.
    Shipped,
    /// Everyone may call everything: only peerd's own check refuses.
    Open,
}

/// A private system-style dbus-daemon, killed on drop.
pub struct TestBus {
    /// Its socket and config (readable by every user).
    _dir: tempfile::TempDir,
    /// Its D-Bus address (`unix:path=...,guid=...`), as it printed it.
    pub address: String,
    /// The dbus-daemon process.
    pub child: Child,
}

impl TestBus {
    /// Starts a bus with `policy`; returns once it listens.
    pub fn start(policy: Policy) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Test users connect to the socket in it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("system_bus_socket");
        let rules = match policy {
            Policy::Shipped => {
                let file = repo().join("systemd/org.peerd.Peerd1.conf");
                assert!(file.exists(), "{} is missing", file.display());
                format!("<include>{}</include>", file.display())
            },
            Policy::Open => r#"<policy context="default">
    <allow own="org.peerd.Peerd1"/>
    <allow send_destination="org.peerd.Peerd1"/>
  </policy>"#
                .to_owned(),
        };
        let config = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
{SYSTEM_DEFAULTS}
  {rules}
</busconfig>
"#,
            socket.display()
        );
        let config_file = dir.path().join("system.conf");
        fs::write(&config_file, config).unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config_file.display()))
            .args(["--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Its log (refused messages, an fd limit it cannot raise here).
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon runs (package dbus)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_owned();
        assert!(
            address.starts_with("unix:path="),
            "dbus-daemon said {line:?}"
        );
        Self {
            _dir: dir,
            address,
            child,
        }
    }

    /// Whether `name` has an owner on the bus (`NameHasOwner`, asked with
    /// dbus-send as root).
    pub fn has_owner(&self, name: &str) -> bool {
        let out = Command::new("dbus-send")
            .arg(format!("--bus={}", self.address))
            .args(["--print-reply", "--reply-timeout=20000"])
            .args([
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
            ])
            .arg(format!("string:{name}"))
            .stdin(Stdio::null())
            .output()
            .expect("dbus-send runs (package dbus)");
        assert!(
            out.status.success(),
            "dbus-send NameHasOwner: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).contains("boolean true")
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
