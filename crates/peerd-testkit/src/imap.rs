//! Mailbox inspection over IMAPS, as a real client would see the mailbox.

use std::time::{Duration, Instant};

use async_imap::types::Flag;
use futures::TryStreamExt as _;
use tokio::net::TcpStream;

use crate::MailStack;
use crate::error::{Error, deadline};

/// An authenticated IMAP session over implicit TLS to a stack.
pub type ImapSession = async_imap::Session<tokio_rustls::client::TlsStream<TcpStream>>;

/// The deadline of one helper call (connect, log in, command, log out).
const IMAP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often [`MailStack::wait_for_count`] asks.
const POLL: Duration = Duration::from_millis(20);

/// One message as stored: its UID, its flags and its exact bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMail {
    /// The message's UID in its folder.
    pub uid: u32,
    /// Flags in IMAP form (`\Seen`, `\Flagged`, `$Label1`, ...), as the
    /// server lists them. `\Recent` is left out: it depends on which session
    /// looked first, not on the message.
    pub flags: Vec<String>,
    /// The whole message (`BODY.PEEK[]`: reading it sets no flag).
    pub raw: Vec<u8>,
}

fn flag_name(flag: &Flag<'_>) -> Option<String> {
    Some(match flag {
        Flag::Seen => "\\Seen".to_owned(),
        Flag::Answered => "\\Answered".to_owned(),
        Flag::Flagged => "\\Flagged".to_owned(),
        Flag::Deleted => "\\Deleted".to_owned(),
        Flag::Draft => "\\Draft".to_owned(),
        Flag::Recent => return None,
        Flag::MayCreate => "\\*".to_owned(),
        Flag::Custom(name) => name.to_string(),
    })
}

impl MailStack {
    /// Logs `user` (`alice@isp-a.test`) in over IMAPS with their password,
    /// trusting only the stack's CA.
    pub async fn imap_login(&self, user: &str) -> crate::Result<ImapSession> {
        let what = format!("IMAPS login of {user}");
        deadline(IMAP_TIMEOUT, what, async {
            let port = self.ports().imaps;
            let tcp = TcpStream::connect((self.addr(), port))
                .await
                .map_err(Error::io(format!(
                    "connecting to IMAPS {}:{port}",
                    self.addr()
                )))?;
            tcp.set_nodelay(true)
                .map_err(Error::io("setting TCP_NODELAY"))?;
            let tls = tokio_rustls::TlsConnector::from(self.rustls_client_config())
                .connect(self.tls_server_name(), tcp)
                .await
                .map_err(Error::io(format!("TLS handshake with IMAPS port {port}")))?;
            let mut client = async_imap::Client::new(tls);
            client
                .read_response()
                .await
                .map_err(Error::io("reading the IMAP greeting"))?
                .ok_or_else(|| Error::Stack("IMAP server closed before its greeting".into()))?;
            client
                .login(user, self.password(user))
                .await
                .map_err(|(e, _)| Error::imap(format!("LOGIN {user}"))(e))
        })
        .await
    }

    /// Appends `raw` to `user`'s `folder` with `flags` (e.g. `["\\Seen",
    /// "$Label1"]`; empty for none). The bytes are stored exactly.
    pub async fn append(
        &self,
        user: &str,
        folder: &str,
        raw: &[u8],
        flags: &[&str],
    ) -> crate::Result<()> {
        let what = format!("APPEND to {user} {folder}");
        deadline(IMAP_TIMEOUT, what.clone(), async {
            let mut session = self.imap_login(user).await?;
            let flags = (!flags.is_empty()).then(|| format!("({})", flags.join(" ")));
            session
                .append(folder, flags.as_deref(), None, raw)
                .await
                .map_err(Error::imap(what))?;
            let _ = session.logout().await;
            Ok(())
        })
        .await
    }

    /// Every message in `user`'s `folder`, by UID, with flags and exact
    /// bytes. The folder is opened read-only (EXAMINE) and fetched with
    /// `BODY.PEEK[]`, so nothing is marked `\Seen` and `\Recent` is untouched.
    pub async fn fetch_all(&self, user: &str, folder: &str) -> crate::Result<Vec<StoredMail>> {
        let what = format!("FETCH all of {user} {folder}");
        deadline(IMAP_TIMEOUT, what.clone(), async {
            let mut session = self.imap_login(user).await?;
            let mailbox = session
                .examine(folder)
                .await
                .map_err(Error::imap(format!("EXAMINE {folder} of {user}")))?;
            let mut mails = Vec::new();
            if mailbox.exists > 0 {
                let fetches: Vec<_> = session
                    .fetch("1:*", "(UID FLAGS BODY.PEEK[])")
                    .await
                    .map_err(Error::imap(what.clone()))?
                    .try_collect()
                    .await
                    .map_err(Error::imap(what.clone()))?;
                for fetch in &fetches {
                    let uid = fetch.uid.ok_or_else(|| {
                        Error::Stack(format!(
                            "{what}: message {} came without UID",
                            fetch.message
                        ))
                    })?;
                    let raw = fetch.body().ok_or_else(|| {
                        Error::Stack(format!("{what}: UID {uid} came without BODY[]"))
                    })?;
                    mails.push(StoredMail {
                        uid,
                        flags: fetch.flags().filter_map(|f| flag_name(&f)).collect(),
                        raw: raw.to_vec(),
                    });
                }
            }
            let _ = session.logout().await;
            mails.sort_by_key(|m| m.uid);
            Ok(mails)
        })
        .await
    }

    /// Creates `folder` for `user`.
    pub async fn create_folder(&self, user: &str, folder: &str) -> crate::Result<()> {
        let what = format!("CREATE {folder} for {user}");
        deadline(IMAP_TIMEOUT, what.clone(), async {
            let mut session = self.imap_login(user).await?;
            session.create(folder).await.map_err(Error::imap(what))?;
            let _ = session.logout().await;
            Ok(())
        })
        .await
    }

    /// Waits until `user`'s `folder` holds exactly `n` messages (asking with
    /// IMAP STATUS every 20 ms); fails after `timeout` with the last count.
    pub async fn wait_for_count(
        &self,
        user: &str,
        folder: &str,
        n: u32,
        timeout: Duration,
    ) -> crate::Result<()> {
        let start = Instant::now();
        let mut session = self.imap_login(user).await?;
        let last = loop {
            let status = deadline(IMAP_TIMEOUT, format!("STATUS {folder} of {user}"), async {
                session
                    .status(folder, "(MESSAGES)")
                    .await
                    .map_err(Error::imap(format!("STATUS {folder} of {user}")))
            })
            .await?;
            if status.exists == n {
                let _ = session.logout().await;
                return Ok(());
            }
            if start.elapsed() >= timeout {
                break status.exists;
            }
            tokio::time::sleep(POLL).await;
        };
        let _ = session.logout().await;
        Err(Error::Timeout {
            what: format!("{user} {folder} to hold {n} messages (it holds {last})"),
            after: timeout,
        })
    }
}
