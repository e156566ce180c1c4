//! A minimal SMTP client for putting mail into a stack: the submission
//! ports (STARTTLS or implicit TLS, AUTH PLAIN) and the MX port (plain, no
//! AUTH). Test code only; the courier's own sending uses lettre.

use std::time::Duration;

use base64::Engine as _;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader,
};
use tokio::net::TcpStream;

use crate::MailStack;
use crate::error::{Error, deadline};

/// The deadline of one whole SMTP dialogue.
const SMTP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest reply line accepted (RFC 5321 allows 512; Postfix stays below).
const MAX_LINE: u64 = 4096;

/// How to reach the submission service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// The STARTTLS submission port; fails if STARTTLS is not offered.
    StartTls,
    /// The implicit-TLS submission port.
    Tls,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Dialogue {
    conn: BufReader<Box<dyn Io>>,
}

impl Dialogue {
    fn new(io: Box<dyn Io>) -> Self {
        Self {
            conn: BufReader::new(io),
        }
    }

    /// Reads one (possibly multi-line) reply: its code and all its text.
    async fn reply(&mut self) -> crate::Result<(u16, String)> {
        let mut text = String::new();
        loop {
            let mut line = Vec::new();
            (&mut self.conn)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .await
                .map_err(Error::io("reading an SMTP reply"))?;
            if line.is_empty() {
                return Err(Error::Smtp(format!(
                    "connection closed mid-reply (after {text:?})"
                )));
            }
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end();
            text.push_str(line);
            text.push('\n');
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| Error::Smtp(format!("malformed reply line {line:?}")))?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text));
            }
        }
    }

    /// Expects a reply with a code in `want`.
    async fn expect(&mut self, step: &str, want: &[u16]) -> crate::Result<String> {
        let (code, text) = self.reply().await?;
        if want.contains(&code) {
            Ok(text)
        } else {
            Err(Error::Smtp(format!("{step}: {}", text.trim_end())))
        }
    }

    async fn send(&mut self, line: &str) -> crate::Result<()> {
        // One write per command: a separate CRLF segment would wait for the
        // server's delayed ACK (Nagle), about 40 ms per command.
        let io = self.conn.get_mut();
        io.write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(Error::io("writing an SMTP command"))?;
        io.flush()
            .await
            .map_err(Error::io("writing an SMTP command"))
    }

    async fn command(&mut self, line: &str, step: &str, want: &[u16]) -> crate::Result<String> {
        self.send(line).await?;
        self.expect(step, want).await
    }

    /// MAIL, RCPT, DATA with the dot-stuffed message, QUIT.
    async fn transaction(&mut self, from: &str, to: &[&str], raw: &[u8]) -> crate::Result<()> {
        self.command(&format!("MAIL FROM:<{from}>"), "MAIL FROM", &[250])
            .await?;
        for rcpt in to {
            self.command(
                &format!("RCPT TO:<{rcpt}>"),
                &format!("RCPT TO {rcpt}"),
                &[250, 251],
            )
            .await?;
        }
        self.command("DATA", "DATA", &[354]).await?;
        let data = dot_stuff(raw);
        let io = self.conn.get_mut();
        io.write_all(&data)
            .await
            .map_err(Error::io("writing the message"))?;
        io.flush().await.map_err(Error::io("writing the message"))?;
        self.expect("end of DATA", &[250]).await?;
        // The mail is accepted; a failing QUIT changes nothing.
        let _ = self.command("QUIT", "QUIT", &[221]).await;
        Ok(())
    }
}

/// The message as DATA: lines starting with `.` get another one, a final
/// line break is added if missing, then the `.` terminator.
fn dot_stuff(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 64 + 5);
    let mut line_start = true;
    for &b in raw {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !raw.is_empty() && !raw.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

impl MailStack {
    async fn tls_wrap(&self, io: Box<dyn Io>) -> crate::Result<Box<dyn Io>> {
        let tls = tokio_rustls::TlsConnector::from(self.rustls_client_config())
            .connect(self.tls_server_name(), io)
            .await
            .map_err(Error::io("TLS handshake with the SMTP server"))?;
        Ok(Box::new(tls))
    }

    async fn smtp_connect(&self, port: u16) -> crate::Result<Box<dyn Io>> {
        let tcp = TcpStream::connect((self.addr(), port))
            .await
            .map_err(Error::io(format!(
                "connecting to SMTP {}:{port}",
                self.addr()
            )))?;
        tcp.set_nodelay(true)
            .map_err(Error::io("setting TCP_NODELAY"))?;
        Ok(Box::new(tcp))
    }

    /// Submits `raw` as `login` (authenticated with AUTH PLAIN and their
    /// password) with envelope sender `from` to `to`, over the STARTTLS or the
    /// implicit-TLS submission port. Returns once the server accepted it
    /// (`250` after DATA). The stack does not check that `from` belongs to
    /// `login`, so mallory can send with alice's address.
    pub async fn send_via_submission(
        &self,
        login: &str,
        from: &str,
        to: &[&str],
        raw: &[u8],
        security: SmtpSecurity,
    ) -> crate::Result<()> {
        deadline(SMTP_TIMEOUT, format!("SMTP submission as {login}"), async {
            let mut d = match security {
                SmtpSecurity::Tls => {
                    let tcp = self.smtp_connect(self.ports().smtps).await?;
                    Dialogue::new(self.tls_wrap(tcp).await?)
                },
                SmtpSecurity::StartTls => {
                    let mut plain = Dialogue::new(self.smtp_connect(self.ports().smtp).await?);
                    plain.expect("greeting", &[220]).await?;
                    let ehlo = plain.command("EHLO peerd-testkit", "EHLO", &[250]).await?;
                    if !ehlo.lines().any(|l| {
                        l.get(4..)
                            .is_some_and(|k| k.eq_ignore_ascii_case("STARTTLS"))
                    }) {
                        return Err(Error::Smtp(format!("STARTTLS is not offered: {ehlo}")));
                    }
                    plain.command("STARTTLS", "STARTTLS", &[220]).await?;
                    if !plain.conn.buffer().is_empty() {
                        return Err(Error::Smtp("data after the STARTTLS reply".into()));
                    }
                    let io = plain.conn.into_inner();
                    let mut d = Dialogue::new(self.tls_wrap(io).await?);
                    d.command("EHLO peerd-testkit", "EHLO after STARTTLS", &[250])
                        .await?;
                    d
                },
            };
            if security == SmtpSecurity::Tls {
                d.expect("greeting", &[220]).await?;
                d.command("EHLO peerd-testkit", "EHLO", &[250]).await?;
            }
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("\0{login}\0{}", self.password(login)));
            d.command(
                &format!("AUTH PLAIN {token}"),
                &format!("AUTH as {login}"),
                &[235],
            )
            .await?;
            d.transaction(from, to, raw).await
        })
        .await
    }

    /// Hands `raw` from envelope sender `from` to `to` to the MX port: plain
    /// SMTP, no AUTH, as another mail server would (for foreign or forged
    /// mail). Only the stack's own users are accepted as recipients.
    pub async fn send_raw_via_mx(&self, from: &str, to: &[&str], raw: &[u8]) -> crate::Result<()> {
        deadline(
            SMTP_TIMEOUT,
            format!("SMTP to the MX port from {from}"),
            async {
                let mut d = Dialogue::new(self.smtp_connect(self.ports().mx).await?);
                d.expect("greeting", &[220]).await?;
                d.command("EHLO mx.foreign.test", "EHLO", &[250]).await?;
                d.transaction(from, to, raw).await
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::dot_stuff;

    #[test]
    fn dot_stuffing_doubles_leading_dots_and_terminates() {
        assert_eq!(
            dot_stuff(b".a\r\nb\r\n..c\r\n"),
            b"..a\r\nb\r\n...c\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"x"), b"x\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }
}
