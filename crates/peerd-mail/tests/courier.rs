//! The courier end to end on the real mail stack (Postfix + Dovecot on
//! loopback): alice announces, hitoshi receives, over IMAP IDLE and POP3;
//! other mail stays exactly as it was; outages queue; forgeries are
//! rejected with their reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{HostOptions, Incoming, candidate, pair, peer};
use peerd_announce::{MailHeaders, Rejection, new_message_id, seal, sealed_mail};
use peerd_mail::CourierEvent;
use peerd_state::OutboxState;
use peerd_testkit::MailStack;

const WITHIN: Duration = Duration::from_secs(30);

async fn announce_and_receive(incoming: Incoming, processed: &'static str) {
    let stack = MailStack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hitoshi_opts = HostOptions {
        incoming,
        processed,
        ..HostOptions::default()
    };
    let (mut alice, mut hitoshi) = pair(&stack, dir.path(), &HostOptions::default(), &hitoshi_opts);
    // hitoshi is connected before anything is sent (IDLE running)
    if incoming == Incoming::Imap {
        hitoshi.wait_mailbox_session(WITHIN).await;
    }
    let addrs = vec![
        candidate("203.0.113.7:7447"),
        candidate("[2001:db8::7]:7447"),
    ];
    let covered = alice.handle.announce(None, addrs.clone()).await.unwrap();
    assert_eq!(covered, [peer("hitoshi")]);
    alice
        .wait_for(WITHIN, |e| match e {
            CourierEvent::AnnouncementSent {
                peer: p, sequence, ..
            } if p.as_str() == "hitoshi" => *sequence,
            _ => None,
        })
        .await;
    if incoming == Incoming::Pop3 {
        hitoshi.handle.check_now();
    }
    let (from, got) = hitoshi
        .wait_for(WITHIN, |e| match e {
            CourierEvent::AnnouncementReceived {
                peer, candidates, ..
            } => Some((peer.clone(), candidates.clone())),
            _ => None,
        })
        .await;
    assert_eq!(from.as_str(), "alice");
    assert_eq!(got, addrs);
    // handled per `processed`
    let user = "hitoshi@isp-b.test";
    match processed {
        "delete" => stack
            .wait_for_count(user, "INBOX", 0, WITHIN)
            .await
            .unwrap(),
        "keep" => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let kept = stack.fetch_all(user, "INBOX").await.unwrap();
            assert_eq!(kept.len(), 1);
            assert!(
                kept[0].flags.is_empty(),
                "no flag added: {:?}",
                kept[0].flags
            );
        },
        moved => {
            let folder = moved.strip_prefix("move:").unwrap();
            stack.wait_for_count(user, folder, 1, WITHIN).await.unwrap();
            stack
                .wait_for_count(user, "INBOX", 0, WITHIN)
                .await
                .unwrap();
        },
    }
    // alice waits for the peer's acknowledgement (auto_connect peers ack
    // by connecting, which arrives with the connector)
    let entry = alice
        .store
        .entries(&Default::default(), SystemTime::now())
        .unwrap();
    assert_eq!(entry.len(), 1);
    assert_eq!(entry[0].state, OutboxState::AwaitingAck);
    alice.stop().await;
    hitoshi.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_idle_delivers_an_announcement_and_it_is_deleted() {
    announce_and_receive(Incoming::Imap, "delete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_moves_a_processed_announcement_when_asked() {
    announce_and_receive(Incoming::Imap, "move:peerd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_keeps_a_processed_announcement_untouched_when_asked() {
    announce_and_receive(Incoming::Imap, "keep").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop3_delivers_an_announcement_and_it_is_deleted() {
    announce_and_receive(Incoming::Pop3, "delete").await;
}

/// 50 mails that are not ours: plain, multipart, large, with and without
/// flags. After the courier ran they are all still there, byte for byte,
/// with the same flags (no `\Seen` added).
async fn unrelated_mail_is_left_exactly(incoming: Incoming) {
    let stack = MailStack::start().await;
    let user = "hitoshi@isp-b.test";
    let mut originals = Vec::new();
    for i in 0..50u32 {
        let raw = unrelated_mail(i);
        let flags: &[&str] = match i % 4 {
            0 => &[],
            1 => &["\\Seen"],
            2 => &["\\Flagged", "$Label1"],
            _ => &["\\Answered"],
        };
        stack.append(user, "INBOX", &raw, flags).await.unwrap();
        originals.push(raw);
    }
    let before = stack.fetch_all(user, "INBOX").await.unwrap();
    assert_eq!(before.len(), 50);

    let dir = tempfile::tempdir().unwrap();
    let hitoshi_opts = HostOptions {
        incoming,
        ..HostOptions::default()
    };
    let (alice, mut hitoshi) = pair(&stack, dir.path(), &HostOptions::default(), &hitoshi_opts);
    alice
        .handle
        .announce(None, vec![candidate("198.51.100.20:7447")])
        .await
        .unwrap();
    hitoshi.handle.check_now();
    hitoshi
        .wait_for(WITHIN, |e| {
            matches!(e, CourierEvent::AnnouncementReceived { .. }).then_some(())
        })
        .await;
    stack
        .wait_for_count(user, "INBOX", 50, WITHIN)
        .await
        .unwrap();
    let after = stack.fetch_all(user, "INBOX").await.unwrap();
    assert_eq!(after.len(), 50);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.uid, b.uid);
        assert_eq!(a.flags, b.flags, "flags of UID {} changed", a.uid);
        assert!(a.raw == b.raw, "bytes of UID {} changed", a.uid);
    }
    for (orig, stored) in originals.iter().zip(&after) {
        assert!(
            stored.raw == *orig,
            "UID {} is not what was appended",
            stored.uid
        );
    }
    alice.stop().await;
    hitoshi.stop().await;
}

fn unrelated_mail(i: u32) -> Vec<u8> {
    let head = format!(
        "From: friend{i}@example.org\r\nTo: hitoshi@isp-b.test\r\nSubject: mail {i}\r\nMessage-ID: <m{i}@example.org>\r\nDate: Tue, 1 Sep 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    );
    let body = match i % 5 {
        // multipart with an attachment
        0 | 1 => format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\nContent-Type: text/plain\r\n\r\nsee attached {i}\r\n--b{i}\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b{i}--\r\n",
            "QUJD".repeat(19 * (i as usize + 1))
        ),
        // large: about 600 KB (above max_message_size, so never downloaded)
        2 => format!(
            "Content-Type: text/plain\r\n\r\n{}",
            format!("line {i} of a large mail, padded to a decent length\r\n").repeat(12_000)
        ),
        // looks a little like ours but is not: no X-Peerd header
        3 => format!("Content-Type: text/plain\r\n\r\nmy new address is 192.0.2.{i}\r\n"),
        _ => format!(
            "Content-Type: text/plain; charset=utf-8\r\n\r\nhello {i} \u{00e9}\r\n.\r\n..dots\r\n"
        ),
    };
    (head + &body).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_unrelated_mails_stay_exactly_as_they_were_over_imap() {
    unrelated_mail_is_left_exactly(Incoming::Imap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_unrelated_mails_stay_exactly_as_they_were_over_pop3() {
    unrelated_mail_is_left_exactly(Incoming::Pop3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_outage_queues_and_only_the_newest_goes_out_sealed_afresh() {
    let stack = MailStack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut hitoshi) = pair(
        &stack,
        dir.path(),
        &HostOptions::default(),
        &HostOptions::default(),
    );
    stack.stop_postfix().await.unwrap();
    alice
        .handle
        .announce(None, vec![candidate("203.0.113.1:7447")])
        .await
        .unwrap();
    let (error, permanent) = alice
        .wait_for(WITHIN, |e| match e {
            CourierEvent::SendFailed {
                error, permanent, ..
            } => Some((error.clone(), *permanent)),
            _ => None,
        })
        .await;
    assert!(!permanent, "an outage is transient: {error}");
    // a newer address while the server is still down: it replaces the old
    alice
        .handle
        .announce(None, vec![candidate("203.0.113.2:7447")])
        .await
        .unwrap();
    let entries = alice
        .store
        .entries(&Default::default(), SystemTime::now())
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].candidates, [candidate("203.0.113.2:7447")]);
    assert!(matches!(
        entries[0].state,
        OutboxState::Pending | OutboxState::SendingBackoff
    ));

    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = SystemTime::now();
    stack.start_postfix().await.unwrap();
    alice.handle.send_now(None).await.unwrap();
    let sequence = hitoshi
        .wait_for(WITHIN, |e| match e {
            CourierEvent::AnnouncementReceived {
                candidates,
                sequence,
                ..
            } => {
                assert_eq!(
                    candidates,
                    &[candidate("203.0.113.2:7447")],
                    "only the newest intent goes out"
                );
                Some(*sequence)
            },
            _ => None,
        })
        .await;
    // sealed at send time, not at queue time
    let restarted_us =
        u64::try_from(restarted.duration_since(UNIX_EPOCH).unwrap().as_micros()).unwrap();
    assert!(
        sequence >= restarted_us,
        "sealed before the server came back"
    );
    // and nothing else arrives
    let more = hitoshi.drain(Duration::from_secs(3)).await;
    assert!(
        !more
            .iter()
            .any(|e| matches!(e, CourierEvent::AnnouncementReceived { .. })),
        "{more:?}"
    );
    alice.stop().await;
    hitoshi.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_mail_from_a_peer_that_does_not_connect_ends_resending() {
    let stack = MailStack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hitoshi_opts = HostOptions {
        auto_connect: false,
        ..HostOptions::default()
    };
    let (mut alice, mut hitoshi) = pair(&stack, dir.path(), &HostOptions::default(), &hitoshi_opts);
    alice
        .handle
        .announce(None, vec![candidate("203.0.113.9:7447")])
        .await
        .unwrap();
    let sent = alice
        .wait_for(WITHIN, |e| match e {
            CourierEvent::AnnouncementSent { sequence, .. } => *sequence,
            _ => None,
        })
        .await;
    hitoshi
        .wait_for(WITHIN, |e| {
            matches!(e, CourierEvent::AnnouncementReceived { .. }).then_some(())
        })
        .await;
    // hitoshi mails a sealed ack; alice's courier reads it and stops
    let acked = alice
        .wait_for(WITHIN, |e| match e {
            CourierEvent::AckReceived { peer, sequence } if peer.as_str() == "hitoshi" => {
                Some(*sequence)
            },
            _ => None,
        })
        .await;
    assert_eq!(acked, sent);
    let entries = alice
        .store
        .entries(&Default::default(), SystemTime::now())
        .unwrap();
    assert_eq!(entries[0].state, OutboxState::Acknowledged);
    assert_eq!(entries[0].next_attempt, None);
    // the ack mail was ours and was deleted from alice's INBOX too
    stack
        .wait_for_count("alice@isp-a.test", "INBOX", 0, WITHIN)
        .await
        .unwrap();
    alice.stop().await;
    hitoshi.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_announcement_is_resent_per_resend() {
    let stack = MailStack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice_opts = HostOptions {
        resend: "1m",
        ..HostOptions::default()
    };
    let (mut alice, hitoshi) = pair(&stack, dir.path(), &alice_opts, &HostOptions::default());
    // hitoshi does not run: nobody acknowledges
    hitoshi.stop().await;
    alice
        .handle
        .announce(None, vec![candidate("203.0.113.10:7447")])
        .await
        .unwrap();
    let first = alice
        .wait_for(WITHIN, |e| match e {
            CourierEvent::AnnouncementSent { sequence, .. } => *sequence,
            _ => None,
        })
        .await;
    let second = alice
        .wait_for(Duration::from_secs(60) + WITHIN, |e| match e {
            CourierEvent::AnnouncementSent { sequence, .. } => *sequence,
            _ => None,
        })
        .await;
    assert!(second > first, "re-sent sealed afresh with a new sequence");
    let gap_s = (second - first) / 1_000_000;
    assert!(
        (59..=75).contains(&gap_s),
        "re-sent after {gap_s} s, not per resend = 1m"
    );
    // two separate mails reached hitoshi's mailbox
    stack
        .wait_for_count("hitoshi@isp-b.test", "INBOX", 2, WITHIN)
        .await
        .unwrap();
    alice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_announcements_are_rejected_with_the_reason_and_left_in_the_mailbox() {
    let stack = MailStack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut hitoshi) = pair(
        &stack,
        dir.path(),
        &HostOptions::default(),
        &HostOptions::default(),
    );
    alice.stop().await;
    let hitoshi_key = common::identity("hitoshi").public_key();
    let now = SystemTime::now();
    let build = |signer: &peerd_core::Identity, tamper: bool| {
        let message = peerd_announce::announcement(
            signer,
            hitoshi_key,
            peerd_announce::next_sequence(None, now).unwrap(),
            now,
            Duration::from_secs(3600),
            vec![candidate("198.51.100.66:7447")],
        )
        .unwrap();
        let mut envelope = seal(signer, &message).unwrap();
        if tamper {
            let n = envelope.len() - 10;
            envelope[n] ^= 0x40;
        }
        let id = new_message_id("alice@isp-a.test").unwrap();
        sealed_mail(
            &MailHeaders {
                from_name: "alice",
                from: "alice@isp-a.test",
                to: "hitoshi@isp-b.test",
                date: now,
                message_id: &id,
            },
            &envelope,
        )
        .unwrap()
    };
    // mallory's key, alice's From; then alice's key with a tampered payload
    let mallory = common::identity("mallory");
    let alice_id = common::identity("alice");
    for (mail, want) in [
        (build(&mallory, false), Rejection::UnknownSender),
        (build(&alice_id, true), Rejection::DecryptionFailed),
    ] {
        stack
            .send_raw_via_mx("alice@isp-a.test", &["hitoshi@isp-b.test"], &mail)
            .await
            .unwrap();
        hitoshi.handle.check_now();
        let (peer, from, reason) = hitoshi
            .wait_for(WITHIN, |e| match e {
                CourierEvent::AnnouncementRejected { peer, from, reason } => {
                    Some((peer.clone(), from.clone(), reason.clone()))
                },
                CourierEvent::AnnouncementReceived { .. } => {
                    panic!("a forgery was accepted: {e:?}")
                },
                _ => None,
            })
            .await;
        assert_eq!(reason, want);
        // the name only when the sealing key is in the book; the From,
        // escaped, always
        let expected_peer = (want != Rejection::UnknownSender).then(|| "alice".to_owned());
        assert_eq!(peer.map(|p| p.to_string()), expected_peer);
        assert_eq!(from.as_deref(), Some("alice@isp-a.test"));
    }
    // both are left for the user to inspect
    stack
        .wait_for_count("hitoshi@isp-b.test", "INBOX", 2, WITHIN)
        .await
        .unwrap();
    hitoshi.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_new_peer_takes_effect_without_restart() {
    let stack = MailStack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = common::Host::start(
        &stack,
        &dir.path().join("alice"),
        "alice",
        "isp-a.test",
        "hitoshi",
        "isp-b.test",
        &HostOptions::default(),
    );
    // hitoshi does not know alice yet
    let mut hitoshi = common::Host::start(
        &stack,
        &dir.path().join("hitoshi"),
        "hitoshi",
        "isp-b.test",
        "mallory",
        "isp-a.test",
        &HostOptions::default(),
    );
    alice
        .handle
        .announce(None, vec![candidate("203.0.113.31:7447")])
        .await
        .unwrap();
    let reason = hitoshi
        .wait_for(WITHIN, |e| match e {
            CourierEvent::AnnouncementRejected { reason, .. } => Some(reason.clone()),
            CourierEvent::AnnouncementReceived { .. } => panic!("accepted from a stranger"),
            _ => None,
        })
        .await;
    assert_eq!(reason, Rejection::UnknownSender);
    // the reload adds alice; her next announcement is accepted
    hitoshi
        .reconfigure(
            &stack,
            "isp-b.test",
            "alice",
            "isp-a.test",
            &HostOptions::default(),
        )
        .await;
    alice.handle.send_now(None).await.unwrap();
    let from = hitoshi
        .wait_for(WITHIN, |e| match e {
            CourierEvent::AnnouncementReceived { peer, .. } => Some(peer.clone()),
            _ => None,
        })
        .await;
    assert_eq!(from.as_str(), "alice");
    alice.stop().await;
    hitoshi.stop().await;
}

/// A check that breaks off (the connection drops when the courier moves
/// or fetches the announcement) leaves the mail where it was and reports
/// it as pending; the next check examines it again, handles it once, and
/// pending goes back to 0.
async fn a_broken_off_check_reports_pending_and_loses_nothing(
    incoming: Incoming,
    processed: &'static str,
    trigger: &'static str,
) {
    let stack = MailStack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server_port = match incoming {
        Incoming::Imap => stack.ports().imap,
        Incoming::Pop3 => stack.ports().pop3,
    };
    let relay =
        common::CuttingRelay::start(SocketAddr::new(stack.addr(), server_port), trigger).await;
    let hitoshi_opts = HostOptions {
        incoming,
        processed,
        incoming_port: Some(relay.port),
        incoming_security: "none",
        ..HostOptions::default()
    };
    let (alice, mut hitoshi) = pair(&stack, dir.path(), &HostOptions::default(), &hitoshi_opts);
    let mut state = hitoshi.handle.watch();
    if incoming == Incoming::Imap {
        hitoshi.wait_mailbox_session(WITHIN).await;
    }
    alice
        .handle
        .announce(None, vec![candidate("203.0.113.41:7447")])
        .await
        .unwrap();
    let user = "hitoshi@isp-b.test";
    stack
        .wait_for_count(user, "INBOX", 1, WITHIN)
        .await
        .unwrap();
    if incoming == Incoming::Pop3 {
        hitoshi.handle.check_now();
    }
    tokio::time::timeout(
        WITHIN,
        state.wait_for(|s| s.pending == 1 && s.mailbox_error.is_some()),
    )
    .await
    .expect("the broken-off check reports its mail as pending")
    .unwrap();
    assert_eq!(relay.cuts(), 1);
    // nothing was lost: the announcement is still in the mailbox (the
    // retry comes 2.5 to 5 s after the failure)
    assert_eq!(stack.fetch_all(user, "INBOX").await.unwrap().len(), 1);
    // the retry handles it, once
    let done = tokio::time::timeout(
        WITHIN,
        state.wait_for(|s| s.pending == 0 && s.mailbox_error.is_none()),
    )
    .await
    .expect("the next check completes")
    .unwrap()
    .clone();
    assert!(done.last_check.is_some());
    stack
        .wait_for_count(user, "INBOX", 0, WITHIN)
        .await
        .unwrap();
    if let Some(folder) = processed.strip_prefix("move:") {
        stack.wait_for_count(user, folder, 1, WITHIN).await.unwrap();
    }
    let mut received = 0;
    while let Ok(event) = hitoshi.events.try_recv() {
        if matches!(event, CourierEvent::AnnouncementReceived { .. }) {
            received += 1;
        }
    }
    // IMAP judged the mail before the move was cut: the second look finds
    // it in the ledger. POP3 was cut before the body came: judged once.
    assert_eq!(received, 1, "the announcement is handled exactly once");
    alice.stop().await;
    hitoshi.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_check_cut_during_the_move_reports_pending_and_loses_nothing() {
    a_broken_off_check_reports_pending_and_loses_nothing(Incoming::Imap, "move:peerd", "UID MOVE")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop3_poll_cut_at_the_download_reports_pending_and_loses_nothing() {
    a_broken_off_check_reports_pending_and_loses_nothing(Incoming::Pop3, "delete", "RETR").await;
}
