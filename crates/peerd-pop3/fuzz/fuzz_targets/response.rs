//! Raw bytes as everything a POP3 server says: first straight through the
//! line buffer and every line parser (status lines, dot-unstuffing,
//! LIST/STAT/UIDL/CAPA lines), then as a whole session while the client
//! connects, logs in and runs every command. Must never panic, hang or
//! allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    peerd_pop3::fuzzing::parsers(data);
    peerd_pop3::fuzzing::session(data);
});
