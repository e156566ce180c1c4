//! Measures the real mail stack: start, stop, and how long mail takes from
//! SMTP `250` to being visible over IMAP (STATUS polling) and to an IMAP IDLE
//! push. The numbers in tests/mailstack/README.md come from this.
//!
//! `cargo run -p peerd-testkit --example mailstack_timings` (as root)

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use async_imap::extensions::idle::IdleResponse;
use peerd_testkit::{MailStack, SmtpSecurity};

const HITOSHI: &str = "hitoshi@isp-b.test";
const ALICE: &str = "alice@isp-a.test";

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<44} n={:<3} min {:7.1} ms  median {:7.1} ms  max {:7.1} ms",
        samples.len(),
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
    );
}

#[tokio::main]
async fn main() -> Result<(), peerd_testkit::Error> {
    let (mut starts, mut stops) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        let stack = MailStack::start().await;
        starts.push(t.elapsed());
        let t = Instant::now();
        drop(stack);
        stops.push(t.elapsed());
    }
    summary("start (fresh dir, until all 7 ports greet)", starts);
    summary("stop --purge (until every process exited)", stops);

    let stack = MailStack::start().await;
    let (mut postfix_stops, mut postfix_starts) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = Instant::now();
        stack.stop_postfix().await?;
        postfix_stops.push(t.elapsed());
        let t = Instant::now();
        stack.start_postfix().await?;
        postfix_starts.push(t.elapsed());
    }
    summary("stop_postfix()", postfix_stops);
    summary("start_postfix()", postfix_starts);

    let (mut sends, mut visible) = (Vec::new(), Vec::new());
    let mut session = stack.imap_login(HITOSHI).await?;
    for i in 0..20u32 {
        let raw = format!("From: {ALICE}\r\nTo: {HITOSHI}\r\nSubject: t{i}\r\n\r\nx\r\n");
        let started = Instant::now();
        stack
            .send_via_submission(
                ALICE,
                ALICE,
                &[HITOSHI],
                raw.as_bytes(),
                SmtpSecurity::StartTls,
            )
            .await?;
        sends.push(started.elapsed());
        loop {
            let status = session
                .status("INBOX", "(MESSAGES)")
                .await
                .map_err(|e| peerd_testkit::Error::Stack(e.to_string()))?;
            if status.exists == i + 1 {
                break;
            }
        }
        visible.push(started.elapsed());
    }
    summary("submission (connect, STARTTLS, AUTH, DATA, QUIT)", sends);
    summary("submission start -> visible in IMAP STATUS", visible);

    let mut pushes = Vec::new();
    for i in 0..5 {
        session
            .select("INBOX")
            .await
            .map_err(|e| peerd_testkit::Error::Stack(e.to_string()))?;
        let mut idle = session.idle();
        idle.init()
            .await
            .map_err(|e| peerd_testkit::Error::Stack(e.to_string()))?;
        let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(10));
        let send = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let raw = format!("From: x@foreign.test\r\nSubject: idle{i}\r\n\r\nx\r\n");
            stack
                .send_raw_via_mx("x@foreign.test", &[HITOSHI], raw.as_bytes())
                .await
                .map(|()| Instant::now())
        };
        let (woken, accepted) = tokio::join!(wait, send);
        let accepted = accepted?;
        let latency = accepted.elapsed();
        match woken.map_err(|e| peerd_testkit::Error::Stack(e.to_string()))? {
            IdleResponse::NewData(_) => pushes.push(latency),
            other => println!("IDLE not woken: {other:?}"),
        }
        session = idle
            .done()
            .await
            .map_err(|e| peerd_testkit::Error::Stack(e.to_string()))?;
    }
    summary("SMTP 250 -> IMAP IDLE push (* n EXISTS)", pushes);
    Ok(())
}
