//! Address classes and connection candidates.
//!
//! Not every address a host has is worth telling a peer: a link-local or
//! loopback address is useless elsewhere and only leaks information. Each
//! address is put in a class so that the configuration (`publish`) can say
//! which classes go into announcements, and so that a receiver knows what
//! it is dialling (a private address only helps on the same LAN; a CGNAT
//! address only inside the carrier's network).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// What kind of network an IP address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressClass {
    /// Globally routable.
    Public,
    /// Carrier-grade NAT space, 100.64.0.0/10 (RFC 6598).
    Cgnat,
    /// RFC 1918 IPv4, or IPv6 unique-local fc00::/7 (and deprecated site-local).
    Private,
    /// 169.254.0.0/16 or fe80::/10: meaningless off the link; never announced.
    LinkLocal,
    /// 127.0.0.0/8 or ::1; never announced.
    Loopback,
    /// Unspecified, multicast, broadcast or reserved; never announced.
    Unroutable,
}

impl AddressClass {
    /// Every class, in the order used for display.
    pub const ALL: [AddressClass; 6] = [
        Self::Public,
        Self::Cgnat,
        Self::Private,
        Self::LinkLocal,
        Self::Loopback,
        Self::Unroutable,
    ];

    /// Classifies an address. IPv4-mapped IPv6 addresses are classified as
    /// the IPv4 address they carry.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::of_v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::of_v4(v4),
                None => Self::of_v6(v6),
            },
        }
    }

    fn of_v4(ip: Ipv4Addr) -> Self {
        let [a, b, ..] = ip.octets();
        if ip.is_loopback() {
            Self::Loopback
        } else if ip.is_link_local() {
            Self::LinkLocal
        } else if ip.is_private() {
            Self::Private
        } else if a == 100 && (64..128).contains(&b) {
            Self::Cgnat
        } else if a == 0 || ip.is_multicast() || ip.is_broadcast() || a >= 240 {
            Self::Unroutable
        } else {
            Self::Public
        }
    }

    fn of_v6(ip: Ipv6Addr) -> Self {
        let first = ip.segments()[0];
        if ip.is_loopback() {
            Self::Loopback
        } else if ip.is_unspecified() || ip.is_multicast() {
            Self::Unroutable
        } else if first & 0xffc0 == 0xfe80 {
            Self::LinkLocal
        } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
            Self::Private
        } else if first & 0xe000 == 0x2000 {
            // 2000::/3, global unicast (documentation space included, so
            // examples and test networks behave like the real thing).
            Self::Public
        } else {
            Self::Unroutable
        }
    }

    /// Whether an address of this class may ever be put in an announcement.
    pub fn is_announceable(self) -> bool {
        matches!(self, Self::Public | Self::Cgnat | Self::Private)
    }

    /// The name used in configuration, logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Cgnat => "cgnat",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::Loopback => "loopback",
            Self::Unroutable => "unroutable",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown class or candidate-kind name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?} (expected one of: {expected})")]
pub struct UnknownName {
    what: &'static str,
    name: String,
    expected: &'static str,
}

impl FromStr for AddressClass {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "address class",
                name: s.to_owned(),
                expected: "public, cgnat, private, link-local, loopback, unroutable",
            })
    }
}

/// How a candidate address was learned (the ICE terms of RFC 8445).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CandidateKind {
    /// An address of one of our own interfaces.
    Host,
    /// Our address as a STUN server saw it (outside a NAT).
    ServerReflexive,
    /// A port mapping a router made for us (UPnP, NAT-PMP, PCP).
    Mapped,
}

impl CandidateKind {
    /// Every kind.
    pub const ALL: [CandidateKind; 3] = [Self::Host, Self::ServerReflexive, Self::Mapped];

    /// The name used in logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::ServerReflexive => "server-reflexive",
            Self::Mapped => "mapped",
        }
    }
}

impl fmt::Display for CandidateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CandidateKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "candidate kind",
                name: s.to_owned(),
                expected: "host, server-reflexive, mapped",
            })
    }
}

/// One way to reach a host: an address and port, how it was learned, and
/// its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Candidate {
    /// Where to send packets.
    pub addr: SocketAddr,
    /// How we learned it.
    pub kind: CandidateKind,
    /// The class of `addr`'s IP, as computed by [`AddressClass::of`].
    pub class: AddressClass,
}

impl Candidate {
    /// A candidate with its class computed from the address; `None` for an
    /// address that is never announced (link-local, loopback, unroutable).
    pub fn new(addr: SocketAddr, kind: CandidateKind) -> Option<Self> {
        let class = AddressClass::of(addr.ip());
        class
            .is_announceable()
            .then_some(Self { addr, kind, class })
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {})", self.addr, self.kind, self.class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddressClass {
        AddressClass::of(s.parse().unwrap())
    }

    #[test]
    fn classifies_the_ranges_that_matter() {
        let cases = [
            ("203.0.113.7", AddressClass::Public),
            ("8.8.8.8", AddressClass::Public),
            ("100.64.0.1", AddressClass::Cgnat),
            ("100.127.255.254", AddressClass::Cgnat),
            ("100.128.0.1", AddressClass::Public),
            ("100.63.255.255", AddressClass::Public),
            ("10.1.2.3", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("172.32.0.1", AddressClass::Public),
            ("192.168.1.1", AddressClass::Private),
            ("169.254.1.1", AddressClass::LinkLocal),
            ("127.0.0.1", AddressClass::Loopback),
            ("0.0.0.0", AddressClass::Unroutable),
            ("224.0.0.1", AddressClass::Unroutable),
            ("255.255.255.255", AddressClass::Unroutable),
            ("240.0.0.1", AddressClass::Unroutable),
            ("2001:db8::1", AddressClass::Public),
            ("2a00:1450::1", AddressClass::Public),
            ("fd00::1", AddressClass::Private),
            ("fc12::1", AddressClass::Private),
            ("fec0::1", AddressClass::Private),
            ("fe80::1", AddressClass::LinkLocal),
            ("febf::1", AddressClass::LinkLocal),
            ("::1", AddressClass::Loopback),
            ("::", AddressClass::Unroutable),
            ("ff02::1", AddressClass::Unroutable),
            ("::ffff:192.168.0.1", AddressClass::Private),
            ("::ffff:100.64.0.9", AddressClass::Cgnat),
            ("100::1", AddressClass::Unroutable),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn only_public_cgnat_private_are_announceable() {
        let yes: Vec<_> = AddressClass::ALL
            .into_iter()
            .filter(|c| c.is_announceable())
            .collect();
        assert_eq!(
            yes,
            [
                AddressClass::Public,
                AddressClass::Cgnat,
                AddressClass::Private
            ]
        );
        assert!(Candidate::new("[fe80::1]:7447".parse().unwrap(), CandidateKind::Host).is_none());
        let c = Candidate::new("100.64.1.2:7447".parse().unwrap(), CandidateKind::Mapped).unwrap();
        assert_eq!(c.class, AddressClass::Cgnat);
    }

    #[test]
    fn names_round_trip() {
        for c in AddressClass::ALL {
            assert_eq!(c.as_str().parse::<AddressClass>().unwrap(), c);
        }
        for k in CandidateKind::ALL {
            assert_eq!(k.as_str().parse::<CandidateKind>().unwrap(), k);
        }
        let err = "publik".parse::<AddressClass>().unwrap_err().to_string();
        assert!(err.contains("publik") && err.contains("cgnat"), "{err}");
    }
}

/// What the kernel says about an IPv6 address's state (IFA_F_* flags);
/// all false for IPv4.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressFlags {
    /// A privacy (RFC 8981) address: changes often, not announced unless
    /// `ipv6 = "temporary"` or `"all"`.
    pub temporary: bool,
    /// Its preferred lifetime ended: still valid, but not for new
    /// connections, so never announced.
    pub deprecated: bool,
    /// Duplicate address detection is still running: not yet usable, so not
    /// announced until it ends.
    pub tentative: bool,
    /// Duplicate address detection failed: never usable.
    pub dad_failed: bool,
}

/// One address on an interface, as the address watcher sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceAddress {
    /// The local address (IFA_LOCAL; on a point-to-point link such as
    /// ppp0 this is ours, while IFA_ADDRESS is the far end).
    pub ip: IpAddr,
    /// The prefix length.
    pub prefix_len: u8,
    /// Its class, as [`AddressClass::of`] computes it.
    pub class: AddressClass,
    /// Its IPv6 state flags.
    pub flags: AddressFlags,
}

/// The address watcher's view, published on a `watch`: the watched
/// interface, whether it is up, all its addresses, and those that may be
/// announced under the configuration (`publish`, `ipv6`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressSnapshot {
    /// The interface being watched (for `interface = "auto"`, the one the
    /// default route uses now); `None` when there is none.
    pub interface: Option<String>,
    /// Whether the interface exists and is up.
    pub up: bool,
    /// Every address on it.
    pub addresses: Vec<InterfaceAddress>,
    /// The addresses an announcement would carry, best first.
    pub announceable: Vec<InterfaceAddress>,
}
