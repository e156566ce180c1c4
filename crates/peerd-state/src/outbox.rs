//! The outbox: per peer, the latest intent and where sending it stands.
//!
//! An intent says "peer P should know these candidates". It is not a
//! sealed mail: the courier seals each attempt afresh (fresh times, a fresh
//! sequence number), so an outage longer than `valid_for` never sends a
//! stale mail. Only the latest intent per peer is kept: a new one
//! supersedes the old, which is then never sent again and whose
//! acknowledgement no longer matters ("the latest address always wins").
//!
//! The courier's loop is:
//! 1. [`Store::set_intent`]: committed *before* any send is tried, so a
//!    crash after it still sends.
//! 2. [`Store::due`]: what to attempt now (respecting backoff, re-send
//!    timers and the per-peer rate limit).
//! 3. Seal and send each, then [`Store::record_sent`] (the server accepted
//!    it) or [`Store::record_failure`]. A crash between the server's
//!    acceptance and `record_sent` sends the same intent again after the
//!    restart: at most a duplicate, never a loss.
//! 4. [`Store::record_ack`] when the peer's acknowledgement arrives.
//!
//! `due` only reads: an intent stays due until its outcome is recorded, so
//! the courier must not start a second attempt for a peer while one is in
//! flight.
//!
//! The rules, with [`Policy`] from the `[announce]` configuration:
//! - A sealed peer is re-sent an unacknowledged intent after `resend`,
//!   then twice that, doubling up to `resend_max` (1 h), until it is
//!   acknowledged or superseded. A `plain` peer gets one mail per intent,
//!   never a re-send (it cannot acknowledge).
//! - A transient failure (4xx, timeout, refused connection) is retried
//!   after an exponential backoff with equal jitter: `d = min(backoff_max,
//!   backoff_base * 2^(failures-1))`, waiting a random time in `[d/2, d]`.
//!   The cap keeps a long outage from turning into days between tries.
//! - A permanent failure (5xx: bad recipient, authentication refused)
//!   stops retrying and keeps the error for `peerctl outbox`; a new intent
//!   or [`Store::retry`] re-arms it.
//! - At most `max_per_hour` mails leave per peer in any sliding hour (mail
//!   providers cap sending); the send times are kept, and a limited intent
//!   becomes due the moment the oldest send in the window is an hour old.
//!
//! Times are Unix seconds inside; the API takes [`SystemTime`]s.

use std::time::{Duration, SystemTime};

use peerd_core::{Candidate, PeerName};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::codec::{self, Dec, DecResult, Enc, secs, time};
use crate::{META, StateError, Store};

const OUTBOX: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("outbox");
const TABLE: &str = "outbox";
const META_NEXT_GENERATION: &str = "next_generation";

const HOUR: u64 = 3600;

/// The most candidates one intent may hold.
pub const MAX_CANDIDATES: usize = 64;
/// How many sequence numbers sent for one intent are remembered to match
/// acknowledgements (the newest are kept; an ack of an older one is
/// ignored, and the next re-send draws a fresh ack).
pub const MAX_REMEMBERED_SEQUENCES: usize = 64;
/// The longest error message kept (longer ones are cut).
pub const MAX_ERROR_LEN: usize = 1024;
/// The highest `max_per_hour` honoured (higher values count as this).
pub const MAX_PER_HOUR_LIMIT: u32 = 1024;

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StateError> {
    txn.open_table(OUTBOX).map_err(StateError::db)?;
    Ok(())
}

/// How the outbox paces sending, from the `[announce]` configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// First re-send of an unacknowledged intent (`resend`, 10 min).
    pub resend: Duration,
    /// The re-send interval doubles up to this (1 h; never below `resend`).
    pub resend_max: Duration,
    /// Mails per peer in any sliding hour (`max_per_hour`, 6). 0 counts as
    /// 1; values above [`MAX_PER_HOUR_LIMIT`] count as that.
    pub max_per_hour: u32,
    /// Backoff after the first transient failure (30 s).
    pub backoff_base: Duration,
    /// The backoff doubles up to this (15 min).
    pub backoff_max: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            resend: Duration::from_secs(10 * 60),
            resend_max: Duration::from_secs(HOUR),
            max_per_hour: 6,
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(15 * 60),
        }
    }
}

impl Policy {
    /// The defaults with the configured `resend` and `max_per_hour`.
    pub fn new(resend: Duration, max_per_hour: u32) -> Self {
        Self {
            resend,
            max_per_hour,
            ..Self::default()
        }
    }

    fn max_per_hour(&self) -> usize {
        self.max_per_hour.clamp(1, MAX_PER_HOUR_LIMIT) as usize
    }

    /// Seconds until the re-send after the `sends`-th accepted send.
    fn resend_delay(&self, sends: u32) -> u64 {
        let base = self.resend.as_secs().max(1);
        let cap = self.resend_max.as_secs().max(base);
        doubled(base, sends).min(cap)
    }

    /// The backoff ceiling after `failures` consecutive transient failures.
    fn backoff_ceiling(&self, failures: u32) -> u64 {
        let base = self.backoff_base.as_secs().max(1);
        let cap = self.backoff_max.as_secs().max(base);
        doubled(base, failures).min(cap)
    }

    /// The furthest ahead any rule schedules an attempt. A stored time
    /// further ahead than this means the clock was stepped back since.
    fn horizon(&self) -> u64 {
        let resend = self.resend.as_secs().max(self.resend_max.as_secs());
        resend.max(self.backoff_max.as_secs()).max(HOUR)
    }

    /// A backoff drawn with equal jitter: in `[ceiling/2, ceiling]`.
    fn backoff_delay(&self, failures: u32, rng: &mut fastrand::Rng) -> u64 {
        let d = self.backoff_ceiling(failures);
        let half = d / 2;
        half + rng.u64(0..=d - half)
    }
}

/// Whether a send at `t` counts in the sliding hour that ends at `now`. A
/// send time after `now` (the clock was stepped back since) does not: it
/// would otherwise hold the peer's sending back until the clock caught up.
fn in_last_hour(t: u64, now: u64) -> bool {
    t <= now && t.saturating_add(HOUR) > now
}

/// `base * 2^(n-1)`, saturating (n = 0 counts as 1).
fn doubled(base: u64, n: u32) -> u64 {
    let exp = n.saturating_sub(1);
    if exp >= 63 {
        return u64::MAX;
    }
    base.saturating_mul(1 << exp)
}

/// Which intent of a peer an operation is about. Generations are unique in
/// the database (one counter for all peers), so a generation of a removed
/// and re-added peer never matches a new intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub u64);

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// How a send failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Worth retrying later: 4xx, timeout, refused connection.
    Transient,
    /// Not worth retrying: 5xx, bad recipient, authentication refused.
    Permanent,
}

/// One intent to attempt now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// To whom.
    pub peer: PeerName,
    /// Which intent: pass it back to `record_sent` / `record_failure`.
    pub generation: Generation,
    /// What the peer should know.
    pub candidates: Vec<Candidate>,
    /// Whether the peer is `plain` (a readable mail, no seal, no re-send).
    pub plain: bool,
    /// This attempt's number for this intent, from 1.
    pub attempt: u32,
}

/// Where an intent stands, as `peerctl outbox` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OutboxState {
    /// Not yet sent; will be tried when due.
    Pending,
    /// The last try failed transiently; backing off before the next.
    SendingBackoff,
    /// Sent (sealed peer); waiting for the ack, re-sent per `resend`.
    AwaitingAck,
    /// The peer acknowledged it. Nothing more to do.
    Acknowledged,
    /// Sent to a `plain` peer. Nothing more to do.
    Sent,
    /// A permanent failure: not retried until a new intent or a retry.
    FailedPermanent,
}

impl OutboxState {
    /// The name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::SendingBackoff => "sending-backoff",
            Self::AwaitingAck => "awaiting-ack",
            Self::Acknowledged => "acknowledged",
            Self::Sent => "sent",
            Self::FailedPermanent => "failed-permanent",
        }
    }

    /// Whether the outbox still has work to do for it.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::SendingBackoff | Self::AwaitingAck
        )
    }
}

impl std::fmt::Display for OutboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One peer's outbox entry, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The peer.
    pub peer: PeerName,
    /// The current intent.
    pub generation: Generation,
    /// What it says.
    pub candidates: Vec<Candidate>,
    /// Whether the peer is `plain`.
    pub plain: bool,
    /// Where it stands.
    pub state: OutboxState,
    /// Attempts made for this intent (accepted or failed).
    pub attempts: u32,
    /// Of those, the ones the server accepted.
    pub sends: u32,
    /// When the next attempt is due (after backoff, re-send timer and rate
    /// limit); `None` when nothing more is to be done.
    pub next_attempt: Option<SystemTime>,
    /// Whether `next_attempt` is held back by `max_per_hour`.
    pub rate_limited: bool,
    /// The last failure's message, until a send succeeds.
    pub last_error: Option<String>,
    /// The sequence number of the last mail sent for this intent.
    pub last_sequence: Option<u64>,
    /// When the intent was set.
    pub created_at: SystemTime,
    /// When its state last changed.
    pub changed_at: SystemTime,
    /// Mails sent to this peer in the hour before the time asked about.
    pub sends_last_hour: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    AwaitingAck,
    Acknowledged,
    Sent,
    FailedPermanent,
}

impl Phase {
    fn code(self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::AwaitingAck => 1,
            Self::Acknowledged => 2,
            Self::Sent => 3,
            Self::FailedPermanent => 4,
        }
    }

    fn from_code(c: u8) -> DecResult<Self> {
        Ok(match c {
            0 => Self::Pending,
            1 => Self::AwaitingAck,
            2 => Self::Acknowledged,
            3 => Self::Sent,
            4 => Self::FailedPermanent,
            _ => return Err(format!("bad outbox phase {c}")),
        })
    }

    fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::AwaitingAck)
    }
}

/// A peer's stored outbox record.
///
/// Encoding, version 1 (after the version byte; integers big-endian):
/// generation u64, plain u8, created_at u64, phase u8 (0 pending,
/// 1 awaiting-ack, 2 acknowledged, 3 sent, 4 failed-permanent), changed_at
/// u64, next_attempt u64, attempts u32, failures u32, sends u32,
/// last_error (u8 present, then u16 length + UTF-8), candidates (u16 count,
/// each: u8 family 4|6, 4|16 address bytes, u16 port, for 6 also u32
/// flowinfo and u32 scope id, u8 kind 1 host|2 server-reflexive|3 mapped,
/// u8 class 1 public|2 cgnat|3 private|4 link-local|5 loopback|6
/// unroutable), sequences (u16 count, u64 each), recent send times (u16
/// count, u64 Unix seconds each).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    generation: u64,
    plain: bool,
    created_at: u64,
    phase: Phase,
    changed_at: u64,
    /// When the next attempt is due (backoff or re-send timer), if active.
    next_attempt: u64,
    attempts: u32,
    /// Consecutive transient failures (the backoff exponent).
    failures: u32,
    /// Sends the server accepted for this intent (the re-send exponent).
    sends: u32,
    last_error: Option<String>,
    candidates: Vec<Candidate>,
    /// Sequence numbers sent for this intent, oldest first.
    sequences: Vec<u64>,
    /// Send times for this peer (any intent) in the last hour.
    recent_sends: Vec<u64>,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u64(self.generation)
            .u8(u8::from(self.plain))
            .u64(self.created_at)
            .u8(self.phase.code())
            .u64(self.changed_at)
            .u64(self.next_attempt)
            .u32(self.attempts)
            .u32(self.failures)
            .u32(self.sends);
        match &self.last_error {
            None => e.u8(0),
            Some(err) => e.u8(1).str(err),
        };
        e.count(self.candidates.len());
        for c in &self.candidates {
            e.candidate(c);
        }
        e.count(self.sequences.len());
        for s in &self.sequences {
            e.u64(*s);
        }
        e.count(self.recent_sends.len());
        for t in &self.recent_sends {
            e.u64(*t);
        }
        e.finish()
    }

    fn decode(bytes: &[u8]) -> DecResult<Self> {
        let mut d = Dec::new(bytes)?;
        let generation = d.u64()?;
        let plain = d.bool()?;
        let created_at = d.u64()?;
        let phase = Phase::from_code(d.u8()?)?;
        let changed_at = d.u64()?;
        let next_attempt = d.u64()?;
        let attempts = d.u32()?;
        let failures = d.u32()?;
        let sends = d.u32()?;
        let last_error = if d.bool()? { Some(d.str()?) } else { None };
        let n = d.count()?;
        let candidates = (0..n).map(|_| d.candidate()).collect::<DecResult<_>>()?;
        let n = d.count()?;
        let sequences = (0..n).map(|_| d.u64()).collect::<DecResult<_>>()?;
        let n = d.count()?;
        let recent_sends = (0..n).map(|_| d.u64()).collect::<DecResult<_>>()?;
        d.finish()?;
        Ok(Self {
            generation,
            plain,
            created_at,
            phase,
            changed_at,
            next_attempt,
            attempts,
            failures,
            sends,
            last_error,
            candidates,
            sequences,
            recent_sends,
        })
    }

    fn state(&self) -> OutboxState {
        match self.phase {
            Phase::Acknowledged => OutboxState::Acknowledged,
            Phase::Sent => OutboxState::Sent,
            Phase::FailedPermanent => OutboxState::FailedPermanent,
            Phase::Pending | Phase::AwaitingAck if self.failures > 0 => OutboxState::SendingBackoff,
            Phase::AwaitingAck => OutboxState::AwaitingAck,
            Phase::Pending => OutboxState::Pending,
        }
    }

    /// When the `max_per_hour` window lets the next mail out, if it is full
    /// at `now`.
    fn window_free_at(&self, policy: &Policy, now: u64) -> Option<u64> {
        let max = policy.max_per_hour();
        let mut within: Vec<u64> = self
            .recent_sends
            .iter()
            .copied()
            .filter(|&t| in_last_hour(t, now))
            .collect();
        if within.len() < max {
            return None;
        }
        within.sort_unstable();
        Some(within[within.len() - max] + HOUR)
    }

    fn sends_last_hour(&self, now: u64) -> u32 {
        let n = self
            .recent_sends
            .iter()
            .filter(|&&t| in_last_hour(t, now))
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// When the next attempt is due, all rules considered; `None` when done.
    /// The flag says whether the rate limit is what holds it back.
    fn effective_next(&self, policy: &Policy, now: u64) -> Option<(u64, bool)> {
        if !self.phase.is_active() {
            return None;
        }
        // After the clock is stepped back (an RTC that ran ahead, corrected
        // by NTP), a timer set by the old clock could lie years ahead: one
        // further than any rule sets is taken as due now.
        let next = if self.next_attempt > now.saturating_add(policy.horizon()) {
            now
        } else {
            self.next_attempt
        };
        match self.window_free_at(policy, now) {
            Some(free) if free > next => Some((free, true)),
            _ => Some((next, false)),
        }
    }

    fn entry(&self, peer: PeerName, policy: &Policy, now: u64) -> OutboxEntry {
        let next = self.effective_next(policy, now);
        OutboxEntry {
            peer,
            generation: Generation(self.generation),
            candidates: self.candidates.clone(),
            plain: self.plain,
            state: self.state(),
            attempts: self.attempts,
            sends: self.sends,
            next_attempt: next.map(|(t, _)| time(t)),
            rate_limited: next.is_some_and(|(_, limited)| limited),
            last_error: self.last_error.clone(),
            last_sequence: self.sequences.last().copied(),
            created_at: time(self.created_at),
            changed_at: time(self.changed_at),
            sends_last_hour: self.sends_last_hour(now),
        }
    }

    /// A mail left for this peer at `now` (whatever intent it carried).
    fn note_send(&mut self, now: u64) {
        self.recent_sends.retain(|&t| in_last_hour(t, now));
        self.recent_sends.push(now);
        let excess = self
            .recent_sends
            .len()
            .saturating_sub(MAX_PER_HOUR_LIMIT as usize);
        self.recent_sends.drain(..excess);
    }

    fn sent(&mut self, sequence: u64, policy: &Policy, now: u64) {
        self.note_send(now);
        self.attempts = self.attempts.saturating_add(1);
        self.sends = self.sends.saturating_add(1);
        self.failures = 0;
        self.last_error = None;
        self.sequences.push(sequence);
        let excess = self
            .sequences
            .len()
            .saturating_sub(MAX_REMEMBERED_SEQUENCES);
        self.sequences.drain(..excess);
        if self.phase.is_active() {
            self.changed_at = now;
            if self.plain {
                self.phase = Phase::Sent;
            } else {
                self.phase = Phase::AwaitingAck;
                self.next_attempt = now.saturating_add(policy.resend_delay(self.sends));
            }
        }
    }

    fn failed(
        &mut self,
        kind: FailureKind,
        message: &str,
        policy: &Policy,
        now: u64,
        rng: &mut fastrand::Rng,
    ) {
        self.attempts = self.attempts.saturating_add(1);
        self.last_error = Some(codec::truncate(message, MAX_ERROR_LEN).to_owned());
        if !self.phase.is_active() {
            return;
        }
        self.changed_at = now;
        match kind {
            FailureKind::Transient => {
                self.failures = self.failures.saturating_add(1);
                self.next_attempt = now.saturating_add(policy.backoff_delay(self.failures, rng));
            },
            FailureKind::Permanent => self.phase = Phase::FailedPermanent,
        }
    }

    fn acked(&mut self, sequence: u64, now: u64) -> bool {
        if self.plain || !self.sequences.contains(&sequence) {
            return false;
        }
        if self.phase != Phase::Acknowledged {
            self.phase = Phase::Acknowledged;
            self.changed_at = now;
            self.failures = 0;
        }
        true
    }

    fn rearm(&mut self, now: u64) {
        self.phase = if self.sends > 0 && !self.plain {
            Phase::AwaitingAck
        } else {
            Phase::Pending
        };
        self.failures = 0;
        self.next_attempt = now;
        self.changed_at = now;
    }
}

fn undecodable(key: &str, problem: String) -> StateError {
    StateError::Undecodable {
        table: TABLE,
        key: key.to_owned(),
        problem,
    }
}

fn decode_row(key: &str, value: &[u8]) -> Result<(PeerName, Record), StateError> {
    let peer = key
        .parse::<PeerName>()
        .map_err(|e| undecodable(key, format!("not a peer name: {e}")))?;
    let record = Record::decode(value).map_err(|p| undecodable(key, p))?;
    Ok((peer, record))
}

fn load(txn: &WriteTransaction, peer: &PeerName) -> Result<Option<Record>, StateError> {
    let table = txn.open_table(OUTBOX).map_err(StateError::db)?;
    let value = table.get(peer.as_str()).map_err(StateError::db)?;
    value
        .map(|v| Record::decode(v.value()).map_err(|p| undecodable(peer.as_str(), p)))
        .transpose()
}

fn save(txn: &WriteTransaction, peer: &PeerName, record: &Record) -> Result<(), StateError> {
    let mut table = txn.open_table(OUTBOX).map_err(StateError::db)?;
    table
        .insert(peer.as_str(), record.encode().as_slice())
        .map_err(StateError::db)?;
    Ok(())
}

impl Store {
    /// Sets what `peer` should know, superseding the previous intent, and
    /// commits it (do this before trying to send). The new intent is due at
    /// once (within the rate limit), with fresh attempt counters.
    ///
    /// The same candidates and `plain` as the current intent are not a new
    /// intent: its generation is returned and nothing changes (a restart
    /// re-announcing the same addresses does not re-send what the peer
    /// acknowledged) — unless it failed permanently, which this re-arms.
    /// To send the current intent again regardless, use [`Store::retry`].
    pub fn set_intent(
        &self,
        peer: &PeerName,
        candidates: &[Candidate],
        plain: bool,
        now: SystemTime,
    ) -> Result<Generation, StateError> {
        if candidates.len() > MAX_CANDIDATES {
            return Err(StateError::TooManyCandidates(candidates.len()));
        }
        let now = secs(now);
        self.write(|txn| {
            let old = load(txn, peer)?;
            if let Some(old) = &old
                && old.candidates == candidates
                && old.plain == plain
                && old.phase != Phase::FailedPermanent
            {
                return Ok(Generation(old.generation));
            }
            let generation = {
                let mut meta = txn.open_table(META).map_err(StateError::db)?;
                let next = meta
                    .get(META_NEXT_GENERATION)
                    .map_err(StateError::db)?
                    .map_or(1, |v| v.value());
                meta.insert(META_NEXT_GENERATION, next.saturating_add(1))
                    .map_err(StateError::db)?;
                next
            };
            let record = Record {
                generation,
                plain,
                created_at: now,
                phase: Phase::Pending,
                changed_at: now,
                next_attempt: now,
                attempts: 0,
                failures: 0,
                sends: 0,
                last_error: None,
                candidates: candidates.to_vec(),
                sequences: Vec::new(),
                recent_sends: old.map(|o| o.recent_sends).unwrap_or_default(),
            };
            save(txn, peer, &record)?;
            Ok(Generation(generation))
        })
    }

    /// The intents to attempt at `now`, in peer-name order: their backoff
    /// or re-send timer has run out and the peer's `max_per_hour` window has
    /// room. Only current intents are returned, never superseded ones.
    pub fn due(&self, policy: &Policy, now: SystemTime) -> Result<Vec<Due>, StateError> {
        let now = secs(now);
        self.read(|txn| {
            let table = txn.open_table(OUTBOX).map_err(StateError::db)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(StateError::db)? {
                let (k, v) = row.map_err(StateError::db)?;
                let (peer, r) = decode_row(k.value(), v.value())?;
                if r.effective_next(policy, now).is_some_and(|(t, _)| t <= now) {
                    out.push(Due {
                        peer,
                        generation: Generation(r.generation),
                        candidates: r.candidates,
                        plain: r.plain,
                        attempt: r.attempts.saturating_add(1),
                    });
                }
            }
            Ok(out)
        })
    }

    /// The earliest time anything becomes due (possibly already past), or
    /// `None` if nothing is left to do: how long the courier may sleep.
    pub fn next_wakeup(
        &self,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StateError> {
        let now = secs(now);
        self.read(|txn| {
            let table = txn.open_table(OUTBOX).map_err(StateError::db)?;
            let mut next: Option<u64> = None;
            for row in table.iter().map_err(StateError::db)? {
                let (k, v) = row.map_err(StateError::db)?;
                let (_, r) = decode_row(k.value(), v.value())?;
                if let Some((t, _)) = r.effective_next(policy, now) {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
            Ok(next.map(time))
        })
    }

    /// The server accepted the mail for `generation` carrying `sequence`
    /// (for a plain peer, any value). The send counts against the peer's
    /// `max_per_hour` whatever intent it carried. For the current intent, a
    /// sealed peer now awaits the ack (re-sent per [`Policy::resend`]) and a
    /// plain peer is done. Returns whether `generation` is the current
    /// intent (`false`: it was superseded or the peer removed meanwhile).
    pub fn record_sent(
        &self,
        peer: &PeerName,
        generation: Generation,
        sequence: u64,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<bool, StateError> {
        let now = secs(now);
        self.write(|txn| {
            let Some(mut r) = load(txn, peer)? else {
                return Ok(false);
            };
            let current = r.generation == generation.0;
            if current {
                r.sent(sequence, policy, now);
            } else {
                r.note_send(now);
            }
            save(txn, peer, &r)?;
            Ok(current)
        })
    }

    /// An attempt for `generation` failed. Transient: retried after a
    /// jittered, capped exponential backoff. Permanent: not retried until a
    /// new intent or [`Store::retry`]. The message is kept for display.
    /// Returns whether `generation` is the current intent (otherwise
    /// nothing changes).
    pub fn record_failure(
        &self,
        peer: &PeerName,
        generation: Generation,
        kind: FailureKind,
        message: &str,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<bool, StateError> {
        let now = secs(now);
        self.write(|txn| {
            let Some(mut r) = load(txn, peer)? else {
                return Ok(false);
            };
            if r.generation != generation.0 {
                return Ok(false);
            }
            r.failed(kind, message, policy, now, &mut self.rng());
            save(txn, peer, &r)?;
            Ok(true)
        })
    }

    /// `peer` acknowledged the mail with `sequence`. If it was sent for the
    /// current intent, re-sending ends; returns `true` (also when it was
    /// acknowledged already). A sequence of a superseded intent, or one
    /// never sent to this peer, changes nothing and returns `false`.
    pub fn record_ack(
        &self,
        peer: &PeerName,
        sequence: u64,
        now: SystemTime,
    ) -> Result<bool, StateError> {
        let now = secs(now);
        self.write(|txn| {
            let Some(mut r) = load(txn, peer)? else {
                return Ok(false);
            };
            let before = r.clone();
            let matched = r.acked(sequence, now);
            if r != before {
                save(txn, peer, &r)?;
            }
            Ok(matched)
        })
    }

    /// Makes the current intent due now, whatever its state: clears the
    /// backoff and a permanent failure, and sends again even an
    /// acknowledged intent (`peerctl outbox flush`, an explicit call).
    /// The rate limit still applies. Returns whether the peer has an entry.
    pub fn retry(&self, peer: &PeerName, now: SystemTime) -> Result<bool, StateError> {
        let now = secs(now);
        self.write(|txn| {
            let Some(mut r) = load(txn, peer)? else {
                return Ok(false);
            };
            r.rearm(now);
            save(txn, peer, &r)?;
            Ok(true)
        })
    }

    /// Forgets `peer`'s entry (a peer removed from the configuration, or
    /// `peerctl outbox drop`). Returns whether there was one.
    pub fn remove(&self, peer: &PeerName) -> Result<bool, StateError> {
        self.write(|txn| {
            let mut table = txn.open_table(OUTBOX).map_err(StateError::db)?;
            let removed = table.remove(peer.as_str()).map_err(StateError::db)?;
            Ok(removed.is_some())
        })
    }

    /// Every entry, in peer-name order, as it stands at `now`.
    pub fn entries(
        &self,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Vec<OutboxEntry>, StateError> {
        let now = secs(now);
        self.read(|txn| {
            let table = txn.open_table(OUTBOX).map_err(StateError::db)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(StateError::db)? {
                let (k, v) = row.map_err(StateError::db)?;
                let (peer, r) = decode_row(k.value(), v.value())?;
                out.push(r.entry(peer, policy, now));
            }
            Ok(out)
        })
    }

    /// One peer's entry, as it stands at `now`.
    pub fn entry(
        &self,
        peer: &PeerName,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Option<OutboxEntry>, StateError> {
        let now = secs(now);
        self.read(|txn| {
            let table = txn.open_table(OUTBOX).map_err(StateError::db)?;
            let value = table.get(peer.as_str()).map_err(StateError::db)?;
            value
                .map(|v| {
                    let (peer, r) = decode_row(peer.as_str(), v.value())?;
                    Ok(r.entry(peer, policy, now))
                })
                .transpose()
        })
    }

    /// How many entries still have work to do (pending, backing off or
    /// awaiting an ack): the `OutboxSize` property.
    pub fn outbox_size(&self) -> Result<usize, StateError> {
        self.read(|txn| {
            let table = txn.open_table(OUTBOX).map_err(StateError::db)?;
            let mut n = 0;
            for row in table.iter().map_err(StateError::db)? {
                let (k, v) = row.map_err(StateError::db)?;
                let (_, r) = decode_row(k.value(), v.value())?;
                n += usize::from(r.phase.is_active());
            }
            Ok(n)
        })
    }
}

#[cfg(test)]
mod tests;
