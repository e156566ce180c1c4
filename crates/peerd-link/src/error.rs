//! The link manager's errors.

use std::time::Duration;

use crate::state::{FailureReason, LinkState};

/// Why a link request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The link manager has stopped.
    #[error("the link manager is not running")]
    Gone,
    /// `up`/`down` with `driver = "external"`: nothing to do.
    #[error(
        "the link is brought up outside peerd (driver = \"external\"): there is nothing to dial or hang up"
    )]
    NotManaged,
    /// The link was taken down on request and stays down until `up`.
    #[error(
        "the link was taken down on request (`peerctl link down`); `peerctl link up` brings it back"
    )]
    HeldDown,
    /// The dial attempt made for this request failed, or the link has
    /// given up (`max_failures`).
    #[error("the link failed: {0}")]
    Failed(FailureReason),
    /// The link did not come up in time.
    #[error("the link is not up after {}s (now: {state})", waited.as_secs())]
    Timeout {
        /// How long the caller waited.
        waited: Duration,
        /// The state then.
        state: LinkState,
    },
    /// A session task panicked: a bug, which stops the actor.
    #[error("a link session task failed: {0}")]
    Session(String),
}

impl LinkError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Failed(_) | Self::Timeout { .. })
    }
}
