//! Property tests over the whole path: message -> sign -> seal -> mail ->
//! mail-parser -> open -> verify, and every way of breaking it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, UNIX_EPOCH};

use peerd_core::{AddressClass, Candidate, CandidateKind, Identity, PeerName};
use proptest::prelude::*;

use crate::message::{Body, Message, MessageKind};
use crate::seal::seal_payload;
use crate::verify::{History, KnownPeer, LastAccepted, Received, Receiver, Rejection};
use crate::{MailHeaders, seal_with_ikm, sealed_mail};

const T0: u64 = 1_700_000_000;

struct World {
    alice: Identity,
    hitoshi: Identity,
    mallory: Identity,
    book: Vec<KnownPeer>,
}

fn world() -> World {
    let alice = Identity::from_seed(&[1; 32]);
    let hitoshi = Identity::from_seed(&[2; 32]);
    let mallory = Identity::from_seed(&[3; 32]);
    let book = vec![KnownPeer {
        name: "alice".parse().unwrap(),
        email: "alice@isp-a.test".parse().unwrap(),
        key: Some(alice.public_key()),
        accept_unsigned: false,
    }];
    World {
        alice,
        hitoshi,
        mallory,
        book,
    }
}

fn receiver<'a>(w: &'a World, history: &'a dyn History, now: u64) -> Receiver<'a> {
    Receiver {
        identity: &w.hitoshi,
        peers: &w.book,
        history,
        now: UNIX_EPOCH + Duration::from_secs(now),
        clock_skew: Duration::from_secs(300),
        max_message_size: 256 * 1024,
    }
}

fn mail_of(envelope: &[u8]) -> Vec<u8> {
    sealed_mail(
        &MailHeaders {
            from_name: "alice",
            from: "alice@isp-a.test",
            to: "hitoshi@isp-b.test",
            date: UNIX_EPOCH + Duration::from_secs(T0),
            message_id: "<p@isp-a.test>",
        },
        envelope,
    )
    .unwrap()
}

fn announcement(w: &World, seq: u64, cands: Vec<Candidate>) -> Message {
    Message {
        sender: w.alice.public_key(),
        recipient: w.hitoshi.public_key(),
        sequence: seq,
        issued_at: T0,
        expires_at: T0 + 3600,
        body: Body::Announcement(cands),
    }
}

fn reject(r: &Receiver<'_>, mail: &[u8]) -> Rejection {
    match r.receive(mail) {
        Ok(got) => panic!("accepted: {got:?}"),
        Err(e) => e.reason,
    }
}

fn candidate() -> impl Strategy<Value = Candidate> {
    let v4 = any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b)));
    let v6 = any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b)));
    let kinds = prop::sample::select(CandidateKind::ALL.to_vec());
    (prop_oneof![v4, v6], 1..=u16::MAX, kinds)
        .prop_filter_map("announceable", |(ip, port, kind)| {
            Candidate::new(SocketAddr::new(ip, port), kind)
        })
}

fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::btree_set(candidate(), 1..=16).prop_map(|s| s.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_announcement_round_trips_through_mail(
        cands in candidates(),
        seq in 1u64..u64::MAX,
        ikm in any::<[u8; 32]>(),
        age in 0u64..3600,
    ) {
        let w = world();
        let m = announcement(&w, seq, cands);
        let mail = mail_of(&seal_with_ikm(&w.alice, &m, &ikm).unwrap());
        let history = BTreeMap::new();
        let got = receiver(&w, &history, T0 + age).receive(&mail).unwrap();
        match got {
            Received::Message(a) => {
                prop_assert_eq!(a.peer.as_str(), "alice");
                prop_assert_eq!(a.message, m);
            }
            Received::Hint(h) => prop_assert!(false, "hint {:?}", h),
        }
    }

    #[test]
    fn flipping_any_envelope_byte_is_rejected_for_the_right_reason(
        cands in candidates(),
        pos_seed in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let w = world();
        let mut env = seal_with_ikm(&w.alice, &announcement(&w, 9, cands), &[7; 32]).unwrap();
        let pos = pos_seed.index(env.len());
        env[pos] ^= flip;
        let history = BTreeMap::new();
        let reason = reject(&receiver(&w, &history, T0), &mail_of(&env));
        let want = match pos {
            0 => Rejection::UnknownVersion(env[0]),
            1 => Rejection::UnknownSuite(env[1]),
            2..=33 => Rejection::UnknownSender,
            34..=65 => Rejection::NotAddressedToUs,
            _ => Rejection::DecryptionFailed,
        };
        prop_assert_eq!(reason, want);
    }

    #[test]
    fn changing_any_base64_character_of_the_mail_is_never_accepted(
        pos_seed in any::<prop::sample::Index>(),
        replacement in prop::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=!\r\n".to_vec()),
    ) {
        let w = world();
        let cand = Candidate::new("203.0.113.7:7447".parse().unwrap(), CandidateKind::Host).unwrap();
        let mail = mail_of(&seal_with_ikm(&w.alice, &announcement(&w, 9, vec![cand]), &[7; 32]).unwrap());
        let text = String::from_utf8(mail.clone()).unwrap();
        let start = text.find("Content-Transfer-Encoding: base64\r\n\r\n").unwrap() + 37;
        let end = text[start..].find("\r\n--").unwrap() + start;
        let pos = start + pos_seed.index(end - start);
        prop_assume!(mail[pos] != replacement);
        let mut bad = mail.clone();
        bad[pos] = replacement;
        let history = BTreeMap::new();
        let r = receiver(&w, &history, T0);
        prop_assert!(r.receive(&bad).is_err(), "accepted with byte {} changed", pos);
    }

    #[test]
    fn truncating_the_envelope_anywhere_is_rejected(cut_seed in any::<prop::sample::Index>()) {
        let w = world();
        let cand = Candidate::new("198.51.100.4:7447".parse().unwrap(), CandidateKind::Host).unwrap();
        let env = seal_with_ikm(&w.alice, &announcement(&w, 9, vec![cand]), &[7; 32]).unwrap();
        let cut = cut_seed.index(env.len());
        let history = BTreeMap::new();
        let reason = reject(&receiver(&w, &history, T0), &mail_of(&env[..cut]));
        prop_assert!(matches!(reason, Rejection::Malformed(_) | Rejection::DecryptionFailed), "{reason:?}");
    }

    #[test]
    fn a_signature_for_one_kind_never_verifies_as_another(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        seed in any::<[u8; 32]>(),
    ) {
        let id = Identity::from_seed(&seed);
        let kinds = [MessageKind::Announcement, MessageKind::Ack];
        for signer in kinds {
            let sig = id.sign(signer.context(), &bytes);
            for checker in kinds {
                prop_assert_eq!(id.public_key().verify(checker.context(), &bytes, &sig), signer == checker);
            }
        }
    }
}

fn one_candidate() -> Vec<Candidate> {
    vec![Candidate::new("203.0.113.7:7447".parse().unwrap(), CandidateKind::Host).unwrap()]
}

#[test]
fn a_signature_made_over_another_kind_is_a_bad_signature_after_sealing() {
    let w = world();
    let m = announcement(&w, 9, one_candidate());
    let mut payload = m.to_unsigned_bytes().unwrap();
    // alice's key signed these very bytes, but as an ack (another use).
    let sig = w.alice.sign(MessageKind::Ack.context(), &payload);
    payload.extend_from_slice(&sig);
    let env = seal_payload(&m.sender, &m.recipient, &payload, &[1; 32]).unwrap();
    let history = BTreeMap::new();
    assert_eq!(
        reject(&receiver(&w, &history, T0), &mail_of(&env)),
        Rejection::BadSignature
    );
}

#[test]
fn changing_time_or_sequence_without_the_key_is_a_bad_signature() {
    let w = world();
    let m = announcement(&w, 9, one_candidate());
    let signed = m.sign(&w.alice).unwrap();
    // the low byte of the sequence (66..74), issue time (74..82) and
    // expiry (82..90), and a byte of the body (92..)
    for offset in [73, 81, 89, 93] {
        let mut p = signed.clone();
        p[offset] ^= 1;
        let env = seal_payload(&m.sender, &m.recipient, &p, &[1; 32]).unwrap();
        let history = BTreeMap::new();
        assert_eq!(
            reject(&receiver(&w, &history, T0), &mail_of(&env)),
            Rejection::BadSignature,
            "offset {offset}"
        );
    }
}

#[test]
fn a_message_resealed_to_someone_else_is_not_addressed_to_them() {
    // mallory receives alice's announcement, opens it (it was for her), and
    // seals the same signed payload to hitoshi.
    let w = world();
    let mut m = announcement(&w, 9, one_candidate());
    m.recipient = w.mallory.public_key();
    let signed = m.sign(&w.alice).unwrap();
    let env = seal_payload(&m.sender, &w.hitoshi.public_key(), &signed, &[1; 32]).unwrap();
    let history = BTreeMap::new();
    assert_eq!(
        reject(&receiver(&w, &history, T0), &mail_of(&env)),
        Rejection::NotAddressedToUs
    );
}

#[test]
fn mail_for_another_key_or_from_a_stranger() {
    let w = world();
    let history = BTreeMap::new();
    // alice writes to mallory; hitoshi receives it somehow
    let mut m = announcement(&w, 9, one_candidate());
    m.recipient = w.mallory.public_key();
    let env = seal_with_ikm(&w.alice, &m, &[1; 32]).unwrap();
    assert_eq!(
        reject(&receiver(&w, &history, T0), &mail_of(&env)),
        Rejection::NotAddressedToUs
    );
    // mallory (not in the book) writes to hitoshi
    let mut m = announcement(&w, 9, one_candidate());
    m.sender = w.mallory.public_key();
    let env = seal_with_ikm(&w.mallory, &m, &[1; 32]).unwrap();
    let r = receiver(&w, &history, T0)
        .receive(&mail_of(&env))
        .unwrap_err();
    assert_eq!(r.reason, Rejection::UnknownSender);
    assert_eq!(r.peer, None);
    assert_eq!(r.from.as_deref(), Some("alice@isp-a.test"));
}

#[test]
fn freshness_and_sequence_rules() {
    let w = world();
    let m = announcement(&w, 1_000, one_candidate());
    let mail = mail_of(&seal_with_ikm(&w.alice, &m, &[1; 32]).unwrap());
    let none = BTreeMap::new();
    // expiry: valid until T0 + 3600 exclusive
    assert!(receiver(&w, &none, T0 + 3599).receive(&mail).is_ok());
    assert_eq!(
        reject(&receiver(&w, &none, T0 + 3600), &mail),
        Rejection::Expired
    );
    // issued in the future: up to clock_skew (300 s) is fine
    assert!(receiver(&w, &none, T0 - 300).receive(&mail).is_ok());
    assert_eq!(
        reject(&receiver(&w, &none, T0 - 301), &mail),
        Rejection::FromFuture
    );
    // our clock not set
    assert_eq!(
        reject(&receiver(&w, &none, 1_000), &mail),
        Rejection::ClockNotSet
    );

    let Received::Message(accepted) = receiver(&w, &none, T0).receive(&mail).unwrap() else {
        panic!("not a message")
    };
    let mut seen: BTreeMap<_, LastAccepted> = BTreeMap::new();
    seen.insert(w.alice.public_key(), accepted.last_accepted());
    assert_eq!(
        reject(&receiver(&w, &seen, T0), &mail),
        Rejection::Duplicate
    );
    // same sequence, other content
    let mut other = announcement(&w, 1_000, one_candidate());
    other.expires_at += 1;
    let other_mail = mail_of(&seal_with_ikm(&w.alice, &other, &[1; 32]).unwrap());
    assert_eq!(
        reject(&receiver(&w, &seen, T0), &other_mail),
        Rejection::Replayed
    );
    // lower sequence
    let older = announcement(&w, 999, one_candidate());
    let older_mail = mail_of(&seal_with_ikm(&w.alice, &older, &[1; 32]).unwrap());
    assert_eq!(
        reject(&receiver(&w, &seen, T0), &older_mail),
        Rejection::Stale {
            sequence: 999,
            last: 1_000
        }
    );
    // higher sequence is accepted
    let newer = announcement(&w, 1_001, one_candidate());
    let newer_mail = mail_of(&seal_with_ikm(&w.alice, &newer, &[1; 32]).unwrap());
    assert!(receiver(&w, &seen, T0).receive(&newer_mail).is_ok());
    // and the quiet reasons are not alarms
    assert!(!Rejection::Duplicate.is_alarm());
    assert!(
        !Rejection::Stale {
            sequence: 1,
            last: 2
        }
        .is_alarm()
    );
    assert!(Rejection::BadSignature.is_alarm());
}

#[test]
fn acks_round_trip_and_carry_the_acknowledged_sequence() {
    let w = world();
    let ack = Message {
        sender: w.alice.public_key(),
        recipient: w.hitoshi.public_key(),
        sequence: 77,
        issued_at: T0,
        expires_at: T0 + 600,
        body: Body::Ack { sequence: 42 },
    };
    let mail = mail_of(&seal_with_ikm(&w.alice, &ack, &[5; 32]).unwrap());
    let none = BTreeMap::new();
    let Received::Message(a) = receiver(&w, &none, T0).receive(&mail).unwrap() else {
        panic!("not a message")
    };
    assert_eq!(a.message.body, Body::Ack { sequence: 42 });
    assert_eq!(a.candidates(), None);
}

#[test]
fn plain_mail_from_an_accept_unsigned_peer_is_a_hint_and_nothing_else_is() {
    let mut w = world();
    w.book.push(KnownPeer {
        name: PeerName::try_from("oldbox".to_owned()).unwrap(),
        email: "OldBox@Example.org".parse().unwrap(),
        key: Some(w.mallory.public_key()),
        accept_unsigned: true,
    });
    let none = BTreeMap::new();
    let r = receiver(&w, &none, T0);
    let plain = b"From: oldbox@example.org\r\nTo: hitoshi@isp-b.test\r\nSubject: ip\r\n\r\noldbox is reachable at 192.0.2.9 port 7447\r\n";
    match r.receive(plain).unwrap() {
        Received::Hint(h) => {
            assert_eq!(w.book[h.peer_index].name.as_str(), "oldbox");
            assert_eq!(h.ip, "192.0.2.9".parse::<IpAddr>().unwrap());
            assert_eq!(h.port, Some(7447));
        },
        other => panic!("{other:?}"),
    }
    // the same text from alice (accept_unsigned = false) is not a hint
    let from_alice = b"From: alice@isp-a.test\r\nSubject: ip\r\n\r\nat 192.0.2.9\r\n";
    assert_eq!(reject(&r, from_alice), Rejection::NotPeerdMail);
    // a mail from the right sender with no address is the peer's own mail
    let chat = b"From: oldbox@example.org\r\nSubject: lunch?\r\n\r\nsee you at noon\r\n";
    assert_eq!(reject(&r, chat), Rejection::NotPeerdMail);
}

#[test]
fn a_valid_sealed_announcement_outranks_hints_until_it_expires() {
    let w = world();
    let mail =
        mail_of(&seal_with_ikm(&w.alice, &announcement(&w, 5, one_candidate()), &[1; 32]).unwrap());
    let none = BTreeMap::new();
    let Received::Message(a) = receiver(&w, &none, T0).receive(&mail).unwrap() else {
        panic!("not a message")
    };
    assert!(a.outranks_hints(UNIX_EPOCH + Duration::from_secs(T0 + 3599)));
    assert!(!a.outranks_hints(UNIX_EPOCH + Duration::from_secs(T0 + 3600)));
}

#[test]
fn the_stored_mail_contains_no_address_in_any_form() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let w = world();
    let cands: Vec<Candidate> = [
        "203.0.113.7:7447",
        "[2001:db8:85a3::8a2e:370:7334]:7447",
        "100.64.12.34:40000",
        "192.168.1.20:7447",
    ]
    .iter()
    .map(|s| Candidate::new(s.parse().unwrap(), CandidateKind::Host).unwrap())
    .collect();
    for ikm in 0..32u8 {
        let mail = mail_of(
            &seal_with_ikm(&w.alice, &announcement(&w, 9, cands.clone()), &[ikm; 32]).unwrap(),
        );
        let text = String::from_utf8(mail).unwrap();
        let lower = text.to_ascii_lowercase();
        let joined: String = text.split("\r\n").collect();
        for c in &cands {
            let ip = c.addr.ip();
            let octets: Vec<u8> = match ip {
                IpAddr::V4(v) => v.octets().to_vec(),
                IpAddr::V6(v) => v.octets().to_vec(),
            };
            let mut forms = vec![ip.to_string(), c.addr.to_string()];
            if let IpAddr::V6(v) = ip {
                forms.push(format!("{v:x?}"));
                forms.push(
                    v.segments()
                        .iter()
                        .map(|s| format!("{s:04x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                );
            }
            forms.push(octets.iter().map(|b| format!("{b:02x}")).collect());
            forms.push(octets.iter().map(|b| format!("{b:02X}")).collect());
            forms.push(format!(
                "{}",
                u32::from_be_bytes(octets[..4].try_into().unwrap())
            ));
            // base64 of the bytes at each of the three alignments: the
            // characters that depend only on the address bytes.
            for shift in 0..3 {
                let mut padded = vec![0u8; shift];
                padded.extend_from_slice(&octets);
                let enc = STANDARD.encode(&padded);
                let skip = if shift == 0 { 0 } else { 2 };
                let stable = &enc[skip..enc.len().saturating_sub(4)];
                if stable.len() >= 4 {
                    forms.push(stable.to_owned());
                }
            }
            for f in forms {
                assert!(
                    !joined.contains(&f) && !lower.contains(&f.to_ascii_lowercase()),
                    "{f} found in {text}"
                );
            }
        }
    }
}

#[test]
fn address_classes_survive_the_trip() {
    let w = world();
    let cands: Vec<Candidate> = [
        "100.64.0.1:1",
        "10.0.0.1:2",
        "[fd00::1]:3",
        "198.51.100.1:4",
    ]
    .iter()
    .map(|s| Candidate::new(s.parse().unwrap(), CandidateKind::Mapped).unwrap())
    .collect();
    let mail = mail_of(&seal_with_ikm(&w.alice, &announcement(&w, 9, cands), &[1; 32]).unwrap());
    let none = BTreeMap::new();
    let Received::Message(a) = receiver(&w, &none, T0).receive(&mail).unwrap() else {
        panic!("not a message")
    };
    let classes: Vec<AddressClass> = a.candidates().unwrap().iter().map(|c| c.class).collect();
    assert_eq!(
        classes,
        [
            AddressClass::Cgnat,
            AddressClass::Private,
            AddressClass::Private,
            AddressClass::Public
        ]
    );
}

mod corpus;
mod vector;

/// Hex, 32 bytes to a line.
fn hex_lines(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for chunk in bytes.chunks(32) {
        for b in chunk {
            let _ = write!(out, "{b:02x}");
        }
        out.push('\n');
    }
    out
}

/// Whether this run regenerates the committed test data (`PEERD_BLESS=1`)
/// instead of only checking it.
fn blessing() -> bool {
    std::env::var_os("PEERD_BLESS").is_some_and(|v| v == "1")
}

fn data_dir(sub: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(sub)
}
