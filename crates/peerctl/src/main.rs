//! `peerctl`: the command-line client of the peerd daemon.
//!
//! Every command is parsed and checked here first, with peerd-core's types
//! (peer and service names, public keys, mail addresses), so a typo is a
//! usage error (exit 2) that never reaches the daemon. Then the command
//! goes to the daemon over its control socket (the protocol of
//! `peerd-control`, `docs/control-protocol.md`), and the answer is printed:
//! as aligned text, or with `--json` as one JSON document on stdout.
//! Errors go to stderr as one `peerctl: cannot ...: why` line, with the
//! sysexits(3) status INTERFACE.md names.
//!
//! peerctl is a small blocking program: no async runtime, no daemon
//! crates, only peerd-core and peerd-control.
//!
//! # Layout
//! - [`Cli`] and [`Command`]: the command line, as INTERFACE.md lists it.
//! - [`Command::action`]: what a command asks for, in words, for messages.
//! - [`Command::request`]: the control request it sends.
//! - [`exit`]: the sysexits codes peerctl uses, and [`Failure`].
//! - `output`: the text and JSON forms of the answers.
//! - `bridge`: `open`'s copying between stdin/stdout and the socket.

mod bridge;
mod output;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use peerd_control::{Client, ClientError, ErrorKind, Request};
use peerd_core::{MailAddress, PeerName, PublicKey, ServiceName};

/// The exit statuses peerctl sets, from sysexits(3) (INTERFACE.md,
/// "Programs"). 0 is success and 2 (usage error) is set by clap.
mod exit {
    /// The operation failed; the message says why.
    pub const FAILED: u8 = 1;
    /// `EX_UNAVAILABLE`: the daemon could not be reached.
    pub const UNAVAILABLE: u8 = 69;
    /// `EX_TEMPFAIL`: timed out.
    pub const TEMPFAIL: u8 = 75;
    /// `EX_NOPERM`: permission denied.
    pub const NOPERM: u8 = 77;
}

/// This program, as the daemon's log names it.
const SOFTWARE: &str = concat!("peerctl ", env!("CARGO_PKG_VERSION"));

/// How long connecting and the hello may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the daemon may take to answer a request that only reads or
/// changes its own state.
const QUICK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take for one that dials, sends mail or connects.
const SLOW_TIMEOUT: Duration = Duration::from_secs(300);
/// How much longer than `--wait` peerctl waits for `call`'s answer (the
/// daemon times the wait itself and answers "timed out").
const CALL_GRACE: Duration = Duration::from_secs(30);

/// The socket used when neither `--socket` nor `$PEERD_SOCKET` names one.
const DEFAULT_SOCKET: &str = "/run/peerd/control.sock";
/// The environment variable that names the socket when `--socket` does not.
const SOCKET_ENV: &str = "PEERD_SOCKET";

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

    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        hide = true,
        long_about = "\
Print a completion script for SHELL on stdout. Not a daemon command: it \
works without peerd. Install it where your shell looks for completions.

Examples:
  peerctl completions bash > /etc/bash_completion.d/peerctl
  peerctl completions zsh > /usr/local/share/zsh/site-functions/_peerctl
  peerctl completions fish > ~/.config/fish/completions/peerctl.fish"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
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
            Self::Completions { shell } => format!("print {shell} completions"),
        }
    }

    /// The control request this command sends; `None` for the command that
    /// does not talk to the daemon (`completions`).
    fn request(&self) -> Option<Request> {
        Some(match self {
            Self::Status { .. } => Request::Status,
            Self::Peers { .. } => Request::Peers,
            Self::Peer(PeerCommand::Add {
                name,
                email,
                key,
                no_announce,
                accept_unsigned,
            }) => Request::PeerAdd {
                name: name.clone(),
                email: email.clone(),
                key: *key,
                announce: !no_announce,
                accept_unsigned: *accept_unsigned,
            },
            Self::Peer(PeerCommand::Remove { name }) => Request::PeerRemove { name: name.clone() },
            Self::Outbox { .. } => Request::Outbox,
            Self::Announce { peers } => Request::Announce {
                peers: peers.clone(),
            },
            Self::Check => Request::Check,
            Self::Call { name, wait } => Request::Call {
                peer: name.clone(),
                wait_secs: *wait,
            },
            Self::Connect { name } => Request::Connect { peer: name.clone() },
            Self::Disconnect { name } => Request::Disconnect { peer: name.clone() },
            Self::Open { name, service } => Request::Open {
                peer: name.clone(),
                service: service.clone(),
            },
            Self::Link(LinkCommand::Up) => Request::LinkUp,
            Self::Link(LinkCommand::Down) => Request::LinkDown,
            Self::Link(LinkCommand::Status { .. }) => Request::LinkStatus,
            Self::Events { .. } => Request::Events,
            Self::Key { .. } => Request::Key,
            Self::Completions { .. } => return None,
        })
    }

    /// Whether the answer is to be printed as JSON.
    fn json(&self) -> bool {
        match self {
            Self::Status { output }
            | Self::Peers { output }
            | Self::Outbox { output }
            | Self::Link(LinkCommand::Status { output })
            | Self::Key { output } => output.json,
            Self::Events { json } => *json,
            _ => false,
        }
    }

    /// How long to wait for the daemon's answer.
    fn timeout(&self) -> Duration {
        match self {
            Self::Call { wait, .. } => Duration::from_secs(*wait).saturating_add(CALL_GRACE),
            Self::Peer(_)
            | Self::Announce { .. }
            | Self::Check
            | Self::Connect { .. }
            | Self::Disconnect { .. }
            | Self::Open { .. }
            | Self::Link(LinkCommand::Up | LinkCommand::Down) => SLOW_TIMEOUT,
            _ => QUICK_TIMEOUT,
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

/// Why peerctl stops with a status other than 0.
#[derive(Debug)]
struct Failure {
    /// The exit status.
    status: u8,
    /// What went wrong (after "peerctl: cannot ACTION: ").
    message: String,
}

impl Failure {
    fn new(status: u8, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// The failure a client error means, with a hint where one helps.
    fn from_client(e: &ClientError) -> Self {
        match e {
            ClientError::Unreachable { .. } => Self::new(
                exit::UNAVAILABLE,
                format!("{e} (is peerd running? try `systemctl status peerd`)"),
            ),
            ClientError::PermissionDenied { .. } => Self::new(
                exit::NOPERM,
                format!(
                    "{e}; run as root or as a member of the group in [control] group of peerd.toml"
                ),
            ),
            ClientError::TimedOut(_) => Self::new(exit::TEMPFAIL, e.to_string()),
            ClientError::Closed => Self::new(exit::UNAVAILABLE, e.to_string()),
            ClientError::Refused(refusal) => Self::new(
                match refusal.kind {
                    ErrorKind::PermissionDenied => exit::NOPERM,
                    ErrorKind::Timeout => exit::TEMPFAIL,
                    ErrorKind::Unavailable => exit::UNAVAILABLE,
                    _ => exit::FAILED,
                },
                output::clean(&refusal.message).into_owned(),
            ),
            _ => Self::new(exit::FAILED, e.to_string()),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Self::from_client(&e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // Nowhere better to report a failing stderr.
            let _ = writeln!(
                io::stderr().lock(),
                "peerctl: cannot {}: {}",
                cli.command.action(),
                failure.message
            );
            ExitCode::from(failure.status)
        },
    }
}

/// Does the command: asks the daemon, prints the answer.
fn run(cli: &Cli) -> Result<(), Failure> {
    let Some(request) = cli.command.request() else {
        if let Command::Completions { shell } = &cli.command {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "peerctl", &mut out);
            return output::write_stdout(&out);
        }
        return Ok(());
    };
    let socket = cli.socket();
    let mut client = Client::connect(&socket, SOFTWARE, CONNECT_TIMEOUT)?;
    let json = cli.command.json();
    match &cli.command {
        Command::Events { .. } => follow_events(&mut client, &socket, json),
        Command::Open { .. } => {
            // The answer is StreamOpen (the client checks that it fits the
            // request); from here on the socket carries the stream.
            client.request(&request, Some(cli.command.timeout()))?;
            let (stream, early) = client.into_stream();
            bridge::run(stream, &early)
        },
        _ => {
            let response = client.request(&request, Some(cli.command.timeout()))?;
            output::print_response(&response, json)
        },
    }
}

/// `events`: prints each event as it comes, until interrupted.
fn follow_events(client: &mut Client, socket: &Path, json: bool) -> Result<(), Failure> {
    client.request(&Request::Events, Some(QUICK_TIMEOUT))?;
    loop {
        match client.next_event()? {
            Some(event) => {
                if !output::print_event(&event, json)? {
                    // stdout closed (`peerctl events | head`): done
                    return Ok(());
                }
            },
            None => {
                return Err(Failure::new(
                    exit::UNAVAILABLE,
                    format!("peerd at {} closed the event stream", socket.display()),
                ));
            },
        }
    }
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
