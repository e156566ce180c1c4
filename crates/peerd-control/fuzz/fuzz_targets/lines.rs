//! Raw bytes as what arrives on a control connection, in chunks of the
//! sizes the first byte picks, through the line reader (with a small
//! limit, so over-long lines are reached too) and every decoder: the
//! hello, requests, responses and events. Must never panic, hang or grow
//! without bound; whatever decodes must encode and decode back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerd_control::{
    ClientHello, Event, LineReader, Request, Response, decode, encode,
};

fn round_trip<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let line = encode(value).expect("what decoded encodes");
    let again: T = decode(&line[..line.len() - 1]).expect("what encoded decodes");
    assert_eq!(&again, value);
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;
    let mut reader = LineReader::new(4096);
    for piece in bytes.chunks(chunk) {
        reader.push(piece);
        loop {
            match reader.next_line() {
                Ok(Some(line)) => {
                    if let Ok(hello) = decode::<ClientHello>(&line) {
                        let _ = hello.check();
                        round_trip(&hello);
                    }
                    if let Ok(request) = decode::<Request>(&line) {
                        let _ = request.validate();
                        let _ = (request.method(), request.is_read_only(), request.new_peer());
                        round_trip(&request);
                    }
                    if let Ok(response) = decode::<Response>(&line) {
                        let _ = response.kind();
                        round_trip(&response);
                    }
                    if let Ok(event) = decode::<Event>(&line) {
                        let _ = event.kind.name();
                        round_trip(&event);
                    }
                },
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
