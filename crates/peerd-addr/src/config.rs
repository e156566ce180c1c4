//! What the watcher needs from the configuration.
//!
//! The watcher reads five keys of two sections (`[link] interface`,
//! `families`; `[announce] debounce`, `publish`, `ipv6`). It takes them as
//! one small struct rather than the whole [`Config`] so that tests and
//! tools can build one without a mail account, and so that what the actor
//! depends on is visible in one place.

use std::time::Duration;

use peerd_config::{Config, Family, Ipv6Policy, WatchedInterface};
use peerd_core::AddressClass;

/// The receive buffer asked for on the netlink socket (`SO_RCVBUF`): 1 MiB.
/// The kernel caps it at `net.core.rmem_max`; an overrun is survived either
/// way (the watcher re-reads everything), a larger buffer just makes it rare.
pub const DEFAULT_RECEIVE_BUFFER: usize = 1 << 20;

/// The address watcher's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatcherConfig {
    /// `[link] interface`: a name, or `auto` for the interface of the
    /// default route (the lowest metric among `families`).
    pub interface: WatchedInterface,
    /// `[link] families`: which address families are announced, and which
    /// default routes `auto` follows.
    pub families: Vec<Family>,
    /// `[announce] debounce`: how long the announceable set must stay
    /// unchanged before [`AddressEvent::AddressChanged`] is sent. Zero
    /// sends one for every change as soon as it is seen.
    ///
    /// [`AddressEvent::AddressChanged`]: crate::AddressEvent::AddressChanged
    pub debounce: Duration,
    /// `[announce] publish`: the address classes that are announced
    /// (link-local and loopback never are, whatever this says).
    pub publish: Vec<AddressClass>,
    /// `[announce] ipv6`: stable, temporary or all IPv6 addresses.
    pub ipv6: Ipv6Policy,
    /// `SO_RCVBUF` for the netlink socket, in bytes (not a config key; tests
    /// make it tiny to force an overrun).
    pub receive_buffer: usize,
}

impl WatcherConfig {
    /// The watcher's settings from a validated configuration.
    pub fn from_config(config: &Config) -> Self {
        Self {
            interface: config.link.interface.clone(),
            families: config.link.families.clone(),
            debounce: config.announce.debounce,
            publish: config.announce.publish.clone(),
            ipv6: config.announce.ipv6,
            receive_buffer: DEFAULT_RECEIVE_BUFFER,
        }
    }

    /// The defaults of `peerd.toml` (`ppp0`, both families, 2 s, public +
    /// cgnat + private, stable IPv6) with another interface.
    pub fn for_interface(interface: WatchedInterface) -> Self {
        Self {
            interface,
            families: vec![Family::Ipv4, Family::Ipv6],
            debounce: Duration::from_secs(2),
            publish: vec![
                AddressClass::Public,
                AddressClass::Cgnat,
                AddressClass::Private,
            ],
            ipv6: Ipv6Policy::Stable,
            receive_buffer: DEFAULT_RECEIVE_BUFFER,
        }
    }

    /// Whether addresses and default routes of this family count.
    pub fn wants(&self, family: Family) -> bool {
        self.families.contains(&family)
    }

    /// Whether the interface is chosen by the default route.
    pub fn is_auto(&self) -> bool {
        self.interface == WatchedInterface::Auto
    }
}

impl Default for WatcherConfig {
    /// The defaults of `peerd.toml`: `interface = "ppp0"` and the rest as
    /// [`WatcherConfig::for_interface`] says.
    fn default() -> Self {
        Self::for_interface(WatchedInterface::Named("ppp0".to_owned()))
    }
}
