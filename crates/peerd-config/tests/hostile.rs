//! Hostile and absurd input: a clear refusal, never a panic, a hang or a
//! flood of output.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use peerd_config::{MAX_CONFIG_LEN, MAX_PROBLEMS, Problems, load, parse};
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../../../config/peerd.toml");

fn refuse(text: &str) -> Problems {
    match parse(text, Path::new("h.toml"), 0o644) {
        Ok(_) => panic!("accepted: {:?}", &text[..text.len().min(200)]),
        Err(p) => {
            assert!(p.errors().count() >= 1);
            assert!(p.0.len() <= MAX_PROBLEMS + 1, "{} problems", p.0.len());
            // Every problem prints on one line.
            for problem in &p.0 {
                assert!(!problem.to_string().contains('\n'), "{problem}");
            }
            p
        },
    }
}

/// A deterministic stream of bytes (xorshift), so failures reproduce.
fn noise(len: usize, alphabet: &[u8]) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet
                [usize::try_from(x % alphabet.len() as u64).expect("the index is below the length")]
        })
        .collect()
}

#[test]
fn a_megabyte_of_toml_like_garbage() {
    let text = String::from_utf8(noise(1_000_000, b"[]{}=\"'.,#\n \tazAZ09\\-_")).unwrap();
    let start = Instant::now();
    let p = refuse(&text);
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_eq!(p.0.len(), MAX_PROBLEMS + 1);
    assert!(
        p.0[MAX_PROBLEMS]
            .message
            .starts_with(&format!("stopping after {MAX_PROBLEMS} problems"))
    );
}

#[test]
fn random_bytes_from_a_file_are_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.toml");
    let all: Vec<u8> = (0..=255).collect();
    fs::write(&path, noise(1_000_000, &all)).unwrap();
    let p = load(&path).unwrap_err();
    assert_eq!(p.0.len(), 1);
    assert!(p.0[0].message.contains("not UTF-8"), "{p}");
    assert!(p.0[0].line >= 1);
}

#[test]
fn too_large_is_refused_before_parsing() {
    let text = format!("# {}\n", "x".repeat(MAX_CONFIG_LEN));
    let p = refuse(&text);
    assert_eq!(
        p.to_string(),
        "h.toml: the file is larger than 1024 KiB; a peerd config is a few KiB"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.toml");
    fs::write(&path, &text).unwrap();
    assert!(
        load(&path)
            .unwrap_err()
            .to_string()
            .contains("larger than 1024 KiB")
    );
}

#[test]
fn deep_nesting() {
    let depth = 100_000;
    let arrays = format!("a = {}{}\n", "[".repeat(depth), "]".repeat(depth));
    refuse(&arrays);
    let inline = format!("a = {}{}\n", "{b = ".repeat(depth), "}".repeat(depth));
    refuse(&inline);
    let dotted = format!("{} = 1\n", vec!["a"; depth].join("."));
    let p = refuse(&dotted);
    assert!(p.to_string().contains("nested too deeply"), "{p}");
    let headers = format!("[{}]\n", vec!["a"; depth].join("."));
    refuse(&headers);
    let array_tables = format!("[[{}]]\n", vec!["a"; depth].join("."));
    refuse(&array_tables);
    // Moderately deep, valid TOML: unknown sections, not a crash.
    let fine = format!("[{}]\nx = 1\n", vec!["a"; 50].join("."));
    assert!(refuse(&fine).to_string().contains("unknown section [a]"));
}

#[test]
fn nul_and_control_bytes() {
    refuse("[identity]\nname = \"al\0ice\"\n");
    refuse("\0\0\0\0");
    refuse("[identity\0]\n");
    // Escaped NUL is valid TOML; it is refused by the value checks.
    let p = refuse(&EXAMPLE.replace("name = \"alice\"", "name = \"al\\u0000ice\""));
    assert!(p.to_string().contains("`identity.name`"), "{p}");
    let p = refuse(&EXAMPLE.replace(
        "dir = \"/var/lib/peerd\"",
        "dir = \"/var/lib\\u0000/peerd\"",
    ));
    assert!(p.to_string().contains("NUL"), "{p}");
}

#[test]
fn huge_and_odd_numbers() {
    for port in [
        "99999999999999999999999999999999999999",
        "-99999999999999999999999999999999999999",
        "0x7fffffffffffffff",
        "-9223372036854775808",
        "inf",
        "nan",
        "1e308",
        "0b1111111111111111111111111111111111111111111111111111111111111111",
    ] {
        let text = EXAMPLE.replace("port = 7447", &format!("port = {port}"));
        let p = refuse(&text);
        assert!(p.to_string().contains("`listen.port`"), "{port}: {p}");
    }
    let text = EXAMPLE.replace(
        "valid_for = \"1h\"",
        "valid_for = \"99999999999999999999999h\"",
    );
    assert!(refuse(&text).to_string().contains("`announce.valid_for`"));
    let text = EXAMPLE.replace("\"256KiB\"", "\"18446744073709551615GiB\"");
    assert!(refuse(&text).to_string().contains("too large"));
}

#[test]
fn long_values_are_cut_in_messages() {
    let text = EXAMPLE.replace(
        "interface = \"ppp0\"",
        &format!("interface = \"{}\"", "x".repeat(500_000)),
    );
    let p = refuse(&text);
    assert_eq!(p.0.len(), 1);
    assert!(p.to_string().len() < 300, "{p}");
}

#[test]
fn many_peers() {
    let mut text = EXAMPLE.to_owned();
    for i in 0..5000 {
        text.push_str(&format!(
            "[[peer]]\nname = \"p{i}\"\nemail = \"p{i}@example.org\"\nformat = \"plain\"\n"
        ));
    }
    // One duplicate at the end.
    text.push_str("[[peer]]\nname = \"p7\"\nemail = \"x@example.org\"\nformat = \"plain\"\n");
    let start = Instant::now();
    let p = refuse(&text);
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_eq!(p.0.len(), 1, "{p}");
    assert!(p.0[0].message.starts_with("peer `p7` is defined twice"));
}

proptest! {
    #[test]
    fn random_text_never_panics(text in "\\PC{0,400}") {
        let _ = parse(&text, Path::new("p.toml"), 0o600);
    }

    #[test]
    fn random_toml_shaped_text_never_panics(text in "[\\[\\]{}=\"'.,#\n a-z0-9_]{0,400}") {
        let _ = parse(&text, Path::new("p.toml"), 0o600);
    }

    #[test]
    fn mutated_example_never_panics(start in 0..EXAMPLE.len(), len in 0usize..40, insert in "\\PC{0,20}") {
        let mut text = EXAMPLE.to_owned();
        let start = (0..=start).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        let end = (start + len..=text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
        text.replace_range(start..end, &insert);
        if let Err(p) = parse(&text, Path::new("p.toml"), 0o600) {
            prop_assert!(p.errors().count() >= 1);
            for problem in &p.0 {
                prop_assert!(problem.line >= 1 && problem.col >= 1, "{}", problem);
            }
        }
    }
}
