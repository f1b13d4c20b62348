//! The API's connection handling against slow, silent and greedy clients, over real loopback
//! sockets to the real `addonfs serve`: header and body timeouts, the connection cap under a
//! low open-files limit, the cap on concurrent uploads, and answers that keep internal paths
//! to the log. Time bounds here are safety nets against hangs, never assertions about speed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::http::{curl, seed_upload};

const KEY: &str = "0123456789abcdef-test-key";

/// A running `addonfs serve --no-mount`, killed on drop.
struct Server {
    child: Child,
    url: String,
    addr: String,
    state: PathBuf,
}

impl Server {
    /// Starts `WRAPPER... addonfs serve ... EXTRA` (the wrapper may be empty, or `prlimit ...
    /// --`).
    fn start(state: &Path, wrapper: &[&str], extra: &[&str]) -> Server {
        let bin = env!("CARGO_BIN_EXE_addonfs");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args(["serve", "--no-mount", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state)
            .args(extra)
            .env("ADDONFS_API_KEY", KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start addonfs serve");
        let url = common::http::serve_url(&mut child);
        let addr = url.trim_start_matches("http://").to_string();
        Server { child, url, addr, state: state.to_path_buf() }
    }

    fn list(&self) -> (u16, Value) {
        curl(
            &self.state,
            &[
                "--max-time".into(),
                "120".into(),
                format!("{}/api/v2/runtimeaddons", self.url),
                "-H".into(),
                format!("Authorization: Bearer {KEY}"),
            ],
        )
    }

    /// Entries in `staging/` (uploads in progress or left behind).
    fn staging(&self) -> usize {
        std::fs::read_dir(self.state.join("staging")).map_or(0, |d| d.count())
    }

    /// Bytes of tarballs under `staging/`.
    fn staged_bytes(&self) -> u64 {
        std::fs::read_dir(self.state.join("staging"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::metadata(e.path().join("addon.tar.gz")).ok())
            .map(|m| m.len())
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `cond` holds (panics after 60 s).
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads what the server sends until it closes the connection. Panics if it is still open
/// after 60 s (the safety net: the server was meant to close it long before).
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server kept the connection open: {e} (got {got:?})"),
        }
    }
}

fn envelope(response: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(response);
    let status: u16 = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::String(body.to_string())))
}

/// A client that sends half a request head, and one that sends nothing, are disconnected
/// after the header timeout.
#[test]
fn half_sent_and_silent_connections_are_closed_after_the_header_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("state"), &[], &["--header-timeout", "1"]);
    let mut half = TcpStream::connect(&server.addr).unwrap();
    half.write_all(b"GET /api/v2/runtimeaddons HTTP/1.1\r\nHost: x\r\nAuthorization: Bea").unwrap();
    let mut silent = TcpStream::connect(&server.addr).unwrap();
    assert_eq!(read_until_closed(&mut half), b"");
    assert_eq!(read_until_closed(&mut silent), b"");
    // A keep-alive connection that goes quiet after one request is closed the same way.
    let mut idle = TcpStream::connect(&server.addr).unwrap();
    write!(
        idle,
        "GET /api/v2/runtimeaddons HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n"
    )
    .unwrap();
    let answer = read_until_closed(&mut idle);
    assert!(answer.starts_with(b"HTTP/1.1 200 OK"), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(server.list().0, 200);
}

/// An upload that stops sending mid-tarball is refused with 408 and the envelope after the
/// body timeout, and its staging directory is removed; the server keeps serving.
#[test]
fn stalled_upload_is_refused_and_its_staging_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("state"), &[], &["--body-timeout", "1"]);
    let tarball: Vec<u8> =
        (0..4u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
    let mut tar = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar);
        let mut h = tar::Header::new_gnu();
        h.set_size(tarball.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "opt/blob", &tarball[..]).unwrap();
        b.finish().unwrap();
    }
    let metadata = json!({"name": "stall", "spec": {"paths": ["/opt/blob"]}}).to_string();
    let head = format!(
        "--b\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{metadata}\r\n--b\r\n\
         Content-Disposition: form-data; name=\"tarball\"; filename=\"a.tar\"\r\n\r\n"
    );
    let total = head.len() + tar.len() + "\r\n--b--\r\n".len();
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    write!(
        stream,
        "POST /api/v2/runtimeaddons/custom HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {total}\r\n\r\n{head}"
    )
    .unwrap();
    // Half the tarball, then nothing more.
    stream.write_all(&tar[..tar.len() / 2]).unwrap();
    wait_until("part of the upload in staging/", || server.staged_bytes() > 0);
    let (status, body) = envelope(&read_until_closed(&mut stream));
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["code"], 4, "{body}");
    assert!(body["message"].as_str().unwrap().contains("stalled"), "{body}");
    wait_until("staging/ to be emptied", || server.staging() == 0);
    assert_eq!(server.list().1["runtime_addons"], json!([]));
}

/// With the daemon's open-files limit at 256 and 300 connections held open doing nothing, a
/// normal request still gets its answer: connections above the cap wait in the backlog
/// instead of exhausting the descriptors, and the idle ones are closed by the header timeout.
#[test]
fn idle_connections_beyond_the_open_files_limit_do_not_lock_out_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(
        &tmp.path().join("state"),
        &["prlimit", "--nofile=256:256", "--"],
        &["--header-timeout", "1"],
    );
    let idle: Vec<TcpStream> =
        (0..300).map(|_| TcpStream::connect(&server.addr).unwrap()).collect();
    let (status, body) = server.list();
    assert_eq!((status, &body["runtime_addons"]), (200, &json!([])), "{body}");
    drop(idle);
}

/// With `--max-uploads 1`, a second upload while one is being indexed is refused with 429 and
/// the envelope (nothing stored for it); once the first ends, it goes through.
#[test]
fn uploads_beyond_the_limit_get_429_then_succeed_later() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("state"), &[], &["--max-uploads", "1"]);
    let big = tmp.path().join("big");
    std::fs::create_dir_all(big.join("tree/opt/big")).unwrap();
    let blob: Vec<u8> =
        (0..8u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
    std::fs::write(big.join("tree/opt/big/blob"), blob).unwrap();
    std::fs::write(
        big.join("metadata.json"),
        json!({"name": "big", "spec": {"paths": ["/opt/big"]}}).to_string(),
    )
    .unwrap();
    common::run(
        Command::new("tar")
            .arg("-C")
            .arg(big.join("tree"))
            .arg("-cf")
            .arg(big.join("addon.tar.gz"))
            .arg("opt"),
    );
    let small = tmp.path().join("small");
    std::fs::create_dir_all(small.join("tree/usr")).unwrap();
    std::fs::write(small.join("tree/usr/file"), "x\n").unwrap();
    std::fs::write(
        small.join("metadata.json"),
        json!({"name": "small", "spec": {"paths": ["/usr/file"]}}).to_string(),
    )
    .unwrap();
    common::http::pack_addon(&small, &small.join("tree"), "usr");
    let mut slow = Command::new("curl")
        .current_dir(&big)
        .args(["-sS", "-o", "/dev/null", "--limit-rate", "2M"])
        .arg(format!("{}/api/v2/runtimeaddons/custom", server.url))
        .args(["-F", "metadata=@metadata.json", "-F", "tarball=@addon.tar.gz"])
        .args(["-H", &format!("Authorization: Bearer {KEY}")])
        .spawn()
        .unwrap();
    wait_until("the first upload in staging/", || server.staged_bytes() > 0);
    let (status, body) = seed_upload(&small, &server.url, KEY, "addon.tar.gz");
    assert_eq!((status, &body["code"]), (429, &json!(8)), "{body}");
    assert!(body["message"].as_str().unwrap().contains("too many uploads at once"), "{body}");
    assert!(slow.wait().unwrap().success());
    let (status, body) = seed_upload(&small, &server.url, KEY, "addon.tar.gz");
    assert_eq!(status, 200, "{body}");
    let (_, all) = server.list();
    let mut names: Vec<&str> = all["runtime_addons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["identifier"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["custom-addon-big", "custom-addon-small"]);
}

/// A failure inside the store answers 500 with a message that names no path of the state
/// directory (the log has those).
#[test]
fn internal_errors_do_not_reveal_state_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let server = Server::start(&state, &[], &[]);
    // Staging cannot be created any more: `staging` becomes a file.
    std::fs::remove_dir_all(state.join("staging")).unwrap();
    std::fs::write(state.join("staging"), "").unwrap();
    let dir = tmp.path().join("x");
    std::fs::create_dir_all(dir.join("tree/usr")).unwrap();
    std::fs::write(dir.join("tree/usr/file"), "x\n").unwrap();
    std::fs::write(
        dir.join("metadata.json"),
        json!({"name": "x", "spec": {"paths": ["/usr/file"]}}).to_string(),
    )
    .unwrap();
    common::http::pack_addon(&dir, &dir.join("tree"), "usr");
    let (status, body) = seed_upload(&dir, &server.url, KEY, "addon.tar.gz");
    assert_eq!((status, &body["code"]), (500, &json!(13)), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        !message.contains(state.to_str().unwrap()) && !message.contains("staging"),
        "{message}"
    );
    assert!(message.contains("daemon's log"), "{message}");
}

/// A multipart part without a name is named in words in the error.
#[test]
fn a_nameless_part_is_named_in_words() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("state"), &[], &[]);
    let body = "--b\r\nContent-Disposition: form-data\r\n\r\nhello\r\n--b--\r\n";
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    write!(
        stream,
        "POST /api/v2/runtimeaddons/custom HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let (status, body) = envelope(&read_until_closed(&mut stream));
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("a part without a name"), "{message}");
    assert!(!message.contains("None"), "{message}");
}

/// Requests the HTTP parser refuses before any route sees them, a garbage request line and a
/// head larger than the parser's buffer, get the JSON error envelope like every other error.
#[test]
fn unparsable_requests_get_the_error_envelope() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("state"), &[], &[]);
    let mut garbage = TcpStream::connect(&server.addr).unwrap();
    garbage.write_all(b"\x01\x02 garbage \xff\r\n\r\n").unwrap();
    let (status, body) = envelope(&read_until_closed(&mut garbage));
    assert_eq!((status, &body["code"], &body["details"]), (400, &json!(3), &json!([])), "{body}");
    assert!(body["message"].as_str().unwrap().contains("malformed request line"), "{body}");

    let mut huge = TcpStream::connect(&server.addr).unwrap();
    let filler = "a".repeat(1 << 20);
    // The server may close before taking all of it.
    let _ =
        write!(huge, "GET /api/v2/runtimeaddons HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}\r\n\r\n");
    let (status, body) = envelope(&read_until_closed(&mut huge));
    assert_eq!((status, &body["code"]), (431, &json!(3)), "{body}");
    assert!(body["message"].as_str().unwrap().contains("request head is larger"), "{body}");
    assert_eq!(server.list().0, 200);
}
