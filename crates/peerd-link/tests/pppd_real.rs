//! The real pppd (Debian's `ppp` package, installed by tests/run) run by
//! the pppd driver with a real peers file. This kernel has no PPP support,
//! so pppd exits 4 ("Couldn't open the /dev/ppp device"): that failure must
//! reach the link state as "no kernel support for PPP" with pppd's own
//! words, be redialled with backoff, and be given up after `max_failures`.
//!
//! pppd's `call NAME` only reads `/etc/ppp/peers/NAME` (a path is refused),
//! so the test writes a uniquely named file there and removes it when done.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{fast_tuning, in_netns, ip_watcher, link_config, require_root, wait_state};
use peerd_config::LinkDriver;
use peerd_link::{FailureReason, LinkError, LinkEvent, LinkState, PppdExitCode, spawn_tuned};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const PPPD: &str = "/usr/sbin/pppd";
const PEERS: &str = "/etc/ppp/peers";

/// A peers file that is removed again.
struct PeersFile {
    name: String,
    path: PathBuf,
}

impl PeersFile {
    fn write() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("peerd-test-{}-{nanos}", std::process::id());
        let path = Path::new(PEERS).join(&name);
        std::fs::write(
            &path,
            "# written by peerd-link's tests (tests/pppd_real.rs); removed when they end\n\
             noauth\n\
             pty \"/bin/cat\"\n",
        )
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        Self { name, path }
    }
}

impl Drop for PeersFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn real_pppd_without_kernel_support_fails_with_status_4_backs_off_and_gives_up() {
    require_root("running pppd and writing /etc/ppp/peers");
    assert!(
        Path::new(PPPD).exists() && Path::new(PEERS).is_dir(),
        "{PPPD} or {PEERS} missing: install Debian's ppp package (tests/run does)"
    );
    assert!(
        !Path::new("/dev/ppp").exists(),
        "this test expects a kernel without PPP (no /dev/ppp), as on CI; here pppd could really dial"
    );
    in_netns(|| async {
        let peers = PeersFile::write();
        let mut config = link_config(LinkDriver::Pppd, Path::new(PPPD));
        config.peer = peers.name.clone();
        config.max_failures = 3;
        let tuning = fast_tuning();
        let backoff = tuning.backoff;
        let (addresses, _watcher) = ip_watcher("ppp0");
        let mut tasks: JoinSet<Result<(), LinkError>> = JoinSet::new();
        let token = CancellationToken::new();
        let link = spawn_tuned(config, addresses, tuning, &mut tasks, token.clone());
        let mut events = link.events();
        let mut state = link.watch();

        let started = Instant::now();
        let mut dialled = Vec::new();
        let mut failed = Vec::new();
        while failed.len() < 3 {
            match tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .expect("an event within 10 s")
                .unwrap()
            {
                LinkEvent::Dialing { failures } => dialled.push((failures, Instant::now())),
                LinkEvent::Failed {
                    reason,
                    failures,
                    retry_at,
                } => failed.push((reason, failures, retry_at)),
                other => panic!("unexpected {other:?}"),
            }
        }
        eprintln!("3 real pppd runs and 2 redials: {:?}", started.elapsed());

        // 1 and 2: pppd's status 4 with its meaning and its own words
        for (reason, failures, retry_at) in &failed[..2] {
            let FailureReason::Pppd { code, detail } = reason else {
                panic!("{reason:?}");
            };
            assert_eq!(*code, PppdExitCode::NoKernelSupport);
            assert_eq!(code.code(), 4);
            let detail = detail.as_deref().unwrap_or_default();
            assert!(detail.contains("/dev/ppp"), "pppd's line: {detail:?}");
            let text = reason.to_string();
            assert!(
                text.starts_with("pppd exited with status 4 (no kernel support for PPP"),
                "{text}"
            );
            assert!(retry_at.is_some(), "failure {failures} is redialled");
        }
        // 3: given up
        let (reason, failures, retry_at) = &failed[2];
        assert_eq!(*failures, 3);
        assert_eq!(*retry_at, None);
        assert!(
            matches!(reason, FailureReason::GaveUp { failures: 3, last }
                if matches!(**last, FailureReason::Pppd { code: PppdExitCode::NoKernelSupport, .. })),
            "{reason:?}"
        );

        // the backoff between the attempts
        assert_eq!(
            dialled.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        for (n, pair) in dialled.windows(2).enumerate() {
            let gap = pair[1].1 - pair[0].1;
            let ceiling = backoff.ceiling(u32::try_from(n).unwrap() + 1);
            eprintln!("redial {} after {gap:?} (ceiling {ceiling:?})", n + 1);
            assert!(gap >= ceiling / 2, "{gap:?} < {:?}", ceiling / 2);
        }

        let now = wait_state(&mut state, "Failed, given up", 5, |s| {
            matches!(s, LinkState::Failed { retry_at: None, .. })
        })
        .await;
        let shown = now.to_string();
        assert!(
            shown.contains("gave up after 3 failures in a row")
                && shown.contains("no kernel support for PPP"),
            "{shown}"
        );
        eprintln!("link status: {shown}");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            matches!(link.state(), LinkState::Failed { retry_at: None, .. }),
            "no fourth attempt"
        );
        token.cancel();
        tasks.join_next().await.unwrap().unwrap().unwrap();
        drop(peers);
    });
}
