//! The answers as people read them (aligned text) and as scripts read
//! them (`--json`: one JSON document, the response's payload as the
//! control protocol carries it; `events --json`: one object per line).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::SystemTime;

use peerd_control::{
    CandidateInfo, Event, EventKind, KeyInfo, LinkInfo, LinkState, OutboxList, PeerList, PeerState,
    Response, StatusInfo, Timestamp,
};
use serde::Serialize;

use crate::{Failure, exit};

/// Prints a response: its payload as JSON, or as text.
pub fn print_response(response: &Response, json: bool) -> Result<(), Failure> {
    let text = match response {
        Response::Status(status) if json => to_json(status),
        Response::Status(status) => status_text(status),
        Response::Peers(peers) if json => to_json(peers),
        Response::Peers(peers) => peers_text(peers),
        Response::Outbox(outbox) if json => to_json(outbox),
        Response::Outbox(outbox) => outbox_text(outbox),
        Response::Link(link) if json => to_json(link),
        Response::Link(link) => format!("{}\n", link_text(link)),
        Response::Key(key) if json => to_json(key),
        Response::Key(key) => key_text(key),
        Response::PeerAdded(peer) => format!(
            "added peer {} <{}>{}\n",
            peer.name,
            peer.email,
            peer.fingerprint
                .as_deref()
                .map(|f| format!(", key {}", clean(f)))
                .unwrap_or_default()
        ),
        Response::PeerRemoved(p) => format!("removed peer {}\n", p.peer),
        Response::Announced(a) if a.peers.is_empty() => "no peer to announce to\n".to_owned(),
        Response::Announced(a) => format!("announcement queued for {}\n", names(&a.peers)),
        Response::Checked => "mailbox checked\n".to_owned(),
        Response::Connected(s) => format!("{} connected at {}\n", s.peer, s.address),
        Response::Disconnected(p) => format!("disconnected from {}\n", p.peer),
        // Not the answer to a command that prints (the client checked).
        Response::Hello(_)
        | Response::Error(_)
        | Response::StreamOpen(_)
        | Response::Subscribed => String::new(),
    };
    write_stdout(text.as_bytes())
}

/// Prints one event as a line; false when stdout is closed.
pub fn print_event(event: &Event, json: bool) -> Result<bool, Failure> {
    let line = if json {
        let mut line = serde_json::to_string(event)
            .map_err(|e| Failure::new(exit::FAILED, format!("cannot write JSON: {e}")))?;
        line.push('\n');
        line
    } else {
        format!("{}\n", event_text(event))
    };
    let mut out = io::stdout().lock();
    match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(write_failure(&e)),
    }
}

/// Writes command output; a reader that went away (`| head`) is not an
/// error.
pub fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(write_failure(&e)),
    }
}

fn write_failure(e: &io::Error) -> Failure {
    Failure::new(exit::FAILED, format!("cannot write to stdout: {e}"))
}

/// One JSON document, pretty-printed, with a final newline.
fn to_json<T: Serialize>(value: &T) -> String {
    // Our payloads only have string keys: serializing cannot fail.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Text from the daemon, safe for a terminal: control characters (an
/// escape sequence in a forged mail's error, say) are shown escaped.
pub fn clean(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

/// Names joined with ", ".
fn names<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A time and how far it is from now: `2026-11-26T09:30:00Z (5m ago)`.
fn when(t: Timestamp) -> String {
    let now = SystemTime::now();
    let then = t.system_time();
    let relative = match now.duration_since(then) {
        Ok(ago) => format!("{} ago", span(ago.as_secs())),
        Err(ahead) => format!("in {}", span(ahead.duration().as_secs())),
    };
    format!("{t} ({relative})")
}

/// A duration the way people say it: `45s`, `12m`, `3h`, `2d`.
fn span(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

fn or_dash(text: Option<String>) -> String {
    text.unwrap_or_else(|| "-".to_owned())
}

fn candidates(list: &[CandidateInfo]) -> String {
    if list.is_empty() {
        "-".to_owned()
    } else {
        names(&list.iter().map(|c| c.address).collect::<Vec<_>>())
    }
}

/// Rows with a header, in columns two spaces apart (the last one not
/// padded).
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// `up on ppp0 since ... (pppd, on demand)`.
fn link_text(link: &LinkInfo) -> String {
    let mut text = match link.state {
        LinkState::Up => format!("up on {}", clean(link.interface.as_deref().unwrap_or("?"))),
        LinkState::Failed => format!(
            "failed: {}",
            clean(link.reason.as_deref().unwrap_or("no reason given"))
        ),
        state => state.as_str().to_owned(),
    };
    if let Some(since) = link.since {
        let _ = write!(text, " since {}", when(since));
    }
    if let Some(retry) = link.retry_at {
        let _ = write!(text, "; next attempt {}", when(retry));
    }
    let _ = write!(
        text,
        " (driver {}{})",
        link.driver.as_str(),
        if link.on_demand { ", on demand" } else { "" }
    );
    text
}

fn status_text(s: &StatusInfo) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        (
            "name",
            format!("{} ({})", clean(&s.name), clean(&s.fingerprint)),
        ),
        ("link", link_text(&s.link)),
    ];
    let iface = &s.interface;
    rows.push((
        "interface",
        format!(
            "{} (configured: {}), {}",
            clean(iface.name.as_deref().unwrap_or("none")),
            clean(&iface.configured),
            if iface.up { "up" } else { "down" }
        ),
    ));
    if iface.addresses.is_empty() {
        rows.push(("addresses", "none".to_owned()));
    }
    for (i, a) in iface.addresses.iter().enumerate() {
        let mut text = format!("{}/{} {}", a.ip, a.prefix_len, a.class);
        for (flag, name) in [
            (a.announced, "announced"),
            (a.temporary, "temporary"),
            (a.deprecated, "deprecated"),
            (a.tentative, "tentative"),
        ] {
            if flag {
                text.push(' ');
                text.push_str(name);
            }
        }
        rows.push((if i == 0 { "addresses" } else { "" }, text));
    }
    let m = &s.mailbox;
    let mut mailbox = format!(
        "{}, {}; last check {}",
        m.protocol.as_str(),
        if m.connected {
            "connected"
        } else {
            "not connected"
        },
        m.last_check.map_or_else(|| "never".to_owned(), when)
    );
    if let Some(next) = m.next_check {
        let _ = write!(mailbox, "; next check {}", when(next));
    }
    let _ = write!(mailbox, "; {} pending; {} rejected", m.pending, m.rejected);
    if let Some(error) = &m.last_error {
        let _ = write!(mailbox, "; last error: {}", clean(error));
    }
    rows.push(("mailbox", mailbox));
    rows.push(("outbox", format!("{} waiting", s.outbox_size)));
    if s.connected_peers.is_empty() {
        rows.push(("connected", "none".to_owned()));
    }
    for (i, c) in s.connected_peers.iter().enumerate() {
        rows.push((
            if i == 0 { "connected" } else { "" },
            format!("{} at {} since {}", c.peer, c.address, when(c.since)),
        ));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 2;
    let mut text = String::new();
    for (key, value) in rows {
        let _ = writeln!(text, "{key:width$}{value}");
    }
    text
}

fn peers_text(list: &PeerList) -> String {
    if list.peers.is_empty() {
        return "no peers in the address book\n".to_owned();
    }
    let rows: Vec<Vec<String>> = list
        .peers
        .iter()
        .map(|p| {
            vec![
                p.name.to_string(),
                p.email.to_string(),
                or_dash(p.fingerprint.as_deref().map(|f| clean(f).into_owned())),
                candidates(&p.addresses),
                p.announced_at.map_or_else(|| "never".to_owned(), when),
                match (p.state, &p.last_error) {
                    (PeerState::Failed, Some(e)) => format!("failed: {}", clean(e)),
                    (state, _) => state.as_str().to_owned(),
                },
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "EMAIL",
            "FINGERPRINT",
            "ADDRESSES",
            "ANNOUNCED",
            "STATE",
        ],
        &rows,
    )
}

fn outbox_text(outbox: &OutboxList) -> String {
    if outbox.entries.is_empty() {
        return "the outbox is empty\n".to_owned();
    }
    let rows: Vec<Vec<String>> = outbox
        .entries
        .iter()
        .map(|e| {
            let mut state = e.state.as_str().to_owned();
            if e.rate_limited {
                state.push_str(" (rate-limited)");
            }
            vec![
                e.peer.to_string(),
                state,
                candidates(&e.addresses),
                e.attempts.to_string(),
                e.next_attempt.map_or_else(|| "-".to_owned(), when),
                or_dash(e.last_error.as_deref().map(|s| clean(s).into_owned())),
            ]
        })
        .collect();
    table(
        &[
            "PEER",
            "STATE",
            "ADDRESSES",
            "ATTEMPTS",
            "NEXT ATTEMPT",
            "LAST ERROR",
        ],
        &rows,
    )
}

fn key_text(key: &KeyInfo) -> String {
    format!("{}\n{}\n", key.public_key, clean(&key.fingerprint))
}

/// `2026-11-26T09:30:00Z peer-connected hitoshi at 198.51.100.7:7447`.
fn event_text(event: &Event) -> String {
    let detail = match &event.kind {
        EventKind::AddressChanged {
            interface,
            addresses,
        } => format!(
            "{}: {}",
            clean(interface.as_deref().unwrap_or("no interface")),
            if addresses.is_empty() {
                "no address".to_owned()
            } else {
                names(addresses)
            }
        ),
        EventKind::AnnouncementSent {
            peer,
            addresses,
            sequence,
        } => format!(
            "to {peer}: {}{}",
            candidates(addresses),
            sequence
                .map(|s| format!(" (sequence {s})"))
                .unwrap_or_default()
        ),
        EventKind::SendFailed {
            peer,
            error,
            permanent,
        } => format!(
            "to {peer}: {}{}",
            clean(error),
            if *permanent { " (given up)" } else { "" }
        ),
        EventKind::AnnouncementReceived {
            peer,
            addresses,
            sequence,
        } => format!(
            "from {peer}: {} (sequence {sequence})",
            candidates(addresses)
        ),
        EventKind::AnnouncementRejected { sender, reason } => {
            format!("from {}: {}", clean(sender), clean(reason))
        },
        EventKind::PeerConnected { peer, address } => format!("{peer} at {address}"),
        EventKind::PeerDisconnected { peer, reason } => format!("{peer}: {}", clean(reason)),
        EventKind::LinkStateChanged {
            state,
            interface,
            reason,
        } => {
            let mut text = state.as_str().to_owned();
            if let Some(interface) = interface {
                let _ = write!(text, " on {}", clean(interface));
            }
            if let Some(reason) = reason {
                let _ = write!(text, ": {}", clean(reason));
            }
            text
        },
        EventKind::PeerAdded { peer } | EventKind::PeerRemoved { peer } => peer.to_string(),
        EventKind::MailboxError { error } => clean(error).into_owned(),
        EventKind::Missed { count } => {
            format!(
                "{count} events missed (this client fell behind; `peerctl status` shows the state)"
            )
        },
        _ => String::new(),
    };
    format!("{} {} {detail}", event.at, event.kind.name())
        .trim_end()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_do_not_pad_the_last_column() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["é".into(), "y  ".into()],
            ],
        );
        assert_eq!(t, "A          LONGER\nwide cell  x\né          y\n");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("plain"), "plain");
        assert_eq!(clean("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\n");
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(5), "5s");
        assert_eq!(span(600), "10m");
        assert_eq!(span(7200), "2h");
        assert_eq!(span(3 * 86_400), "3d");
    }
}
