//! How long an address change takes to become an `AddressChanged` event,
//! beside a bare rtnetlink listener in the same process seeing the same
//! `RTM_NEWADDR` / `RTM_DELADDR`, as a ratio.
//!
//! In a fresh network namespace (so it needs root), on a veth pair, the
//! example adds and deletes addresses on the watched interface with direct
//! rtnetlink requests, one change at a time, and stamps the moment each
//! change is requested, the moment the bare listener reads the kernel's
//! notification, and the moment the watcher's `AddressChanged` arrives
//! (`debounce` = 0, so what is measured is the watcher itself: reading,
//! mirroring, classifying, ordering, publishing).
//!
//! ```sh
//! cargo run --release -p peerd-addr --example latency                   # 200 changes
//! PEERD_HEAVY=1 cargo run --release -p peerd-addr --example latency     # 5000 changes
//! ```
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    missing_docs
)]

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use futures::StreamExt;
use peerd_addr::{AddressEvent, WatcherConfig, WatcherError};
use peerd_config::WatchedInterface;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::{AddressMessageBuilder, MulticastGroup};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const WARM_UP: usize = 20;
const WAIT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("latency: needs root (it makes a network namespace and veth devices)");
        return ExitCode::FAILURE;
    }
    // Before any thread exists, so the runtime's threads share the namespace.
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        eprintln!("latency: unshare(CLONE_NEWNET): {e}");
        return ExitCode::FAILURE;
    }
    for args in [
        "link add veth0 type veth peer name veth1",
        "link set veth1 up",
        "link set veth0 up",
    ] {
        let ok = Command::new("ip")
            .args(args.split_whitespace())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("latency: ip {args} failed");
            return ExitCode::FAILURE;
        }
    }
    let changes = if std::env::var("PEERD_HEAVY").is_ok_and(|v| v == "1") {
        5000
    } else {
        200
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(measure(changes));
    ExitCode::SUCCESS
}

/// The local address of an address notification.
fn local(message: &AddressMessage) -> Option<IpAddr> {
    message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    })
}

async fn measure(changes: usize) {
    // The baseline: a bare listener, stamping each notification as read.
    let (baseline_tx, mut baseline) = mpsc::unbounded_channel::<(bool, IpAddr, Instant)>();
    let (connection, _, mut messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Ipv4Ifaddr]).expect("listener");
    tokio::spawn(connection);
    tokio::spawn(async move {
        while let Some((message, _)) = messages.next().await {
            let at = Instant::now();
            let (added, address) = match &message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) => (true, a),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(a)) => (false, a),
                _ => continue,
            };
            if let Some(ip) = local(address) {
                let _ = baseline_tx.send((added, ip, at));
            }
        }
    });

    // The watcher, with its events stamped as they arrive.
    let token = CancellationToken::new();
    let mut tasks: JoinSet<Result<(), WatcherError>> = JoinSet::new();
    let watcher = peerd_addr::spawn(
        WatcherConfig {
            debounce: Duration::ZERO,
            ..WatcherConfig::for_interface(WatchedInterface::Named("veth0".to_owned()))
        },
        &mut tasks,
        token.clone(),
    );
    let mut events = watcher.events();
    watcher.ready().await.expect("watcher");
    let (watcher_tx, mut changed) = mpsc::unbounded_channel::<(Vec<IpAddr>, Instant)>();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(AddressEvent::AddressChanged { addresses, .. }) => {
                    let at = Instant::now();
                    let ips = addresses.iter().map(|a| a.ip).collect();
                    let _ = watcher_tx.send((ips, at));
                },
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {},
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });

    // The changes: direct rtnetlink requests.
    let (connection, handle, _) = rtnetlink::new_connection().expect("netlink");
    tokio::spawn(connection);
    let index = watcher
        .interfaces()
        .await
        .expect("interfaces")
        .into_iter()
        .find(|i| i.name == "veth0")
        .expect("veth0")
        .index;

    let mut bare = Vec::with_capacity(changes);
    let mut event = Vec::with_capacity(changes);
    for i in 0..changes + WARM_UP {
        let n = i / 2;
        let ip = Ipv4Addr::new(10, 77, (n / 250) as u8, (n % 250 + 1) as u8);
        let add = i % 2 == 0;
        let started = Instant::now();
        if add {
            handle
                .address()
                .add(index, ip.into(), 32)
                .execute()
                .await
                .expect("add");
        } else {
            let message = AddressMessageBuilder::<Ipv4Addr>::new()
                .index(index)
                .address(ip, 32)
                .build();
            handle.address().del(message).execute().await.expect("del");
        }
        let seen = loop {
            let (added, got, at) = timeout(WAIT, baseline.recv())
                .await
                .expect("the bare listener saw nothing")
                .expect("listener gone");
            if added == add && got == IpAddr::V4(ip) {
                break at;
            }
        };
        let announced = loop {
            let (ips, at) = timeout(WAIT, changed.recv())
                .await
                .expect("no AddressChanged")
                .expect("watcher gone");
            if ips.contains(&IpAddr::V4(ip)) == add {
                break at;
            }
        };
        if i >= WARM_UP {
            bare.push(seen.duration_since(started));
            event.push(announced.duration_since(started));
        }
    }
    token.cancel();
    while tasks.join_next().await.is_some() {}

    let overhead: Vec<Duration> = event
        .iter()
        .zip(&bare)
        .map(|(e, b)| e.saturating_sub(*b))
        .collect();
    let (bm, bp) = stats(&mut bare.clone());
    let (em, ep) = stats(&mut event.clone());
    let (om, op) = stats(&mut overhead.clone());
    println!();
    println!(
        "{changes} address changes (add/delete /32 on a veth, in a fresh network namespace), \
         debounce 0, after {WARM_UP} warm-up changes; times from the rtnetlink request"
    );
    println!();
    println!("| path | median | p90 |");
    println!("|---|---:|---:|");
    println!(
        "| bare rtnetlink listener: RTM_NEWADDR/DELADDR read | {} | {} |",
        us(bm),
        us(bp)
    );
    println!(
        "| peerd-addr: AddressChanged received | {} | {} |",
        us(em),
        us(ep)
    );
    println!(
        "| difference per change (event - bare) | {} | {} |",
        us(om),
        us(op)
    );
    println!();
    println!(
        "ratio event / bare: {:.2}x median, {:.2}x p90",
        em.as_secs_f64() / bm.as_secs_f64(),
        ep.as_secs_f64() / bp.as_secs_f64()
    );
    println!();
    println!("reproduce (as root): cargo run --release -p peerd-addr --example latency");
}

/// Median and 90th percentile.
fn stats(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |percent: usize| samples[(samples.len() - 1) * percent / 100];
    (at(50), at(90))
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}
