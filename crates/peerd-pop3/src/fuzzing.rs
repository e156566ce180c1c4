//! Entry points for `cargo fuzz` (built only with `--cfg fuzzing`, which
//! `cargo fuzz` sets). See `crates/peerd-pop3/fuzz`.

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};

use crate::client::{Mode, Pop3Client, Settings};
use crate::wire::{
    Body, LineBuffer, Push, is_temporary_code, parse_capability, parse_list_line, parse_stat,
    parse_status, parse_uidl_line,
};

/// Server bytes handed out in small pieces of varying size.
struct Script {
    data: Vec<u8>,
    pos: usize,
    step: usize,
}

impl AsyncRead for Script {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.step = this.step % 97 + 13;
        let n = this
            .step
            .min(buf.remaining())
            .min(this.data.len() - this.pos);
        buf.put_slice(&this.data[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// `data` as everything a server says in one session, while the client
/// connects (plaintext), logs in and runs every command.
pub fn session(data: &[u8]) {
    let io = tokio::io::join(
        Script {
            data: data.to_vec(),
            pos: 0,
            step: 0,
        },
        tokio::io::sink(),
    );
    let settings = Settings {
        timeout: Duration::from_secs(5),
        max_line: 600,
        max_entries: 1000,
    };
    runtime().block_on(async move {
        let Ok(mut pop) = Pop3Client::establish(Box::new(io), Mode::Plain, settings).await else {
            return;
        };
        let _ = pop.login("user", "password").await;
        let _ = pop.stat().await;
        let _ = pop.list().await;
        let _ = pop.uidl().await;
        let _ = pop.top_headers(1, 4096).await;
        let _ = pop.retr(1, 4096).await;
        let _ = pop.dele(1).await;
        let _ = pop.noop().await;
        let _ = pop.rset().await;
        let _ = pop.quit().await;
    });
}

/// `data` through the line buffer and every line parser directly.
pub fn parsers(data: &[u8]) {
    let mut lines = LineBuffer::new(512);
    let mut body = Body::new(2048);
    let mut fed = 0;
    let mut step = 1;
    loop {
        match lines.next_line() {
            Err(_) => return,
            Ok(Some(line)) => {
                assert!(line.len() <= 512);
                let _ = parse_status(line);
                let _ = parse_list_line(line);
                let _ = parse_stat(line);
                let _ = parse_uidl_line(line);
                let _ = parse_capability(line);
                let _ = is_temporary_code(line);
                let _ = crate::error::quote(line);
                if body.push(line) != Push::More {
                    body = Body::new(2048);
                }
            },
            Ok(None) => {
                if fed == data.len() {
                    return;
                }
                let spare = lines.spare();
                assert!(!spare.is_empty());
                step = step % 61 + 1;
                let n = step.min(spare.len()).min(data.len() - fed);
                spare[..n].copy_from_slice(&data[fed..fed + n]);
                lines.filled(n);
                fed += n;
            },
        }
    }
}
