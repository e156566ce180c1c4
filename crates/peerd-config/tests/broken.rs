//! Every broken config in `tests/data/broken/` gives exactly the problems in
//! its `.expected` file.
//!
//! Path convention (shared with the `peerd check-config` test, which
//! compares its stderr to the same `.expected` files): the working
//! directory is this crate's directory (`crates/peerd-config`, which is
//! where cargo runs this test) and each file is passed as the relative path
//! `tests/data/broken/NN-name.toml`, so every problem line starts with that
//! path. Each `.expected` file is the `Display` of the `Problems` followed
//! by one newline. Every fixture is set to mode 0644 first: git does not
//! keep modes, and `11-inline-password-0644.toml` depends on it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const DIR: &str = "tests/data/broken";

fn fixtures() -> Vec<PathBuf> {
    let here = std::env::current_dir().expect("a working directory");
    assert_eq!(
        here,
        Path::new(env!("CARGO_MANIFEST_DIR")),
        "run from the crate directory (cargo does)"
    );
    let mut files: Vec<PathBuf> = fs::read_dir(DIR)
        .expect("tests/data/broken exists")
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_fixture_gives_exactly_its_expected_problems() {
    let files = fixtures();
    assert!(files.len() >= 12, "only {} fixtures", files.len());
    let mut failures = Vec::new();
    for toml in &files {
        fs::set_permissions(toml, fs::Permissions::from_mode(0o644)).unwrap();
        let expected_path = toml.with_extension("expected");
        let expected = fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        let got = match peerd_config::load(toml) {
            Ok(loaded) => format!(
                "ACCEPTED (with {} warnings), but every fixture must be refused",
                loaded.warnings.len()
            ),
            Err(problems) => {
                assert!(
                    problems.errors().count() > 0,
                    "{}: refused without an error",
                    toml.display()
                );
                format!("{problems}\n")
            },
        };
        if got != expected {
            failures.push(format!(
                "--- {}\nexpected:\n{expected}got:\n{got}",
                toml.display()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_expected_line_names_its_fixture_with_a_position() {
    for toml in fixtures() {
        let expected = fs::read_to_string(toml.with_extension("expected")).unwrap();
        let prefix = format!("{}:", toml.display());
        assert!(expected.ends_with('\n') && !expected.ends_with("\n\n"));
        for line in expected.lines() {
            let rest = line
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{line:?} does not start with {prefix:?}"));
            let mut parts = rest.splitn(3, ':');
            let line_no: usize = parts.next().unwrap().parse().unwrap();
            let col: usize = parts.next().unwrap().parse().unwrap();
            assert!(line_no >= 1 && col >= 1, "{line}");
            assert!(parts.next().unwrap().starts_with(' '), "{line}");
        }
    }
}

#[test]
fn the_many_problems_fixture_reports_them_all() {
    let path = Path::new(DIR).join("12-many-problems.toml");
    let problems = peerd_config::load(&path).unwrap_err();
    assert_eq!(problems.errors().count(), 20);
    let lines: Vec<usize> = problems.0.iter().map(|p| p.line).collect();
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    assert_eq!(lines, sorted, "problems come in file order");
}

#[test]
fn the_inline_password_is_never_shown() {
    let path = Path::new(DIR).join("11-inline-password-0644.toml");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let problems = peerd_config::load(&path).unwrap_err();
    let all = format!("{problems} {problems:?}");
    assert!(!all.contains("correct horse"), "{all}");
}
