//! How long sealing and opening an announcement take, beside baselines
//! measured in the same run: parsing the same mail with mail-parser alone
//! (what any mail client pays), and one bare Ed25519 signature.
//!
//! ```sh
//! cargo run --release -p peerd-announce --example bench
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant, UNIX_EPOCH};

use peerd_announce::{
    Body, KnownPeer, MailHeaders, Message, MessageKind, Receiver, new_message_id, seal, sealed_mail,
};
use peerd_core::{Candidate, CandidateKind, Identity};

fn per_op(iterations: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed() / iterations
}

fn main() {
    let alice = Identity::from_seed(&[1; 32]);
    let hitoshi = Identity::from_seed(&[2; 32]);
    let t0 = 1_767_225_600;
    let message = Message {
        sender: alice.public_key(),
        recipient: hitoshi.public_key(),
        sequence: t0 * 1_000_000,
        issued_at: t0,
        expires_at: t0 + 3600,
        body: Body::Announcement(
            [
                "203.0.113.7:7447",
                "[2001:db8:1::7]:7447",
                "192.168.1.20:7447",
            ]
            .iter()
            .map(|s| Candidate::new(s.parse().unwrap(), CandidateKind::Host).unwrap())
            .collect(),
        ),
    };
    let id = new_message_id("alice@isp-a.test").unwrap();
    let headers = MailHeaders {
        from_name: "alice",
        from: "alice@isp-a.test",
        to: "hitoshi@isp-b.test",
        date: UNIX_EPOCH + Duration::from_secs(t0),
        message_id: &id,
    };
    let mail = sealed_mail(&headers, &seal(&alice, &message).unwrap()).unwrap();
    let book = [KnownPeer {
        name: "alice".parse().unwrap(),
        email: "alice@isp-a.test".parse().unwrap(),
        key: Some(alice.public_key()),
        accept_unsigned: false,
    }];
    let history = BTreeMap::new();
    let receiver = Receiver {
        identity: &hitoshi,
        peers: &book,
        history: &history,
        now: UNIX_EPOCH + Duration::from_secs(t0 + 60),
        clock_skew: Duration::from_secs(300),
        max_message_size: 256 * 1024,
    };
    assert!(receiver.receive(&mail).is_ok());

    let n = 2000;
    let parse = per_op(n, || {
        black_box(mail_parser::MessageParser::new().parse(black_box(&mail)));
    });
    let receive = per_op(n, || {
        black_box(receiver.receive(black_box(&mail)).is_ok());
    });
    let sign = per_op(n, || {
        black_box(alice.sign(MessageKind::Announcement.context(), black_box(&mail[..200])));
    });
    let build = per_op(n, || {
        black_box(sealed_mail(&headers, &seal(&alice, black_box(&message)).unwrap()).unwrap());
    });

    println!("mail of {} bytes, {} iterations each", mail.len(), n);
    println!("| operation | per mail | baseline | ratio |");
    println!("|---|---:|---|---:|");
    println!(
        "| receive (parse, open, verify) | {receive:.1?} | mail-parser parse alone {parse:.1?} | {:.1}x |",
        receive.as_secs_f64() / parse.as_secs_f64()
    );
    println!(
        "| build (sign, seal, mail) | {build:.1?} | one Ed25519 signature {sign:.1?} | {:.1}x |",
        build.as_secs_f64() / sign.as_secs_f64()
    );
    println!(
        "| mails received per second, one core | {:.0} | | |",
        1.0 / receive.as_secs_f64()
    );
}
