//! Parsers and checks for single values, each stating the rule it enforces.
//!
//! Every function takes the text as written and returns the typed value or
//! a short message saying what was expected. Messages never repeat the
//! value of a secret (secrets are not passed here at all).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use peerd_core::AddressClass;

use crate::model::{Processed, WatchedInterface};

/// Shows user text in a message: quoted, escaped, cut at 60 characters.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 60;
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push_str("...");
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

/// A humantime duration: `"30s"`, `"5m"`, `"1h 30m"`, `"500ms"`.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|_| {
        format!(
            "invalid duration {}: expected a duration like \"30s\", \"5m\" or \"1h\"",
            quote(s)
        )
    })
}

/// Writes a duration back the way a user would, for messages.
pub(crate) fn show_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A size: a whole number with an optional unit, `"256KiB"`, `"1 MiB"`,
/// `"4096"`. Units: B, KiB, MiB, GiB (powers of 1024), kB, MB, GB (powers
/// of 1000).
pub(crate) fn size(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid size {}: expected a size like \"256KiB\" or \"1MiB\" (units: B, KiB, MiB, GiB, kB, MB, GB)",
            quote(s)
        )
    };
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(bad());
    }
    let (number, unit) = t.split_at(digits);
    let factor: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("size {} is too large", quote(s)))
}

/// A permission mode as an octal string, `"0660"` or `"660"`, at most
/// `0777` (no setuid, setgid or sticky bits).
pub(crate) fn mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    if t.is_empty() || t.len() > 4 || !t.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!(
            "invalid mode {}: expected octal permission bits like \"0660\"",
            quote(s)
        ));
    }
    let value = u32::from_str_radix(t, 8).map_err(|e| e.to_string())?;
    check_mode(value)
}

/// The `0777` limit shared by string and octal-integer modes.
pub(crate) fn check_mode(value: u32) -> Result<u32, String> {
    if value > 0o777 {
        return Err(format!(
            "mode {value:04o} has setuid, setgid or sticky bits; use at most \"0777\""
        ));
    }
    Ok(value)
}

/// An absolute path. Relative paths are refused: a daemon's working
/// directory is `/`, so they would not mean what the user expects.
pub(crate) fn absolute_path(s: &str) -> Result<PathBuf, String> {
    if s.contains('\0') {
        return Err("a path cannot contain a NUL character".to_owned());
    }
    if !s.starts_with('/') {
        return Err(format!(
            "{} is not an absolute path: write the full path, starting with /",
            quote(s)
        ));
    }
    Ok(PathBuf::from(s))
}

/// The longest Unix socket path: `sun_path` is 108 bytes with the NUL.
const MAX_SOCKET_PATH: usize = 107;

/// An absolute path that fits in a Unix socket address.
pub(crate) fn socket_path(s: &str) -> Result<PathBuf, String> {
    let path = absolute_path(s)?;
    if s.len() > MAX_SOCKET_PATH {
        return Err(format!(
            "a socket path has at most {MAX_SOCKET_PATH} bytes, this one has {}",
            s.len()
        ));
    }
    Ok(path)
}

/// `"auto"` or a Linux interface name. The kernel's `dev_valid_name()`:
/// 1 to 15 bytes (`IFNAMSIZ` is 16 with the NUL), not `.` or `..`, no
/// `/`, `:` or whitespace. Control characters are refused as well.
pub(crate) fn interface(s: &str) -> Result<WatchedInterface, String> {
    if s == "auto" {
        return Ok(WatchedInterface::Auto);
    }
    let bad = |why: &str| {
        Err(format!(
            "{} is not a network interface name: {why} (or write \"auto\" for the default-route interface)",
            quote(s)
        ))
    };
    if s.is_empty() {
        return bad("it is empty");
    }
    if s.len() > 15 {
        return bad("at most 15 bytes");
    }
    if s == "." || s == ".." {
        return bad("not \".\" or \"..\"");
    }
    if s.chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return bad("no '/', ':', spaces or control characters");
    }
    Ok(WatchedInterface::Named(s.to_owned()))
}

/// A host name or IP address for a mail server. Host names: at most 253
/// bytes, dot-separated labels of 1 to 63 letters, digits, `-` or `_`, not
/// starting or ending with `-`; one trailing dot allowed. IPv6 may be
/// written with or without brackets. The port goes in `port`, not here.
pub(crate) fn host(s: &str) -> Result<String, String> {
    let unbracketed = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    if unbracketed.parse::<IpAddr>().is_ok() {
        return Ok(unbracketed.to_owned());
    }
    if let Some((h, p)) = s.rsplit_once(':')
        && !h.contains(':')
        && !p.is_empty()
        && p.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "{} has a port: write the host alone and put the port in `port`",
            quote(s)
        ));
    }
    let name = s.strip_suffix('.').unwrap_or(s);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("{} is not a host name or IP address", quote(s)));
    }
    Ok(s.to_owned())
}

/// Whether a (valid) host is loopback: `localhost`, 127.0.0.0/8, `::1`
/// (also as an IPv4-mapped address). Other names are not resolved: a name
/// that happens to resolve to 127.0.0.1 today is not trusted to tomorrow.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let h = host.strip_suffix('.').unwrap_or(host);
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<IpAddr>()
        .is_ok_and(|ip| AddressClass::of(ip) == AddressClass::Loopback)
}

/// Text sent to a server or a modem: no control characters (a CR or LF
/// would end the command and start another).
fn no_control(s: &str, what: &str) -> Result<(), String> {
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!(
            "{what} cannot contain control characters like {c:?}"
        ));
    }
    Ok(())
}

/// A login user name: 1 to 256 bytes, no control characters.
pub(crate) fn username(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the user name is empty".to_owned());
    }
    if s.len() > 256 {
        return Err("a user name has at most 256 bytes".to_owned());
    }
    no_control(s, "a user name")?;
    Ok(s.to_owned())
}

/// A Unix group name: 1 to 32 bytes, no `:`, `,`, `/`, whitespace or
/// control characters, not starting with `-` (what `groupadd` accepts,
/// loosely).
pub(crate) fn group(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 32 || s.starts_with('-') {
        return Err(format!(
            "{} is not a group name (1 to 32 characters, not starting with '-')",
            quote(s)
        ));
    }
    if s.chars()
        .any(|c| matches!(c, ':' | ',' | '/') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{} is not a group name: no ':', ',', '/', spaces or control characters",
            quote(s)
        ));
    }
    Ok(s.to_owned())
}

/// A pppd peer: the name of a file in `/etc/ppp/peers`. No `/`, not
/// starting with `.`, no whitespace or control characters.
pub(crate) fn pppd_peer(s: &str) -> Result<String, String> {
    if s.is_empty()
        || s.starts_with('.')
        || s.chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{} is not a pppd peer: write the name of a file in /etc/ppp/peers, like \"isp-a\"",
            quote(s)
        ));
    }
    Ok(s.to_owned())
}

/// Serial rates Linux knows (`termios` `Bxxx` constants).
pub(crate) const BAUD_RATES: &[u32] = &[
    50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600,
    115_200, 230_400, 460_800, 500_000, 576_000, 921_600, 1_000_000, 1_152_000, 1_500_000,
    2_000_000, 2_500_000, 3_000_000, 3_500_000, 4_000_000,
];

/// A standard serial rate.
pub(crate) fn baud(n: i64) -> Result<u32, String> {
    u32::try_from(n)
        .ok()
        .filter(|b| BAUD_RATES.contains(b))
        .ok_or_else(|| {
            format!("{n} is not a standard serial rate (like 9600, 57600, 115200, 460800)")
        })
}

/// A phone number for `ATD`: digits and the Hayes dial characters
/// `* # + , W P T ! @ A-D` (and `-` for readability), at most 40.
pub(crate) fn dial_number(s: &str) -> Result<String, String> {
    let ok = |c: char| c.is_ascii_digit() || "*#+,WwPpTt!@ABCDabcd-".contains(c);
    if s.is_empty() || s.len() > 40 || !s.chars().all(ok) {
        return Err(format!(
            "{} is not a number to dial: use 0-9, *, #, +, ',', W, P, T, !, @, A-D or '-' (at most 40)",
            quote(s)
        ));
    }
    Ok(s.to_owned())
}

/// A modem command: starts with `AT`, at most 250 bytes, no control
/// characters (peerd adds the CR itself).
pub(crate) fn at_command(s: &str) -> Result<String, String> {
    no_control(s, "a modem command")?;
    if !s.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("AT")) {
        return Err(format!(
            "{} is not a modem command: each starts with \"AT\"",
            quote(s)
        ));
    }
    if s.len() > 250 {
        return Err("a modem command has at most 250 bytes".to_owned());
    }
    Ok(s.to_owned())
}

/// An IMAP folder name: 1 to 255 bytes, no control characters (they
/// would break the IMAP command).
pub(crate) fn folder(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 255 {
        return Err("a folder name has 1 to 255 bytes".to_owned());
    }
    no_control(s, "a folder name")?;
    Ok(s.to_owned())
}

/// `"delete"`, `"keep"` or `"move:<folder>"`.
pub(crate) fn processed(s: &str) -> Result<Processed, String> {
    match s {
        "delete" => Ok(Processed::Delete),
        "keep" => Ok(Processed::Keep),
        _ => match s.strip_prefix("move:") {
            Some("") => Err("\"move:\" needs a folder, like \"move:peerd\"".to_owned()),
            Some(f) => folder(f).map(Processed::Move),
            None => Err(format!(
                "unknown value {}: expected \"delete\", \"keep\" or \"move:<folder>\"",
                quote(s)
            )),
        },
    }
}

/// A service target, `IP:port` (`"127.0.0.1:22"`, `"[::1]:22"`), port 1
/// or above.
pub(crate) fn service_target(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s.parse().map_err(|_| {
        format!(
            "{} is not an address and port like \"127.0.0.1:22\" or \"[::1]:22\"",
            quote(s)
        )
    })?;
    if addr.port() == 0 {
        return Err("port 0 cannot be connected to".to_owned());
    }
    Ok(addr)
}

/// An IP address to listen on: unicast or unspecified.
pub(crate) fn listen_address(s: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = s.parse().map_err(|_| {
        format!(
            "{} is not an IP address (like \"0.0.0.0\", \"::\" or \"192.0.2.1\")",
            quote(s)
        )
    })?;
    let multicast = ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]);
    if multicast {
        return Err(format!(
            "cannot listen on {ip}: it is a multicast or broadcast address"
        ));
    }
    Ok(ip)
}

/// An address class for `publish`: only the announceable ones.
pub(crate) fn publish_class(s: &str) -> Result<AddressClass, String> {
    match s.parse::<AddressClass>() {
        Ok(c) if c.is_announceable() => Ok(c),
        Ok(AddressClass::LinkLocal) => Err(
            "link-local addresses are never announced (they mean nothing off the link); use \"public\", \"cgnat\" or \"private\"".to_owned(),
        ),
        Ok(c) => Err(format!(
            "{c} addresses are never announced; use \"public\", \"cgnat\" or \"private\""
        )),
        Err(_) => Err(format!(
            "unknown address class {}: expected \"public\", \"cgnat\" or \"private\"",
            quote(s)
        )),
    }
}

/// Edit distance, for "did you mean" hints on misspelled keys.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["", "30", "soon", "-5s", "5 parsecs"] {
            let err = duration(bad).unwrap_err();
            assert!(err.contains("like \"30s\""), "{err}");
        }
        assert_eq!(show_duration(Duration::from_secs(90)), "1m 30s");
    }

    #[test]
    fn sizes() {
        assert_eq!(size("256KiB"), Ok(256 * 1024));
        assert_eq!(size("1 MiB"), Ok(1 << 20));
        assert_eq!(size("2GiB"), Ok(2 << 30));
        assert_eq!(size("64kB"), Ok(64_000));
        assert_eq!(size("3MB"), Ok(3_000_000));
        assert_eq!(size("1GB"), Ok(1_000_000_000));
        assert_eq!(size("512B"), Ok(512));
        assert_eq!(size("4096"), Ok(4096));
        for bad in ["", "KiB", "1.5MiB", "10 KB", "-1", "5 kib", "1TiB"] {
            assert!(size(bad).unwrap_err().contains("like \"256KiB\""), "{bad}");
        }
        assert!(
            size("99999999999999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
        assert!(size("20000000000GiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn modes() {
        assert_eq!(mode("0660"), Ok(0o660));
        assert_eq!(mode("600"), Ok(0o600));
        assert_eq!(mode("0777"), Ok(0o777));
        assert!(mode("4755").unwrap_err().contains("setuid"));
        assert!(mode("0o660").unwrap_err().contains("octal"));
        assert!(mode("0668").unwrap_err().contains("octal"));
        assert!(mode("").unwrap_err().contains("octal"));
        assert!(mode("00660").unwrap_err().contains("octal"));
    }

    #[test]
    fn paths() {
        assert_eq!(absolute_path("/var/lib/peerd"), Ok("/var/lib/peerd".into()));
        assert!(absolute_path("var/lib").unwrap_err().contains("absolute"));
        assert!(absolute_path("").unwrap_err().contains("absolute"));
        assert!(absolute_path("/a\0b").unwrap_err().contains("NUL"));
        let long = format!("/{}", "s".repeat(107));
        assert!(socket_path(&long).unwrap_err().contains("107 bytes"));
        assert!(socket_path(&long[..107]).is_ok());
    }

    #[test]
    fn interface_names_follow_dev_valid_name() {
        assert_eq!(interface("auto"), Ok(WatchedInterface::Auto));
        for ok in ["ppp0", "eth0", "wlp3s0", "enx001122334455", "br-lan", "a"] {
            assert_eq!(interface(ok), Ok(WatchedInterface::Named(ok.into())));
        }
        for bad in [
            "",
            ".",
            "..",
            "eth0:1",
            "a/b",
            "a b",
            "sixteen_chars_xx",
            "tab\t",
        ] {
            assert!(interface(bad).is_err(), "{bad:?}");
        }
        assert!(interface("fifteen_chars_x").is_ok());
    }

    #[test]
    fn hosts_and_loopback() {
        for ok in [
            "smtp.isp-a.example",
            "localhost",
            "127.0.0.1",
            "::1",
            "[::1]",
            "mx_1.example.",
            "a",
        ] {
            assert!(host(ok).is_ok(), "{ok}");
        }
        assert_eq!(host("[::1]"), Ok("::1".into()));
        assert!(host("smtp.example:587").unwrap_err().contains("port"));
        for bad in [
            "",
            "smtp example",
            "-x.example",
            "a..b",
            "smtp.example/x",
            "ex\u{e4}mple.org",
        ] {
            assert!(host(bad).is_err(), "{bad:?}");
        }
        for lo in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback_host(lo), "{lo}");
        }
        for remote in [
            "smtp.example",
            "10.0.0.1",
            "::2",
            "localhost.example",
            "128.0.0.1",
        ] {
            assert!(!is_loopback_host(remote), "{remote}");
        }
    }

    #[test]
    fn modem_values() {
        assert_eq!(baud(115_200), Ok(115_200));
        assert!(baud(115_201).is_err());
        assert!(baud(-1).is_err());
        assert!(baud(i64::MAX).is_err());
        assert!(dial_number("*99#").is_ok());
        assert!(dial_number("+81-3-1234,,5678W").is_ok());
        for bad in ["", "*99#;", "ATD 123", "12 34", "1\r2"] {
            assert!(dial_number(bad).is_err(), "{bad:?}");
        }
        assert!(at_command("ATZ").is_ok());
        assert!(at_command("at+cgdcont=1,\"IP\",\"internet\"").is_ok());
        assert!(at_command("ATZ\r\nATH").unwrap_err().contains("control"));
        assert!(at_command("Z").unwrap_err().contains("AT"));
        assert!(at_command("").unwrap_err().contains("AT"));
    }

    #[test]
    fn processed_values() {
        assert_eq!(processed("delete"), Ok(Processed::Delete));
        assert_eq!(processed("keep"), Ok(Processed::Keep));
        assert_eq!(
            processed("move:Archive/peerd"),
            Ok(Processed::Move("Archive/peerd".into()))
        );
        assert!(processed("move:").unwrap_err().contains("needs a folder"));
        assert!(processed("move:a\nb").unwrap_err().contains("control"));
        assert!(processed("trash").unwrap_err().contains("move:<folder>"));
    }

    #[test]
    fn names_and_addresses() {
        assert!(group("peerd").is_ok());
        for bad in ["", "-x", "a:b", "a b", &"g".repeat(33)] {
            assert!(group(bad).is_err(), "{bad:?}");
        }
        assert!(pppd_peer("isp-a").is_ok());
        for bad in ["", "../x", ".hidden", "a b"] {
            assert!(pppd_peer(bad).is_err(), "{bad:?}");
        }
        assert!(username("alice@example.org").is_ok());
        assert!(username("a\r\nb").is_err());
        assert!(username("").is_err());
        assert_eq!(
            service_target("127.0.0.1:22"),
            Ok("127.0.0.1:22".parse().unwrap())
        );
        assert!(service_target("[::1]:22").is_ok());
        assert!(service_target("localhost:22").is_err());
        assert!(service_target("127.0.0.1:0").is_err());
        assert!(listen_address("::").is_ok());
        assert!(
            listen_address("224.0.0.1")
                .unwrap_err()
                .contains("multicast")
        );
        assert!(listen_address("nope").is_err());
        assert_eq!(publish_class("cgnat"), Ok(AddressClass::Cgnat));
        assert!(
            publish_class("link-local")
                .unwrap_err()
                .contains("never announced")
        );
        assert!(
            publish_class("loopback")
                .unwrap_err()
                .contains("never announced")
        );
        assert!(publish_class("global").unwrap_err().contains("unknown"));
    }

    #[test]
    fn quoting_escapes_and_cuts() {
        assert_eq!(quote("a\"b\n"), "\"a\\\"b\\n\"");
        assert_eq!(
            quote(&"x".repeat(100)),
            format!("\"{}...\"", "x".repeat(60))
        );
        assert_eq!(edit_distance("pasword", "password"), 1);
        assert_eq!(edit_distance("key-file", "key_file"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
