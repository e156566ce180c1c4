//! Raw bytes as everything a peer sends inside a connection: decoded as a
//! sequence of frames (the control stream: hello, acks, unknown frames
//! skipped) and as a data stream's first frame (open, accept, refuse).
//! Must never panic, and whatever decodes must re-encode to bytes that
//! decode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerd_connect::wire::{Frame, display_text};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((frame, used))) = Frame::decode(rest) {
        assert!(used >= 3 && used <= rest.len());
        match &frame {
            Frame::Unknown { .. } => {},
            Frame::Refuse { reason, .. } => {
                let _ = display_text(reason);
                assert_eq!(Frame::decode(&frame.encode()).ok().flatten().map(|x| x.0), Some(frame));
            },
            _ => {
                assert_eq!(Frame::decode(&frame.encode()).ok().flatten().map(|x| x.0), Some(frame));
            },
        }
        rest = &rest[used..];
    }
    // Every body, as every frame type.
    if let Some((&kind, body)) = data.split_first() {
        let _ = Frame::decode_body(kind, body);
    }
});
