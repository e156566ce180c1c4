//! The address watcher: which addresses this host could announce, the
//! moment they change.
//!
//! peerd announces the addresses of one interface (`[link] interface`:
//! ppp0, or `auto` for whichever interface has the default route). Those
//! addresses change under us: a PPP or LTE link drops and comes back with
//! another address, a DHCP lease renews with a new one, IPv6 privacy
//! addresses rotate. Polling would either miss changes or waste wake-ups,
//! so the watcher listens to the kernel's rtnetlink notifications, keeps a
//! mirror of the interfaces, addresses and default routes, and says what
//! changed:
//!
//! - the current [`AddressSnapshot`] (from `peerd-core`) on a `watch`,
//!   replaced as soon as the kernel reports a change; the link manager
//!   follows it to learn that the link has its address;
//! - [`AddressEvent::AddressChanged`] on a `broadcast` when the set of
//!   *announceable* addresses really changed and stayed so for
//!   `announce.debounce`; this is what starts an announcement mail.
//!
//! Which addresses are announceable, and in which order, is
//! [`announceable`]'s documentation; in short: public before CGNAT before
//! private, IPv6 before IPv4 within a class, stable before temporary, never
//! link-local, loopback, tentative, deprecated or failed addresses.
//!
//! # Layout
//! - [`config`]: [`WatcherConfig`], the five configuration keys it reads.
//! - `netlink`: the rtnetlink socket: subscribe first, then dump.
//! - `table`: the mirror of the kernel's state, fed message by message.
//! - `select`: which interface is watched, which addresses are announced.
//! - [`watcher`]: the actor: [`spawn`], [`WatcherHandle`], [`AddressEvent`].
//!
//! Tests of the real thing (network namespaces, veth pairs, tun devices)
//! are in `tests/`; `examples/latency.rs` measures how long a change takes
//! to become an event, beside a bare rtnetlink listener.

pub mod config;
mod netlink;
mod select;
mod table;
pub mod watcher;

pub use config::{DEFAULT_RECEIVE_BUFFER, WatcherConfig};
pub use peerd_core::{AddressFlags, AddressSnapshot, InterfaceAddress};
pub use select::announceable;
pub use watcher::{AddressEvent, InterfaceInfo, ResyncReason, WatcherError, WatcherHandle, spawn};
