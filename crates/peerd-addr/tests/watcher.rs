//! The address watcher against the real kernel: each test in a fresh
//! network namespace with veth pairs and tun devices (this kernel has no
//! dummy interfaces and no PPP; a tun device with `local peer remote`
//! addressing looks to netlink exactly like ppp0).

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use peerd_addr::{AddressEvent, ResyncReason, WatcherConfig};
use peerd_config::{Family, Ipv6Policy};
use peerd_core::AddressClass;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::AddressAttribute;
use support::{Harness, config, in_netns, ip, ips, sysctl, veth};

fn changed(interface: &str, addresses: &[&str]) -> (Option<String>, Vec<String>) {
    (
        Some(interface.to_owned()),
        addresses.iter().map(|s| (*s).to_owned()).collect(),
    )
}

/// The event as (interface, addresses) for comparing with [`changed`].
fn as_changed(event: &AddressEvent) -> Option<(Option<String>, Vec<String>)> {
    match event {
        AddressEvent::AddressChanged {
            interface,
            addresses,
        } => Some((interface.clone(), ips(addresses))),
        _ => None,
    }
}

fn interface_changed(from: Option<&str>, to: Option<&str>) -> AddressEvent {
    AddressEvent::InterfaceChanged {
        from: from.map(str::to_owned),
        to: to.map(str::to_owned),
    }
}

#[test]
fn ipv4_addresses_added_replaced_and_deleted() {
    in_netns(|| async {
        veth("veth0", "veth1").await;
        let mut w = Harness::start(config("veth0", 100)).await;
        let s = w.handle.snapshot();
        assert_eq!(s.interface.as_deref(), Some("veth0"));
        assert!(s.up && s.announceable.is_empty(), "{s:?}");

        ip("addr add 192.0.2.10/24 dev veth0").await;
        let (events, _) = w.until_address_changed().await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            as_changed(&events[0]),
            Some(changed("veth0", &["192.0.2.10"]))
        );
        let s = w.handle.snapshot();
        assert_eq!(s.announceable.len(), 1);
        assert_eq!(s.announceable[0].class, AddressClass::Public);
        assert_eq!(s.announceable[0].prefix_len, 24);

        // A new lease: the old address goes, the new one comes, inside one
        // debounce: one event, never the empty set in between.
        ip("addr del 192.0.2.10/24 dev veth0").await;
        ip("addr add 198.51.100.7/24 dev veth0").await;
        let (events, addresses) = w.until_address_changed().await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(addresses, ["198.51.100.7"]);

        // `ip addr replace` with new lifetimes: same set, no event.
        ip("addr replace 198.51.100.7/24 dev veth0 valid_lft 600 preferred_lft 600").await;
        w.barrier().await;
        w.no_event_within(Duration::from_millis(300)).await;

        // More classes, best first: public, cgnat, private.
        ip("addr add 10.0.0.2/24 dev veth0").await;
        ip("addr add 100.64.0.9/10 dev veth0").await;
        assert_eq!(
            w.address_changed().await,
            ["198.51.100.7", "100.64.0.9", "10.0.0.2"]
        );

        for a in ["198.51.100.7/24", "10.0.0.2/24", "100.64.0.9/10"] {
            ip(&format!("addr del {a} dev veth0")).await;
        }
        assert!(w.address_changed().await.is_empty());
        assert!(w.handle.snapshot().announceable.is_empty());
        w.stop().await;
    });
}

#[test]
fn ipv6_addresses_added_deprecated_and_deleted() {
    in_netns(|| async {
        veth("veth0", "veth1").await;
        let mut w = Harness::start(config("veth0", 100)).await;

        ip("-6 addr add 2001:db8:1::10/64 dev veth0 nodad").await;
        assert_eq!(w.address_changed().await, ["2001:db8:1::10"]);
        ip("-6 addr add fd00:1::10/64 dev veth0 nodad").await;
        assert_eq!(w.address_changed().await, ["2001:db8:1::10", "fd00:1::10"]);

        // Renumbering: the old prefix is deprecated (preferred lifetime 0),
        // then a new one comes: a deprecated address is never announced.
        ip("-6 addr replace 2001:db8:1::10/64 dev veth0 nodad preferred_lft 0").await;
        assert_eq!(w.address_changed().await, ["fd00:1::10"]);
        let s = w.handle.snapshot();
        let old = s
            .addresses
            .iter()
            .find(|a| a.ip.to_string() == "2001:db8:1::10")
            .expect("still on the interface");
        assert!(old.flags.deprecated, "{old:?}");
        ip("-6 addr add 2001:db8:2::10/64 dev veth0 nodad").await;
        assert_eq!(w.address_changed().await, ["2001:db8:2::10", "fd00:1::10"]);

        // Deleting the deprecated one changes nothing announceable.
        ip("-6 addr del 2001:db8:1::10/64 dev veth0").await;
        w.barrier().await;
        w.no_event_within(Duration::from_millis(300)).await;

        ip("-6 addr del fd00:1::10/64 dev veth0").await;
        assert_eq!(w.address_changed().await, ["2001:db8:2::10"]);

        // The link-local address is there, and never announced.
        let s = w
            .snapshot_where("a usable link-local address", |s| {
                s.addresses
                    .iter()
                    .any(|a| a.class == AddressClass::LinkLocal && !a.flags.tentative)
            })
            .await;
        assert_eq!(ips(&s.announceable), ["2001:db8:2::10"]);
        w.stop().await;
    });
}

#[test]
fn tentative_address_is_announced_only_after_dad() {
    in_netns(|| async {
        veth("veth0", "veth1").await;
        let mut w = Harness::start(config("veth0", 50)).await;
        let added = Instant::now();
        ip("-6 addr add 2001:db8:5::1/64 dev veth0").await;
        // First seen tentative: on the interface, not announceable.
        let s = w
            .snapshot_where("the tentative address", |s| {
                s.addresses
                    .iter()
                    .any(|a| a.ip.to_string() == "2001:db8:5::1")
            })
            .await;
        let a = s
            .addresses
            .iter()
            .find(|a| a.ip.to_string() == "2001:db8:5::1");
        assert!(a.is_some_and(|a| a.flags.tentative), "{s:?}");
        assert!(s.announceable.is_empty(), "{s:?}");
        // DAD ends (an RTM_NEWADDR without the flag): now it is announced.
        let (events, addresses) = w.until_address_changed().await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(addresses, ["2001:db8:5::1"]);
        let s = w.handle.snapshot();
        assert!(!s.announceable[0].flags.tentative);
        eprintln!("DAD took {:?}", added.elapsed());

        // An address whose DAD fails (veth1 already has it) never is.
        ip("-6 addr add 2001:db8:6::1/64 dev veth1 nodad").await;
        ip("-6 addr add 2001:db8:6::1/64 dev veth0").await;
        let s = w
            .snapshot_where("DAD to fail", |s| {
                s.addresses
                    .iter()
                    .any(|a| a.ip.to_string() == "2001:db8:6::1" && a.flags.dad_failed)
            })
            .await;
        assert_eq!(ips(&s.announceable), ["2001:db8:5::1"]);
        w.barrier().await;
        w.no_event_within(Duration::from_millis(200)).await;
        w.stop().await;
    });
}

#[test]
fn point_to_point_link_announces_the_local_end() {
    in_netns(|| async {
        // Watch ppp0 before it exists, as peerd does before dialling.
        let mut w = Harness::start(config("ppp0", 50)).await;
        let s = w.handle.snapshot();
        assert_eq!(s.interface.as_deref(), Some("ppp0"));
        assert!(!s.up && s.addresses.is_empty(), "{s:?}");

        // What pppd's kernel side does: create the interface, give it the
        // negotiated pair of addresses, bring it up.
        ip("tuntap add name ppp0 mode tun").await;
        match w.next_event().await {
            AddressEvent::InterfaceAppeared { interface, .. } => assert_eq!(interface, "ppp0"),
            other => panic!("expected InterfaceAppeared, got {other:?}"),
        }
        ip("addr add 10.64.0.2 peer 10.64.0.1 dev ppp0").await;
        ip("addr add 203.0.113.2 peer 203.0.113.1 dev ppp0").await;
        ip("link set ppp0 up").await;
        assert_eq!(w.address_changed().await, ["203.0.113.2", "10.64.0.2"]);
        let s = w.handle.snapshot();
        assert!(s.up);
        // The remote ends (IFA_ADDRESS) appear nowhere.
        assert_eq!(ips(&s.addresses), ["203.0.113.2", "10.64.0.2"]);
        let info = w.handle.interfaces().await.expect("interfaces");
        let ppp0 = info.iter().find(|i| i.name == "ppp0").expect("ppp0");
        assert!(ppp0.point_to_point && ppp0.up);
        w.stop().await;
    });
}

#[test]
fn link_down_and_up() {
    in_netns(|| async {
        veth("veth0", "veth1").await;
        ip("addr add 192.0.2.10/24 dev veth0").await;
        let mut w = Harness::start(config("veth0", 50)).await;
        assert_eq!(ips(&w.handle.snapshot().announceable), ["192.0.2.10"]);

        ip("link set veth0 down").await;
        assert!(w.address_changed().await.is_empty());
        let s = w.handle.snapshot();
        assert!(!s.up, "{s:?}");
        // IPv4 addresses stay on a down interface; they are just not usable.
        assert_eq!(ips(&s.addresses), ["192.0.2.10"]);

        ip("link set veth0 up").await;
        assert_eq!(w.address_changed().await, ["192.0.2.10"]);
        assert!(w.handle.snapshot().up);
        w.stop().await;
    });
}

#[test]
fn watched_interface_deleted_and_created_again() {
    in_netns(|| async {
        ip("tuntap add name ppp0 mode tun").await;
        ip("addr add 10.64.0.2 peer 10.64.0.1 dev ppp0").await;
        ip("link set ppp0 up").await;
        let mut w = Harness::start(config("ppp0", 50)).await;
        assert_eq!(ips(&w.handle.snapshot().announceable), ["10.64.0.2"]);
        let first = w.handle.interfaces().await.expect("interfaces");
        let first = first.iter().find(|i| i.name == "ppp0").expect("ppp0").index;

        // The link drops: pppd removes ppp0.
        ip("link del ppp0").await;
        let (events, addresses) = w.until_address_changed().await;
        assert_eq!(
            events[0],
            AddressEvent::InterfaceGone {
                interface: "ppp0".to_owned(),
                index: first
            }
        );
        assert!(addresses.is_empty());
        let s = w.handle.snapshot();
        assert!(!s.up && s.addresses.is_empty(), "{s:?}");

        // It comes back with another index and another address, and is
        // followed without a restart.
        ip("tuntap add name ppp0 mode tun").await;
        ip("addr add 10.64.0.6 peer 10.64.0.1 dev ppp0").await;
        ip("link set ppp0 up").await;
        let (events, addresses) = w.until_address_changed().await;
        match &events[0] {
            AddressEvent::InterfaceAppeared { interface, index } => {
                assert_eq!(interface, "ppp0");
                assert_ne!(*index, first);
            },
            other => panic!("expected InterfaceAppeared, got {other:?}"),
        }
        assert_eq!(addresses, ["10.64.0.6"]);
        w.stop().await;
    });
}

#[test]
fn flapping_twenty_times_gives_one_event_after_the_debounce() {
    in_netns(|| async {
        veth("veth0", "veth1").await;
        ip("addr add 192.0.2.10/24 dev veth0").await;
        let debounce = Duration::from_millis(300);
        let mut w = Harness::start(WatcherConfig {
            debounce,
            ..config("veth0", 0)
        })
        .await;

        // Twenty flaps that end where they began: nothing to announce.
        let started = Instant::now();
        for _ in 0..20 {
            ip("addr add 192.0.2.20/24 dev veth0").await;
            ip("addr del 192.0.2.20/24 dev veth0").await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let flapped = started.elapsed();
        w.barrier().await;
        w.no_event_within(debounce * 2).await;

        // Twenty flaps that end with the address added: exactly one event,
        // a debounce after the last change.
        let started = Instant::now();
        for _ in 0..20 {
            ip("addr add 192.0.2.20/24 dev veth0").await;
            ip("addr del 192.0.2.20/24 dev veth0").await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ip("addr add 192.0.2.20/24 dev veth0").await;
        let last = Instant::now();
        eprintln!(
            "flapping took {flapped:?} and {:?}",
            last.duration_since(started)
        );
        let (events, addresses) = w.until_address_changed().await;
        let waited = last.elapsed();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(addresses, ["192.0.2.10", "192.0.2.20"]);
        // The kernel notifies before `ip` returns, so allow a little slack.
        assert!(
            waited >= debounce - Duration::from_millis(50),
            "the event came {waited:?} after the last change, before the debounce"
        );
        w.barrier().await;
        w.no_event_within(debounce * 2).await;
        w.stop().await;
    });
}

#[test]
fn zero_debounce_reports_every_change_at_once() {
    in_netns(|| async {
        veth("veth0", "veth1").await;
        let mut w = Harness::start(config("veth0", 0)).await;
        ip("addr add 192.0.2.10/24 dev veth0").await;
        ip("addr del 192.0.2.10/24 dev veth0").await;
        ip("addr add 192.0.2.11/24 dev veth0").await;
        assert_eq!(w.address_changed().await, ["192.0.2.10"]);
        assert!(w.address_changed().await.is_empty());
        assert_eq!(w.address_changed().await, ["192.0.2.11"]);
        w.barrier().await;
        w.no_event_within(Duration::from_millis(100)).await;
        w.stop().await;
    });
}

#[test]
fn auto_follows_the_default_route() {
    in_netns(|| async {
        veth("a0", "a1").await;
        veth("b0", "b1").await;
        ip("addr add 10.1.0.2/24 dev a0").await;
        ip("addr add 198.51.100.2/24 dev b0").await;
        let mut w = Harness::start(config("auto", 50)).await;
        let s = w.handle.snapshot();
        assert_eq!(s.interface, None);
        assert!(s.announceable.is_empty());

        ip("route add default via 10.1.0.1 dev a0 metric 100").await;
        let (events, addresses) = w.until_address_changed().await;
        assert_eq!(events[0], interface_changed(None, Some("a0")));
        assert_eq!(addresses, ["10.1.0.2"]);

        // A better (lower metric) default route through b0.
        ip("route add default via 198.51.100.1 dev b0 metric 50").await;
        let (events, addresses) = w.until_address_changed().await;
        assert_eq!(events[0], interface_changed(Some("a0"), Some("b0")));
        assert_eq!(
            as_changed(events.last().unwrap()).unwrap().0.as_deref(),
            Some("b0")
        );
        assert_eq!(addresses, ["198.51.100.2"]);

        ip("route del default via 198.51.100.1 dev b0 metric 50").await;
        let (events, addresses) = w.until_address_changed().await;
        assert_eq!(events[0], interface_changed(Some("b0"), Some("a0")));
        assert_eq!(addresses, ["10.1.0.2"]);

        // Replaced in place: the kernel says "new route, NLM_F_REPLACE" and
        // nothing about the old one.
        ip("route replace default via 198.51.100.1 dev b0 metric 100").await;
        let (events, addresses) = w.until_address_changed().await;
        assert_eq!(events[0], interface_changed(Some("a0"), Some("b0")));
        assert_eq!(addresses, ["198.51.100.2"]);

        // b0 loses its address: the kernel drops the route through it
        // without an RTM_DELROUTE. No default route is left.
        ip("addr del 198.51.100.2/24 dev b0").await;
        let (events, addresses) = w.until_address_changed().await;
        assert_eq!(events[0], interface_changed(Some("b0"), None));
        assert!(addresses.is_empty());
        assert_eq!(w.handle.snapshot().interface, None);

        // An IPv6 default route counts too (families has both).
        ip("-6 addr add 2001:db8:a::2/64 dev a0 nodad").await;
        ip("-6 route add default via 2001:db8:a::1 dev a0").await;
        let (events, addresses) = w.until_address_changed().await;
        assert_eq!(events[0], interface_changed(None, Some("a0")));
        assert_eq!(addresses, ["2001:db8:a::2", "10.1.0.2"]);

        // The interface with the route is deleted. (The kernel reports the
        // IPv6 route's deletion before the link's, so the route moved away
        // first and InterfaceGone may not be sent: the interface was no
        // longer followed when it went.)
        ip("link del a0").await;
        let (events, addresses) = w.until_address_changed().await;
        assert!(
            events.contains(&interface_changed(Some("a0"), None)),
            "{events:?}"
        );
        assert!(addresses.is_empty());
        w.stop().await;
    });
}

#[test]
fn auto_follows_only_the_configured_families() {
    in_netns(|| async {
        veth("a0", "a1").await;
        veth("b0", "b1").await;
        ip("addr add 10.1.0.2/24 dev a0").await;
        ip("-6 addr add 2001:db8:b::2/64 dev b0 nodad").await;
        ip("addr add 10.2.0.2/24 dev b0").await;
        ip("route add default via 10.1.0.1 dev a0").await;
        let mut w = Harness::start(WatcherConfig {
            families: vec![Family::Ipv6],
            ..config("auto", 50)
        })
        .await;
        // The IPv4 default route does not count.
        assert_eq!(w.handle.snapshot().interface, None);
        ip("-6 route add default via 2001:db8:b::1 dev b0 metric 2000").await;
        let (events, addresses) = w.until_address_changed().await;
        assert_eq!(events[0], interface_changed(None, Some("b0")));
        // ... and neither do IPv4 addresses.
        assert_eq!(addresses, ["2001:db8:b::2"]);
        w.stop().await;
    });
}

#[test]
fn publish_and_ipv6_policies() {
    in_netns(|| async {
        ip("link add veth0 type veth peer name veth1").await;
        // Privacy addresses from the mngtmpaddr address below; no DAD, so
        // they are usable at once.
        sysctl("net.ipv6.conf.veth0.use_tempaddr", "2");
        sysctl("net.ipv6.conf.veth0.accept_dad", "0");
        ip("link set veth1 up").await;
        ip("link set veth0 up").await;
        for a in ["192.0.2.10/24", "100.64.0.9/10", "10.0.0.2/24"] {
            ip(&format!("addr add {a} dev veth0")).await;
        }
        ip("-6 addr add fd00::2/64 dev veth0 nodad").await;
        ip("-6 addr add 2001:db8:1::1/64 dev veth0 mngtmpaddr nodad").await;

        let stable = Harness::start(config("veth0", 50)).await;
        let s = stable
            .snapshot_where("a temporary address", |s| {
                s.addresses
                    .iter()
                    .any(|a| a.flags.temporary && !a.flags.tentative)
            })
            .await;
        let temp = s
            .addresses
            .iter()
            .find(|a| a.flags.temporary)
            .map(|a| a.ip.to_string())
            .expect("temporary");
        assert!(temp.starts_with("2001:db8:1:0:"), "{temp}");
        assert_eq!(
            ips(&s.announceable),
            [
                "2001:db8:1::1",
                "192.0.2.10",
                "100.64.0.9",
                "fd00::2",
                "10.0.0.2"
            ]
        );

        let cases: [(WatcherConfig, Vec<&str>); 4] = [
            (
                WatcherConfig {
                    ipv6: Ipv6Policy::Temporary,
                    ..config("veth0", 50)
                },
                vec![&temp, "192.0.2.10", "100.64.0.9", "10.0.0.2"],
            ),
            (
                WatcherConfig {
                    ipv6: Ipv6Policy::All,
                    ..config("veth0", 50)
                },
                vec![
                    "2001:db8:1::1",
                    &temp,
                    "192.0.2.10",
                    "100.64.0.9",
                    "fd00::2",
                    "10.0.0.2",
                ],
            ),
            (
                WatcherConfig {
                    publish: vec![AddressClass::Public],
                    ..config("veth0", 50)
                },
                vec!["2001:db8:1::1", "192.0.2.10"],
            ),
            (
                WatcherConfig {
                    families: vec![Family::Ipv4],
                    publish: vec![AddressClass::Cgnat, AddressClass::Private],
                    ..config("veth0", 50)
                },
                vec!["100.64.0.9", "10.0.0.2"],
            ),
        ];
        for (config, want) in cases {
            let w = Harness::start(config.clone()).await;
            assert_eq!(ips(&w.handle.snapshot().announceable), want, "{config:?}");
            w.stop().await;
        }

        // Whatever `publish` says, link-local addresses stay out.
        let w = Harness::start(WatcherConfig {
            publish: AddressClass::ALL.to_vec(),
            ipv6: Ipv6Policy::All,
            ..config("veth0", 50)
        })
        .await;
        let s = w.handle.snapshot();
        assert!(
            s.addresses
                .iter()
                .any(|a| a.class == AddressClass::LinkLocal),
            "{s:?}"
        );
        assert!(
            s.announceable.iter().all(|a| a.class.is_announceable()),
            "{s:?}"
        );
        w.stop().await;
        stable.stop().await;
    });
}

#[test]
fn loopback_and_link_local_are_never_announced() {
    in_netns(|| async {
        let mut w = Harness::start(config("lo", 50)).await;
        ip("link set lo up").await;
        let s = w
            .snapshot_where("127.0.0.1 and ::1", |s| {
                let have = ips(&s.addresses);
                s.up && have.contains(&"127.0.0.1".to_owned()) && have.contains(&"::1".to_owned())
            })
            .await;
        assert!(s.announceable.is_empty(), "{s:?}");
        ip("addr add 169.254.7.7/32 dev lo").await;
        ip("addr add 10.200.0.1/32 dev lo").await;
        assert_eq!(w.address_changed().await, ["10.200.0.1"]);
        let s = w.handle.snapshot();
        assert_eq!(s.addresses.len(), 4, "{s:?}");
        w.stop().await;
    });
}

/// Counts the RTM_NEWADDR notifications for `ip` that a bare rtnetlink
/// listener sees, to prove a test's "no event" follows real notifications.
struct NewAddrCounter {
    messages: futures::channel::mpsc::UnboundedReceiver<(
        rtnetlink::packet_core::NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
    _connection: tokio::task::JoinHandle<()>,
}

impl NewAddrCounter {
    fn start() -> Self {
        let (connection, _, messages) = rtnetlink::new_multicast_connection(&[
            rtnetlink::MulticastGroup::Ipv4Ifaddr,
            rtnetlink::MulticastGroup::Ipv6Ifaddr,
        ])
        .expect("netlink listener");
        Self {
            messages,
            _connection: tokio::spawn(connection),
        }
    }

    /// How many RTM_NEWADDR for each of `ips` arrived so far.
    fn counts(&mut self, ips: &[IpAddr]) -> Vec<usize> {
        let mut n = vec![0; ips.len()];
        while let Ok((message, _)) = self.messages.try_recv() {
            let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) = message.payload
            else {
                continue;
            };
            for (i, ip) in ips.iter().enumerate() {
                if a.attributes.iter().any(|attr| {
                    matches!(attr, AddressAttribute::Local(x) | AddressAttribute::Address(x) if x == ip)
                }) {
                    n[i] += 1;
                }
            }
        }
        n
    }
}

#[test]
fn repeated_notifications_and_lifetime_refreshes_give_no_event() {
    in_netns(|| async {
        veth("veth0", "veth1").await;
        ip("addr add 192.0.2.10/24 dev veth0").await;
        ip("-6 addr add 2001:db8::10/64 dev veth0 nodad").await;
        let mut w = Harness::start(config("veth0", 100)).await;
        let before = w.handle.snapshot();
        assert_eq!(ips(&before.announceable), ["2001:db8::10", "192.0.2.10"]);
        let mut counter = NewAddrCounter::start();

        ip("addr change 192.0.2.10/24 dev veth0").await;
        ip("addr change 192.0.2.10/24 dev veth0").await;
        ip("addr replace 192.0.2.10/24 dev veth0 valid_lft 600 preferred_lft 600").await;
        ip("-6 addr change 2001:db8::10/64 dev veth0 nodad").await;
        ip("-6 addr change 2001:db8::10/64 dev veth0 nodad valid_lft 900 preferred_lft 800").await;
        w.barrier().await;
        w.no_event_within(Duration::from_millis(300)).await;
        // The kernel did send them: 3 for IPv4, 2 for IPv6.
        let n = counter.counts(&[
            "192.0.2.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ]);
        assert!(n[0] >= 3 && n[1] >= 2, "RTM_NEWADDR seen: {n:?}");
        assert_eq!(w.handle.snapshot().announceable, before.announceable);

        // A requested re-read is reported, and changes nothing.
        w.handle.resync().await.expect("resync");
        assert_eq!(
            w.next_event().await,
            AddressEvent::Resynced {
                reason: ResyncReason::Requested
            }
        );
        w.no_event_within(Duration::from_millis(300)).await;
        w.stop().await;
    });
}

#[test]
fn overrun_is_survived_by_reading_everything_again() {
    in_netns(|| async {
        veth("veth0", "veth1").await;
        // A tiny socket buffer, and a runtime blocked while the kernel
        // sends hundreds of notifications: the kernel must drop some
        // (ENOBUFS).
        let mut w = Harness::start(WatcherConfig {
            receive_buffer: 4096,
            ..config("veth0", 50)
        })
        .await;
        let n = 300;
        let batch: String = (0..n)
            .map(|i| format!("addr add 10.9.{}.{}/32 dev veth0\n", i / 200, i % 200 + 1))
            .collect();
        let path = std::env::temp_dir().join(format!("peerd-addr-overrun-{}", std::process::id()));
        std::fs::write(&path, batch).expect("write the batch");
        // Blocking on purpose: the watcher cannot read meanwhile.
        let status = std::process::Command::new("ip")
            .arg("-batch")
            .arg(&path)
            .status()
            .expect("ip -batch");
        let _ = std::fs::remove_file(&path);
        assert!(status.success());

        let mut resynced = false;
        let last = loop {
            match w.next_event().await {
                AddressEvent::Resynced { reason } => {
                    assert_eq!(reason, ResyncReason::Overrun);
                    resynced = true;
                },
                AddressEvent::AddressChanged { addresses, .. }
                    if resynced && addresses.len() == n =>
                {
                    break addresses;
                },
                _ => {},
            }
        };
        assert!(last.iter().all(|a| a.class == AddressClass::Private));
        assert_eq!(w.handle.snapshot().announceable.len(), n);
        w.stop().await;
    });
}
