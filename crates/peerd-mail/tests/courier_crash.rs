//! The courier's process is killed with SIGKILL after the announcement was
//! queued and while its mail is being sent; on restart the announcement
//! still goes out. The first process runs `examples/courier_child.rs`; its
//! submission server is a TCP listener that accepts and never answers, so
//! the send is provably in flight when the kill comes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Host, HostOptions, candidate, config_text};
use peerd_mail::CourierEvent;
use peerd_testkit::{MailStack, Program, workspace_program};

/// The example binary, built on demand in this test's target dir.
fn child_binary() -> PathBuf {
    workspace_program(Program::Example, "courier_child")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_queue_and_send_loses_nothing() {
    let child = tokio::task::spawn_blocking(child_binary).await.unwrap();
    let stack = MailStack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice_dir = dir.path().join("alice");
    std::fs::create_dir_all(&alice_dir).unwrap();
    // the child's own key file (the restarted courier below seals with
    // the test's fixed alice identity; what is queued is only the intent)
    peerd_core::Identity::create(&alice_dir.join("identity.key")).unwrap();

    // A submission server that accepts connections and says nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let stalled = HostOptions {
        smtp_port: Some(silent_port),
        ..HostOptions::default()
    };
    let config = alice_dir.join("peerd.toml");
    std::fs::write(
        &config,
        config_text(
            &stack,
            &alice_dir,
            "alice",
            "isp-a.test",
            "hitoshi",
            "isp-b.test",
            &stalled,
        ),
    )
    .unwrap();
    set_mode(&config, 0o600);
    let mut process = Command::new(&child)
        .arg(&config)
        .arg("203.0.113.77:7447")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(process.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "queued");
    // the send is in flight: the courier connected to the silent server
    silent.set_nonblocking(false).unwrap();
    let (_conn, _) = tokio::task::spawn_blocking(move || silent.accept())
        .await
        .unwrap()
        .unwrap();
    process.kill().unwrap(); // SIGKILL
    let status = process.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed by SIGKILL"
    );

    // Restart with the real server: the queued announcement goes out.
    let mut hitoshi = Host::start(
        &stack,
        &dir.path().join("hitoshi"),
        "hitoshi",
        "isp-b.test",
        "alice",
        "isp-a.test",
        &HostOptions::default(),
    );
    let alice = Host::start(
        &stack,
        &alice_dir,
        "alice",
        "isp-a.test",
        "hitoshi",
        "isp-b.test",
        &HostOptions::default(),
    );
    let got = hitoshi
        .wait_for(Duration::from_secs(30), |e| match e {
            CourierEvent::AnnouncementReceived { candidates, .. } => Some(candidates.clone()),
            _ => None,
        })
        .await;
    assert_eq!(got, [candidate("203.0.113.77:7447")]);
    alice.stop().await;
    hitoshi.stop().await;
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
