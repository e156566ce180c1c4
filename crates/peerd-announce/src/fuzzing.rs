//! Helpers for the fuzz targets in `fuzz/` (compiled only with
//! `--cfg fuzzing`, which `cargo fuzz` sets): a fixed little world of keys
//! and an address book, and a way to seal arbitrary payload bytes as a
//! known peer would.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use peerd_core::Identity;

use crate::mail::{MailHeaders, sealed_mail};
use crate::seal::seal_payload;
use crate::verify::{KnownPeer, LastAccepted, Receiver};

/// Keys, address book and history shared by every fuzz run.
pub struct World {
    alice: Identity,
    hitoshi: Identity,
    book: Vec<KnownPeer>,
    history: BTreeMap<peerd_core::PublicKey, LastAccepted>,
}

impl World {
    /// The world (built once).
    pub fn get() -> &'static World {
        static WORLD: OnceLock<World> = OnceLock::new();
        WORLD.get_or_init(|| {
            // the keys of the test vector in docs/protocol.md
            let alice = Identity::from_seed(&std::array::from_fn(|i| i as u8));
            let hitoshi = Identity::from_seed(&std::array::from_fn(|i| 0x20 + i as u8));
            let oldbox = Identity::from_seed(&[0x60; 32]);
            let book = vec![
                KnownPeer {
                    name: "alice".parse().expect("valid name"),
                    email: "alice@isp-a.test".parse().expect("valid address"),
                    key: Some(alice.public_key()),
                    accept_unsigned: false,
                },
                KnownPeer {
                    name: "oldbox".parse().expect("valid name"),
                    email: "oldbox@example.org".parse().expect("valid address"),
                    key: Some(oldbox.public_key()),
                    accept_unsigned: true,
                },
            ];
            World {
                alice,
                hitoshi,
                book,
                history: BTreeMap::new(),
            }
        })
    }

    /// hitoshi's receiver, at the test vector's time plus a minute.
    pub fn receiver(&self) -> Receiver<'_> {
        Receiver {
            identity: &self.hitoshi,
            peers: &self.book,
            history: &self.history,
            now: UNIX_EPOCH + Duration::from_secs(1_767_225_660),
            clock_skew: Duration::from_secs(300),
            max_message_size: 256 * 1024,
        }
    }

    /// A well-formed mail from alice whose sealed payload is `payload`.
    pub fn mail_with_payload(&self, payload: &[u8]) -> Vec<u8> {
        let envelope = seal_payload(
            &self.alice.public_key(),
            &self.hitoshi.public_key(),
            payload,
            &[0x40; 32],
        )
        .expect("sealing to a valid key");
        sealed_mail(
            &MailHeaders {
                from_name: "alice",
                from: "alice@isp-a.test",
                to: "hitoshi@isp-b.test",
                date: UNIX_EPOCH + Duration::from_secs(1_767_225_600),
                message_id: "<fuzz@isp-a.test>",
            },
            &envelope,
        )
        .expect("building a mail")
    }
}
