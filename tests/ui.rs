//! The admin web UI in a real browser: Debian's headless Chromium driven over WebDriver
//! (`chromedriver`, client `fantoccini`) against the real `addonfs serve`, its API checked
//! with the real `curl` and its mount read directly. Under `CI` a missing chromium,
//! chromedriver or FUSE fails these tests instead of skipping them.
//!
//! `UPDATE_SCREENSHOTS=1 cargo test --test ui` also writes the screenshots in `docs/img/`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

mod common;
use common::http::{curl, curl_answer, pack_addon, seed_upload, Serve};

const KEY: &str = "ui-browser-test-key";
const XSS: &str = "<img src=x onerror=alert(1)>";

/// A `chromedriver` on a free loopback port; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the browser tools are here (panics under `CI` when they are not).
fn browser_ready() -> bool {
    common::require("chromium") && common::require("chromedriver")
}

/// A headless Chromium session, with the flags this closed network needs.
async fn browser(driver: &Driver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_string(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session with chromium")
}

/// Builds the tree of add-on `name` under `root/<name>/opt/<name>` and packs it as
/// `dir/addon.tar.gz` with `metadata.json` beside it.
fn make_addon(dir: &Path, name: &str, extra: impl FnOnce(&Path)) {
    let tree = dir.join(format!("tree-{name}"));
    let top = tree.join("opt").join(name);
    std::fs::create_dir_all(&top).unwrap();
    std::fs::write(top.join("README"), format!("the {name} add-on\n")).unwrap();
    extra(&top);
    pack_addon(dir, &tree, "opt");
    std::fs::write(
        dir.join("metadata.json"),
        json!({"name": name, "spec": {"paths": [format!("/opt/{name}")]}}).to_string(),
    )
    .unwrap();
}

/// The identifiers of the table's rows, in order.
async fn rows(c: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for tr in c.find_all(Locator::Css("#addons tbody tr")).await.unwrap() {
        out.push(tr.attr("data-identifier").await.unwrap().unwrap_or_default());
    }
    out
}

/// The API's list, as `(identifier, status)` pairs.
fn api_list(dir: &Path, url: &str) -> Vec<(String, String)> {
    let (status, body) = curl(
        dir,
        &[
            format!("{url}/api/v2/runtimeaddons"),
            "-H".into(),
            format!("Authorization: Bearer {KEY}"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    body["runtime_addons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["identifier"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The identifiers in the mount's `.addons.json`.
fn manifest(mount: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(mount.join(".addons.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["addons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["identifier"].as_str().unwrap().into())
        .collect()
}

async fn path_of(c: &Client) -> String {
    let u = c.current_url().await.unwrap();
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    }
}

async fn screenshot(c: &Client, name: &str) {
    if std::env::var_os("UPDATE_SCREENSHOTS").is_none() {
        return;
    }
    let png = c.screenshot().await.unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/img");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

/// Waits until `old` (an element of the page before a navigation) is gone.
async fn wait_stale(old: &fantoccini::elements::Element) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while old.tag_name().await.is_ok() {
        assert!(Instant::now() < deadline, "no new page was loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Clicks what navigates to a new page and waits until the old page is gone (else the next
/// find could still see the old page).
async fn click_to_load(c: &Client, what: Locator<'_>) {
    let old = c.find(Locator::Css("html")).await.unwrap();
    c.find(what).await.unwrap().click().await.unwrap();
    wait_stale(&old).await;
}

/// No alert is open (an injected `onerror=alert(1)` would have opened one).
async fn no_alert(c: &Client) {
    assert!(c.get_alert_text().await.is_err(), "an alert fired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_ui_in_a_real_browser() {
    if !browser_ready() || !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mount = dir.join("mnt");
    std::fs::create_dir_all(&mount).unwrap();
    let serve = Serve::start(&dir.join("state"), KEY, Some(&mount));
    let base = serve.url.clone();

    // Three add-ons through the API; alpha has a deep file, a symlink and the XSS entry.
    for name in ["alpha", "beta", "gamma"] {
        let d = dir.join(format!("up-{name}"));
        std::fs::create_dir_all(&d).unwrap();
        make_addon(&d, name, |top| {
            if name == "alpha" {
                let deep = top.join("lib/python3/site-packages/tool");
                std::fs::create_dir_all(&deep).unwrap();
                std::fs::write(deep.join("deep.txt"), "a deep file\nline <two> & \"three\"\n")
                    .unwrap();
                std::fs::write(top.join(XSS), "x").unwrap();
                std::os::unix::fs::symlink("lib/python3", top.join("py")).unwrap();
            }
        });
        let (status, body) = seed_upload(&d, &base, KEY, "addon.tar.gz");
        assert_eq!(status, 200, "{body}");
    }

    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;

    // Not signed in: the table sends to the sign-in page.
    c.goto(&format!("{base}/ui/")).await.unwrap();
    assert!(path_of(&c).await.starts_with("/ui/login"), "{}", path_of(&c).await);
    screenshot(&c, "ui-sign-in.png").await;

    // A wrong key: a clear message, still signed out, and held back about a second.
    c.find(Locator::Id("key")).await.unwrap().send_keys("not-the-key").await.unwrap();
    let started = Instant::now();
    click_to_load(&c, Locator::Id("sign-in")).await;
    let err = c.wait().for_element(Locator::Id("login-error")).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
    assert!(err.text().await.unwrap().contains("Wrong API key"));
    assert!(c.get_all_cookies().await.unwrap().iter().all(|k| k.name() != "addonfs_session"));

    // The right key, from the keyboard alone (Enter submits): the table, with a session
    // cookie that scripts cannot read.
    let enter = char::from(fantoccini::key::Key::Enter);
    let old = c.find(Locator::Css("html")).await.unwrap();
    c.find(Locator::Id("key")).await.unwrap().send_keys(&format!("{KEY}{enter}")).await.unwrap();
    wait_stale(&old).await;
    c.wait().for_element(Locator::Id("addons")).await.unwrap();
    assert_eq!(path_of(&c).await, "/ui/");
    let cookie = c.get_named_cookie("addonfs_session").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert!(format!("{:?}", cookie.same_site()).contains("Strict"), "{:?}", cookie.same_site());
    assert_eq!(
        c.execute("return document.cookie", vec![]).await.unwrap(),
        json!(""),
        "HttpOnly: the page's script sees no cookie"
    );
    assert_eq!(rows(&c).await, ["custom-addon-alpha", "custom-addon-beta", "custom-addon-gamma"]);

    // Search.
    c.find(Locator::Id("q")).await.unwrap().send_keys("bet").await.unwrap();
    click_to_load(&c, Locator::Id("apply")).await;
    c.wait().for_element(Locator::Id("addons")).await.unwrap();
    assert_eq!(rows(&c).await, ["custom-addon-beta"]);
    c.goto(&format!("{base}/ui/")).await.unwrap();

    // Disable gamma from the table: the confirmation says what it does.
    click_to_load(&c, Locator::Css(r#"tr[data-identifier="custom-addon-gamma"] a.disable"#)).await;
    let what = c.wait().for_element(Locator::Id("what")).await.unwrap().text().await.unwrap();
    assert!(what.contains("New workloads stop getting it"), "{what}");
    assert!(what.contains("already using it keep reading it"), "{what}");
    click_to_load(&c, Locator::Id("confirm")).await;
    let flash = c.wait().for_element(Locator::Id("flash")).await.unwrap().text().await.unwrap();
    assert!(flash.contains("custom-addon-gamma is now DISABLED (rows_affected: 1)"), "{flash}");
    // The API and the mount agree at once (the mount follows the store every 20 ms).
    assert!(api_list(dir, &base).contains(&("custom-addon-gamma".into(), "DISABLED".into())));
    let deadline = Instant::now() + Duration::from_secs(2);
    while manifest(&mount).contains(&"custom-addon-gamma".to_string()) {
        assert!(Instant::now() < deadline, "the mount's manifest still lists gamma");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(manifest(&mount), ["custom-addon-alpha", "custom-addon-beta"]);

    // Hide disabled; then the status filter.
    c.find(Locator::Id("hide_disabled")).await.unwrap().click().await.unwrap();
    click_to_load(&c, Locator::Id("apply")).await;
    c.wait().for_element(Locator::Id("addons")).await.unwrap();
    assert_eq!(rows(&c).await, ["custom-addon-alpha", "custom-addon-beta"]);
    c.find(Locator::Id("hide_disabled")).await.unwrap().click().await.unwrap();
    c.find(Locator::Id("status")).await.unwrap().select_by_value("DISABLED").await.unwrap();
    click_to_load(&c, Locator::Id("apply")).await;
    c.wait().for_element(Locator::Id("addons")).await.unwrap();
    assert_eq!(rows(&c).await, ["custom-addon-gamma"]);
    // Sorting: by name, descending.
    c.goto(&format!("{base}/ui/")).await.unwrap();
    click_to_load(&c, Locator::Id("sort-display_name")).await;
    click_to_load(&c, Locator::Id("sort-display_name")).await;
    c.wait().for_element(Locator::Id("addons")).await.unwrap();
    assert_eq!(rows(&c).await, ["custom-addon-gamma", "custom-addon-beta", "custom-addon-alpha"]);
    c.goto(&format!("{base}/ui/")).await.unwrap();
    screenshot(&c, "ui-table.png").await;

    // Enabling gamma while another add-on holds its path: the API's error, as the API says it.
    let z = dir.join("up-zeta");
    std::fs::create_dir_all(z.join("tree/opt/gamma")).unwrap();
    std::fs::write(z.join("tree/opt/gamma/README"), "zeta\n").unwrap();
    pack_addon(&z, &z.join("tree"), "opt");
    std::fs::write(z.join("metadata.json"), r#"{"name":"zeta","spec":{"paths":["/opt/gamma"]}}"#)
        .unwrap();
    assert_eq!(seed_upload(&z, &base, KEY, "addon.tar.gz").0, 200);
    let status_change = |body: Value| {
        curl_answer(
            dir,
            &[
                format!("{base}/api/v2/runtimeaddons:updatestatus"),
                "-H".into(),
                format!("Authorization: Bearer {KEY}"),
                "-H".into(),
                "Content-Type: application/json".into(),
                "-d".into(),
                body.to_string(),
            ],
        )
    };
    let refused =
        status_change(json!({"status": "AVAILABLE", "identifiers": ["custom-addon-gamma"]}));
    assert_eq!(refused.body["code"], 9, "{:?}", refused.body);
    c.goto(&format!("{base}/ui/")).await.unwrap();
    click_to_load(&c, Locator::Css(r#"tr[data-identifier="custom-addon-gamma"] button.enable"#))
        .await;
    let flash = c.wait().for_element(Locator::Id("flash")).await.unwrap().text().await.unwrap();
    assert_eq!(
        flash,
        format!(
            "Error (code 9 FAILED_PRECONDITION): {}",
            refused.body["message"].as_str().unwrap()
        )
    );
    assert!(api_list(dir, &base).contains(&("custom-addon-gamma".into(), "DISABLED".into())));
    let freed = status_change(json!({"status": "DISABLED", "identifiers": ["custom-addon-zeta"]}));
    assert_eq!(freed.status, 200);

    // Enable it again from the table (no confirmation for enabling).
    click_to_load(&c, Locator::Css(r#"tr[data-identifier="custom-addon-gamma"] button.enable"#))
        .await;
    let flash = c.wait().for_element(Locator::Id("flash")).await.unwrap().text().await.unwrap();
    assert!(flash.contains("custom-addon-gamma is now AVAILABLE (rows_affected: 1)"), "{flash}");
    assert!(api_list(dir, &base).contains(&("custom-addon-gamma".into(), "AVAILABLE".into())));

    // Deprecate beta with a reason: still in the manifest, flagged, with the reason.
    click_to_load(
        &c,
        Locator::Css(r#"tr[data-identifier="custom-addon-beta"] a[href*="DEPRECATED"]"#),
    )
    .await;
    c.wait()
        .for_element(Locator::Id("reason"))
        .await
        .unwrap()
        .send_keys("use alpha")
        .await
        .unwrap();
    click_to_load(&c, Locator::Id("confirm")).await;
    let flash = c.wait().for_element(Locator::Id("flash")).await.unwrap().text().await.unwrap();
    assert!(flash.contains("custom-addon-beta is now DEPRECATED (rows_affected: 1)"), "{flash}");
    // The mount follows the store every 20 ms.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let text = std::fs::read_to_string(mount.join(".addons.json")).unwrap();
        let m: Value = serde_json::from_str(&text).unwrap();
        let beta = m["addons"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["identifier"] == "custom-addon-beta")
            .cloned();
        let beta = beta.expect("a deprecated add-on stays in the manifest");
        if beta["deprecated"] == json!(true) {
            assert_eq!(beta["reason"], json!("use alpha"));
            break;
        }
        assert!(Instant::now() < deadline, "the manifest does not flag beta: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // One add-on's page: the digest the API reports, the path's kind, then down the tree.
    click_to_load(&c, Locator::LinkText("alpha")).await;
    let sha = c.wait().for_element(Locator::Id("sha256")).await.unwrap().text().await.unwrap();
    let (_, listed) = curl(
        dir,
        &[
            format!(
                "{base}/api/v2/runtimeaddons?search_filter=%7B%22display_name%22%3A%22alpha%22%7D"
            ),
            "-H".into(),
            format!("Authorization: Bearer {KEY}"),
        ],
    );
    assert_eq!(json!(sha), listed["runtime_addons"][0]["sha256"]);
    let paths = c.find(Locator::Id("paths")).await.unwrap().text().await.unwrap();
    assert!(paths.contains("/opt/alpha") && paths.contains("directory"), "{paths}");
    for step in ["opt/", "alpha/"] {
        click_to_load(&c, Locator::LinkText(step)).await;
        c.wait().for_element(Locator::Id("entries")).await.unwrap();
    }
    // The XSS entry is text, no image was made of it, no alert fired.
    let entries = c.find(Locator::Id("entries")).await.unwrap().text().await.unwrap();
    assert!(entries.contains(XSS), "{entries}");
    assert!(entries.contains("py → lib/python3"), "the symlink and its target: {entries}");
    assert!(c.find_all(Locator::Css("img")).await.unwrap().is_empty());
    no_alert(&c).await;
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        // The whole page, from its top.
        c.set_window_size(1280, 1280).await.unwrap();
        c.execute("window.scrollTo(0, 0)", vec![]).await.unwrap();
        screenshot(&c, "ui-addon.png").await;
        c.set_window_size(1280, 900).await.unwrap();
    }
    for step in ["lib/", "python3/", "site-packages/", "tool/"] {
        click_to_load(&c, Locator::LinkText(step)).await;
        c.wait().for_element(Locator::Id("entries")).await.unwrap();
    }
    let crumbs = c.find(Locator::Id("crumbs")).await.unwrap().text().await.unwrap();
    assert_eq!(crumbs, "/opt/alpha/lib/python3/site-packages/tool/");
    let row = c.find(Locator::Css("#entries tbody tr:last-child")).await.unwrap();
    let text = row.text().await.unwrap();
    assert!(text.contains("deep.txt") && text.contains("rw-r--r--"), "{text}");
    let old = c.find(Locator::Css("html")).await.unwrap();
    row.find(Locator::LinkText("view")).await.unwrap().click().await.unwrap();
    wait_stale(&old).await;
    let content = c.wait().for_element(Locator::Id("content")).await.unwrap();
    assert_eq!(content.text().await.unwrap(), "a deep file\nline <two> & \"three\"");

    // Readable at 320 px: nothing wider than the window (tables scroll in their own box).
    c.set_window_size(320, 800).await.unwrap();
    for page in ["/ui/", "/ui/addons/custom-addon-alpha?path=opt/alpha", "/ui/upload"] {
        c.goto(&format!("{base}{page}")).await.unwrap();
        let overflow = c
            .execute("return document.documentElement.scrollWidth - window.innerWidth", vec![])
            .await
            .unwrap();
        assert!(overflow.as_i64().unwrap() <= 0, "{page} is {overflow} px too wide at 320 px");
        // Every control has a label (or a name for assistive technology).
        let unlabelled = c
            .execute(
                "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]\
                 .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')\
                              && !(e.tagName === 'BUTTON' && e.textContent.trim()))\
                 .map(e => e.outerHTML)",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(unlabelled, json!([]), "{page}");
    }
    c.set_window_size(1280, 900).await.unwrap();

    // Upload through the form: a rule broken (the API's message), then a good one.
    let up = dir.join("up-delta");
    std::fs::create_dir_all(&up).unwrap();
    make_addon(&up, "delta", |_| {});
    let bad_metadata = r#"{"name": "Delta", "spec": {"paths": ["/opt/delta"]}}"#;
    std::fs::write(up.join("bad.json"), bad_metadata).unwrap();
    let api_answer = curl_answer(
        &up,
        &[
            format!("{base}/api/v2/runtimeaddons/custom"),
            "-F".into(),
            "metadata=@bad.json".into(),
            "-F".into(),
            "tarball=@addon.tar.gz".into(),
            "-H".into(),
            format!("Authorization: Bearer {KEY}"),
        ],
    );
    assert_eq!(api_answer.status, 400);
    let api_message = api_answer.body["message"].as_str().unwrap().to_string();
    c.goto(&format!("{base}/ui/upload")).await.unwrap();
    let textarea = c.find(Locator::Id("metadata")).await.unwrap();
    textarea.clear().await.unwrap();
    textarea.send_keys(bad_metadata).await.unwrap();
    let tarball = up.join("addon.tar.gz");
    c.find(Locator::Id("tarball"))
        .await
        .unwrap()
        .send_keys(tarball.to_str().unwrap())
        .await
        .unwrap();
    c.find(Locator::Id("upload")).await.unwrap().click().await.unwrap();
    let err = c.wait().for_element(Locator::Id("upload-error")).await.unwrap();
    assert_eq!(err.text().await.unwrap(), format!("Error (code 3): {api_message}"));
    let textarea = c.find(Locator::Id("metadata")).await.unwrap();
    textarea.clear().await.unwrap();
    textarea.send_keys(&std::fs::read_to_string(up.join("metadata.json")).unwrap()).await.unwrap();
    c.find(Locator::Id("upload")).await.unwrap().click().await.unwrap();
    let ok = c.wait().for_element(Locator::Id("upload-ok")).await.unwrap();
    assert!(ok.text().await.unwrap().contains("Registered custom-addon-delta (AVAILABLE)"));
    let progress =
        c.execute("return document.getElementById('progress').value", vec![]).await.unwrap();
    assert_eq!(progress, json!(100));
    assert!(api_list(dir, &base).contains(&("custom-addon-delta".into(), "AVAILABLE".into())));
    let deadline = Instant::now() + Duration::from_secs(2);
    while !manifest(&mount).contains(&"custom-addon-delta".to_string()) {
        assert!(Instant::now() < deadline, "the mount's manifest lacks delta");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Sign out: every page needs signing in again, and the old cookie is dead.
    c.goto(&format!("{base}/ui/")).await.unwrap();
    click_to_load(&c, Locator::Id("sign-out")).await;
    c.wait().for_element(Locator::Id("key")).await.unwrap();
    for page in ["/ui/", "/ui/addons/custom-addon-alpha", "/ui/upload"] {
        c.goto(&format!("{base}{page}")).await.unwrap();
        assert!(path_of(&c).await.starts_with("/ui/login"), "{page}: {}", path_of(&c).await);
    }
    let old = curl_answer(
        dir,
        &[
            "-o".into(),
            "/dev/null".into(),
            format!("{base}/ui/"),
            "-H".into(),
            format!("Cookie: addonfs_session={}", cookie.value()),
            "--max-redirs".into(),
            "0".into(),
        ],
    );
    assert_eq!(old.status, 303, "the signed-out session no longer opens pages");
    c.close().await.unwrap();
}

/// A state-changing request from another site is refused even with a valid session cookie
/// (SameSite=Strict keeps browsers from sending it; the Origin check stops the rest).
#[test]
fn cross_site_requests_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let serve = Serve::start(&dir.join("state"), KEY, None);
    let base = serve.url.clone();
    make_addon(dir, "alpha", |_| {});
    assert_eq!(seed_upload(dir, &base, KEY, "addon.tar.gz").0, 200);
    // Sign in with curl (same origin), keeping the cookie in `jar`.
    let _ = curl_session(dir, &base);
    let post = |origin: Option<&str>| {
        let mut args = vec![
            "-o".to_string(),
            "/dev/null".into(),
            "-b".into(),
            "jar".into(),
            "--max-redirs".into(),
            "0".into(),
            format!("{base}/ui/addons/custom-addon-alpha/status"),
            "-d".into(),
            "status=DISABLED".into(),
        ];
        if let Some(o) = origin {
            args.extend(["-H".into(), format!("Origin: {o}")]);
        }
        curl_answer(dir, &args).status
    };
    assert_eq!(post(Some("http://evil.example")), 401);
    assert_eq!(post(None), 401, "neither Origin nor Referer");
    assert_eq!(api_list(dir, &base), [("custom-addon-alpha".into(), "AVAILABLE".into())]);
    assert_eq!(post(Some(&base)), 303);
    assert_eq!(api_list(dir, &base), [("custom-addon-alpha".into(), "DISABLED".into())]);
    // The upload form without the script: a page, not JSON; refused from another site.
    make_addon(dir, "beta", |_| {});
    let upload = |origin: &str| {
        curl_answer(
            dir,
            &[
                "-b".into(),
                "jar".into(),
                format!("{base}/ui/upload"),
                "-H".into(),
                format!("Origin: {origin}"),
                "-F".into(),
                "metadata=<metadata.json".into(),
                "-F".into(),
                "tarball=@addon.tar.gz".into(),
            ],
        )
    };
    let evil = upload("http://evil.example");
    assert_eq!(evil.status, 401);
    assert!(evil.content_type.starts_with("text/html"), "{}", evil.content_type);
    assert_eq!(api_list(dir, &base).len(), 1, "nothing stored");
    let ok = upload(&base);
    assert_eq!(ok.status, 200);
    assert!(ok.body.as_str().unwrap().contains("Registered"), "{}", ok.body);
    assert_eq!(api_list(dir, &base)[1], ("custom-addon-beta".into(), "AVAILABLE".into()));
    // The JSON API still wants its key: the session cookie opens nothing there.
    let api =
        curl_answer(dir, &["-b".into(), "jar".into(), format!("{base}/api/v2/runtimeaddons")]);
    assert_eq!(api.status, 401);
}

/// Signs in with curl (same origin) and returns a function that GETs a UI page with the
/// session cookie: (HTTP status, body).
fn curl_session(dir: &Path, base: &str) -> impl Fn(&str) -> (u16, String) {
    let signed = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-c", "jar", "-w", "%{http_code}"])
        .arg(format!("{base}/ui/login"))
        .args(["-H", &format!("Origin: {base}"), "--data-urlencode", &format!("key={KEY}")])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&signed.stdout), "303");
    let (dir, base) = (dir.to_path_buf(), base.to_string());
    move |page: &str| {
        let answer = curl_answer(&dir, &["-b".into(), "jar".into(), format!("{base}{page}")]);
        let body = match answer.body {
            Value::String(s) => s,
            other => other.to_string(),
        };
        (answer.status, body)
    }
}

/// The identifiers of a table page's rows.
fn row_ids(body: &str) -> Vec<String> {
    body.split(r#"<tr data-identifier=""#)
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .collect()
}

/// Paging, search and sorting over many add-ons, and the weight of the first page.
#[test]
fn table_pages_and_first_page_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let serve = Serve::start(&dir.join("state"), KEY, None);
    let base = serve.url.clone();
    // One tarball holding 60 directories; each add-on requests its own.
    let tree = dir.join("tree");
    for i in 0..60 {
        std::fs::create_dir_all(tree.join(format!("opt/a{i:02}"))).unwrap();
        std::fs::write(tree.join(format!("opt/a{i:02}/f")), "x").unwrap();
    }
    pack_addon(dir, &tree, "opt");
    for i in 0..60 {
        std::fs::write(
            dir.join("metadata.json"),
            json!({"name": format!("a{i:02}"), "spec": {"paths": [format!("/opt/a{i:02}")]}})
                .to_string(),
        )
        .unwrap();
        assert_eq!(seed_upload(dir, &base, KEY, "addon.tar.gz").0, 200);
    }
    let get = curl_session(dir, &base);
    let (status, body) = get("/ui/?rows=25");
    assert_eq!(status, 200);
    assert!(body.contains("60 of 60 add-ons, page 1 of 3"), "{body}");
    let first = row_ids(&body);
    assert_eq!(first.len(), 25);
    assert_eq!(first[0], "custom-addon-a00");
    let (_, body) = get("/ui/?rows=25&page=3");
    let last = row_ids(&body);
    assert_eq!(last.len(), 10);
    assert_eq!(last[9], "custom-addon-a59");
    let (_, body) = get("/ui/?rows=25&sort=-id");
    assert_eq!(row_ids(&body)[0], "custom-addon-a59");
    let (_, body) = get("/ui/?q=A05");
    assert_eq!(row_ids(&body), ["custom-addon-a05"], "search ignores case");
    let (_, body) = get("/ui/?q=%2Fopt%2Fa1");
    assert_eq!(row_ids(&body).len(), 10, "search matches paths");
    let (status, body) = get("/ui/?sort=nonsense");
    assert_eq!(status, 400);
    assert!(body.contains("bad sort"), "{body}");

    // The first page a browser loads: the sign-in page and its two assets, well under 100 KB;
    // the table with its default 50 rows too.
    let weight = |page: &str| {
        let jar = if page.starts_with("/ui/login") { "none" } else { "jar" };
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{size_download}", "--compressed"])
            .args(["-b", jar])
            .arg(format!("{base}{page}"))
            .current_dir(dir)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).parse::<u64>().unwrap()
    };
    let sign_in = weight("/ui/login?next=/ui/");
    assert!(sign_in > 500, "the sign-in page itself, not a redirect: {sign_in} B");
    let assets = weight("/ui/assets/style.css") + weight("/ui/assets/ui.js");
    let table = weight("/ui/");
    eprintln!("sign-in {sign_in} B, assets {assets} B, table of 50 {table} B");
    assert!(sign_in + assets <= 100_000, "{sign_in} + {assets}");
    assert!(table + assets <= 100_000, "{table} + {assets}");
}

/// Wrong keys at sign-in: each held back about a second, and after ten within a minute the
/// client is refused without its key being checked; the JSON API is not affected.
#[test]
fn wrong_keys_are_slowed_then_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let serve = Serve::start(&dir.join("state"), KEY, None);
    let base = serve.url.clone();
    let sign_in = |key: &str| {
        let started = Instant::now();
        let answer = curl_answer(
            dir,
            &[
                format!("{base}/ui/login"),
                "-H".into(),
                format!("Origin: {base}"),
                "--data-urlencode".into(),
                format!("key={key}"),
                "--max-redirs".into(),
                "0".into(),
                "-o".into(),
                "/dev/null".into(),
            ],
        );
        (answer.status, started.elapsed())
    };
    let wrong: Vec<_> = std::thread::scope(|scope| {
        let tries: Vec<_> =
            (0..10).map(|i| scope.spawn(move || sign_in(&format!("guess-{i}")))).collect();
        tries.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (status, took) in wrong {
        assert_eq!(status, 401);
        assert!(took >= Duration::from_millis(900), "{took:?}");
    }
    let (status, _) = sign_in(KEY);
    assert_eq!(status, 429, "the eleventh try within a minute is refused, right key or not");
    // Per client address: another one (127.0.0.2, also loopback) still signs in.
    let other = curl_answer(
        dir,
        &[
            "--interface".into(),
            "127.0.0.2".into(),
            format!("{base}/ui/login"),
            "-H".into(),
            format!("Origin: {base}"),
            "--data-urlencode".into(),
            format!("key={KEY}"),
            "--max-redirs".into(),
            "0".into(),
            "-o".into(),
            "/dev/null".into(),
        ],
    );
    assert_eq!(other.status, 303, "another client is not locked out");
    // A huge sign-in form is refused unread (sign-in is public: no memory for strangers).
    std::fs::write(dir.join("big"), format!("key={}", "k".repeat(1 << 20))).unwrap();
    let big = curl_answer(
        dir,
        &[
            format!("{base}/ui/login"),
            "-H".into(),
            format!("Origin: {base}"),
            "--data-binary".into(),
            "@big".into(),
        ],
    );
    assert_eq!(big.status, 400);
    assert!(big.body.as_str().unwrap().contains("bad sign-in form"), "{}", big.body);
    let (code, _) = curl(
        dir,
        &[
            format!("{base}/api/v2/runtimeaddons"),
            "-H".into(),
            format!("Authorization: Bearer {KEY}"),
        ],
    );
    assert_eq!(code, 200, "the JSON API keeps its Bearer keys");
}

/// Sessions live in the daemon's memory: after a restart the old cookie opens nothing (the
/// page asks to sign in again) and a new sign-in works.
#[test]
fn a_restart_signs_everyone_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let state = dir.join("state");
    let serve = Serve::start(&state, KEY, None);
    let get = curl_session(dir, &serve.url);
    assert_eq!(get("/ui/").0, 200);
    drop(get);
    drop(serve);
    let serve = Serve::start(&state, KEY, None);
    let old = curl_answer(
        dir,
        &[
            "-o".into(),
            "/dev/null".into(),
            "-b".into(),
            "jar".into(),
            "--max-redirs".into(),
            "0".into(),
            format!("{}/ui/", serve.url),
        ],
    );
    assert_eq!(old.status, 303, "the old session is gone");
    let get = curl_session(dir, &serve.url);
    assert_eq!(get("/ui/").0, 200);
}
