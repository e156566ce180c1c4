//! `peerctl`: the command-line client of the peerd daemon.
//!
//! Every command is parsed and checked here first, with peerd-core's types
//! (peer and service names, public keys, mail addresses), so a typo is a
//! usage error (exit 2) that never reaches the daemon. Then the command goes to the daemon over its
//! control socket. The control protocol arrives with the daemon in a later
//! issue; until then every well-formed command ends with "daemon not
//! reachable" (exit 69) and prints nothing on stdout.
//!
//! # Layout
//! - [`Cli`] and [`Command`]: the command line, as INTERFACE.md lists it.
//! - [`Command::action`]: what a command asks for, in words, for messages.
//! - [`exit`]: the sysexits codes peerctl uses.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use peerd_core::{MailAddress, PeerName, PublicKey, ServiceName};

/// The exit statuses peerctl sets, from sysexits(3) (INTERFACE.md,
/// "Programs"). 0 is success and 2 (usage error) is set by clap.
mod exit {
    /// `EX_UNAVAILABLE`: the daemon could not be reached.
    pub const UNAVAILABLE: u8 = 69;
}

/// The socket used when neither `--socket` nor `$PEERD_SOCKET` names one.
const DEFAULT_SOCKET: &str = "/run/peerd/control.sock";
/// The environment variable that names the socket when `--socket` does not.
const SOCKET_ENV: &str = "PEERD_SOCKET";

/// Why no command reaches the daemon yet.
const NO_PROTOCOL: &str =
    "this version of peerctl has no control protocol yet; it arrives with the daemon";

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0   success
  1   the operation failed (the reason is on stderr)
  2   usage error (a bad option, peer name, service name or key)
  69  the daemon could not be reached (EX_UNAVAILABLE)
  75  timed out, as `call --wait` does (EX_TEMPFAIL)
  77  permission denied: run as root or as a member of the group in
      [control] group of peerd.toml (EX_NOPERM)";

/// Control the peerd daemon: peers, announcements, calls and the link.
#[derive(Debug, Parser)]
#[command(
    name = "peerctl",
    version,
    long_about = "\
Control the peerd daemon: peers, announcements, calls and the link.

peerd lets two hosts with changing IP addresses find each other: it mails \
each peer a signed and encrypted announcement of this host's current \
address, reads the peers' announcements from its mailbox, and connects \
to them directly. peerctl asks the running daemon to do these things, \
through its control socket.

Examples:
  peerctl status
  peerctl peer add hitoshi --email hitoshi@isp-b.example --key KEY
  peerctl call hitoshi --wait 120
  ssh -o ProxyCommand='peerctl open %n' hitoshi",
    after_help = EXIT_STATUS_HELP
)]
struct Cli {
    /// The daemon's control socket [default: $PEERD_SOCKET, or
    /// /run/peerd/control.sock].
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        help_heading = "Global options"
    )]
    socket: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

/// `--json` of the listing commands.
#[derive(Debug, Args)]
struct Output {
    /// Print one JSON document on stdout instead of text (stable for scripts).
    #[arg(long)]
    json: bool,
}

/// What peerctl can ask the daemon (INTERFACE.md, "peerctl subcommands").
#[derive(Debug, Subcommand)]
enum Command {
    /// Show the link, addresses, mailbox, outbox and connected peers.
    #[command(long_about = "\
Show the daemon's state: the link and the watched interface with its \
current addresses, the mailbox (last check, protocol, mails pending), the \
size of the outbox, and the peers connected now.")]
    Status {
        #[command(flatten)]
        output: Output,
    },

    /// List the peers in the address book.
    #[command(long_about = "\
List every peer in the address book, those from [[peer]] in the config \
file and those added with `peerctl peer add`: name, e-mail address, key \
fingerprint, the address(es) it last announced and when, and whether it \
is connected.")]
    Peers {
        #[command(flatten)]
        output: Output,
    },

    /// Add or remove a peer in the runtime address book.
    #[command(subcommand)]
    Peer(PeerCommand),

    /// Show what waits to be sent or acknowledged.
    #[command(long_about = "\
Show what waits in the outbox, per peer: the announcement waiting to be \
sent or acknowledged, the time of the next attempt and the last error. \
Announcements wait there while the mail server cannot be reached; a \
newer announcement to a peer replaces an older one.")]
    Outbox {
        #[command(flatten)]
        output: Output,
    },

    /// Send an announcement of this host's address now.
    #[command(long_about = "\
Send a signed, encrypted announcement of this host's current address(es) \
now: to the peers named, or, without names, to every peer with \
`announce = true`.

Examples:
  peerctl announce
  peerctl announce hitoshi")]
    Announce {
        /// The peers to announce to (default: every peer with `announce = true`).
        #[arg(value_name = "NAME")]
        peers: Vec<PeerName>,
    },

    /// Check the mailbox for announcements now.
    #[command(long_about = "\
Check the mailbox for announcements now, without waiting for the next \
poll or IMAP IDLE push. On an on-demand link, the link is brought up for \
the check and hung up after.")]
    Check,

    /// Announce to a peer and wait until it connects.
    #[command(long_about = "\
Call a peer: bring the link up if peerd manages it, announce this host's \
address to the peer, and wait until the peer connects back (or connect to \
it, if it announced first). Exits 0 once the peer is connected, 75 when it \
has not connected within --wait seconds. A `plain` peer has no key and \
cannot be called (exit 1).

Example:
  peerctl call hitoshi --wait 120")]
    Call {
        /// The peer to call.
        name: PeerName,
        /// How long to wait for the peer to connect, in seconds.
        #[arg(
            long,
            value_name = "SECS",
            default_value_t = 300,
            value_parser = clap::value_parser!(u64).range(1..)
        )]
        wait: u64,
    },

    /// Connect to the address a peer last announced.
    #[command(long_about = "\
Connect to the address(es) the peer last announced, over the channel \
authenticated by its key. A `plain` peer has no key: exit 1.")]
    Connect {
        /// The peer to connect to.
        name: PeerName,
    },

    /// Drop the session with a peer.
    Disconnect {
        /// The peer to disconnect from.
        name: PeerName,
    },

    /// Open a stream to a service on a peer, on stdin/stdout (ssh ProxyCommand).
    #[command(long_about = "\
Open an authenticated stream to a service on the peer and bridge it to \
stdin and stdout. The peer must list this host in the `peers` of that \
[[service]] in its config. This is made to be ssh's ProxyCommand.

Examples:
  ssh -o ProxyCommand='peerctl open %n' hitoshi

  # ~/.ssh/config
  Host hitoshi
      ProxyCommand peerctl open hitoshi --service ssh")]
    Open {
        /// The peer to open the stream to.
        name: PeerName,
        /// The service on the peer, as named in its `[[service]]` entry.
        #[arg(long, value_name = "SVC", default_value = "ssh")]
        service: ServiceName,
    },

    /// Dial, hang up or show the link.
    #[command(subcommand)]
    Link(LinkCommand),

    /// Follow the daemon's events until interrupted.
    #[command(long_about = "\
Follow the daemon's event stream until interrupted: addresses changing, \
announcements sent, received or rejected (with the reason), peers \
connecting and disconnecting, the link changing state. One line per \
event, or with --json one JSON object per line.")]
    Events {
        /// Print one JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },

    /// Print this host's public key and fingerprint, to give to peers.
    #[command(long_about = "\
Print this host's public key and its fingerprint, as the daemon has them. \
The key (first line) is what a peer pastes into `[[peer]] public_key` or \
`peerctl peer add --key`; the fingerprint (second line) is for reading \
aloud to check that the peer got the right key. `peerd pubkey` prints the \
same from the key file, without asking the daemon.")]
    Key {
        #[command(flatten)]
        output: Output,
    },
}

/// `peerctl peer ...`
#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per run; a Box would only obscure the clap definition"
)]
enum PeerCommand {
    /// Add a peer, with its mail address and key.
    #[command(long_about = "\
Add a peer to the runtime address book, which the daemon keeps in its \
state directory across restarts. The key is the first line of the peer's \
`peerd pubkey` (44 characters of base64); a fingerprint is not a key. A \
name that is also a [[peer]] in the config file is refused.

Example:
  peerctl peer add hitoshi --email hitoshi@isp-b.example \\
      --key iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=")]
    Add {
        /// The peer's name (a-z, 0-9, '_' and '-', at most 32 characters).
        name: PeerName,
        /// The mail address announcements to this peer are sent to.
        #[arg(long, value_name = "ADDR")]
        email: MailAddress,
        /// The peer's public key: the first line of its `peerd pubkey`.
        #[arg(long, value_name = "PUBKEY")]
        key: PublicKey,
        /// Do not announce to this peer unasked (on address changes, or
        /// `peerctl announce` without names); `call` and `announce NAME` still do.
        #[arg(long)]
        no_announce: bool,
        /// Take a bare address in a plain, unsigned mail from this peer as
        /// a hint where to connect. Spoofable: the connection is still
        /// authenticated by the key, and a hint never overrides a newer
        /// sealed announcement.
        #[arg(long)]
        accept_unsigned: bool,
    },

    /// Remove a peer added with `peer add`.
    #[command(long_about = "\
Remove a peer from the runtime address book. Peers from [[peer]] in the \
config file are read-only at run time: edit the file instead.")]
    Remove {
        /// The peer to remove.
        name: PeerName,
    },
}

/// `peerctl link ...`
#[derive(Debug, Subcommand)]
enum LinkCommand {
    /// Bring the link up: dial, and wait for an address.
    #[command(long_about = "\
Bring the link up: dial with pppd or the modem, as the [link] driver \
says, and wait until the network assigns an address.")]
    Up,
    /// Hang up the link.
    Down,
    /// Show the link's state.
    Status {
        #[command(flatten)]
        output: Output,
    },
}

impl Command {
    /// What the command asks the daemon for, as words for a message
    /// ("add peer hitoshi ..."). Whether the output was asked as JSON is
    /// not part of the request.
    fn action(&self) -> String {
        match self {
            Self::Status { .. } => "show the status".to_owned(),
            Self::Peers { .. } => "list the peers".to_owned(),
            Self::Peer(PeerCommand::Add {
                name,
                email,
                key,
                no_announce,
                accept_unsigned,
            }) => {
                let mut s = format!("add peer {name} <{email}> with key {}", key.fingerprint());
                if *no_announce {
                    s.push_str(", not announced to");
                }
                if *accept_unsigned {
                    s.push_str(", accepting unsigned hints");
                }
                s
            },
            Self::Peer(PeerCommand::Remove { name }) => format!("remove peer {name}"),
            Self::Outbox { .. } => "show the outbox".to_owned(),
            Self::Announce { peers } if peers.is_empty() => {
                "announce to every peer with announce = true".to_owned()
            },
            Self::Announce { peers } => {
                let names: Vec<&str> = peers.iter().map(PeerName::as_str).collect();
                format!("announce to {}", names.join(", "))
            },
            Self::Check => "check the mailbox".to_owned(),
            Self::Call { name, wait } => format!("call {name} (waiting up to {wait}s)"),
            Self::Connect { name } => format!("connect to {name}"),
            Self::Disconnect { name } => format!("disconnect from {name}"),
            Self::Open { name, service } => format!("open service {service} on {name}"),
            Self::Link(LinkCommand::Up) => "bring the link up".to_owned(),
            Self::Link(LinkCommand::Down) => "hang up the link".to_owned(),
            Self::Link(LinkCommand::Status { .. }) => "show the link".to_owned(),
            Self::Events { .. } => "follow the events".to_owned(),
            Self::Key { .. } => "show this host's key".to_owned(),
        }
    }
}

impl Cli {
    /// The socket to talk to: `--socket`, else `$PEERD_SOCKET` unless it
    /// is empty, else the default.
    fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .or_else(|| {
                std::env::var_os(SOCKET_ENV)
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    eprintln!(
        "peerctl: cannot {}: peerd is not reachable at {}: {NO_PROTOCOL}",
        cli.command.action(),
        cli.socket().display()
    );
    ExitCode::from(exit::UNAVAILABLE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
