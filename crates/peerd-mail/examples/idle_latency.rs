//! How long an announcement takes from the SMTP server accepting it to the
//! receiving courier's `AnnouncementReceived` over IMAP IDLE, beside the
//! same hop measured in the same run by a plain client (python3 smtplib +
//! imaplib IDLE by hand, standard library only), as a ratio.
//!
//! One real mail stack (Postfix + Dovecot on loopback, `peerd-testkit`);
//! alice@isp-a.test's courier announces to hitoshi@isp-b.test, whose courier
//! idles on INBOX (folders INBOX and Junk, `processed = "delete"`). The
//! baseline script idles on hitoshi@isp-a.test's INBOX (another mailbox on
//! the same servers, so the two never see each other's mail) and the rounds
//! alternate, so both see the same machine load. Needs root (the stack).
//!
//! ```sh
//! cargo run --release -p peerd-mail --example idle_latency             # 10 rounds
//! PEERD_HEAVY=1 cargo run --release -p peerd-mail --example idle_latency  # 50 rounds
//! ```
//!
//! Dovecot 2.3 holds every IDLE notification back by a fixed 500 ms
//! (tests/mailstack/README.md), so both paths take about half a second; the
//! ratio shows what peerd adds on top (the catch-up scan of both folders,
//! the header and body fetch, HPKE open, signature and replay checks).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

use std::fmt::Debug;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerd_core::{Candidate, CandidateKind};
use peerd_mail::{CourierError, CourierEvent, CourierHandle};
use peerd_state::Store;
use peerd_testkit::{MailStack, Options};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

// The integration tests' harness: the same configuration for the same hosts.
#[path = "../tests/common/mod.rs"]
mod common;
use common::{HostOptions, config_text, identity};

/// How long a courier's mailbox state must stay unchanged before a round:
/// it is back in IDLE (the IDLE command takes one round trip).
const SETTLE: Duration = Duration::from_millis(1000);
/// The longest any one step may take before the benchmark gives up.
const WITHIN: Duration = Duration::from_secs(30);
/// Rounds of each path before the measured ones (TLS, redb files, caches).
const WARM_UP: usize = 1;
/// The message of the courier's log line written right after the SMTP
/// server's `250` to DATA (before the outbox records the send).
const SENT_LOG: &str = "announcement sent";

/// The baseline: a plain mail client from the Python standard library.
/// Arguments: host, submission port, IMAPS port, CA file, sender, sender's
/// password, recipient, recipient's password. Prints `ready` once logged in
/// and INBOX is selected, then for every `go` line on stdin: SMTP connect,
/// STARTTLS, AUTH; IDLE on INBOX; sendmail(); the time from sendmail()
/// returning (the server's 250) to the `* n EXISTS` line, and to having the
/// whole mail (DONE + FETCH BODY.PEEK[]), in ms. Then the mail is expunged.
const BASELINE_PY: &str = r#"
import imaplib, re, smtplib, ssl, sys, time

host, smtp_port, imaps_port, cafile, sender, sender_pw, rcpt, rcpt_pw = sys.argv[1:9]
ctx = ssl.create_default_context(cafile=cafile)
imap = imaplib.IMAP4_SSL(host, int(imaps_port), ssl_context=ctx, timeout=30)
imap.login(rcpt, rcpt_pw)
typ, data = imap.select("INBOX")
if typ != "OK":
    sys.exit(f"SELECT INBOX: {typ} {data}")
if int(data[0]) > 0:
    imap.store("1:*", "+FLAGS", "\\Deleted")
    imap.expunge()
body = ("baseline mail of about the size of an announcement " + "x" * 18 + "\r\n") * 18
print("ready", flush=True)

n = 0
for command in sys.stdin:
    if command.strip() != "go":
        break
    n += 1
    smtp = smtplib.SMTP(host, int(smtp_port), timeout=30)
    smtp.starttls(context=ctx)
    smtp.login(sender, sender_pw)
    tag = imap._new_tag()
    imap.send(tag + b" IDLE\r\n")
    line = imap.readline()
    if not line.startswith(b"+"):
        sys.exit(f"IDLE refused: {line!r}")
    mail = (
        f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: baseline {n}\r\n"
        f"Message-ID: <baseline-{n}-{time.time_ns()}@isp-a.test>\r\n\r\n{body}"
    )
    smtp.sendmail(sender, [rcpt], mail)
    accepted = time.monotonic()
    while True:
        line = imap.readline()
        if not line:
            sys.exit("IMAP connection closed in IDLE")
        m = re.match(rb"\* (\d+) EXISTS", line)
        if m:
            break
    exists = time.monotonic()
    imap.send(b"DONE\r\n")
    while True:
        line = imap.readline()
        if not line:
            sys.exit("IMAP connection closed after DONE")
        if line.startswith(tag + b" "):
            if not line.startswith(tag + b" OK"):
                sys.exit(f"IDLE ended badly: {line!r}")
            break
    imap.tagged_commands.pop(tag, None)
    number = m.group(1).decode()
    typ, data = imap.fetch(number, "(BODY.PEEK[])")
    fetched = time.monotonic()
    if typ != "OK" or not isinstance(data[0], tuple) or b"Subject: baseline" not in data[0][1]:
        sys.exit(f"FETCH {number}: {typ} {data!r:.200}")
    smtp.quit()
    imap.store(number, "+FLAGS", "\\Deleted")
    imap.expunge()
    print(f"{(exists - accepted) * 1000:.3f} {(fetched - accepted) * 1000:.3f}", flush=True)
imap.logout()
"#;

/// Remembers when the courier logged [`SENT_LOG`]: the moment lettre
/// returned the server's `250`.
#[derive(Clone, Default)]
struct SentMark(Arc<Mutex<Option<Instant>>>);

impl SentMark {
    fn take(&self) -> Option<Instant> {
        self.0.lock().unwrap().take()
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SentMark {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let now = Instant::now();
        if !event.metadata().target().starts_with("peerd_mail") {
            return;
        }
        let mut visitor = MessageIs(false);
        event.record(&mut visitor);
        if visitor.0 {
            *self.0.lock().unwrap() = Some(now);
        }
    }
}

/// Whether an event's message is [`SENT_LOG`].
struct MessageIs(bool);

impl tracing::field::Visit for MessageIs {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn Debug) {
        if field.name() == "message" && format!("{value:?}") == SENT_LOG {
            self.0 = true;
        }
    }
}

/// A running courier.
struct Host {
    handle: CourierHandle,
    events: broadcast::Receiver<CourierEvent>,
    tasks: JoinSet<Result<(), CourierError>>,
    shutdown: CancellationToken,
}

impl Host {
    fn start(
        stack: &MailStack,
        dir: &Path,
        me: &str,
        domain: &str,
        peer: &str,
        peer_domain: &str,
    ) -> Host {
        std::fs::create_dir_all(dir).unwrap();
        let options = HostOptions {
            // one announcement per round; the default of 6 an hour would stall them
            max_per_hour: 1000,
            ..HostOptions::default()
        };
        let text = config_text(stack, dir, me, domain, peer, peer_domain, &options);
        let loaded = peerd_config::parse(&text, Path::new("bench.toml"), 0o600)
            .unwrap_or_else(|p| panic!("benchmark config invalid:\n{p}\n{text}"));
        let store = Arc::new(Store::open_in(dir).unwrap());
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let handle = peerd_mail::spawn(
            Arc::new(loaded.config),
            Arc::new(identity(me)),
            store,
            &mut tasks,
            shutdown.clone(),
        );
        let events = handle.events();
        Host {
            handle,
            events,
            tasks,
            shutdown,
        }
    }

    /// Waits until the mailbox session is up, has checked, and its state
    /// has not changed for [`SETTLE`] (it is back in IDLE).
    async fn settled(&self) {
        let mut state = self.handle.watch();
        tokio::time::timeout(
            WITHIN,
            state.wait_for(|s| s.connected && s.last_check.is_some()),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no IMAP session within {WITHIN:?}: {:?}",
                self.handle.state()
            )
        })
        .unwrap();
        let until = Instant::now() + WITHIN;
        state.borrow_and_update();
        while tokio::time::timeout(SETTLE, state.changed()).await.is_ok() {
            assert!(
                Instant::now() < until,
                "the courier never settled: {:?}",
                self.handle.state()
            );
            state.borrow_and_update();
        }
        let s = self.handle.state();
        assert!(
            s.connected && s.last_error.is_none(),
            "courier state: {s:?}"
        );
    }

    /// Drops events that came before this point.
    fn forget_events(&mut self) {
        while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = self.events.try_recv() {}
    }

    /// Waits for the first event `pick` accepts; returns it and when it came.
    async fn wait_for<T>(
        &mut self,
        mut pick: impl FnMut(&CourierEvent) -> Option<T>,
    ) -> (T, Instant) {
        let until = Instant::now() + WITHIN;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Ok(event)) => {
                    let at = Instant::now();
                    if let Some(t) = pick(&event) {
                        return (t, at);
                    }
                },
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {},
                Ok(Err(e)) => panic!("courier events ended: {e}"),
                Err(_) => panic!(
                    "no matching event within {WITHIN:?}; state {:?}",
                    self.handle.state()
                ),
            }
        }
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(WITHIN, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
    }
}

/// The python3 baseline, driven one round at a time.
struct Baseline {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Baseline {
    fn start(stack: &MailStack, script: &Path, recipient: &str) -> Baseline {
        let sender = "alice@isp-a.test";
        let mut child = Command::new("python3")
            .arg(script)
            .arg(stack.addr().to_string())
            .arg(stack.ports().smtp.to_string())
            .arg(stack.ports().imaps.to_string())
            .arg(stack.ca_path())
            .args([sender, &stack.password(sender), recipient])
            .arg(stack.password(recipient))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 (the baseline needs it): {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut baseline = Baseline {
            child,
            stdin,
            stdout,
        };
        let line = baseline.line();
        assert_eq!(line, "ready", "baseline script: {line}");
        baseline
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).unwrap();
        assert!(n > 0, "the baseline script stopped (its error is above)");
        line.trim().to_owned()
    }

    /// One round: (sendmail() returned -> EXISTS, -> whole mail fetched).
    fn round(&mut self) -> (Duration, Duration) {
        tokio::task::block_in_place(|| {
            self.stdin.write_all(b"go\n").unwrap();
            self.stdin.flush().unwrap();
            let line = self.line();
            let mut ms = line.split(' ').map(|v| {
                let v: f64 = v
                    .parse()
                    .unwrap_or_else(|_| panic!("baseline printed {line:?}"));
                Duration::from_secs_f64(v / 1000.0)
            });
            (ms.next().unwrap(), ms.next().unwrap())
        })
    }

    fn stop(mut self) {
        drop(self.stdin);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "baseline script: {status}");
    }
}

/// Median and p90 (nearest rank), in ms.
fn stats(samples: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    let p90 = ms[(n * 9).div_ceil(10) - 1];
    (median, p90)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn dovecot_version() -> String {
    Command::new("dovecot")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        != 0
    {
        eprintln!(
            "idle_latency: needs root: it starts a private Postfix + Dovecot on loopback \
             (tests/mailstack/start). Run it as root, e.g.\n  \
             sudo -E cargo run --release -p peerd-mail --example idle_latency"
        );
        std::process::exit(2);
    }
    let rounds: usize = if std::env::var("PEERD_HEAVY").is_ok_and(|v| v == "1") {
        50
    } else {
        10
    };
    let sent_mark = SentMark::default();
    tracing_subscriber::registry()
        .with(sent_mark.clone())
        .init();

    let stack = match MailStack::start_with(Options::default()).await {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("idle_latency: the mail stack did not start: {e}");
            std::process::exit(1);
        },
    };
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("idle_baseline.py");
    std::fs::write(&script, BASELINE_PY).unwrap();

    let mut alice = Host::start(
        &stack,
        &dir.path().join("alice"),
        "alice",
        "isp-a.test",
        "hitoshi",
        "isp-b.test",
    );
    let mut hitoshi = Host::start(
        &stack,
        &dir.path().join("hitoshi"),
        "hitoshi",
        "isp-b.test",
        "alice",
        "isp-a.test",
    );
    let mut baseline = Baseline::start(&stack, &script, "hitoshi@isp-a.test");

    let load_before = load_average();
    let (mut from_250, mut from_event, mut base_exists, mut base_fetched) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let port = |i: usize| 7000 + u16::try_from(i).unwrap();
    for i in 0..WARM_UP + rounds {
        // (a) peerd: alice's courier sends, hitoshi's courier (in IDLE) receives
        alice.settled().await;
        hitoshi.settled().await;
        alice.forget_events();
        hitoshi.forget_events();
        sent_mark.take();
        let addresses = vec![
            Candidate::new(
                format!("203.0.113.7:{}", port(i)).parse().unwrap(),
                CandidateKind::Host,
            )
            .unwrap(),
        ];
        alice
            .handle
            .announce(None, addresses.clone())
            .await
            .unwrap();
        let sent = alice.wait_for(|e| match e {
            CourierEvent::AnnouncementSent { peer, .. } if peer.as_str() == "hitoshi" => Some(()),
            CourierEvent::SendFailed { error, .. } => panic!("alice could not send: {error}"),
            _ => None,
        });
        let received = hitoshi.wait_for(|e| match e {
            CourierEvent::AnnouncementReceived { candidates, .. } if *candidates == addresses => {
                Some(())
            },
            CourierEvent::AnnouncementRejected { reason, .. } => {
                panic!("hitoshi rejected the announcement: {reason:?}")
            },
            _ => None,
        });
        let (((), sent_at), ((), received_at)) = tokio::join!(sent, received);
        let accepted_at = sent_mark
            .take()
            .expect("the courier logs \"announcement sent\" after the server's 250");
        // (b) the plain client, same stack, next to it
        hitoshi.settled().await;
        let (exists, fetched) = baseline.round();
        if i >= WARM_UP {
            from_250.push(received_at - accepted_at);
            from_event.push(received_at - sent_at);
            base_exists.push(exists);
            base_fetched.push(fetched);
        }
    }
    let load_after = load_average();
    baseline.stop();
    alice.stop().await;
    hitoshi.stop().await;
    drop(stack);

    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let rows = [
        ("peerd: SMTP 250 -> AnnouncementReceived", stats(&from_250)),
        (
            "peerd: AnnouncementSent event -> AnnouncementReceived",
            stats(&from_event),
        ),
        (
            "baseline: sendmail() returned (250) -> `* n EXISTS` in IDLE",
            stats(&base_exists),
        ),
        (
            "baseline: ... -> DONE + FETCH BODY.PEEK[] done",
            stats(&base_fetched),
        ),
    ];
    println!();
    println!(
        "IMAP IDLE path: SMTP accept -> mail at the receiver, one Postfix + Dovecot stack on loopback"
    );
    println!(
        "N = {rounds} rounds of each, alternating, after {WARM_UP} warm-up round of each; \
         {cores} cores; load average {load_before} before, {load_after} after; Dovecot {}",
        dovecot_version()
    );
    println!();
    println!("| path | median | p90 |");
    println!("|---|---:|---:|");
    for (name, (median, p90)) in &rows {
        println!("| {name} | {median:.1} ms | {p90:.1} ms |");
    }
    let (peerd, base) = (rows[0].1, rows[2].1);
    println!();
    println!(
        "ratio peerd / baseline (250 -> AnnouncementReceived vs. 250 -> EXISTS): \
         median {:.2}x, p90 {:.2}x",
        peerd.0 / base.0,
        peerd.1 / base.1
    );
    println!(
        "peerd's work on top of the server's push: {:+.1} ms at the median \
         ({:+.1} ms against the baseline that also fetched the mail)",
        peerd.0 - base.0,
        peerd.0 - rows[3].1.0
    );
    println!();
    println!(
        "peerd's 250 is the courier's \"{SENT_LOG}\" log line, written as soon as lettre returns the \
         server's 250 to DATA; the AnnouncementSent event follows right after it, once the outbox \
         has recorded the send (a redb commit). peerd's figure includes the IDLE wake, DONE, the \
         catch-up scan of Junk and INBOX, the header and body fetch, HPKE open and the checks."
    );
    println!(
        "Dovecot holds every IDLE notification back by a fixed 500 ms, so ~0.5 s is the floor for both."
    );
    println!();
    println!("reproduce (as root): cargo run --release -p peerd-mail --example idle_latency");
    println!("                     PEERD_HEAVY=1 for 50 rounds");
}
