//! The D-Bus front end (crates/peerd/src/dbus) on a real, private
//! `dbus-daemon` with a system-bus configuration that includes the repo's
//! own policy file (`systemd/org.peerd.Peerd1.conf`), driven by real
//! clients: `gdbus` and `dbus-send` (and a zbus client where a received fd
//! must be used). The daemon's actors are `control_harness::FakeApi`, as
//! for the control socket's tests. Access is tested with a system user the
//! test creates (and removes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod control_harness;
mod dbus_bus;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use control_harness::{DEADLINE, FakeApi, FakeServing, at, candidate, name, peer_key};
use dbus_bus::{Policy, TestBus, repo};
use peerd::control::access::AccessPolicy;
use peerd::dbus::{self, Bus, DbusError};
use peerd_control::{Event, EventKind, LinkState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const DEST: &str = "org.peerd.Peerd1";
const ROOT: &str = "/org/peerd/Peerd1";
const IFACE: &str = "org.peerd.Peerd1";
const PEER_IFACE: &str = "org.peerd.Peerd1.Peer";

/// `peerd::dbus::serve` over a FakeApi, on its own runtime thread.
struct Daemon {
    api: Arc<FakeApi>,
    runtime: Arc<tokio::runtime::Runtime>,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<Result<(), DbusError>>>,
    bus: TestBus,
}

impl Daemon {
    fn start(policy: Policy, group: &str) -> Self {
        let bus = TestBus::start(policy);
        let (address, policy) = (Bus::Address(bus.address.clone()), AccessPolicy::new(group));
        let FakeServing {
            api,
            runtime,
            shutdown,
            thread,
        } = FakeServing::start(move |api, shutdown| dbus::serve(api, address, policy, shutdown));
        let daemon = Self {
            api,
            runtime,
            shutdown,
            thread: Some(thread),
            bus,
        };
        daemon.wait_for_name(true);
        daemon
    }

    fn address(&self) -> &str {
        &self.bus.address
    }

    fn wait_for_name(&self, owned: bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let out = dbus_send(
                self.address(),
                &[
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.peerd.Peerd1",
                ],
            );
            let has = out.contains("boolean true");
            if has == owned {
                return;
            }
            if let Some(thread) = &self.thread {
                assert!(!thread.is_finished(), "dbus::serve ended early");
            }
            assert!(
                Instant::now() < deadline,
                "name owned: {has}, waited for {owned}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(&mut self) -> Result<(), DbusError> {
        self.shutdown.cancel();
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `dbus-send --print-reply` as root; stdout, or panics.
fn dbus_send(address: &str, args: &[&str]) -> String {
    let out = Command::new("dbus-send")
        .arg(format!("--bus={address}"))
        .args(["--print-reply", "--reply-timeout=20000"])
        .args(args)
        .output()
        .expect("dbus-send runs (package dbus)");
    assert!(
        out.status.success(),
        "dbus-send {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Who runs a client.
#[derive(Clone, Copy)]
enum As<'a> {
    Root,
    User(&'a TestUser),
}

fn client(program: &str, who: As<'_>) -> Command {
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null())
        .env_remove("DBUS_SYSTEM_BUS_ADDRESS");
    if let As::User(user) = who {
        // std drops root's supplementary groups when it sets the uid.
        cmd.uid(user.uid).gid(user.gid).env("HOME", "/");
    }
    cmd
}

/// `gdbus call` of `method` on `path`.
fn gdbus_call(address: &str, who: As<'_>, path: &str, method: &str, args: &[&str]) -> Output {
    client("gdbus", who)
        .args([
            "call",
            "--address",
            address,
            "--dest",
            DEST,
            "--object-path",
            path,
        ])
        .args(["--method", method, "--timeout", "20"])
        .args(args)
        .output()
        .expect("gdbus runs (package libglib2.0-bin)")
}

/// A gdbus call that must work; its output.
fn ok(d: &Daemon, method: &str, args: &[&str]) -> String {
    let out = gdbus_call(
        d.address(),
        As::Root,
        ROOT,
        &format!("{IFACE}.{method}"),
        args,
    );
    assert!(
        out.status.success(),
        "{method} {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A gdbus call that must fail with the D-Bus error `name`; the message.
fn fails(out: &Output, name: &str, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} worked: {}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    let marker = format!("GDBus.Error:{name}: ");
    let at = err
        .find(&marker)
        .unwrap_or_else(|| panic!("{what}: expected {name}, got {err}"));
    err[at + marker.len()..].trim().to_owned()
}

fn get_all(address: &str, who: As<'_>, path: &str, iface: &str) -> Output {
    gdbus_call(
        address,
        who,
        path,
        "org.freedesktop.DBus.Properties.GetAll",
        &[iface],
    )
}

/// A system user made for the test (with its own group, and optionally
/// in `extra_group`), removed on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    extra_group: Option<String>,
}

/// Runs a user database tool, retrying while another process holds
/// /etc/passwd's lock.
fn user_tool(args: &[&str]) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        if out.status.success() {
            return;
        }
        assert!(Instant::now() < deadline, "{args:?}: {}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl TestUser {
    fn create(tag: &str, extra_group: Option<&str>) -> Self {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "this test creates a system user: run it as root (CI does)"
        );
        let name = format!("pdt{tag}{}", std::process::id());
        if let Some(group) = extra_group {
            user_tool(&["/usr/sbin/groupadd", "--system", group]);
        }
        let mut args = vec![
            "/usr/sbin/useradd",
            "--system",
            "--no-create-home",
            "--user-group",
            "--shell",
            "/usr/sbin/nologin",
        ];
        if let Some(group) = extra_group {
            args.extend(["--groups", group]);
        }
        args.push(&name);
        user_tool(&args);
        let user = nix::unistd::User::from_name(&name).unwrap().unwrap();
        Self {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            name,
            extra_group: extra_group.map(str::to_owned),
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/userdel").arg(&self.name).output();
        if let Some(group) = &self.extra_group {
            let _ = Command::new("/usr/sbin/groupdel").arg(group).output();
        }
    }
}

/// `gdbus monitor` on the daemon's objects, its lines collected by a
/// thread.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// Probe signals were sent (`sync`): ignore them.
    probes: bool,
}

impl Monitor {
    fn start(address: &str, who: As<'_>) -> Self {
        // stdbuf: gdbus writes its lines through stdio, fully buffered
        // into a pipe otherwise.
        let mut child = client("stdbuf", who)
            .args([
                "-oL",
                "gdbus",
                "monitor",
                "--address",
                address,
                "--dest",
                DEST,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut monitor = Self {
            child,
            lines,
            seen: Vec::new(),
            probes: false,
        };
        // Printed after its match rule is in place (the rule is added
        // before the name owner is asked for, on the same connection).
        monitor.expect("The name org.peerd.Peerd1 is owned by");
        monitor
    }

    /// Waits for a line containing every one of `parts`; returns it.
    fn expect_all(&mut self, parts: &[&str]) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(i) = self
                .seen
                .iter()
                .position(|l| parts.iter().all(|p| l.contains(p)))
            {
                return self.seen.remove(i);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if self.probes && line.contains("monitor-probe") => {},
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no line with {parts:?}; saw {:#?}", self.seen),
            }
        }
    }

    fn expect(&mut self, part: &str) -> String {
        self.expect_all(&[part])
    }

    /// Waits until signals reach the monitor. GDBus drops signals for a
    /// well-known name's subscription until it has learnt the name's
    /// owner, which may be after it printed the owner, so a probe signal
    /// is sent until one arrives.
    fn sync(&mut self, api: &FakeApi) {
        let deadline = Instant::now() + DEADLINE;
        'probe: loop {
            api.emit(Event::now(EventKind::PeerDisconnected {
                peer: name("hitoshi"),
                reason: "monitor-probe".into(),
            }));
            let wait = Instant::now() + Duration::from_millis(100);
            while let Ok(line) = self
                .lines
                .recv_timeout(wait.saturating_duration_since(Instant::now()))
            {
                if line.contains("monitor-probe") {
                    break 'probe;
                }
                self.seen.push(line);
            }
            assert!(Instant::now() < deadline, "no signal reached gdbus monitor");
        }
        // Later probes may still come: let them pass unseen.
        self.seen.retain(|l| !l.contains("monitor-probe"));
        self.probes = true;
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `<interface name="NAME">` element of an introspection document,
/// each line trimmed.
fn interface_xml(doc: &str, name: &str) -> String {
    let start = doc
        .find(&format!("<interface name=\"{name}\">"))
        .unwrap_or_else(|| panic!("no interface {name} in {doc}"));
    let end = start + doc[start..].find("</interface>").unwrap() + "</interface>".len();
    doc[start..end]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `PEERD_BLESS=1`: writes the live `iface` into `doc` (after a
/// deliberate change of the interface; review the diff).
fn bless(doc: &Path, live: &str, iface: &str) {
    let start = live.find(&format!("<interface name=\"{iface}\">")).unwrap();
    let end = start + live[start..].find("</interface>").unwrap() + "</interface>".len();
    let indent = live[..start].len() - live[..start].trim_end_matches(' ').len();
    let body: Vec<String> = live[start..end]
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let l = if i == 0 {
                l
            } else {
                l.get(indent..).unwrap_or(l.trim_start())
            };
            format!("  {l}")
        })
        .collect();
    let text = format!(
        "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<!-- {iface}: see docs/dbus-api.md. crates/peerd/tests/dbus.rs checks that the live interface is this one. -->\n<node>\n{}\n</node>\n",
        body.join("\n")
    );
    fs::write(doc, text).unwrap();
}

fn introspect(address: &str, path: &str) -> String {
    let out = dbus_send(
        address,
        &[
            &format!("--dest={DEST}"),
            path,
            "org.freedesktop.DBus.Introspectable.Introspect",
        ],
    );
    // dbus-send prints `string "<the XML>"`, quotes escaped as \".
    let start = out.find('"').unwrap() + 1;
    let end = out.rfind('"').unwrap();
    out[start..end].replace("\\\"", "\"")
}

#[test]
fn introspection_matches_the_committed_xml() {
    let d = Daemon::start(Policy::Shipped, "daemon");
    for (path, iface, file) in [
        (ROOT, IFACE, "org.peerd.Peerd1.xml"),
        (
            "/org/peerd/Peerd1/peer/hitoshi",
            PEER_IFACE,
            "org.peerd.Peerd1.Peer.xml",
        ),
    ] {
        let live = introspect(d.address(), path);
        let doc = repo().join("docs/dbus").join(file);
        if std::env::var_os("PEERD_BLESS").is_some() {
            bless(&doc, &live, iface);
        }
        let committed = fs::read_to_string(&doc).unwrap();
        assert_eq!(
            interface_xml(&live, iface),
            interface_xml(&committed, iface),
            "docs/dbus/{file} differs from the live introspection of {path}:\n{live}"
        );
        // The standard interfaces INTERFACE.md promises.
        for standard in [
            "org.freedesktop.DBus.Properties",
            "org.freedesktop.DBus.Introspectable",
        ] {
            assert!(live.contains(&format!("<interface name=\"{standard}\">")));
        }
    }
    // Peers' objects, names escaped as systemd does.
    let peers = introspect(d.address(), "/org/peerd/Peerd1/peer");
    for node in ["hitoshi", "me_2don_2dphone", "slowpoke"] {
        assert!(peers.contains(&format!("<node name=\"{node}\"")), "{peers}");
    }
}

#[test]
fn properties_read_with_gdbus_and_dbus_send() {
    let d = Daemon::start(Policy::Shipped, "daemon");
    let out = get_all(d.address(), As::Root, ROOT, IFACE);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = text(&out.stdout);
    let key = control_harness::identity().public_key().to_string();
    for expected in [
        "'LinkState': <'up'>".to_owned(),
        "'Interface': <'ppp0'>".to_owned(),
        // only what announcements carry: not the link-local fe80::1
        "'Addresses': <['203.0.113.7']>".to_owned(),
        format!("'PublicKey': <'{key}'>"),
        "'Peers': <[objectpath '/org/peerd/Peerd1/peer/hitoshi', '/org/peerd/Peerd1/peer/me_2don_2dphone', '/org/peerd/Peerd1/peer/slowpoke']>".to_owned(),
        "'OutboxSize': <uint32 1>".to_owned(),
        format!("'LastMailCheck': <uint64 {}>", at().unix_secs()),
    ] {
        assert!(all.contains(&expected), "{expected} not in {all}");
    }

    // One property at a time with dbus-send.
    let get = |path: &str, iface: &str, prop: &str| {
        dbus_send(
            d.address(),
            &[
                &format!("--dest={DEST}"),
                path,
                "org.freedesktop.DBus.Properties.Get",
                &format!("string:{iface}"),
                &format!("string:{prop}"),
            ],
        )
    };
    assert!(get(ROOT, IFACE, "LinkState").contains("string \"up\""));
    assert!(get(ROOT, IFACE, "OutboxSize").contains("uint32 1"));

    let hitoshi = "/org/peerd/Peerd1/peer/hitoshi";
    let fingerprint = peer_key(2).fingerprint().to_string();
    assert!(get(hitoshi, PEER_IFACE, "Name").contains("string \"hitoshi\""));
    assert!(get(hitoshi, PEER_IFACE, "Email").contains("string \"hitoshi@isp-b.example\""));
    assert!(get(hitoshi, PEER_IFACE, "Fingerprint").contains(&format!("string \"{fingerprint}\"")));
    assert!(get(hitoshi, PEER_IFACE, "Addresses").contains("string \"198.51.100.7:7447\""));
    assert!(
        get(hitoshi, PEER_IFACE, "LastAnnounced").contains(&format!("uint64 {}", at().unix_secs()))
    );
    assert!(get(hitoshi, PEER_IFACE, "State").contains("string \"connected\""));

    let out = get_all(
        d.address(),
        As::Root,
        "/org/peerd/Peerd1/peer/me_2don_2dphone",
        PEER_IFACE,
    );
    let phone = text(&out.stdout);
    for expected in [
        "'Name': <'me-on-phone'>",
        "'Email': <'me@example.org'>",
        "'Fingerprint': <''>",
        "'Addresses': <@as []>",
        "'LastAnnounced': <uint64 0>",
        "'State': <'idle'>",
    ] {
        assert!(phone.contains(expected), "{expected} not in {phone}");
    }

    // Read-only: setting is refused.
    let out = gdbus_call(
        d.address(),
        As::Root,
        ROOT,
        "org.freedesktop.DBus.Properties.Set",
        &[IFACE, "LinkState", "<'down'>"],
    );
    assert!(!out.status.success());
}

#[test]
fn methods_reach_the_daemon_and_errors_have_their_names() {
    let d = Daemon::start(Policy::Shipped, "daemon");
    assert_eq!(ok(&d, "Announce", &["['hitoshi']"]).trim(), "()");
    ok(&d, "Announce", &["@as []"]);
    ok(&d, "CheckMail", &[]);
    ok(&d, "Connect", &["hitoshi"]);
    ok(&d, "Disconnect", &["hitoshi"]);
    ok(&d, "LinkUp", &[]);
    ok(&d, "LinkDown", &[]);
    ok(&d, "Call", &["hitoshi"]);
    let out = ok(&d, "OpenStream", &["hitoshi", "ssh"]);
    assert!(out.contains("handle"), "{out}");
    assert_eq!(
        d.api.logged(),
        [
            "announce hitoshi",
            "announce hitoshi,me-on-phone",
            "check",
            "connect hitoshi",
            "disconnect hitoshi",
            "link-up",
            "link-down",
            "call-start hitoshi",
            "open hitoshi ssh",
        ]
    );

    let call = |method: &str, args: &[&str]| {
        gdbus_call(
            d.address(),
            As::Root,
            ROOT,
            &format!("{IFACE}.{method}"),
            args,
        )
    };
    let msg = fails(
        &call("Connect", &["nobody"]),
        "org.peerd.Peerd1.Error.UnknownPeer",
        "Connect nobody",
    );
    assert!(msg.contains("no peer nobody"), "{msg}");
    let msg = fails(
        &call("Call", &["me-on-phone"]),
        "org.peerd.Peerd1.Error.NoKey",
        "Call plain",
    );
    assert!(msg.contains("no key for this peer"), "{msg}");
    fails(
        &call("OpenStream", &["me-on-phone", "ssh"]),
        "org.peerd.Peerd1.Error.NoKey",
        "OpenStream plain",
    );
    fails(
        &call("Disconnect", &["slowpoke"]),
        "org.peerd.Peerd1.Error.NotConnected",
        "Disconnect idle",
    );
    fails(
        &call("OpenStream", &["hitoshi", "smtp"]),
        "org.peerd.Peerd1.Error.Failed",
        "unknown service",
    );
    let key = peer_key(9).to_string();
    fails(
        &call("AddPeer", &["hitoshi", "h@isp-b.example", &key]),
        "org.peerd.Peerd1.Error.PeerExists",
        "AddPeer taken",
    );
    fails(
        &call("RemovePeer", &["hitoshi"]),
        "org.peerd.Peerd1.Error.Failed",
        "RemovePeer config",
    );
    // Bad arguments never reach the daemon; the value is quoted escaped.
    let msg = fails(
        &call("Connect", &["Bad\nName"]),
        "org.freedesktop.DBus.Error.InvalidArgs",
        "bad name",
    );
    assert!(msg.contains(r#""Bad\u{a}Name""#), "{msg}");
    fails(
        &call("AddPeer", &["carol", "not an address", &key]),
        "org.freedesktop.DBus.Error.InvalidArgs",
        "bad email",
    );
    fails(
        &call("AddPeer", &["carol", "carol@example.org", "SHA256:abc"]),
        "org.freedesktop.DBus.Error.InvalidArgs",
        "bad key",
    );
    d.api.check_fails.store(true, Ordering::SeqCst);
    let msg = fails(
        &call("CheckMail", &[]),
        "org.peerd.Peerd1.Error.Failed",
        "check",
    );
    assert!(msg.contains("connection refused"), "{msg}");
    assert_eq!(d.api.logged().len(), 9, "failed calls changed nothing");
}

#[test]
fn peer_objects_follow_the_address_book() {
    let mut d = Daemon::start(Policy::Shipped, "daemon");
    let mut monitor = Monitor::start(d.address(), As::Root);
    monitor.sync(&d.api);
    let key = peer_key(9).to_string();
    ok(&d, "AddPeer", &["new-friend", "friend@example.org", &key]);
    // The object is there when AddPeer returns; Peers says so.
    let path = "/org/peerd/Peerd1/peer/new_2dfriend";
    let out = get_all(d.address(), As::Root, path, PEER_IFACE);
    let props = text(&out.stdout);
    assert!(props.contains("'Name': <'new-friend'>"), "{props}");
    assert!(props.contains(&format!("'Fingerprint': <'{}'>", peer_key(9).fingerprint())));
    monitor.expect_all(&["PropertiesChanged", "'Peers'", path]);
    assert!(d.api.logged().contains(&format!(
        "peer-add new-friend friend@example.org {key} announce=true accept_unsigned=false"
    )));

    ok(&d, "RemovePeer", &["new-friend"]);
    let line = monitor.expect_all(&["PropertiesChanged", "'Peers'"]);
    assert!(!line.contains(path), "{line}");
    let out = get_all(d.address(), As::Root, path, PEER_IFACE);
    assert!(!out.status.success(), "the object is gone");

    // A peer added behind D-Bus's back (peerctl) appears with the next
    // event's refresh.
    {
        let mut peers = d.api.peers.lock().unwrap();
        let mut other = peers[2].clone();
        other.name = name("via-peerctl");
        peers.push(other);
    }
    d.api.emit(Event::now(EventKind::MailboxError {
        error: "timeout".into(),
    }));
    monitor.expect_all(&["PropertiesChanged", "/org/peerd/Peerd1/peer/via_2dpeerctl"]);

    // Stopping releases the name.
    d.stop().unwrap();
    d.wait_for_name(false);
}

#[test]
fn events_become_signals_and_properties_changed() {
    let d = Daemon::start(Policy::Shipped, "daemon");
    let mut monitor = Monitor::start(d.address(), As::Root);
    monitor.sync(&d.api);
    let ip = "203.0.113.99";
    {
        let mut status = d.api.status.lock().unwrap();
        status.interface.addresses[0].ip = ip.parse().unwrap();
        status.link.state = LinkState::Dialing;
    }
    let events = [
        EventKind::AddressChanged {
            interface: Some("ppp0".into()),
            addresses: vec![ip.parse().unwrap()],
        },
        EventKind::AnnouncementSent {
            peer: name("hitoshi"),
            addresses: vec![candidate("203.0.113.99:7447")],
            sequence: Some(7),
        },
        EventKind::AnnouncementReceived {
            peer: name("hitoshi"),
            addresses: vec![candidate("198.51.100.8:7447")],
            sequence: 9,
        },
        EventKind::AnnouncementRejected {
            sender: "evil@example.org\r\nX: y".into(),
            reason: "bad signature".into(),
        },
        EventKind::PeerConnected {
            peer: name("hitoshi"),
            address: "198.51.100.8:7447".parse().unwrap(),
        },
        EventKind::PeerDisconnected {
            peer: name("hitoshi"),
            reason: "idle timeout".into(),
        },
        EventKind::LinkStateChanged {
            state: LinkState::Dialing,
            interface: None,
            reason: None,
        },
    ];
    for kind in events {
        d.api.emit(Event::now(kind));
    }
    let changed = monitor.expect_all(&["PropertiesChanged", "'org.peerd.Peerd1'", "'Addresses'"]);
    assert!(changed.contains(&format!("<['{ip}']>")), "{changed}");
    assert!(changed.contains("'LinkState': <'dialing'>"), "{changed}");
    monitor.expect(&format!("{IFACE}.AddressChanged (['{ip}'],)"));
    monitor.expect(&format!(
        "{IFACE}.AnnouncementSent ('hitoshi', ['203.0.113.99:7447'])"
    ));
    monitor.expect(&format!(
        "{IFACE}.AnnouncementReceived ('hitoshi', ['198.51.100.8:7447'])"
    ));
    // A forged sender's line break arrives escaped.
    monitor.expect(&format!(
        r"{IFACE}.AnnouncementRejected ('evil@example.org\\u{{d}}\\u{{a}}X: y', 'bad signature')"
    ));
    monitor.expect(&format!(
        "{IFACE}.PeerConnected ('hitoshi', '198.51.100.8:7447')"
    ));
    monitor.expect(&format!(
        "{IFACE}.PeerDisconnected ('hitoshi', 'idle timeout')"
    ));
    monitor.expect(&format!("{IFACE}.LinkStateChanged ('dialing',)"));

    // Call returns once queued; PeerConnected tells success. slowpoke
    // never connects: its State says connecting.
    ok(&d, "Call", &["hitoshi"]);
    monitor.expect(&format!(
        "{IFACE}.PeerConnected ('hitoshi', '198.51.100.7:7447')"
    ));
    ok(&d, "Call", &["slowpoke"]);
    monitor.expect_all(&[
        "/org/peerd/Peerd1/peer/slowpoke",
        "PropertiesChanged",
        "'State': <'connecting'>",
    ]);
}

#[test]
fn open_stream_fd_carries_bytes_both_ways() {
    let d = Daemon::start(Policy::Shipped, "daemon");
    let address = d.address().to_owned();
    let fd = d.runtime.block_on(async {
        let connection = zbus::connection::Builder::address(address.as_str())
            .build()
            .await
            .unwrap();
        let reply = connection
            .call_method(
                Some(DEST),
                ROOT,
                Some(IFACE),
                "OpenStream",
                &("hitoshi", "ssh"),
            )
            .await
            .unwrap();
        let fd: zbus::OwnedFd = reply.body().deserialize().unwrap();
        std::os::fd::OwnedFd::from(fd)
    });
    let mut socket = std::os::unix::net::UnixStream::from(fd);
    let mut peer = d.api.take_opened();
    socket.write_all(b"ping from the D-Bus client").unwrap();
    socket.shutdown(std::net::Shutdown::Write).unwrap();
    d.runtime.block_on(async {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping from the D-Bus client");
        peer.write_all(b"pong from the peer").await.unwrap();
        peer.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    socket.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"pong from the peer");
}

#[test]
fn other_users_read_but_may_not_act() {
    let user = TestUser::create("ro", None);
    let who = As::User(&user);
    let key = peer_key(9).to_string();
    let refused: [(&str, Vec<&str>); 3] = [
        ("AddPeer", vec!["carol", "carol@example.org", &key]),
        ("Connect", vec!["hitoshi"]),
        ("OpenStream", vec!["hitoshi", "ssh"]),
    ];

    // With the shipped policy the bus refuses already.
    let d = Daemon::start(Policy::Shipped, "daemon");
    let mut monitor = Monitor::start(d.address(), who);
    monitor.sync(&d.api);
    let out = get_all(d.address(), who, ROOT, IFACE);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("'LinkState': <'up'>"));
    let out = get_all(
        d.address(),
        who,
        "/org/peerd/Peerd1/peer/hitoshi",
        PEER_IFACE,
    );
    assert!(text(&out.stdout).contains("'State': <'connected'>"));
    let out = client("dbus-send", who)
        .arg(format!("--bus={}", d.address()))
        .args(["--print-reply", &format!("--dest={DEST}"), ROOT])
        .args([
            "org.freedesktop.DBus.Properties.Get",
            &format!("string:{IFACE}"),
            "string:Interface",
        ])
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("string \"ppp0\""),
        "{}",
        text(&out.stderr)
    );
    for (method, args) in &refused {
        let out = gdbus_call(d.address(), who, ROOT, &format!("{IFACE}.{method}"), args);
        fails(&out, "org.freedesktop.DBus.Error.AccessDenied", method);
    }
    let out = client("dbus-send", who)
        .arg(format!("--bus={}", d.address()))
        .args(["--print-reply", &format!("--dest={DEST}"), ROOT])
        .args([&format!("{IFACE}.Connect"), "string:hitoshi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("org.freedesktop.DBus.Error.AccessDenied"));
    // ...and receives signals.
    d.api.emit(Event::now(EventKind::PeerDisconnected {
        peer: name("hitoshi"),
        reason: "idle timeout".into(),
    }));
    monitor.expect(&format!(
        "{IFACE}.PeerDisconnected ('hitoshi', 'idle timeout')"
    ));
    assert!(d.api.logged().is_empty());
    drop(monitor);
    drop(d);

    // With a bus that lets everything through, peerd refuses by itself.
    let d = Daemon::start(Policy::Open, "daemon");
    for (method, args) in &refused {
        let out = gdbus_call(d.address(), who, ROOT, &format!("{IFACE}.{method}"), args);
        let msg = fails(&out, "org.freedesktop.DBus.Error.AccessDenied", method);
        assert!(msg.contains("needs root or membership"), "{msg}");
    }
    assert!(get_all(d.address(), who, ROOT, IFACE).status.success());
    assert!(d.api.logged().is_empty(), "{:?}", d.api.logged());
}

#[test]
fn members_of_the_control_group_may_act() {
    let group = format!("pdtg{}", std::process::id());
    let user = TestUser::create("rw", Some(&group));
    let d = Daemon::start(Policy::Open, &group);
    let out = gdbus_call(
        d.address(),
        As::User(&user),
        ROOT,
        &format!("{IFACE}.Connect"),
        &["hitoshi"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(d.api.logged(), ["connect hitoshi"]);
}

#[test]
fn serves_while_the_mail_server_does_not_answer() {
    let d = Daemon::start(Policy::Shipped, "daemon");
    d.api.check_hangs.store(true, Ordering::SeqCst);
    let mut check = client("gdbus", As::Root)
        .args([
            "call",
            "--address",
            d.address(),
            "--dest",
            DEST,
            "--object-path",
            ROOT,
        ])
        .args(["--method", &format!("{IFACE}.CheckMail"), "--timeout", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The check hangs in the daemon...
    control_harness::wait_until("the check to start", || {
        d.api.logged().contains(&"check (hangs)".to_owned())
    });
    let start = Instant::now();
    // ...while everything else answers at once.
    let all = text(&get_all(d.address(), As::Root, ROOT, IFACE).stdout);
    assert!(all.contains("'LinkState': <'up'>"), "{all}");
    ok(&d, "Connect", &["hitoshi"]);
    ok(&d, "Announce", &["@as []"]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(check.try_wait().unwrap().is_none(), "CheckMail answered");
    let _ = check.kill();
    let _ = check.wait();
}

#[test]
fn a_call_running_when_peerd_stops_is_answered() {
    let mut d = Daemon::start(Policy::Shipped, "daemon");
    d.api.check_hangs.store(true, Ordering::SeqCst);
    let check = client("gdbus", As::Root)
        .args([
            "call",
            "--address",
            d.address(),
            "--dest",
            DEST,
            "--object-path",
            ROOT,
        ])
        .args(["--method", &format!("{IFACE}.CheckMail"), "--timeout", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    control_harness::wait_until("the check to start", || {
        d.api.logged().contains(&"check (hangs)".to_owned())
    });
    d.stop().unwrap();
    let out = check.wait_with_output().unwrap();
    let msg = fails(&out, "org.peerd.Peerd1.Error.Unavailable", "CheckMail");
    assert_eq!(msg, "peerd is stopping");
    d.wait_for_name(false);
}

#[test]
fn a_second_peerd_on_the_bus_is_told_the_name_is_taken() {
    let d = Daemon::start(Policy::Shipped, "daemon");
    // Connections on the bus (each count includes dbus-send's own).
    let connections = || {
        dbus_send(
            d.address(),
            &[
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.ListNames",
            ],
        )
        .matches("string \":")
        .count()
    };
    let before = connections();
    let second = d.runtime.block_on(dbus::serve(
        Arc::new(FakeApi::new()),
        Bus::Address(d.address().to_owned()),
        AccessPolicy::new("daemon"),
        CancellationToken::new(),
    ));
    let err = second.unwrap_err();
    assert!(matches!(err, DbusError::NameTaken { .. }), "{err}");
    assert!(
        err.to_string().contains("is another peerd running?"),
        "{err}"
    );
    // The second one left the bus.
    control_harness::wait_until("the second connection to close", || connections() == before);
    // The first one still answers.
    ok(&d, "Connect", &["hitoshi"]);
}

#[test]
fn a_bus_that_goes_away_ends_serve_with_an_error() {
    let mut d = Daemon::start(Policy::Shipped, "daemon");
    d.bus.child.kill().unwrap();
    d.bus.child.wait().unwrap();
    let err = d.thread.take().unwrap().join().unwrap().unwrap_err();
    assert!(matches!(err, DbusError::Disconnected { .. }), "{err}");
}

/// FakeApi with `ControlApi::call_start`'s default (the fake's own is
/// used above): every other method delegated.
struct DefaultCallStart(FakeApi);

impl peerd::control::ControlApi for DefaultCallStart {
    async fn status(&self) -> Result<peerd_control::StatusInfo, peerd_control::ControlError> {
        self.0.status().await
    }
    async fn peers(&self) -> Result<Vec<peerd_control::PeerInfo>, peerd_control::ControlError> {
        self.0.peers().await
    }
    async fn peer_add(
        &self,
        peer: peerd_control::NewPeer,
    ) -> Result<peerd_control::PeerInfo, peerd_control::ControlError> {
        self.0.peer_add(peer).await
    }
    async fn peer_remove(
        &self,
        name: peerd_core::PeerName,
    ) -> Result<(), peerd_control::ControlError> {
        self.0.peer_remove(name).await
    }
    async fn outbox(
        &self,
    ) -> Result<Vec<peerd_control::OutboxEntryInfo>, peerd_control::ControlError> {
        self.0.outbox().await
    }
    async fn announce(
        &self,
        peers: Vec<peerd_core::PeerName>,
    ) -> Result<Vec<peerd_core::PeerName>, peerd_control::ControlError> {
        self.0.announce(peers).await
    }
    async fn check(&self) -> Result<(), peerd_control::ControlError> {
        self.0.check().await
    }
    async fn call(
        &self,
        peer: peerd_core::PeerName,
        wait: Duration,
    ) -> Result<peerd_control::SessionInfo, peerd_control::ControlError> {
        self.0.call(peer, wait).await
    }
    async fn connect(
        &self,
        peer: peerd_core::PeerName,
    ) -> Result<peerd_control::SessionInfo, peerd_control::ControlError> {
        self.0.connect(peer).await
    }
    async fn disconnect(
        &self,
        peer: peerd_core::PeerName,
    ) -> Result<(), peerd_control::ControlError> {
        self.0.disconnect(peer).await
    }
    async fn open(
        &self,
        peer: peerd_core::PeerName,
        service: peerd_core::ServiceName,
    ) -> Result<peerd::control::PeerStream, peerd_control::ControlError> {
        self.0.open(peer, service).await
    }
    async fn link_up(&self) -> Result<peerd_control::LinkInfo, peerd_control::ControlError> {
        self.0.link_up().await
    }
    async fn link_down(&self) -> Result<peerd_control::LinkInfo, peerd_control::ControlError> {
        self.0.link_down().await
    }
    async fn link_status(&self) -> Result<peerd_control::LinkInfo, peerd_control::ControlError> {
        self.0.link_status().await
    }
    fn events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.0.events()
    }
    fn key(&self) -> peerd_control::KeyInfo {
        self.0.key()
    }
}

#[test]
fn call_start_by_default_checks_the_peer_and_queues_an_announcement() {
    use peerd::control::ControlApi;
    use peerd_control::ErrorKind;

    let api = DefaultCallStart(FakeApi::new());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        api.call_start(name("hitoshi")).await.unwrap();
        let err = api.call_start(name("me-on-phone")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NoKey);
        let err = api.call_start(name("nobody")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::UnknownPeer);
    });
    assert_eq!(api.0.logged(), ["announce hitoshi"]);
}

/// `busctl` on the test bus, as root; stdout, or panics.
fn busctl(address: &str, args: &[&str]) -> String {
    let out = Command::new("busctl")
        .arg(format!("--address={address}"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("busctl runs (package systemd)");
    assert!(
        out.status.success(),
        "busctl {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn the_busctl_examples_of_the_docs_work() {
    let d = Daemon::start(Policy::Shipped, "daemon");
    let run = |args: &[&str]| busctl(d.address(), args);
    let hitoshi = "/org/peerd/Peerd1/peer/hitoshi";
    assert_eq!(
        run(&[
            "get-property",
            DEST,
            hitoshi,
            PEER_IFACE,
            "State",
            "Addresses"
        ]),
        "s \"connected\"\nas 1 \"198.51.100.7:7447\"\n"
    );
    assert_eq!(
        run(&["get-property", DEST, ROOT, IFACE, "Addresses"]),
        "as 1 \"203.0.113.7\"\n"
    );
    for call in [
        &["Connect", "s", "hitoshi"][..],
        &["Call", "s", "hitoshi"],
        &["Disconnect", "s", "hitoshi"],
        &["Announce", "as", "0"],
        &["Announce", "as", "1", "hitoshi"],
        &["CheckMail"],
        &["LinkUp"],
        &["LinkDown"],
    ] {
        assert_eq!(run(&[&["call", DEST, ROOT, IFACE][..], call].concat()), "");
    }
    let fd = run(&[
        "call",
        DEST,
        ROOT,
        IFACE,
        "OpenStream",
        "ss",
        "hitoshi",
        "ssh",
    ]);
    assert!(fd.starts_with("h "), "{fd}");
    let key = peer_key(9).to_string();
    run(&[
        "call",
        DEST,
        ROOT,
        IFACE,
        "AddPeer",
        "sss",
        "carol",
        "carol@example.org",
        &key,
    ]);
    assert!(run(&["tree", DEST]).contains("/org/peerd/Peerd1/peer/carol"));
    run(&["call", DEST, ROOT, IFACE, "RemovePeer", "s", "carol"]);
    let members = run(&["introspect", DEST, ROOT]);
    assert!(members.contains(".OpenStream"), "{members}");
    assert_eq!(d.api.logged().len(), 11, "{:?}", d.api.logged());

    // Watching for address changes (root may monitor the bus).
    let mut monitor = Command::new("stdbuf")
        .args(["-oL", "busctl", &format!("--address={}", d.address()), "monitor"])
        .arg("--match=type='signal',sender='org.peerd.Peerd1',interface='org.peerd.Peerd1',member='AddressChanged'")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = monitor.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Sent until busctl, which gives no sign when it is ready, shows one.
    let deadline = Instant::now() + DEADLINE;
    'wait: loop {
        d.api.emit(Event::now(EventKind::AddressChanged {
            interface: Some("ppp0".into()),
            addresses: vec!["203.0.113.42".parse().unwrap()],
        }));
        while let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            if line.contains("203.0.113.42") {
                break 'wait;
            }
        }
        assert!(
            Instant::now() < deadline,
            "busctl monitor showed no AddressChanged"
        );
    }
    let _ = monitor.kill();
    let _ = monitor.wait();
}
