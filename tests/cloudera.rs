//! Cloudera's Ansible collection (`cloudera.services`: `ml_runtime_addon`,
//! `ml_runtime_addon_info`, `ml_runtime_addons_info`) against the real `addonfs serve`, over
//! HTTP with the real `curl`, sending what that client sends: `Accept` and `Content-Type:
//! application/json` on every request (a GET included, sometimes with a `{}` body), the bearer
//! key, `page_size=100` and the `page_token` it was given, until `next_page_token` is empty.
//! What it relies on is pinned here (docs/api.md, "Cloudera's client").

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::http::{curl_answer, pack_addon, seed_upload, Answer, Serve};

const KEY: &str = "cloudera-collection-test-key";
const LIST: &str = "/api/v2/runtimeaddons";
const STATUS: &str = "/api/v2/runtimeaddons:updatestatus";

/// One request as the collection's client makes it: `method URL?query` with `Accept` and
/// `Content-Type: application/json`, the bearer key, and `body` when given (on a GET too).
fn request(
    serve: &Serve,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let mut args: Vec<String> = vec![
        "-X".into(),
        method.into(),
        format!("{}{path}", serve.url),
        "-H".into(),
        "Accept: application/json".into(),
        "-H".into(),
        "Content-Type: application/json".into(),
        "-H".into(),
        format!("Authorization: Bearer {KEY}"),
    ];
    for (k, v) in query {
        // `--url-query` URL-encodes the value, as `urlencode` does in the client.
        args.extend(["--url-query".into(), format!("{k}={v}")]);
    }
    if let Some(body) = body {
        args.extend(["--data-raw".into(), body.into()]);
    }
    curl_answer(&serve.state, &args)
}

fn list(serve: &Serve, query: &[(&str, &str)]) -> Answer {
    request(serve, "GET", LIST, query, None)
}

fn update(serve: &Serve, body: Value) -> Answer {
    request(serve, "POST", STATUS, &[], Some(&body.to_string()))
}

/// `rows_affected` of a successful status change.
fn rows(answer: &Answer) -> u64 {
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["rows_affected"].as_u64().unwrap_or_else(|| panic!("{}", answer.body))
}

/// A non-2xx answer the client can read: JSON, with `error` (what older clients print),
/// `message` (the same), an integer gRPC `code` and a `details` list.
fn assert_envelope(answer: &Answer, status: u16, code: i64, fragments: &[&str]) {
    let body = &answer.body;
    assert_eq!(answer.status, status, "{body}");
    assert!(answer.content_type.starts_with("application/json"), "{answer:?}");
    assert!(body.is_object(), "{body}");
    let error = body["error"].as_str().unwrap_or_else(|| panic!("no `error` string: {body}"));
    assert!(!error.is_empty(), "{body}");
    assert_eq!(body["message"].as_str(), Some(error), "{body}");
    assert_eq!(body["code"].as_i64(), Some(code), "{body}");
    assert!(body["details"].is_array(), "{body}");
    for f in fragments {
        assert!(error.contains(f), "{f:?} not in {error:?}");
    }
}

/// Every field the client's `MlRuntimeAddon` reads, with its type.
fn assert_record(record: &Value) {
    let text = record.to_string();
    assert!(record["id"].is_u64(), "integer id: {text}");
    for key in ["identifier", "component", "display_name", "status", "created_at", "reason"] {
        assert!(record[key].is_string(), "{key}: {text}");
    }
    assert!(record["manageable"].is_boolean(), "{text}");
    assert!(record["identifier"].as_str().unwrap().starts_with("custom-addon-"), "{text}");
    assert_eq!(record["component"], "Custom", "{text}");
    assert!(
        ["AVAILABLE", "DEPRECATED", "DISABLED"].contains(&record["status"].as_str().unwrap()),
        "{text}"
    );
    let at = record["created_at"].as_str().unwrap().as_bytes();
    let shape = at.len() == 20
        && at.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    assert!(shape, "RFC 3339 UTC created_at: {text}");
    if record["status"] == "AVAILABLE" {
        assert_eq!(record["reason"], "", "{text}");
    } else {
        assert_ne!(record["reason"], "", "{text}");
    }
}

/// Uploads (the seed's `curl -F`) an add-on `name` requesting `paths`, each a file in its
/// tarball; returns its record.
fn upload(serve: &Serve, work: &Path, name: &str, paths: &[&str]) -> Value {
    let dir = work.join(name);
    let tree = dir.join("tree");
    for p in paths {
        let file = tree.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, format!("{name} {p}\n")).unwrap();
    }
    let metadata = json!({"name": name, "spec": {"paths": paths}});
    std::fs::write(dir.join("metadata.json"), metadata.to_string()).unwrap();
    pack_addon(&dir, &tree, ".");
    let (status, record) = seed_upload(&dir, &serve.url, KEY, "addon.tar.gz");
    assert_eq!(status, 200, "{record}");
    record
}

/// Every record, walked as the client's `paginated` decorator does: `page_size=100`, then the
/// `page_token` it was given while `next_page_token` is not empty. Returns the records and
/// the number of requests.
fn walk(serve: &Serve, search_filter: Option<&str>) -> (Vec<Value>, usize) {
    let mut records = Vec::new();
    let mut token = String::new();
    for requests in 1.. {
        let mut query = vec![("page_size", "100")];
        if let Some(f) = search_filter {
            query.push(("search_filter", f));
        }
        if !token.is_empty() {
            query.push(("page_token", token.as_str()));
        }
        let page = list(serve, &query);
        assert_eq!(page.status, 200, "{}", page.body);
        let items = page.body["runtime_addons"].as_array().expect("runtime_addons").clone();
        records.extend(items);
        match page.body.get("next_page_token").and_then(Value::as_str) {
            None | Some("") => return (records, requests),
            Some(next) => token = next.to_string(),
        }
        assert!(requests < 100, "paging does not end");
    }
    unreachable!()
}

fn statuses(serve: &Serve) -> Vec<(String, String, String)> {
    walk(serve, None)
        .0
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("identifier"), s("status"), s("reason"))
        })
        .collect()
}

#[test]
fn rows_affected_counts_the_addons_whose_status_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start(&tmp.path().join("state"), KEY, None);
    let a = upload(&serve, tmp.path(), "a", &["/opt/a"]);
    upload(&serve, tmp.path(), "b", &["/opt/b"]);
    let by_name = |status: &str| json!({"status": status, "identifiers": ["custom-addon-a"]});
    // The module's `changed` is `rows_affected > 0`: a second run of a play changes nothing.
    assert_eq!(rows(&update(&serve, by_name("DISABLED"))), 1);
    assert_eq!(rows(&update(&serve, by_name("DISABLED"))), 0);
    let both = json!({"status": "DISABLED", "ids": [a["id"], 2]});
    assert_eq!(rows(&update(&serve, both.clone())), 1);
    assert_eq!(rows(&update(&serve, both)), 0);
    // An id and the identifier of the same add-on count once.
    let twice = json!({"status": "AVAILABLE", "ids": [1, 2], "identifiers": ["custom-addon-a"]});
    assert_eq!(rows(&update(&serve, twice.clone())), 2);
    assert_eq!(rows(&update(&serve, twice)), 0);
    assert_eq!(rows(&update(&serve, json!({"status": "DEPRECATED", "ids": [1]}))), 1);
    assert_eq!(rows(&update(&serve, json!({"status": "DEPRECATED", "ids": [1]}))), 0);
}

#[test]
fn deprecated_is_listed_with_a_reason_and_still_holds_its_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start(&tmp.path().join("state"), KEY, None);
    upload(&serve, tmp.path(), "old", &["/opt/tool"]);
    upload(&serve, tmp.path(), "other", &["/opt/other"]);
    // What the module sends (no reason): the default text.
    let deprecate = json!({"status": "DEPRECATED", "identifiers": ["custom-addon-old"]});
    assert_eq!(rows(&update(&serve, deprecate)), 1);
    let found = list(&serve, &[("search_filter", r#"{"status": "DEPRECATED"}"#)]);
    assert_eq!(found.status, 200, "{}", found.body);
    let records = found.body["runtime_addons"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{}", found.body);
    assert_record(&records[0]);
    assert_eq!(records[0]["identifier"], "custom-addon-old");
    assert_eq!(records[0]["reason"], "deprecated by an administrator");
    // addonfs's optional `reason`.
    let why = "replaced by custom-addon-new; disabled on 2027-01-31";
    let with_reason = json!({"status": "DEPRECATED", "ids": [1], "reason": why});
    assert_eq!(rows(&update(&serve, with_reason.clone())), 1);
    assert_eq!(rows(&update(&serve, with_reason)), 0);
    assert_eq!(statuses(&serve)[0], ("custom-addon-old".into(), "DEPRECATED".into(), why.into()));

    // Still enabled: a new add-on may not take its paths.
    let dir = tmp.path().join("new");
    std::fs::create_dir_all(dir.join("tree/opt/tool")).unwrap();
    std::fs::write(dir.join("tree/opt/tool/bin"), "new\n").unwrap();
    std::fs::write(
        dir.join("metadata.json"),
        r#"{"name":"new","spec":{"paths":["/opt/tool/bin"]}}"#,
    )
    .unwrap();
    pack_addon(&dir, &dir.join("tree"), ".");
    let (status, body) = seed_upload(&dir, &serve.url, KEY, "addon.tar.gz");
    let refused = Answer { status, content_type: "application/json".into(), body };
    assert_envelope(&refused, 400, 9, &["custom-addon-new", "custom-addon-old", "/opt/tool"]);

    // DISABLED -> DEPRECATED is an enable, checked like DISABLED -> AVAILABLE.
    assert_eq!(rows(&update(&serve, json!({"status": "DISABLED", "ids": [1]}))), 1);
    let (status, _) = seed_upload(&dir, &serve.url, KEY, "addon.tar.gz");
    assert_eq!(status, 200);
    let before = statuses(&serve);
    let back = update(&serve, json!({"status": "DEPRECATED", "ids": [1]}));
    assert_envelope(&back, 400, 9, &["custom-addon-old", "custom-addon-new"]);
    assert_eq!(statuses(&serve), before);
    // AVAILABLE <-> DEPRECATED needs no check; AVAILABLE clears the reason.
    assert_eq!(rows(&update(&serve, json!({"status": "DEPRECATED", "ids": [2]}))), 1);
    assert_eq!(rows(&update(&serve, json!({"status": "AVAILABLE", "ids": [2]}))), 1);
    assert_eq!(statuses(&serve)[1], ("custom-addon-other".into(), "AVAILABLE".into(), "".into()));
    // A reason with AVAILABLE is refused.
    let bad = update(&serve, json!({"status": "AVAILABLE", "ids": [2], "reason": "x"}));
    assert_envelope(&bad, 400, 3, &["reason"]);
}

#[test]
fn deleted_is_a_precondition_and_other_statuses_are_bad_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start(&tmp.path().join("state"), KEY, None);
    upload(&serve, tmp.path(), "a", &["/opt/a"]);
    let before = statuses(&serve);
    let deleted = update(&serve, json!({"status": "DELETED", "identifiers": ["custom-addon-a"]}));
    assert_envelope(&deleted, 400, 9, &["cannot be deleted", "DISABLED"]);
    for status in ["UNKNOWN", "FAILED", "available", "REMOVED"] {
        let refused = update(&serve, json!({"status": status, "ids": [1]}));
        assert_envelope(&refused, 400, 3, &["AVAILABLE, DEPRECATED or DISABLED"]);
    }
    assert_eq!(statuses(&serve), before);
}

#[test]
fn a_batch_with_unknown_names_or_a_conflict_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start(&tmp.path().join("state"), KEY, None);
    upload(&serve, tmp.path(), "a", &["/opt/x"]);
    upload(&serve, tmp.path(), "b", &["/opt/b"]);
    let before = statuses(&serve);
    let mixed = json!({
        "status": "DISABLED",
        "ids": [1, 7, 2, 9],
        "identifiers": ["custom-addon-b", "custom-addon-gone", "spark-3.2"],
    });
    let refused = update(&serve, mixed);
    assert_envelope(
        &refused,
        404,
        5,
        &["id 7", "id 9", "`custom-addon-gone`", "`spark-3.2`", "nothing was changed"],
    );
    assert!(!refused.body["error"].as_str().unwrap().contains("id 1,"), "{}", refused.body);
    assert_eq!(statuses(&serve), before);

    // Two enables in one batch that collide with each other: neither happens, and neither
    // does the harmless third.
    upload(&serve, tmp.path(), "c", &["/opt/c"]);
    assert_eq!(rows(&update(&serve, json!({"status": "DISABLED", "ids": [1, 2, 3]}))), 3);
    upload(&serve, tmp.path(), "d", &["/opt/x/y"]);
    assert_eq!(rows(&update(&serve, json!({"status": "DISABLED", "ids": [4]}))), 1);
    let before = statuses(&serve);
    let refused = update(&serve, json!({"status": "AVAILABLE", "ids": [2, 3, 1, 4]}));
    assert_envelope(&refused, 400, 9, &["custom-addon-a", "custom-addon-d"]);
    assert_eq!(statuses(&serve), before);
    assert!(before.iter().all(|(_, s, _)| s == "DISABLED"), "{before:?}");
}

#[test]
fn every_refusal_is_the_json_envelope() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start(&tmp.path().join("state"), KEY, None);
    upload(&serve, tmp.path(), "a", &["/opt/a"]);
    let cases: Vec<(Answer, u16, i64)> = vec![
        (list(&serve, &[("search_filter", r#"{"name": "a"}"#)]), 400, 3),
        (list(&serve, &[("search_filter", "status=AVAILABLE")]), 400, 3),
        (list(&serve, &[("page_size", "-1")]), 400, 3),
        (list(&serve, &[("page_token", "abc")]), 400, 3),
        (list(&serve, &[("sort", "size")]), 400, 3),
        (request(&serve, "POST", STATUS, &[], Some("{")), 400, 3),
        (request(&serve, "POST", STATUS, &[], Some("{}")), 400, 3),
        (request(&serve, "POST", STATUS, &[], None), 400, 3),
        (update(&serve, json!({"status": "DISABLED"})), 400, 3),
        (update(&serve, json!({"status": "DISABLED", "ids": ["1"]})), 400, 3),
        (update(&serve, json!({"status": "DISABLED", "ids": [99]})), 404, 5),
        (update(&serve, json!({"status": "DELETED", "ids": [1]})), 400, 9),
        (request(&serve, "GET", "/api/v2/runtimeaddons/1", &[], None), 404, 5),
        (request(&serve, "GET", "/api/v2/runtimes", &[], Some("{}")), 404, 5),
        (request(&serve, "DELETE", LIST, &[], None), 405, 12),
        (request(&serve, "GET", STATUS, &[], Some("{}")), 405, 12),
        (request(&serve, "PATCH", "/api/v2/runtimeaddons/custom", &[], Some("{}")), 405, 12),
        (request(&serve, "POST", "/api/v2/runtimeaddons/custom", &[], Some("{}")), 400, 3),
    ];
    for (answer, status, code) in &cases {
        assert_envelope(answer, *status, *code, &[]);
    }
    // The same name again (409), on the upload route with the client's `Accept`.
    let again = curl_answer(
        &tmp.path().join("a"),
        &[
            format!("{}/api/v2/runtimeaddons/custom", serve.url),
            "-H".into(),
            "Accept: application/json".into(),
            "-H".into(),
            format!("Authorization: Bearer {KEY}"),
            "-F".into(),
            "metadata=@metadata.json".into(),
            "-F".into(),
            "tarball=@addon.tar.gz".into(),
        ],
    );
    assert_envelope(&again, 409, 6, &["custom-addon-a", "already exists"]);
    // An I/O failure (500): the catalog's place is taken by a directory, so the status change
    // (one catalog write) cannot be written; nothing changes.
    let before = statuses(&serve);
    let catalog = serve.state.join(addonfs::addon::catalog::CATALOG_KEY);
    let aside = serve.state.join("catalog.json.aside");
    std::fs::rename(&catalog, &aside).unwrap();
    std::fs::create_dir_all(catalog.join("in-the-way")).unwrap();
    let failed = update(&serve, json!({"status": "DISABLED", "ids": [1]}));
    // The details (paths inside the state directory) go to the daemon's log, not the client.
    assert_envelope(&failed, 500, 13, &["the store failed", "log"]);
    assert!(!failed.body.to_string().contains("catalog.json"), "{}", failed.body);
    assert_eq!(statuses(&serve), before);
    std::fs::remove_dir_all(&catalog).unwrap();
    std::fs::rename(&aside, &catalog).unwrap();
    // Without the key or with a wrong one, on the client's own headers.
    for auth in [None, Some("Authorization: Bearer wrong")] {
        let mut args = vec![
            format!("{}{LIST}", serve.url),
            "-H".to_string(),
            "Accept: application/json".into(),
            "-H".into(),
            "Content-Type: application/json".into(),
        ];
        if let Some(h) = auth {
            args.extend(["-H".into(), h.into()]);
        }
        assert_envelope(&curl_answer(&serve.state, &args), 401, 16, &[]);
    }
}

#[test]
fn the_client_request_shapes_and_record_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start(&tmp.path().join("state"), KEY, None);
    upload(&serve, tmp.path(), "a", &["/opt/a"]);
    upload(&serve, tmp.path(), "b-2_x", &["/opt/b"]);
    assert_eq!(rows(&update(&serve, json!({"status": "DISABLED", "ids": [2]}))), 1);
    // A GET with the JSON headers and no body, with an empty `{}` body, and the client's
    // first call (`page_size=100` only).
    for body in [None, Some("{}")] {
        for query in [&[][..], &[("page_size", "100")][..]] {
            let page = request(&serve, "GET", LIST, query, body);
            assert_eq!(page.status, 200, "{}", page.body);
            assert!(page.content_type.starts_with("application/json"), "{page:?}");
            let records = page.body["runtime_addons"].as_array().expect("runtime_addons");
            assert_eq!(records.len(), 2, "{}", page.body);
            records.iter().for_each(assert_record);
            assert_eq!(page.body["next_page_token"], "", "{}", page.body);
        }
    }
    let (records, _) = walk(&serve, None);
    assert_eq!(records[0]["id"], 1);
    assert_eq!(records[1]["id"], 2);
    assert_eq!(records[1]["identifier"], "custom-addon-b-2_x");
    assert_eq!(records[1]["display_name"], "b-2_x");
    assert_eq!(records[1]["status"], "DISABLED");
    assert_eq!(records[1]["reason"], "disabled by an administrator");
    assert_eq!(records[1]["manageable"], true);
    // The status route with the same headers, ids as JSON integers.
    let changed =
        request(&serve, "POST", STATUS, &[], Some(r#"{"status": "AVAILABLE", "ids": [2]}"#));
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert!(changed.content_type.starts_with("application/json"), "{changed:?}");
    assert_eq!(changed.body["rows_affected"], 1, "{}", changed.body);
    // Beside it, addonfs's catalog revision (an extra field, which the client ignores).
    assert!(changed.body["revision"].is_u64(), "{}", changed.body);
}

#[test]
fn search_filter_with_each_key() {
    let tmp = tempfile::tempdir().unwrap();
    let serve = Serve::start(&tmp.path().join("state"), KEY, None);
    for name in ["a", "b", "c", "d"] {
        upload(&serve, tmp.path(), name, &[&format!("/opt/{name}")]);
    }
    assert_eq!(rows(&update(&serve, json!({"status": "DISABLED", "ids": [2]}))), 1);
    assert_eq!(rows(&update(&serve, json!({"status": "DEPRECATED", "ids": [3]}))), 1);
    let ids = |filter: &str| -> Vec<u64> {
        walk(&serve, Some(filter)).0.iter().map(|r| r["id"].as_u64().unwrap()).collect()
    };
    // Python's `json.dumps` spacing, and compact JSON.
    assert_eq!(ids(r#"{"identifier": "custom-addon-b"}"#), [2]);
    assert_eq!(ids(r#"{"display_name":"d"}"#), [4]);
    assert_eq!(ids(r#"{"component": "Custom"}"#), [1, 2, 3, 4]);
    assert_eq!(ids(r#"{"component": "Spark"}"#), Vec::<u64>::new());
    assert_eq!(ids(r#"{"status": "AVAILABLE"}"#), [1, 4]);
    assert_eq!(ids(r#"{"status": "DISABLED"}"#), [2]);
    assert_eq!(ids(r#"{"status": "DEPRECATED"}"#), [3]);
    assert_eq!(ids(r#"{"status": "DELETED"}"#), Vec::<u64>::new());
    assert_eq!(ids(r#"{"status": "AVAILABLE", "display_name": "a"}"#), [1]);
    assert_eq!(ids(r#"{"status": "DISABLED", "identifier": "custom-addon-a"}"#), Vec::<u64>::new());
    assert_eq!(ids("{}"), [1, 2, 3, 4]);
    assert_eq!(ids(""), [1, 2, 3, 4]);
}

/// Registers `n` add-ons `bulk000`.. (each requesting its own `/opt/bulkNNN` from one shared
/// tarball) in the state directory, through the library's register (what `addons register`
/// runs), before `serve` starts.
fn register_many(state: &Path, work: &Path, n: usize) {
    let tree = work.join("bulk-tree");
    std::fs::create_dir_all(tree.join("opt")).unwrap();
    for i in 0..n {
        std::fs::write(tree.join(format!("opt/bulk{i:03}")), format!("{i}\n")).unwrap();
    }
    pack_addon(work, &tree, ".");
    let tarball = work.join("addon.tar.gz");
    let store = addonfs::addon::Store::open(state, "test").unwrap();
    let started = Instant::now();
    for i in 0..n {
        let name = format!("bulk{i:03}");
        let bytes = json!({"name": name, "spec": {"paths": [format!("/opt/{name}")]}}).to_string();
        let meta = work.join(format!("{name}.json"));
        addonfs::addon::register(&store, &meta, bytes.as_bytes(), &tarball).unwrap();
    }
    eprintln!("registered {n} add-ons in {:?}", started.elapsed());
}

#[test]
fn a_hundred_and_twenty_addons_page_through_with_page_size_100() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    register_many(&state, tmp.path(), 120);
    let serve = Serve::start(&state, KEY, None);

    let first = list(&serve, &[("page_size", "100")]);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["runtime_addons"].as_array().unwrap().len(), 100);
    let token = first.body["next_page_token"].as_str().unwrap();
    assert!(!token.is_empty(), "{}", first.body["next_page_token"]);
    let last = list(&serve, &[("page_size", "100"), ("page_token", token)]);
    assert_eq!(last.body["runtime_addons"].as_array().unwrap().len(), 20);
    assert_eq!(last.body["next_page_token"], "");

    let (records, requests) = walk(&serve, None);
    assert_eq!(requests, 2);
    let ids: Vec<u64> = records.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (1..=120).collect::<Vec<u64>>());
    records.iter().for_each(assert_record);

    // One batch of 30 by ids, then the same batch again.
    let thirty: Vec<u64> = (1..=120).filter(|i| i % 4 == 0).collect();
    assert_eq!(rows(&update(&serve, json!({"status": "DISABLED", "ids": thirty}))), 30);
    assert_eq!(rows(&update(&serve, json!({"status": "DISABLED", "ids": thirty}))), 0);
    let (available, requests) = walk(&serve, Some(r#"{"status": "AVAILABLE"}"#));
    assert_eq!((available.len(), requests), (90, 1));
    let (disabled, _) = walk(&serve, Some(r#"{"status": "DISABLED"}"#));
    let got: Vec<u64> = disabled.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(got, thirty);
    // Every identifier at once, by name.
    let all: Vec<String> = (0..120).map(|i| format!("custom-addon-bulk{i:03}")).collect();
    let deprecate = json!({"status": "DEPRECATED", "identifiers": all});
    assert_eq!(rows(&update(&serve, deprecate.clone())), 120);
    assert_eq!(rows(&update(&serve, deprecate)), 0);
    let (deprecated, requests) = walk(&serve, Some(r#"{"status": "DEPRECATED"}"#));
    assert_eq!((deprecated.len(), requests), (120, 2));
    // One catalog write per change: the store's catalog has them all.
    let catalog = std::fs::read(state.join(addonfs::addon::catalog::CATALOG_KEY)).unwrap();
    let catalog = addonfs::addon::catalog::Catalog::parse(&catalog).unwrap();
    assert!(catalog.addons.iter().all(|e| e.record.status == addonfs::addon::Status::Deprecated));
}

/// `addonfs attach` of the mount into `root`.
fn attach(mount: &Path, root: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_addonfs"))
        .args(["attach", "--mount"])
        .arg(mount)
        .arg("--root")
        .arg(root)
        .output()
        .expect("attach")
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_deprecated_addon_stays_mounted_attached_and_flagged_in_the_manifest() {
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("mnt");
    let serve = Serve::start(&tmp.path().join("state"), KEY, Some(&mount));
    upload(&serve, tmp.path(), "old", &["/opt/old/tool"]);
    let manifest = || -> Value {
        serde_json::from_slice(&std::fs::read(mount.join(".addons.json")).expect("manifest"))
            .expect("manifest is JSON")
    };
    wait_for("the add-on in the manifest", || manifest()["addons"].as_array().unwrap().len() == 1);
    assert_eq!(
        manifest()["addons"][0],
        json!({"identifier": "custom-addon-old", "paths": ["/opt/old/tool"]}),
        "an AVAILABLE add-on is written as before"
    );

    let why = "moves to custom-addon-new on 2027-01-31";
    let deprecate =
        json!({"status": "DEPRECATED", "identifiers": ["custom-addon-old"], "reason": why});
    assert_eq!(rows(&update(&serve, deprecate)), 1);
    wait_for("the manifest to flag it", || manifest()["addons"][0]["deprecated"] == true);
    assert_eq!(
        manifest()["addons"][0],
        json!({"identifier": "custom-addon-old", "paths": ["/opt/old/tool"], "deprecated": true, "reason": why})
    );
    // Still served and attached to a new workload.
    let names: Vec<String> = std::fs::read_dir(&mount)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"custom-addon-old".to_string()), "{names:?}");
    let root = tmp.path().join("workload");
    std::fs::create_dir_all(&root).unwrap();
    let out = attach(&mount, &root);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(std::fs::read_to_string(root.join("opt/old/tool")).unwrap(), "old /opt/old/tool\n");
    // ... and its user is warned.
    assert!(
        stderr.contains(&format!("warning: add-on custom-addon-old is deprecated: {why}")),
        "{stderr}"
    );

    let again = Command::new(env!("CARGO_BIN_EXE_addonfs"))
        .args(["attach", "--json", "--mount"])
        .arg(&mount)
        .arg("--root")
        .arg(&root)
        .output()
        .expect("attach --json");
    let report: Value = serde_json::from_slice(&again.stdout).expect("JSON report");
    assert_eq!(report["deprecated"], json!([{"addon": "custom-addon-old", "reason": why}]));

    // Disabled: gone from the manifest, and new workloads no longer get it.
    assert_eq!(rows(&update(&serve, json!({"status": "DISABLED", "ids": [1]}))), 1);
    wait_for("the add-on to leave the manifest", || {
        manifest()["addons"].as_array().unwrap().is_empty()
    });
    let fresh = tmp.path().join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    assert!(attach(&mount, &fresh).status.success());
    let gone = std::fs::symlink_metadata(fresh.join("opt/old/tool")).expect_err("not linked");
    assert_eq!(gone.kind(), std::io::ErrorKind::NotFound, "{gone}");
    // The first workload still reads.
    assert_eq!(std::fs::read_to_string(root.join("opt/old/tool")).unwrap(), "old /opt/old/tool\n");
}

/// Runs `addonfs addons ARGS --state-dir STATE` with the test's key in `ADDONFS_API_KEY`;
/// returns (exit code, stdout, stderr).
fn addons_cli(args: &[&str], state: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_addonfs"))
        .arg("addons")
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .env("ADDONFS_API_KEY", KEY)
        .output()
        .expect("run addonfs addons");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn addons_deprecate_works_on_the_state_directory_and_through_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let dir = tmp.path().join("sample");
    std::fs::create_dir_all(dir.join("tree/opt/sample")).unwrap();
    std::fs::write(dir.join("tree/opt/sample/run"), "run\n").unwrap();
    let meta = dir.join("metadata.json");
    std::fs::write(&meta, r#"{"name":"sample","spec":{"paths":["/opt/sample"]}}"#).unwrap();
    pack_addon(&dir, &dir.join("tree"), ".");
    let tarball = dir.join("addon.tar.gz");
    let (code, _, err) =
        addons_cli(&["register", meta.to_str().unwrap(), tarball.to_str().unwrap()], &state);
    assert_eq!(code, 0, "{err}");
    let listed = || -> Value {
        let (code, out, err) = addons_cli(&["list", "--json"], &state);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()[0].clone()
    };

    // No daemon: the state directory itself.
    let (code, out, err) = addons_cli(&["deprecate", "sample", "--reason", "use v2"], &state);
    assert_eq!((code, out.trim()), (0, "sample: DEPRECATED"), "{err}");
    assert_eq!(
        (listed()["status"].clone(), listed()["reason"].clone()),
        (json!("DEPRECATED"), json!("use v2"))
    );
    let (code, _, err) = addons_cli(&["deprecate", "sample", "--reason", "two\nlines"], &state);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("reason"), "{err}");

    // A daemon holds it: through its API.
    let serve = Serve::start(&state, KEY, None);
    let (code, _, err) = addons_cli(&["deprecate", "1", "--reason", "use v3"], &state);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("going through its API"), "{err}");
    let (records, _) = walk(&serve, None);
    assert_eq!(
        (records[0]["status"].clone(), records[0]["reason"].clone()),
        (json!("DEPRECATED"), json!("use v3"))
    );
    let (code, _, err) = addons_cli(&["enable", "custom-addon-sample"], &state);
    assert_eq!(code, 0, "{err}");
    assert_eq!(walk(&serve, None).0[0]["status"], "AVAILABLE");
}
