//! The hostile mail corpus in `tests/data/hostile/`: mail that is broken,
//! forged, oversized or plain odd, each with the outcome it must get. The
//! files are committed; `PEERD_BLESS=1` regenerates them from the recipes
//! below (the recipes are deterministic: fixed keys, fixed HPKE input).

use std::fmt::Write as _;
use std::fs;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use peerd_core::{Identity, PublicKey};

use super::vector::{
    VECTOR_TIME, alice, hitoshi, hitoshi_receives, vector_headers, vector_message,
};
use super::{blessing, data_dir};
use crate::message::Message;
use crate::seal::seal_payload;
use crate::{seal_with_ikm, sealed_mail};

fn mallory() -> Identity {
    Identity::from_seed(&[0x60; 32])
}

fn sealed(m: &Message, by: &Identity) -> Vec<u8> {
    seal_with_ikm(by, m, &[0x40; 32]).unwrap()
}

fn mail(envelope: &[u8]) -> Vec<u8> {
    sealed_mail(&vector_headers(), envelope).unwrap()
}

fn good_envelope() -> Vec<u8> {
    sealed(&vector_message(), &alice())
}

/// A sealed mail whose sealed part's body is `body` (already encoded).
fn with_sealed_body(cte: &str, body: &str) -> Vec<u8> {
    format!(
        "From: alice <alice@isp-a.test>\r\nTo: hitoshi@isp-b.test\r\nSubject: peerd: sealed message from alice\r\n\
         Message-ID: <h@isp-a.test>\r\nX-Peerd: sealed; v=1\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n\
         --b\r\nContent-Type: application/x-peerd-sealed\r\nContent-Transfer-Encoding: {cte}\r\n\r\n{body}\r\n--b--\r\n"
    )
    .into_bytes()
}

fn reseal(payload: &[u8], sender: &PublicKey) -> Vec<u8> {
    seal_payload(sender, &hitoshi().public_key(), payload, &[0x41; 32]).unwrap()
}

/// The recipes: file name, mail, the outcome code it must get.
fn recipes() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let good = mail(&good_envelope());
    let text = String::from_utf8(good.clone()).unwrap();
    let b64 = STANDARD.encode(good_envelope());
    let mut out: Vec<(&'static str, Vec<u8>, &'static str)> = Vec::new();

    // MIME cut off in the middle of the sealed part's base64.
    let cut = text.find("Content-Transfer-Encoding: base64").unwrap() + 60;
    out.push(("01-truncated-mime.eml", good[..cut].to_vec(), "malformed"));

    // Somebody else's mail in an unknown charset with raw 8-bit bytes.
    let mut charset = b"From: friend@example.org\r\nTo: hitoshi@isp-b.test\r\nSubject: =?x-klingon?Q?=FF=FE?=\r\n\
        MIME-Version: 1.0\r\nContent-Type: text/plain; charset=x-klingon\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        .to_vec();
    charset.extend_from_slice(&[0xff, 0xfe, 0x80, 0x00, 0xc3, 0x28, b'\r', b'\n']);
    out.push(("02-wrong-charset.eml", charset, "not-peerd-mail"));

    // Marked as ours, but with a 10 MB attachment (over max_message_size).
    let mut huge = String::from_utf8(with_sealed_body("base64", &b64)).unwrap();
    let big_line = "A".repeat(76);
    let mut attachment = String::with_capacity(10 << 20);
    while attachment.len() < 10 << 20 {
        attachment.push_str(&big_line);
        attachment.push_str("\r\n");
    }
    huge = huge.replace(
        "--b--\r\n",
        &format!("--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{attachment}--b--\r\n"),
    );
    out.push(("03-10mb-attachment.eml", huge.into_bytes(), "malformed"));

    // Multiparts nested 100 deep, the sealed part at the bottom.
    let mut nested = String::from(
        "From: alice <alice@isp-a.test>\r\nTo: hitoshi@isp-b.test\r\nX-Peerd: sealed; v=1\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"n0\"\r\n\r\n",
    );
    for depth in 0..100 {
        let _ = write!(
            nested,
            "--n{depth}\r\nContent-Type: multipart/mixed; boundary=\"n{}\"\r\n\r\n",
            depth + 1
        );
    }
    let _ = write!(
        nested,
        "--n100\r\nContent-Type: application/x-peerd-sealed\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--n100--\r\n"
    );
    for depth in (0..100).rev() {
        let _ = write!(nested, "--n{depth}--\r\n");
    }
    out.push(("04-nested-100-deep.eml", nested.into_bytes(), "malformed"));

    // Headers only.
    let header_only = b"From: alice <alice@isp-a.test>\r\nTo: hitoshi@isp-b.test\r\nX-Peerd: sealed; v=1\r\nSubject: x\r\n";
    out.push(("05-header-only.eml", header_only.to_vec(), "malformed"));

    // Two sealed parts (which one would be true?).
    let two = String::from_utf8(with_sealed_body("base64", &b64)).unwrap().replace(
        "--b--\r\n",
        &format!("--b\r\nContent-Type: application/x-peerd-sealed\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n"),
    );
    out.push(("06-two-sealed-parts.eml", two.into_bytes(), "malformed"));

    // base64 garbage.
    out.push((
        "07-base64-garbage.eml",
        with_sealed_body("base64", "!!!!not*base64@@@@\r\n%%%%"),
        "malformed",
    ));

    // A perfectly sealed announcement from a key not in the address book.
    let mut from_mallory = vector_message();
    from_mallory.sender = mallory().public_key();
    out.push((
        "08-unknown-sender-key.eml",
        mail(&sealed(&from_mallory, &mallory())),
        "unknown-sender",
    ));

    // alice's announcement for mallory, delivered to hitoshi.
    let mut to_mallory = vector_message();
    to_mallory.recipient = mallory().public_key();
    out.push((
        "09-for-another-key.eml",
        mail(&sealed(&to_mallory, &alice())),
        "not-addressed-to-us",
    ));

    // One bit of the ciphertext flipped.
    let mut flipped = good_envelope();
    let last = flipped.len() - 20;
    flipped[last] ^= 0x01;
    out.push((
        "10-tampered-ciphertext.eml",
        mail(&flipped),
        "decryption-failed",
    ));

    // An envelope version from the future.
    let mut v2 = good_envelope();
    v2[0] = 2;
    out.push(("11-envelope-version-2.eml", mail(&v2), "unknown-version"));

    // An empty sealed part.
    out.push((
        "12-empty-sealed-part.eml",
        with_sealed_body("base64", ""),
        "malformed",
    ));

    // The sealed part in quoted-printable instead of base64.
    out.push((
        "13-sealed-part-quoted-printable.eml",
        with_sealed_body("quoted-printable", "=01=01abc"),
        "malformed",
    ));

    // Two X-Peerd headers.
    let twice = text.replacen(
        "X-Peerd: sealed; v=1\r\n",
        "X-Peerd: sealed; v=1\r\nX-Peerd: plain; v=1\r\n",
        1,
    );
    out.push((
        "14-two-x-peerd-headers.eml",
        twice.into_bytes(),
        "malformed",
    ));

    // A correctly signed announcement that expired long ago.
    let mut old = vector_message();
    old.issued_at = VECTOR_TIME - 86_400;
    old.expires_at = VECTOR_TIME - 82_800;
    out.push(("15-expired.eml", mail(&sealed(&old, &alice())), "expired"));

    // Dated a day ahead.
    let mut future = vector_message();
    future.issued_at = VECTOR_TIME + 86_400;
    future.expires_at = VECTOR_TIME + 90_000;
    out.push((
        "16-from-the-future.eml",
        mail(&sealed(&future, &alice())),
        "from-the-future",
    ));

    // A forged plain mail "from alice" (who has accept_unsigned = false).
    let spoof =
        b"From: alice <alice@isp-a.test>\r\nTo: hitoshi@isp-b.test\r\nSubject: new address\r\n\r\n\
        alice is reachable at 198.51.100.66 port 7447\r\n";
    out.push((
        "17-spoofed-plain-from-alice.eml",
        spoof.to_vec(),
        "not-peerd-mail",
    ));

    // Not a mail at all.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| u8::try_from((i * 7919 + 13) % 251).unwrap_or(0))
        .collect();
    out.push(("18-binary-garbage.eml", garbage, "not-peerd-mail"));

    // A reserved kind (3, key change) sealed and signed by alice.
    let mut payload = vector_message().sign(&alice()).unwrap();
    payload[1] = 3;
    out.push((
        "19-reserved-kind-3.eml",
        mail(&reseal(&payload, &alice().public_key())),
        "unknown-kind",
    ));

    // The sequence number changed after signing (re-sealed by an attacker).
    let mut payload = vector_message().sign(&alice()).unwrap();
    payload[73] ^= 0x01;
    out.push((
        "20-sequence-changed-after-signing.eml",
        mail(&reseal(&payload, &alice().public_key())),
        "bad-signature",
    ));

    // A sealed part without the X-Peerd marker: not ours to read or delete.
    let unmarked = text.replace("X-Peerd: sealed; v=1\r\n", "");
    out.push((
        "21-sealed-part-without-marker.eml",
        unmarked.into_bytes(),
        "not-peerd-mail",
    ));

    // A 300 KB header line on marked mail.
    let long = format!("X-Junk: {}\r\n{text}", "x".repeat(300 * 1024));
    out.push(("22-300kb-header-line.eml", long.into_bytes(), "malformed"));

    // Payload with bytes after the signature.
    let mut payload = vector_message().sign(&alice()).unwrap();
    payload.extend_from_slice(b"trailing");
    out.push((
        "23-trailing-bytes-in-payload.eml",
        mail(&reseal(&payload, &alice().public_key())),
        "malformed",
    ));

    // A sealed part that decodes to one byte.
    out.push((
        "24-one-byte-envelope.eml",
        with_sealed_body("base64", "AQ=="),
        "malformed",
    ));

    out
}

fn receiver_outcome(raw: &[u8]) -> String {
    match hitoshi_receives(raw) {
        Ok(got) => format!("accepted {got:?}"),
        Err(e) => format!("{} ({})", e.reason.code(), e.reason),
    }
}

#[test]
fn every_hostile_mail_gets_its_outcome() {
    let dir = data_dir("hostile");
    if blessing() {
        fs::create_dir_all(&dir).unwrap();
        let mut manifest = String::from(
            "# file: the outcome peerd must give it (Rejection code, then its text)\n",
        );
        for (name, bytes, code) in recipes() {
            let outcome = receiver_outcome(&bytes);
            assert!(
                outcome.starts_with(&format!("{code} ")),
                "{name}: {outcome}"
            );
            fs::write(dir.join(name), &bytes).unwrap();
            let _ = writeln!(manifest, "{name}: {outcome}");
        }
        fs::write(dir.join("EXPECTED"), manifest).unwrap();
    }
    let manifest = fs::read_to_string(dir.join("EXPECTED")).unwrap();
    let mut checked = 0;
    for line in manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, want) = line.split_once(": ").unwrap();
        let raw = fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(receiver_outcome(&raw), want, "{name}");
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} hostile mails");
    // every file in the directory is in the manifest
    let files = fs::read_dir(&dir).unwrap().filter(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".eml")
    });
    assert_eq!(files.count(), checked);
}

#[test]
fn the_recipes_still_give_the_committed_outcomes() {
    // The recipes are code: run them too, so a change in the checks is
    // seen even before the files are regenerated.
    let manifest = fs::read_to_string(data_dir("hostile").join("EXPECTED")).unwrap();
    for (name, bytes, code) in recipes() {
        let outcome = receiver_outcome(&bytes);
        assert!(
            outcome.starts_with(&format!("{code} ")),
            "{name}: {outcome}"
        );
        assert!(
            manifest.contains(&format!("{name}: {outcome}\n")),
            "{name}: {outcome} is not what EXPECTED says"
        );
    }
}
