//! The validated configuration: one struct per section of `peerd.toml`,
//! typed values, defaults applied.
//!
//! Field docs give the key, its default and what it means; the commented
//! example `config/peerd.toml` says the same for users. A [`Config`] only
//! exists once every check in this crate has passed, so users of it do not
//! re-check: a `PeerName` is a valid name, a `public_key` is present for
//! every sealed peer, `keepalive < idle_timeout`, and so on.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use peerd_core::{AddressClass, MailAddress, PeerName, PublicKey, ServiceName};

use crate::secret::Login;

/// A value that is not one of a key's allowed words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {value:?}: expected {}", expected_list(.expected))]
pub struct UnknownChoice {
    /// What was written.
    pub value: String,
    /// What may be written.
    pub expected: &'static [&'static str],
}

/// `"a"`, `"a" or "b"`, `"a", "b" or "c"`.
pub(crate) fn expected_list(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// A closed set of words for one key: an enum with its config spelling.
macro_rules! choice {
    (
        $(#[$doc:meta])*
        $name:ident { $( $(#[$vdoc:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vdoc])* $variant ),+
        }

        impl $name {
            /// Every value, in the order the documentation lists them.
            pub const ALL: &'static [$name] = &[$(Self::$variant),+];
            /// The config spellings, in the order of [`Self::ALL`].
            pub const WORDS: &'static [&'static str] = &[$($text),+];

            /// The spelling used in the config file (and in logs and JSON).
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $text ),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownChoice;
            fn from_str(s: &str) -> Result<Self, UnknownChoice> {
                match s {
                    $( $text => Ok(Self::$variant), )+
                    _ => Err(UnknownChoice { value: s.to_owned(), expected: Self::WORDS }),
                }
            }
        }
    };
}

choice!(
    /// `[dbus] bus`: which D-Bus bus the daemon offers its interface on.
    DbusBus {
        /// The system bus (the daemon runs as a system service).
        System = "system",
        /// The session bus of the user running the daemon.
        Session = "session",
        /// No D-Bus interface at all.
        None = "none",
    }
);

choice!(
    /// `[link] driver`: who brings the network link up.
    LinkDriver {
        /// Someone else (NetworkManager, systemd-networkd, a router): peerd
        /// only watches the interface.
        External = "external",
        /// peerd runs `pppd call <peer>`.
        Pppd = "pppd",
        /// peerd dials a serial modem itself.
        Modem = "modem",
    }
);

choice!(
    /// An IP address family (`[link] families`).
    Family {
        /// IPv4.
        Ipv4 = "ipv4",
        /// IPv6.
        Ipv6 = "ipv6",
    }
);

choice!(
    /// How a mail connection is protected (`security` in `[mail.smtp]` and
    /// `[mail.incoming]`).
    Security {
        /// Plain connection upgraded with STARTTLS (STLS for POP3). This is
        /// mandatory TLS: a server that does not offer it is an error, never
        /// a silent fallback to clear text.
        StartTls = "starttls",
        /// TLS from the first byte ("implicit TLS").
        Tls = "tls",
        /// Clear text; only allowed to a loopback host.
        None = "none",
    }
);

choice!(
    /// `[mail.incoming] protocol`.
    IncomingProtocol {
        /// IMAP, with IDLE push where the server offers it.
        Imap = "imap",
        /// POP3, polled every `poll_interval`.
        Pop3 = "pop3",
    }
);

choice!(
    /// `[announce] ipv6`: which IPv6 addresses are announced.
    Ipv6Policy {
        /// Stable addresses only, no temporary (privacy) addresses.
        Stable = "stable",
        /// Temporary (privacy) addresses only.
        Temporary = "temporary",
        /// Both.
        All = "all",
    }
);

choice!(
    /// `[[peer]] format`: what kind of mail a peer gets.
    PeerFormat {
        /// A signed announcement encrypted to the peer's key (needs
        /// `public_key`).
        Sealed = "sealed",
        /// A readable mail with the address, for a person without peerd
        /// (unencrypted; no key, so no connections).
        Plain = "plain",
    }
);

impl Security {
    /// The port SMTP uses by default with this security: 587 (submission)
    /// for STARTTLS, 465 (submissions) for TLS, 25 for none.
    pub fn default_smtp_port(self) -> u16 {
        match self {
            Self::StartTls => 587,
            Self::Tls => 465,
            Self::None => 25,
        }
    }
}

impl IncomingProtocol {
    /// The port this protocol uses by default with `security`: IMAP 993
    /// with TLS, else 143; POP3 995 with TLS, else 110.
    pub fn default_port(self, security: Security) -> u16 {
        match (self, security) {
            (Self::Imap, Security::Tls) => 993,
            (Self::Imap, _) => 143,
            (Self::Pop3, Security::Tls) => 995,
            (Self::Pop3, _) => 110,
        }
    }
}

/// `[link] interface`: the interface whose addresses are announced.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WatchedInterface {
    /// `"auto"`: whichever interface has the default route.
    Auto,
    /// This interface (a valid Linux interface name).
    Named(String),
}

impl fmt::Display for WatchedInterface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Named(n) => f.write_str(n),
        }
    }
}

/// `[mail.incoming] processed`: what happens to an announcement mail once
/// it has been handled. Mail that is not an announcement is never touched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Processed {
    /// `"delete"`: delete it from the server.
    Delete,
    /// `"keep"`: leave it where it is (peerd remembers it has seen it).
    Keep,
    /// `"move:<folder>"`: move it to this IMAP folder.
    Move(String),
}

impl fmt::Display for Processed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Delete => f.write_str("delete"),
            Self::Keep => f.write_str("keep"),
            Self::Move(folder) => write!(f, "move:{folder}"),
        }
    }
}

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[identity]`.
    pub identity: IdentityConfig,
    /// `[state]`.
    pub state: StateConfig,
    /// `[control]`.
    pub control: ControlConfig,
    /// `[dbus]`.
    pub dbus: DbusConfig,
    /// `[link]`.
    pub link: LinkConfig,
    /// `[mail]`, `[mail.smtp]`, `[mail.incoming]`.
    pub mail: MailConfig,
    /// `[announce]`.
    pub announce: AnnounceConfig,
    /// `[listen]`.
    pub listen: ListenConfig,
    /// Every `[[peer]]`, in file order; names and keys are unique.
    pub peers: Vec<PeerConfig>,
    /// Every `[[service]]`, in file order; names are unique.
    pub services: Vec<ServiceConfig>,
}

impl Config {
    /// The `[[peer]]` with this name.
    pub fn peer(&self, name: &str) -> Option<&PeerConfig> {
        self.peers.iter().find(|p| p.name.as_str() == name)
    }

    /// The `[[service]]` with this name.
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name.as_str() == name)
    }
}

/// `[identity]`: who this host is.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// `name` (required): the name peers file this host under, shown to
    /// them. A valid peer name, `[a-z0-9_-]{1,32}`.
    pub name: PeerName,
    /// `key_file` (default `/var/lib/peerd/identity.key`): the Ed25519
    /// identity key, made by `peerd keygen`.
    pub key_file: PathBuf,
}

/// `[state]`: where the daemon keeps what must survive a restart.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// `dir` (default `/var/lib/peerd`): outbox, seen-mail ledger, runtime
    /// address book.
    pub dir: PathBuf,
}

/// `[control]`: the control socket `peerctl` talks to.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// `socket` (default `/run/peerd/control.sock`).
    pub socket: PathBuf,
    /// `mode` (default `"0660"`): permission bits of the socket, at most
    /// `0o777`.
    pub mode: u32,
    /// `group` (default `"peerd"`): members may use every command; other
    /// users are refused.
    pub group: String,
}

/// `[dbus]`.
#[derive(Debug, Clone)]
pub struct DbusConfig {
    /// `bus` (default `"system"`).
    pub bus: DbusBus,
}

/// `[link]`: the network link and how it is brought up.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// `driver` (default `"external"`).
    pub driver: LinkDriver,
    /// `interface` (default `"ppp0"`).
    pub interface: WatchedInterface,
    /// `families` (default `["ipv4", "ipv6"]`): non-empty, no duplicates.
    pub families: Vec<Family>,
    /// `idle_hangup` (default `"5m"`): pppd/modem: hang up after this long
    /// with no session.
    pub idle_hangup: Duration,
    /// `on_demand` (default `false`): pppd/modem: dial only for a call, a
    /// mail check or an announcement. Never true with `driver = "external"`.
    pub on_demand: bool,
    /// `check_interval` (default `"15m"`): with `on_demand`, how often to
    /// dial just to check mail.
    pub check_interval: Duration,
    /// `max_failures` (default 5): give up redialling after this many
    /// failures in a row; 0 = never give up.
    pub max_failures: u32,
    /// `pppd` (default `/usr/sbin/pppd`): the pppd program.
    pub pppd: PathBuf,
    /// `peer` (default `"isp-a"`): pppd runs `call <peer>`
    /// (`/etc/ppp/peers/<peer>`).
    pub peer: String,
    /// `device` (default `/dev/ttyUSB0`): the modem's serial device.
    pub device: PathBuf,
    /// `baud` (default 115200): a standard serial rate.
    pub baud: u32,
    /// `number` (default `"*99#"`): what the modem dials.
    pub number: String,
    /// `init` (default `["ATZ", "ATE0V1"]`): commands sent before dialling;
    /// each starts with `AT` and has no control characters.
    pub init: Vec<String>,
}

impl LinkConfig {
    /// Whether peerd dials this link only when something needs it (a
    /// lease, a mail check): `on_demand` with a driver peerd dials. A
    /// loaded configuration never has `on_demand` with `external`; a
    /// configuration built by hand is treated the same way.
    pub fn dials_on_demand(&self) -> bool {
        self.on_demand && self.driver != LinkDriver::External
    }
}

/// `[mail]`: this host's mailbox.
#[derive(Debug, Clone)]
pub struct MailConfig {
    /// `address` (required): announcements are sent from and to it.
    pub address: MailAddress,
    /// `[mail.smtp]`: sending.
    pub smtp: SmtpConfig,
    /// `[mail.incoming]`: receiving.
    pub incoming: IncomingConfig,
}

/// `[mail.smtp]`: the submission server.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// `host` (required): a host name or IP address.
    pub host: String,
    /// `port` (default from `security`: starttls 587, tls 465, none 25).
    pub port: u16,
    /// `security` (default `"starttls"`); `"none"` only to a loopback host.
    pub security: Security,
    /// `username` with exactly one of `password_file`, `password_command`
    /// or `password`; `None` when the server needs no login.
    pub login: Option<Login>,
    /// `ca_file` (optional): an extra trust anchor (PEM).
    pub ca_file: Option<PathBuf>,
}

/// `[mail.incoming]`: the mailbox server.
#[derive(Debug, Clone)]
pub struct IncomingConfig {
    /// `protocol` (required).
    pub protocol: IncomingProtocol,
    /// `host` (required): a host name or IP address.
    pub host: String,
    /// `port` (default from protocol and security: IMAP 993 with tls, else
    /// 143; POP3 995 with tls, else 110).
    pub port: u16,
    /// `security` (default `"tls"`); `"none"` only to a loopback host.
    pub security: Security,
    /// `username` with exactly one password source, or `None`.
    pub login: Option<Login>,
    /// `ca_file` (optional): an extra trust anchor (PEM).
    pub ca_file: Option<PathBuf>,
    /// `poll_interval` (default `"60s"`): POP3, and IMAP when the server
    /// has no IDLE.
    pub poll_interval: Duration,
    /// `folders` (default `["INBOX", "Junk"]`): IMAP folders to watch
    /// (announcements can be misfiled as spam). Always empty for POP3,
    /// which has one mailbox.
    pub folders: Vec<String>,
    /// `max_message_size` (default `"256KiB"`): larger mails are never
    /// downloaded. In bytes.
    pub max_message_size: u64,
    /// `processed` (default `"delete"`).
    pub processed: Processed,
}

/// `[announce]`: when and what this host announces.
#[derive(Debug, Clone)]
pub struct AnnounceConfig {
    /// `on_change` (default `true`): announce whenever the watched address
    /// changes, to every peer with `announce = true`.
    pub on_change: bool,
    /// `valid_for` (default `"1h"`, 1m to 7d): how long an announcement is
    /// valid.
    pub valid_for: Duration,
    /// `debounce` (default `"2s"`): coalesce address flaps.
    pub debounce: Duration,
    /// `publish` (default `["public", "cgnat", "private"]`): the address
    /// classes put in announcements; only those three are allowed
    /// (link-local and loopback addresses are never sent).
    pub publish: Vec<AddressClass>,
    /// `ipv6` (default `"stable"`).
    pub ipv6: Ipv6Policy,
    /// `resend` (default `"10m"`): re-send an unacknowledged announcement
    /// after this long, backing off to 1h.
    pub resend: Duration,
    /// `max_per_hour` (default 6, at least 1): announcements per peer per
    /// hour; the latest address always wins.
    pub max_per_hour: u32,
    /// `clock_skew` (default `"5m"`): how far in the future an accepted
    /// announcement may be dated.
    pub clock_skew: Duration,
    /// `hooks_dir` (default `/etc/peerd/hooks.d`): executables run on
    /// events.
    pub hooks_dir: PathBuf,
}

/// `[listen] port` when the file does not say (UDP).
pub const DEFAULT_PORT: u16 = 7447;

/// `[listen]`: the QUIC endpoint peers connect to.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// `port` (default [`DEFAULT_PORT`], 7447, UDP).
    pub port: u16,
    /// `addresses` (default `["0.0.0.0", "::"]`): non-empty, no duplicates.
    pub addresses: Vec<IpAddr>,
    /// `keepalive` (default `"15s"`): always shorter than `idle_timeout`.
    pub keepalive: Duration,
    /// `idle_timeout` (default `"60s"`): a session with no answer for this
    /// long is dead.
    pub idle_timeout: Duration,
}

/// One `[[peer]]`.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// `name` (required): unique among the peers.
    pub name: PeerName,
    /// `email` (required): where announcements to this peer go.
    pub email: MailAddress,
    /// `public_key`: present exactly when `format` is sealed.
    pub public_key: Option<PublicKey>,
    /// `announce` (default `true`): send this peer our announcements.
    pub announce: bool,
    /// `auto_connect` (default `true`): connect when this peer announces.
    /// Always false for a plain peer (it has no key to connect with).
    pub auto_connect: bool,
    /// `accept_unsigned` (default `false`): take a bare address in a plain
    /// mail from this peer as a hint. Only with a key.
    pub accept_unsigned: bool,
    /// `format` (default `"sealed"`).
    pub format: PeerFormat,
}

/// One `[[service]]`: what peers may open with `peerctl open NAME --service SVC`.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// `name` (required): unique among the services.
    pub name: ServiceName,
    /// `target` (required): the local address the stream is bridged to.
    pub target: SocketAddr,
    /// `peers` (required): `[[peer]]` names (each sealed) that may open it.
    pub peers: Vec<PeerName>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_round_trip_and_explain() {
        for s in Security::ALL {
            assert_eq!(s.as_str().parse::<Security>().unwrap(), *s);
        }
        let err = "startls".parse::<Security>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown value \"startls\": expected \"starttls\", \"tls\" or \"none\""
        );
        assert_eq!(expected_list(&["a", "b"]), "\"a\" or \"b\"");
        assert_eq!(expected_list(&["a"]), "\"a\"");
    }

    #[test]
    fn default_ports() {
        assert_eq!(Security::StartTls.default_smtp_port(), 587);
        assert_eq!(Security::Tls.default_smtp_port(), 465);
        assert_eq!(Security::None.default_smtp_port(), 25);
        use IncomingProtocol::{Imap, Pop3};
        assert_eq!(Imap.default_port(Security::Tls), 993);
        assert_eq!(Imap.default_port(Security::StartTls), 143);
        assert_eq!(Imap.default_port(Security::None), 143);
        assert_eq!(Pop3.default_port(Security::Tls), 995);
        assert_eq!(Pop3.default_port(Security::StartTls), 110);
        assert_eq!(Pop3.default_port(Security::None), 110);
    }
}
