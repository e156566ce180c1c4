//! The hooks runner with real executable scripts in a temporary
//! directory: the exact environment (and that a hostile sender stays
//! harmless), order and one-at-a-time, the timeout, the file rules, exit
//! statuses and output.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use peerd::hooks::{
    self, EscapedSender, HookEvent, HookOutcome, HookReport, HookRun, HooksConfig, HooksError,
    HooksHandle, InterfaceName, ReasonCode, Refusal,
};
use peerd_announce::Rejection;
use peerd_core::PeerName;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A running hooks runner over a fresh hooks directory, with its reports.
struct Rig {
    _tmp: tempfile::TempDir,
    /// The hooks directory.
    dir: PathBuf,
    /// A scratch directory for what the hooks write.
    out: PathBuf,
    handle: HooksHandle,
    reports: broadcast::Receiver<HookReport>,
    tasks: JoinSet<Result<(), HooksError>>,
    shutdown: CancellationToken,
}

impl Rig {
    fn new(tune: impl FnOnce(&mut HooksConfig)) -> Self {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let dir = tmp.path().join("hooks.d");
        let out = tmp.path().join("out");
        fs::create_dir(&dir).expect("hooks.d");
        fs::create_dir(&out).expect("out");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut config = HooksConfig::new(&dir);
        tune(&mut config);
        let mut tasks = JoinSet::new();
        let shutdown = CancellationToken::new();
        let handle = hooks::spawn(config, &mut tasks, shutdown.clone());
        let reports = handle.reports();
        Self {
            _tmp: tmp,
            dir,
            out,
            handle,
            reports,
            tasks,
            shutdown,
        }
    }

    /// Writes an executable hook (mode 0755) with this shell body; `@OUT@`
    /// stands for the scratch directory.
    fn hook(&self, name: &str, body: &str) -> PathBuf {
        self.hook_mode(name, body, 0o755)
    }

    fn hook_mode(&self, name: &str, body: &str, mode: u32) -> PathBuf {
        let path = self.dir.join(name);
        let text = format!(
            "#!/bin/sh\n{}\n",
            body.replace("@OUT@", &self.out.display().to_string())
        );
        fs::write(&path, text).expect("write a hook");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    /// Notifies `events`, waits until their hooks ran, returns the reports.
    async fn run(&mut self, events: Vec<HookEvent>) -> Vec<HookReport> {
        for e in events {
            self.handle.notify(e).expect("queued");
        }
        self.handle.flush().await.expect("flushed");
        let mut out = Vec::new();
        while let Ok(r) = self.reports.try_recv() {
            out.push(r);
        }
        out
    }

    fn read(&self, file: &str) -> String {
        fs::read_to_string(self.out.join(file)).unwrap_or_default()
    }
}

fn ran(reports: &[HookReport]) -> Vec<&HookRun> {
    reports
        .iter()
        .filter_map(|r| match r {
            HookReport::Ran(run) => Some(run),
            HookReport::Refused { .. } => None,
        })
        .collect()
}

fn refused(reports: &[HookReport]) -> Vec<(String, Refusal)> {
    reports
        .iter()
        .filter_map(|r| match r {
            HookReport::Refused { path, why } => Some((
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                why.clone(),
            )),
            HookReport::Ran(_) => None,
        })
        .collect()
}

fn peer(name: &str) -> PeerName {
    name.parse().expect("a peer name")
}

fn link_up() -> HookEvent {
    HookEvent::LinkUp {
        interface: InterfaceName::new("ppp0"),
    }
}

/// The process still exists and is not a zombie.
fn alive(pid: &str) -> bool {
    fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn the_environment_is_exactly_path_and_the_event() {
    let mut rig = Rig::new(|_| {});
    rig.hook(
        "10-env",
        "tr '\\0' '\\n' < /proc/$$/environ | sort >> @OUT@/env\necho -- >> @OUT@/env",
    );
    let reports = rig
        .run(vec![
            HookEvent::AnnouncementReceived {
                peer: peer("hitoshi"),
                addresses: vec![
                    "203.0.113.7:7447".parse().expect("addr"),
                    "[2001:db8::7]:7447".parse().expect("addr"),
                ],
                sequence: 1_780_000_000_000_001,
            },
            HookEvent::AddressChanged {
                interface: Some(InterfaceName::new("ppp0")),
                addresses: vec!["100.64.1.2".parse().expect("ip")],
            },
            HookEvent::PeerDisconnected {
                peer: peer("me-on-phone"),
                reason: ReasonCode::new("idle-timeout").expect("a code"),
            },
        ])
        .await;
    assert_eq!(ran(&reports).len(), 3);
    assert!(ran(&reports).iter().all(|r| r.outcome.is_success()));
    assert_eq!(
        rig.read("env"),
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         PEERD_ADDRESSES=203.0.113.7:7447 [2001:db8::7]:7447\n\
         PEERD_EVENT=announcement-received\n\
         PEERD_PEER=hitoshi\n\
         PEERD_SEQUENCE=1780000000000001\n\
         --\n\
         PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         PEERD_ADDRESSES=100.64.1.2\n\
         PEERD_EVENT=address-changed\n\
         PEERD_INTERFACE=ppp0\n\
         --\n\
         PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         PEERD_EVENT=peer-disconnected\n\
         PEERD_PEER=me-on-phone\n\
         PEERD_REASON=idle-timeout\n\
         --\n"
    );
}

/// What a daemon under systemd has in its environment and a hook must
/// not see.
const DAEMON_ENV: [(&str, &str); 4] = [
    ("NOTIFY_SOCKET", "/run/systemd/notify"),
    ("CREDENTIALS_DIRECTORY", "/run/credentials/peerd.service"),
    ("LISTEN_FDS", "1"),
    ("PEERD_TEST_SECRET", "hunter2"),
];

#[test]
fn nothing_of_the_daemons_environment_reaches_a_hook() {
    // The environment is per process and changing it in a threaded test
    // binary is unsound, so the runner runs in a child process (this test
    // binary again, running only the ignored test below) that has it.
    let out = tempfile::tempdir().expect("a temp dir");
    let env_file = out.path().join("env");
    let status = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "daemon_environment_child",
            "--ignored",
            "--nocapture",
        ])
        .envs(DAEMON_ENV)
        .env("PEERD_HOOKS_TEST_ENV_FILE", &env_file)
        .status()
        .expect("the child test runs");
    assert!(status.success());
    let env = fs::read_to_string(&env_file).expect("the hook wrote its environment");
    assert_eq!(
        env,
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         PEERD_EVENT=link-up\n\
         PEERD_INTERFACE=ppp0\n"
    );
}

/// The child of `nothing_of_the_daemons_environment_reaches_a_hook`.
#[tokio::test]
#[ignore = "run by nothing_of_the_daemons_environment_reaches_a_hook in a child process"]
async fn daemon_environment_child() {
    for (k, v) in DAEMON_ENV {
        assert_eq!(std::env::var(k).as_deref(), Ok(v), "the child has {k}");
    }
    let env_file = std::env::var("PEERD_HOOKS_TEST_ENV_FILE").expect("where to write");
    let mut rig = Rig::new(|_| {});
    rig.hook(
        "10-env",
        &format!("tr '\\0' '\\n' < /proc/$$/environ | sort > {env_file}"),
    );
    let reports = rig.run(vec![link_up()]).await;
    assert!(ran(&reports)[0].outcome.is_success());
}

#[tokio::test]
async fn a_hostile_sender_arrives_escaped_and_harmless() {
    let mut rig = Rig::new(|_| {});
    let pwned = rig.out.join("pwned");
    let from = format!(
        "x$(touch {p})`touch {p}`;touch {p}\nPEERD_REASON=ok \"'@evil.example",
        p = pwned.display()
    );
    // Hooks that use the value carelessly: unquoted, through eval, and
    // through another shell.
    rig.hook(
        "10-careless",
        "echo $PEERD_SENDER > @OUT@/plain\n\
         eval \"echo $PEERD_SENDER\" > @OUT@/eval\n\
         sh -c \"echo $PEERD_SENDER\" > @OUT@/sh\n\
         tr '\\0' '\\n' < /proc/$$/environ | sort > @OUT@/env",
    );
    let reports = rig
        .run(vec![
            // As the courier hands it over: escaped by peerd-announce.
            HookEvent::AnnouncementRejected {
                peer: None,
                sender: Some(EscapedSender::from_escaped(
                    &peerd_announce::escape_address(&from),
                )),
                reason: ReasonCode::from(&Rejection::BadSignature),
            },
            // Raw, escaped here.
            HookEvent::AnnouncementRejected {
                peer: Some(peer("hitoshi")),
                sender: Some(EscapedSender::escape(&from)),
                reason: ReasonCode::from(&Rejection::Replayed),
            },
        ])
        .await;
    assert_eq!(ran(&reports).len(), 2);
    assert!(ran(&reports).iter().all(|r| r.outcome.is_success()));
    assert!(!pwned.exists(), "the sender's command ran");
    let escaped = peerd_announce::escape_address(&from);
    assert!(!escaped.contains(['$', '`', ' ', '\n', ';', '"', '\'', '(', '/']));
    assert_eq!(
        rig.read("env"),
        format!(
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
             PEERD_EVENT=announcement-rejected\n\
             PEERD_PEER=hitoshi\n\
             PEERD_REASON=replayed\n\
             PEERD_SENDER={escaped}\n"
        )
    );
    assert!(
        escaped.starts_with("x\\x24\\x28touch\\x20\\x2f"),
        "{escaped}"
    );
    // One line each: the newline did not survive either.
    for file in ["plain", "eval", "sh"] {
        assert_eq!(rig.read(file).lines().count(), 1, "{file}");
    }
    assert_eq!(rig.read("plain").trim_end(), escaped);
}

#[tokio::test]
async fn hooks_run_in_name_order_one_at_a_time_and_events_in_order() {
    let mut rig = Rig::new(|_| {});
    let body = |name: &str| {
        format!(
            "echo \"start {name} $PEERD_EVENT $(date +%s%N)\" >> @OUT@/log\n\
             sleep 0.2\n\
             echo \"end {name} $PEERD_EVENT $(date +%s%N)\" >> @OUT@/log"
        )
    };
    // Created out of order; byte order of names decides (B before a).
    for name in ["30-c", "10-a", "20-B", "20-a"] {
        rig.hook(name, &body(name));
    }
    let started = Instant::now();
    let reports = rig
        .run(vec![
            link_up(),
            HookEvent::LinkDown {
                interface: None,
                reason: ReasonCode::new("requested").expect("a code"),
            },
        ])
        .await;
    assert_eq!(ran(&reports).len(), 8);
    // One at a time: 8 runs of 0.2 s each cannot take less than 1.6 s.
    assert!(started.elapsed() >= Duration::from_millis(1600));
    let log = rig.read("log");
    let lines: Vec<Vec<&str>> = log.lines().map(|l| l.split(' ').collect()).collect();
    let order: Vec<String> = lines
        .iter()
        .map(|l| format!("{} {} {}", l[0], l[1], l[2]))
        .collect();
    let mut want = Vec::new();
    for event in ["link-up", "link-down"] {
        for name in ["10-a", "20-B", "20-a", "30-c"] {
            want.push(format!("start {name} {event}"));
            want.push(format!("end {name} {event}"));
        }
    }
    assert_eq!(order, want, "{log}");
    // The timestamps never go back: no run overlaps another.
    let stamps: Vec<u128> = lines
        .iter()
        .map(|l| l[3].parse().expect("a time"))
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{log}");
    let names: Vec<&str> = ran(&reports).iter().map(|r| r.hook.as_str()).collect();
    assert_eq!(names[..4], ["10-a", "20-B", "20-a", "30-c"]);
}

#[tokio::test]
async fn a_hanging_hook_is_stopped_with_its_children_and_the_next_still_runs() {
    let mut rig = Rig::new(|c| {
        c.timeout = Duration::from_secs(1);
        c.kill_grace = Duration::from_millis(500);
    });
    // Ignores SIGTERM, so only SIGKILL ends it; leaves a child behind.
    rig.hook(
        "10-hang",
        "trap '' TERM\necho $$ > @OUT@/pid\nsleep 30 &\necho $! > @OUT@/child\nwait\nsleep 30",
    );
    // Ends on SIGTERM.
    rig.hook("20-slow", "echo $$ > @OUT@/pid2\nexec sleep 30");
    rig.hook("30-next", "echo ran > @OUT@/next");
    let started = Instant::now();
    let reports = rig.run(vec![link_up()]).await;
    let elapsed = started.elapsed();
    let runs = ran(&reports);
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0].outcome, HookOutcome::TimedOut);
    assert_eq!(runs[1].outcome, HookOutcome::TimedOut);
    assert!(runs[2].outcome.is_success());
    assert_eq!(rig.read("next"), "ran\n");
    // 1 s + 0.5 s grace for the first, about 1 s for the second.
    assert!(runs[0].duration >= Duration::from_millis(1500), "{runs:?}");
    assert!(runs[0].duration < Duration::from_secs(4), "{runs:?}");
    assert!(runs[1].duration >= Duration::from_secs(1), "{runs:?}");
    assert!(runs[1].duration < Duration::from_millis(1500), "{runs:?}");
    assert!(elapsed < Duration::from_secs(8));
    // Nothing of them is left running: the hooks are reaped, the child
    // killed with its group.
    for file in ["pid", "child", "pid2"] {
        let pid = rig.read(file);
        assert!(!pid.is_empty(), "{file}");
        assert!(!alive(&pid), "{file} {pid} still runs");
    }
}

#[tokio::test]
async fn unsafe_and_inactive_files_are_skipped() {
    let mut rig = Rig::new(|_| {});
    let mark = |name: &str| format!("touch @OUT@/{name}");
    rig.hook("10-good", &mark("10-good"));
    rig.hook_mode("20-not-executable", &mark("20-not-executable"), 0o644);
    rig.hook_mode("30-world-writable", &mark("30-world-writable"), 0o757);
    rig.hook_mode("40-group-writable", &mark("40-group-writable"), 0o775);
    rig.hook("50-backup~", &mark("50-backup~"));
    rig.hook(".60-hidden", &mark(".60-hidden"));
    rig.hook("70-hook.dpkg-old", &mark("70-hook.dpkg-old"));
    rig.hook("75-hook.dpkg-dist", &mark("75-hook.dpkg-dist"));
    fs::create_dir(rig.dir.join("80-directory")).expect("a directory");
    // A symlink to a good executable elsewhere runs (as run-parts does).
    let elsewhere = rig.out.join("linked-target");
    fs::write(
        &elsewhere,
        format!("#!/bin/sh\ntouch {}/90-link\n", rig.out.display()),
    )
    .expect("target");
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o755)).expect("chmod");
    symlink(&elsewhere, rig.dir.join("90-link")).expect("symlink");
    symlink(rig.out.join("nowhere"), rig.dir.join("95-dangling")).expect("symlink");
    // Owned by someone else (nobody): refused even though it is 0755.
    let foreign = rig.hook("97-foreign", &mark("97-foreign"));
    nix::unistd::chown(&foreign, Some(nix::unistd::Uid::from_raw(65534)), None)
        .expect("chown (the tests run as root, as CI does)");

    let reports = rig.run(vec![link_up()]).await;
    let names: Vec<&str> = ran(&reports).iter().map(|r| r.hook.as_str()).collect();
    assert_eq!(names, ["10-good", "90-link"]);
    let mut marks: Vec<String> = fs::read_dir(&rig.out)
        .expect("out")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "linked-target")
        .collect();
    marks.sort();
    assert_eq!(marks, ["10-good", "90-link"]);
    let refusals = refused(&reports);
    assert_eq!(refusals.len(), 4, "{refusals:?}");
    assert_eq!(
        refusals[0],
        ("30-world-writable".into(), Refusal::Writable(0o757))
    );
    assert_eq!(
        refusals[1],
        ("40-group-writable".into(), Refusal::Writable(0o775))
    );
    assert!(matches!(&refusals[2], (n, Refusal::Unreadable(_)) if n == "95-dangling"));
    assert_eq!(refusals[3], ("97-foreign".into(), Refusal::Owner(65534)));
}

#[tokio::test]
async fn a_directory_others_can_write_runs_nothing() {
    let mut rig = Rig::new(|_| {});
    rig.hook("10-good", "touch @OUT@/ran");
    fs::set_permissions(&rig.dir, fs::Permissions::from_mode(0o777)).expect("chmod");
    let reports = rig.run(vec![link_up()]).await;
    assert!(ran(&reports).is_empty());
    assert_eq!(
        refused(&reports),
        [("hooks.d".to_owned(), Refusal::Writable(0o777))]
    );
    assert!(!rig.out.join("ran").exists());
}

#[tokio::test]
async fn a_missing_directory_is_fine() {
    let mut rig = Rig::new(|_| {});
    fs::remove_dir(&rig.dir).expect("rmdir");
    assert!(rig.run(vec![link_up()]).await.is_empty());
    // Created later: used from the next event on.
    fs::create_dir(&rig.dir).expect("mkdir");
    fs::set_permissions(&rig.dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    rig.hook("10-late", "true");
    assert_eq!(ran(&rig.run(vec![link_up()]).await).len(), 1);
}

#[tokio::test]
async fn exit_statuses_signals_and_output_are_reported() {
    let mut rig = Rig::new(|c| c.output_limit = 1000);
    rig.hook("10-fails", "echo to stdout\necho to stderr >&2\nexit 3");
    rig.hook("20-signal", "kill -USR1 $$");
    rig.hook(
        "30-chatty",
        "head -c 5000 /dev/zero | tr '\\0' x\necho done >&2",
    );
    fs::write(rig.dir.join("40-no-interpreter"), "not a script\n").expect("write");
    fs::set_permissions(
        rig.dir.join("40-no-interpreter"),
        fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    rig.hook("50-ok", "exit 0");
    let reports = rig.run(vec![link_up()]).await;
    let runs = ran(&reports);
    let outcomes: Vec<(&str, &HookOutcome)> =
        runs.iter().map(|r| (r.hook.as_str(), &r.outcome)).collect();
    assert_eq!(outcomes.len(), 5);
    assert_eq!(outcomes[0], ("10-fails", &HookOutcome::Exited(3)));
    assert_eq!(outcomes[1], ("20-signal", &HookOutcome::Signalled(10)));
    assert_eq!(outcomes[2], ("30-chatty", &HookOutcome::Exited(0)));
    assert!(
        matches!(outcomes[3], ("40-no-interpreter", HookOutcome::SpawnFailed(e)) if e.contains("format")),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[4], ("50-ok", &HookOutcome::Exited(0)));
    assert_eq!(runs[0].stdout, b"to stdout\n");
    assert_eq!(runs[0].stderr, b"to stderr\n");
    assert_eq!(runs[2].stdout, vec![b'x'; 1000]);
    assert_eq!(runs[2].stderr, b"done\n");
    assert_eq!(runs[2].dropped_output, 4000);
    assert_eq!(HookOutcome::Exited(3).to_string(), "exited with status 3");
}

#[tokio::test]
async fn a_background_process_holding_the_output_does_not_hold_the_queue() {
    let mut rig = Rig::new(|_| {});
    rig.hook(
        "10-daemonizes",
        "echo $$ > @OUT@/pid\n(sleep 5; echo late) &\necho early",
    );
    rig.hook("20-next", "true");
    let started = Instant::now();
    let reports = rig.run(vec![link_up()]).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    let runs = ran(&reports);
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].stdout, b"early\n");
    assert!(runs[0].outcome.is_success());
}

#[tokio::test]
async fn shutdown_stops_a_running_hook_and_drops_the_queue() {
    let mut rig = Rig::new(|_| {});
    rig.hook("10-hang", "echo $$ > @OUT@/pid\nexec sleep 30");
    for _ in 0..3 {
        rig.handle.notify(link_up()).expect("queued");
    }
    // Wait until the first run has started.
    let pid_file = rig.out.join("pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_to_string(&pid_file).unwrap_or_default().is_empty() {
        assert!(Instant::now() < deadline, "the hook never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    rig.shutdown.cancel();
    while let Some(done) = rig.tasks.join_next().await {
        done.expect("no panic").expect("the runner never fails");
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    let report = rig.reports.try_recv().expect("a report");
    assert!(
        matches!(&report, HookReport::Ran(run) if run.outcome == HookOutcome::Cancelled),
        "{report:?}"
    );
    // Only one ran; the queued two were dropped.
    assert!(rig.reports.try_recv().is_err());
    assert!(!alive(&rig.read("pid")));
    assert_eq!(rig.handle.notify(link_up()), Err(HooksError::Gone));
}

#[tokio::test]
async fn a_full_queue_drops_the_event_and_says_so() {
    let rig = Rig::new(|_| {});
    rig.hook("10-slow", "sleep 30");
    let mut full = 0;
    for _ in 0..(hooks::QUEUE_CAPACITY + 10) {
        if let Err(e) = rig.handle.notify(link_up()) {
            assert_eq!(e, HooksError::QueueFull("link-up"));
            full += 1;
        }
    }
    assert!(full >= 9, "{full}");
    // Stops the running hook (and its `sleep`) before the test ends.
    let mut rig = rig;
    rig.shutdown.cancel();
    while let Some(done) = rig.tasks.join_next().await {
        done.expect("no panic").expect("the runner never fails");
    }
}

#[tokio::test]
async fn reconfigure_moves_to_another_directory() {
    let mut rig = Rig::new(|_| {});
    rig.hook("10-old", "touch @OUT@/old");
    let other = rig.out.join("other.d");
    fs::create_dir(&other).expect("mkdir");
    fs::set_permissions(&other, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::write(
        other.join("10-new"),
        format!("#!/bin/sh\ntouch {}/new\n", rig.out.display()),
    )
    .expect("write");
    fs::set_permissions(other.join("10-new"), fs::Permissions::from_mode(0o755)).expect("chmod");
    rig.handle
        .reconfigure(HooksConfig::new(&other))
        .await
        .expect("reconfigured");
    let reports = rig.run(vec![link_up()]).await;
    assert_eq!(ran(&reports)[0].hook, "10-new");
    assert!(rig.out.join("new").exists() && !rig.out.join("old").exists());
}
