//! Unit and property tests of the wire format.

use super::*;
use proptest::prelude::*;

/// What a server does to a message for RETR (RFC 1939 section 3): ends the
/// last line with CRLF if it has none, stuffs lines that start with `.`,
/// and appends the terminating line.
fn server_stuff(body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        body.extend_from_slice(b"\r\n");
    }
    let mut out = Vec::new();
    let mut at_line_start = true;
    for &b in &body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Feeds `input` to a [`LineBuffer`] in pieces of the given sizes (cycled)
/// and passes each line to `on_line` until it returns true. Returns how
/// many input bytes were handed to the buffer.
fn drive(
    input: &[u8],
    chunks: &[usize],
    max_line: usize,
    mut on_line: impl FnMut(&[u8]) -> bool,
) -> (Result<bool>, usize) {
    let mut lines = LineBuffer::new(max_line);
    let mut fed = 0;
    let mut chunk = chunks.iter().copied().cycle();
    loop {
        match lines.next_line() {
            Err(err) => return (Err(err), fed),
            Ok(Some(line)) => {
                if on_line(line) {
                    return (Ok(true), fed);
                }
            },
            Ok(None) => {
                if fed == input.len() {
                    return (Ok(false), fed);
                }
                let spare = lines.spare();
                assert!(!spare.is_empty(), "spare space must never be empty");
                let want = chunk.next().unwrap_or(1).max(1);
                let n = want.min(spare.len()).min(input.len() - fed);
                spare[..n].copy_from_slice(&input[fed..fed + n]);
                lines.filled(n);
                fed += n;
            },
        }
    }
}

/// Parses a whole RETR-style body from `wire` (after the status line).
fn read_body(wire: &[u8], chunks: &[usize], max: u64) -> Result<Option<Vec<u8>>> {
    let mut body = Body::new(max);
    let mut too_large = false;
    let (done, _) = drive(wire, chunks, 1000, |line| match body.push(line) {
        Push::More => false,
        Push::Done => true,
        Push::TooLarge => {
            too_large = true;
            true
        },
    });
    if too_large {
        return Err(Error::MessageTooLarge { msg: 1, max });
    }
    Ok(done?.then(|| body.into_bytes()))
}

#[test]
fn empty_message() {
    assert_eq!(read_body(b".\r\n", &[100], 100).unwrap().unwrap(), b"");
}

#[test]
fn line_that_is_just_a_dot() {
    let wire = server_stuff(b"a\r\n.\r\nb\r\n");
    assert_eq!(wire, b"a\r\n..\r\nb\r\n.\r\n");
    assert_eq!(
        read_body(&wire, &[1], 100).unwrap().unwrap(),
        b"a\r\n.\r\nb\r\n"
    );
}

#[test]
fn leading_dots_are_unstuffed_once() {
    let wire = b"..hidden\r\n...\r\n.x\r\n.\r\n";
    assert_eq!(
        read_body(wire, &[3], 100).unwrap().unwrap(),
        b".hidden\r\n..\r\nx\r\n"
    );
}

#[test]
fn body_without_final_crlf_gets_one() {
    let wire = server_stuff(b"no newline at end");
    assert_eq!(
        read_body(&wire, &[7], 100).unwrap().unwrap(),
        b"no newline at end\r\n"
    );
}

#[test]
fn bare_lf_is_accepted_and_normalised() {
    let wire = b"+OK\nline one\n..two\n.\n";
    let mut lines = Vec::new();
    drive(wire, &[5], 600, |line| {
        lines.push(line.to_vec());
        false
    })
    .0
    .unwrap();
    assert_eq!(lines, [&b"+OK"[..], b"line one", b"..two", b"."]);
    assert_eq!(
        read_body(&wire[4..], &[2], 100).unwrap().unwrap(),
        b"line one\r\n.two\r\n"
    );
}

#[test]
fn terminator_only_at_line_start() {
    // ". " and ".." are body lines; a missing terminator leaves it open.
    assert_eq!(read_body(b"a.\r\n", &[9], 100).unwrap(), None);
    assert_eq!(
        read_body(b". \r\n.\r\n", &[9], 100).unwrap().unwrap(),
        b" \r\n"
    );
}

#[test]
fn size_cap_counts_crlf() {
    let wire = b"12345678\r\n.\r\n";
    assert_eq!(read_body(wire, &[4], 10).unwrap().unwrap(), b"12345678\r\n");
    assert!(matches!(
        read_body(wire, &[4], 9),
        Err(Error::MessageTooLarge { .. })
    ));
}

#[test]
fn line_at_the_limit_is_fine_one_more_byte_is_not() {
    let max = 600;
    let mut ok = vec![b'a'; max];
    ok.extend_from_slice(b"\r\n");
    let (res, _) = drive(&ok, &[64], max, |line| line.len() == max);
    assert!(res.unwrap());

    let mut bare = vec![b'a'; max];
    bare.push(b'\n');
    assert!(drive(&bare, &[64], max, |_| true).0.unwrap());

    let mut long = vec![b'a'; max + 1];
    long.extend_from_slice(b"\r\n");
    assert!(matches!(
        drive(&long, &[64], max, |_| true).0,
        Err(Error::LineTooLong { max: 600 })
    ));
    let mut long_lf = vec![b'a'; max + 1];
    long_lf.push(b'\n');
    assert!(matches!(
        drive(&long_lf, &[1000], max, |_| true).0,
        Err(Error::LineTooLong { .. })
    ));
}

#[test]
fn line_limits_are_kept_within_bounds() {
    assert_eq!(LineBuffer::new(0).max_line(), MIN_MAX_LINE);
    assert_eq!(LineBuffer::new(4096).max_line(), 4096);
    assert_eq!(LineBuffer::new(usize::MAX).max_line(), MAX_MAX_LINE);
}

#[test]
fn status_lines() {
    assert_eq!(parse_status(b"+OK").unwrap(), Status::Ok(b""));
    assert_eq!(parse_status(b"+OK 2 320").unwrap(), Status::Ok(b"2 320"));
    assert_eq!(
        parse_status(b"-ERR [AUTH] no").unwrap(),
        Status::Err(b"[AUTH] no")
    );
    assert_eq!(parse_status(b"+ ").unwrap(), Status::Continue(b""));
    assert_eq!(parse_status(b"+").unwrap(), Status::Continue(b""));
    for bad in [
        &b"+OKAY"[..],
        b"-ERROR",
        b"ok",
        b"",
        b"* OK",
        b"+ok",
        b"\x00+OK",
    ] {
        assert!(
            matches!(parse_status(bad), Err(Error::Protocol(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn listings() {
    assert_eq!(parse_list_line(b"1 120").unwrap(), (1, 120));
    assert_eq!(parse_list_line(b"7  99 extra").unwrap(), (7, 99));
    for bad in [
        &b"0 12"[..],
        b"1",
        b"x 1",
        b"1 -1",
        b"1 +5",
        b"",
        b"99999999999 1",
    ] {
        assert!(parse_list_line(bad).is_err(), "{bad:?}");
    }
    assert_eq!(parse_stat(b"2 320").unwrap(), (2, 320));
    assert_eq!(parse_stat(b"0 0").unwrap(), (0, 0));
    assert!(parse_stat(b"2").is_err());

    assert_eq!(
        parse_uidl_line(b"1 whqtswO00WBw418f9t5JxYwZ").unwrap(),
        (1, "whqtswO00WBw418f9t5JxYwZ".to_owned())
    );
    let longest = format!("3 {}", "~".repeat(70));
    assert_eq!(parse_uidl_line(longest.as_bytes()).unwrap().1.len(), 70);
    let too_long = format!("3 {}", "a".repeat(71));
    assert!(parse_uidl_line(too_long.as_bytes()).is_err());
    for bad in [
        &b"1"[..],
        b"1 a b",
        b"1 caf\xc3\xa9",
        b"1 a\x7f",
        b"0 abc",
        b"a abc",
    ] {
        assert!(parse_uidl_line(bad).is_err(), "{bad:?}");
    }

    assert_eq!(
        parse_capability(b"SASL PLAIN LOGIN").unwrap(),
        "SASL PLAIN LOGIN"
    );
    assert!(parse_capability(b"").is_err());
    assert!(parse_capability(b"X\x1b").is_err());
}

#[test]
fn temporary_response_codes() {
    assert!(is_temporary_code(b"[IN-USE] mailbox locked"));
    assert!(is_temporary_code(b"[SYS/TEMP] try later"));
    assert!(is_temporary_code(b"[login-delay] wait"));
    assert!(!is_temporary_code(b"[AUTH] bad password"));
    assert!(!is_temporary_code(b"[SYS/PERM] gone"));
    assert!(!is_temporary_code(b"IN-USE"));
    assert!(!is_temporary_code(b"[IN-USE"));
}

fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    let line = prop::collection::vec(
        prop_oneof![
            4 => Just(b'.'),
            2 => Just(b'\r'),
            10 => any::<u8>().prop_filter("no LF", |b| *b != b'\n'),
        ],
        0..40,
    );
    (prop::collection::vec(line, 0..30), any::<bool>()).prop_map(|(lines, final_crlf)| {
        let mut body = lines.join(&b"\r\n"[..]);
        if final_crlf && !body.is_empty() {
            body.extend_from_slice(b"\r\n");
        }
        body
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever a server dot-stuffs comes back exactly, with CRLF added at
    /// the end when the message had none, however the bytes are split.
    #[test]
    fn dot_stuffing_round_trips(
        body in body_strategy(),
        chunks in prop::collection::vec(1usize..70, 1..8),
    ) {
        let wire = server_stuff(&body);
        let mut expected = body.clone();
        if !expected.is_empty() && !expected.ends_with(b"\r\n") {
            expected.extend_from_slice(b"\r\n");
        }
        let got = read_body(&wire, &chunks, u64::MAX).unwrap();
        prop_assert_eq!(got, Some(expected));
    }

    /// A line over the limit is an error once at most `max_line + 2` bytes
    /// of it are buffered, whatever the chunking.
    #[test]
    fn overlong_lines_fail_early(
        max_line in 512usize..2048,
        extra in 1usize..5000,
        chunks in prop::collection::vec(1usize..4096, 1..8),
    ) {
        let mut input = b"+OK\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', max_line + extra));
        input.extend_from_slice(b"\r\n");
        let (res, fed) = drive(&input, &chunks, max_line, |_| false);
        prop_assert!(
            matches!(res, Err(Error::LineTooLong { .. })),
            "got {:?}", res
        );
        prop_assert!(fed <= 5 + max_line + 2, "read {} bytes", fed);
    }

    /// Random bytes through every parser: errors, never a panic, and lines
    /// never longer than the limit.
    #[test]
    fn random_bytes_never_panic(
        input in prop::collection::vec(any::<u8>(), 0..3000),
        chunks in prop::collection::vec(1usize..600, 1..8),
        max in 0u64..4000,
    ) {
        let mut body = Body::new(max);
        let _ = drive(&input, &chunks, 512, |line| {
            assert!(line.len() <= 512);
            let _ = parse_status(line);
            let _ = parse_list_line(line);
            let _ = parse_stat(line);
            let _ = parse_uidl_line(line);
            let _ = parse_capability(line);
            let _ = is_temporary_code(line);
            let _ = quote(line);
            matches!(body.push(line), Push::Done | Push::TooLarge)
        });
        prop_assert!(body.into_bytes().len() as u64 <= max);
    }
}
