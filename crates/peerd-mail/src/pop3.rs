//! Receiving by POP3 (with the project's own client, `peerd-pop3`).
//!
//! POP3 has no search and no flags, so the ledger does the remembering:
//! every message is examined once, by UIDL. Headers come first (`TOP n 0`)
//! and only our mail (the `X-Peerd` header, or a plain sender we accept)
//! is downloaded, never above `max_message_size`. Deletions happen only
//! for our own accepted messages and take effect at `QUIT`; the ledger is
//! written after it, so a dropped connection costs at most a second look.

use std::collections::BTreeMap;
use std::time::SystemTime;

use mail_parser::MessageParser;
use peerd_pop3::{ConnectOptions, Pop3Client};
use peerd_state::{MailOutcome, Store};
use tracing::debug;
use zeroize::Zeroizing;

use crate::courier::Verdict;

/// The most header bytes read to recognise a mail.
const MAX_HEADER_BYTES: u64 = 64 * 1024;

/// What one poll needs.
pub(crate) struct PollSettings<'a> {
    pub(crate) options: ConnectOptions,
    pub(crate) user: &'a str,
    pub(crate) password: &'a Zeroizing<String>,
    /// The ledger's name for this mailbox.
    pub(crate) account: &'a str,
    /// Addresses whose plain mail may carry a hint.
    pub(crate) senders: &'a [String],
    pub(crate) max_size: u64,
    /// `processed = "delete"`.
    pub(crate) delete: bool,
}

/// Whether headers mark a mail we must look at: ours, or from a sender
/// whose plain mail we accept.
fn interesting(headers: &[u8], senders: &[String]) -> bool {
    let Some(message) = MessageParser::new().parse_headers(headers) else {
        return false;
    };
    if message.header_raw("X-Peerd").is_some() {
        return true;
    }
    message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .is_some_and(|from| senders.iter().any(|s| s.eq_ignore_ascii_case(from)))
}

/// Checks the mailbox once. `report_pending` hears how many messages are
/// still to be examined: all the ledger has not seen once the list is in,
/// 0 once the ledger holds them (until then a broken-off poll leaves them
/// all for the next).
pub(crate) async fn poll(
    store: &Store,
    settings: PollSettings<'_>,
    judge: impl Fn(&[u8]) -> Verdict,
    oversize: impl Fn(u64) -> Verdict,
    report_pending: impl Fn(usize),
) -> Result<(), String> {
    let err = |e: peerd_pop3::Error| {
        format!(
            "POP3 {}:{}: {e}",
            settings.options.host, settings.options.port
        )
    };
    let mut client = Pop3Client::connect(settings.options.clone())
        .await
        .map_err(err)?;
    client
        .login(settings.user, settings.password.as_str())
        .await
        .map_err(err)?;
    let sizes: BTreeMap<u32, u64> = client.list().await.map_err(err)?.into_iter().collect();
    let uidls = client.uidl().await.map_err(err)?;
    let seen = store
        .pop3_seen(settings.account)
        .map_err(|e| e.to_string())?;
    report_pending(
        uidls
            .iter()
            .filter(|(msg, uidl)| !seen.contains_key(uidl) && sizes.contains_key(msg))
            .count(),
    );
    let mut examined: Vec<(String, MailOutcome)> = Vec::new();
    for (msg, uidl) in &uidls {
        if seen.contains_key(uidl) {
            continue;
        }
        let Some(&size) = sizes.get(msg) else {
            continue;
        };
        let headers = client
            .top_headers(*msg, MAX_HEADER_BYTES)
            .await
            .map_err(err)?;
        let verdict = if !interesting(&headers, settings.senders) {
            Verdict::NotOurs
        } else if size > settings.max_size {
            oversize(size)
        } else {
            let raw = client.retr(*msg, settings.max_size).await.map_err(err)?;
            judge(&raw)
        };
        if verdict == Verdict::Ours && settings.delete {
            client.dele(*msg).await.map_err(err)?;
        }
        debug!(uidl, ?verdict, "POP3 message examined");
        examined.push((uidl.clone(), verdict.outcome()));
    }
    client.quit().await.map_err(err)?;
    let now = SystemTime::now();
    store
        .record_pop3_many(
            settings.account,
            examined.iter().map(|(u, o)| (u.as_str(), o)),
            now,
        )
        .map_err(|e| e.to_string())?;
    report_pending(0);
    store
        .retain_pop3(settings.account, uidls.iter().map(|(_, u)| u.as_str()))
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_our_mail_and_accepted_plain_senders_from_headers() {
        let senders = vec!["oldbox@example.org".to_owned()];
        assert!(interesting(
            b"From: a@b.test\r\nX-Peerd: sealed; v=1\r\n\r\n",
            &senders
        ));
        assert!(interesting(
            b"From: OldBox@Example.org\r\nSubject: hi\r\n\r\n",
            &senders
        ));
        assert!(!interesting(
            b"From: friend@example.org\r\nSubject: hi\r\n\r\n",
            &senders
        ));
        assert!(!interesting(b"\x00\xff garbage", &senders));
    }
}
