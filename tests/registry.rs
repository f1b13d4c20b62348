//! The registry end to end: the real `addonfs serve` binary driven by the real `curl` binary,
//! exactly as the seed's upload command does, plus the store's crash recovery.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::http::{curl, pack_addon, seed_upload};

const KEY: &str = "0123456789abcdef-test-key";

/// A running `addonfs serve`, killed on drop.
struct Server {
    child: Child,
    url: String,
    state: PathBuf,
}

impl Server {
    fn start(state: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_addonfs"))
            .args(["serve", "--no-mount", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state)
            .args(extra)
            .env("ADDONFS_API_KEY", KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start addonfs serve");
        let url = common::http::serve_url(&mut child);
        Server { child, url, state: state.to_path_buf() }
    }

    /// The seed's command: `curl -sS -L URL/api/v2/runtimeaddons/custom -F metadata=@.. -F
    /// tarball=@.. -H 'Authorization: Bearer KEY'`; returns (HTTP status, JSON body).
    fn upload(&self, dir: &Path, key: Option<&str>) -> (u16, Value) {
        match key {
            Some(key) => seed_upload(dir, &self.url, key, "addon.tar.gz"),
            None => curl(
                dir,
                &[
                    format!("{}/api/v2/runtimeaddons/custom", self.url),
                    "-F".into(),
                    "metadata=@metadata.json".into(),
                    "-F".into(),
                    "tarball=@addon.tar.gz".into(),
                ],
            ),
        }
    }

    fn get(&self, path_and_query: &[(&str, &str)]) -> (u16, Value) {
        let mut args = vec!["-G".to_string(), format!("{}/api/v2/runtimeaddons", self.url)];
        for (k, v) in path_and_query {
            args.extend(["--data-urlencode".into(), format!("{k}={v}")]);
        }
        args.extend(["-H".into(), format!("Authorization: Bearer {KEY}")]);
        curl(&self.state, &args)
    }

    fn status(&self, body: &Value) -> (u16, Value) {
        curl(
            &self.state,
            &[
                format!("{}/api/v2/runtimeaddons:updatestatus", self.url),
                "-H".into(),
                format!("Authorization: Bearer {KEY}"),
                "-H".into(),
                "Content-Type: application/json".into(),
                "-d".into(),
                body.to_string(),
            ],
        )
    }

    /// The add-on directories stored, and the number of staging entries.
    /// The identifiers in the store's catalog, and the entries in `staging/`. Any file under
    /// `addons/` that the catalog does not reference shows up as `stray: KEY`.
    fn stored(&self) -> (Vec<String>, usize) {
        let catalog = match std::fs::read(self.state.join("catalog.json")) {
            Ok(bytes) => addonfs::addon::catalog::Catalog::parse(&bytes).unwrap(),
            Err(_) => addonfs::addon::catalog::Catalog::default(),
        };
        let mut addons: Vec<String> =
            catalog.addons.iter().map(|e| e.record.identifier.clone()).collect();
        let referenced = catalog.referenced();
        let out = common::sh(&format!(
            "cd '{}' && find addons -type f 2>/dev/null || true",
            self.state.display()
        ));
        for key in out.lines().filter(|k| !referenced.contains(k)) {
            addons.push(format!("stray: {key}"));
        }
        addons.sort();
        let staging = std::fs::read_dir(self.state.join("staging")).map_or(0, |d| d.count());
        (addons, staging)
    }

    /// The catalog entry of `identifier`.
    fn entry(&self, identifier: &str) -> addonfs::addon::catalog::Entry {
        let catalog = addonfs::addon::catalog::Catalog::parse(
            &std::fs::read(self.state.join("catalog.json")).unwrap(),
        )
        .unwrap();
        catalog.find(identifier).unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `dir/metadata.json` and `dir/addon.tar.gz` (made by GNU tar) holding `files`
/// (relative paths; a trailing `/` makes a directory).
fn addon(dir: &Path, metadata: &str, files: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    for f in files {
        let p = tree.join(f.trim_end_matches('/'));
        if f.ends_with('/') {
            std::fs::create_dir_all(&p).unwrap();
        } else {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("content of {f}\n")).unwrap();
        }
    }
    std::fs::write(dir.join("metadata.json"), metadata).unwrap();
    pack_addon(dir, &tree, ".");
}

fn meta(name: &str, paths: &[&str]) -> String {
    json!({"name": name, "spec": {"paths": paths}}).to_string()
}

fn seed_addon(dir: &Path) {
    addon(
        dir,
        r#"{ "name" : "name-of-the-addon", "spec" : {"paths" : ["/usr/custom_file", "/usr/bin/custom_folder"]} }"#,
        &["usr/custom_file", "usr/bin/custom_folder/tool"],
    );
}

fn assert_error(got: &(u16, Value), status: u16, code: i64, fragment: &str) {
    let (s, body) = got;
    assert_eq!(*s, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["details"], json!([]), "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert_eq!(body["error"].as_str(), Some(message), "{body}");
    assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
}

#[test]
fn seed_upload_list_filter_page_and_status() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("state"), &[]);
    seed_addon(&tmp.path().join("seed"));
    let (status, record) = server.upload(&tmp.path().join("seed"), Some(KEY));
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["id"], 1);
    assert_eq!(record["identifier"], "custom-addon-name-of-the-addon");
    assert_eq!(record["component"], "Custom");
    assert_eq!(record["display_name"], "name-of-the-addon");
    assert_eq!(record["status"], "AVAILABLE");
    assert_eq!(record["manageable"], true);
    assert_eq!(record["reason"], "");
    let tar = std::fs::read(tmp.path().join("seed/addon.tar.gz")).unwrap();
    assert_eq!(record["size"], tar.len());
    let sha = Command::new("sha256sum").arg(tmp.path().join("seed/addon.tar.gz")).output().unwrap();
    assert_eq!(record["sha256"].as_str(), String::from_utf8_lossy(&sha.stdout).split(' ').next());
    let created = record["created_at"].as_str().unwrap();
    assert!(created.len() == 20 && created.ends_with('Z') && &created[10..11] == "T", "{created}");
    for (i, name) in ["b", "c"].iter().enumerate() {
        let dir = tmp.path().join(name);
        addon(&dir, &meta(name, &[&format!("/opt/{name}")]), &[&format!("opt/{name}/x")]);
        let (s, r) = server.upload(&dir, Some(KEY));
        assert_eq!((s, r["id"].as_u64()), (200, Some(i as u64 + 2)), "{r}");
    }
    // Stored as uploaded.
    let entry = server.entry("custom-addon-name-of-the-addon");
    let stored = server.state.join(entry.objects.tarball.rsplit_once('/').unwrap().0);
    assert_eq!(std::fs::read(stored.join("addon.tar.gz")).unwrap(), tar);
    assert!(stored.join("addon.tar.gz.addonfs-index").is_file());
    assert_eq!(server.stored().1, 0);
    // The index built while the upload streamed is the stored archive's current index.
    let (code, out, err) = addonfs_cmd(&["index", "--json", &entry.objects.tarball], &server.state);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["action"], "loaded", "{report}");
    assert_eq!(report["sha256"], record["sha256"]);

    // Paging.
    let (s, page) = server.get(&[("page_size", "2")]);
    assert_eq!(s, 200);
    let ids: Vec<_> =
        page["runtime_addons"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, [json!(1), json!(2)]);
    assert_eq!(page["next_page_token"], "2");
    let (_, page) = server.get(&[("page_size", "2"), ("page_token", "2")]);
    assert_eq!(page["runtime_addons"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_page_token"], "");
    let (_, page) = server.get(&[("sort", "-id"), ("page_size", "1")]);
    assert_eq!(page["runtime_addons"][0]["id"], 3);

    // Filters.
    let (_, one) = server.get(&[("search_filter", r#"{"identifier":"custom-addon-b"}"#)]);
    assert_eq!(one["runtime_addons"].as_array().unwrap().len(), 1);
    assert_eq!(one["runtime_addons"][0]["display_name"], "b");
    let (_, none) = server.get(&[("search_filter", r#"{"component":"Spark"}"#)]);
    assert_eq!(none["runtime_addons"], json!([]));
    assert_error(&server.get(&[("search_filter", r#"{"colour":"red"}"#)]), 400, 3, "colour");
    assert_error(&server.get(&[("page_token", "x")]), 400, 3, "page_token");

    // Disable and enable.
    let (s, r) = server.status(&json!({"status": "DISABLED", "identifiers": ["custom-addon-b"]}));
    // Three uploads and this change: revision 4.
    assert_eq!((s, r), (200, json!({"rows_affected": 1, "revision": 4})));
    let (_, avail) = server.get(&[("search_filter", r#"{"status":"AVAILABLE"}"#)]);
    let ids: Vec<_> =
        avail["runtime_addons"].as_array().unwrap().iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, [json!(1), json!(3)]);
    let (_, dis) = server.get(&[("search_filter", r#"{"status":"DISABLED"}"#)]);
    assert_eq!(dis["runtime_addons"][0]["identifier"], "custom-addon-b");
    // In the store's catalog.
    assert_eq!(server.entry("custom-addon-b").record.status, addonfs::addon::Status::Disabled);
    let (s, r) = server.status(&json!({"status": "AVAILABLE", "ids": [2]}));
    assert_eq!((s, r), (200, json!({"rows_affected": 1, "revision": 5})));
    assert_error(&server.status(&json!({"status": "AVAILABLE", "ids": [99]})), 404, 5, "99");
    // Custom add-ons are disabled, never deleted: a precondition, not a bad argument.
    assert_error(&server.status(&json!({"status": "DELETED", "ids": [1]})), 400, 9, "DELETED");
    assert_error(&server.status(&json!({"status": "DISABLED", "idz": [1]})), 400, 3, "idz");

    // A restart keeps everything.
    drop(server);
    let server = Server::start(&tmp.path().join("state"), &[]);
    let (_, all) = server.get(&[]);
    assert_eq!(all["runtime_addons"].as_array().unwrap().len(), 3);
    assert_eq!(all["runtime_addons"][1]["status"], "AVAILABLE");
}

#[test]
fn duplicate_name_is_refused_with_409_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("state"), &[]);
    seed_addon(&tmp.path().join("a"));
    assert_eq!(server.upload(&tmp.path().join("a"), Some(KEY)).0, 200);
    let before = std::fs::read(server.state.join("catalog.json")).unwrap();
    addon(&tmp.path().join("b"), &meta("name-of-the-addon", &["/other"]), &["other"]);
    assert_error(&server.upload(&tmp.path().join("b"), Some(KEY)), 409, 6, "already exists");
    let after = std::fs::read(server.state.join("catalog.json")).unwrap();
    assert_eq!(before, after);
    assert_eq!(server.stored(), (vec!["custom-addon-name-of-the-addon".to_string()], 0));
}

#[test]
fn conflicting_paths_are_refused_naming_both_addons() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("state"), &[]);
    addon(&tmp.path().join("a"), &meta("a", &["/opt/tool"]), &["opt/tool/bin/x"]);
    addon(&tmp.path().join("b"), &meta("b", &["/opt/tool/bin"]), &["opt/tool/bin/y"]);
    assert_eq!(server.upload(&tmp.path().join("a"), Some(KEY)).0, 200);
    let got = server.upload(&tmp.path().join("b"), Some(KEY));
    assert_error(&got, 400, 9, "custom-addon-b");
    let message = got.1["message"].as_str().unwrap();
    assert!(message.contains("custom-addon-a") && message.contains("/opt/tool/bin"), "{message}");
    assert_eq!(server.stored(), (vec!["custom-addon-a".to_string()], 0));
    // With a disabled, b registers; enabling a again is refused with the reason.
    server.status(&json!({"status": "DISABLED", "ids": [1]}));
    assert_eq!(server.upload(&tmp.path().join("b"), Some(KEY)).0, 200);
    let got = server.status(&json!({"status": "AVAILABLE", "ids": [1]}));
    assert_error(&got, 400, 9, "custom-addon-a");
    assert!(got.1["message"].as_str().unwrap().contains("custom-addon-b"));
    let (_, dis) = server.get(&[("search_filter", r#"{"status":"DISABLED"}"#)]);
    assert_eq!(dis["runtime_addons"][0]["identifier"], "custom-addon-a");
}

/// Uploads a bad add-on; checks the error and that nothing was stored.
fn refused(metadata: &str, files: &[&str], status: u16, code: i64, fragment: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("state"), &[]);
    addon(&tmp.path().join("x"), metadata, files);
    assert_error(&server.upload(&tmp.path().join("x"), Some(KEY)), status, code, fragment);
    assert_eq!(server.stored(), (vec![], 0));
    let (_, all) = server.get(&[]);
    assert_eq!(all["runtime_addons"], json!([]));
}

#[test]
fn name_with_uppercase() {
    refused(&meta("Spark", &["/a"]), &["a"], 400, 3, "only lowercase letters");
}

#[test]
fn name_with_space() {
    refused(&meta("my addon", &["/a"]), &["a"], 400, 3, "' ' at character 3");
}

#[test]
fn name_with_slash() {
    refused(&meta("my/addon", &["/a"]), &["a"], 400, 3, "'/' at character 3");
}

#[test]
fn name_with_unicode() {
    refused(&meta("café", &["/a"]), &["a"], 400, 3, "'é' at character 4");
}

#[test]
fn name_of_36_characters() {
    refused(&meta(&"a".repeat(36), &["/a"]), &["a"], 400, 3, "has 36 characters; at most 35");
}

#[test]
fn empty_paths() {
    refused(&meta("x", &[]), &["a"], 400, 3, "`spec.paths` is empty");
}

#[test]
fn relative_path() {
    refused(&meta("x", &["a"]), &["a"], 400, 3, "is not absolute");
}

#[test]
fn trailing_slash() {
    refused(&meta("x", &["/a/"]), &["a/"], 400, 3, "ends with `/`");
}

#[test]
fn path_not_in_tarball() {
    refused(
        &meta("x", &["/a", "/missing"]),
        &["a"],
        400,
        3,
        "\"/missing\" does not exist in the tarball",
    );
}

#[test]
fn metadata_not_json() {
    refused("name: x\n", &["a"], 400, 3, "not valid JSON at line 1");
}

#[test]
fn metadata_unknown_field() {
    refused(
        r#"{"name":"x","spec":{"paths":["/a"]},"version":2}"#,
        &["a"],
        400,
        3,
        "unknown field `version`",
    );
}

fn multipart_case(parts: &[&str], fragment: &str, status: u16, code: i64, extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("state"), extra);
    seed_addon(&tmp.path().join("x"));
    let dir = tmp.path().join("x");
    std::fs::write(dir.join("text.txt"), "just some text, not an archive\n".repeat(40)).unwrap();
    let full = std::fs::read(dir.join("addon.tar.gz")).unwrap();
    std::fs::write(dir.join("truncated.tar.gz"), &full[..full.len() / 2]).unwrap();
    let mut corrupt = full.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid..mid + 8].copy_from_slice(b"garbage!");
    std::fs::write(dir.join("corrupt.tar.gz"), &corrupt).unwrap();
    let big: Vec<u8> =
        (0..64 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(dir.join("big.tar"), big).unwrap();
    let mut args = vec![format!("{}/api/v2/runtimeaddons/custom", server.url)];
    for p in parts {
        args.extend(["-F".to_string(), p.to_string()]);
    }
    args.extend(["-H".into(), format!("Authorization: Bearer {KEY}")]);
    assert_error(&curl(&dir, &args), status, code, fragment);
    assert_eq!(server.stored(), (vec![], 0));
}

#[test]
fn missing_metadata_part() {
    multipart_case(&["tarball=@addon.tar.gz"], "part `metadata` is missing", 400, 3, &[]);
}

#[test]
fn missing_tarball_part() {
    multipart_case(&["metadata=@metadata.json"], "part `tarball` is missing", 400, 3, &[]);
}

#[test]
fn truncated_tarball() {
    multipart_case(
        &["metadata=@metadata.json", "tarball=@truncated.tar.gz"],
        "not a valid archive",
        400,
        3,
        &[],
    );
}

#[test]
fn corrupt_tarball() {
    multipart_case(
        &["metadata=@metadata.json", "tarball=@corrupt.tar.gz"],
        "not a valid archive",
        400,
        3,
        &[],
    );
}

#[test]
fn not_an_archive() {
    multipart_case(
        &["metadata=@metadata.json", "tarball=@text.txt"],
        "not a valid archive",
        400,
        3,
        &[],
    );
}

#[test]
fn oversized_upload() {
    multipart_case(
        &["metadata=@metadata.json", "tarball=@big.tar"],
        "larger than the upload limit of 4096 bytes",
        413,
        8,
        &["--max-upload", "4K"],
    );
}

#[test]
fn unexpected_part() {
    multipart_case(
        &["metadata=@metadata.json", "tarball=@addon.tar.gz", "extra=1"],
        "the body has an unexpected part named `extra`; the parts are",
        400,
        3,
        &[],
    );
}

#[test]
fn no_token_and_wrong_token_get_401_on_every_route() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("state"), &[]);
    seed_addon(&tmp.path().join("x"));
    assert_error(&server.upload(&tmp.path().join("x"), None), 401, 16, "missing `Authorization");
    assert_error(&server.upload(&tmp.path().join("x"), Some("wrong")), 401, 16, "invalid API key");
    assert_error(
        &server.upload(&tmp.path().join("x"), Some(&KEY[..KEY.len() - 1])),
        401,
        16,
        "invalid API key",
    );
    let url = format!("{}/api/v2/runtimeaddons", server.url);
    assert_error(&curl(tmp.path(), std::slice::from_ref(&url)), 401, 16, "missing");
    let status_url = format!("{url}:updatestatus");
    assert_error(
        &curl(
            tmp.path(),
            &[
                status_url,
                "-H".into(),
                "Authorization: Bearer nope".into(),
                "-d".into(),
                "{}".into(),
            ],
        ),
        401,
        16,
        "invalid API key",
    );
    // Every path under /api/v2 needs the key, known or not, whatever the method.
    for path in ["/api/v2", "/api/v2/other", "/api/v2/runtimeaddons/custom/x"] {
        assert_error(&curl(tmp.path(), &[format!("{}{path}", server.url)]), 401, 16, "missing");
    }
    assert_error(
        &curl(tmp.path(), &["-X".into(), "DELETE".into(), url.clone()]),
        401,
        16,
        "missing",
    );
    // With the key, unknown routes and methods get the envelope too.
    let auth = format!("Authorization: Bearer {KEY}");
    assert_error(
        &curl(tmp.path(), &[format!("{}/api/v2/other", server.url), "-H".into(), auth.clone()]),
        404,
        5,
        "/api/v2/other",
    );
    assert_error(
        &curl(tmp.path(), &["-X".into(), "DELETE".into(), url, "-H".into(), auth]),
        405,
        12,
        "DELETE",
    );
    assert_eq!(server.stored(), (vec![], 0));
}

/// Outside `/api/v2` there are only the public endpoints: other paths get the 404 envelope
/// without a key, wrong methods on a public endpoint the 405 one. Without a mount, `/readyz`
/// checks the store alone, and says 503 (code 14) once the store cannot be read.
#[test]
fn public_endpoints_and_unknown_routes_without_a_key() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let server = Server::start(&state, &[]);
    let get = |path: &str| curl(tmp.path(), &[format!("{}{path}", server.url)]);
    assert_eq!(get("/healthz"), (200, serde_json::json!({"status": "ok"})));
    assert_eq!(get("/readyz"), (200, serde_json::json!({"status": "ok"})));
    let (status, metrics) = get("/metrics");
    assert_eq!(status, 200);
    let metrics = metrics.as_str().expect("metrics are text").to_string();
    assert!(metrics.contains("addonfs_catalog_revision 0"), "{metrics}");
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    assert_error(&get("/other"), 404, 5, "no route /other");
    // (`/` is the admin UI's, which sends a browser to its sign-in page.)
    assert_error(&get("/ui-not/a/page"), 404, 5, "no route /ui-not/a/page");
    assert_error(
        &curl(tmp.path(), &["-X".into(), "POST".into(), format!("{}/healthz", server.url)]),
        405,
        12,
        "POST",
    );
    // The store's catalog gone unreadable: not ready, and the answer names no path of the
    // state directory.
    std::fs::rename(state.join("catalog.json"), state.join("catalog.away")).unwrap();
    let (status, body) = get("/readyz");
    assert_error(&(status, body.clone()), 503, 14, "the store cannot be read");
    assert!(!body.to_string().contains(&*state.to_string_lossy()), "{body}");
    assert_eq!(get("/healthz").0, 200, "alive all the same");
    std::fs::rename(state.join("catalog.away"), state.join("catalog.json")).unwrap();
    assert_eq!(get("/readyz").0, 200);
    // Requests are counted by route pattern, never by the path a client made up.
    let metrics = get("/metrics").1.as_str().unwrap().to_string();
    for line in [
        r#"addonfs_http_requests_total{route="unmatched",status="404"} 2"#,
        r#"addonfs_http_requests_total{route="/readyz",status="503"} 1"#,
        r#"addonfs_http_requests_total{route="/healthz",status="405"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line} in\n{metrics}");
    }
    assert!(!metrics.contains("/other"), "{metrics}");
}

#[test]
fn generated_key_file_is_private_and_works() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let mut child = Command::new(env!("CARGO_BIN_EXE_addonfs"))
        .args(["serve", "--no-mount", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&state)
        .env_remove("ADDONFS_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_string();
    let keys = state.join("api-keys");
    assert_eq!(std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o600);
    let key = std::fs::read_to_string(&keys).unwrap().trim().to_string();
    assert_eq!(key.len(), 64);
    let list = format!("{url}/api/v2/runtimeaddons");
    let ok = curl(tmp.path(), &[list.clone(), "-H".into(), format!("Authorization: Bearer {key}")]);
    let bad = curl(tmp.path(), &[list, "-H".into(), format!("Authorization: Bearer {KEY}")]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(ok.0, 200, "{}", ok.1);
    assert_eq!(bad.0, 401);
}

#[test]
fn kill_9_during_upload_leaves_nothing_and_restarts_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let dir = tmp.path().join("big");
    random_addon(&dir, "big", "8M");
    let mut server = Server::start(&state, &[]);
    let mut upload = slow_upload(&dir, &server.url);
    wait_until("the upload to reach staging/", || staged_bytes(&state) > 0);
    let staged = staged_bytes(&state);
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let _ = upload.kill();
    let _ = upload.wait();
    assert!(staged < 8 << 20, "the upload was not interrupted ({staged} bytes staged)");
    assert_eq!(server.stored(), (vec![], 1), "the half upload is left in staging/");
    drop(server);

    let server = Server::start(&state, &[]);
    assert_eq!(server.stored(), (vec![], 0), "staging/ is cleaned at start");
    let (_, all) = server.get(&[]);
    assert_eq!(all["runtime_addons"], json!([]));
    seed_addon(&tmp.path().join("seed"));
    let (s, r) = server.upload(&tmp.path().join("seed"), Some(KEY));
    assert_eq!((s, r["id"].as_u64()), (200, Some(1)), "{r}");
}

#[test]
fn store_ignores_malformed_entries_and_cleans_staging() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path();
    std::fs::create_dir_all(state.join("addons/custom-addon-broken")).unwrap();
    std::fs::write(state.join("addons/custom-addon-broken/record.json"), "{").unwrap();
    std::fs::create_dir_all(state.join("staging/leftover")).unwrap();
    std::fs::write(state.join("staging/leftover/addon.tar.gz"), "half").unwrap();
    let store = addonfs::addon::Store::open(state, "test").unwrap();
    assert!(store.list().is_empty());
    assert_eq!(store.problems().len(), 1);
    assert!(store.problems()[0].contains("custom-addon-broken"), "{:?}", store.problems());
    assert_eq!(store.staging_count(), 0);
}

/// Runs `cmd`; returns (exit code, -1 if a signal ended it; stdout; stderr).
fn outcome(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `addonfs ARGS --state-dir STATE` in `cwd`; returns (exit code, stdout, stderr).
fn addonfs(args: &[&str], state: &Path, cwd: &Path) -> (i32, String, String) {
    outcome(
        Command::new(env!("CARGO_BIN_EXE_addonfs"))
            .current_dir(cwd)
            .args(args)
            .arg("--state-dir")
            .arg(state),
    )
}

#[test]
fn validate_command_prints_every_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("x");
    seed_addon(&dir);
    let run = |meta_file: &str| addonfs_cmd(&["validate", meta_file, "addon.tar.gz"], &dir);
    let (code, stdout, _) = run("metadata.json");
    assert_eq!(code, 0);
    assert!(stdout.contains("custom-addon-name-of-the-addon"), "{stdout}");
    std::fs::write(dir.join("bad.json"), meta("Bad", &["/usr/custom_file", "rel", "/usr/nothing"]))
        .unwrap();
    let (code, _, stderr) = run("bad.json");
    assert_eq!(code, 5, "{stderr}");
    for fragment in
        ["'B' at character 1", "\"rel\" is not absolute", "\"/usr/nothing\" does not exist"]
    {
        assert!(stderr.contains(fragment), "{stderr} lacks {fragment}");
    }
    assert_eq!(stderr.lines().count(), 3, "{stderr}");
}

#[test]
fn admin_cli_registers_lists_enables_and_disables() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let dir = tmp.path().join("x");
    seed_addon(&dir);
    let (code, out, err) =
        addonfs(&["addons", "register", "metadata.json", "addon.tar.gz"], &state, &dir);
    assert_eq!(code, 0, "{err}");
    let record: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["identifier"], "custom-addon-name-of-the-addon");
    let (code, _, err) =
        addonfs(&["addons", "register", "metadata.json", "addon.tar.gz"], &state, &dir);
    assert_eq!(code, 5);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, _) = addonfs(&["addons", "disable", "1"], &state, &dir);
    assert_eq!(code, 0);
    let (_, out, _) = addonfs(&["addons", "list", "--json"], &state, &dir);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["status"], "DISABLED");
    let (code, _, _) =
        addonfs(&["addons", "enable", "custom-addon-name-of-the-addon"], &state, &dir);
    assert_eq!(code, 0);
    let (_, out, _) = addonfs(&["addons", "list"], &state, &dir);
    assert!(out.contains("AVAILABLE") && out.contains("/usr/custom_file"), "{out}");
    // The name the metadata gave stands for its identifier.
    let (code, _, err) = addonfs(&["addons", "disable", "name-of-the-addon"], &state, &dir);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = addonfs(&["addons", "list", "--json"], &state, &dir);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["status"], "DISABLED");
    // Without a daemon, each change bumps the catalog's revision in the state directory: the
    // registration, disable, enable, disable (a refused registration changes nothing).
    let catalog = std::fs::read(state.join("catalog.json")).unwrap();
    assert_eq!(addonfs::addon::catalog::Catalog::parse(&catalog).unwrap().revision, 4);
    // An unknown add-on is "no such thing" (4), not a broken rule (5).
    let (code, _, err) = addonfs(&["addons", "enable", "no-such-addon"], &state, &dir);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("custom-addon-no-such-addon"), "{err}");
    let (code, _, err) = addonfs(&["addons", "enable", "7"], &state, &dir);
    assert_eq!(code, 4, "{err}");
    // A refused registration stores nothing.
    std::fs::write(dir.join("bad.json"), meta("other", &["/usr/missing"])).unwrap();
    let (code, _, err) = addonfs(&["addons", "register", "bad.json", "addon.tar.gz"], &state, &dir);
    assert_eq!(code, 5, "{err}");
    assert_eq!(std::fs::read_dir(state.join("addons")).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(state.join("staging")).unwrap().count(), 0);
}

/// Sends the seed's upload of `dir` (tarball part first) by hand over HTTP/1.1, all of it but
/// the `metadata` part's content and the closing boundary, announced with the full length: the
/// server has the whole tarball (staged and indexed) and waits for the rest. Returns the open
/// connection (the request stays in flight while it lives).
fn upload_all_but_the_metadata(url: &str, dir: &Path) -> std::net::TcpStream {
    use std::io::Write;
    let tarball = std::fs::read(dir.join("addon.tar.gz")).unwrap();
    let metadata = std::fs::read(dir.join("metadata.json")).unwrap();
    let b = "h17-boundary-7e3c";
    let mut head = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"tarball\"; filename=\"addon.tar.gz\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    head.extend_from_slice(&tarball);
    head.extend_from_slice(
        format!(
            "\r\n--{b}\r\nContent-Disposition: form-data; name=\"metadata\"; \
             filename=\"metadata.json\"\r\n\r\n"
        )
        .as_bytes(),
    );
    let tail = format!("\r\n--{b}--\r\n");
    let length = head.len() + metadata.len() + tail.len();
    let host = url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    write!(
        conn,
        "POST /api/v2/runtimeaddons/custom HTTP/1.1\r\nHost: {host}\r\n\
         Authorization: Bearer {KEY}\r\nContent-Type: multipart/form-data; boundary={b}\r\n\
         Content-Length: {length}\r\n\r\n"
    )
    .unwrap();
    conn.write_all(&head).unwrap();
    conn.flush().unwrap();
    conn
}

/// An add-on of many small files, so indexing it is not instant: `dir/addon.tar.gz` and its
/// `metadata.json`.
fn many_files_addon(dir: &Path) {
    std::fs::create_dir_all(dir.join("tree/opt/big")).unwrap();
    for i in 0..3000 {
        std::fs::write(dir.join(format!("tree/opt/big/f{i}")), format!("{i}\n").repeat(200))
            .unwrap();
    }
    std::fs::write(dir.join("metadata.json"), meta("big", &["/opt/big"])).unwrap();
    pack_addon(dir, &dir.join("tree"), "opt");
}

/// Killed (SIGKILL) with the whole tarball staged but the upload not committed (its metadata
/// part still in flight): the restarted server has nothing of it, and the same upload then
/// succeeds.
#[test]
fn kill_9_with_the_tarball_staged_but_not_committed_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let dir = tmp.path().join("big");
    many_files_addon(&dir);
    let full = std::fs::metadata(dir.join("addon.tar.gz")).unwrap().len();
    let mut server = Server::start(&state, &[]);
    let conn = upload_all_but_the_metadata(&server.url, &dir);
    wait_until("the whole tarball in staging/", || staged_bytes(&state) == full);
    assert_eq!(server.stored(), (vec![], 1), "staged, not committed");
    server.child.kill().unwrap(); // SIGKILL: no clean-up code runs
    server.child.wait().unwrap();
    drop(conn);
    drop(server);
    let server = Server::start(&state, &[]);
    assert_eq!(server.stored(), (vec![], 0), "staging/ is cleaned at start, nothing committed");
    let (_, all) = server.get(&[]);
    assert_eq!(all["runtime_addons"], json!([]));
    let (s, r) = server.upload(&dir, Some(KEY));
    assert_eq!((s, r["id"].as_u64()), (200, Some(1)), "{r}");
}

/// Killed (SIGKILL) right after an upload was answered: the restarted server lists it, whole.
#[test]
fn kill_9_after_the_upload_is_committed_keeps_it_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let dir = tmp.path().join("big");
    many_files_addon(&dir);
    let mut server = Server::start(&state, &[]);
    let (s, record) = server.upload(&dir, Some(KEY));
    assert_eq!(s, 200, "{record}");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    let server = Server::start(&state, &[]);
    assert_eq!(server.stored(), (vec!["custom-addon-big".to_string()], 0));
    let entry = server.entry("custom-addon-big");
    for key in entry.objects.keys() {
        assert!(state.join(key).is_file(), "{key}");
    }
    assert_eq!(
        std::fs::read(state.join(&entry.objects.tarball)).unwrap(),
        std::fs::read(dir.join("addon.tar.gz")).unwrap()
    );
    let (_, all) = server.get(&[]);
    assert_eq!(all["runtime_addons"].as_array().unwrap().len(), 1, "{all}");
    assert_eq!(all["runtime_addons"][0]["identifier"], "custom-addon-big");
    assert_eq!(all["runtime_addons"][0]["status"], "AVAILABLE");
}

#[test]
fn concurrent_uploads_of_one_name_store_exactly_one() {
    let tmp = tempfile::tempdir().unwrap();
    // All four indexed at once (by default a third one would get 429).
    let server = Server::start(&tmp.path().join("state"), &["--max-uploads", "4"]);
    for d in ["p", "q", "r", "s"] {
        addon(
            &tmp.path().join(d),
            &meta("same", &[&format!("/opt/{d}")]),
            &[&format!("opt/{d}/f")],
        );
    }
    let results: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = ["p", "q", "r", "s"]
            .iter()
            .map(|d| {
                let dir = tmp.path().join(d);
                let server = &server;
                s.spawn(move || server.upload(&dir, Some(KEY)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut codes: Vec<u16> = results.iter().map(|r| r.0).collect();
    codes.sort_unstable();
    assert_eq!(codes, [200, 409, 409, 409], "{results:?}");
    assert_eq!(server.stored(), (vec!["custom-addon-same".to_string()], 0));
    let (_, all) = server.get(&[]);
    assert_eq!(all["runtime_addons"][0]["id"], 1);
}

/// Runs `addonfs ARGS` in `cwd`; returns (exit code, stdout, stderr).
fn addonfs_cmd(args: &[&str], cwd: &Path) -> (i32, String, String) {
    outcome(Command::new(env!("CARGO_BIN_EXE_addonfs")).current_dir(cwd).args(args))
}

/// The seed's command with the parts in the other order: the tarball streams (and is indexed)
/// before the metadata arrives; the rules are still all checked before anything is stored.
#[test]
fn metadata_after_the_tarball_is_checked_before_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("state"), &[]);
    let upload = |dir: &Path| {
        curl(
            dir,
            &[
                format!("{}/api/v2/runtimeaddons/custom", server.url),
                "-F".into(),
                "tarball=@addon.tar.gz".into(),
                "-F".into(),
                "metadata=@metadata.json".into(),
                "-H".into(),
                format!("Authorization: Bearer {KEY}"),
            ],
        )
    };
    addon(&tmp.path().join("missing"), &meta("m", &["/a", "/nope"]), &["a"]);
    assert_error(&upload(&tmp.path().join("missing")), 400, 3, "\"/nope\" does not exist");
    addon(&tmp.path().join("bad"), &meta("Bad", &["/a"]), &["a"]);
    assert_error(&upload(&tmp.path().join("bad")), 400, 3, "only lowercase letters");
    assert_eq!(server.stored(), (vec![], 0));
    seed_addon(&tmp.path().join("seed"));
    let (s, r) = upload(&tmp.path().join("seed"));
    assert_eq!((s, r["id"].as_u64()), (200, Some(1)), "{r}");
    // The same name again, metadata last: refused, the first one untouched.
    assert_error(&upload(&tmp.path().join("seed")), 409, 6, "already exists");
    assert_eq!(server.stored(), (vec!["custom-addon-name-of-the-addon".to_string()], 0));
}

/// A tar of `size` random bytes in one file, `dir/addon.tar.gz`, with matching metadata.
fn random_addon(dir: &Path, name: &str, size: &str) {
    std::fs::create_dir_all(dir.join("tree/opt/big")).unwrap();
    let st = Command::new("head")
        .args(["-c", size, "/dev/urandom"])
        .stdout(std::fs::File::create(dir.join("tree/opt/big/blob")).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(dir.join("metadata.json"), meta(name, &["/opt/big"])).unwrap();
    let st = Command::new("tar")
        .arg("-C")
        .arg(dir.join("tree"))
        .arg("-cf")
        .arg(dir.join("addon.tar.gz"))
        .arg("opt")
        .status()
        .unwrap();
    assert!(st.success());
}

/// Waits until `cond` holds (panics after 10 s).
/// Starts the seed's upload of `dir`'s add-on to `url` at 2 MB/s, so it is still streaming
/// while the test acts.
fn slow_upload(dir: &Path, url: &str) -> std::process::Child {
    Command::new("curl")
        .current_dir(dir)
        .args(["-sS", "-L", "--limit-rate", "2M"])
        .arg(format!("{url}/api/v2/runtimeaddons/custom"))
        .args(["-F", "metadata=@metadata.json", "-F", "tarball=@addon.tar.gz"])
        .args(["-H", &format!("Authorization: Bearer {KEY}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Bytes of tarballs under `state/staging/` (uploads in progress).
fn staged_bytes(state: &Path) -> u64 {
    std::fs::read_dir(state.join("staging"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::metadata(e.path().join("addon.tar.gz")).ok())
        .map(|m| m.len())
        .sum()
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client that goes away mid-upload: the running server removes the half upload at once
/// (no restart needed) and keeps serving.
#[test]
fn client_disconnect_mid_upload_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("state"), &[]);
    let dir = tmp.path().join("big");
    random_addon(&dir, "big", "8M");
    let mut upload = slow_upload(&dir, &server.url);
    wait_until("part of the upload in staging/", || staged_bytes(&server.state) > 0);
    upload.kill().unwrap();
    upload.wait().unwrap();
    wait_until("staging/ to be emptied", || server.stored() == (vec![], 0));
    let (_, all) = server.get(&[]);
    assert_eq!(all["runtime_addons"], json!([]));
    // The same add-on uploads whole afterwards.
    let (s, r) = server.upload(&dir, Some(KEY));
    assert_eq!((s, r["id"].as_u64()), (200, Some(1)), "{r}");
    assert_eq!(
        std::fs::read(server.state.join(server.entry("custom-addon-big").objects.tarball)).unwrap(),
        std::fs::read(dir.join("addon.tar.gz")).unwrap()
    );
}

/// A large body that is not an archive fails as soon as its start is scanned; the error comes
/// back and nothing is stored.
#[test]
fn large_non_archive_is_refused_and_not_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("state"), &[]);
    let dir = tmp.path().join("x");
    seed_addon(&dir);
    let st = Command::new("head")
        .args(["-c", "32M", "/dev/urandom"])
        .stdout(std::fs::File::create(dir.join("noise.bin")).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    let got = seed_upload(&dir, &server.url, KEY, "noise.bin");
    assert_error(&got, 400, 3, "not a valid archive");
    wait_until("staging/ to be emptied", || server.stored() == (vec![], 0));
}

/// Runs `addonfs ARGS --state-dir STATE` with `env` set (and `ADDONFS_API_KEY` removed unless
/// `env` sets it); returns (exit code, stdout, stderr).
fn addonfs_env(args: &[&str], state: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_addonfs"));
    cmd.current_dir(state.parent().unwrap()).args(args).arg("--state-dir").arg(state);
    cmd.env_remove("ADDONFS_API_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    outcome(&mut cmd)
}

/// Exit codes mean what the README says: a port in use is an environment failure (1, not 2
/// "usage"), a file that is not an archive is 3, an unknown add-on 4, a broken rule 5, a flag
/// that does not exist 2.
#[test]
fn exit_codes_of_serve_and_admin_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let state = tmp.path().join("state");
    let (code, _, err) = addonfs_env(
        &["serve", "--no-mount", "--listen", &listen],
        &state,
        &[("ADDONFS_API_KEY", KEY)],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("cannot listen on {listen}")), "{err}");
    let dir = tmp.path().join("x");
    seed_addon(&dir);
    std::fs::write(dir.join("notes.txt"), "not an archive at all\n".repeat(100)).unwrap();
    let (code, _, err) =
        addonfs(&["addons", "register", "metadata.json", "notes.txt"], &state, &dir);
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = addonfs(&["addons", "disable", "custom-addon-nope"], &state, &dir);
    assert_eq!(code, 4, "{err}");
    std::fs::write(dir.join("bad.json"), meta("Bad Name", &["/usr/custom_file"])).unwrap();
    let (code, _, err) = addonfs(&["addons", "register", "bad.json", "addon.tar.gz"], &state, &dir);
    assert_eq!(code, 5, "{err}");
    let (code, _, err) = addonfs(&["addons", "list", "--no-such-flag"], &state, &dir);
    assert_eq!(code, 2, "{err}");
    drop(busy);
}

/// One writer process per state directory: a second daemon is refused with the directory and
/// the holder named; the lock goes with the process, even on SIGKILL.
#[test]
fn second_serve_on_the_same_state_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let mut server = Server::start(&state, &[]);
    let (code, _, err) = addonfs_env(
        &["serve", "--no-mount", "--listen", "127.0.0.1:0"],
        &state,
        &[("ADDONFS_API_KEY", KEY)],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("the state directory {} is in use", state.display())), "{err}");
    assert!(err.contains(&format!("pid {}", server.child.id())), "{err}");
    assert!(err.contains(&server.url), "{err}");
    server.child.kill().unwrap(); // SIGKILL: no clean-up code runs
    server.child.wait().unwrap();
    drop(server);
    let server = Server::start(&state, &[]);
    assert_eq!(server.get(&[]).0, 200);
}

/// Admin writes take the lock for their change: refused while another process holds the
/// directory (here a store held open by the test itself), naming it; `addons list` reads
/// without the lock and leaves uploads in progress alone.
#[test]
fn admin_writes_take_the_lock_and_list_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let dir = tmp.path().join("x");
    seed_addon(&dir);
    let (code, _, err) =
        addonfs(&["addons", "register", "metadata.json", "addon.tar.gz"], &state, &dir);
    assert_eq!(code, 0, "{err}");
    let held = addonfs::addon::Store::open(&state, "test").unwrap();
    std::fs::create_dir_all(state.join("staging/in-progress")).unwrap();
    for args in
        [&["addons", "disable", "1"][..], &["addons", "register", "metadata.json", "addon.tar.gz"]]
    {
        let (code, _, err) = addonfs(args, &state, &dir);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("is in use by another addonfs process"), "{err}");
        assert!(err.contains(&format!("pid {} (`addonfs test`)", std::process::id())), "{err}");
    }
    let (code, out, err) = addonfs(&["addons", "list", "--json"], &state, &dir);
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["status"], "AVAILABLE");
    assert!(state.join("staging/in-progress").is_dir(), "list left staging/ alone");
    drop(held);
    let (code, _, err) = addonfs(&["addons", "disable", "1"], &state, &dir);
    assert_eq!(code, 0, "{err}");
}

/// With a daemon running, the admin commands on its state directory go through its API (so
/// the daemon sees the change at once), or through `--api URL --key-file F` explicitly.
#[test]
fn admin_cli_goes_through_a_running_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let server = Server::start(&state, &[]);
    let dir = tmp.path().join("x");
    seed_addon(&dir);
    let meta_file = dir.join("metadata.json");
    let tarball = dir.join("addon.tar.gz");
    let (meta_arg, tar_arg) = (meta_file.to_str().unwrap(), tarball.to_str().unwrap());
    let key = [("ADDONFS_API_KEY", KEY)];

    // No key to be found (the daemon's key came from its environment): told what to do.
    let (code, _, err) = addonfs_env(&["addons", "disable", "1"], &state, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--key-file") && err.contains(&server.url), "{err}");

    // Register and disable through the daemon: it lists the change at once.
    let (code, out, err) = addonfs_env(&["addons", "register", meta_arg, tar_arg], &state, &key);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("going through its API"), "{err}");
    let record: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["identifier"], "custom-addon-name-of-the-addon");
    let (_, all) = server.get(&[]);
    assert_eq!(all["runtime_addons"][0]["status"], "AVAILABLE");
    let (code, out, err) =
        addonfs_env(&["addons", "disable", "custom-addon-name-of-the-addon"], &state, &key);
    assert_eq!((code, out.trim()), (0, "custom-addon-name-of-the-addon: DISABLED"), "{err}");
    let (_, all) = server.get(&[]);
    assert_eq!(all["runtime_addons"][0]["status"], "DISABLED");

    // Rule failures come back with the API's message and the rule exit code.
    let (code, _, err) = addonfs_env(&["addons", "register", meta_arg, tar_arg], &state, &key);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = addonfs_env(&["addons", "enable", "42"], &state, &key);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("no add-on has id 42"), "{err}");

    // Explicitly, with a key file; a wrong key is refused.
    std::fs::write(tmp.path().join("key"), format!("# the daemon's key\n{KEY}\n")).unwrap();
    std::fs::write(tmp.path().join("bad-key"), "nope\n").unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    let api = ["--api", server.url.as_str(), "--key-file"];
    let key_file = tmp.path().join("key");
    let enable: Vec<&str> = ["addons", "enable", "1"]
        .iter()
        .chain(&api)
        .copied()
        .chain([key_file.to_str().unwrap()])
        .collect();
    let (code, out, err) = addonfs_env(&enable, &elsewhere, &[]);
    assert_eq!((code, out.trim()), (0, "1: AVAILABLE"), "{err}");
    let (_, all) = server.get(&[]);
    assert_eq!(all["runtime_addons"][0]["status"], "AVAILABLE");
    let bad_file = tmp.path().join("bad-key");
    let list: Vec<&str> = ["addons", "list", "--json"]
        .iter()
        .chain(&api)
        .copied()
        .chain([bad_file.to_str().unwrap()])
        .collect();
    let (code, _, err) = addonfs_env(&list, &elsewhere, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("HTTP 401"), "{err}");
    let list: Vec<&str> = ["addons", "list", "--json"]
        .iter()
        .chain(&api)
        .copied()
        .chain([key_file.to_str().unwrap()])
        .collect();
    let (code, out, err) = addonfs_env(&list, &elsewhere, &[]);
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0], all["runtime_addons"][0]);
    assert!(!elsewhere.exists(), "--api touches no state directory");
    assert_eq!(server.stored(), (vec!["custom-addon-name-of-the-addon".to_string()], 0));
}

/// A FIFO at `path` fed with zeros by a thread until its reader closes it; the thread ends
/// with the number of bytes it could write.
fn zero_fifo(path: &Path) -> std::thread::JoinHandle<u64> {
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success());
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut fifo = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        let mut sent = 0u64;
        // Stops when the reader closes (EPIPE), or after 1 GiB: a reader that reads all of it
        // is the bug.
        while sent < 1 << 30 {
            match fifo.write(&chunk) {
                Ok(n) => sent += n as u64,
                Err(_) => break,
            }
        }
        sent
    })
}

/// Runs `addonfs ARGS` in `cwd` with its address space capped at 4 GiB (`prlimit --as`), so
/// that reading an endless file fails the test instead of exhausting the machine.
fn capped(args: &[&str], cwd: &Path) -> (i32, String, String) {
    outcome(
        Command::new("prlimit")
            .arg("--as=4294967296")
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_addonfs"))
            .current_dir(cwd)
            .args(args)
            .env_remove("ADDONFS_API_KEY"),
    )
}

/// `validate`, `addons register` and `serve --api-key-file` read at most their limit (plus one
/// byte) of a metadata or key file that never ends, and refuse it naming the limit: a device
/// and a FIFO, whose size cannot be checked up front.
#[test]
fn endless_metadata_and_key_files_are_refused_after_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("x");
    seed_addon(&dir);
    let state = tmp.path().join("state");
    let limit = "larger than the limit of 65536 bytes";
    let (code, _, stderr) = capped(&["validate", "/dev/zero", "addon.tar.gz"], &dir);
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("/dev/zero: metadata is") && stderr.contains(limit), "{stderr}");
    let (code, _, stderr) = capped(
        &[
            "addons",
            "register",
            "/dev/zero",
            "addon.tar.gz",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &dir,
    );
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains(limit), "{stderr}");

    let fifo = dir.join("meta.fifo");
    let writer = zero_fifo(&fifo);
    let (code, _, stderr) = capped(&["validate", "meta.fifo", "addon.tar.gz"], &dir);
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains(limit), "{stderr}");
    let sent = writer.join().unwrap();
    assert!(sent < 1 << 30, "the whole FIFO was read");

    let keys = dir.join("keys.fifo");
    let writer = zero_fifo(&keys);
    let keys = keys.to_str().unwrap();
    let state = state.to_str().unwrap();
    let (code, _, stderr) = capped(
        &[
            "serve",
            "--no-mount",
            "--listen",
            "127.0.0.1:0",
            "--api-key-file",
            keys,
            "--state-dir",
            state,
        ],
        &dir,
    );
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("larger than the limit of 1048576 bytes"), "{stderr}");
    assert!(writer.join().unwrap() < 1 << 30, "the whole key FIFO was read");
}
