//! The link manager fed by the real address watcher (peerd-addr, over
//! rtnetlink) instead of the tests' `ip` poller, as the daemon wires them:
//! the pppd stand-in brings ppp0 up with `LOCAL peer REMOTE`, the watcher
//! announces IFA_LOCAL, and the link is up; the link drops (ppp0 goes
//! away), is redialled and comes back with another address. In a fresh
//! network namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::time::Instant;

use common::{Plan, fast_tuning, in_netns, is_up_on, link_config, wait_event, wait_state};
use peerd_addr::{WatcherConfig, WatcherError};
use peerd_config::{LinkDriver, WatchedInterface};
use peerd_link::{LinkError, LinkEvent, LinkState, spawn_tuned};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The supervisor's error type, as the daemon would have one.
#[derive(Debug)]
#[allow(dead_code)] // read through Debug when a task fails
enum ActorError {
    Link(LinkError),
    Watcher(WatcherError),
}

impl From<LinkError> for ActorError {
    fn from(e: LinkError) -> Self {
        Self::Link(e)
    }
}

impl From<WatcherError> for ActorError {
    fn from(e: WatcherError) -> Self {
        Self::Watcher(e)
    }
}

fn announced(snapshot: &peerd_core::AddressSnapshot) -> Vec<IpAddr> {
    snapshot.announceable.iter().map(|a| a.ip).collect()
}

#[test]
fn the_real_watcher_brings_the_link_up_with_the_local_address() {
    in_netns(|| async {
        let plan = Plan::new(&[
            "up 100.64.7.2 100.64.0.1 drop 16 500",
            "up 100.64.7.3 100.64.0.1",
        ]);
        let mut tasks: JoinSet<Result<(), ActorError>> = JoinSet::new();
        let token = CancellationToken::new();
        let watcher = peerd_addr::spawn(
            WatcherConfig::for_interface(WatchedInterface::Named("ppp0".to_owned())),
            &mut tasks,
            token.clone(),
        );
        watcher.ready().await.unwrap();
        let link = spawn_tuned(
            link_config(LinkDriver::Pppd, &plan.program()),
            watcher.watch(),
            fast_tuning(),
            &mut tasks,
            token.clone(),
        );
        let mut events = link.events();
        let mut state = link.watch();
        let t = Instant::now();
        wait_state(&mut state, "Up on ppp0", 10, |s| is_up_on(s, "ppp0")).await;
        eprintln!("stand-in start -> rtnetlink -> Up: {:?}", t.elapsed());
        let ours: IpAddr = "100.64.7.2".parse().unwrap();
        assert_eq!(
            announced(&watcher.snapshot()),
            [ours],
            "IFA_LOCAL, not the peer"
        );

        let reason = wait_event(&mut events, "the drop", 10, |e| match e {
            LinkEvent::Failed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await;
        assert!(reason.to_string().contains("modem hangup"), "{reason}");
        wait_event(&mut events, "Up again", 10, |e| {
            matches!(e, LinkEvent::Up { .. }).then_some(())
        })
        .await;
        let again: IpAddr = "100.64.7.3".parse().unwrap();
        assert_eq!(announced(&watcher.snapshot()), [again]);
        assert_eq!(plan.runs(), 2);

        token.cancel();
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap().unwrap();
        }
        assert_eq!(link.state(), LinkState::Down);
        assert!(
            plan.has(2, "term") && plan.has(2, "exit 5"),
            "{:?}",
            plan.log()
        );
    });
}
