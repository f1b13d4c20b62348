//! The node daemon end to end: `addonfs serve` mounts the store, the seed's `curl` uploads an
//! add-on, `attach` links it into a workload root, and disabling it hides it from new workloads
//! while the links of a running one keep reading.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::http::{curl, pack_addon, seed_upload};

const KEY: &str = "daemon-test-key";

struct Daemon {
    child: Child,
    url: String,
    mount: PathBuf,
    /// Killed by [`Daemon::crash`]: its stale mount is left for the next start.
    killed: bool,
}

impl Daemon {
    fn start(state: &Path, mount: &Path) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_addonfs"))
            .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state)
            .arg("--mount")
            .arg(mount)
            .env("ADDONFS_API_KEY", KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start addonfs serve");
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        let mut url = None;
        for _ in 0..4 {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read stdout");
            if let Some(u) = line.split_whitespace().find(|w| w.starts_with("http://")) {
                url = Some(u.to_string());
                break;
            }
        }
        if url.is_none() {
            for log in ["holder.log", "serve.log"] {
                eprintln!(
                    "== {log}: {}",
                    std::fs::read_to_string(state.join(log)).unwrap_or_default()
                );
            }
        }
        let url = url.expect("serve printed its address");
        Daemon { child, url, mount: mount.to_path_buf(), killed: false }
    }

    /// Kills the daemon with SIGKILL, as a crash would, leaving its mount behind; the handle
    /// becomes that of a daemon to start again.
    fn crash(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
        self.killed = true;
    }

    /// SIGTERM, and waits (at most 10 s) for the daemon to exit; returns its exit status.
    /// Nothing is cleaned up here, so the caller sees whether the daemon unmounted by itself
    /// (the guard's `Drop` only clears what is left after that).
    fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "serve still running 10 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn set_status(&self, dir: &Path, identifier: &str, status: &str) -> u16 {
        let body = format!(r#"{{"status":"{status}","identifiers":["{identifier}"]}}"#);
        curl(
            dir,
            &[
                format!("{}/api/v2/runtimeaddons:updatestatus", self.url),
                "-H".into(),
                format!("Authorization: Bearer {KEY}"),
                "-H".into(),
                "Content-Type: application/json".into(),
                "-d".into(),
                body,
            ],
        )
        .0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.killed {
            return;
        }
        if let Ok(Some(_)) = self.child.try_wait() {
            // Exited (and reaped) already: only a mount it may have left remains.
            let _ =
                Command::new("umount").arg("-l").arg(&self.mount).stderr(Stdio::null()).status();
            return;
        }
        // SIGTERM: the daemon unmounts on its way out.
        common::terminate(&mut self.child, Duration::from_secs(10));
        let _ = Command::new("umount").arg("-l").arg(&self.mount).stderr(Stdio::null()).status();
    }
}

fn attach(mount: &Path, root: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_addonfs"))
        .args(["attach", "--mount"])
        .arg(mount)
        .arg("--root")
        .arg(root)
        .output()
        .expect("attach")
}

fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let p = path.to_string_lossy().into_owned();
    info.lines().any(|l| l.split(' ').nth(4) == Some(p.as_str()))
}

/// The seed's sample add-on in `work`: `usr/custom_file` and `usr/bin/custom_folder/tool`, the
/// metadata asking for both paths, packed as `work/addon.tar.gz`.
fn sample_addon(work: &Path) {
    std::fs::create_dir_all(work.join("tree/usr/bin/custom_folder")).expect("mkdir");
    std::fs::write(work.join("tree/usr/custom_file"), "custom file\n").expect("write");
    std::fs::write(work.join("tree/usr/bin/custom_folder/tool"), "tool\n").expect("write");
    std::fs::write(
        work.join("metadata.json"),
        r#"{"name": "sample", "spec": {"paths": ["/usr/custom_file", "/usr/bin/custom_folder"]}}"#,
    )
    .expect("metadata");
    pack_addon(work, &work.join("tree"), "usr");
}

#[test]
fn upload_attach_disable_while_running() {
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let work = t.join("work");
    sample_addon(&work);

    let mount = t.join("mnt");
    let mut daemon = Daemon::start(&t.join("state"), &mount);
    assert!(mounted(&mount), "serve mounted {}", mount.display());
    let manifest = || std::fs::read_to_string(mount.join(".addons.json")).expect("manifest");
    assert!(!manifest().contains("custom-addon-sample"));

    // The seed's exact upload.
    let (status, record) = seed_upload(&work, &daemon.url, KEY, "addon.tar.gz");
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["status"], "AVAILABLE");

    // The mount follows within a few sync intervals.
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("the add-on in the manifest", &|| manifest().contains("custom-addon-sample"));
    let listing = || -> Vec<String> {
        std::fs::read_dir(&mount)
            .expect("list root")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert!(listing().contains(&"custom-addon-sample".to_string()), "{:?}", listing());

    // A running workload attaches and reads through its links.
    let running = t.join("root-running");
    std::fs::create_dir_all(&running).expect("mkdir");
    let out = attach(&mount, &running);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(running.join("usr/custom_file")).expect("read"),
        "custom file\n"
    );
    let mut open = std::fs::File::open(running.join("usr/bin/custom_folder/tool")).expect("open");

    // Disable: it leaves the listing and the manifest...
    assert_eq!(daemon.set_status(&work, "custom-addon-sample", "DISABLED"), 200);
    wait_for("the add-on to leave the manifest", &|| !manifest().contains("custom-addon-sample"));
    wait_for("the add-on to leave the listing", &|| {
        !listing().contains(&"custom-addon-sample".to_string())
    });

    // ... a new workload no longer gets it ...
    let fresh = t.join("root-new");
    std::fs::create_dir_all(&fresh).expect("mkdir");
    assert!(attach(&mount, &fresh).status.success());
    let gone = std::fs::symlink_metadata(fresh.join("usr/custom_file")).expect_err("not linked");
    assert_eq!(gone.kind(), std::io::ErrorKind::NotFound, "{gone}");

    // ... and the running one still reads, by path and through the file it had open.
    assert_eq!(
        std::fs::read_to_string(running.join("usr/custom_file")).expect("read"),
        "custom file\n"
    );
    let mut text = String::new();
    std::io::Read::read_to_string(&mut open, &mut text).expect("read open file");
    assert_eq!(text, "tool\n");

    // Enabled again: back in the manifest.
    assert_eq!(daemon.set_status(&work, "custom-addon-sample", "AVAILABLE"), 200);
    wait_for("the add-on back in the manifest", &|| manifest().contains("custom-addon-sample"));

    drop(open);
    let status = daemon.terminate();
    assert!(status.success(), "serve exited with {status} on SIGTERM");
    assert!(!mounted(&mount), "SIGTERM unmounted {}", mount.display());
    drop(daemon);
}

/// Every path under `dir` (relative, "" for `dir` itself) with its inode number, kind and size,
/// through `lstat`.
fn inodes(dir: &Path) -> std::collections::BTreeMap<String, (u64, u32, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m = std::fs::symlink_metadata(&p).expect("lstat");
        let rel = p.strip_prefix(dir).expect("inside").to_string_lossy().into_owned();
        out.insert(rel, (m.ino(), m.mode(), m.size()));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).expect("readdir") {
                todo.push(e.expect("entry").path());
            }
        }
    }
    out
}

/// Restarting the daemon keeps every add-on's paths and inode numbers (the slot is the
/// add-on's persisted id, the numbers inside come from its index), for enabled add-ons and for
/// a disabled one that running workloads may still use.
#[test]
fn restart_keeps_inode_numbers_and_paths() {
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let mount = t.join("mnt");
    let state = t.join("state");
    let mut daemon = Daemon::start(&state, &mount);
    let names = ["alpha", "beta", "gamma"];
    for (i, name) in names.iter().enumerate() {
        let work = t.join(name);
        let tree = work.join("tree");
        std::fs::create_dir_all(tree.join(format!("opt/{name}/bin"))).expect("mkdir");
        for f in 0..=i * 3 {
            std::fs::write(tree.join(format!("opt/{name}/bin/f{f}")), format!("{name} {f}\n"))
                .expect("write");
        }
        std::os::unix::fs::symlink("bin/f0", tree.join(format!("opt/{name}/link")))
            .expect("symlink");
        std::fs::write(
            work.join("metadata.json"),
            format!(r#"{{"name": "{name}", "spec": {{"paths": ["/opt/{name}"]}}}}"#),
        )
        .expect("metadata");
        pack_addon(&work, &tree, "opt");
        let (status, record) = seed_upload(&work, &daemon.url, KEY, "addon.tar.gz");
        assert_eq!(status, 200, "{record}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !names.iter().all(|n| mount.join(format!("custom-addon-{n}")).exists()) {
        assert!(Instant::now() < deadline, "the add-ons never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(daemon.set_status(t, "custom-addon-beta", "DISABLED"), 200);
    let snapshot = || -> Vec<_> {
        names
            .iter()
            .map(|n| (n.to_string(), inodes(&mount.join(format!("custom-addon-{n}")))))
            .collect()
    };
    let before = snapshot();
    // The add-on's root, opt, opt/gamma, bin, f0..f6 and link.
    assert_eq!(before[2].1.len(), 12, "{:?}", before[2].1);
    let all: std::collections::BTreeSet<u64> =
        before.iter().flat_map(|(_, m)| m.values().map(|v| v.0)).collect();
    assert_eq!(all.len(), before.iter().map(|(_, m)| m.len()).sum::<usize>(), "inodes are unique");

    let status = daemon.terminate();
    assert!(status.success(), "serve exited with {status} on SIGTERM");
    assert!(!mounted(&mount), "SIGTERM unmounted {}", mount.display());
    drop(daemon);
    let daemon = Daemon::start(&state, &mount);
    // The disabled add-on is hidden from the listing but still resolves, with the same numbers.
    let listed: Vec<String> = std::fs::read_dir(&mount)
        .expect("list root")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!listed.contains(&"custom-addon-beta".to_string()), "{listed:?}");
    assert_eq!(snapshot(), before);
    drop(daemon);
}

/// A daemon killed with SIGKILL leaves a stale mount (its `stat` fails with ENOTCONN). The same
/// command must start again, clear it and serve: a workload's links read the same bytes with
/// the same inode numbers. Ten crashes in a row, half restarted at once, half after a pause.
#[test]
fn serve_restarts_after_sigkill_and_links_keep_reading() {
    use std::os::unix::fs::MetadataExt;
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let work = t.join("work");
    sample_addon(&work);
    let state = t.join("state");
    // The default mount point, `STATE_DIR/mnt`, which serve creates.
    let mount = state.join("mnt");
    // A failure between a crash and the next start leaves a stale mount: clear it anyway.
    struct Cleanup<'a>(&'a Path);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).stderr(Stdio::null()).status();
        }
    }
    let _cleanup = Cleanup(&mount);
    let daemon = Daemon::start(&state, &mount);
    let (status, record) = seed_upload(&work, &daemon.url, KEY, "addon.tar.gz");
    assert_eq!(status, 200, "{record}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(mount.join(".addons.json"))
        .expect("manifest")
        .contains("custom-addon-sample")
    {
        assert!(Instant::now() < deadline, "the add-on never reached the manifest");
        std::thread::sleep(Duration::from_millis(20));
    }
    let root = t.join("root");
    std::fs::create_dir_all(&root).expect("mkdir");
    let out = attach(&mount, &root);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (file, tool) = (root.join("usr/custom_file"), root.join("usr/bin/custom_folder/tool"));
    let seen = || {
        let ino = |p: &Path| std::fs::metadata(p).expect("stat through the link").ino();
        (
            std::fs::read_to_string(&file).expect("read"),
            std::fs::read_to_string(&tool).expect("read"),
            ino(&file),
            ino(&tool),
            ino(&root.join("usr/bin/custom_folder")),
        )
    };
    let before = seen();
    assert_eq!((before.0.as_str(), before.1.as_str()), ("custom file\n", "tool\n"));
    let mut daemon = daemon;
    for round in 1..=10 {
        daemon.crash();
        assert!(mounted(&mount), "round {round}: the killed daemon left its mount");
        // At once (the kernel may still answer `stat` of the mount's root from its cache), and
        // every other round once that cache ran out (SYNTH_TTL), when `stat` fails.
        if round % 2 == 0 {
            std::thread::sleep(addonfs::fs::SYNTH_TTL + Duration::from_millis(300));
        }
        daemon = Daemon::start(&state, &mount);
        assert_eq!(seen(), before, "round {round}: the restarted daemon serves the same");
    }
    let status = daemon.terminate();
    assert!(status.success(), "serve exited with {status} on SIGTERM");
    assert!(!mounted(&mount), "SIGTERM unmounted {}", mount.display());
    drop(daemon);
}

/// An add-on named `name` in `work`: `opt/NAME/file` holding `content`, metadata asking for
/// `/opt/NAME`, packed as `work/addon.tar.gz`.
fn opt_addon(work: &Path, name: &str, content: &str) {
    std::fs::create_dir_all(work.join(format!("tree/opt/{name}"))).expect("mkdir");
    std::fs::write(work.join(format!("tree/opt/{name}/file")), content).expect("write");
    std::fs::write(
        work.join("metadata.json"),
        format!(r#"{{"name": "{name}", "spec": {{"paths": ["/opt/{name}"]}}}}"#),
    )
    .expect("metadata");
    pack_addon(work, &work.join("tree"), "opt");
}

/// The catalog revision a response carried in its `X-Addonfs-Revision` header (curl's `-D`
/// file).
fn revision_header(headers: &Path) -> u64 {
    let text = std::fs::read_to_string(headers).expect("headers");
    text.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-addonfs-revision").then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no X-Addonfs-Revision header in {text}"))
}

/// Read-your-writes: once the API has answered, the mount shows the change. 50 uploads, each
/// listed by `/.addons.json` at once; then 50 disable/enable rounds, each followed at once by
/// `attach` into a new root, which links nothing of a disabled add-on and all of an enabled
/// one. Under the old 20 ms poll most rounds failed. The manifest and the API's header carry
/// the same revision, one more per change.
#[test]
fn read_your_writes_in_50_rounds() {
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let mount = t.join("mnt");
    let daemon = Daemon::start(&t.join("state"), &mount);
    let manifest = || -> serde_json::Value {
        let text = std::fs::read(mount.join(".addons.json")).expect("manifest");
        serde_json::from_slice(&text).expect("manifest is JSON")
    };
    assert_eq!(manifest()["revision"], 0);
    let headers = t.join("headers");
    let listed = |m: &serde_json::Value, id: &str| {
        m["addons"].as_array().expect("addons").iter().any(|a| a["identifier"] == id)
    };
    const ROUNDS: u64 = 50;
    for round in 1..=ROUNDS {
        let name = format!("ryw{round}");
        let work = t.join(&name);
        opt_addon(&work, &name, &name);
        let (status, record) = curl(
            &work,
            &[
                format!("{}/api/v2/runtimeaddons/custom", daemon.url),
                "-D".into(),
                headers.display().to_string(),
                "-F".into(),
                "metadata=@metadata.json".into(),
                "-F".into(),
                "tarball=@addon.tar.gz".into(),
                "-H".into(),
                format!("Authorization: Bearer {KEY}"),
            ],
        );
        assert_eq!(status, 200, "{record}");
        let m = manifest();
        assert!(listed(&m, &format!("custom-addon-{name}")), "round {round}: {m}");
        assert_eq!(m["revision"], round, "round {round}");
        assert_eq!(revision_header(&headers), round);
    }

    let id = "custom-addon-ryw1";
    let link = "opt/ryw1/file";
    for round in 1..=ROUNDS {
        for (status, linked) in [("DISABLED", false), ("AVAILABLE", true)] {
            let body = format!(r#"{{"status":"{status}","identifiers":["{id}"]}}"#);
            let (code, reply) = curl(
                t,
                &[
                    format!("{}/api/v2/runtimeaddons:updatestatus", daemon.url),
                    "-H".into(),
                    format!("Authorization: Bearer {KEY}"),
                    "-d".into(),
                    body,
                ],
            );
            assert_eq!(code, 200, "{reply}");
            let root = t.join(format!("root-{round}-{status}"));
            std::fs::create_dir_all(&root).expect("mkdir");
            let out = attach(&mount, &root);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(
                std::fs::symlink_metadata(root.join(link)).is_ok()
                    || std::fs::symlink_metadata(root.join("opt/ryw1")).is_ok(),
                linked,
                "round {round}: {status} then attach at once"
            );
            if linked {
                assert_eq!(std::fs::read_to_string(root.join(link)).expect("read"), "ryw1");
            }
            let expected = ROUNDS + 2 * round - u64::from(!linked);
            assert_eq!(reply["revision"], expected, "{reply}");
            assert_eq!(manifest()["revision"], expected);
        }
    }
    drop(daemon);
}

/// The value of the sample `name` (exact, labels included) in an OpenMetrics text.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{metrics}"))
}

/// The public endpoints of a daemon with its mount: `/metrics` without a key moves after an
/// upload and a read through the mount, and shows no key, state path or content; `/readyz`
/// says 503 once the mount is gone (detached under the running daemon) while `/healthz` still
/// says the process is alive.
#[test]
fn metrics_follow_reads_and_readyz_follows_the_mount() {
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let work = t.join("work");
    let content = "the content of the add-on's file, never in the metrics\n".repeat(2000);
    opt_addon(&work, "met", &content);
    let mount = t.join("mnt");
    let state = t.join("state");
    let daemon = Daemon::start(&state, &mount);
    let get = |path: &str| curl(t, &[format!("{}{path}", daemon.url)]);
    let metrics = || {
        let (status, text) = get("/metrics");
        assert_eq!(status, 200);
        text.as_str().expect("text").to_string()
    };
    assert_eq!(get("/readyz"), (200, serde_json::json!({"status": "ok"})));
    let before = metrics();
    assert_eq!(sample(&before, "addonfs_catalog_revision"), 0.0);
    let reads = r#"addonfs_fuse_request_duration_seconds_count{op="read"}"#;
    let reads_before = sample(&before, reads);

    let (status, record) = seed_upload(&work, &daemon.url, KEY, "addon.tar.gz");
    assert_eq!(status, 200, "{record}");
    let read = std::fs::read_to_string(mount.join("custom-addon-met/opt/met/file")).expect("read");
    assert_eq!(read, content);

    let after = metrics();
    assert_eq!(sample(&after, "addonfs_catalog_revision"), 1.0);
    assert!(sample(&after, reads) > reads_before, "{after}");
    assert!(sample(&after, "addonfs_fuse_read_bytes_total") >= content.len() as f64, "{after}");
    assert!(sample(&after, "addonfs_chunk_cache_misses_total") >= 1.0, "{after}");
    assert!(sample(&after, "addonfs_spans_inflated_total") >= 1.0, "{after}");
    assert_eq!(sample(&after, r#"addonfs_uploads_total{outcome="stored"}"#), 1.0);
    let size = std::fs::metadata(work.join("addon.tar.gz")).expect("size").len() as f64;
    assert_eq!(sample(&after, "addonfs_upload_bytes_total"), size);
    assert_eq!(
        sample(
            &after,
            r#"addonfs_http_requests_total{route="/api/v2/runtimeaddons/custom",status="200"}"#
        ),
        1.0
    );
    for secret in [KEY, &*state.to_string_lossy(), "the content of the add-on"] {
        assert!(!after.contains(secret), "/metrics shows {secret:?}");
    }

    // The mount detached under the running daemon: not ready; alive all the same.
    common::run(Command::new("umount").arg("-l").arg(&mount));
    let (status, body) = get("/readyz");
    assert_eq!((status, body["code"].as_i64()), (503, Some(14)), "{body}");
    assert!(body["message"].as_str().expect("message").contains("mount"), "{body}");
    assert_eq!(get("/healthz").0, 200);
    drop(daemon);
}

/// A daemon run in process: its API URL, the sender that stops it, and its thread.
type InProcess = (
    String,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<Result<(), addonfs::daemon::DaemonError>>,
);

/// Runs `daemon::run` over `config` in a thread, once it said it is ready.
fn run_in_thread(config: addonfs::daemon::Config) -> InProcess {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, address) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        addonfs::daemon::run(&config, async { drop(stopped.await) }, |addr| {
            ready.send(addr).expect("ready")
        })
    });
    let addr = address.recv_timeout(Duration::from_secs(10)).expect("the daemon got ready");
    (format!("http://{addr}"), stop, thread)
}

/// The in-process daemon's configuration over `t/state`, mounted at `t/mnt`.
fn in_process_config(t: &Path, drain: Duration) -> addonfs::daemon::Config {
    addonfs::daemon::Config {
        store: None,
        state_dir: t.join("state"),
        listen: "127.0.0.1:0".parse().expect("address"),
        keys: addonfs::daemon::KeySource::Key(KEY.into()),
        limits: addonfs::api::ApiLimits::default(),
        mount: Some(addonfs::daemon::MountConfig {
            path: t.join("mnt"),
            cache_bytes: 8 << 20,
            allow_other: false,
            restarts: addonfs::daemon::restart::Restarts {
                keeper: addonfs::daemon::restart::Keeper::None,
                keep_on_stop: false,
            },
        }),
        drain,
        tls: None,
    }
}

/// `daemon::run` owns the whole lifecycle and runs in process: it reports its address once
/// ready (mounted, API listening), serves, and when its shutdown future completes it stops the
/// API, unmounts and releases the state directory, in that order; a second run over the same
/// directory finds the add-on and the revision it left.
#[test]
fn daemon_run_in_process_shuts_down_in_order() {
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path().to_path_buf();
    let work = t.join("work");
    opt_addon(&work, "inproc", "in process\n");
    let config = in_process_config(&t, Duration::from_secs(10));
    let (url, stop, thread) = run_in_thread(config.clone());
    assert!(mounted(&t.join("mnt")), "mounted before it said it was ready");
    assert_eq!(curl(&t, &[format!("{url}/readyz")]).0, 200);
    let (status, record) = seed_upload(&work, &url, KEY, "addon.tar.gz");
    assert_eq!(status, 200, "{record}");
    let file = t.join("mnt/custom-addon-inproc/opt/inproc/file");
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "in process\n");
    stop.send(()).expect("stop");
    thread.join().expect("join").expect("run ended cleanly");
    assert!(!mounted(&t.join("mnt")), "unmounted at shutdown");
    assert_eq!(curl(&t, &[format!("{url}/healthz")]).0, 0, "no longer listening");
    // The lock went with the store.
    drop(addonfs::addon::Store::open(&t.join("state"), "test").expect("the lock is free"));

    let (url, stop, thread) = run_in_thread(config);
    let manifest = std::fs::read_to_string(t.join("mnt/.addons.json")).expect("manifest");
    assert!(manifest.contains("custom-addon-inproc") && manifest.contains("\"revision\": 1"));
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "in process\n");
    assert_eq!(curl(&t, &[format!("{url}/healthz")]).0, 200);
    stop.send(()).expect("stop");
    thread.join().expect("join").expect("run ended cleanly");
    assert!(!mounted(&t.join("mnt")));
}

/// The stop signal during a slow upload: the daemon waits for it at most its drain time, then
/// abandons it: nothing of the add-on is stored or shown, the mount is gone, and the next start
/// clears the staging. (Before, a slow client held the daemon for the whole upload.)
#[test]
fn stop_during_a_slow_upload_abandons_it_after_the_drain_time() {
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path().to_path_buf();
    let work = t.join("work");
    // 4 MB of noise, sent at 100 KB/s: 40 s if nothing stops it.
    let noise = common::corpus::noise(11, 4_000_000);
    opt_addon(&work, "slow", "x");
    std::fs::write(work.join("tree/opt/slow/noise"), noise).expect("write");
    pack_addon(&work, &work.join("tree"), "opt");
    let (url, stop, thread) = run_in_thread(in_process_config(&t, Duration::from_secs(1)));
    let mut upload = Command::new("curl")
        .current_dir(&work)
        .args(["-sS", "--limit-rate", "100K", &format!("{url}/api/v2/runtimeaddons/custom")])
        .args(["-F", "metadata=@metadata.json", "-F", "tarball=@addon.tar.gz"])
        .args(["-H", &format!("Authorization: Bearer {KEY}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl");
    let staging = t.join("state/staging");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&staging).expect("staging").count() == 0 {
        assert!(Instant::now() < deadline, "the upload never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped_at = Instant::now();
    stop.send(()).expect("stop");
    thread.join().expect("join").expect("run ended cleanly");
    let took = stopped_at.elapsed();
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}, not the drain time");
    let _ = upload.kill();
    let _ = upload.wait();
    assert!(!mounted(&t.join("mnt")), "unmounted at shutdown");
    // Nothing of the upload reached the store's objects.
    assert_eq!(std::fs::read_dir(t.join("state/addons")).map_or(0, |d| d.count()), 0);
    let store = addonfs::addon::Store::open(&t.join("state"), "test").expect("open");
    assert!(store.list().is_empty());
    assert_eq!(store.revision(), 0);
    assert_eq!(store.staging_count(), 0, "the next start clears what was abandoned");
}
