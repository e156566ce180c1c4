//! Reading each section into its typed struct, with the checks that span
//! several keys.
//!
//! One function per section. Each takes every key it knows (type and value
//! problems are reported by the walker), applies defaults, runs its
//! cross-field checks against the keys' spans, and reports leftover keys.
//! A section returns `None` only when a required key is missing or invalid;
//! anything else invalid falls back to its default so the later checks
//! still run (the problem is already recorded, so the file is refused).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use peerd_core::{AddressClass, MailAddress, PeerName, PublicKey, ServiceName};
use toml::Spanned;
use toml::de::DeTable;

use crate::model::*;
use crate::problem::Collector;
use crate::secret::{Login, Secret};
use crate::values::{self, quote};
use crate::walk::{Field, Section, Span, conv};

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
const FOREVER: Duration = Duration::MAX;

/// Announcement mails are a few KiB; a limit below this would drop them.
const MIN_MESSAGE_SIZE: u64 = 16 << 10;
const MAX_MESSAGE_SIZE: u64 = 1 << 30;

/// Reads the whole document. `None` if a required key is missing.
pub(crate) fn read(
    c: &mut Collector<'_>,
    doc: Spanned<DeTable<'_>>,
    file_mode: u32,
) -> Option<Config> {
    let mut root = Section::root(doc);
    let section = root.table(c, "identity");
    let identity = identity(c, section);
    let section = root.table(c, "state");
    let state = state(c, section);
    let section = root.table(c, "control");
    let control = control(c, section);
    let section = root.table(c, "dbus");
    let dbus = dbus(c, section);
    let section = root.table(c, "link");
    let link = link(c, section);
    let section = root.table(c, "mail");
    let mail = mail(c, section, file_mode);
    let section = root.table(c, "announce");
    let announce = announce(c, section);
    let section = root.table(c, "listen");
    let listen = listen(c, section);
    let peer_sections = root.tables(c, "peer");
    let (peers, known) = peers(c, peer_sections);
    let service_sections = root.tables(c, "service");
    let services = services(c, service_sections, &known);
    root.finish(c);
    Some(Config {
        identity: identity?,
        state,
        control,
        dbus,
        link,
        mail: mail?,
        announce,
        listen,
        peers,
        services,
    })
}

/// A word from a closed set, via the enum's `FromStr`.
fn choice<T: FromStr<Err = UnknownChoice>>(s: &str) -> Result<T, String> {
    s.parse::<T>().map_err(|e| e.to_string())
}

fn path_or(
    s: &mut Section<'_>,
    c: &mut Collector<'_>,
    key: &'static str,
    default: &str,
) -> PathBuf {
    s.field(c, key, |v| conv::string(v, values::absolute_path))
        .or_else(|| PathBuf::from(default))
}

fn strip<T>(items: Vec<(T, Span)>) -> Vec<T> {
    items.into_iter().map(|(t, _)| t).collect()
}

fn identity(c: &mut Collector<'_>, mut s: Section<'_>) -> Option<IdentityConfig> {
    let name = s.field(c, "name", |v| {
        conv::string(v, |t| {
            t.parse::<PeerName>()
                .map_err(|e| format!("{} cannot be this host's name: {e}", quote(t)))
        })
    });
    let key_file = path_or(&mut s, c, "key_file", "/var/lib/peerd/identity.key");
    let name = s.required(c, "name", name);
    s.finish(c);
    Some(IdentityConfig {
        name: name?,
        key_file,
    })
}

fn state(c: &mut Collector<'_>, mut s: Section<'_>) -> StateConfig {
    let dir = path_or(&mut s, c, "dir", "/var/lib/peerd");
    s.finish(c);
    StateConfig { dir }
}

fn control(c: &mut Collector<'_>, mut s: Section<'_>) -> ControlConfig {
    let socket = s
        .field(c, "socket", |v| conv::string(v, values::socket_path))
        .or_else(|| "/run/peerd/control.sock".into());
    let mode = s.field(c, "mode", conv::mode).or(0o660);
    let group = s
        .field(c, "group", |v| conv::string(v, values::group))
        .or_else(|| "peerd".to_owned());
    s.finish(c);
    ControlConfig {
        socket,
        mode,
        group,
    }
}

fn dbus(c: &mut Collector<'_>, mut s: Section<'_>) -> DbusConfig {
    let bus = s
        .field(c, "bus", |v| conv::string(v, choice))
        .or(DbusBus::System);
    s.finish(c);
    DbusConfig { bus }
}

fn link(c: &mut Collector<'_>, mut s: Section<'_>) -> LinkConfig {
    let driver = s.field(c, "driver", |v| conv::string(v, choice::<LinkDriver>));
    let interface = s
        .field(c, "interface", |v| conv::string(v, values::interface))
        .or_else(|| WatchedInterface::Named("ppp0".to_owned()));
    let families = s
        .field(c, "families", |v| conv::set(v, choice::<Family>))
        .map(strip)
        .or_else(|| vec![Family::Ipv4, Family::Ipv6]);
    let idle_hangup = s
        .field(c, "idle_hangup", |v| conv::duration(v, SECOND, FOREVER))
        .or(5 * MINUTE);
    let on_demand = s.field(c, "on_demand", conv::boolean);
    let check_interval = s
        .field(c, "check_interval", |v| conv::duration(v, MINUTE, FOREVER))
        .or(15 * MINUTE);
    let max_failures = s
        .field(c, "max_failures", |v| conv::integer(v, 0, 10_000))
        .or(5);
    let pppd = path_or(&mut s, c, "pppd", "/usr/sbin/pppd");
    let peer = s
        .field(c, "peer", |v| conv::string(v, values::pppd_peer))
        .or_else(|| "isp-a".to_owned());
    let device = path_or(&mut s, c, "device", "/dev/ttyUSB0");
    let baud = s
        .field(c, "baud", |v| conv::integer_with(v, values::baud))
        .or(115_200);
    let number = s
        .field(c, "number", |v| conv::string(v, values::dial_number))
        .or_else(|| "*99#".to_owned());
    let init = s
        .field(c, "init", |v| conv::list(v, values::at_command))
        .map(strip)
        .or_else(|| vec!["ATZ".to_owned(), "ATE0V1".to_owned()]);

    let driver_value = match &driver {
        Field::Missing => Some(LinkDriver::External),
        other => other.value().copied(),
    };
    if let Some(g) = on_demand.given()
        && g.value
        && driver_value == Some(LinkDriver::External)
    {
        c.error(
            g.key.clone(),
            "`link.on_demand` needs a link peerd dials (driver = \"pppd\" or \"modem\"); with driver = \"external\" someone else brings the network up",
        );
    }
    s.finish(c);
    LinkConfig {
        driver: driver_value.unwrap_or(LinkDriver::External),
        interface,
        families,
        idle_hangup,
        on_demand: on_demand.or(false),
        check_interval,
        max_failures,
        pppd,
        peer,
        device,
        baud,
        number,
        init,
    }
}

fn mail(c: &mut Collector<'_>, mut s: Section<'_>, file_mode: u32) -> Option<MailConfig> {
    let address = s.field(c, "address", |v| conv::string(v, mail_address));
    let address = s.required(c, "address", address);
    let section = s.table(c, "smtp");
    let smtp = smtp(c, section, file_mode);
    let section = s.table(c, "incoming");
    let incoming = incoming(c, section, file_mode);
    s.finish(c);
    Some(MailConfig {
        address: address?,
        smtp: smtp?,
        incoming: incoming?,
    })
}

fn mail_address(t: &str) -> Result<MailAddress, String> {
    t.parse::<MailAddress>()
        .map_err(|e| format!("{} is not a mail address: {e}", quote(t)))
}

fn smtp(c: &mut Collector<'_>, mut s: Section<'_>, file_mode: u32) -> Option<SmtpConfig> {
    let host = s.field(c, "host", |v| conv::string(v, values::host));
    let port = s.field(c, "port", |v| conv::integer::<u16>(v, 1, 65_535));
    let security = s.field(c, "security", |v| conv::string(v, choice::<Security>));
    let login = login(c, &mut s, file_mode);
    let ca_file = ca_file(c, &mut s);
    let host = s.required(c, "host", host);

    let sec = security.value().copied().unwrap_or(Security::StartTls);
    cleartext_only_to_loopback(c, &s, &security, host.as_deref());
    let default_port = sec.default_smtp_port();
    check_port(c, &s, &port, sec, default_port, &[465], &[25, 587]);
    s.finish(c);
    Some(SmtpConfig {
        host: host?,
        port: port.or(default_port),
        security: sec,
        login,
        ca_file,
    })
}

fn incoming(c: &mut Collector<'_>, mut s: Section<'_>, file_mode: u32) -> Option<IncomingConfig> {
    let protocol = s.field(c, "protocol", |v| {
        conv::string(v, choice::<IncomingProtocol>)
    });
    let host = s.field(c, "host", |v| conv::string(v, values::host));
    let port = s.field(c, "port", |v| conv::integer::<u16>(v, 1, 65_535));
    let security = s.field(c, "security", |v| conv::string(v, choice::<Security>));
    let login = login(c, &mut s, file_mode);
    let ca_file = ca_file(c, &mut s);
    let poll_interval = s
        .field(c, "poll_interval", |v| {
            conv::duration(v, 10 * SECOND, FOREVER)
        })
        .or(60 * SECOND);
    let folders = s.field(c, "folders", |v| conv::set(v, values::folder));
    let max_message_size = s.field(c, "max_message_size", |v| {
        let n = conv::size(v)?;
        if (MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&n) {
            Ok(n)
        } else {
            Err(vec![(
                v.span(),
                "use a size from \"16KiB\" (announcement mails are a few KiB) to \"1GiB\""
                    .to_owned(),
            )])
        }
    });
    let processed = s.field(c, "processed", |v| conv::string(v, values::processed));

    let protocol = s.required(c, "protocol", protocol);
    let host = s.required(c, "host", host);
    let sec = security.value().copied().unwrap_or(Security::Tls);
    cleartext_only_to_loopback(c, &s, &security, host.as_deref());
    if let Some(p) = protocol {
        let default_port = p.default_port(sec);
        let (implicit, plain): (&[u16], &[u16]) = match p {
            IncomingProtocol::Imap => (&[993], &[143]),
            IncomingProtocol::Pop3 => (&[995], &[110]),
        };
        check_port(c, &s, &port, sec, default_port, implicit, plain);
    }
    if protocol == Some(IncomingProtocol::Pop3) {
        if let Some(k) = folders.key() {
            c.error(
                k,
                "`mail.incoming.folders` is for IMAP only (POP3 has one mailbox): remove it, or use protocol = \"imap\"",
            );
        }
        if let Some(g) = processed.given()
            && matches!(g.value, Processed::Move(_))
        {
            c.error(
                g.key.clone(),
                "`mail.incoming.processed`: \"move:<folder>\" needs IMAP (POP3 has no folders); use \"delete\" or \"keep\"",
            );
        }
    }
    s.finish(c);
    let protocol = protocol?;
    let folders = match protocol {
        IncomingProtocol::Pop3 => Vec::new(),
        IncomingProtocol::Imap => folders
            .map(strip)
            .or_else(|| vec!["INBOX".to_owned(), "Junk".to_owned()]),
    };
    Some(IncomingConfig {
        protocol,
        host: host?,
        port: port.or(protocol.default_port(sec)),
        security: sec,
        login,
        ca_file,
        poll_interval,
        folders,
        max_message_size: max_message_size.or(256 << 10),
        processed: processed.or(Processed::Delete),
    })
}

/// `security = "none"` sends the password and the mail in clear text: only
/// to a loopback host, where nothing leaves the machine.
fn cleartext_only_to_loopback(
    c: &mut Collector<'_>,
    s: &Section<'_>,
    security: &Field<Security>,
    host: Option<&str>,
) {
    if let (Some(g), Some(host)) = (security.given(), host)
        && g.value == Security::None
        && !values::is_loopback_host(host)
    {
        c.error(
            g.key.clone(),
            format!(
                "{}: \"none\" sends the password and mail in clear text; it is only allowed to a loopback host (localhost, 127.0.0.0/8, ::1), not {}",
                s.path("security"),
                quote(host)
            ),
        );
    }
}

/// Warns when an explicit port is the well-known port of the other kind of
/// security (implicit TLS on a STARTTLS port or the reverse): the handshake
/// would hang or fail.
fn check_port(
    c: &mut Collector<'_>,
    s: &Section<'_>,
    port: &Field<u16>,
    sec: Security,
    default_port: u16,
    implicit_tls: &[u16],
    plain: &[u16],
) {
    let Some(g) = port.given() else { return };
    let mismatch = match sec {
        Security::Tls => plain.contains(&g.value),
        Security::StartTls | Security::None => implicit_tls.contains(&g.value),
    };
    if mismatch {
        let expects = if sec == Security::Tls {
            "a plain start (security = \"starttls\")"
        } else {
            "TLS from the first byte (security = \"tls\")"
        };
        c.warn(
            g.key.clone(),
            format!(
                "{}: port {} expects {expects}, but security = \"{sec}\"; use port {default_port}, or change `security`",
                s.path("port"),
                g.value
            ),
        );
    }
}

/// `username` with exactly one of `password`, `password_file`,
/// `password_command`.
fn login(c: &mut Collector<'_>, s: &mut Section<'_>, file_mode: u32) -> Option<Login> {
    let username = s.field(c, "username", |v| conv::string(v, values::username));
    let inline = s.field(c, "password", conv::secret);
    let file = s.field(c, "password_file", |v| {
        conv::string(v, values::absolute_path)
    });
    let command = s.field(c, "password_command", |v| {
        conv::string(v, |t| {
            if t.trim().is_empty() {
                Err("the command is empty".to_owned())
            } else if t.contains('\0') {
                Err("a command cannot contain a NUL character".to_owned())
            } else {
                Ok(t.to_owned())
            }
        })
    });

    let mut sources: Vec<(&str, Span)> = [
        ("password", inline.key()),
        ("password_file", file.key()),
        ("password_command", command.key()),
    ]
    .into_iter()
    .filter_map(|(k, span)| span.map(|s| (k, s)))
    .collect();
    sources.sort_by_key(|(_, span)| span.start);
    for (key, span) in sources.iter().skip(1) {
        c.error(
            span.clone(),
            format!(
                "{}: give only one of `password`, `password_file` and `password_command`",
                s.path(key)
            ),
        );
    }
    match (username.key(), sources.first()) {
        (Some(k), None) => c.error(
            k,
            format!(
                "{} is set but there is no password: add `password_file` (or `password_command`)",
                s.path("username")
            ),
        ),
        (None, Some((key, span))) => c.error(
            span.clone(),
            format!("{} is set but `username` is missing", s.path(key)),
        ),
        _ => {},
    }
    if let Some(g) = inline.given()
        && file_mode & 0o077 != 0
    {
        c.error(
            g.key.clone(),
            format!(
                "{}: an inline password needs a config file only its owner can read, and this one has mode {:04o}: chmod 600 the file, or use `password_file` or `password_command`",
                s.path("password"),
                file_mode & 0o7777
            ),
        );
    }
    if let Some(g) = file.given() {
        check_secret_file(c, s, g.key.clone(), &g.value);
    }

    let password = match (inline, file, command) {
        (Field::Given(g), Field::Missing, Field::Missing) => Secret::Inline(g.value),
        (Field::Missing, Field::Given(g), Field::Missing) => Secret::File(g.value),
        (Field::Missing, Field::Missing, Field::Given(g)) => Secret::Command(g.value),
        _ => return None,
    };
    Some(Login {
        username: username.into_value()?,
        password,
    })
}

fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "it does not exist".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

/// A password file that others can read is a warning; one that cannot be
/// read now is a warning too, since under systemd `LoadCredential=` it only
/// exists inside the service.
fn check_secret_file(c: &mut Collector<'_>, s: &Section<'_>, key: Span, path: &Path) {
    let key_path = s.path("password_file");
    let shown = path.display();
    let unreadable = |e: &io::Error| {
        format!(
            "{key_path}: cannot read {shown}: {}; fine if it only exists inside the service (systemd LoadCredential=)",
            io_reason(e)
        )
    };
    match fs::metadata(path) {
        Err(e) => c.warn(key, unreadable(&e)),
        Ok(m) if !m.is_file() => c.warn(key, format!("{key_path}: {shown} is not a regular file")),
        Ok(m) => {
            let mode = m.mode() & 0o7777;
            if mode & 0o044 != 0 {
                c.warn(
                    key.clone(),
                    format!(
                        "{key_path}: {shown} can be read by group or others (mode {mode:04o}): chmod 600 it"
                    ),
                );
            }
            if let Err(e) = File::open(path) {
                c.warn(key, unreadable(&e));
            }
        },
    }
}

/// `ca_file`: an absolute path; a warning if it cannot be read now.
fn ca_file(c: &mut Collector<'_>, s: &mut Section<'_>) -> Option<PathBuf> {
    let field = s.field(c, "ca_file", |v| conv::string(v, values::absolute_path));
    if let Some(g) = field.given()
        && let Err(e) = File::open(&g.value)
    {
        c.warn(
            g.key.clone(),
            format!(
                "{}: cannot read {}: {}",
                s.path("ca_file"),
                g.value.display(),
                io_reason(&e)
            ),
        );
    }
    field.into_value()
}

fn announce(c: &mut Collector<'_>, mut s: Section<'_>) -> AnnounceConfig {
    let on_change = s.field(c, "on_change", conv::boolean).or(true);
    let valid_for = s
        .field(c, "valid_for", |v| conv::duration(v, MINUTE, 7 * DAY))
        .or(HOUR);
    let debounce = s
        .field(c, "debounce", |v| {
            conv::duration(v, Duration::ZERO, 10 * MINUTE)
        })
        .or(2 * SECOND);
    let publish = s
        .field(c, "publish", |v| conv::set(v, values::publish_class))
        .map(strip)
        .or_else(|| {
            vec![
                AddressClass::Public,
                AddressClass::Cgnat,
                AddressClass::Private,
            ]
        });
    let ipv6 = s
        .field(c, "ipv6", |v| conv::string(v, choice))
        .or(Ipv6Policy::Stable);
    let resend = s
        .field(c, "resend", |v| conv::duration(v, MINUTE, DAY))
        .or(10 * MINUTE);
    let max_per_hour = s
        .field(c, "max_per_hour", |v| conv::integer(v, 1, 3600))
        .or(6);
    let clock_skew = s
        .field(c, "clock_skew", |v| conv::duration(v, Duration::ZERO, DAY))
        .or(5 * MINUTE);
    let hooks_dir = path_or(&mut s, c, "hooks_dir", "/etc/peerd/hooks.d");
    s.finish(c);
    AnnounceConfig {
        on_change,
        valid_for,
        debounce,
        publish,
        ipv6,
        resend,
        max_per_hour,
        clock_skew,
        hooks_dir,
    }
}

fn listen(c: &mut Collector<'_>, mut s: Section<'_>) -> ListenConfig {
    let port = s
        .field(c, "port", |v| conv::integer::<u16>(v, 1, 65_535))
        .or(DEFAULT_PORT);
    let addresses = s
        .field(c, "addresses", |v| conv::set(v, values::listen_address))
        .map(strip)
        .or_else(|| {
            vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ]
        });
    let keepalive = s.field(c, "keepalive", |v| conv::duration(v, SECOND, FOREVER));
    let idle_timeout = s.field(c, "idle_timeout", |v| conv::duration(v, SECOND, FOREVER));
    let ka = keepalive.value().copied().unwrap_or(15 * SECOND);
    let idle = idle_timeout.value().copied().unwrap_or(60 * SECOND);
    let both_valid =
        !matches!(keepalive, Field::Invalid(_)) && !matches!(idle_timeout, Field::Invalid(_));
    if both_valid && ka >= idle {
        let at = keepalive
            .key()
            .or_else(|| idle_timeout.key())
            .unwrap_or(s.span.clone());
        c.error(
            at,
            format!(
                "`listen.keepalive` ({}) must be shorter than `listen.idle_timeout` ({}), or sessions die between keepalives",
                values::show_duration(ka),
                values::show_duration(idle)
            ),
        );
    }
    s.finish(c);
    ListenConfig {
        port,
        addresses,
        keepalive: ka,
        idle_timeout: idle,
    }
}

/// What services need to know about the peers.
type KnownPeers = HashMap<PeerName, PeerFormat>;

fn peers(c: &mut Collector<'_>, sections: Vec<Section<'_>>) -> (Vec<PeerConfig>, KnownPeers) {
    let mut out = Vec::new();
    let mut known = KnownPeers::new();
    let mut names: HashMap<PeerName, usize> = HashMap::new();
    let mut keys: HashMap<PublicKey, (PeerName, usize)> = HashMap::new();
    for mut s in sections {
        let name = s.field(c, "name", |v| {
            conv::string(v, |t| {
                t.parse::<PeerName>()
                    .map_err(|e| format!("{} is not a valid peer name: {e}", quote(t)))
            })
        });
        let email = s.field(c, "email", |v| conv::string(v, mail_address));
        let public_key = s.field(c, "public_key", |v| {
            conv::string(v, |t| t.parse::<PublicKey>().map_err(|e| e.to_string()))
        });
        let announce = s.field(c, "announce", conv::boolean);
        let auto_connect = s.field(c, "auto_connect", conv::boolean);
        let accept_unsigned = s.field(c, "accept_unsigned", conv::boolean);
        let format = s.field(c, "format", |v| conv::string(v, choice::<PeerFormat>));

        let name_key = name.key();
        let name = s.required(c, "name", name);
        let email = s.required(c, "email", email);
        let who = name
            .as_ref()
            .map_or_else(|| "this peer".to_owned(), |n| format!("peer `{n}`"));
        let format_value = match &format {
            Field::Missing => Some(PeerFormat::Sealed),
            other => other.value().copied(),
        };

        if format_value == Some(PeerFormat::Sealed) && !public_key.present() {
            let at = format
                .key()
                .or_else(|| name_key.clone())
                .unwrap_or(s.span.clone());
            c.error(
                at,
                format!(
                    "{who} has no `public_key`: paste the peer's key (the first line of its `peerd pubkey`), or set format = \"plain\" for someone without peerd"
                ),
            );
        }
        if format_value == Some(PeerFormat::Plain) {
            if let Some(k) = public_key.key() {
                c.error(
                    k,
                    format!(
                        "{who}: `public_key` is not used with format = \"plain\"; remove it, or remove `format` to send sealed announcements"
                    ),
                );
            }
            if let Some(g) = auto_connect.given()
                && g.value
            {
                c.error(
                    g.key.clone(),
                    format!(
                        "{who}: a plain peer has no key to connect with; remove `auto_connect`"
                    ),
                );
            }
        }
        if let Some(g) = accept_unsigned.given()
            && g.value
            && !public_key.present()
        {
            c.error(
                g.key.clone(),
                format!(
                    "{who}: `accept_unsigned` needs a `public_key` (the connection a hint leads to is authenticated with it)"
                ),
            );
        }
        if let (Some(n), Some(k)) = (&name, &name_key) {
            if let Some(first) = names.get(n) {
                c.error(
                    k.clone(),
                    format!("peer `{n}` is defined twice (first at line {first})"),
                );
            } else {
                names.insert(n.clone(), c.line(k.start));
            }
        }
        if let Some(g) = public_key.given() {
            if let Some((other, line)) = keys.get(&g.value) {
                c.error(
                    g.key.clone(),
                    format!(
                        "{who} has the same public_key as peer `{other}` (line {line}); every host has its own key"
                    ),
                );
            } else if let Some(n) = &name {
                keys.insert(g.value, (n.clone(), c.line(g.key.start)));
            }
        }
        s.finish(c);

        if let Some(n) = &name {
            known
                .entry(n.clone())
                .or_insert(format_value.unwrap_or(PeerFormat::Sealed));
        }
        let format = format_value.unwrap_or(PeerFormat::Sealed);
        if let (Some(name), Some(email)) = (name, email) {
            out.push(PeerConfig {
                name,
                email,
                public_key: public_key.into_value(),
                announce: announce.or(true),
                auto_connect: auto_connect.or(true) && format == PeerFormat::Sealed,
                accept_unsigned: accept_unsigned.or(false),
                format,
            });
        }
    }
    (out, known)
}

fn services(
    c: &mut Collector<'_>,
    sections: Vec<Section<'_>>,
    known: &KnownPeers,
) -> Vec<ServiceConfig> {
    let mut out = Vec::new();
    let mut names: HashMap<ServiceName, usize> = HashMap::new();
    for mut s in sections {
        let name = s.field(c, "name", |v| {
            conv::string(v, |t| {
                t.parse::<ServiceName>()
                    .map_err(|e| format!("{} is not a valid service name: {e}", quote(t)))
            })
        });
        let target = s.field(c, "target", |v| conv::string(v, values::service_target));
        let peers = s.field(c, "peers", |v| {
            conv::list(v, |t| {
                t.parse::<PeerName>()
                    .map_err(|e| format!("{} is not a valid peer name: {e}", quote(t)))
            })
        });
        let name_key = name.key();
        let name = s.required(c, "name", name);
        let target = s.required(c, "target", target);
        let peers_key = peers.key();
        let peers = s.required(c, "peers", peers);
        let what = name
            .as_ref()
            .map_or_else(|| "this service".to_owned(), |n| format!("service `{n}`"));

        if let (Some(n), Some(k)) = (&name, &name_key) {
            if let Some(first) = names.get(n) {
                c.error(
                    k.clone(),
                    format!("service `{n}` is defined twice (first at line {first})"),
                );
            } else {
                names.insert(n.clone(), c.line(k.start));
            }
        }
        let mut allowed = Vec::new();
        if let Some(list) = peers {
            if list.is_empty()
                && let Some(k) = &peers_key
            {
                c.warn(
                    k.clone(),
                    format!("{what}: `peers` is empty, so no peer can open it"),
                );
            }
            for (i, (p, span)) in list.iter().enumerate() {
                let problem = if list[..i].iter().any(|(q, _)| q == p) {
                    Some(format!("`service.peers`: `{p}` is listed twice"))
                } else {
                    match known.get(p) {
                        None => Some(format!(
                            "`service.peers`: {what} names unknown peer `{p}` (no [[peer]] with that name in this file)"
                        )),
                        Some(PeerFormat::Plain) => Some(format!(
                            "`service.peers`: peer `{p}` is plain (it has no key), so it cannot open {what}"
                        )),
                        Some(PeerFormat::Sealed) => None,
                    }
                };
                match problem {
                    Some(m) => c.error(span.clone(), m),
                    None => allowed.push(p.clone()),
                }
            }
        }
        s.finish(c);
        if let (Some(name), Some(target)) = (name, target) {
            out.push(ServiceConfig {
                name,
                target,
                peers: allowed,
            });
        }
    }
    out
}
