//! TLS for the API (`serve --tls-cert --tls-key`) and the admin client (`--api https://...
//! --ca-file`), against certificates made here (rcgen: a CA and a leaf it signs) and checked
//! by outside clients: the real `curl` (its own TLS library verifying the chain) and a rustls
//! client holding a connection open across a reload.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{curl_answer, pack_addon, serve_url};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

const KEY: &str = "tls-test-key";

/// A CA and a leaf certificate for `127.0.0.1` and `localhost` that it signed, as PEM.
struct Pki {
    ca: String,
    cert: String,
    key: String,
    /// The leaf's DER (what a client sees as the server's certificate).
    der: Vec<u8>,
}

fn pki(name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, format!("addonfs test CA {name}"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, format!("addonfs test server {name}"));
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    Pki { ca: ca_cert.pem(), cert: cert.pem(), key: key.serialize_pem(), der: cert.der().to_vec() }
}

/// Writes `pki`'s CA as `dir/NAME-ca.pem`; returns its path.
fn write_ca(dir: &Path, name: &str, pki: &Pki) -> PathBuf {
    let path = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&path, &pki.ca).unwrap();
    path
}

/// A running `addonfs serve --no-mount` (killed on drop), its standard error in a file.
struct Server {
    child: Child,
    url: String,
    stderr: PathBuf,
}

impl Server {
    fn start(dir: &Path, listen: &str, tls: bool, extra: &[&str]) -> Server {
        let state = dir.join("state");
        let role = ["serve", "--no-mount", "--state-dir", state.to_str().unwrap()];
        Server::start_role(dir, &role, listen, tls, extra)
    }

    /// `addonfs registry` on a directory store under `dir`.
    fn start_registry(dir: &Path, listen: &str, tls: bool) -> Server {
        let store = dir.join("store");
        Server::start_role(dir, &["registry", "--store", store.to_str().unwrap()], listen, tls, &[])
    }

    fn start_role(dir: &Path, role: &[&str], listen: &str, tls: bool, extra: &[&str]) -> Server {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let stderr = dir.join(format!("serve-{}.log", STARTED.fetch_add(1, Ordering::Relaxed)));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_addonfs"));
        cmd.args(role).args(["--log-level", "info", "--listen", listen]).args(extra);
        if tls {
            cmd.arg("--tls-cert")
                .arg(dir.join("cert.pem"))
                .arg("--tls-key")
                .arg(dir.join("key.pem"));
        }
        let mut child = cmd
            .env("ADDONFS_API_KEY", KEY)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start addonfs serve");
        let url = serve_url(&mut child);
        Server { child, url, stderr }
    }

    fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Installs `pki`'s leaf and key as `dir/cert.pem` and `dir/key.pem`, each by a rename (as
/// cert-manager and Kubernetes' Secret volumes replace them).
fn install(dir: &Path, pki: &Pki) {
    for (name, text) in [("cert.pem", &pki.cert), ("key.pem", &pki.key)] {
        let tmp = dir.join(format!(".{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

/// A fresh directory with certificate `name` installed and its CA written as `NAME-ca.pem`:
/// the directory, the certificate, the CA's path.
fn certified(name: &str) -> (tempfile::TempDir, Pki, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(name);
    install(tmp.path(), &pki);
    let ca = write_ca(tmp.path(), name, &pki);
    (tmp, pki, ca)
}

/// `curl --cacert CA URL/healthz`: the HTTP status (0 when curl refused the server).
fn curl_health(dir: &Path, url: &str, ca: &Path) -> u16 {
    let answer = curl_answer(
        dir,
        &[
            "--max-time".into(),
            "10".into(),
            "--cacert".into(),
            ca.display().to_string(),
            format!("{url}/healthz"),
        ],
    );
    answer.status
}

fn addonfs(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_addonfs"))
        .args(args)
        .arg("--state-dir")
        .arg(dir.join("client-state"))
        .env("ADDONFS_API_KEY", KEY)
        .env_remove("ADDONFS_CA_FILE")
        .output()
        .expect("run addonfs")
}

/// A rustls client connection trusting `ca` (PEM), kept open for several requests.
struct Client {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl Client {
    fn connect(port: u16, ca: &str) -> Client {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        // The handshake now, so that the server's certificate is known.
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
        }
        Client { tls }
    }

    /// `GET /healthz` on this connection (keep-alive); returns the response head's status line.
    fn health(&mut self) -> String {
        self.tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // The answer is small: read until its body (`{"status":...}`) has arrived.
        while !got.ends_with(b"}") {
            let n = self.tls.read(&mut buf).expect("read the answer");
            assert!(n > 0, "the connection closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).lines().next().unwrap_or("").to_string()
    }

    fn server_cert(&self) -> Vec<u8> {
        self.tls.conn.peer_certificates().unwrap()[0].to_vec()
    }
}

fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_api_over_tls_works_and_plain_http_is_refused_cleanly() {
    let (tmp, _, ca) = certified("a");
    let dir = tmp.path();
    let mut server = Server::start(dir, "127.0.0.1:0", true, &[]);
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);

    // curl verifies the chain with its own TLS library.
    assert_eq!(curl_health(dir, &server.url, &ca), 200);

    // The admin CLI over https: an upload (a streamed body) and a list.
    let work = dir.join("addon");
    std::fs::create_dir_all(work.join("tree/usr")).unwrap();
    std::fs::write(work.join("tree/usr/custom_file"), "over TLS\n").unwrap();
    std::fs::write(
        work.join("metadata.json"),
        r#"{"name": "tls", "spec": {"paths": ["/usr/custom_file"]}}"#,
    )
    .unwrap();
    pack_addon(&work, &work.join("tree"), "usr");
    let ca_arg = ca.to_str().unwrap();
    let meta = work.join("metadata.json");
    let tarball = work.join("addon.tar.gz");
    let out = addonfs(
        &[
            "addons",
            "register",
            meta.to_str().unwrap(),
            tarball.to_str().unwrap(),
            "--api",
            &server.url,
            "--ca-file",
            ca_arg,
        ],
        dir,
    );
    assert!(out.status.success(), "register over TLS: {}", String::from_utf8_lossy(&out.stderr));
    let out =
        addonfs(&["addons", "list", "--json", "--api", &server.url, "--ca-file", ca_arg], dir);
    assert!(out.status.success(), "list over TLS: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("custom-addon-tls"));

    // Plain HTTP to the TLS port: a plain-HTTP 400 that says what to do, not a hang or reset.
    let plain = server.url.replacen("https://", "http://", 1);
    let answer = curl_answer(dir, &["--max-time".into(), "10".into(), format!("{plain}/healthz")]);
    assert_eq!(answer.status, 400, "{answer:?}");
    let message = answer.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("use an https:// URL"), "{answer:?}");
    // The daemon carries on.
    assert_eq!(curl_health(dir, &server.url, &ca), 200);
    assert!(server.running());

    // The admin UI's session cookie is `Secure` over TLS.
    let head = dir.join("login-head.txt");
    let answer = curl_answer(
        dir,
        &[
            "--cacert".into(),
            ca.display().to_string(),
            "-D".into(),
            head.display().to_string(),
            "-H".into(),
            format!("Origin: {}", server.url),
            "--data-urlencode".into(),
            format!("key={KEY}"),
            "--data-urlencode".into(),
            "next=/ui/".into(),
            "--max-redirs".into(),
            "0".into(),
            format!("{}/ui/login", server.url),
        ],
    );
    let head = std::fs::read_to_string(&head).unwrap();
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie: addonfs_session="))
        .unwrap_or_else(|| panic!("no session cookie: {head}\n{answer:?}"));
    assert!(cookie.trim_end().ends_with("; Secure"), "{cookie}");
}

#[test]
fn the_client_refuses_an_untrusted_server_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let a = pki("a");
    install(dir, &a);
    let other = write_ca(dir, "other", &pki("other"));
    let server = Server::start(dir, "127.0.0.1:0", true, &[]);

    let out = addonfs(
        &["addons", "list", "--api", &server.url, "--ca-file", other.to_str().unwrap()],
        dir,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the server's certificate is not signed by a trusted CA")
            && err.contains("--ca-file")
            && err.contains("other-ca.pem"),
        "{err}"
    );
    // curl, too, refuses it: the oracle agrees the chain does not verify.
    assert_eq!(curl_health(dir, &server.url, &other), 0);

    // An https:// URL on a plain-HTTP API says so.
    let plain_dir = dir.join("plain");
    std::fs::create_dir_all(&plain_dir).unwrap();
    let plain = Server::start(&plain_dir, "127.0.0.1:0", false, &[]);
    let url = plain.url.replacen("http://", "https://", 1);
    let out =
        addonfs(&["addons", "list", "--api", &url, "--ca-file", other.to_str().unwrap()], dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not seem to speak TLS"), "{err}");
}

/// Writes certificate `pki` over the installed files in place, with the old files' sizes and
/// modification times, so that only a SIGHUP can tell the daemon (`None` if the sizes differ).
fn overwrite_unnoticed(dir: &Path, pki: &Pki) -> Option<()> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let (cert_meta, key_meta) = (std::fs::metadata(&cert).ok()?, std::fs::metadata(&key).ok()?);
    if cert_meta.len() != pki.cert.len() as u64 || key_meta.len() != pki.key.len() as u64 {
        return None;
    }
    for (path, text, meta) in [(&cert, &pki.cert, &cert_meta), (&key, &pki.key, &key_meta)] {
        let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f.set_modified(meta.modified().unwrap()).unwrap();
    }
    Some(())
}

#[test]
fn sighup_reloads_the_certificate_and_open_connections_carry_on() {
    let (tmp, a, ca_a) = certified("a");
    let dir = tmp.path();
    let mut server = Server::start(dir, "127.0.0.1:0", true, &[]);
    let mut open = Client::connect(server.port(), &a.ca);
    assert!(open.health().ends_with("200 OK"));
    assert_eq!(open.server_cert(), a.der);

    // A new certificate written in place, its files' size and time unchanged: the daemon's
    // look at the files cannot see it; SIGHUP makes it load them.
    let b = (0..200).map(|_| pki("b")).find_map(|b| overwrite_unnoticed(dir, &b).map(|()| b));
    let b = b.expect("a certificate of the same size as the first");
    let ca_b = write_ca(dir, "b", &b);
    assert_eq!(curl_health(dir, &server.url, &ca_a), 200, "reloaded without SIGHUP");
    let pid = server.child.id().to_string();
    common::run(Command::new("kill").args(["-HUP", &pid]));
    wait_until("the new certificate", Duration::from_secs(10), || {
        curl_health(dir, &server.url, &ca_b) == 200
    });
    assert_eq!(curl_health(dir, &server.url, &ca_a), 0, "the old certificate is still served");
    assert_eq!(Client::connect(server.port(), &b.ca).server_cert(), b.der);

    // The connection opened before the reload still works, and the daemon still runs.
    assert!(open.health().ends_with("200 OK"));
    assert!(server.running());
    assert!(
        server.stderr().contains("reloaded the TLS certificate: SIGHUP"),
        "{}",
        server.stderr()
    );
}

#[test]
fn a_replaced_certificate_is_served_to_the_next_connection_and_a_broken_one_is_not() {
    let (tmp, _, ca_a) = certified("a");
    let dir = tmp.path();
    let mut server = Server::start(dir, "127.0.0.1:0", true, &[]);
    assert_eq!(curl_health(dir, &server.url, &ca_a), 200);

    // Replaced by renames, no signal: the very next connection gets the new one.
    let b = pki("b");
    install(dir, &b);
    let ca_b = write_ca(dir, "b", &b);
    assert_eq!(curl_health(dir, &server.url, &ca_b), 200);
    assert_eq!(curl_health(dir, &server.url, &ca_a), 0);

    // A key that does not match the certificate: the one in use stays, and the log says why.
    let c = pki("c");
    let tmp_key = dir.join(".key.pem.new");
    std::fs::write(&tmp_key, &c.key).unwrap();
    std::fs::rename(&tmp_key, dir.join("key.pem")).unwrap();
    assert_eq!(curl_health(dir, &server.url, &ca_b), 200);
    assert!(server.running());
    let log = server.stderr();
    assert!(log.contains("cannot reload the TLS certificate"), "{log}");
}

#[test]
fn a_stalled_or_garbage_handshake_frees_its_slot_after_the_header_timeout() {
    let (tmp, _, ca) = certified("a");
    let dir = tmp.path();
    let server = Server::start(
        dir,
        "127.0.0.1:0",
        true,
        &["--max-connections", "1", "--header-timeout", "1"],
    );
    for opening in [&b"\x16\x03\x01\x02\x00\x01"[..], b"\x00\xff garbage"] {
        // The one slot taken by a connection that starts a handshake (or sends garbage) and
        // stalls.
        let mut stalled = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
        stalled.write_all(opening).unwrap();
        stalled.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // A real client gets its turn once the timeout has closed the stalled one.
        let start = Instant::now();
        assert_eq!(curl_health(dir, &server.url, &ca), 200);
        assert!(start.elapsed() < Duration::from_secs(8));
        // And the stalled connection was closed by the server.
        let mut rest = Vec::new();
        let _ = stalled.read_to_end(&mut rest);
    }
}

#[test]
fn plain_http_beyond_loopback_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let a = pki("a");
    install(dir, &a);
    let warning = "warning: serving plain HTTP on 0.0.0.0:";
    let server = Server::start(dir, "0.0.0.0:0", false, &[]);
    assert!(server.stderr().contains(warning), "{}", server.stderr());
    assert!(server.stderr().contains("--tls-cert"), "{}", server.stderr());
    drop(server);
    let server = Server::start(dir, "0.0.0.0:0", true, &[]);
    assert!(!server.stderr().contains("plain HTTP"), "{}", server.stderr());
    drop(server);
    let server = Server::start(dir, "127.0.0.1:0", false, &[]);
    assert!(!server.stderr().contains("plain HTTP"), "{}", server.stderr());
}

#[test]
fn the_registry_role_serves_tls_too() {
    let (tmp, _, ca) = certified("a");
    let dir = tmp.path();
    let server = Server::start_registry(dir, "127.0.0.1:0", true);
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);
    assert_eq!(curl_health(dir, &server.url, &ca), 200);
    drop(server);
    let server = Server::start_registry(dir, "0.0.0.0:0", false);
    assert!(
        server.stderr().contains("warning: serving plain HTTP on 0.0.0.0:"),
        "{}",
        server.stderr()
    );
}

#[test]
fn sighup_without_tls_is_ignored_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut server = Server::start(dir, "127.0.0.1:0", false, &[]);
    for _ in 0..3 {
        let st =
            Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap();
        assert!(st.success());
    }
    wait_until("the SIGHUPs to be logged", Duration::from_secs(10), || {
        server.stderr().matches("nothing to reload").count() == 3
    });
    assert!(server.running(), "serve ended on SIGHUP: {}", server.stderr());
    let answer =
        curl_answer(dir, &["--max-time".into(), "10".into(), format!("{}/healthz", server.url)]);
    assert_eq!(answer.status, 200);
}
