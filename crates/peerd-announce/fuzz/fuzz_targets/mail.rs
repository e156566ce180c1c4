//! Raw bytes as a received mail, through the whole receiving path: MIME
//! parsing, the marker, the sealed part, the envelope, decryption and every
//! check after it. Must never panic, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerd_announce::fuzzing::World;

fuzz_target!(|data: &[u8]| {
    let world = World::get();
    let _ = world.receiver().receive(data);
});
