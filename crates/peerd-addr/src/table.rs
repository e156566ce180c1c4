//! A mirror of the kernel's interfaces, addresses and default routes.
//!
//! The watcher keeps every interface, not only the watched one: with
//! `interface = "auto"` the watched interface changes whenever the default
//! route moves, and a named interface that is deleted and created again
//! (ppp0 when a PPP link drops and comes back) gets a new index. Keeping the
//! whole (small) picture makes both cases a matter of looking again, never
//! of asking the kernel again.
//!
//! Everything here is pure: rtnetlink messages in, state out. The kernel
//! quirks it absorbs are written where they are handled:
//! - `IFA_LOCAL` is the address; `IFA_ADDRESS` is the far end on a
//!   point-to-point link ([`Table::apply`] on addresses);
//! - IPv6 state flags are in `IFA_FLAGS`, or only in the header's one-byte
//!   `ifa_flags` from older kernels;
//! - link messages of the bridge family describe bridge ports, and a
//!   `RTM_DELLINK` of that family is a port leaving a bridge, not a deletion;
//! - IPv4 routes vanish without an `RTM_DELROUTE` when their interface goes
//!   down or loses its last address, and a route replaced in place arrives
//!   as an `RTM_NEWROUTE` with `NLM_F_REPLACE` and no deletion of the old
//!   one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use peerd_config::Family;
use peerd_core::{AddressClass, AddressFlags, InterfaceAddress};
use rtnetlink::packet_core::NLM_F_REPLACE;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags as KernelFlags, AddressMessage,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

/// The identity of an address on an interface, as the kernel sees it: the
/// local address, its prefix, and the far end of a point-to-point address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct AddressKey {
    local: IpAddr,
    prefix_len: u8,
    peer: Option<IpAddr>,
}

/// One interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Link {
    /// Its name; empty until a link message named it (an address of an
    /// interface not seen yet).
    pub name: String,
    /// `IFF_UP`: administratively up.
    pub up: bool,
    /// `IFF_RUNNING`: operationally up (carrier).
    pub running: bool,
    /// `IFF_POINTOPOINT`.
    pub point_to_point: bool,
    /// Its addresses, each under the key the kernel deletes it by.
    pub addresses: BTreeMap<AddressKey, InterfaceAddress>,
}

/// A default route (0.0.0.0/0 or ::/0) of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct DefaultRoute {
    /// Its family.
    pub family: FamilyKey,
    /// `RTA_PRIORITY`, 0 when absent.
    pub metric: u32,
    /// The output interface (the first next hop's, for a multipath route).
    pub oif: u32,
    /// `RTA_GATEWAY`, if any (part of the identity only: two default routes
    /// of one metric through two gateways are two routes).
    pub gateway: Option<IpAddr>,
}

/// [`Family`] with an order (the config type has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum FamilyKey {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl FamilyKey {
    pub fn family(self) -> Family {
        match self {
            Self::V4 => Family::Ipv4,
            Self::V6 => Family::Ipv6,
        }
    }

    fn of(family: AddressFamily) -> Option<Self> {
        match family {
            AddressFamily::Inet => Some(Self::V4),
            AddressFamily::Inet6 => Some(Self::V6),
            _ => None,
        }
    }
}

/// What applying one message did, beyond the table itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Effect {
    /// The kernel may have removed routes without saying so (an IPv4
    /// address went away): the routes need reading again.
    pub routes_stale: bool,
}

/// Interfaces by index, and the default routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Table {
    links: BTreeMap<u32, Link>,
    routes: BTreeSet<DefaultRoute>,
}

impl Table {
    /// A table built from dumps of links, addresses and routes.
    pub fn from_dump(
        links: Vec<LinkMessage>,
        addresses: Vec<AddressMessage>,
        routes: Vec<RouteMessage>,
    ) -> Self {
        let mut table = Self::default();
        for link in links {
            table.new_link(&link);
        }
        for address in addresses {
            table.new_address(&address);
        }
        for route in routes {
            table.new_route(&route, false);
        }
        table
    }

    /// Replaces the default routes with a fresh dump of the routes.
    pub fn replace_routes(&mut self, routes: Vec<RouteMessage>) {
        self.routes.clear();
        for route in routes {
            self.new_route(&route, false);
        }
    }

    /// Applies one notification; `flags` are its netlink header flags.
    pub fn apply(&mut self, message: &RouteNetlinkMessage, flags: u16) -> Effect {
        match message {
            RouteNetlinkMessage::NewLink(link) => {
                self.new_link(link);
                Effect::default()
            },
            RouteNetlinkMessage::DelLink(link) => {
                self.del_link(link);
                Effect::default()
            },
            RouteNetlinkMessage::NewAddress(address) => {
                self.new_address(address);
                Effect::default()
            },
            RouteNetlinkMessage::DelAddress(address) => Effect {
                routes_stale: self.del_address(address),
            },
            RouteNetlinkMessage::NewRoute(route) => {
                self.new_route(route, flags & NLM_F_REPLACE != 0);
                Effect::default()
            },
            RouteNetlinkMessage::DelRoute(route) => {
                if let Some(route) = default_route(route) {
                    self.routes.remove(&route);
                }
                Effect::default()
            },
            _ => Effect::default(),
        }
    }

    /// The interface with this index.
    pub fn link(&self, index: u32) -> Option<&Link> {
        self.links.get(&index)
    }

    /// The interface with this name, and its index.
    pub fn link_by_name(&self, name: &str) -> Option<(u32, &Link)> {
        if name.is_empty() {
            return None;
        }
        self.links
            .iter()
            .find(|(_, link)| link.name == name)
            .map(|(index, link)| (*index, link))
    }

    /// Every interface, by index.
    pub fn links(&self) -> impl Iterator<Item = (u32, &Link)> {
        self.links.iter().map(|(index, link)| (*index, link))
    }

    /// Every default route of the main table.
    pub fn default_routes(&self) -> impl Iterator<Item = &DefaultRoute> {
        self.routes.iter()
    }

    fn new_link(&mut self, message: &LinkMessage) {
        // AF_BRIDGE link messages describe bridge ports, not interfaces.
        if message.header.interface_family == AddressFamily::Bridge {
            return;
        }
        let index = message.header.index;
        let flags = message.header.flags;
        let link = self.links.entry(index).or_default();
        for attribute in &message.attributes {
            if let LinkAttribute::IfName(name) = attribute {
                link.name.clone_from(name);
            }
        }
        let was_up = link.up;
        link.up = flags.contains(LinkFlags::Up);
        link.running = flags.contains(LinkFlags::Running);
        link.point_to_point = flags.contains(LinkFlags::Pointopoint);
        if was_up && !link.up {
            // The kernel flushes IPv4 routes through an interface that goes
            // down without an RTM_DELROUTE (IPv6 says so).
            self.routes
                .retain(|r| !(r.oif == index && r.family == FamilyKey::V4));
        }
    }

    fn del_link(&mut self, message: &LinkMessage) {
        // A bridge-family RTM_DELLINK is a port leaving a bridge.
        if message.header.interface_family == AddressFamily::Bridge {
            return;
        }
        let index = message.header.index;
        self.links.remove(&index);
        self.routes.retain(|r| r.oif != index);
    }

    fn new_address(&mut self, message: &AddressMessage) {
        let Some((key, address)) = interface_address(message) else {
            return;
        };
        self.links
            .entry(message.header.index)
            .or_default()
            .addresses
            .insert(key, address);
    }

    /// Removes an address; true if it was IPv4 (routes may have gone with it).
    fn del_address(&mut self, message: &AddressMessage) -> bool {
        let Some((key, _)) = interface_address(message) else {
            return false;
        };
        if let Some(link) = self.links.get_mut(&message.header.index) {
            link.addresses.remove(&key);
        }
        key.local.is_ipv4()
    }

    fn new_route(&mut self, message: &RouteMessage, replace: bool) {
        let Some(route) = default_route(message) else {
            return;
        };
        if replace {
            // NLM_F_REPLACE: this route took the place of the one with the
            // same destination and metric, which is gone without a word.
            self.routes
                .retain(|r| !(r.family == route.family && r.metric == route.metric));
        }
        self.routes.insert(route);
    }
}

/// The address a message describes, with the key the kernel knows it by;
/// `None` for a message without an address or of another family.
fn interface_address(message: &AddressMessage) -> Option<(AddressKey, InterfaceAddress)> {
    let family = FamilyKey::of(message.header.family)?;
    let mut local = None;
    let mut address = None;
    let mut flags = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(f) => flags = Some(*f),
            _ => {},
        }
    }
    // IFA_LOCAL is our address. IFA_ADDRESS equals it on a broadcast link,
    // but on a point-to-point link (ppp0: `10.64.0.2 peer 10.64.0.1`) it is
    // the far end, which must never be announced as ours. IPv6 usually
    // sends IFA_ADDRESS alone, and then it is ours.
    let ip = local.or(address)?;
    let peer = match (local, address) {
        (Some(local), Some(address)) if local != address => Some(address),
        _ => None,
    };
    if (family == FamilyKey::V4) != ip.is_ipv4() {
        return None;
    }
    // IFA_FLAGS (32 bits) when the kernel sends it; before Linux 3.14 only
    // the header's ifa_flags byte, which holds the same low eight bits.
    let flags = flags
        .unwrap_or_else(|| KernelFlags::from_bits_retain(u32::from(message.header.flags.bits())));
    let key = AddressKey {
        local: ip,
        prefix_len: message.header.prefix_len,
        peer,
    };
    let address = InterfaceAddress {
        ip,
        prefix_len: message.header.prefix_len,
        class: AddressClass::of(ip),
        flags: address_flags(family, flags),
    };
    Some((key, address))
}

/// The IPv6 state flags we care about. IFA_F_TEMPORARY shares its bit with
/// IFA_F_SECONDARY, which means "secondary" on IPv4, so IPv4 has none.
fn address_flags(family: FamilyKey, flags: KernelFlags) -> AddressFlags {
    if family == FamilyKey::V4 {
        return AddressFlags::default();
    }
    AddressFlags {
        // IFA_F_TEMPORARY == IFA_F_SECONDARY == 0x01.
        temporary: flags.contains(KernelFlags::Secondary),
        deprecated: flags.contains(KernelFlags::Deprecated),
        tentative: flags.contains(KernelFlags::Tentative),
        dad_failed: flags.contains(KernelFlags::Dadfailed),
    }
}

/// The default route a message describes, if it is one: destination
/// length 0, unicast, main table.
fn default_route(message: &RouteMessage) -> Option<DefaultRoute> {
    let header = &message.header;
    let family = FamilyKey::of(header.address_family)?;
    if header.destination_prefix_length != 0 || header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(header.table);
    let mut metric = 0;
    let mut oif = None;
    let mut gateway = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Oif(index) => oif = Some(*index),
            RouteAttribute::Gateway(address) => gateway = route_ip(address),
            RouteAttribute::MultiPath(hops) if oif.is_none() => {
                oif = hops.first().map(|hop| hop.interface_index);
            },
            _ => {},
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    Some(DefaultRoute {
        family,
        metric,
        oif: oif?,
        gateway,
    })
}

fn route_ip(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::address::AddressHeaderFlags;
    use rtnetlink::packet_route::route::RouteNextHop;

    fn link(index: u32, name: &str, flags: LinkFlags) -> LinkMessage {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = flags;
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        message
    }

    fn address(index: u32, prefix_len: u8, attributes: Vec<AddressAttribute>) -> AddressMessage {
        let mut message = AddressMessage::default();
        let v4 = attributes.iter().any(|a| {
            matches!(a, AddressAttribute::Local(ip) | AddressAttribute::Address(ip) if ip.is_ipv4())
        });
        message.header.family = if v4 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        message.header.index = index;
        message.header.prefix_len = prefix_len;
        message.attributes = attributes;
        message
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn route(family: AddressFamily, oif: u32, metric: u32) -> RouteMessage {
        let mut message = RouteMessage::default();
        message.header.address_family = family;
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.kind = RouteType::Unicast;
        message.attributes.push(RouteAttribute::Oif(oif));
        message.attributes.push(RouteAttribute::Priority(metric));
        message
    }

    fn ips(table: &Table, index: u32) -> Vec<IpAddr> {
        table
            .link(index)
            .unwrap()
            .addresses
            .values()
            .map(|a| a.ip)
            .collect()
    }

    #[test]
    fn point_to_point_address_is_the_local_end() {
        let mut t = Table::default();
        t.apply(
            &RouteNetlinkMessage::NewLink(link(3, "ppp0", LinkFlags::Up)),
            0,
        );
        let ptp = address(
            3,
            32,
            vec![
                AddressAttribute::Address(ip("10.64.0.1")),
                AddressAttribute::Local(ip("10.64.0.2")),
            ],
        );
        t.apply(&RouteNetlinkMessage::NewAddress(ptp.clone()), 0);
        assert_eq!(ips(&t, 3), [ip("10.64.0.2")]);
        // The deletion carries the same pair and removes it.
        t.apply(&RouteNetlinkMessage::DelAddress(ptp), 0);
        assert!(ips(&t, 3).is_empty());
    }

    #[test]
    fn ipv6_flags_from_ifa_flags_or_the_legacy_byte() {
        let mut t = Table::default();
        let mut temp = address(
            2,
            64,
            vec![
                AddressAttribute::Address(ip("2001:db8::77")),
                AddressAttribute::Flags(KernelFlags::Secondary | KernelFlags::Tentative),
            ],
        );
        t.apply(&RouteNetlinkMessage::NewAddress(temp.clone()), 0);
        let got = t
            .link(2)
            .unwrap()
            .addresses
            .values()
            .next()
            .copied()
            .unwrap();
        assert!(got.flags.temporary && got.flags.tentative && !got.flags.deprecated);
        // An old kernel: no IFA_FLAGS, the header byte only.
        temp.attributes.truncate(1);
        temp.header.flags = AddressHeaderFlags::Deprecated | AddressHeaderFlags::Dadfailed;
        t.apply(&RouteNetlinkMessage::NewAddress(temp), 0);
        let got = t
            .link(2)
            .unwrap()
            .addresses
            .values()
            .next()
            .copied()
            .unwrap();
        assert!(got.flags.deprecated && got.flags.dad_failed && !got.flags.temporary);
        // IPv4's 0x01 is "secondary", not "temporary".
        let v4 = address(
            2,
            24,
            vec![
                AddressAttribute::Local(ip("192.0.2.9")),
                AddressAttribute::Flags(KernelFlags::Secondary),
            ],
        );
        t.apply(&RouteNetlinkMessage::NewAddress(v4), 0);
        let v4 = t
            .link(2)
            .unwrap()
            .addresses
            .values()
            .find(|a| a.ip.is_ipv4())
            .unwrap();
        assert_eq!(v4.flags, AddressFlags::default());
    }

    #[test]
    fn bridge_family_dellink_is_not_a_deletion() {
        let mut t = Table::default();
        t.apply(
            &RouteNetlinkMessage::NewLink(link(4, "eth0", LinkFlags::Up)),
            0,
        );
        let mut port = link(4, "eth0", LinkFlags::Up);
        port.header.interface_family = AddressFamily::Bridge;
        t.apply(&RouteNetlinkMessage::DelLink(port), 0);
        assert!(t.link(4).is_some());
        t.apply(
            &RouteNetlinkMessage::DelLink(link(4, "eth0", LinkFlags::Up)),
            0,
        );
        assert!(t.link(4).is_none());
    }

    #[test]
    fn routes_replaced_flushed_and_multipath() {
        let mut t = Table::default();
        t.apply(
            &RouteNetlinkMessage::NewLink(link(2, "a", LinkFlags::Up)),
            0,
        );
        t.apply(
            &RouteNetlinkMessage::NewLink(link(3, "b", LinkFlags::Up)),
            0,
        );
        t.apply(
            &RouteNetlinkMessage::NewRoute(route(AddressFamily::Inet, 2, 0)),
            0,
        );
        t.apply(
            &RouteNetlinkMessage::NewRoute(route(AddressFamily::Inet6, 2, 1024)),
            0,
        );
        // `ip route replace default dev b`: NEWROUTE + NLM_F_REPLACE only.
        t.apply(
            &RouteNetlinkMessage::NewRoute(route(AddressFamily::Inet, 3, 0)),
            NLM_F_REPLACE,
        );
        let oifs: Vec<_> = t.default_routes().map(|r| (r.family, r.oif)).collect();
        assert_eq!(oifs, [(FamilyKey::V4, 3), (FamilyKey::V6, 2)]);
        // b goes down: its IPv4 routes are gone, silently.
        t.apply(
            &RouteNetlinkMessage::NewLink(link(3, "b", LinkFlags::empty())),
            0,
        );
        let oifs: Vec<_> = t.default_routes().map(|r| r.oif).collect();
        assert_eq!(oifs, [2]);
        // a is deleted: every route through it goes.
        t.apply(
            &RouteNetlinkMessage::DelLink(link(2, "a", LinkFlags::Up)),
            0,
        );
        assert_eq!(t.default_routes().count(), 0);
        // A multipath route counts for its first hop's interface; a route of
        // another table or a non-default route does not count.
        let mut multi = route(AddressFamily::Inet, 0, 5);
        multi
            .attributes
            .retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        let mut hop = RouteNextHop::default();
        hop.interface_index = 3;
        multi.attributes.push(RouteAttribute::MultiPath(vec![hop]));
        t.apply(&RouteNetlinkMessage::NewRoute(multi), 0);
        let mut other = route(AddressFamily::Inet, 2, 0);
        other.attributes.push(RouteAttribute::Table(100));
        t.apply(&RouteNetlinkMessage::NewRoute(other), 0);
        let mut subnet = route(AddressFamily::Inet, 2, 0);
        subnet.header.destination_prefix_length = 24;
        t.apply(&RouteNetlinkMessage::NewRoute(subnet), 0);
        let oifs: Vec<_> = t.default_routes().map(|r| (r.oif, r.metric)).collect();
        assert_eq!(oifs, [(3, 5)]);
    }

    #[test]
    fn ipv4_address_deletion_marks_routes_stale() {
        let mut t = Table::default();
        let v4 = address(2, 24, vec![AddressAttribute::Local(ip("10.0.0.2"))]);
        let v6 = address(2, 64, vec![AddressAttribute::Address(ip("fd00::2"))]);
        t.apply(&RouteNetlinkMessage::NewAddress(v4.clone()), 0);
        t.apply(&RouteNetlinkMessage::NewAddress(v6.clone()), 0);
        assert!(
            !t.apply(&RouteNetlinkMessage::DelAddress(v6), 0)
                .routes_stale
        );
        assert!(
            t.apply(&RouteNetlinkMessage::DelAddress(v4), 0)
                .routes_stale
        );
        // An address seen before its link is kept; the link names it later.
        assert!(t.link(2).unwrap().name.is_empty());
        t.apply(
            &RouteNetlinkMessage::NewLink(link(2, "veth0", LinkFlags::Up)),
            0,
        );
        assert_eq!(t.link_by_name("veth0").map(|(i, _)| i), Some(2));
        assert!(t.link_by_name("").is_none());
    }
}
