//! peerctl's command line, run as the real binary: help, usage errors,
//! argument checks, "daemon not reachable" (exit 69) when no daemon
//! listens, and shell completions. peerctl against a serving control
//! socket, command by command, is tested in crates/peerd/tests/peerctl.rs
//! (it needs the daemon's server).

use std::process::{Command, Output};

use peerd_core::Identity;

const EX_USAGE: i32 = 2;
const EX_UNAVAILABLE: i32 = 69;

/// peerctl with `args`, with no `$PEERD_SOCKET` from the test's environment.
fn peerctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peerctl"))
        .args(args)
        .env_remove("PEERD_SOCKET")
        .output()
        .expect("run peerctl")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A real public key, as `peerd pubkey` prints it.
fn key() -> String {
    Identity::from_seed(&[5; 32]).public_key().to_string()
}

/// Every command path INTERFACE.md lists (without the *(later)* ones).
const COMMANDS: &[&[&str]] = &[
    &[],
    &["status"],
    &["peers"],
    &["peer"],
    &["peer", "add"],
    &["peer", "remove"],
    &["outbox"],
    &["announce"],
    &["check"],
    &["call"],
    &["connect"],
    &["disconnect"],
    &["open"],
    &["link"],
    &["link", "up"],
    &["link", "down"],
    &["link", "status"],
    &["events"],
    &["key"],
];

#[test]
fn every_command_has_help() {
    for path in COMMANDS {
        for flag in ["--help", "-h"] {
            let mut args = path.to_vec();
            args.push(flag);
            let out = peerctl(&args);
            assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
            let help = String::from_utf8(out.stdout).unwrap();
            let usage = ["Usage: peerctl"]
                .iter()
                .chain(path.iter())
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            assert!(help.contains(&usage), "{args:?}: {help}");
            assert!(help.contains("--socket <PATH>"), "{args:?}: {help}");
        }
    }
}

#[test]
fn top_level_help_documents_the_exit_statuses() {
    let help = String::from_utf8(peerctl(&["--help"]).stdout).unwrap();
    for code in ["69", "75", "77"] {
        assert!(help.contains(&format!("  {code}  ")), "{help}");
    }
    assert!(help.contains("PEERD_SOCKET"), "{help}");
}

#[test]
fn listing_commands_take_json_and_others_do_not() {
    for path in [
        &["status"][..],
        &["peers"],
        &["outbox"],
        &["link", "status"],
        &["events"],
        &["key"],
    ] {
        let mut args = path.to_vec();
        args.push("--json");
        assert_eq!(
            peerctl(&args).status.code(),
            Some(EX_UNAVAILABLE),
            "{args:?}"
        );
    }
    for args in [&["check", "--json"][..], &["link", "up", "--json"]] {
        assert_eq!(peerctl(args).status.code(), Some(EX_USAGE), "{args:?}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let key = key();
    let long_name = "x".repeat(33);
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["peer"],
        &["link"],
        &["link", "sideways"],
        &["status", "extra"],
        &["peer", "add", "hitoshi", "--email", "h@isp-b.example"],
        &["peer", "add", "hitoshi", "--key", &key],
        &["peer", "add", "--email", "h@isp-b.example", "--key", &key],
        &[
            "peer",
            "add",
            "Hitoshi",
            "--email",
            "h@isp-b.example",
            "--key",
            &key,
        ],
        &[
            "peer",
            "add",
            "hitoshi",
            "--email",
            "not-an-address",
            "--key",
            &key,
        ],
        &[
            "peer",
            "add",
            "hitoshi",
            "--email",
            "a b@example.org",
            "--key",
            &key,
        ],
        &[
            "peer",
            "add",
            "hitoshi",
            "--email",
            "h@isp-b.example",
            "--key",
            "AAAA",
        ],
        &["peer", "remove"],
        &["peer", "remove", "../etc"],
        &["announce", "ok", "Not-Ok"],
        &["call"],
        &["call", "hitoshi", "--wait", "0"],
        &["call", "hitoshi", "--wait", "soon"],
        &["call", "hitoshi", "--wait", "-5"],
        &["connect", &long_name],
        &["disconnect", ""],
        &["open", "hitoshi", "--service", "SSH"],
        &["open", "hitoshi", "--service"],
        &["--socket"],
        &["--socket", "", "status"],
    ];
    for args in cases {
        let out = peerctl(args);
        assert_eq!(
            out.status.code(),
            Some(EX_USAGE),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty() || args.is_empty(), "{args:?}");
        assert!(!stderr(&out).contains("no control protocol"), "{args:?}");
    }
}

#[test]
fn later_commands_do_not_exist_yet() {
    for args in [
        &["peer", "revoke", "hitoshi"][..],
        &["pair", "invite", "hitoshi", "--email", "h@isp-b.example"],
        &["pair", "list"],
    ] {
        assert_eq!(peerctl(args).status.code(), Some(EX_USAGE), "{args:?}");
    }
}

#[test]
fn a_fingerprint_is_refused_as_key_with_a_hint() {
    let fingerprint = Identity::from_seed(&[5; 32])
        .public_key()
        .fingerprint()
        .to_string();
    let out = peerctl(&[
        "peer",
        "add",
        "hitoshi",
        "--email",
        "hitoshi@isp-b.example",
        "--key",
        &fingerprint,
    ]);
    assert_eq!(out.status.code(), Some(EX_USAGE));
    let err = stderr(&out);
    assert!(
        err.contains("this is a key fingerprint, not a key"),
        "{err}"
    );
    assert!(err.contains("the first line of `peerd pubkey`"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn valid_commands_report_the_daemon_unreachable() {
    let key = key();
    let cases: &[&[&str]] = &[
        &["status"],
        &["status", "--json"],
        &["peers"],
        &[
            "peer",
            "add",
            "hitoshi",
            "--email",
            "hitoshi@isp-b.example",
            "--key",
            &key,
        ],
        &[
            "peer",
            "add",
            "me-on-phone",
            "--email",
            "me@example.org",
            "--key",
            &key,
            "--no-announce",
            "--accept-unsigned",
        ],
        &["peer", "remove", "hitoshi"],
        &["outbox"],
        &["announce"],
        &["announce", "hitoshi", "bob_2"],
        &["check"],
        &["call", "hitoshi"],
        &["call", "hitoshi", "--wait", "30"],
        &["connect", "hitoshi"],
        &["disconnect", "hitoshi"],
        &["open", "hitoshi"],
        &["open", "hitoshi", "--service", "ssh"],
        &["link", "up"],
        &["link", "down"],
        &["link", "status"],
        &["events"],
        &["events", "--json"],
        &["key"],
    ];
    for args in cases {
        let mut with_socket = vec!["--socket", "/nonexistent/peerd-test.sock"];
        with_socket.extend_from_slice(args);
        let out = peerctl(&with_socket);
        assert_eq!(out.status.code(), Some(EX_UNAVAILABLE), "{args:?}");
        assert!(
            out.stdout.is_empty(),
            "{args:?}: nothing is faked on stdout"
        );
        let err = stderr(&out);
        assert!(err.starts_with("peerctl: cannot "), "{err}");
        assert!(
            err.contains("peerd is not reachable at /nonexistent/peerd-test.sock: "),
            "{err}"
        );
        assert!(err.contains("is peerd running?"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn the_socket_comes_from_the_option_the_environment_or_the_default() {
    let run = |args: &[&str], env: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerctl"));
        cmd.args(args).env_remove("PEERD_SOCKET");
        if let Some(value) = env {
            cmd.env("PEERD_SOCKET", value);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(EX_UNAVAILABLE));
        stderr(&out)
    };
    assert!(run(&["status"], None).contains("at /run/peerd/control.sock:"));
    assert!(run(&["status"], Some("")).contains("at /run/peerd/control.sock:"));
    assert!(run(&["status"], Some("/tmp/env.sock")).contains("at /tmp/env.sock:"));
    assert!(
        run(
            &["status", "--socket", "/tmp/opt.sock"],
            Some("/tmp/env.sock")
        )
        .contains("at /tmp/opt.sock:")
    );
    assert!(run(&["--socket", "/tmp/opt.sock", "key"], None).contains("at /tmp/opt.sock:"));
}

#[test]
fn completions_are_generated_without_a_daemon() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = peerctl(&[
            "--socket",
            "/nonexistent/peerd-test.sock",
            "completions",
            shell,
        ]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("peerctl"), "{shell}");
        for word in ["announce", "disconnect", "service", "json"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    assert_eq!(
        peerctl(&["completions", "tcsh"]).status.code(),
        Some(EX_USAGE)
    );
    assert_eq!(peerctl(&["completions"]).status.code(), Some(EX_USAGE));
    // not in the list of daemon commands
    let help = String::from_utf8(peerctl(&["--help"]).stdout).unwrap();
    assert!(!help.contains("completions"), "{help}");
    let help = String::from_utf8(peerctl(&["completions", "--help"]).stdout).unwrap();
    assert!(help.contains("bash_completion"), "{help}");
}
