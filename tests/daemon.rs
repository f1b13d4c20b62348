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
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
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

#[test]
fn upload_attach_disable_while_running() {
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let work = t.join("work");
    std::fs::create_dir_all(work.join("tree/usr/bin/custom_folder")).expect("mkdir");
    std::fs::write(work.join("tree/usr/custom_file"), "custom file\n").expect("write");
    std::fs::write(work.join("tree/usr/bin/custom_folder/tool"), "tool\n").expect("write");
    std::fs::write(
        work.join("metadata.json"),
        r#"{"name": "sample", "spec": {"paths": ["/usr/custom_file", "/usr/bin/custom_folder"]}}"#,
    )
    .expect("metadata");
    pack_addon(&work, &work.join("tree"), "usr");

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
    std::fs::create_dir_all(work.join("tree/usr/bin/custom_folder")).expect("mkdir");
    std::fs::write(work.join("tree/usr/custom_file"), "custom file\n").expect("write");
    std::fs::write(work.join("tree/usr/bin/custom_folder/tool"), "tool\n").expect("write");
    std::fs::write(
        work.join("metadata.json"),
        r#"{"name": "sample", "spec": {"paths": ["/usr/custom_file", "/usr/bin/custom_folder"]}}"#,
    )
    .expect("metadata");
    pack_addon(&work, &work.join("tree"), "usr");
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
