//! Workspace programs that a test runs as child processes: a crashing
//! writer, a courier to SIGKILL, the pppd stand-in, `peerctl` beside the
//! daemon's tests.
//!
//! Each is built on demand, in the running test's own target dir and
//! profile, with the features `cargo test --workspace` resolves: over the
//! whole workspace, dev-dependencies included. That matters: `cargo build
//! -p <crate>` resolves the features of that one crate, and so compiled a
//! second copy of tokio and everything above it into the same target dir
//! (CI once ran out of disk on it). Under `cargo test --workspace` the
//! program is already built and the call only checks it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, PoisonError};

/// What kind of cargo target a program is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Program {
    /// A `[[bin]]` of some workspace crate (`--bin`).
    Bin,
    /// An `examples/*.rs` of some workspace crate (`--example`).
    Example,
}

/// Builds (if needed) the workspace program `name` of `kind` and returns
/// the path of the executable in this test's target dir.
///
/// # Panics
/// When cargo cannot run or the build fails: a test needs the program.
pub fn workspace_program(kind: Program, name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<(Program, String), PathBuf>>> = Mutex::new(None);
    // Held across the build: cargo would serialise on the target dir anyway.
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(&(kind, name.to_owned())) {
        return path.clone();
    }
    // target/<profile>/deps/<test>-<hash>
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .to_owned();
    let target_dir = profile_dir.parent().expect("the target dir").to_owned();
    let flag = match kind {
        Program::Bin => "--bin",
        Program::Example => "--example",
    };
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--quiet", "--workspace", flag, name]);
    if kind == Program::Bin {
        // Building examples turns the dev-dependencies' features on, as
        // `cargo test` does; without them a bin resolves other features
        // (ed25519-dalek, sha2) and recompiles them and all above.
        build.arg("--examples");
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    build.env("CARGO_TARGET_DIR", &target_dir);
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building {flag} {name} failed");
    let path = match kind {
        Program::Bin => profile_dir.join(name),
        Program::Example => profile_dir.join("examples").join(name),
    };
    assert!(path.exists(), "{} missing after the build", path.display());
    built.insert((kind, name.to_owned()), path.clone());
    path
}
