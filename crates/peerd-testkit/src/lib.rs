//! Test harness for peerd (test-only, never shipped): the real mail stack.
//!
//! [`MailStack::start`] runs the project's `tests/mailstack/start` script on
//! a fresh state dir under `/tmp` and a free port offset: Postfix (SMTP
//! submission with STARTTLS + AUTH, submission over implicit TLS, an MX-style
//! port without AUTH) delivering over LMTP into Dovecot (POP3 with STLS,
//! POP3S, IMAP with STARTTLS and IDLE, IMAPS), with a CA made at start-up.
//! Two domains (`isp-a.test`, `isp-b.test`), users `alice`, `hitoshi` and
//! `mallory` in each; they log in with the full address and the password
//! `secret-<user>` ([`MailStack::password`]). Dropping the [`MailStack`]
//! stops both daemons and removes the state dir.
//!
//! The mailbox helpers talk to the stack for real: IMAP over TLS
//! ([`MailStack::append`], [`MailStack::fetch_all`], ...), a minimal SMTP
//! client ([`MailStack::send_via_submission`], [`MailStack::send_raw_via_mx`])
//! and `doveadm` ([`MailStack::message_count`], [`MailStack::expunge_all`]).
//! Nothing here is a mock: see `tests/mailstack/README.md` for the ports,
//! the knobs and measured timings.
//!
//! Needs root (CI is root): the script installs Postfix and Dovecot from
//! Debian's packages when they are missing. When it cannot, [`MailStack::start`]
//! panics with the script's message; a test never passes without the stack.
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use peerd_testkit::{MailStack, SmtpSecurity};
//!
//! # async fn demo() -> Result<(), peerd_testkit::Error> {
//! let stack = MailStack::start().await;
//! let mail = b"From: alice@isp-a.test\r\nTo: hitoshi@isp-b.test\r\nSubject: hi\r\n\r\nhello\r\n";
//! stack
//!     .send_via_submission(
//!         "alice@isp-a.test",
//!         "alice@isp-a.test",
//!         &["hitoshi@isp-b.test"],
//!         mail,
//!         SmtpSecurity::StartTls,
//!     )
//!     .await?;
//! stack.wait_for_count("hitoshi@isp-b.test", "INBOX", 1, Duration::from_secs(10)).await?;
//! let stored = stack.fetch_all("hitoshi@isp-b.test", "INBOX").await?;
//! assert!(stored[0].flags.is_empty()); // not marked \Seen by the harness
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - `stack`: starting, stopping and describing a stack ([`MailStack`], [`Ports`], [`Options`]).
//! - `imap`: mailbox inspection over IMAPS ([`StoredMail`]).
//! - `smtp`: a minimal SMTP client for injecting mail ([`SmtpSecurity`]).
//! - `programs`: workspace binaries and examples a test runs as child
//!   processes, built in the test's target dir ([`workspace_program`]).
//! - `netns`: a fresh network namespace per test ([`run_in_fresh_netns`],
//!   [`enter_fresh_netns`]).
//! - `wait`: polling with a deadline that says what was awaited
//!   ([`wait_for`]).

mod error;
mod imap;
mod netns;
mod programs;
mod smtp;
mod stack;
mod wait;

pub use error::Error;
pub use imap::{ImapSession, StoredMail};
pub use netns::{enter_fresh_netns, run_in_fresh_netns};
pub use programs::{Program, workspace_program};
pub use smtp::SmtpSecurity;
pub use stack::{MailStack, Options, Ports};
pub use wait::wait_for;

/// The result of a harness operation.
pub type Result<T> = std::result::Result<T, Error>;
