//! The harness's error type.

use std::time::Duration;

/// What went wrong in the harness. Every variant says which step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Starting or stopping the stack failed; the message holds the script's
    /// output (with the tail of the relevant daemon log).
    #[error("mail stack: {0}")]
    Stack(String),
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An IMAP command failed.
    #[error("IMAP {context}: {source}")]
    Imap {
        /// The command and the mailbox.
        context: String,
        /// The error from async-imap.
        #[source]
        source: async_imap::error::Error,
    },
    /// The SMTP server refused a step, or the dialogue broke off.
    #[error("SMTP: {0}")]
    Smtp(String),
    /// A TLS setup error (the CA file, the client config).
    #[error("TLS: {0}")]
    Tls(String),
    /// A step did not finish in time.
    #[error("timed out after {after:?}: {what}")]
    Timeout {
        /// What was waited for (and the last state seen).
        what: String,
        /// How long it was waited for.
        after: Duration,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    pub(crate) fn imap(
        context: impl Into<String>,
    ) -> impl FnOnce(async_imap::error::Error) -> Self {
        let context = context.into();
        move |source| Self::Imap { context, source }
    }
}

/// Runs `fut` with a deadline, turning a timeout into [`Error::Timeout`].
pub(crate) async fn deadline<T>(
    after: Duration,
    what: impl Into<String>,
    fut: impl Future<Output = crate::Result<T>>,
) -> crate::Result<T> {
    match tokio::time::timeout(after, fut).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout {
            what: what.into(),
            after,
        }),
    }
}
