//! One test per rule, on small configs built from a minimal valid one.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use peerd_core::AddressClass;

use super::*;

const KEY_A: &str = "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=";
const KEY_B: &str = "gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q=";
const FINGERPRINT_A: &str = "thyx-z9tc-gz1q-i7z3";

/// The smallest valid config: the five required keys.
const MINIMAL: &[(&str, &[&str])] = &[
    ("identity", &["name = \"alice\""]),
    ("mail", &["address = \"alice@isp-a.example\""]),
    ("mail.smtp", &["host = \"smtp.isp-a.example\""]),
    (
        "mail.incoming",
        &["protocol = \"imap\"", "host = \"mail.isp-a.example\""],
    ),
];

/// The minimal config with `lines` added to their sections (a section not
/// in it is added), then `extra` appended verbatim (for [[peer]] etc.).
fn config(lines: &[(&str, &str)], extra: &str) -> String {
    let mut sections: Vec<(String, Vec<String>)> = MINIMAL
        .iter()
        .map(|(s, l)| (s.to_string(), l.iter().map(ToString::to_string).collect()))
        .collect();
    for (section, line) in lines {
        match sections.iter_mut().find(|(s, _)| s == section) {
            Some((_, l)) => l.push(line.to_string()),
            None => sections.push((section.to_string(), vec![line.to_string()])),
        }
    }
    let mut out = String::new();
    for (s, l) in sections {
        out.push_str(&format!("[{s}]\n"));
        for line in l {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push_str(extra);
    out
}

fn ok(text: &str) -> Loaded {
    match parse(text, Path::new("t.toml"), 0o600) {
        Ok(l) => l,
        Err(p) => panic!("refused:\n{p}\n--- text:\n{text}"),
    }
}

/// Every problem line (errors and warnings) for `text` in a 0644 file.
fn problems(text: &str) -> Vec<String> {
    problems_mode(text, 0o644)
}

fn problems_mode(text: &str, mode: u32) -> Vec<String> {
    match parse(text, Path::new("t.toml"), mode) {
        Ok(l) => l.warnings.iter().map(ToString::to_string).collect(),
        Err(p) => p.0.iter().map(ToString::to_string).collect(),
    }
}

/// The problems' messages only (without `t.toml:L:C: `).
fn messages(text: &str) -> Vec<String> {
    problems(text)
        .into_iter()
        .map(|l| l.splitn(4, ": ").skip(1).collect::<Vec<_>>().join(": "))
        .collect()
}

fn assert_one(text: &str, want: &str) {
    let got = problems(text);
    assert_eq!(got, [want], "--- text:\n{text}");
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle in text")
        + 1
}

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let l = ok(&config(&[], ""));
    assert!(l.warnings.is_empty());
    let c = l.config;
    assert_eq!(c.identity.name.as_str(), "alice");
    assert_eq!(
        c.identity.key_file,
        Path::new("/var/lib/peerd/identity.key")
    );
    assert_eq!(c.state.dir, Path::new("/var/lib/peerd"));
    assert_eq!(c.control.socket, Path::new("/run/peerd/control.sock"));
    assert_eq!(c.control.mode, 0o660);
    assert_eq!(c.control.group, "peerd");
    assert_eq!(c.dbus.bus, DbusBus::System);
    assert_eq!(c.link.driver, LinkDriver::External);
    assert_eq!(c.link.interface, WatchedInterface::Named("ppp0".into()));
    assert_eq!(c.link.families, [Family::Ipv4, Family::Ipv6]);
    assert_eq!(c.link.idle_hangup, Duration::from_secs(300));
    assert!(!c.link.on_demand);
    assert_eq!(c.link.check_interval, Duration::from_secs(900));
    assert_eq!(c.link.max_failures, 5);
    assert_eq!(c.link.pppd, Path::new("/usr/sbin/pppd"));
    assert_eq!(c.link.peer, "isp-a");
    assert_eq!(c.link.device, Path::new("/dev/ttyUSB0"));
    assert_eq!(c.link.baud, 115_200);
    assert_eq!(c.link.number, "*99#");
    assert_eq!(c.link.init, ["ATZ", "ATE0V1"]);
    assert_eq!(c.mail.address.as_str(), "alice@isp-a.example");
    assert_eq!(c.mail.smtp.host, "smtp.isp-a.example");
    assert_eq!(c.mail.smtp.port, 587);
    assert_eq!(c.mail.smtp.security, Security::StartTls);
    assert!(c.mail.smtp.login.is_none());
    assert!(c.mail.smtp.ca_file.is_none());
    let inc = &c.mail.incoming;
    assert_eq!(inc.protocol, IncomingProtocol::Imap);
    assert_eq!(inc.port, 993);
    assert_eq!(inc.security, Security::Tls);
    assert_eq!(inc.poll_interval, Duration::from_secs(60));
    assert_eq!(inc.folders, ["INBOX", "Junk"]);
    assert_eq!(inc.max_message_size, 256 * 1024);
    assert_eq!(inc.processed, Processed::Delete);
    let a = &c.announce;
    assert!(a.on_change);
    assert_eq!(a.valid_for, Duration::from_secs(3600));
    assert_eq!(a.debounce, Duration::from_secs(2));
    assert_eq!(
        a.publish,
        [
            AddressClass::Public,
            AddressClass::Cgnat,
            AddressClass::Private
        ]
    );
    assert_eq!(a.ipv6, Ipv6Policy::Stable);
    assert_eq!(a.resend, Duration::from_secs(600));
    assert_eq!(a.max_per_hour, 6);
    assert_eq!(a.clock_skew, Duration::from_secs(300));
    assert_eq!(a.hooks_dir, Path::new("/etc/peerd/hooks.d"));
    assert_eq!(c.listen.port, 7447);
    assert_eq!(
        c.listen.addresses,
        [
            "0.0.0.0".parse::<std::net::IpAddr>().unwrap(),
            "::".parse().unwrap()
        ]
    );
    assert_eq!(c.listen.keepalive, Duration::from_secs(15));
    assert_eq!(c.listen.idle_timeout, Duration::from_secs(60));
    assert!(c.peers.is_empty() && c.services.is_empty());
}

#[test]
fn the_shipped_example_is_valid_without_warnings() {
    let text = include_str!("../../../config/peerd.toml");
    let l = ok(text);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let c = l.config;
    assert_eq!(c.peers.len(), 2);
    let hitoshi = c.peer("hitoshi").unwrap();
    assert_eq!(hitoshi.format, PeerFormat::Sealed);
    assert!(hitoshi.public_key.is_some() && hitoshi.auto_connect);
    let phone = c.peer("me-on-phone").unwrap();
    assert_eq!(phone.format, PeerFormat::Plain);
    assert!(phone.public_key.is_none() && !phone.auto_connect);
    let ssh = c.service("ssh").unwrap();
    assert_eq!(ssh.target, "127.0.0.1:22".parse().unwrap());
    assert_eq!(ssh.peers, std::slice::from_ref(&hitoshi.name));
    // It shows every key of the schema (commented out or not).
    for (section, keys) in walk::SCHEMA {
        for key in *keys {
            let shown = text.lines().any(|l| {
                let l = l.trim_start_matches("# ").trim_start();
                l.starts_with(&format!("{key} ="))
                    || l.starts_with(&format!("[{section}.{key}]"))
                    || l.starts_with(&format!("[{key}]"))
                    || l.starts_with(&format!("[[{key}]]"))
            });
            assert!(shown, "[{section}] {key} is not in config/peerd.toml");
        }
    }
}

#[test]
fn every_missing_required_key_is_reported() {
    assert_eq!(
        problems(""),
        [
            "t.toml:1:1: missing required key `name` in [identity]",
            "t.toml:1:1: missing required key `address` in [mail]",
            "t.toml:1:1: missing required key `host` in [mail.smtp]",
            "t.toml:1:1: missing required key `protocol` in [mail.incoming]",
            "t.toml:1:1: missing required key `host` in [mail.incoming]",
        ]
    );
    let text = "[identity]\n[mail]\naddress = \"a@b.example\"\n[mail.smtp]\n[mail.incoming]\nhost = \"h\"\n";
    assert_eq!(
        problems(text),
        [
            "t.toml:1:1: missing required key `name` in [identity]",
            "t.toml:4:1: missing required key `host` in [mail.smtp]",
            "t.toml:5:1: missing required key `protocol` in [mail.incoming]",
        ]
    );
}

#[test]
fn unknown_keys_get_hints() {
    let text = config(
        &[
            ("mail.smtp", "pasword_file = \"/x\""),
            ("mail.smtp", "poll_interval = \"1m\""),
        ],
        "[mail.foo]\nx = 1\n[peers]\nname = \"x\"\n",
    );
    let msgs = messages(&text);
    assert_eq!(
        msgs,
        [
            "unknown key `pasword_file` in [mail.smtp]; did you mean `password_file`?",
            "unknown key `poll_interval` in [mail.smtp]; it belongs in [mail.incoming]",
            "unknown section [mail.foo]",
            "unknown section [peers]; did you mean [[peer]]?",
        ]
    );
    assert_eq!(
        messages(&format!("verbose = true\n{}", config(&[], ""))),
        ["unknown key `verbose`: keys belong in a section such as [identity]"]
    );
    assert_eq!(
        messages(&format!("key_file = \"/k\"\n{}", config(&[], ""))),
        ["`key_file` must be inside a section: it belongs in [identity]"]
    );
    // Unknown keys inside peers and services too, and odd quoted keys are escaped.
    let text = config(
        &[],
        &format!(
            "[[peer]]\nname = \"h\"\nemail = \"h@x.example\"\npublic_key = \"{KEY_A}\"\n\"evil\\nkey\" = 1\n"
        ),
    );
    assert_eq!(messages(&text), ["unknown key `evil\\nkey` in [[peer]]"]);
}

#[test]
fn wrong_types_point_at_the_value_with_a_hint() {
    let text = config(
        &[
            ("listen", "port = \"7447\""),
            ("announce", "on_change = \"true\""),
            ("announce", "valid_for = 3600"),
            ("link", "families = \"ipv4\""),
            ("dbus", "bus = 1"),
        ],
        "",
    );
    let got = problems(&text);
    let l = |n: &str| line_of(&text, n);
    assert_eq!(
        got,
        [
            format!(
                "t.toml:{}:8: `listen.port`: expected an integer, found a string: write 7447 without quotes",
                l("port = \"7447\"")
            ),
            format!(
                "t.toml:{}:13: `announce.on_change`: expected a boolean, found a string: write true without quotes",
                l("on_change")
            ),
            format!(
                "t.toml:{}:13: `announce.valid_for`: expected a duration string like \"30s\" or \"5m\", found an integer: write \"3600s\" for seconds",
                l("valid_for")
            ),
            format!(
                "t.toml:{}:12: `link.families`: expected an array, found a string: write [\"ipv4\"]",
                l("families")
            ),
            format!(
                "t.toml:{}:7: `dbus.bus`: expected a string, found an integer",
                l("bus = 1")
            ),
        ]
    );
    let rest = config(&[], "").replace("[identity]\nname = \"alice\"\n", "");
    assert_eq!(
        messages(&format!("[identity]\nname = [\"a\"]\n{rest}")),
        ["`identity.name`: expected a string, found an array"]
    );
    assert_eq!(
        messages(&format!("identity = 5\n{rest}")),
        ["`identity` must be a table ([identity]), found an integer"]
    );
    assert_eq!(
        messages(&format!("[[identity]]\nname = \"a\"\n{rest}")),
        ["`identity` must be a single table: write [identity], once"]
    );
}

#[test]
fn peer_must_be_an_array_of_tables() {
    let text = config(
        &[],
        &format!("[peer]\nname = \"h\"\nemail = \"h@x.example\"\npublic_key = \"{KEY_A}\"\n"),
    );
    assert_eq!(
        messages(&text),
        ["write [[peer]] (one per peer), not [peer]"]
    );
    let text = format!("peer = [1]\n{}", config(&[], ""));
    assert_eq!(
        messages(&text),
        ["each `peer` must be a table, found an integer"]
    );
}

#[test]
fn durations_sizes_and_modes() {
    for (line, section, want) in [
        (
            "valid_for = \"soon\"",
            "announce",
            "`announce.valid_for`: invalid duration \"soon\": expected a duration like \"30s\", \"5m\" or \"1h\"",
        ),
        (
            "valid_for = \"30s\"",
            "announce",
            "`announce.valid_for`: 30s is out of range: use between 1m and 7days",
        ),
        (
            "valid_for = \"8d\"",
            "announce",
            "`announce.valid_for`: 8days is out of range: use between 1m and 7days",
        ),
        (
            "debounce = \"1h\"",
            "announce",
            "`announce.debounce`: 1h is out of range: use at most 10m",
        ),
        (
            "check_interval = \"10s\"",
            "link",
            "`link.check_interval`: 10s is out of range: use at least 1m",
        ),
        (
            "poll_interval = \"1s\"",
            "mail.incoming",
            "`mail.incoming.poll_interval`: 1s is out of range: use at least 10s",
        ),
        (
            "max_message_size = \"256K\"",
            "mail.incoming",
            "`mail.incoming.max_message_size`: invalid size \"256K\": expected a size like \"256KiB\" or \"1MiB\" (units: B, KiB, MiB, GiB, kB, MB, GB)",
        ),
        (
            "max_message_size = \"1KiB\"",
            "mail.incoming",
            "`mail.incoming.max_message_size`: use a size from \"16KiB\" (announcement mails are a few KiB) to \"1GiB\"",
        ),
        (
            "mode = 660",
            "control",
            "`control.mode`: write the mode as an octal string, like \"0660\" (a decimal number is not a mode)",
        ),
        (
            "mode = \"4770\"",
            "control",
            "`control.mode`: mode 4770 has setuid, setgid or sticky bits; use at most \"0777\"",
        ),
        (
            "mode = \"rw-rw----\"",
            "control",
            "`control.mode`: invalid mode \"rw-rw----\": expected octal permission bits like \"0660\"",
        ),
    ] {
        assert_eq!(messages(&config(&[(section, line)], "")), [want], "{line}");
    }
    let c = ok(&config(
        &[
            ("control", "mode = 0o640"),
            ("mail.incoming", "max_message_size = 65536"),
            ("announce", "debounce = \"500ms\""),
        ],
        "",
    ))
    .config;
    assert_eq!(c.control.mode, 0o640);
    assert_eq!(c.mail.incoming.max_message_size, 65536);
    assert_eq!(c.announce.debounce, Duration::from_millis(500));
}

#[test]
fn numbers_out_of_range() {
    for (section, line, want) in [
        (
            "listen",
            "port = 0",
            "`listen.port`: 0 is out of range: use 1 to 65535",
        ),
        (
            "listen",
            "port = 70000",
            "`listen.port`: 70000 is out of range: use 1 to 65535",
        ),
        (
            "listen",
            "port = 99999999999999999999999",
            "`listen.port`: the number is too large",
        ),
        (
            "listen",
            "port = 7447.0",
            "`listen.port`: expected an integer, found a float",
        ),
        (
            "announce",
            "max_per_hour = 0",
            "`announce.max_per_hour`: 0 is out of range: use 1 to 3600",
        ),
        (
            "link",
            "max_failures = -1",
            "`link.max_failures`: -1 is out of range: use 0 to 10000",
        ),
        (
            "link",
            "baud = 115201",
            "`link.baud`: 115201 is not a standard serial rate (like 9600, 57600, 115200, 460800)",
        ),
        (
            "mail.smtp",
            "port = 0",
            "`mail.smtp.port`: 0 is out of range: use 1 to 65535",
        ),
    ] {
        assert_eq!(messages(&config(&[(section, line)], "")), [want], "{line}");
    }
}

#[test]
fn choices_list_what_is_allowed() {
    for (section, line, want) in [
        (
            "dbus",
            "bus = \"user\"",
            "`dbus.bus`: unknown value \"user\": expected \"system\", \"session\" or \"none\"",
        ),
        (
            "link",
            "driver = \"ppp\"",
            "`link.driver`: unknown value \"ppp\": expected \"external\", \"pppd\" or \"modem\"",
        ),
        (
            "mail.smtp",
            "security = \"ssl\"",
            "`mail.smtp.security`: unknown value \"ssl\": expected \"starttls\", \"tls\" or \"none\"",
        ),
        (
            "announce",
            "ipv6 = \"privacy\"",
            "`announce.ipv6`: unknown value \"privacy\": expected \"stable\", \"temporary\" or \"all\"",
        ),
        (
            "mail.incoming",
            "processed = \"trash\"",
            "`mail.incoming.processed`: unknown value \"trash\": expected \"delete\", \"keep\" or \"move:<folder>\"",
        ),
    ] {
        assert_eq!(messages(&config(&[(section, line)], "")), [want], "{line}");
    }
    let text = "[identity]\nname = \"a\"\n[mail]\naddress = \"a@b.example\"\n[mail.smtp]\nhost = \"h\"\n[mail.incoming]\nprotocol = \"pop\"\nhost = \"h\"\n";
    assert_eq!(
        messages(text),
        ["`mail.incoming.protocol`: unknown value \"pop\": expected \"imap\" or \"pop3\""]
    );
}

#[test]
fn lists_families_publish_addresses() {
    for (section, line, want) in [
        (
            "link",
            "families = []",
            vec!["`link.families`: the list is empty: give at least one value"],
        ),
        (
            "link",
            "families = [\"ipv4\", \"ipv4\"]",
            vec!["`link.families`: listed twice"],
        ),
        (
            "link",
            "families = [\"ipv5\", 4]",
            vec![
                "`link.families`: unknown value \"ipv5\": expected \"ipv4\" or \"ipv6\"",
                "`link.families`: expected a string, found an integer",
            ],
        ),
        (
            "announce",
            "publish = []",
            vec!["`announce.publish`: the list is empty: give at least one value"],
        ),
        (
            "announce",
            "publish = [\"public\", \"link-local\"]",
            vec![
                "`announce.publish`: link-local addresses are never announced (they mean nothing off the link); use \"public\", \"cgnat\" or \"private\"",
            ],
        ),
        (
            "announce",
            "publish = [\"loopback\"]",
            vec![
                "`announce.publish`: loopback addresses are never announced; use \"public\", \"cgnat\" or \"private\"",
            ],
        ),
        (
            "announce",
            "publish = [\"private\", \"private\"]",
            vec!["`announce.publish`: listed twice"],
        ),
        (
            "listen",
            "addresses = []",
            vec!["`listen.addresses`: the list is empty: give at least one value"],
        ),
        (
            "listen",
            "addresses = [\"0.0.0.0\", \"localhost\", \"ff02::1\"]",
            vec![
                "`listen.addresses`: \"localhost\" is not an IP address (like \"0.0.0.0\", \"::\" or \"192.0.2.1\")",
                "`listen.addresses`: cannot listen on ff02::1: it is a multicast or broadcast address",
            ],
        ),
        (
            "mail.incoming",
            "folders = [\"INBOX\", \"\"]",
            vec!["`mail.incoming.folders`: a folder name has 1 to 255 bytes"],
        ),
    ] {
        assert_eq!(messages(&config(&[(section, line)], "")), want, "{line}");
    }
    let c = ok(&config(
        &[
            ("announce", "publish = [\"public\"]"),
            ("link", "families = [\"ipv6\"]"),
            ("mail.incoming", "folders = [\"INBOX\"]"),
        ],
        "",
    ))
    .config;
    assert_eq!(c.announce.publish, [AddressClass::Public]);
    assert_eq!(c.link.families, [Family::Ipv6]);
    assert_eq!(c.mail.incoming.folders, ["INBOX"]);
}

#[test]
fn link_rules() {
    let text = config(&[("link", "on_demand = true")], "");
    assert_one(
        &text,
        &format!(
            "t.toml:{}:1: `link.on_demand` needs a link peerd dials (driver = \"pppd\" or \"modem\"); with driver = \"external\" someone else brings the network up",
            line_of(&text, "on_demand")
        ),
    );
    let c = ok(&config(
        &[("link", "on_demand = true"), ("link", "driver = \"pppd\"")],
        "",
    ))
    .config;
    assert!(c.link.on_demand);
    assert_eq!(c.link.driver, LinkDriver::Pppd);

    for (line, want) in [
        (
            "interface = \"eth0:1\"",
            "`link.interface`: \"eth0:1\" is not a network interface name: no '/', ':', spaces or control characters (or write \"auto\" for the default-route interface)",
        ),
        (
            "interface = \"a-very-long-name0\"",
            "`link.interface`: \"a-very-long-name0\" is not a network interface name: at most 15 bytes (or write \"auto\" for the default-route interface)",
        ),
        (
            "number = \"*99#;\"",
            "`link.number`: \"*99#;\" is not a number to dial: use 0-9, *, #, +, ',', W, P, T, !, @, A-D or '-' (at most 40)",
        ),
        (
            "init = [\"ATZ\", \"ATE0\\r\\nATD123\"]",
            "`link.init`: a modem command cannot contain control characters like '\\r'",
        ),
        (
            "init = [\"Z\"]",
            "`link.init`: \"Z\" is not a modem command: each starts with \"AT\"",
        ),
        (
            "peer = \"../../etc/passwd\"",
            "`link.peer`: \"../../etc/passwd\" is not a pppd peer: write the name of a file in /etc/ppp/peers, like \"isp-a\"",
        ),
        (
            "pppd = \"pppd\"",
            "`link.pppd`: \"pppd\" is not an absolute path: write the full path, starting with /",
        ),
    ] {
        assert_eq!(messages(&config(&[("link", line)], "")), [want], "{line}");
    }
    let c = ok(&config(&[("link", "interface = \"auto\"")], "")).config;
    assert_eq!(c.link.interface, WatchedInterface::Auto);
}

#[test]
fn listen_keepalive_must_be_shorter_than_idle_timeout() {
    let text = config(&[("listen", "keepalive = \"60s\"")], "");
    assert_eq!(
        messages(&text),
        [
            "`listen.keepalive` (1m) must be shorter than `listen.idle_timeout` (1m), or sessions die between keepalives"
        ]
    );
    // Only idle_timeout written: the problem points at it.
    let text = config(&[("listen", "idle_timeout = \"10s\"")], "");
    assert_eq!(
        problems(&text),
        [format!(
            "t.toml:{}:1: `listen.keepalive` (15s) must be shorter than `listen.idle_timeout` (10s), or sessions die between keepalives",
            line_of(&text, "idle_timeout")
        )]
    );
    ok(&config(
        &[
            ("listen", "keepalive = \"5s\""),
            ("listen", "idle_timeout = \"10s\""),
        ],
        "",
    ));
}

#[test]
fn names_and_addresses_are_checked() {
    let text = "[identity]\nname = \"Alice Smith\"\n[mail]\naddress = \"Alice <alice@example.org>\"\n[mail.smtp]\nhost = \"smtp example\"\n[mail.incoming]\nprotocol = \"imap\"\nhost = \"\"\n";
    assert_eq!(
        messages(text),
        [
            "`identity.name`: \"Alice Smith\" cannot be this host's name: a name may contain only a-z, 0-9, '_' and '-', not 'A'",
            "`mail.address`: \"Alice <alice@example.org>\" is not a mail address: a mail address cannot contain ' '",
            "`mail.smtp.host`: \"smtp example\" is not a host name or IP address",
            "`mail.incoming.host`: \"\" is not a host name or IP address",
        ]
    );
    let long = format!("{}@example.org", "a".repeat(250));
    assert!(
        messages(&config(
            &[],
            &format!("[[peer]]\nname = \"x\"\nemail = \"{long}\"\nformat = \"plain\"\n")
        ))[0]
            .contains("at most 254 bytes")
    );
    let text = config(
        &[],
        "[[peer]]\nname = \"x\"\nemail = \"x@y\\u000d\\u000aBcc: all@z\"\nformat = \"plain\"\n",
    );
    assert_eq!(
        messages(&text),
        [
            "`peer.email`: \"x@y\\r\\nBcc: all@z\" is not a mail address: a mail address cannot contain '\\r'"
        ]
    );
}

fn peer(name: &str, body: &str) -> String {
    format!("[[peer]]\nname = \"{name}\"\nemail = \"{name}@isp-b.example\"\n{body}")
}

#[test]
fn sealed_and_plain_peers() {
    // The default format is sealed, which needs a key: reported at the name.
    let text = config(&[], &peer("hitoshi", ""));
    assert_one(
        &text,
        &format!(
            "t.toml:{}:1: peer `hitoshi` has no `public_key`: paste the peer's key (the first line of its `peerd pubkey`), or set format = \"plain\" for someone without peerd",
            line_of(&text, "name = \"hitoshi\"")
        ),
    );
    // An explicit format = "sealed": reported at `format`.
    let text = config(&[], &peer("hitoshi", "format = \"sealed\"\n"));
    assert!(problems(&text)[0].starts_with(&format!(
        "t.toml:{}:1: peer `hitoshi` has no",
        line_of(&text, "format")
    )));
    // A plain peer with a key, auto_connect or accept_unsigned.
    let text = config(
        &[],
        &peer(
            "phone",
            &format!("format = \"plain\"\npublic_key = \"{KEY_A}\"\nauto_connect = true\n"),
        ),
    );
    assert_eq!(
        messages(&text),
        [
            "peer `phone`: `public_key` is not used with format = \"plain\"; remove it, or remove `format` to send sealed announcements",
            "peer `phone`: a plain peer has no key to connect with; remove `auto_connect`",
        ]
    );
    let text = config(
        &[],
        &peer("phone", "format = \"plain\"\naccept_unsigned = true\n"),
    );
    assert_eq!(
        messages(&text),
        [
            "peer `phone`: `accept_unsigned` needs a `public_key` (the connection a hint leads to is authenticated with it)"
        ]
    );
    // A sealed peer with accept_unsigned and a key is fine.
    let c = ok(&config(
        &[],
        &peer(
            "h",
            &format!("public_key = \"{KEY_A}\"\naccept_unsigned = true\nannounce = false\n"),
        ),
    ))
    .config;
    let h = &c.peers[0];
    assert!(h.accept_unsigned && !h.announce && h.auto_connect);
    assert_eq!(h.public_key.unwrap().to_string(), KEY_A);
    let c = ok(&config(&[], &peer("phone", "format = \"plain\"\n"))).config;
    assert!(!c.peers[0].auto_connect && c.peers[0].public_key.is_none());
}

#[test]
fn public_key_errors_use_the_core_messages() {
    for (key, want) in [
        (
            FINGERPRINT_A,
            "`peer.public_key`: this is a key fingerprint, not a key: paste the full public key (the first line of `peerd pubkey`)",
        ),
        (
            "not a key",
            "`peer.public_key`: a public key is 44 characters of base64 (the first line of `peerd pubkey`)",
        ),
        (
            "AAAA",
            "`peer.public_key`: a public key is 32 bytes, this one decodes to 3",
        ),
        (
            "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "`peer.public_key`: a weak (small-order) Ed25519 key is refused",
        ),
    ] {
        let text = config(&[], &peer("h", &format!("public_key = \"{key}\"\n")));
        // Only the key's own problem: no "has no public_key" on top.
        assert_eq!(messages(&text), [want], "{key}");
    }
}

#[test]
fn duplicate_peers_and_keys_are_reported_at_the_second() {
    let text = config(
        &[],
        &format!(
            "{}{}{}",
            peer("hitoshi", &format!("public_key = \"{KEY_A}\"\n")),
            peer("hitoshi", &format!("public_key = \"{KEY_B}\"\n")),
            peer("other", &format!("public_key = \"{KEY_A}\"\n")),
        ),
    );
    let first = line_of(&text, "name = \"hitoshi\"");
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            l.starts_with("name = \"hitoshi\"")
                || l.starts_with(&format!("public_key = \"{KEY_A}\""))
        })
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        problems(&text),
        [
            format!(
                "t.toml:{}:1: peer `hitoshi` is defined twice (first at line {first})",
                lines[2]
            ),
            format!(
                "t.toml:{}:1: peer `other` has the same public_key as peer `hitoshi` (line {}); every host has its own key",
                lines[3], lines[1]
            ),
        ]
    );
}

#[test]
fn services() {
    let peers = format!(
        "{}{}",
        peer("hitoshi", &format!("public_key = \"{KEY_A}\"\n")),
        peer("phone", "format = \"plain\"\n")
    );
    let text = config(
        &[],
        &format!(
            "{peers}[[service]]\nname = \"ssh\"\ntarget = \"127.0.0.1:22\"\npeers = [\"hitoshi\", \"carol\", \"phone\", \"hitoshi\", \"Bad\"]\n\
             [[service]]\nname = \"ssh\"\ntarget = \"localhost:22\"\npeers = []\n[[service]]\nname = \"web\"\n"
        ),
    );
    assert_eq!(
        messages(&text),
        [
            "`service.peers`: \"Bad\" is not a valid peer name: a name may contain only a-z, 0-9, '_' and '-', not 'B'",
            "service `ssh` is defined twice (first at line 19)",
            "`service.target`: \"localhost:22\" is not an address and port like \"127.0.0.1:22\" or \"[::1]:22\"",
            "warning: service `ssh`: `peers` is empty, so no peer can open it",
            "missing required key `target` in [[service]]",
            "missing required key `peers` in [[service]]",
        ]
    );
    let text = config(
        &[],
        &format!(
            "{peers}[[service]]\nname = \"ssh\"\ntarget = \"[::1]:22\"\npeers = [\"hitoshi\", \"carol\", \"phone\", \"hitoshi\"]\n\
             [[service]]\nname = \"web\"\ntarget = \"127.0.0.1:80\"\npeers = []\n"
        ),
    );
    let at = line_of(&text, "peers = [\"hitoshi\", \"carol\"");
    assert_eq!(
        problems(&text),
        [
            format!(
                "t.toml:{at}:21: `service.peers`: service `ssh` names unknown peer `carol` (no [[peer]] with that name in this file)"
            ),
            format!(
                "t.toml:{at}:30: `service.peers`: peer `phone` is plain (it has no key), so it cannot open service `ssh`"
            ),
            format!("t.toml:{at}:39: `service.peers`: `hitoshi` is listed twice"),
            format!(
                "t.toml:{}:1: warning: service `web`: `peers` is empty, so no peer can open it",
                at + 4
            ),
        ]
    );
    let c = ok(&config(
        &[],
        &format!(
            "{peers}[[service]]\nname = \"ssh\"\ntarget = \"[::1]:22\"\npeers = [\"hitoshi\"]\n"
        ),
    ))
    .config;
    assert_eq!(c.services[0].peers[0].as_str(), "hitoshi");
}

#[test]
fn clear_text_only_to_loopback() {
    let text = config(
        &[
            ("mail.smtp", "security = \"none\""),
            ("mail.incoming", "security = \"none\""),
        ],
        "",
    );
    assert_eq!(
        messages(&text),
        [
            "`mail.smtp.security`: \"none\" sends the password and mail in clear text; it is only allowed to a loopback host (localhost, 127.0.0.0/8, ::1), not \"smtp.isp-a.example\"",
            "`mail.incoming.security`: \"none\" sends the password and mail in clear text; it is only allowed to a loopback host (localhost, 127.0.0.0/8, ::1), not \"mail.isp-a.example\"",
        ]
    );
    for host in ["localhost", "127.0.0.1", "127.0.0.53", "::1", "[::1]"] {
        let text = format!(
            "[identity]\nname = \"a\"\n[mail]\naddress = \"a@b.example\"\n[mail.smtp]\nhost = \"{host}\"\nsecurity = \"none\"\n\
             [mail.incoming]\nprotocol = \"pop3\"\nhost = \"{host}\"\nsecurity = \"none\"\n"
        );
        let c = ok(&text).config;
        assert_eq!(
            (c.mail.smtp.port, c.mail.incoming.port),
            (25, 110),
            "{host}"
        );
    }
}

#[test]
fn ports_default_from_protocol_and_security() {
    let cases = [
        ("imap", "tls", 993),
        ("imap", "starttls", 143),
        ("pop3", "tls", 995),
        ("pop3", "starttls", 110),
    ];
    for (proto, sec, port) in cases {
        let text = format!(
            "[identity]\nname = \"a\"\n[mail]\naddress = \"a@b.example\"\n[mail.smtp]\nhost = \"s\"\nsecurity = \"tls\"\n\
             [mail.incoming]\nprotocol = \"{proto}\"\nhost = \"m\"\nsecurity = \"{sec}\"\n"
        );
        let c = ok(&text).config;
        assert_eq!(c.mail.incoming.port, port, "{proto} {sec}");
        assert_eq!(c.mail.smtp.port, 465);
    }
    let c = ok(&config(&[("mail.smtp", "port = 2525")], "")).config;
    assert_eq!(c.mail.smtp.port, 2525);
}

#[test]
fn a_port_of_the_other_security_is_a_warning() {
    let text = config(
        &[
            ("mail.smtp", "security = \"tls\""),
            ("mail.smtp", "port = 587"),
            ("mail.incoming", "port = 143"),
        ],
        "",
    );
    let l = ok(&text);
    let w: Vec<String> = l.warnings.iter().map(|p| p.message.clone()).collect();
    assert_eq!(
        w,
        [
            "`mail.smtp.port`: port 587 expects a plain start (security = \"starttls\"), but security = \"tls\"; use port 465, or change `security`",
            "`mail.incoming.port`: port 143 expects a plain start (security = \"starttls\"), but security = \"tls\"; use port 993, or change `security`",
        ]
    );
    assert!(l.warnings.iter().all(|p| p.severity == Severity::Warning));
}

#[test]
fn pop3_has_no_folders() {
    let text = "[identity]\nname = \"a\"\n[mail]\naddress = \"a@b.example\"\n[mail.smtp]\nhost = \"s\"\n\
                [mail.incoming]\nprotocol = \"pop3\"\nhost = \"m\"\nfolders = [\"INBOX\"]\nprocessed = \"move:Done\"\n";
    assert_eq!(
        problems(text),
        [
            "t.toml:10:1: `mail.incoming.folders` is for IMAP only (POP3 has one mailbox): remove it, or use protocol = \"imap\"",
            "t.toml:11:1: `mail.incoming.processed`: \"move:<folder>\" needs IMAP (POP3 has no folders); use \"delete\" or \"keep\"",
        ]
    );
    let c = ok(&text.replace(
        "folders = [\"INBOX\"]\nprocessed = \"move:Done\"\n",
        "processed = \"keep\"\n",
    ))
    .config;
    assert!(c.mail.incoming.folders.is_empty());
    assert_eq!(c.mail.incoming.processed, Processed::Keep);
    assert_eq!(
        messages(&config(&[("mail.incoming", "processed = \"move:\"")], "")),
        ["`mail.incoming.processed`: \"move:\" needs a folder, like \"move:peerd\""]
    );
    let c = ok(&config(
        &[("mail.incoming", "processed = \"move:Archive/peerd\"")],
        "",
    ))
    .config;
    assert_eq!(
        c.mail.incoming.processed,
        Processed::Move("Archive/peerd".into())
    );
}

#[test]
fn login_needs_username_and_exactly_one_password_source() {
    let text = config(&[("mail.smtp", "username = \"alice\"")], "");
    assert_eq!(
        messages(&text),
        [
            "`mail.smtp.username` is set but there is no password: add `password_file` (or `password_command`)"
        ]
    );
    let text = config(
        &[("mail.incoming", "password_command = \"pass show imap\"")],
        "",
    );
    assert_eq!(
        messages(&text),
        ["`mail.incoming.password_command` is set but `username` is missing"]
    );
    let text = config(
        &[
            ("mail.smtp", "username = \"alice\""),
            ("mail.smtp", "password_command = \"pass show smtp\""),
            ("mail.smtp", "password = \"hunter2\""),
            (
                "mail.smtp",
                "password_file = \"/nonexistent/peerd/smtp.pass\"",
            ),
        ],
        "",
    );
    let got = problems_mode(&text, 0o600);
    assert_eq!(
        got.iter()
            .map(|l| l.splitn(4, ": ").skip(1).collect::<Vec<_>>().join(": "))
            .collect::<Vec<_>>(),
        [
            "`mail.smtp.password`: give only one of `password`, `password_file` and `password_command`",
            "`mail.smtp.password_file`: give only one of `password`, `password_file` and `password_command`",
            "warning: `mail.smtp.password_file`: cannot read /nonexistent/peerd/smtp.pass: it does not exist; fine if it only exists inside the service (systemd LoadCredential=)",
        ]
    );
    assert!(!got.concat().contains("hunter2"));
    let c = ok(&config(
        &[
            ("mail.smtp", "username = \"alice\""),
            ("mail.smtp", "password_command = \"pass show smtp\""),
        ],
        "",
    ))
    .config;
    let login = c.mail.smtp.login.unwrap();
    assert_eq!(login.username, "alice");
    assert!(matches!(login.password, Secret::Command(ref c) if c == "pass show smtp"));
    assert_eq!(
        messages(&config(
            &[
                ("mail.smtp", "username = \"alice\""),
                ("mail.smtp", "password_command = \" \"")
            ],
            ""
        )),
        ["`mail.smtp.password_command`: the command is empty"]
    );
}

#[test]
fn inline_password_only_in_a_private_file_and_never_shown() {
    let text = config(
        &[
            ("mail.smtp", "username = \"alice\""),
            ("mail.smtp", "password = \"hunter2\""),
        ],
        "",
    );
    for mode in [0o644, 0o640, 0o604, 0o440] {
        let got = problems_mode(&text, mode);
        assert_eq!(
            got,
            [format!(
                "t.toml:{}:1: `mail.smtp.password`: an inline password needs a config file only its owner can read, and this one has mode {mode:04o}: chmod 600 the file, or use `password_file` or `password_command`",
                line_of(&text, "password =")
            )]
        );
    }
    for mode in [0o600, 0o400] {
        let l = parse(&text, Path::new("t.toml"), mode).unwrap();
        let login = l.config.mail.smtp.login.clone().unwrap();
        assert_eq!(login.password.read().unwrap().as_str(), "hunter2");
        let debug = format!("{:?}", l.config);
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("Inline(<redacted>)"));
    }
    // A wrong type or an empty password: the value is never echoed.
    let text = config(
        &[
            ("mail.smtp", "username = \"alice\""),
            ("mail.smtp", "password = 123456"),
        ],
        "",
    );
    assert_eq!(
        messages(&text),
        ["`mail.smtp.password`: expected a string, found an integer"]
    );
    let text = config(
        &[
            ("mail.smtp", "username = \"alice\""),
            ("mail.smtp", "password = \"\""),
        ],
        "",
    );
    assert_eq!(problems_mode(&text, 0o600).len(), 1);
}

#[test]
fn password_file_permissions_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("smtp.pass");
    fs::write(&pass, "hunter2\n").unwrap();
    let text = config(
        &[
            ("mail.smtp", "username = \"alice\""),
            (
                "mail.smtp",
                &format!("password_file = \"{}\"", pass.display()),
            ),
        ],
        "",
    );
    fs::set_permissions(&pass, fs::Permissions::from_mode(0o600)).unwrap();
    let l = ok(&text);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let Secret::File(ref p) = l.config.mail.smtp.login.as_ref().unwrap().password else {
        panic!("not a file secret")
    };
    assert_eq!(p, &pass);

    fs::set_permissions(&pass, fs::Permissions::from_mode(0o644)).unwrap();
    let l = ok(&text);
    assert_eq!(
        l.warnings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [format!(
            "t.toml:{}:1: warning: `mail.smtp.password_file`: {} can be read by group or others (mode 0644): chmod 600 it",
            line_of(&text, "password_file"),
            pass.display()
        )]
    );
    assert!(!format!("{:?}", l.warnings).contains("hunter2"));

    let text = text.replace(
        &pass.display().to_string(),
        &dir.path().display().to_string(),
    );
    assert!(
        ok(&text).warnings[0]
            .message
            .ends_with("is not a regular file")
    );
    assert_eq!(
        messages(&config(
            &[
                ("mail.smtp", "username = \"a\""),
                ("mail.smtp", "password_file = \"smtp.pass\"")
            ],
            ""
        )),
        [
            "`mail.smtp.password_file`: \"smtp.pass\" is not an absolute path: write the full path, starting with /"
        ]
    );
}

#[test]
fn ca_file_that_cannot_be_read_is_a_warning() {
    let l = ok(&config(
        &[("mail.incoming", "ca_file = \"/nonexistent/peerd/ca.pem\"")],
        "",
    ));
    assert_eq!(
        l.warnings[0].message,
        "`mail.incoming.ca_file`: cannot read /nonexistent/peerd/ca.pem: it does not exist"
    );
    assert_eq!(
        l.config.mail.incoming.ca_file.as_deref(),
        Some(Path::new("/nonexistent/peerd/ca.pem"))
    );
}

#[test]
fn control_socket_and_group() {
    let long = format!("/run/{}", "s".repeat(110));
    for (line, want) in [
        (format!("socket = \"{long}\""), "`control.socket`: a socket path has at most 107 bytes, this one has 115".to_owned()),
        ("group = \"peer d\"".to_owned(), "`control.group`: \"peer d\" is not a group name: no ':', ',', '/', spaces or control characters".to_owned()),
        ("group = \"\"".to_owned(), "`control.group`: \"\" is not a group name (1 to 32 characters, not starting with '-')".to_owned()),
    ] {
        assert_eq!(messages(&config(&[("control", &line)], "")), [want], "{line}");
    }
}

#[test]
fn syntax_errors_are_all_reported_and_stop_there() {
    let text = "[identity]\nname = alice\n[mail\naddress = \"a@b\"\n[identity]\nbogus = 1\n";
    assert_eq!(
        problems(text),
        [
            "t.toml:2:8: string values must be quoted, expected literal string",
            "t.toml:3:6: unclosed table, expected `]`",
            "t.toml:5:2: `identity` is defined twice",
        ]
    );
    assert_eq!(
        problems("[x]\na = 1\na = 2\n"),
        ["t.toml:3:1: `a` is defined twice"]
    );
}

#[test]
fn all_problems_of_a_file_are_reported_in_file_order() {
    let text = "[listen]\nport = 0\n[identity]\nname = \"Alice\"\nkey_file = \"identity.key\"\n[announce]\nmax_per_hour = 0\nvalid_for = \"10s\"\n";
    assert_eq!(
        problems(text),
        [
            "t.toml:1:1: missing required key `address` in [mail]",
            "t.toml:1:1: missing required key `host` in [mail.smtp]",
            "t.toml:1:1: missing required key `protocol` in [mail.incoming]",
            "t.toml:1:1: missing required key `host` in [mail.incoming]",
            "t.toml:2:8: `listen.port`: 0 is out of range: use 1 to 65535",
            "t.toml:4:8: `identity.name`: \"Alice\" cannot be this host's name: a name may contain only a-z, 0-9, '_' and '-', not 'A'",
            "t.toml:5:12: `identity.key_file`: \"identity.key\" is not an absolute path: write the full path, starting with /",
            "t.toml:7:16: `announce.max_per_hour`: 0 is out of range: use 1 to 3600",
            "t.toml:8:13: `announce.valid_for`: 10s is out of range: use between 1m and 7days",
        ]
    );
}

#[test]
fn load_reads_the_real_mode_and_names_the_file_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("peerd.toml");
    let text = config(
        &[
            ("mail.smtp", "username = \"alice\""),
            ("mail.smtp", "password = \"hunter2\""),
        ],
        "",
    );
    fs::write(&path, &text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let err = load(&path).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert!(err.to_string().starts_with(&format!("{}:", path.display())));
    assert!(err.0[0].message.contains("mode 0644"));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(load(&path).is_ok());

    let missing = dir.path().join("missing.toml");
    assert_eq!(
        load(&missing).unwrap_err().to_string(),
        format!(
            "{}: cannot read the config: no such file",
            missing.display()
        )
    );
    assert_eq!(
        load(dir.path()).unwrap_err().to_string(),
        format!("{}: the config is not a regular file", dir.path().display())
    );
}

#[test]
fn a_config_others_can_change_is_warned_about() {
    let text = config(&[], "");
    for mode in [0o664, 0o646, 0o666] {
        let l = parse(&text, Path::new("t.toml"), mode).unwrap();
        assert_eq!(
            l.warnings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [format!(
                "t.toml: warning: group or others can change this file (mode {mode:04o}), and it names programs peerd runs: chmod 644 it (600 with an inline password)"
            )]
        );
    }
    assert!(
        parse(&text, Path::new("t.toml"), 0o644)
            .unwrap()
            .warnings
            .is_empty()
    );
    // With errors, the warning comes first (it has no position).
    let err = parse("", Path::new("t.toml"), 0o666).unwrap_err();
    assert_eq!(err.0[0].severity, Severity::Warning);
    assert_eq!(err.errors().count(), 5);
}
