//! The modem driver's serial side: the AT dialogue that dials, and the
//! hang-up afterwards.
//!
//! peerd talks to the modem itself instead of leaving it to a `chat`
//! script inside pppd because the modem's answer is what a user needs to
//! see: `BUSY`, `NO CARRIER`, `NO DIALTONE` and `NO ANSWER` each become a
//! typed [`ModemFailure`] in the link state, where a chat script would
//! only make pppd exit with status 8 ("the connect script failed").
//!
//! The dialogue is line based with a timeout per step: every `init`
//! string must be answered `OK`, then `ATD<number>` must be answered
//! `CONNECT`. Lines that are not final result codes (the echo of our
//! command, `RING`, information text, line noise) are skipped; a modem
//! that only produces those, or nothing, runs into the step's timeout.
//!
//! After `CONNECT` the port is closed so that pppd can open the tty
//! (ports are opened exclusively). Closing a tty with `HUPCL` set lowers
//! DTR, and a modem configured with `&D2` (the usual setting) hangs up
//! when DTR drops: so the port is told to keep the line
//! ([`ModemPort::hangup_on_close`]) before it is closed.
//!
//! Hanging up: pppd lowers DTR itself when it exits. peerd then reopens the
//! port and makes sure: it drops DTR for a moment where the line allows it
//! and confirms with `ATH`; where it does not (a pseudo-terminal, some USB
//! adapters), it sends the `+++` escape between two guard times and then
//! `ATH`. The modem-control calls are behind the [`ModemPort`] trait
//! because a pty cannot toggle DTR at all: tests run the real serial code
//! on a pty and see the fallback, and can wrap the port to see the DTR path.

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::termios::{self, ControlFlags, SetArg};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};
use tracing::{debug, trace, warn};

use crate::state::ModemFailure;

/// The longest line kept from the modem; longer runs without a line end
/// are cut (line noise must not grow memory).
const MAX_LINE: usize = 512;

/// A serial port a modem is on, with the modem-control lines it offers.
pub trait ModemPort: AsyncRead + AsyncWrite + Send + Unpin {
    /// Raises (`true`) or lowers (`false`) DTR. Fails where the line has
    /// no modem control (a pseudo-terminal answers "Inappropriate ioctl").
    fn set_dtr(&mut self, level: bool) -> io::Result<()>;

    /// Whether closing the port lowers DTR (the tty's `HUPCL` flag). Only
    /// called right before the port is closed; it may give up the
    /// port's exclusive lock to do its work.
    fn hangup_on_close(&mut self, on: bool) -> io::Result<()>;
}

/// Opens the modem's port. The daemon uses [`SerialOpener`]; tests can
/// wrap it to observe or change the line control.
pub trait PortOpener: Send + Sync + fmt::Debug {
    /// Opens `device` at `baud`.
    fn open(&self, device: &Path, baud: u32) -> io::Result<Box<dyn ModemPort>>;
}

/// The real serial port, through tokio-serial.
#[derive(Debug, Clone, Copy, Default)]
pub struct SerialOpener;

impl PortOpener for SerialOpener {
    fn open(&self, device: &Path, baud: u32) -> io::Result<Box<dyn ModemPort>> {
        let stream = tokio_serial::new(device.to_string_lossy(), baud).open_native_async()?;
        Ok(Box::new(SerialModem {
            stream,
            device: device.to_owned(),
        }))
    }
}

/// A tokio-serial port and the path it was opened from.
#[derive(Debug)]
pub struct SerialModem {
    stream: SerialStream,
    device: PathBuf,
}

impl SerialModem {
    /// The serial stream.
    pub fn stream(&mut self) -> &mut SerialStream {
        &mut self.stream
    }
}

impl AsyncRead for SerialModem {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SerialModem {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl ModemPort for SerialModem {
    fn set_dtr(&mut self, level: bool) -> io::Result<()> {
        self.stream
            .write_data_terminal_ready(level)
            .map_err(io::Error::from)
    }

    fn hangup_on_close(&mut self, on: bool) -> io::Result<()> {
        // tokio-serial does not expose termios, and borrowing its raw fd
        // would need `unsafe`: open the tty a second time (after giving up
        // the exclusive lock, which also stops a non-root open failing with
        // EBUSY) and change the flag there; termios belongs to the tty, not
        // to one open file. O_NONBLOCK: never wait for carrier.
        self.stream.set_exclusive(false).map_err(io::Error::from)?;
        let side = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags((OFlag::O_NOCTTY | OFlag::O_NONBLOCK).bits())
            .open(&self.device)?;
        let mut t = termios::tcgetattr(&side)?;
        if t.control_flags.contains(ControlFlags::HUPCL) != on {
            t.control_flags.set(ControlFlags::HUPCL, on);
            termios::tcsetattr(&side, SetArg::TCSANOW, &t)?;
        }
        Ok(())
    }
}

/// A final result code (verbose form, `V1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultCode {
    /// `OK`.
    Ok,
    /// `CONNECT`, with whatever follows (the speed, the protocol).
    Connect(String),
    /// `NO CARRIER`.
    NoCarrier,
    /// `ERROR`.
    Error,
    /// `NO DIALTONE` (or `NO DIAL TONE`).
    NoDialtone,
    /// `BUSY`.
    Busy,
    /// `NO ANSWER`.
    NoAnswer,
}

impl ResultCode {
    /// The final result code a line is, if it is one. `RING`, echoes and
    /// information text are not.
    pub fn parse(line: &str) -> Option<Self> {
        let line = line.trim();
        let is = |word: &str| line.eq_ignore_ascii_case(word);
        if is("OK") {
            Some(Self::Ok)
        } else if is("CONNECT") {
            Some(Self::Connect(String::new()))
        } else if let Some(rest) = line
            .get(..8)
            .filter(|p| p.eq_ignore_ascii_case("CONNECT "))
            .and_then(|_| line.get(8..))
        {
            // `get`: noise is not ASCII, and slicing it could panic
            Some(Self::Connect(rest.trim().to_owned()))
        } else if is("NO CARRIER") {
            Some(Self::NoCarrier)
        } else if is("ERROR") {
            Some(Self::Error)
        } else if is("NO DIALTONE") || is("NO DIAL TONE") {
            Some(Self::NoDialtone)
        } else if is("BUSY") {
            Some(Self::Busy)
        } else if is("NO ANSWER") {
            Some(Self::NoAnswer)
        } else {
            None
        }
    }
}

/// The timeouts of the AT dialogue and of the hang-up.
#[derive(Debug, Clone, Copy)]
pub struct AtTimings {
    /// Waiting for the answer to one `init` string, `ATH`, or `+++`.
    pub step: Duration,
    /// Waiting for the answer to `ATD` (dialling, the remote end
    /// answering, the modems training).
    pub dial: Duration,
    /// The silence before and after `+++` (the modem's S12 register;
    /// 1 s by default).
    pub guard: Duration,
    /// How long DTR is held low to hang up.
    pub dtr_drop: Duration,
}

/// A modem port read line by line.
pub struct AtPort {
    port: Box<dyn ModemPort>,
    buf: Vec<u8>,
    last_line: Option<String>,
}

impl fmt::Debug for AtPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtPort")
            .field("buffered", &self.buf.len())
            .field("last_line", &self.last_line)
            .finish_non_exhaustive()
    }
}

impl AtPort {
    /// Wraps an open port.
    pub fn new(port: Box<dyn ModemPort>) -> Self {
        Self {
            port,
            buf: Vec::new(),
            last_line: None,
        }
    }

    /// The port, to close it or to use its line control.
    pub fn into_inner(self) -> Box<dyn ModemPort> {
        self.port
    }

    /// Sends a command line (adds the CR).
    pub async fn send(&mut self, command: &str) -> io::Result<()> {
        trace!(command, "AT >");
        self.port.write_all(command.as_bytes()).await?;
        self.port.write_all(b"\r").await?;
        self.port.flush().await
    }

    /// The next non-empty line. Cancel-safe: what was read stays in the
    /// buffer.
    pub async fn next_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(line) = self.take_line() {
                trace!(line, "AT <");
                return Ok(line);
            }
            let mut chunk = [0u8; 256];
            let n = self.port.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the serial port was closed",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn take_line(&mut self) -> Option<String> {
        loop {
            let end = self.buf.iter().position(|b| *b == b'\r' || *b == b'\n');
            let cut = match end {
                Some(end) => end,
                None if self.buf.len() >= MAX_LINE => MAX_LINE,
                None => return None,
            };
            let line: Vec<u8> = self.buf.drain(..cut).collect();
            if end.is_some() {
                self.buf.remove(0);
            }
            let text = String::from_utf8_lossy(&line).trim().to_owned();
            if !text.is_empty() {
                return Some(text);
            }
        }
    }

    /// Waits for a final result code, skipping other lines.
    pub async fn final_result(
        &mut self,
        command: &str,
        wait: Duration,
    ) -> Result<ResultCode, ModemFailure> {
        let result = tokio::time::timeout(wait, async {
            loop {
                let line = self.next_line().await?;
                if let Some(code) = ResultCode::parse(&line) {
                    return Ok::<_, io::Error>(code);
                }
                debug!(line, "Modem line skipped");
                self.last_line = Some(line);
            }
        })
        .await;
        match result {
            Ok(Ok(code)) => Ok(code),
            Ok(Err(e)) => Err(ModemFailure::Io {
                error: e.to_string(),
            }),
            Err(_) => Err(ModemFailure::Timeout {
                command: command.to_owned(),
                waited: wait,
                last_line: self.last_line.take(),
            }),
        }
    }

    /// Sends a command and waits for its final result code.
    pub async fn command(
        &mut self,
        command: &str,
        wait: Duration,
    ) -> Result<ResultCode, ModemFailure> {
        self.last_line = None;
        self.send(command).await.map_err(|e| ModemFailure::Io {
            error: e.to_string(),
        })?;
        self.final_result(command, wait).await
    }
}

/// The AT dialogue: every `init` string expecting `OK`, then
/// `ATD<number>` expecting `CONNECT`. Returns what followed `CONNECT`.
pub async fn dial(
    port: &mut AtPort,
    init: &[String],
    number: &str,
    timings: &AtTimings,
) -> Result<String, ModemFailure> {
    for command in init {
        match port.command(command, timings.step).await? {
            ResultCode::Ok => {},
            ResultCode::Error => {
                return Err(ModemFailure::Error {
                    command: command.clone(),
                });
            },
            other => {
                return Err(ModemFailure::Unexpected {
                    command: command.clone(),
                    result: format!("{other:?}"),
                });
            },
        }
    }
    let atd = format!("ATD{number}");
    match port.command(&atd, timings.dial).await? {
        ResultCode::Connect(rest) => Ok(rest),
        ResultCode::Busy => Err(ModemFailure::Busy),
        ResultCode::NoCarrier => Err(ModemFailure::NoCarrier),
        ResultCode::NoDialtone => Err(ModemFailure::NoDialtone),
        ResultCode::NoAnswer => Err(ModemFailure::NoAnswer),
        ResultCode::Error => Err(ModemFailure::Error { command: atd }),
        ResultCode::Ok => Err(ModemFailure::Unexpected {
            command: atd,
            result: "OK".to_owned(),
        }),
    }
}

/// Stops a dial in progress (any character aborts dialling) and puts
/// the modem on hook. Best effort: the port may be gone.
pub async fn abort_dial(port: &mut AtPort, timings: &AtTimings) {
    if port.send("").await.is_ok() {
        // NO CARRIER (or OK) acknowledges the abort; no answer is fine
        let _ = port.final_result("<abort>", timings.step).await;
    }
    if let Err(e) = port.command("ATH", timings.step).await {
        debug!(error = %e, "No answer to ATH after aborting the dial");
    }
}

/// How a hang-up was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupMethod {
    /// DTR was dropped and `ATH` confirmed.
    Dtr,
    /// `+++` then `ATH`.
    Escape,
}

/// Puts the modem on hook: DTR low where the line allows (confirmed by
/// `ATH`), otherwise the `+++` escape with guard times and `ATH`.
pub async fn hang_up(port: &mut AtPort, timings: &AtTimings) -> Result<HangupMethod, ModemFailure> {
    match port.port.set_dtr(false) {
        Ok(()) => {
            tokio::time::sleep(timings.dtr_drop).await;
            if let Err(e) = port.port.set_dtr(true) {
                warn!(error = %e, "Cannot raise DTR again after the hang-up");
            }
            // A modem set to ignore DTR (&D0) is still online: ATH would
            // be data to it and go unanswered, so the escape follows.
            if let Ok(ResultCode::Ok) = port.command("ATH", timings.step).await {
                return Ok(HangupMethod::Dtr);
            }
            debug!("No OK to ATH after dropping DTR; trying the +++ escape");
        },
        Err(e) => debug!(error = %e, "DTR cannot be dropped on this line; using +++ and ATH"),
    }
    tokio::time::sleep(timings.guard).await;
    port.port
        .write_all(b"+++")
        .await
        .map_err(|e| ModemFailure::Io {
            error: e.to_string(),
        })?;
    port.port.flush().await.map_err(|e| ModemFailure::Io {
        error: e.to_string(),
    })?;
    tokio::time::sleep(timings.guard).await;
    // OK if the modem was online; nothing if it was already in command
    // mode. Either way ATH follows.
    let _ = port.final_result("+++", timings.step).await;
    match port.command("ATH", timings.step).await? {
        ResultCode::Ok => Ok(HangupMethod::Escape),
        other => Err(ModemFailure::Unexpected {
            command: "ATH".to_owned(),
            result: format!("{other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_result_codes() {
        assert_eq!(ResultCode::parse("OK"), Some(ResultCode::Ok));
        assert_eq!(ResultCode::parse(" ok "), Some(ResultCode::Ok));
        assert_eq!(
            ResultCode::parse("CONNECT 115200"),
            Some(ResultCode::Connect("115200".to_owned()))
        );
        assert_eq!(
            ResultCode::parse("CONNECT"),
            Some(ResultCode::Connect(String::new()))
        );
        assert_eq!(ResultCode::parse("BUSY"), Some(ResultCode::Busy));
        assert_eq!(ResultCode::parse("NO CARRIER"), Some(ResultCode::NoCarrier));
        assert_eq!(
            ResultCode::parse("NO DIALTONE"),
            Some(ResultCode::NoDialtone)
        );
        assert_eq!(
            ResultCode::parse("NO DIAL TONE"),
            Some(ResultCode::NoDialtone)
        );
        assert_eq!(ResultCode::parse("NO ANSWER"), Some(ResultCode::NoAnswer));
        assert_eq!(ResultCode::parse("ERROR"), Some(ResultCode::Error));
        // noise that is not ASCII where "CONNECT " would end must not panic
        assert_eq!(ResultCode::parse("CONNECT\u{e9}x"), None);
        assert_eq!(
            ResultCode::parse("CONNECT \u{e9}"),
            Some(ResultCode::Connect("\u{e9}".to_owned()))
        );
        for not_final in [
            "RING",
            "ATZ",
            "ATD*99#",
            "CONNECTED",
            "+CSQ: 20,99",
            "OKAY",
            "",
        ] {
            assert_eq!(ResultCode::parse(not_final), None, "{not_final:?}");
        }
    }

    /// A port fed from a byte string.
    struct Scripted(std::io::Cursor<Vec<u8>>);

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let mut tmp = [0u8; 7]; // small reads: lines split across reads
            let n = std::io::Read::read(&mut self.0, &mut tmp)?;
            buf.put_slice(&tmp[..n]);
            std::task::Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    impl ModemPort for Scripted {
        fn set_dtr(&mut self, _level: bool) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(25))
        }
        fn hangup_on_close(&mut self, _on: bool) -> io::Result<()> {
            Ok(())
        }
    }

    fn port(bytes: &[u8]) -> AtPort {
        AtPort::new(Box::new(Scripted(std::io::Cursor::new(bytes.to_vec()))))
    }

    #[tokio::test]
    async fn lines_split_on_cr_and_lf_and_skip_empties() {
        let mut p = port(b"ATZ\r\r\nOK\r\n\r\nCONNECT 9600\nx");
        assert_eq!(p.next_line().await.unwrap(), "ATZ");
        assert_eq!(p.next_line().await.unwrap(), "OK");
        assert_eq!(p.next_line().await.unwrap(), "CONNECT 9600");
        let eof = p.next_line().await.unwrap_err();
        assert_eq!(eof.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn overlong_noise_is_cut_and_non_utf8_survives() {
        let mut bytes = vec![0xffu8; 2000];
        bytes.extend_from_slice(b"\r\nOK\r\n");
        let mut p = port(&bytes);
        let first = p.next_line().await.unwrap();
        assert!(first.chars().count() <= MAX_LINE, "cut at {MAX_LINE}");
        let code = p.final_result("AT", Duration::from_secs(1)).await.unwrap();
        assert_eq!(code, ResultCode::Ok);
    }

    #[tokio::test]
    async fn dial_maps_each_final_code() {
        let timings = AtTimings {
            step: Duration::from_secs(1),
            dial: Duration::from_secs(1),
            guard: Duration::ZERO,
            dtr_drop: Duration::ZERO,
        };
        let init = ["ATZ".to_owned()];
        let cases: [(&[u8], Result<String, ModemFailure>); 7] = [
            (b"OK\r\nCONNECT 57600\r\n", Ok("57600".to_owned())),
            (b"OK\r\nBUSY\r\n", Err(ModemFailure::Busy)),
            (b"OK\r\nNO CARRIER\r\n", Err(ModemFailure::NoCarrier)),
            (b"OK\r\nNO DIALTONE\r\n", Err(ModemFailure::NoDialtone)),
            (b"OK\r\nNO ANSWER\r\n", Err(ModemFailure::NoAnswer)),
            (
                b"OK\r\nERROR\r\n",
                Err(ModemFailure::Error {
                    command: "ATD*99#".to_owned(),
                }),
            ),
            (
                b"ERROR\r\n",
                Err(ModemFailure::Error {
                    command: "ATZ".to_owned(),
                }),
            ),
        ];
        for (script, want) in cases {
            let mut p = port(script);
            assert_eq!(dial(&mut p, &init, "*99#", &timings).await, want);
        }
    }
}
