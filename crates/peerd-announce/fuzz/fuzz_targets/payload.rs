//! Raw bytes as the signed payload inside a correctly sealed envelope from
//! a known peer, so the fuzzer reaches what only decrypted data can reach:
//! the payload framing, kinds, signature check, body and candidate parsing,
//! times and sequence rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerd_announce::fuzzing::World;

fuzz_target!(|data: &[u8]| {
    let world = World::get();
    let mail = world.mail_with_payload(data);
    let _ = world.receiver().receive(&mail);
});
