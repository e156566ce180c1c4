//! The pppd driver's link-up path with the stand-in for pppd's kernel side
//! (`examples/pppd_standin.rs`; this kernel has no PPP), each test in a
//! fresh network namespace: up, hang-up on request, exit statuses as
//! reasons, redial with backoff, `max_failures`, a dropped link, on-demand
//! leases and the idle timer, the mail check, the connect timeout, SIGKILL
//! after the grace time, and the shutdown token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{
    Plan, Rig, fast_tuning, in_netns, interface_exists, is_up_on, link_config, reaped, wait_event,
    wait_state,
};
use peerd_config::LinkDriver;
use peerd_link::{FailureReason, LinkError, LinkEvent, LinkState, PppdExitCode, Tuning};

#[test]
fn comes_up_hangs_up_on_request_and_stays_down() {
    in_netns(|| async {
        let plan = Plan::new(&["up 10.64.0.2 10.64.0.1"]);
        let rig = Rig::start(
            link_config(LinkDriver::Pppd, &plan.program()),
            fast_tuning(),
        );
        let link = &rig.link;
        let mut events = link.events();
        let mut state = link.watch();
        let started = Instant::now();
        wait_state(&mut state, "Up on ppp0", 10, |s| is_up_on(s, "ppp0")).await;
        eprintln!("pppd stand-in to Up: {:?}", started.elapsed());
        assert_eq!(link.next_check(), None, "a link kept up has no checks");
        assert_eq!(
            events.recv().await.unwrap(),
            LinkEvent::Dialing { failures: 0 }
        );
        assert_eq!(
            events.recv().await.unwrap(),
            LinkEvent::Up {
                interface: "ppp0".into()
            }
        );
        assert_eq!(
            plan.args(1),
            [
                "call",
                "isp-test",
                "nodetach",
                "ipparam",
                "peerd",
                "linkname",
                "peerd-isp-test",
                "nopersist",
                "ifname",
                "ppp0"
            ]
        );
        let pid = plan.pid(1);

        let t = Instant::now();
        link.down().await.unwrap();
        eprintln!("down() took {:?}", t.elapsed());
        assert_eq!(link.state(), LinkState::Down);
        assert!(plan.has(1, "term"), "SIGTERM delivered: {:?}", plan.log());
        assert!(plan.has(1, "removed ppp0"), "{:?}", plan.log());
        assert!(
            plan.has(1, "exit 5"),
            "pppd's status on SIGTERM: {:?}",
            plan.log()
        );
        assert!(reaped(pid), "pppd {pid} reaped");
        assert!(!interface_exists("ppp0"));
        assert_eq!(events.recv().await.unwrap(), LinkEvent::Down);

        // held down: no redial, and leases are refused
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(plan.runs(), 1);
        assert_eq!(link.state(), LinkState::Down);
        assert_eq!(link.acquire().await.unwrap_err(), LinkError::HeldDown);

        // up() dials again and returns once the address is there
        link.up().await.unwrap();
        assert!(is_up_on(&link.state(), "ppp0"));
        assert_eq!(plan.runs(), 2);
        rig.shut_down().await;
        assert!(
            plan.has(2, "term") && plan.has(2, "exit 5"),
            "{:?}",
            plan.log()
        );
    });
}

#[test]
fn exit_statuses_become_reasons_and_redials_back_off() {
    in_netns(|| async {
        let plan = Plan::new(&[
            "fail 16 Modem hangup",
            "fail 19 CHAP authentication failed",
            "fail 10 LCP: timeout sending Config-Requests",
            "up 10.64.0.2 10.64.0.1",
        ]);
        let mut config = link_config(LinkDriver::Pppd, &plan.program());
        config.max_failures = 0; // never give up
        let tuning = fast_tuning();
        let backoff = tuning.backoff;
        let rig = Rig::start(config, tuning);
        let mut events = rig.link.events();
        let mut dialled = Vec::new();
        let mut reasons = Vec::new();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("an event within 10 s")
                .unwrap();
            match event {
                LinkEvent::Dialing { failures } => dialled.push((failures, Instant::now())),
                LinkEvent::Failed {
                    reason,
                    failures,
                    retry_at,
                } => {
                    assert!(retry_at.is_some(), "max_failures = 0 never gives up");
                    assert_eq!(failures as usize, reasons.len() + 1);
                    reasons.push(reason);
                },
                LinkEvent::Up { .. } => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        let codes: Vec<_> = reasons
            .iter()
            .map(|r| match r {
                FailureReason::Pppd { code, .. } => *code,
                other => panic!("not a pppd exit: {other:?}"),
            })
            .collect();
        assert_eq!(
            codes,
            [
                PppdExitCode::Hangup,
                PppdExitCode::AuthToPeerFailed,
                PppdExitCode::NegotiationFailed
            ]
        );
        let texts: Vec<String> = reasons.iter().map(ToString::to_string).collect();
        assert!(
            texts[0].contains("status 16 (modem hangup)"),
            "{}",
            texts[0]
        );
        assert!(
            texts[0].ends_with(": Modem hangup"),
            "pppd's last line: {}",
            texts[0]
        );
        assert!(
            texts[1].contains("status 19 (authentication failed"),
            "{}",
            texts[1]
        );
        assert!(texts[2].contains("negotiation failed"), "{}", texts[2]);

        // the waits between attempts follow the backoff (with jitter)
        let failures: Vec<u32> = dialled.iter().map(|(f, _)| *f).collect();
        assert_eq!(failures, [0, 1, 2, 3]);
        for (n, pair) in dialled.windows(2).enumerate() {
            let gap = pair[1].1 - pair[0].1;
            let ceiling = backoff.ceiling(u32::try_from(n).unwrap() + 1);
            eprintln!("redial {}: {gap:?} (ceiling {ceiling:?})", n + 1);
            assert!(
                gap >= ceiling / 2,
                "redial {} after {gap:?} < {:?}",
                n + 1,
                ceiling / 2
            );
            assert!(
                gap <= ceiling + Duration::from_millis(400),
                "redial {} after {gap:?}, ceiling {ceiling:?}",
                n + 1
            );
        }
        assert!(is_up_on(&rig.link.state(), "ppp0"));
        rig.shut_down().await;
    });
}

#[test]
fn gives_up_after_max_failures_until_up() {
    in_netns(|| async {
        let plan = Plan::new(&["fail 8 Connect script failed"]);
        let mut config = link_config(LinkDriver::Pppd, &plan.program());
        config.max_failures = 3;
        let rig = Rig::start(config, fast_tuning());
        let link = &rig.link;
        let mut state = link.watch();
        let failed = wait_state(&mut state, "giving up", 10, |s| {
            matches!(s, LinkState::Failed { retry_at: None, .. })
        })
        .await;
        let LinkState::Failed {
            reason: FailureReason::GaveUp { failures, last },
            ..
        } = &failed
        else {
            panic!("{failed:?}");
        };
        assert_eq!(*failures, 3);
        assert!(matches!(
            **last,
            FailureReason::Pppd {
                code: PppdExitCode::ConnectFailed,
                ..
            }
        ));
        assert!(
            failed
                .to_string()
                .contains("gave up after 3 failures in a row (max_failures)"),
            "{failed}"
        );
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(plan.runs(), 3, "no attempt after giving up");
        // a lease on a persistent link does not restart it: up() does
        let err = link.acquire().await.unwrap_err();
        assert!(
            matches!(&err, LinkError::Failed(FailureReason::GaveUp { .. })),
            "{err:?}"
        );
        let err = link.up().await.unwrap_err();
        assert!(
            matches!(
                &err,
                LinkError::Failed(FailureReason::Pppd {
                    code: PppdExitCode::ConnectFailed,
                    ..
                })
            ),
            "up() reports the new attempt's failure: {err:?}"
        );
        assert_eq!(plan.runs(), 4);
        rig.shut_down().await;
    });
}

#[test]
fn a_dropped_link_is_redialled() {
    in_netns(|| async {
        let plan = Plan::new(&[
            "up 10.64.0.2 10.64.0.1 drop 16 300",
            "up 10.64.0.3 10.64.0.1",
        ]);
        let rig = Rig::start(
            link_config(LinkDriver::Pppd, &plan.program()),
            fast_tuning(),
        );
        let mut events = rig.link.events();
        wait_event(&mut events, "Up", 10, |e| {
            matches!(e, LinkEvent::Up { .. }).then_some(())
        })
        .await;
        let (reason, failures) = wait_event(&mut events, "the drop", 10, |e| match e {
            LinkEvent::Failed {
                reason, failures, ..
            } => Some((reason.clone(), *failures)),
            _ => None,
        })
        .await;
        assert_eq!(failures, 1);
        assert!(reason.to_string().contains("modem hangup"), "{reason}");
        wait_event(&mut events, "redial", 10, |e| {
            (*e == LinkEvent::Dialing { failures: 1 }).then_some(())
        })
        .await;
        wait_event(&mut events, "Up again", 10, |e| {
            matches!(e, LinkEvent::Up { .. }).then_some(())
        })
        .await;
        assert_eq!(plan.runs(), 2);
        rig.shut_down().await;
    });
}

#[test]
fn on_demand_dials_for_a_lease_and_hangs_up_when_idle() {
    in_netns(|| async {
        let plan = Plan::new(&["up 10.64.0.2 10.64.0.1"]);
        let mut config = link_config(LinkDriver::Pppd, &plan.program());
        config.on_demand = true;
        config.idle_hangup = Duration::from_millis(600);
        let rig = Rig::start(config, fast_tuning());
        let link = &rig.link;
        let mut state = link.watch();

        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(plan.runs(), 0, "nothing dials without a lease");
        assert_eq!(link.state(), LinkState::Down);

        let t = Instant::now();
        let first = link.acquire().await.unwrap();
        eprintln!("acquire() on a down link: {:?}", t.elapsed());
        assert!(is_up_on(&link.state(), "ppp0"));
        let second = link.acquire().await.unwrap();
        assert_eq!(plan.runs(), 1, "the second lease shares the link");

        drop(first);
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(is_up_on(&link.state(), "ppp0"), "a lease is still held");
        drop(second);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(is_up_on(&link.state(), "ppp0"), "idle_hangup not over yet");
        // a lease before the idle timer ends cancels the hang-up
        let third = link.acquire().await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(is_up_on(&link.state(), "ppp0"));
        assert_eq!(plan.runs(), 1);

        let released = Instant::now();
        drop(third);
        wait_state(&mut state, "HangingUp", 5, |s| *s == LinkState::HangingUp).await;
        let idle = released.elapsed();
        wait_state(&mut state, "Down", 5, |s| *s == LinkState::Down).await;
        eprintln!("last lease dropped -> hang-up after {idle:?}");
        assert!(idle >= Duration::from_millis(600), "{idle:?}");
        assert!(idle < Duration::from_millis(1500), "{idle:?}");
        assert!(plan.has(1, "term") && plan.has(1, "exit 5"));
        assert!(!interface_exists("ppp0"));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(plan.runs(), 1, "no redial when nobody wants the link");

        // and again on the next lease
        let again = link.acquire().await.unwrap();
        assert_eq!(plan.runs(), 2);
        drop(again);
        rig.shut_down().await;
    });
}

#[test]
fn acquire_reports_the_failure_and_nothing_redials_for_nobody() {
    in_netns(|| async {
        let plan = Plan::new(&["fail 19 CHAP authentication failed"]);
        let mut config = link_config(LinkDriver::Pppd, &plan.program());
        config.on_demand = true;
        let rig = Rig::start(config, fast_tuning());
        let err = rig.link.acquire().await.unwrap_err();
        assert!(
            matches!(
                &err,
                LinkError::Failed(FailureReason::Pppd {
                    code: PppdExitCode::AuthToPeerFailed,
                    ..
                })
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("authentication failed"), "{err}");
        let mut state = rig.link.watch();
        wait_state(&mut state, "Failed without a retry", 5, |s| {
            matches!(s, LinkState::Failed { retry_at: None, .. })
        })
        .await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(plan.runs(), 1, "the lease went with the error");
        rig.shut_down().await;
    });
}

#[test]
fn the_mail_check_dials_waits_for_done_and_hangs_up() {
    in_netns(|| async {
        let plan = Plan::new(&["up 10.64.0.2 10.64.0.1"]);
        let mut config = link_config(LinkDriver::Pppd, &plan.program());
        config.on_demand = true;
        config.idle_hangup = Duration::from_secs(30); // not what ends a check
        config.check_interval = Duration::from_millis(2500);
        let tuning = Tuning {
            check_at_start: true,
            check_window: Duration::from_millis(700),
            ..fast_tuning()
        };
        let rig = Rig::start(config, tuning);
        let link = &rig.link;
        let mut events = link.events();
        let mut state = link.watch();

        // check 1 at start: up, CheckDue, done -> hung up at once
        let check = wait_event(&mut events, "CheckDue", 10, |e| match e {
            LinkEvent::CheckDue { check } => Some(*check),
            _ => None,
        })
        .await;
        assert_eq!(check, 1);
        assert!(is_up_on(&link.state(), "ppp0"));
        // the next one is scheduled check_interval (2.5 s) from this one
        let next = link
            .next_check()
            .expect("an on-demand link schedules checks");
        let ahead = next
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        assert!(
            ahead > Duration::from_millis(1000) && ahead <= Duration::from_millis(2500),
            "next check in {ahead:?}"
        );
        let done = Instant::now();
        link.check_done(check).await.unwrap();
        wait_state(&mut state, "Down after the check", 5, |s| {
            *s == LinkState::Down
        })
        .await;
        eprintln!("check_done -> Down: {:?}", done.elapsed());
        assert!(
            done.elapsed() < Duration::from_secs(3),
            "no idle_hangup wait"
        );
        assert_eq!(plan.runs(), 1);

        // check 2 after check_interval; nobody says done: the window ends it
        let check = wait_event(&mut events, "CheckDue 2", 10, |e| match e {
            LinkEvent::CheckDue { check } => Some(*check),
            _ => None,
        })
        .await;
        assert_eq!(check, 2);
        let due = Instant::now();
        let after = link.next_check().expect("still scheduled");
        assert!(
            after.duration_since(next).unwrap_or(Duration::ZERO) >= Duration::from_millis(2000),
            "check 2 moved the next one on: {next:?} -> {after:?}"
        );
        link.check_done(1).await.unwrap(); // stale: ignored
        wait_state(&mut state, "Down after the window", 5, |s| {
            *s == LinkState::Down
        })
        .await;
        let window = due.elapsed();
        eprintln!("check window -> Down: {window:?}");
        assert!(window >= Duration::from_millis(700), "{window:?}");

        // check 3: a lease taken during the check keeps the link after done
        let check = wait_event(&mut events, "CheckDue 3", 10, |e| match e {
            LinkEvent::CheckDue { check } => Some(*check),
            _ => None,
        })
        .await;
        let lease = link.acquire().await.unwrap();
        link.check_done(check).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(is_up_on(&link.state(), "ppp0"), "the lease keeps the link");
        assert_eq!(plan.runs(), 3);
        drop(lease);
        rig.shut_down().await;
    });
}

#[test]
fn no_address_in_time_is_a_failure_and_hangs_up() {
    in_netns(|| async {
        let plan = Plan::new(&["hang"]);
        let mut config = link_config(LinkDriver::Pppd, &plan.program());
        config.max_failures = 1;
        let tuning = Tuning {
            connect_timeout: Duration::from_millis(600),
            ..fast_tuning()
        };
        let rig = Rig::start(config, tuning);
        let mut state = rig.link.watch();
        let failed = wait_state(&mut state, "Failed", 10, |s| {
            matches!(s, LinkState::Failed { .. })
        })
        .await;
        let LinkState::Failed {
            reason: FailureReason::GaveUp { last, .. },
            ..
        } = &failed
        else {
            panic!("{failed:?}");
        };
        assert!(
            matches!(&**last, FailureReason::NoAddress { interface: Some(i), .. } if i == "ppp0"),
            "{last:?}"
        );
        assert!(
            plan.has(1, "term") && plan.has(1, "exit 5"),
            "{:?}",
            plan.log()
        );
        assert!(reaped(plan.pid(1)));
        rig.shut_down().await;
    });
}

#[test]
fn pppd_ignoring_sigterm_is_killed_after_the_grace_time() {
    in_netns(|| async {
        let plan = Plan::new(&["up 10.64.0.2 10.64.0.1 ignore-term"]);
        let tuning = Tuning {
            hangup_grace: Duration::from_millis(500),
            ..fast_tuning()
        };
        let rig = Rig::start(link_config(LinkDriver::Pppd, &plan.program()), tuning);
        let mut state = rig.link.watch();
        wait_state(&mut state, "Up", 10, |s| is_up_on(s, "ppp0")).await;
        let pid = plan.pid(1);
        let t = Instant::now();
        rig.link.down().await.unwrap();
        let took = t.elapsed();
        eprintln!("down() with SIGTERM ignored: {took:?}");
        assert!(took >= Duration::from_millis(500), "{took:?}");
        assert!(plan.has(1, "term ignored"), "{:?}", plan.log());
        assert!(
            !plan.log().iter().any(|l| l.starts_with("1 exit")),
            "killed, no exit"
        );
        assert!(reaped(pid), "SIGKILLed and reaped");
        assert_eq!(rig.link.state(), LinkState::Down);
        rig.shut_down().await;
    });
}

#[test]
fn the_shutdown_token_hangs_up_and_reaps() {
    in_netns(|| async {
        let plan = Plan::new(&["up 10.64.0.2 10.64.0.1"]);
        let rig = Rig::start(
            link_config(LinkDriver::Pppd, &plan.program()),
            fast_tuning(),
        );
        let mut state = rig.link.watch();
        wait_state(&mut state, "Up", 10, |s| is_up_on(s, "ppp0")).await;
        let pid = plan.pid(1);
        let link = rig.link.clone();
        let t = Instant::now();
        rig.shut_down().await;
        eprintln!("shutdown with the link up: {:?}", t.elapsed());
        assert!(
            plan.has(1, "term") && plan.has(1, "exit 5"),
            "{:?}",
            plan.log()
        );
        assert!(reaped(pid));
        assert!(!interface_exists("ppp0"));
        assert_eq!(link.state(), LinkState::Down);
        assert_eq!(link.acquire().await.unwrap_err(), LinkError::Gone);
    });
}

#[test]
fn a_missing_program_is_a_clear_failure() {
    in_netns(|| async {
        let mut config = link_config(LinkDriver::Pppd, "/nonexistent/pppd".as_ref());
        config.max_failures = 2;
        let rig = Rig::start(config, fast_tuning());
        let mut state = rig.link.watch();
        let failed = wait_state(&mut state, "giving up", 10, |s| {
            matches!(s, LinkState::Failed { retry_at: None, .. })
        })
        .await;
        let text = failed.to_string();
        assert!(
            text.contains("cannot run pppd (/nonexistent/pppd)") && text.contains("No such file"),
            "{text}"
        );
        rig.shut_down().await;
    });
}
