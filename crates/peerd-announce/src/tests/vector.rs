//! The test vector printed in `docs/protocol.md`: fixed keys, time,
//! addresses and HPKE randomness give exactly these bytes. Any change to
//! the format changes them, and this test says so. `PEERD_BLESS=1`
//! regenerates the files and the document's hex blocks after a deliberate
//! format change.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, UNIX_EPOCH};

use peerd_core::{Candidate, CandidateKind, Identity};

use super::{blessing, data_dir, hex_lines};
use crate::message::{Body, Message};
use crate::verify::{KnownPeer, Received, Receiver, Rejected};
use crate::{MailHeaders, seal_with_ikm, sealed_mail};

/// 2026-01-01T00:00:00Z.
pub(super) const VECTOR_TIME: u64 = 1_767_225_600;

fn seed(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start + u8::try_from(i).unwrap_or(0))
}

pub(super) fn alice() -> Identity {
    Identity::from_seed(&seed(0x00))
}

pub(super) fn hitoshi() -> Identity {
    Identity::from_seed(&seed(0x20))
}

pub(super) fn vector_message() -> Message {
    let cands = [
        "203.0.113.7:7447",
        "[2001:db8:1::7]:7447",
        "192.168.1.20:7447",
    ]
    .iter()
    .map(|s| Candidate::new(s.parse().unwrap(), CandidateKind::Host).unwrap())
    .collect();
    Message {
        sender: alice().public_key(),
        recipient: hitoshi().public_key(),
        sequence: VECTOR_TIME * 1_000_000,
        issued_at: VECTOR_TIME,
        expires_at: VECTOR_TIME + 3600,
        body: Body::Announcement(cands),
    }
}

pub(super) fn vector_headers() -> MailHeaders<'static> {
    MailHeaders {
        from_name: "alice",
        from: "alice@isp-a.test",
        to: "hitoshi@isp-b.test",
        date: UNIX_EPOCH + Duration::from_secs(VECTOR_TIME),
        message_id: "<vector-1@isp-a.test>",
    }
}

struct Vector {
    payload: Vec<u8>,
    envelope: Vec<u8>,
    eml: Vec<u8>,
}

fn build() -> Vector {
    let m = vector_message();
    let payload = m.sign(&alice()).unwrap();
    let envelope = seal_with_ikm(&alice(), &m, &seed(0x40)).unwrap();
    let eml = sealed_mail(&vector_headers(), &envelope).unwrap();
    Vector {
        payload,
        envelope,
        eml,
    }
}

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");

/// Replaces the fenced block after `<!-- vector:NAME -->` in the document.
fn replace_block(doc: &str, name: &str, body: &str) -> String {
    let marker = format!("<!-- vector:{name} -->\n```text\n");
    let start = doc.find(&marker).expect("marker in docs/protocol.md") + marker.len();
    let end = start + doc[start..].find("```").expect("closing fence");
    format!("{}{}{}", &doc[..start], body, &doc[end..])
}

fn block<'a>(doc: &'a str, name: &str) -> &'a str {
    let marker = format!("<!-- vector:{name} -->\n```text\n");
    let start = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/protocol.md lacks the vector:{name} block"))
        + marker.len();
    let end = start + doc[start..].find("```").expect("closing fence");
    &doc[start..end]
}

#[test]
fn the_vector_is_reproduced_byte_for_byte() {
    let v = build();
    let dir = data_dir("vector");
    let files = [
        ("payload.hex", hex_lines(&v.payload).into_bytes()),
        // raw, as a seed for the `payload` fuzz target
        ("payload.bin", v.payload.clone()),
        ("envelope.hex", hex_lines(&v.envelope).into_bytes()),
        ("announcement.eml", v.eml.clone()),
    ];
    if blessing() {
        fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &files {
            fs::write(dir.join(name), bytes).unwrap();
        }
        let mut doc = fs::read_to_string(DOC).unwrap();
        doc = replace_block(&doc, "payload", &hex_lines(&v.payload));
        doc = replace_block(&doc, "envelope", &hex_lines(&v.envelope));
        doc = replace_block(
            &doc,
            "eml",
            &String::from_utf8(v.eml.clone())
                .unwrap()
                .replace("\r\n", "\n"),
        );
        fs::write(DOC, doc).unwrap();
    }
    for (name, bytes) in &files {
        let committed = fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            committed == *bytes,
            "{name} differs from what the code builds; if the format changed on purpose, run PEERD_BLESS=1 cargo test -p peerd-announce"
        );
    }
    let doc = fs::read_to_string(DOC).unwrap();
    assert_eq!(block(&doc, "payload"), hex_lines(&v.payload));
    assert_eq!(block(&doc, "envelope"), hex_lines(&v.envelope));
    assert_eq!(
        block(&doc, "eml"),
        String::from_utf8(v.eml).unwrap().replace("\r\n", "\n")
    );
}

/// hitoshi judges `raw` a minute after the vector's issue time, with
/// alice (and only alice) in the address book.
pub(super) fn hitoshi_receives(raw: &[u8]) -> Result<Received, Rejected> {
    let book = [KnownPeer {
        name: "alice".parse().unwrap(),
        email: "alice@isp-a.test".parse().unwrap(),
        key: Some(alice().public_key()),
        accept_unsigned: false,
    }];
    let history = BTreeMap::new();
    let hitoshi = hitoshi();
    Receiver {
        identity: &hitoshi,
        peers: &book,
        history: &history,
        now: UNIX_EPOCH + Duration::from_secs(VECTOR_TIME + 60),
        clock_skew: Duration::from_secs(300),
        max_message_size: 256 * 1024,
    }
    .receive(raw)
}

#[test]
fn the_vector_mail_opens_to_the_vector_message() {
    let eml = fs::read(data_dir("vector").join("announcement.eml")).unwrap();
    match hitoshi_receives(&eml).unwrap() {
        Received::Message(a) => assert_eq!(a.message, vector_message()),
        Received::Hint(h) => panic!("{h:?}"),
    }
}
