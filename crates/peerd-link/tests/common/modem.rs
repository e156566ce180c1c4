//! A Hayes modem emulated on a pseudo-terminal.
//!
//! The link manager opens the pty's slave path with tokio-serial exactly as
//! it would open `/dev/ttyUSB0`; this emulator sits on the master side. It
//! answers `AT` commands (`ATZ`, `AT&F`, `ATE0`/`ATE1`, `ATH`, anything
//! else `AT...` with `OK`), dials with a configurable final result code
//! and delay, echoes or not, can answer with line noise or not at all,
//! goes online after `CONNECT`, returns to command mode on `+++` framed by
//! guard times, drops carrier on command, and treats a DTR drop reported
//! by a test's line control as `&D2` modems do (hang up).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::termios::{self, ControlFlags, SetArg};
use peerd_link::{ModemPort, PortOpener, SerialOpener};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_serial::{SerialPort, SerialStream};

/// How the modem answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answers {
    /// Properly.
    Normal,
    /// Line noise before every answer.
    NoiseFirst,
    /// Only line noise, never a result code.
    NoiseOnly,
    /// Nothing at all.
    Silent,
}

/// The emulated modem's settings.
#[derive(Debug, Clone)]
pub struct ModemSetup {
    /// Echo commands (`E1`, the factory default).
    pub echo: bool,
    /// What `ATD` ends with: `CONNECT 115200`, `BUSY`, `NO CARRIER`...
    pub dial_result: String,
    /// How long dialling takes.
    pub dial_delay: Duration,
    pub answers: Answers,
    /// The `+++` guard time it enforces (S12).
    pub guard: Duration,
}

impl Default for ModemSetup {
    fn default() -> Self {
        Self {
            echo: true,
            dial_result: "CONNECT 115200".to_owned(),
            dial_delay: Duration::from_millis(50),
            answers: Answers::Normal,
            guard: Duration::from_millis(100),
        }
    }
}

#[derive(Debug)]
enum Control {
    DropCarrier,
    DtrDropped,
}

/// What the modem saw, for assertions.
#[derive(Debug, Default)]
pub struct Seen {
    /// Commands and events in order: "ATZ", "ATD*99#", "+++", "ATH",
    /// "<abort>", "carrier dropped", "dtr dropped".
    pub log: Vec<String>,
    /// Online (a call up).
    pub off_hook: bool,
    /// Number of calls connected.
    pub calls: usize,
}

/// A running emulated modem.
pub struct FakeModem {
    path: PathBuf,
    /// The slave side, held open so the pty (and its termios) stays
    /// whoever opens and closes the path.
    _slave: SerialStream,
    seen: Arc<Mutex<Seen>>,
    control: mpsc::UnboundedSender<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeModem {
    pub fn start(setup: ModemSetup) -> Self {
        // (the slave is neither TIOCEXCL nor flocked: the driver can open
        // the path exclusively)
        let (master, slave) = SerialStream::pair().unwrap();
        let path = PathBuf::from(slave.name().unwrap());
        // as serial ports boot: closing the tty would drop DTR
        set_hupcl(&path, true);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (control, control_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(emulate(master, setup, Arc::clone(&seen), control_rx));
        Self {
            path,
            _slave: slave,
            seen,
            control,
            task,
        }
    }

    /// The tty path to configure as `device`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn log(&self) -> Vec<String> {
        self.seen.lock().unwrap().log.clone()
    }

    pub fn off_hook(&self) -> bool {
        self.seen.lock().unwrap().off_hook
    }

    pub fn calls(&self) -> usize {
        self.seen.lock().unwrap().calls
    }

    /// Whether closing the tty would drop DTR (termios HUPCL).
    pub fn hupcl(&self) -> bool {
        let tty = tty(&self.path);
        termios::tcgetattr(&tty)
            .unwrap()
            .control_flags
            .contains(ControlFlags::HUPCL)
    }

    /// The remote end hangs up: `NO CARRIER`, back to command mode.
    pub fn drop_carrier(&self) {
        self.control.send(Control::DropCarrier).unwrap();
    }

    /// An opener whose ports can drop DTR: the real serial port (on this
    /// pty) with DTR changes reported to this modem instead of an ioctl
    /// a pty refuses.
    pub fn dtr_opener(&self) -> Arc<dyn PortOpener> {
        Arc::new(DtrOpener {
            control: self.control.clone(),
        })
    }
}

impl Drop for FakeModem {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn tty(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags((OFlag::O_NOCTTY | OFlag::O_NONBLOCK).bits())
        .open(path)
        .unwrap()
}

fn set_hupcl(path: &Path, on: bool) {
    let tty = tty(path);
    let mut t = termios::tcgetattr(&tty).unwrap();
    t.control_flags.set(ControlFlags::HUPCL, on);
    termios::tcsetattr(&tty, SetArg::TCSANOW, &t).unwrap();
}

const NOISE: &[u8] = b"\r\n\x07~#\xfe\xff%$NOISE\x00\x1b[0m\r\n";

/// The modem's side of the line.
struct Out {
    tx: WriteHalf<SerialStream>,
    answers: Answers,
}

impl Out {
    async fn raw(&mut self, bytes: &[u8]) {
        self.tx.write_all(bytes).await.unwrap();
        self.tx.flush().await.unwrap();
    }

    /// A result code, as the modem's mood says.
    async fn answer(&mut self, text: &str) {
        let framed = format!("\r\n{text}\r\n");
        match self.answers {
            Answers::Normal => self.raw(framed.as_bytes()).await,
            Answers::NoiseFirst => {
                self.raw(NOISE).await;
                self.raw(framed.as_bytes()).await;
            },
            Answers::NoiseOnly => self.raw(NOISE).await,
            Answers::Silent => {},
        }
    }
}

async fn emulate(
    master: SerialStream,
    setup: ModemSetup,
    seen: Arc<Mutex<Seen>>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let (mut rx, tx) = tokio::io::split(master);
    let mut out = Out {
        tx,
        answers: setup.answers,
    };
    let mut echo = setup.echo;
    let mut online = false;
    let mut line: Vec<u8> = Vec::new();
    let mut dialling: Option<Instant> = None;
    let mut last_rx = Instant::now();
    let mut plus_run = 0usize;
    let mut escape_at: Option<Instant> = None;
    let record = |what: &str| seen.lock().unwrap().log.push(what.to_owned());
    let mut buf = [0u8; 256];
    loop {
        tokio::select! {
            read = rx.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => {
                        // nobody on the slave side yet (cannot happen while
                        // we hold it open): try again
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    },
                    Ok(n) => n,
                };
                let now = Instant::now();
                let silence = now - last_rx;
                last_rx = now;
                if online {
                    // the escape: guard, "+++", guard
                    for &b in &buf[..n] {
                        if b == b'+' && (plus_run > 0 || silence >= setup.guard.mul_f32(0.8)) {
                            plus_run += 1;
                        } else {
                            plus_run = 0;
                        }
                    }
                    escape_at = (plus_run == 3).then(|| now + setup.guard);
                    continue;
                }
                for &b in &buf[..n] {
                    if dialling.is_some() {
                        // any character aborts dialling
                        dialling = None;
                        record("<abort>");
                        out.answer("NO CARRIER").await;
                        continue;
                    }
                    if b == b'\r' {
                        let text = String::from_utf8_lossy(&line).trim().to_owned();
                        line.clear();
                        if echo && setup.answers != Answers::Silent {
                            out.raw(format!("{text}\r").as_bytes()).await;
                        }
                        // a command starts at "AT"; anything before it (a
                        // "+++" sent in command mode) is not one
                        let Some(start) = text.to_ascii_uppercase().find("AT") else {
                            continue;
                        };
                        let command = text[start..].to_owned();
                        record(&command);
                        let upper = command.to_ascii_uppercase();
                        if upper.starts_with("ATD") {
                            dialling = Some(Instant::now() + setup.dial_delay);
                            continue;
                        }
                        if upper.starts_with("ATZ") || upper.starts_with("AT&F") {
                            echo = setup.echo;
                        }
                        if upper.contains("E0") {
                            echo = false;
                        } else if upper.contains("E1") {
                            echo = true;
                        }
                        if upper.starts_with("ATH") {
                            seen.lock().unwrap().off_hook = false;
                        }
                        out.answer("OK").await;
                    } else if b != b'\n' {
                        line.push(b);
                    }
                }
            },
            () = sleep_until(dialling) => {
                dialling = None;
                out.answer(&setup.dial_result).await;
                if setup.dial_result.starts_with("CONNECT") && setup.answers != Answers::Silent {
                    online = true;
                    let mut s = seen.lock().unwrap();
                    s.off_hook = true;
                    s.calls += 1;
                }
            },
            () = sleep_until(escape_at) => {
                escape_at = None;
                plus_run = 0;
                if Instant::now() - last_rx >= setup.guard.mul_f32(0.8) {
                    online = false;
                    record("+++");
                    out.answer("OK").await;
                }
            },
            Some(control) = control.recv() => match control {
                Control::DropCarrier => {
                    if online {
                        online = false;
                        {
                            let mut s = seen.lock().unwrap();
                            s.off_hook = false;
                            s.log.push("carrier dropped".to_owned());
                        }
                        out.raw(b"\r\nNO CARRIER\r\n").await;
                    }
                },
                Control::DtrDropped => {
                    // &D2: hang up, back to command mode
                    online = false;
                    dialling = None;
                    let mut s = seen.lock().unwrap();
                    s.off_hook = false;
                    s.log.push("dtr dropped".to_owned());
                },
            },
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Opens the real serial port; DTR changes go to the emulator.
#[derive(Debug)]
struct DtrOpener {
    control: mpsc::UnboundedSender<Control>,
}

impl PortOpener for DtrOpener {
    fn open(&self, device: &Path, baud: u32) -> io::Result<Box<dyn ModemPort>> {
        let inner = SerialOpener.open(device, baud)?;
        Ok(Box::new(DtrPort {
            inner,
            control: self.control.clone(),
        }))
    }
}

struct DtrPort {
    inner: Box<dyn ModemPort>,
    control: mpsc::UnboundedSender<Control>,
}

impl AsyncRead for DtrPort {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for DtrPort {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl ModemPort for DtrPort {
    fn set_dtr(&mut self, level: bool) -> io::Result<()> {
        if !level {
            let _ = self.control.send(Control::DtrDropped);
        }
        Ok(())
    }

    fn hangup_on_close(&mut self, on: bool) -> io::Result<()> {
        self.inner.hangup_on_close(on)
    }
}
