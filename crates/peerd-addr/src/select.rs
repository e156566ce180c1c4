//! Which interface is watched, and which of its addresses are announced,
//! best first.
//!
//! Pure functions of the [`WatcherConfig`] and the kernel mirror, so the
//! policy can be read and tested without a socket.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use peerd_config::{Family, Ipv6Policy, WatchedInterface};
use peerd_core::{AddressSnapshot, InterfaceAddress};

use crate::config::WatcherConfig;
use crate::table::{Link, Table};

/// The published state and the index of the interface it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct View {
    pub snapshot: AddressSnapshot,
    /// The watched interface's index, when it exists.
    pub index: Option<u32>,
}

/// What the watcher publishes for this table.
pub(crate) fn view(config: &WatcherConfig, table: &Table) -> View {
    let (name, found) = match &config.interface {
        WatchedInterface::Named(name) => (Some(name.clone()), table.link_by_name(name)),
        WatchedInterface::Auto => match auto_interface(config, table) {
            Some((index, link)) => (Some(link.name.clone()), Some((index, link))),
            None => (None, None),
        },
    };
    let up = found.is_some_and(|(_, link)| link.up);
    let addresses = found.map(|(_, link)| ordered(link)).unwrap_or_default();
    let announceable = if up {
        announceable(config, &addresses)
    } else {
        Vec::new()
    };
    View {
        snapshot: AddressSnapshot {
            interface: name,
            up,
            addresses,
            announceable,
        },
        index: found.map(|(index, _)| index),
    }
}

/// The addresses of an interface, best first (see [`announceable`]).
pub(crate) fn ordered(link: &Link) -> Vec<InterfaceAddress> {
    let mut addresses: Vec<InterfaceAddress> = link.addresses.values().copied().collect();
    addresses.sort_by_key(rank);
    addresses
}

/// For `interface = "auto"`: the interface of the default route with the
/// lowest metric among the configured families. Ties go to the family
/// listed first in `families`, then to the lower interface index. Only
/// routes through an interface that is up and has a name count.
fn auto_interface<'t>(config: &WatcherConfig, table: &'t Table) -> Option<(u32, &'t Link)> {
    table
        .default_routes()
        .filter(|route| config.wants(route.family.family()))
        .filter_map(|route| {
            let link = table.link(route.oif)?;
            (link.up && !link.name.is_empty()).then_some((route, link))
        })
        .min_by_key(|(route, _)| {
            let family_rank = config
                .families
                .iter()
                .position(|f| *f == route.family.family());
            (route.metric, family_rank, route.oif)
        })
        .map(|(route, link)| (route.oif, link))
}

/// The order of [`AddressSnapshot::addresses`] and
/// [`AddressSnapshot::announceable`], best first (see [`announceable`]).
fn rank(address: &InterfaceAddress) -> impl Ord + use<> {
    (
        address.class,
        Reverse(address.ip.is_ipv6()),
        address.flags.temporary,
        address.ip,
        address.prefix_len,
    )
}

/// The addresses of `addresses` that may be announced under `config`,
/// best first.
///
/// An address is announceable when:
/// - its class may ever be announced (public, cgnat, private: never
///   link-local, loopback or unroutable) and is listed in `publish`;
/// - its family is listed in `families`;
/// - for IPv6: it is usable - not tentative (duplicate address detection
///   still running), not deprecated, not failed DAD - and `ipv6` allows it
///   (`stable`: no temporary addresses; `temporary`: only temporary ones;
///   `all`).
///
/// The order, best first, is the order a peer should try them in:
/// 1. by class: public, then cgnat, then private (a public address is
///    reachable from anywhere, a CGNAT one only inside the carrier, a
///    private one only on the same network);
/// 2. within a class, IPv6 before IPv4 (a global IPv6 address needs no NAT
///    traversal);
/// 3. stable before temporary (a stable address outlives the announcement);
/// 4. then by address and prefix length, so the order is total and the
///    same every time.
///
/// So a typical host announces: public IPv6 (stable), public IPv4, CGNAT
/// IPv4, private IPv6 (ULA), private IPv4. An address bound twice with two
/// prefix lengths appears once.
pub fn announceable(
    config: &WatcherConfig,
    addresses: &[InterfaceAddress],
) -> Vec<InterfaceAddress> {
    let mut seen = BTreeSet::new();
    let mut out: Vec<InterfaceAddress> = addresses
        .iter()
        .filter(|a| a.class.is_announceable() && config.publish.contains(&a.class))
        .filter(|a| {
            if a.ip.is_ipv4() {
                return config.wants(Family::Ipv4);
            }
            let usable = !a.flags.tentative && !a.flags.deprecated && !a.flags.dad_failed;
            let allowed = match config.ipv6 {
                Ipv6Policy::Stable => !a.flags.temporary,
                Ipv6Policy::Temporary => a.flags.temporary,
                Ipv6Policy::All => true,
            };
            config.wants(Family::Ipv6) && usable && allowed
        })
        .copied()
        .collect();
    out.sort_by_key(rank);
    out.retain(|a| seen.insert(a.ip));
    out
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use peerd_core::{AddressClass, AddressFlags};

    use super::*;

    fn addr(s: &str, flags: AddressFlags) -> InterfaceAddress {
        let ip: IpAddr = s.parse().unwrap();
        InterfaceAddress {
            ip,
            prefix_len: if ip.is_ipv4() { 24 } else { 64 },
            class: AddressClass::of(ip),
            flags,
        }
    }

    fn plain(s: &str) -> InterfaceAddress {
        addr(s, AddressFlags::default())
    }

    fn temporary() -> AddressFlags {
        AddressFlags {
            temporary: true,
            ..AddressFlags::default()
        }
    }

    fn ips(list: &[InterfaceAddress]) -> Vec<String> {
        list.iter().map(|a| a.ip.to_string()).collect()
    }

    fn all_kinds() -> Vec<InterfaceAddress> {
        vec![
            plain("10.0.0.2"),
            plain("fd00::2"),
            plain("100.64.0.9"),
            plain("192.0.2.7"),
            addr("2001:db8::99", temporary()),
            plain("2001:db8::1"),
            plain("fe80::1"),
            plain("169.254.3.3"),
            plain("127.0.0.1"),
            plain("::1"),
            addr(
                "2001:db8::5",
                AddressFlags {
                    tentative: true,
                    ..AddressFlags::default()
                },
            ),
            addr(
                "2001:db8::6",
                AddressFlags {
                    deprecated: true,
                    ..AddressFlags::default()
                },
            ),
            addr(
                "2001:db8::7",
                AddressFlags {
                    dad_failed: true,
                    ..AddressFlags::default()
                },
            ),
        ]
    }

    #[test]
    fn best_first_and_never_unusable() {
        let config = WatcherConfig::default();
        assert_eq!(
            ips(&announceable(&config, &all_kinds())),
            [
                "2001:db8::1",
                "192.0.2.7",
                "100.64.0.9",
                "fd00::2",
                "10.0.0.2"
            ]
        );
    }

    #[test]
    fn ipv6_policy_families_and_publish() {
        let mut config = WatcherConfig {
            ipv6: Ipv6Policy::All,
            ..WatcherConfig::default()
        };
        assert_eq!(
            ips(&announceable(&config, &all_kinds()))[..3],
            ["2001:db8::1", "2001:db8::99", "192.0.2.7"]
        );
        config.ipv6 = Ipv6Policy::Temporary;
        assert_eq!(
            ips(&announceable(&config, &all_kinds())),
            ["2001:db8::99", "192.0.2.7", "100.64.0.9", "10.0.0.2"]
        );
        config.families = vec![Family::Ipv6];
        config.publish = vec![AddressClass::Public];
        assert_eq!(ips(&announceable(&config, &all_kinds())), ["2001:db8::99"]);
        config.families = vec![Family::Ipv4];
        config.publish = vec![AddressClass::Cgnat, AddressClass::Private];
        assert_eq!(
            ips(&announceable(&config, &all_kinds())),
            ["100.64.0.9", "10.0.0.2"]
        );
        // Even a publish list that names them never lets these through.
        config.families = vec![Family::Ipv4, Family::Ipv6];
        config.publish = AddressClass::ALL.to_vec();
        config.ipv6 = Ipv6Policy::All;
        let got = announceable(&config, &all_kinds());
        assert!(got.iter().all(|a| a.class.is_announceable()), "{got:?}");
    }

    #[test]
    fn auto_takes_the_lowest_metric_then_the_first_family_then_the_lowest_index() {
        use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
        use rtnetlink::packet_route::route::{
            RouteAttribute, RouteHeader, RouteMessage, RouteType,
        };
        use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

        let mut table = Table::default();
        for (index, name, flags) in [
            (2, "wlan0", LinkFlags::Up),
            (3, "wwan0", LinkFlags::Up),
            (4, "eth0", LinkFlags::empty()),
        ] {
            let mut link = LinkMessage::default();
            link.header.index = index;
            link.header.flags = flags;
            link.attributes.push(LinkAttribute::IfName(name.to_owned()));
            table.apply(&RouteNetlinkMessage::NewLink(link), 0);
        }
        let mut route = |family, oif: u32, metric: u32| {
            let mut r = RouteMessage::default();
            r.header.address_family = family;
            r.header.table = RouteHeader::RT_TABLE_MAIN;
            r.header.kind = RouteType::Unicast;
            r.attributes.push(RouteAttribute::Oif(oif));
            r.attributes.push(RouteAttribute::Priority(metric));
            table.apply(&RouteNetlinkMessage::NewRoute(r), 0);
            view(
                &WatcherConfig::for_interface(WatchedInterface::Auto),
                &table,
            )
            .snapshot
            .interface
        };
        // eth0 is down: its (better) route does not count.
        assert_eq!(route(AddressFamily::Inet, 4, 1), None);
        assert_eq!(
            route(AddressFamily::Inet6, 3, 100),
            Some("wwan0".to_owned())
        );
        // Same metric: IPv4 is listed first in `families`.
        assert_eq!(route(AddressFamily::Inet, 2, 100), Some("wlan0".to_owned()));
        // Same metric and family: the lower index.
        assert_eq!(route(AddressFamily::Inet, 3, 100), Some("wlan0".to_owned()));
        assert_eq!(route(AddressFamily::Inet6, 3, 99), Some("wwan0".to_owned()));
    }

    #[test]
    fn one_address_with_two_prefixes_is_announced_once() {
        let config = WatcherConfig::default();
        let mut wide = plain("10.0.0.2");
        wide.prefix_len = 8;
        let got = announceable(&config, &[plain("10.0.0.2"), wide]);
        assert_eq!(ips(&got), ["10.0.0.2"]);
        assert_eq!(got[0].prefix_len, 8);
    }
}
