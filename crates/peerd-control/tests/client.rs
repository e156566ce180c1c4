//! The blocking client against scripted servers (std threads): what each
//! way of failing becomes. The real server is tested in crates/peerd.

#![allow(clippy::unwrap_used, reason = "test code: a panic is the test failing")]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use peerd_control::{
    Access, Client, ClientError, ClientHello, ErrorKind, PROTOCOL_NAME, PROTOCOL_VERSION, Request,
    Response, ServerHello, decode, encode,
};

const WAIT: Duration = Duration::from_secs(10);

/// A listening socket in a fresh directory; `script` gets each accepted
/// connection (already past reading the client's hello).
fn serve(
    script: impl Fn(UnixStream, ClientHello) + Send + 'static,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sock");
    let listener = UnixListener::bind(&path).unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let hello: ClientHello = decode(line.trim_end().as_bytes()).unwrap();
            script(stream, hello);
        }
    });
    (dir, path)
}

/// Reads one request line (byte by byte: nothing beyond it is taken).
fn read_request(s: &mut UnixStream) {
    let mut byte = [0u8];
    while std::io::Read::read(s, &mut byte).unwrap() == 1 && byte[0] != b'\n' {}
}

fn hello() -> Vec<u8> {
    encode(&Response::Hello(ServerHello {
        protocol: PROTOCOL_NAME.into(),
        version: PROTOCOL_VERSION,
        software: "scripted".into(),
        access: Access::ReadOnly,
    }))
    .unwrap()
}

#[test]
fn says_hello_and_reads_the_answer() {
    let (_dir, path) = serve(|mut s, hello_in| {
        assert_eq!(hello_in, ClientHello::new("test 1"));
        s.write_all(&hello()).unwrap();
        read_request(&mut s);
        s.write_all(b"{\"response\":\"checked\"}\n").unwrap();
    });
    let mut c = Client::connect(&path, "test 1", WAIT).unwrap();
    assert_eq!(c.server().access, Access::ReadOnly);
    assert_eq!(
        c.request(&Request::Check, Some(WAIT)).unwrap(),
        Response::Checked
    );
}

#[test]
fn nothing_listening_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.sock");
    let err = Client::connect(&missing, "t", WAIT).unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("none.sock"), "{err}");
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let err = Client::connect(&stale, "t", WAIT).unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
}

#[test]
fn a_refused_hello_is_a_refusal() {
    let (_dir, path) = serve(|mut s, _| {
        s.write_all(b"{\"response\":\"error\",\"kind\":\"unsupported-version\",\"message\":\"speak version 2\"}\n")
            .unwrap();
    });
    match Client::connect(&path, "t", WAIT) {
        Err(ClientError::Refused(e)) => {
            assert_eq!(e.kind, ErrorKind::UnsupportedVersion);
            assert_eq!(e.to_string(), "speak version 2");
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn silence_is_a_timeout_and_a_hang_up_is_closed() {
    let (_dir, path) = serve(|mut s, _| {
        s.write_all(&hello()).unwrap();
        // answer nothing, then hang up after a while
        thread::sleep(Duration::from_millis(600));
    });
    let mut c = Client::connect(&path, "t", WAIT).unwrap();
    let start = Instant::now();
    let err = c
        .request(&Request::Status, Some(Duration::from_millis(200)))
        .unwrap_err();
    assert!(matches!(err, ClientError::TimedOut(_)), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
    let err = c.request(&Request::Status, Some(WAIT)).unwrap_err();
    assert!(matches!(err, ClientError::Closed), "{err:?}");
}

#[test]
fn a_trickling_server_still_times_out_in_total() {
    let (_dir, path) = serve(|mut s, _| {
        s.write_all(&hello()).unwrap();
        for _ in 0..50 {
            if s.write_all(b" ").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    });
    let mut c = Client::connect(&path, "t", WAIT).unwrap();
    let start = Instant::now();
    let err = c
        .request(&Request::Status, Some(Duration::from_millis(300)))
        .unwrap_err();
    assert!(matches!(err, ClientError::TimedOut(_)), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn nonsense_from_the_server_is_a_protocol_error() {
    for answer in [
        &b"\xff\xfe garbage\n"[..],
        b"{\"response\":\"teleported\"}\n",
        b"{\"response\":\"key\"}\n",
    ] {
        let answer = answer.to_vec();
        let (_dir, path) = serve(move |mut s, _| {
            s.write_all(&hello()).unwrap();
            read_request(&mut s);
            s.write_all(&answer).unwrap();
        });
        let mut c = Client::connect(&path, "t", WAIT).unwrap();
        let err = c.request(&Request::Status, Some(WAIT)).unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
    }
    // a valid answer to another request
    let (_dir, path) = serve(|mut s, _| {
        s.write_all(&hello()).unwrap();
        read_request(&mut s);
        s.write_all(b"{\"response\":\"checked\"}\n").unwrap();
    });
    let mut c = Client::connect(&path, "t", WAIT).unwrap();
    let err = c.request(&Request::Status, Some(WAIT)).unwrap_err();
    assert!(
        err.to_string().contains("status answered with checked"),
        "{err}"
    );
}

#[test]
fn an_endless_answer_is_refused_not_buffered() {
    let (_dir, path) = serve(|mut s, _| {
        s.write_all(&hello()).unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let mut c = Client::connect(&path, "t", WAIT).unwrap();
    let err = c.request(&Request::Status, Some(WAIT)).unwrap_err();
    assert!(err.to_string().contains("line longer than"), "{err}");
}

#[test]
fn after_stream_open_the_bytes_behind_the_answer_are_the_stream() {
    let (_dir, path) = serve(|mut s, _| {
        s.write_all(&hello()).unwrap();
        read_request(&mut s);
        let mut both = encode(&Response::StreamOpen(peerd_control::StreamInfo {
            peer: "hitoshi".parse().unwrap(),
            service: "ssh".parse().unwrap(),
        }))
        .unwrap();
        both.extend_from_slice(b"SSH-2.0-x\r\n");
        s.write_all(&both).unwrap();
    });
    let mut c = Client::connect(&path, "t", WAIT).unwrap();
    let open = Request::Open {
        peer: "hitoshi".parse().unwrap(),
        service: "ssh".parse().unwrap(),
    };
    assert!(matches!(
        c.request(&open, Some(WAIT)).unwrap(),
        Response::StreamOpen(_)
    ));
    let (_stream, early) = c.into_stream();
    assert_eq!(early, b"SSH-2.0-x\r\n");
}
