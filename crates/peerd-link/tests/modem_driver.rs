//! The modem driver against a Hayes modem emulated on a pseudo-terminal
//! (`common/modem.rs`), through the real tokio-serial port code, with the
//! pppd stand-in taking the line after CONNECT. Each test runs in a fresh
//! network namespace (the stand-in creates ppp0).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::modem::{Answers, FakeModem, ModemSetup};
use common::{
    Plan, Rig, fast_tuning, in_netns, interface_exists, is_up_on, link_config, reaped, wait_event,
    wait_state,
};
use peerd_config::{LinkConfig, LinkDriver};
use peerd_link::{
    FailureReason, LinkEvent, LinkState, ModemFailure, PortOpener, PppdExitCode, Tuning,
};

fn modem_config(modem: &FakeModem, plan: &Plan) -> LinkConfig {
    let mut config = link_config(LinkDriver::Modem, &plan.program());
    config.device = modem.path().to_owned();
    config
}

#[test]
fn dials_hands_the_line_to_pppd_and_hangs_up_with_the_escape() {
    in_netns(|| async {
        let modem = FakeModem::start(ModemSetup::default()); // echo on
        let plan = Plan::new(&["up 10.64.0.2 10.64.0.1"]);
        let rig = Rig::start(modem_config(&modem, &plan), fast_tuning());
        let mut state = rig.link.watch();
        let t = Instant::now();
        wait_state(&mut state, "Up on ppp0", 10, |s| is_up_on(s, "ppp0")).await;
        eprintln!("AT dialogue + pppd stand-in to Up: {:?}", t.elapsed());

        assert_eq!(modem.log(), ["ATZ", "ATE0V1", "ATD*99#"]);
        assert!(modem.off_hook());
        let device = modem.path().display().to_string();
        assert!(plan.has(1, &format!("opened {device}")), "{:?}", plan.log());
        assert_eq!(
            plan.args(1),
            [
                device.as_str(),
                "115200",
                "nodetach",
                "ipparam",
                "peerd",
                "linkname",
                &format!(
                    "peerd-{}",
                    modem.path().file_name().unwrap().to_string_lossy()
                ),
                "nopersist",
                "ifname",
                "ppp0",
                "noauth",
                "noipdefault"
            ]
        );
        assert!(
            !modem.hupcl(),
            "closing the port for pppd must not drop DTR"
        );

        let pid = plan.pid(1);
        let t = Instant::now();
        rig.link.down().await.unwrap();
        eprintln!("down() incl. +++ guard times and ATH: {:?}", t.elapsed());
        assert!(
            plan.has(1, "term") && plan.has(1, "exit 5"),
            "{:?}",
            plan.log()
        );
        assert!(reaped(pid));
        assert!(!interface_exists("ppp0"));
        // a pty cannot drop DTR: the escape and ATH
        assert_eq!(modem.log()[3..], ["+++", "ATH"]);
        assert!(!modem.off_hook());
        assert!(modem.hupcl(), "HUPCL restored after the hang-up");
        assert_eq!(rig.link.state(), LinkState::Down);
        rig.shut_down().await;
    });
}

#[test]
fn every_final_result_code_is_a_reason() {
    in_netns(|| async {
        let cases = [
            ("BUSY", ModemFailure::Busy, "BUSY"),
            ("NO CARRIER", ModemFailure::NoCarrier, "NO CARRIER"),
            ("NO DIALTONE", ModemFailure::NoDialtone, "NO DIALTONE"),
            ("NO ANSWER", ModemFailure::NoAnswer, "NO ANSWER"),
            (
                "ERROR",
                ModemFailure::Error {
                    command: "ATD*99#".to_owned(),
                },
                "ERROR in answer to \"ATD*99#\"",
            ),
        ];
        for (result, want, text) in cases {
            let modem = FakeModem::start(ModemSetup {
                dial_result: result.to_owned(),
                echo: false,
                ..ModemSetup::default()
            });
            let plan = Plan::new(&["up 10.64.0.2 10.64.0.1"]);
            let mut config = modem_config(&modem, &plan);
            config.max_failures = 2;
            let rig = Rig::start(config, fast_tuning());
            let mut events = rig.link.events();
            let (reason, retry_at) = wait_event(&mut events, result, 10, |e| match e {
                LinkEvent::Failed {
                    reason, retry_at, ..
                } => Some((reason.clone(), *retry_at)),
                _ => None,
            })
            .await;
            assert_eq!(reason, FailureReason::Modem(want.clone()), "{result}");
            assert!(reason.to_string().contains(text), "{reason}");
            assert!(retry_at.is_some(), "{result}: redialled");
            // the redial fails the same way, and that is the last one
            let mut state = rig.link.watch();
            let last = wait_state(&mut state, "giving up", 10, |s| {
                matches!(s, LinkState::Failed { retry_at: None, .. })
            })
            .await;
            assert!(
                matches!(&last, LinkState::Failed { reason: FailureReason::GaveUp { failures: 2, last }, .. }
                    if **last == FailureReason::Modem(want.clone())),
                "{last:?}"
            );
            assert_eq!(plan.runs(), 0, "{result}: pppd never started");
            assert_eq!(modem.calls(), 0);
            assert_eq!(
                modem.log(),
                ["ATZ", "ATE0V1", "ATD*99#", "ATZ", "ATE0V1", "ATD*99#"],
                "{result}"
            );
            rig.shut_down().await;
        }
    });
}

#[test]
fn a_modem_that_never_answers_times_out() {
    in_netns(|| async {
        let modem = FakeModem::start(ModemSetup {
            answers: Answers::Silent,
            ..ModemSetup::default()
        });
        let plan = Plan::new(&["up 10.64.0.2 10.64.0.1"]);
        let mut config = modem_config(&modem, &plan);
        config.max_failures = 1;
        let rig = Rig::start(config, fast_tuning());
        let mut state = rig.link.watch();
        let t = Instant::now();
        let failed = wait_state(&mut state, "Failed", 10, |s| {
            matches!(s, LinkState::Failed { .. })
        })
        .await;
        eprintln!("silent modem -> Failed: {:?}", t.elapsed());
        let LinkState::Failed {
            reason: FailureReason::GaveUp { last, .. },
            ..
        } = &failed
        else {
            panic!("{failed:?}");
        };
        assert_eq!(
            **last,
            FailureReason::Modem(ModemFailure::Timeout {
                command: "ATZ".to_owned(),
                waited: Duration::from_millis(500),
                last_line: None,
            })
        );
        assert!(last.to_string().contains("timeout"), "{last}");
        assert!(
            last.to_string().contains("the modem said nothing"),
            "{last}"
        );
        assert_eq!(modem.log(), ["ATZ"]);
        assert_eq!(plan.runs(), 0);
        rig.shut_down().await;
    });
}

#[test]
fn line_noise_is_skipped_but_noise_alone_times_out() {
    in_netns(|| async {
        // noise before every answer: the dialogue still works
        let modem = FakeModem::start(ModemSetup {
            answers: Answers::NoiseFirst,
            ..ModemSetup::default()
        });
        let plan = Plan::new(&["up 10.64.0.2 10.64.0.1"]);
        let rig = Rig::start(modem_config(&modem, &plan), fast_tuning());
        let mut state = rig.link.watch();
        wait_state(&mut state, "Up through the noise", 10, |s| {
            is_up_on(s, "ppp0")
        })
        .await;
        rig.shut_down().await;
        drop(modem);

        // nothing but noise: a timeout that shows the noise
        let modem = FakeModem::start(ModemSetup {
            answers: Answers::NoiseOnly,
            echo: false,
            ..ModemSetup::default()
        });
        let plan = Plan::new(&["up 10.64.0.2 10.64.0.1"]);
        let mut config = modem_config(&modem, &plan);
        config.max_failures = 1;
        let rig = Rig::start(config, fast_tuning());
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
        let FailureReason::Modem(ModemFailure::Timeout {
            command, last_line, ..
        }) = &**last
        else {
            panic!("{last:?}");
        };
        assert_eq!(command, "ATZ");
        assert!(
            last_line.as_deref().is_some_and(|l| l.contains("NOISE")),
            "{last_line:?}"
        );
        assert_eq!(plan.runs(), 0);
        rig.shut_down().await;
    });
}

#[test]
fn a_dial_that_takes_too_long_is_aborted() {
    in_netns(|| async {
        let modem = FakeModem::start(ModemSetup {
            dial_delay: Duration::from_secs(30),
            echo: false,
            ..ModemSetup::default()
        });
        let plan = Plan::new(&["up 10.64.0.2 10.64.0.1"]);
        let mut config = modem_config(&modem, &plan);
        config.max_failures = 1;
        let tuning = Tuning {
            dial_timeout: Duration::from_millis(800),
            ..fast_tuning()
        };
        let rig = Rig::start(config, tuning);
        let mut state = rig.link.watch();
        let failed = wait_state(&mut state, "Failed", 10, |s| {
            matches!(s, LinkState::Failed { .. })
        })
        .await;
        assert!(
            failed
                .to_string()
                .contains("no final result code for \"ATD*99#\" within 800ms"),
            "{failed}"
        );
        assert_eq!(modem.log(), ["ATZ", "ATE0V1", "ATD*99#", "<abort>", "ATH"]);
        assert!(!modem.off_hook());
        rig.shut_down().await;
    });
}

#[test]
fn hanging_up_while_dialling_aborts_the_call() {
    in_netns(|| async {
        let modem = FakeModem::start(ModemSetup {
            dial_delay: Duration::from_secs(30),
            echo: false,
            ..ModemSetup::default()
        });
        let plan = Plan::new(&["up 10.64.0.2 10.64.0.1"]);
        let tuning = Tuning {
            dial_timeout: Duration::from_secs(60),
            ..fast_tuning()
        };
        let rig = Rig::start(modem_config(&modem, &plan), tuning);
        let mut state = rig.link.watch();
        wait_state(&mut state, "Dialing", 10, |s| *s == LinkState::Dialing).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !modem.log().contains(&"ATD*99#".to_owned()) {
            assert!(Instant::now() < deadline, "no ATD: {:?}", modem.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        rig.link.down().await.unwrap();
        assert_eq!(modem.log(), ["ATZ", "ATE0V1", "ATD*99#", "<abort>", "ATH"]);
        assert_eq!(
            rig.link.state(),
            LinkState::Down,
            "a requested hang-up is no failure"
        );
        assert_eq!(plan.runs(), 0);
        rig.shut_down().await;
    });
}

#[test]
fn carrier_loss_is_a_modem_hangup_and_is_redialled() {
    in_netns(|| async {
        let modem = FakeModem::start(ModemSetup::default());
        let plan = Plan::new(&["up 10.64.0.2 10.64.0.1"]);
        let rig = Rig::start(modem_config(&modem, &plan), fast_tuning());
        let mut events = rig.link.events();
        let mut state = rig.link.watch();
        wait_state(&mut state, "Up", 10, |s| is_up_on(s, "ppp0")).await;
        modem.drop_carrier();
        let reason = wait_event(&mut events, "the carrier loss", 10, |e| match e {
            LinkEvent::Failed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await;
        assert!(
            matches!(
                reason,
                FailureReason::Pppd {
                    code: PppdExitCode::Hangup,
                    ..
                }
            ),
            "{reason:?}"
        );
        assert!(reason.to_string().contains("modem hangup"));
        wait_event(&mut events, "Up again", 10, |e| {
            matches!(e, LinkEvent::Up { .. }).then_some(())
        })
        .await;
        assert_eq!(modem.calls(), 2);
        assert_eq!(plan.runs(), 2);
        rig.shut_down().await;
        assert!(!modem.off_hook(), "shutdown put the modem on hook");
    });
}

#[test]
fn dtr_hangs_up_where_the_line_allows() {
    in_netns(|| async {
        let modem = FakeModem::start(ModemSetup::default());
        let plan = Plan::new(&["up 10.64.0.2 10.64.0.1"]);
        let port: Arc<dyn PortOpener> = modem.dtr_opener();
        let tuning = Tuning {
            port,
            ..fast_tuning()
        };
        let rig = Rig::start(modem_config(&modem, &plan), tuning);
        let mut state = rig.link.watch();
        wait_state(&mut state, "Up", 10, |s| is_up_on(s, "ppp0")).await;
        let t = Instant::now();
        rig.link.down().await.unwrap();
        eprintln!("down() with DTR: {:?}", t.elapsed());
        assert_eq!(modem.log()[3..], ["dtr dropped", "ATH"]);
        assert!(!modem.off_hook());
        rig.shut_down().await;
    });
}

#[test]
fn an_unopenable_device_is_a_clear_failure() {
    in_netns(|| async {
        let plan = Plan::new(&["up 10.64.0.2 10.64.0.1"]);
        let mut config = link_config(LinkDriver::Modem, &plan.program());
        config.device = "/dev/ttyNONEXISTENT".into();
        config.max_failures = 1;
        let rig = Rig::start(config, fast_tuning());
        let mut state = rig.link.watch();
        let failed = wait_state(&mut state, "Failed", 10, |s| {
            matches!(s, LinkState::Failed { .. })
        })
        .await;
        assert!(
            failed
                .to_string()
                .contains("cannot open the modem /dev/ttyNONEXISTENT"),
            "{failed}"
        );
        rig.shut_down().await;
    });
}
