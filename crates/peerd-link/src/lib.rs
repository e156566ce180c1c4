//! The link manager: brings the network link up when peerd needs it and
//! says why when it cannot.
//!
//! peerd's original use is a host on a dial-up or metered line: it dials,
//! waits for the address the provider assigns, mails it, and hangs up when
//! idle. Three drivers cover the ways a link comes up:
//!
//! - `external`: someone else (NetworkManager, DHCP, a router) brings the
//!   network up; the link is up when the watched interface has an
//!   announceable address. `up`/`down` answer [`LinkError::NotManaged`].
//! - `pppd`: peerd runs `pppd call <peer>` as its child (see [`pppd`] for
//!   every argument and why), learns link-up from the address watcher,
//!   hangs up with SIGTERM and reaps it, maps its exit status to its
//!   documented meaning, and redials with backoff.
//! - `modem`: peerd dials a serial modem itself (the AT dialogue in
//!   [`modem`], so `BUSY` or `NO DIALTONE` reach the user as such), then
//!   hands the line to pppd, and afterwards puts the modem on hook.
//!
//! On-demand links are held up by [`Lease`]s; see [`actor`] for the rules,
//! the redial policy and the metered mail check.
//!
//! # Layout
//! - [`actor`]: the actor: [`LinkHandle`], [`spawn`], leases, [`Tuning`].
//! - [`state`]: [`LinkState`], [`LinkEvent`], [`FailureReason`], pppd's
//!   exit statuses ([`PppdExitCode`]) and the modem's ([`ModemFailure`]).
//! - [`pppd`]: pppd's arguments, its output and its end.
//! - [`modem`]: the serial port trait, the AT dialogue and the hang-up.
//! - [`backoff`]: redial delays.
//! - [`error`]: the errors of requests ([`LinkError`]).
//! - `session`: one dial attempt as a task.

pub mod actor;
pub mod backoff;
pub mod error;
pub mod modem;
pub mod pppd;
mod session;
pub mod state;

pub use actor::{Lease, LinkHandle, Tuning, spawn, spawn_tuned};
pub use backoff::Backoff;
pub use error::LinkError;
pub use modem::{ModemPort, PortOpener, SerialOpener};
pub use state::{FailureReason, LinkEvent, LinkState, ModemFailure, PppdExitCode};
