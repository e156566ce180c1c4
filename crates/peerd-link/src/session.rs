//! One dial attempt, from the first AT command (or pppd's start) to the
//! reaped pppd and the modem on hook.
//!
//! A session runs as its own task in the actor's `JoinSet`, because its
//! steps (a 60-second dial, a pppd running for hours) must not block the
//! actor's command loop. It owns the serial port and the pppd child; the
//! actor steers it only through its cancellation token ("hang up") and
//! learns its progress from a `watch` and its end from the task's result.
//! Whatever happens, the session hangs up what it started before it ends.

use std::sync::Arc;

use peerd_config::{LinkConfig, LinkDriver};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::actor::Tuning;
use crate::modem::{self, AtPort, AtTimings};
use crate::pppd::{self, Phase, Progress};
use crate::state::{FailureReason, ModemFailure};

/// What a session needs.
pub(crate) struct SessionCtx {
    /// Which session (the actor ignores news of older ones).
    pub id: u64,
    pub config: Arc<LinkConfig>,
    pub tuning: Tuning,
    pub progress: watch::Sender<Progress>,
    /// Cancelled by the actor to hang up (a child of the shutdown token).
    pub hangup: CancellationToken,
}

/// How a session ended.
#[derive(Debug)]
pub(crate) struct SessionEnd {
    pub id: u64,
    /// Why it ended on its own; `None` when it was hung up on request.
    pub failure: Option<FailureReason>,
    /// Putting the modem on hook did not complete.
    pub hangup_error: Option<String>,
}

pub(crate) async fn run(ctx: SessionCtx) -> SessionEnd {
    match ctx.config.driver {
        LinkDriver::Pppd => {
            let args = pppd::call_args(&ctx.config);
            let end = pppd::run(
                &ctx.config.pppd,
                &args,
                ctx.tuning.hangup_grace,
                &ctx.progress,
                &ctx.hangup,
            )
            .await;
            SessionEnd {
                id: ctx.id,
                failure: end.failure,
                hangup_error: None,
            }
        },
        LinkDriver::Modem => modem_session(ctx).await,
        // The actor never starts a session for an external link.
        LinkDriver::External => SessionEnd {
            id: ctx.id,
            failure: None,
            hangup_error: None,
        },
    }
}

async fn modem_session(ctx: SessionCtx) -> SessionEnd {
    let config = &ctx.config;
    let timings = ctx.tuning.at_timings();
    let end = |failure: Option<FailureReason>, hangup_error: Option<String>| SessionEnd {
        id: ctx.id,
        failure,
        hangup_error,
    };
    let port = match ctx.tuning.port.open(&config.device, config.baud) {
        Ok(port) => port,
        Err(e) => {
            return end(
                Some(FailureReason::Modem(ModemFailure::Open {
                    device: config.device.clone(),
                    error: e.to_string(),
                })),
                None,
            );
        },
    };
    let mut at = AtPort::new(port);
    let dialled = tokio::select! {
        biased;
        () = ctx.hangup.cancelled() => None,
        result = modem::dial(&mut at, &config.init, &config.number, &timings) => Some(result),
    };
    match dialled {
        None => {
            info!("Dial cancelled; putting the modem on hook");
            modem::abort_dial(&mut at, &timings).await;
            return end(None, None);
        },
        Some(Err(failure)) => {
            if matches!(&failure, ModemFailure::Timeout { command, .. } if command.starts_with("ATD"))
            {
                // the modem may still be dialling
                modem::abort_dial(&mut at, &timings).await;
            }
            warn!(reason = %failure, "Dial failed");
            return end(Some(FailureReason::Modem(failure)), None);
        },
        Some(Ok(connect)) => {
            info!(connect = %connect, "Modem connected; starting pppd on the line");
        },
    }
    // Keep DTR up when the port closes, or the modem hangs up the call
    // pppd is about to use.
    let mut port = at.into_inner();
    if let Err(e) = port.hangup_on_close(false) {
        warn!(error = %e, "Cannot keep DTR up across the hand-over to pppd");
    }
    drop(port);

    ctx.progress.send_modify(|p| p.phase = Phase::Connecting);
    let args = pppd::tty_args(config);
    let ran = pppd::run(
        &config.pppd,
        &args,
        ctx.tuning.hangup_grace,
        &ctx.progress,
        &ctx.hangup,
    )
    .await;

    // pppd dropped DTR on exit if the line has it; make sure anyway.
    let hangup_error = match ctx.tuning.port.open(&config.device, config.baud) {
        Ok(port) => {
            let mut at = AtPort::new(port);
            let result = modem::hang_up(&mut at, &timings).await;
            let mut port = at.into_inner();
            // back to the tty's usual behaviour: closing it hangs up
            if let Err(e) = port.hangup_on_close(true) {
                warn!(error = %e, "Cannot restore HUPCL on the modem's tty");
            }
            match result {
                Ok(method) => {
                    info!(method = ?method, "Modem on hook");
                    None
                },
                Err(e) => {
                    warn!(error = %e, "Hanging up the modem did not complete");
                    Some(e.to_string())
                },
            }
        },
        Err(e) => {
            warn!(error = %e, device = %config.device.display(), "Cannot reopen the modem to hang up");
            Some(format!("cannot reopen {}: {e}", config.device.display()))
        },
    };
    end(ran.failure, hangup_error)
}

impl Tuning {
    pub(crate) fn at_timings(&self) -> AtTimings {
        AtTimings {
            step: self.at_timeout,
            dial: self.dial_timeout,
            guard: self.guard_time,
            dtr_drop: self.dtr_drop,
        }
    }
}
