//! `open`: stdin to the stream, the stream to stdout, until the peer is
//! done.
//!
//! Made for ssh's `ProxyCommand`: ssh writes to our stdin and reads our
//! stdout. Each direction has its own thread. When stdin ends, the socket's
//! sending side is shut down (the daemon finishes the stream towards the
//! peer) and the other direction goes on; when the peer finishes its side,
//! peerctl has written everything to stdout and exits, without waiting for
//! stdin (ssh may keep it open).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::thread;

use crate::{Failure, exit};

/// How much is copied at a time.
const CHUNK: usize = 64 * 1024;

/// Copies between stdin/stdout and `stream` (whose first bytes, read
/// already, are `early`) until the stream ends.
pub fn run(stream: UnixStream, early: &[u8]) -> Result<(), Failure> {
    let fail = |what: &str, e: io::Error| Failure::new(exit::FAILED, format!("{what}: {e}"));
    stream
        .set_read_timeout(None)
        .and_then(|()| stream.set_write_timeout(None))
        .map_err(|e| fail("cannot set up the stream", e))?;
    let mut to_peer = stream
        .try_clone()
        .map_err(|e| fail("cannot set up the stream", e))?;
    // stdin -> stream. Not joined: it may block on stdin forever after the
    // peer is done, and the process ends without it.
    thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let _ = io::copy(&mut stdin, &mut to_peer);
        let _ = to_peer.shutdown(Shutdown::Write);
    });
    // stream -> stdout, flushed chunk by chunk (stdout is line-buffered
    // and ssh's protocol is not lines).
    let mut from_peer = stream;
    let mut stdout = io::stdout().lock();
    let mut buf = vec![0; CHUNK];
    let mut pending = early;
    loop {
        if !pending.is_empty()
            && let Err(e) = stdout.write_all(pending).and_then(|()| stdout.flush())
        {
            // Whoever reads our stdout is gone: so is the point.
            let _ = from_peer.shutdown(Shutdown::Both);
            return match e.kind() {
                io::ErrorKind::BrokenPipe => Ok(()),
                _ => Err(fail("cannot write to stdout", e)),
            };
        }
        let n = match from_peer.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(fail("the stream failed", e)),
        };
        pending = &buf[..n];
    }
}
