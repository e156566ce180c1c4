//! Receiving by IMAP: find our mail with server-side searches, download
//! only that, and leave everything else exactly as it was.
//!
//! - The server searches (`UID SEARCH ... HEADER X-Peerd ""`, plus `FROM`
//!   for peers whose plain mail we accept), so peerd never fetches other
//!   people's mail, not even its headers. Bodies are fetched with
//!   `BODY.PEEK[]`, which does not set `\Seen`, and only below
//!   `max_message_size`.
//! - Each folder's position is its UIDVALIDITY and the highest UID
//!   examined; every scan starts above it (a catch-up after every IDLE
//!   wake-up and every reconnect), so nothing that arrived between two
//!   IDLEs is missed. A new UIDVALIDITY starts the folder over.
//! - The highest UID is taken *before* searching, so a mail that arrives
//!   during the scan is left for the next one instead of being skipped.
//! - Only our own accepted messages are deleted or moved, by UID
//!   (`UID EXPUNGE` needs UIDPLUS: without it peerd keeps the mail rather
//!   than risk expunging messages someone else marked `\Deleted`).
//! - Every command has a timeout; IDLE is re-issued at most every five
//!   minutes, and a stalled IDLE (no answer to DONE) drops the connection.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_imap::{Client, Session};
use futures::TryStreamExt;
use peerd_config::{IncomingConfig, Security};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

use crate::stream::{Capped, MailStream};

/// The longest an IDLE is kept before the folders are checked again.
pub const IDLE_PERIOD: Duration = Duration::from_secs(5 * 60);
/// The most bytes read on one IMAP connection before it is dropped and
/// made again (at least this; more when `max_message_size` is large).
pub const READ_CAP: u64 = 64 << 20;
/// The longest line accepted is `max_message_size` plus this, or
/// [`MIN_MAX_LINE`] if that is more: a fetched message may be one long
/// line, and a SEARCH answer lists its UIDs on one line.
pub const MAX_LINE_SLACK: u64 = 64 * 1024;
/// The least the longest accepted line may be.
pub const MIN_MAX_LINE: u64 = 1 << 20;

/// A failure talking to the IMAP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapError {
    /// What went wrong (never contains the password).
    pub message: String,
    /// Whether trying again later may help (network, timeouts) or not
    /// without a change (authentication refused, no STARTTLS).
    pub transient: bool,
}

impl fmt::Display for ImapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ImapError {}

fn transient(message: impl Into<String>) -> ImapError {
    ImapError {
        message: message.into(),
        transient: true,
    }
}

fn permanent(message: impl Into<String>) -> ImapError {
    ImapError {
        message: message.into(),
        transient: false,
    }
}

/// Runs one step with the command timeout.
async fn step<T, E: fmt::Display>(
    what: &str,
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, ImapError> {
    match timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(transient(format!("IMAP {what}: {e}"))),
        Err(_) => Err(transient(format!(
            "IMAP {what}: no answer within {limit:?}"
        ))),
    }
}

/// Where a folder was left: scans continue above `last_uid` as long as
/// the server's UIDVALIDITY is still `uid_validity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderMark {
    /// The folder's UIDVALIDITY when it was scanned.
    pub uid_validity: u32,
    /// The highest UID examined.
    pub last_uid: u32,
}

/// A mail the search found, downloaded (or too large to be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundMail {
    /// Its UID in the folder.
    pub uid: u32,
    /// The whole message, or `None` when it is over the size limit and
    /// was not downloaded.
    pub raw: Option<Vec<u8>>,
    /// Its size as the server reports it.
    pub size: u64,
}

/// What one scan of a folder found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderScan {
    /// Where to continue next time.
    pub mark: FolderMark,
    /// Candidate mails, oldest first.
    pub found: Vec<FoundMail>,
}

/// An authenticated IMAP session.
pub struct ImapMailbox {
    session: Session<Capped<MailStream>>,
    limit: Duration,
    idle: bool,
    uidplus: bool,
    move_ext: bool,
    selected: Option<String>,
    /// The highest UID the last scan of each folder covered: a folder
    /// whose UIDNEXT is beyond it when IDLE is to start got mail since.
    scanned: std::collections::HashMap<String, u32>,
    /// The server said "new mail" (EXISTS, RECENT) while we were busy with
    /// other commands; IDLE would not say it again.
    new_mail: bool,
}

impl fmt::Debug for ImapMailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapMailbox")
            .field("idle", &self.idle)
            .field("uidplus", &self.uidplus)
            .field("selected", &self.selected)
            .finish_non_exhaustive()
    }
}

fn server_name(host: &str) -> Result<ServerName<'static>, ImapError> {
    ServerName::try_from(host.to_owned()).map_err(|e| permanent(format!("IMAP host {host:?}: {e}")))
}

impl ImapMailbox {
    /// Connects, secures the connection as configured, and logs in.
    pub async fn connect(
        config: &IncomingConfig,
        username: &str,
        password: &Zeroizing<String>,
        tls: Arc<rustls::ClientConfig>,
        limit: Duration,
    ) -> Result<Self, ImapError> {
        let addr = (config.host.as_str(), config.port);
        let tcp = step("connect", limit, TcpStream::connect(addr)).await?;
        let connector = TlsConnector::from(tls);
        // A certificate that does not verify does not get better by
        // retrying: a failed handshake is permanent.
        let handshake = |tcp: TcpStream| async {
            let tls = step(
                "TLS handshake",
                limit,
                connector.connect(server_name(&config.host)?, tcp),
            )
            .await
            .map_err(|e| permanent(e.message))?;
            Ok::<_, ImapError>(MailStream::Tls(Box::new(tls)))
        };
        let stream = match config.security {
            Security::Tls => handshake(tcp).await?,
            Security::StartTls | Security::None => MailStream::Plain(tcp),
        };
        let cap = READ_CAP.max(config.max_message_size.saturating_mul(4));
        // No line we need is longer than the largest mail we download.
        let max_line = config
            .max_message_size
            .saturating_add(MAX_LINE_SLACK)
            .max(MIN_MAX_LINE);
        let mut client = Client::new(Capped::new(stream, cap, max_line));
        let greeting = step("greeting", limit, client.read_response()).await?;
        if greeting.is_none() {
            return Err(transient(
                "IMAP: the server closed the connection before greeting",
            ));
        }
        if config.security == Security::StartTls {
            // No STARTTLS, no login: the password never travels in clear.
            step(
                "STARTTLS",
                limit,
                client.run_command_and_check_ok("STARTTLS", None),
            )
            .await
            .map_err(|e| {
                permanent(format!(
                    "{e} (the server does not offer STARTTLS; not logging in)"
                ))
            })?;
            let MailStream::Plain(tcp) = client.into_inner().into_inner() else {
                return Err(permanent("IMAP: STARTTLS on a TLS connection"));
            };
            client = Client::new(Capped::new(handshake(tcp).await?, cap, max_line));
        }
        let session = match timeout(limit, client.login(username, password.as_str())).await {
            Ok(Ok(session)) => session,
            Ok(Err((e, _))) => {
                return Err(permanent(format!("IMAP login as {username} refused: {e}")));
            },
            Err(_) => return Err(transient(format!("IMAP login: no answer within {limit:?}"))),
        };
        let mut mailbox = Self {
            session,
            limit,
            idle: false,
            uidplus: false,
            move_ext: false,
            selected: None,
            scanned: std::collections::HashMap::new(),
            new_mail: false,
        };
        let caps = step("CAPABILITY", limit, mailbox.session.capabilities()).await?;
        mailbox.idle = caps.has_str("IDLE");
        mailbox.uidplus = caps.has_str("UIDPLUS");
        mailbox.move_ext = caps.has_str("MOVE");
        Ok(mailbox)
    }

    /// Whether the server offers IDLE (otherwise the caller polls).
    pub fn supports_idle(&self) -> bool {
        self.idle
    }

    async fn select(&mut self, folder: &str) -> Result<async_imap::types::Mailbox, ImapError> {
        let limit = self.limit;
        self.selected = None;
        let mailbox = step(
            &format!("SELECT {folder}"),
            limit,
            self.session.select(folder),
        )
        .await?;
        self.selected = Some(folder.to_owned());
        Ok(mailbox)
    }

    /// Scans `folder` above `mark` for mail from a peerd (the `X-Peerd`
    /// header) or from one of `plain_senders`; downloads each below
    /// `max_size`. `Ok(None)` when the folder does not exist.
    pub async fn scan(
        &mut self,
        folder: &str,
        mark: Option<FolderMark>,
        plain_senders: &[String],
        max_size: u64,
    ) -> Result<Option<FolderScan>, ImapError> {
        let limit = self.limit;
        // A SELECT that fails leaves no mailbox selected (RFC 3501 6.3.1).
        self.selected = None;
        let selected = match timeout(limit, self.session.select(folder)).await {
            Ok(Ok(m)) => m,
            // NO [NONEXISTENT] and friends: a Junk folder that is not there yet
            Ok(Err(async_imap::error::Error::No(_))) => return Ok(None),
            Ok(Err(e)) => return Err(transient(format!("IMAP SELECT {folder}: {e}"))),
            Err(_) => {
                return Err(transient(format!(
                    "IMAP SELECT {folder}: no answer within {limit:?}"
                )));
            },
        };
        self.selected = Some(folder.to_owned());
        let uid_validity = selected.uid_validity.unwrap_or(0);
        let after = match mark {
            Some(m) if m.uid_validity == uid_validity => m.last_uid,
            _ => 0,
        };
        // The highest UID now: everything up to it is examined in this
        // scan, anything that arrives later gets a higher UID. UIDNEXT is
        // required in SELECT's answer (RFC 3501 6.3.1); a server without
        // it is asked with a search instead.
        let high = match selected.uid_next {
            Some(next) => Some(next.saturating_sub(1)).filter(|h| *h > after),
            None => step(
                "UID SEARCH",
                limit,
                self.session
                    .uid_search(format!("UID {}:*", after.saturating_add(1))),
            )
            .await?
            .into_iter()
            .filter(|u| *u > after)
            .max(),
        };
        let Some(high) = high else {
            self.note_new_mail();
            self.scanned.insert(folder.to_owned(), after);
            return Ok(Some(FolderScan {
                mark: FolderMark {
                    uid_validity,
                    last_uid: after,
                },
                found: Vec::new(),
            }));
        };
        let query = format!("UID {}:{high} {}", after + 1, search_key(plain_senders));
        let matching: BTreeSet<u32> = step("UID SEARCH", limit, self.session.uid_search(query))
            .await?
            .into_iter()
            .filter(|u| *u > after && *u <= high)
            .collect();
        let mut found = Vec::new();
        if !matching.is_empty() {
            let set = uid_set(&matching);
            let sizes: Vec<(u32, u64)> = {
                let stream = step(
                    "UID FETCH",
                    limit,
                    self.session.uid_fetch(&set, "(UID RFC822.SIZE)"),
                )
                .await?;
                step("UID FETCH", limit, stream.try_collect::<Vec<_>>())
                    .await?
                    .iter()
                    .filter_map(|f| Some((f.uid?, u64::from(f.size?))))
                    .collect()
            };
            for (uid, size) in sizes {
                if !matching.contains(&uid) {
                    continue;
                }
                let raw = if size <= max_size {
                    let stream = step(
                        "UID FETCH",
                        limit,
                        self.session.uid_fetch(uid.to_string(), "(UID BODY.PEEK[])"),
                    )
                    .await?;
                    let fetches = step("UID FETCH", limit, stream.try_collect::<Vec<_>>()).await?;
                    fetches
                        .iter()
                        .find(|f| f.uid == Some(uid))
                        .and_then(|f| f.body())
                        .map(<[u8]>::to_vec)
                } else {
                    None
                };
                found.push(FoundMail { uid, raw, size });
            }
            found.sort_by_key(|f| f.uid);
        }
        self.note_new_mail();
        self.scanned.insert(folder.to_owned(), high);
        Ok(Some(FolderScan {
            mark: FolderMark {
                uid_validity,
                last_uid: high,
            },
            found,
        }))
    }

    /// Deletes one of *our* messages by UID. Returns false (and leaves it)
    /// when the server lacks UIDPLUS.
    pub async fn delete(&mut self, folder: &str, uid: u32) -> Result<bool, ImapError> {
        if !self.uidplus {
            return Ok(false);
        }
        self.ensure_selected(folder).await?;
        let limit = self.limit;
        let stored = step(
            "UID STORE",
            limit,
            self.session
                .uid_store(uid.to_string(), "+FLAGS.SILENT (\\Deleted)"),
        )
        .await?;
        step("UID STORE", limit, stored.try_collect::<Vec<_>>()).await?;
        let expunged = step(
            "UID EXPUNGE",
            limit,
            self.session.uid_expunge(uid.to_string()),
        )
        .await?;
        step("UID EXPUNGE", limit, expunged.try_collect::<Vec<_>>()).await?;
        Ok(true)
    }

    /// Moves one of our messages to `target` (created if missing).
    pub async fn move_to(
        &mut self,
        folder: &str,
        uid: u32,
        target: &str,
    ) -> Result<bool, ImapError> {
        let limit = self.limit;
        // CREATE fails with NO when it exists: that is fine.
        let _ = timeout(limit, self.session.create(target)).await;
        self.ensure_selected(folder).await?;
        if self.move_ext {
            step(
                "UID MOVE",
                limit,
                self.session.uid_mv(uid.to_string(), target),
            )
            .await?;
            return Ok(true);
        }
        if !self.uidplus {
            return Ok(false);
        }
        step(
            "UID COPY",
            limit,
            self.session.uid_copy(uid.to_string(), target),
        )
        .await?;
        self.delete(folder, uid).await
    }

    async fn ensure_selected(&mut self, folder: &str) -> Result<(), ImapError> {
        if self.selected.as_deref() != Some(folder) {
            let mailbox = self.select(folder).await?;
            // Mail that came while other folders were scanned shows only
            // in this SELECT's answer, never again during IDLE.
            if let (Some(next), Some(high)) = (mailbox.uid_next, self.scanned.get(folder))
                && next.saturating_sub(1) > *high
            {
                self.new_mail = true;
            }
        }
        Ok(())
    }

    /// Reads what the server said unasked; remembers whether it announced
    /// new mail (the rest - EXPUNGE of our own deletions, FETCH flags - is
    /// of no interest).
    fn note_new_mail(&mut self) {
        while let Ok(r) = self.session.unsolicited_responses.try_recv() {
            if matches!(
                r,
                async_imap::types::UnsolicitedResponse::Exists(_)
                    | async_imap::types::UnsolicitedResponse::Recent(_)
            ) {
                self.new_mail = true;
            }
        }
    }

    /// Waits in IDLE on `folder` until the server reports a change, `wake`
    /// fires, or [`IDLE_PERIOD`] passes. Returns the session, or an error
    /// after which the connection must be dropped.
    pub async fn idle(
        mut self,
        folder: &str,
        wake: impl Future<Output = ()>,
    ) -> Result<Self, ImapError> {
        self.ensure_selected(folder).await?;
        // Mail announced while the last scan (or disposal) ran: no IDLE,
        // the caller scans again at once.
        self.note_new_mail();
        if std::mem::take(&mut self.new_mail) {
            tracing::debug!(folder, "new mail arrived during the scan: scanning again");
            return Ok(self);
        }
        let limit = self.limit;
        let mut handle = self.session.idle();
        step("IDLE", limit, handle.init()).await?;
        tracing::debug!(folder, "IDLE started");
        {
            let (wait, stop) = handle.wait_with_timeout(IDLE_PERIOD);
            tokio::pin!(wait);
            tokio::pin!(wake);
            let outcome = tokio::select! {
                r = &mut wait => r,
                () = &mut wake => {
                    drop(stop);
                    match timeout(limit, &mut wait).await {
                        Ok(r) => r,
                        Err(_) => return Err(transient("IMAP IDLE: stalled while stopping")),
                    }
                }
            };
            let outcome = outcome.map_err(|e| transient(format!("IMAP IDLE: {e}")))?;
            tracing::debug!(?outcome, "IDLE woke");
        }
        // The watchdog: a dead connection shows here, as no answer to DONE.
        self.session = step("IDLE DONE", limit, handle.done()).await?;
        Ok(self)
    }

    /// Logs out (best effort).
    pub async fn logout(mut self) {
        let _ = timeout(self.limit, self.session.logout()).await;
    }
}

/// The SEARCH key selecting our mail: the X-Peerd header, or a plain
/// sender whose address mail we accept.
fn search_key(plain_senders: &[String]) -> String {
    let mut keys = vec!["HEADER X-Peerd \"\"".to_owned()];
    keys.extend(plain_senders.iter().map(|s| format!("FROM {}", quote(s))));
    // OR is binary in IMAP: OR a OR b c ...
    let mut key = keys.pop().unwrap_or_default();
    while let Some(k) = keys.pop() {
        key = format!("OR {k} {key}");
    }
    key
}

/// An IMAP quoted string (addresses come from the validated config, but
/// quote properly anyway).
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `1,3:5,9` from a set of UIDs.
fn uid_set(uids: &BTreeSet<u32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = uids.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_keys_nest_or_pairwise() {
        assert_eq!(search_key(&[]), "HEADER X-Peerd \"\"");
        assert_eq!(
            search_key(&["a@x.test".into()]),
            "OR HEADER X-Peerd \"\" FROM \"a@x.test\""
        );
        assert_eq!(
            search_key(&["a@x.test".into(), "b@y.test".into()]),
            "OR HEADER X-Peerd \"\" OR FROM \"a@x.test\" FROM \"b@y.test\""
        );
        assert_eq!(quote("a\"b\\c\r\n"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn uid_sets_compress_runs() {
        let set: BTreeSet<u32> = [1, 3, 4, 5, 9, 10, 12].into();
        assert_eq!(uid_set(&set), "1,3:5,9:10,12");
        assert_eq!(uid_set(&BTreeSet::new()), "");
    }
}
