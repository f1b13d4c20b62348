//! Issue 15: a daemon restart is invisible to workloads. The holder keeps the mount's FUSE
//! connection while `addonfs serve` (or `addonfs node`, whose state directory is its cache
//! directory) is killed (SIGKILL) or upgraded in place (`addonfs restart`, SIGUSR2); readers of
//! open files see neither errors nor wrong bytes, requests in flight at the kill are resent to
//! the successor, and a killed holder falls back to the old behaviour. Under a real systemd
//! (a user manager of the test's own, [`common::systemd`]), `--fd-store` does the same with
//! systemd's file-descriptor store as the keeper.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::http::{pack_addon, seed_upload, serve_url, Serve};

const KEY: &str = "restart-test-key";
/// The add-on's big file: 4 MiB of deterministic bytes.
const BIG: usize = 4 << 20;

fn big_bytes() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..BIG)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The add-on in `work`: `usr/data.bin` (4 MiB), a few small files in `usr/lib/`.
fn sample_addon(work: &Path) {
    std::fs::create_dir_all(work.join("tree/usr/lib/sub")).expect("mkdir");
    std::fs::write(work.join("tree/usr/data.bin"), big_bytes()).expect("write");
    for i in 0..20 {
        std::fs::write(work.join(format!("tree/usr/lib/f{i}.txt")), format!("file {i}\n"))
            .expect("write");
        std::fs::write(work.join(format!("tree/usr/lib/sub/g{i}.txt")), format!("g {i}\n"))
            .expect("write");
    }
    std::fs::write(
        work.join("metadata.json"),
        r#"{"name": "sample", "spec": {"paths": ["/usr/data.bin", "/usr/lib"]}}"#,
    )
    .expect("metadata");
    pack_addon(work, &work.join("tree"), "usr");
}

/// Uploads the add-on in `work` to a directory store through `addonfs registry`.
fn upload_to_store(work: &Path, store: &Path) {
    let mut registry = Command::new(env!("CARGO_BIN_EXE_addonfs"))
        .args(["registry", "--listen", "127.0.0.1:0", "--store"])
        .arg(store)
        .env("ADDONFS_API_KEY", KEY)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start addonfs registry");
    let url = serve_url(&mut registry);
    let (status, record) = seed_upload(work, &url, KEY, "addon.tar.gz");
    kill("TERM", registry.id());
    let _ = registry.wait();
    assert_eq!(status, 200, "{record}");
}

/// The pid the state directory's lock file names (the serving process).
fn serving_pid(state: &Path) -> u32 {
    // The file may be caught while being rewritten: read it again.
    for _ in 0..1000 {
        let text = std::fs::read_to_string(state.join("addonfs.lock")).expect("lock file");
        let line = text.lines().next().unwrap_or_default();
        if let Ok(holder) = serde_json::from_str::<serde_json::Value>(line) {
            return holder["pid"].as_u64().expect("pid") as u32;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("the lock file names no process")
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

fn kill(signal: &str, pid: u32) {
    let _ = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
}

/// The holder's pid: the process whose command line is `addonfs holder --state-dir STATE`.
fn holder_pid(state: &Path) -> Option<u32> {
    let want = state.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<String> =
            cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        (args.iter().any(|a| a == "holder") && args.contains(&want) && alive(pid)).then_some(pid)
    })
}

/// The daemon run as a systemd service with `--fd-store`: the manager, the binary the unit
/// runs (a copy, replaced for each upgrade), and the unit's log.
struct Systemd {
    manager: common::systemd::UserManager,
    bin: PathBuf,
    log: PathBuf,
    /// The service's command line after the binary.
    args: Vec<std::ffi::OsString>,
    unit: String,
    /// The service's environment besides the API key and the log level.
    env: Vec<(String, String)>,
}

impl Systemd {
    /// Starts the service (a transient unit: `systemd-run`, which waits for its `READY=1`).
    fn start_unit(&self) {
        let output = format!("append:{}", self.log.display());
        let command: Vec<&std::ffi::OsStr> =
            std::iter::once(self.bin.as_os_str()).chain(self.args.iter().map(|a| &**a)).collect();
        let out = self.manager.run(
            &self.unit,
            &[
                "Type=notify",
                "FileDescriptorStoreMax=4",
                "Restart=always",
                "RestartSec=0",
                // systemd's default start limit (5 starts in 10 s) would end the unit, and
                // with it the stored connection, before ten kills are through.
                "StartLimitIntervalSec=0",
                // Unloaded once stopped, even after a failure: the test starts it again.
                "CollectMode=inactive-or-failed",
                &format!("StandardOutput={output}"),
                &format!("StandardError={output}"),
            ],
            &[("ADDONFS_API_KEY", KEY), ("ADDONFS_LOG", "info")]
                .into_iter()
                .chain(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .collect::<Vec<_>>(),
            &command,
        );
        assert!(
            out.status.success(),
            "systemd-run: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

/// The unit `--fd-store` tests run `serve` as: a name of its own per test (two managers side by
/// side would otherwise share the unit's control group, and wait for each other's processes
/// at a stop).
fn unit_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("addonfs-serve-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A started daemon with its add-on uploaded; stops whatever serves at the end (SIGTERM to the
/// process the lock file names: it unmounts and the holder exits), then clears what is left.
struct Setup {
    _tmp: tempfile::TempDir,
    /// The state directory (a node's: its cache directory).
    state: PathBuf,
    mount: PathBuf,
    serve: Option<Serve>,
    /// The daemon's command line and environment, to start it again by hand.
    args: Vec<std::ffi::OsString>,
    env: Vec<(String, String)>,
    /// Processes this test started (the first node, those started by hand).
    children: Vec<std::process::Child>,
    /// Run by systemd (`--fd-store`); `mount` is then the path through its namespace.
    systemd: Option<Systemd>,
}

impl Setup {
    fn start(env: &[(&str, &str)]) -> Setup {
        let tmp = tempfile::tempdir().expect("tempdir");
        let t = tmp.path();
        let work = t.join("work");
        sample_addon(&work);
        let state = t.join("state");
        let mount = t.join("mnt");
        std::fs::create_dir_all(&mount).expect("mkdir");
        let serve = Serve::start_with_env(&state, KEY, Some(&mount), env);
        let (status, record) = seed_upload(&work, &serve.url, KEY, "addon.tar.gz");
        assert_eq!(status, 200, "{record}");
        let args = ["serve", "--listen", "127.0.0.1:0", "--state-dir"].map(Into::into).into_iter();
        let args = args.chain([state.clone().into(), "--mount".into(), mount.clone().into()]);
        let mut env: Vec<(String, String)> =
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.push(("ADDONFS_API_KEY".into(), KEY.into()));
        let setup = Setup {
            _tmp: tmp,
            state,
            mount,
            serve: Some(serve),
            args: args.collect(),
            env,
            children: Vec::new(),
            systemd: None,
        };
        setup.wait_for_the_addon();
        setup
    }

    /// `addonfs node` on a directory store (the add-on uploaded through `addonfs registry`),
    /// its cache directory the state directory.
    fn start_node(env: &[(&str, &str)]) -> Setup {
        let tmp = tempfile::tempdir().expect("tempdir");
        let t = tmp.path();
        let work = t.join("work");
        sample_addon(&work);
        let store = t.join("store");
        upload_to_store(&work, &store);
        let state = t.join("cache");
        let mount = t.join("mnt");
        let args = ["node", "--store"].map(Into::into).into_iter().chain([
            store.into(),
            "--mount".into(),
            mount.clone().into(),
            "--cache-dir".into(),
            state.clone().into(),
        ]);
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut setup = Setup {
            _tmp: tmp,
            state,
            mount,
            serve: None,
            args: args.collect(),
            env,
            children: Vec::new(),
            systemd: None,
        };
        setup.start_by_hand();
        setup.wait_for_the_addon();
        setup
    }

    /// `addonfs serve --fd-store --keep-mount` (or, with `node`, `addonfs node` on a directory
    /// store, its cache directory the state directory) as a systemd service (`Type=notify`,
    /// `FileDescriptorStoreMax=4`, `Restart=always` at once), run by a user manager of the
    /// test's own; `None` when there is no systemd to run it (skipped; a failure under `CI`).
    fn start_systemd(env: &[(&str, &str)], node: bool) -> Option<Setup> {
        let manager = common::systemd::UserManager::start()?;
        let tmp = tempfile::tempdir().expect("tempdir");
        let t = tmp.path();
        let work = t.join("work");
        sample_addon(&work);
        let (state, store) = (t.join("state"), t.join("store"));
        let mount = t.join("mnt");
        std::fs::create_dir_all(&mount).expect("mkdir");
        if node {
            upload_to_store(&work, &store);
        }
        let bin = t.join("bin/addonfs");
        std::fs::create_dir_all(t.join("bin")).expect("mkdir");
        std::fs::copy(env!("CARGO_BIN_EXE_addonfs"), &bin).expect("copy the binary");
        let args: Vec<std::ffi::OsString> = if node {
            let args = ["node", "--store"].map(Into::into).into_iter();
            args.chain([store.into(), "--cache-dir".into(), state.clone().into()]).collect()
        } else {
            let args = ["serve", "--listen", "127.0.0.1:0", "--state-dir"].map(Into::into);
            args.into_iter().chain([state.clone().into()]).collect()
        };
        let args = args
            .into_iter()
            .chain(["--mount".into(), mount.clone().into()])
            .chain(["--fd-store".into(), "--keep-mount".into()]);
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let systemd = Systemd {
            manager,
            bin,
            log: t.join("unit.log"),
            args: args.collect(),
            unit: unit_name(),
            env,
        };
        systemd.start_unit();
        if !node {
            // Started: it said READY=1 once it served; the lock file names its API.
            let lock = std::fs::read_to_string(state.join("addonfs.lock")).expect("lock file");
            let holder: serde_json::Value =
                serde_json::from_str(lock.lines().next().unwrap_or_default()).expect("lock json");
            let url = holder["api"].as_str().expect("the lock names the API").to_string();
            let (status, record) = seed_upload(&work, &url, KEY, "addon.tar.gz");
            assert_eq!(status, 200, "{record}");
        }
        let setup = Setup {
            _tmp: tmp,
            state,
            mount: systemd.manager.inside(&mount),
            serve: None,
            args: Vec::new(),
            env: Vec::new(),
            children: Vec::new(),
            systemd: Some(systemd),
        };
        setup.wait_for_the_addon();
        Some(setup)
    }

    /// The unit's log.
    fn unit_log(&self) -> String {
        self.systemd.as_ref().map_or_else(String::new, |sd| {
            std::fs::read_to_string(&sd.log).expect("the unit's log")
        })
    }

    /// Upgrades the systemd service in place: a new binary replaces the unit's (a copy renamed
    /// over it: a new file), then SIGUSR2 to the main process, half by `kill`, half by
    /// `systemctl kill`; waits until the new image has taken the mount over, in the same
    /// process, running the new file.
    fn upgrade_under_systemd(&self, round: u32) {
        let sd = self.systemd.as_ref().expect("under systemd");
        let pid = sd.manager.main_pid(&sd.unit);
        let before = self.unit_log().matches("took over the mount").count();
        let next = sd.bin.with_extension("new");
        std::fs::copy(env!("CARGO_BIN_EXE_addonfs"), &next).expect("copy the binary");
        std::fs::rename(&next, &sd.bin).expect("replace the binary");
        if round.is_multiple_of(2) {
            kill("USR2", pid);
        } else {
            let out = sd.manager.systemctl(&["kill", "-s", "USR2", "--kill-who=main", &sd.unit]);
            assert!(
                out.status.success(),
                "systemctl kill: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.unit_log().matches("took over the mount").count() == before {
            assert!(Instant::now() < deadline, "upgrade round {round}: no takeover after 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sd.manager.main_pid(&sd.unit), pid, "upgrade round {round}: the same process");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe");
        assert_eq!(exe, sd.bin, "upgrade round {round}: the process runs the new file");
    }

    /// Starts the daemon's command again, as a supervisor would.
    fn start_by_hand(&mut self) {
        assert!(
            self.systemd.is_none(),
            "systemd did not start the service again\nlog:\n{}",
            self.unit_log()
        );
        let child = Command::new(env!("CARGO_BIN_EXE_addonfs"))
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .spawn()
            .expect("start the daemon");
        self.children.push(child);
    }

    fn wait_for_the_addon(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.file("usr/data.bin").exists() {
            assert!(Instant::now() < deadline, "the add-on never appeared in the mount");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn file(&self, rel: &str) -> PathBuf {
        self.mount.join("custom-addon-sample").join(rel)
    }

    /// The inode numbers of a few paths of the add-on.
    fn inodes(&self) -> Vec<u64> {
        ["", "usr", "usr/data.bin", "usr/lib", "usr/lib/sub/g3.txt"]
            .iter()
            .map(|rel| std::fs::metadata(self.file(rel)).expect("stat").ino())
            .collect()
    }

    /// Waits until a process other than `old` serves (the lock file names it).
    fn wait_successor(&self, old: u32) -> u32 {
        self.successor_within(old, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("no successor of pid {old} after 20 s"))
    }

    fn successor_within(&self, old: u32, patience: Duration) -> Option<u32> {
        let deadline = Instant::now() + patience;
        loop {
            let pid = serving_pid(&self.state);
            if pid != old && alive(pid) {
                return Some(pid);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // The manager stops the service (which leaves its mount with `--keep-mount`) and its
        // mount namespace goes with it.
        if let Some(sd) = self.systemd.take() {
            let _ = sd.manager.systemctl(&["stop", &sd.unit]);
            return;
        }
        let pid = serving_pid(&self.state);
        if alive(pid) {
            kill("TERM", pid);
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        drop(self.serve.take());
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(holder) = holder_pid(&self.state) {
            kill("KILL", holder);
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mount).stderr(Stdio::null()).status();
    }
}

#[derive(Default)]
struct ReaderStats {
    reads: AtomicU64,
    errors: AtomicU64,
    wrong: AtomicU64,
    walks: AtomicU64,
    walk_errors: AtomicU64,
    /// Longest single read, in microseconds, per phase (0: kills, 1: upgrades).
    stall_us: [AtomicU64; 2],
}

/// Ten SIGKILLs of the serving process (the holder starts it again) and ten upgrades in place
/// (`addonfs restart`, or SIGUSR2 to `serve`), while one reader reads an open file in a loop
/// (its pages dropped before each read, so every read reaches the daemon) and another walks
/// the tree: no error, no wrong byte, the same inode numbers. The longest stall is printed for
/// docs/benchmarks.md.
#[test]
fn readers_see_no_error_through_10_kills_and_10_upgrades() {
    if !common::fuse_ready() {
        return;
    }
    // Info lines: the upgrades by signal are counted in the serving processes' log.
    let mut setup = Setup::start(&[("ADDONFS_LOG", "info")]);
    survive(&mut setup, 10, 10, "serve");
}

/// The same for `addonfs node` (issue 12's node, on a directory store): its mount survives
/// six SIGKILLs and six upgrades in place (`addonfs restart --state-dir CACHE_DIR`, SIGUSR2)
/// through the holder of its cache directory. Run with `ADDONFS_NO_HOLDER=true` (the node's
/// `--no-holder`), it fails: the killed node's mount dies with it, and the reader's open file
/// fails from then on, even once the node has been started again by hand.
#[test]
fn a_node_survives_6_kills_and_6_upgrades() {
    if !common::fuse_ready() {
        return;
    }
    let mut setup = Setup::start_node(&[("ADDONFS_LOG", "info")]);
    survive(&mut setup, 6, 6, "node");
}

/// `kills` SIGKILLs of the serving process, then `upgrades` upgrades in place (half by
/// `addonfs restart`, half by SIGUSR2), with a reader and a walker running throughout.
fn survive(setup: &mut Setup, kills: u32, upgrades: u32, what: &str) {
    let expected = Arc::new(big_bytes());
    let stats = Arc::new(ReaderStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let phase = Arc::new(AtomicU8::new(0));
    let inodes = setup.inodes();
    let file = std::fs::File::open(setup.file("usr/data.bin")).expect("open the big file");
    let file_ino = file.metadata().expect("fstat").ino();
    let reader = {
        let (stats, stop, phase, expected) =
            (Arc::clone(&stats), Arc::clone(&stop), Arc::clone(&phase), Arc::clone(&expected));
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 128 << 10];
            let mut offset = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
                let started = Instant::now();
                let got = file.read_at(&mut buf, offset);
                let us = started.elapsed().as_micros() as u64;
                stats.stall_us[phase.load(Ordering::Relaxed) as usize]
                    .fetch_max(us, Ordering::Relaxed);
                stats.reads.fetch_add(1, Ordering::Relaxed);
                match got {
                    Ok(n) => {
                        let at = offset as usize;
                        if n == 0 || buf[..n] != expected[at..at + n] {
                            stats.wrong.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        if stats.errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("read error at {offset}: {e}");
                        }
                        // A dead mount fails at once: do not spin.
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                offset = (offset + 300_007) % (BIG as u64 - 1000);
            }
            file
        })
    };
    let walker = {
        let (stats, stop) = (Arc::clone(&stats), Arc::clone(&stop));
        let root = setup.file("usr/lib");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut count = 0;
                let mut dirs = vec![root.clone()];
                while let Some(dir) = dirs.pop() {
                    match std::fs::read_dir(&dir) {
                        Ok(entries) => {
                            for entry in entries {
                                match entry.and_then(|e| Ok((e.path(), e.metadata()?))) {
                                    Ok((path, meta)) if meta.is_dir() => dirs.push(path),
                                    Ok(_) => count += 1,
                                    Err(e) => {
                                        eprintln!("walk error: {e}");
                                        stats.walk_errors.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            eprintln!("walk error at {}: {e}", dir.display());
                            stats.walk_errors.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                if count != 40 {
                    stats.walk_errors.fetch_add(1, Ordering::Relaxed);
                }
                stats.walks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut by_hand = 0;
    for round in 1..=kills {
        let old = serving_pid(&setup.state);
        kill("KILL", old);
        // The holder starts the command again at once; without one, a supervisor would, after
        // a while: so does this test.
        let new = match setup.successor_within(old, Duration::from_secs(3)) {
            Some(new) => new,
            None => {
                by_hand += 1;
                setup.start_by_hand();
                setup.wait_successor(old)
            }
        };
        // Let the reader run against the successor for a moment.
        std::thread::sleep(Duration::from_millis(200));
        assert!(alive(new), "kill round {round}: the successor {new} died");
    }
    let errors_at_kills = stats.errors.load(Ordering::Relaxed);
    if errors_at_kills > 0 {
        stop.store(true, Ordering::Relaxed);
        let _ = reader.join();
        let _ = walker.join();
        panic!(
            "{what}: {errors_at_kills} read errors through {kills} kills ({by_hand} restarted by \
             hand){}",
            setup
                .systemd
                .as_ref()
                .map_or_else(String::new, |_| format!("\nlog:\n{}", setup.unit_log()))
        );
    }
    phase.store(1, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(200));
    for round in (1..=upgrades).filter(|_| setup.systemd.is_some()) {
        setup.upgrade_under_systemd(round);
        std::thread::sleep(Duration::from_millis(200));
    }
    for round in (1..=upgrades).filter(|_| setup.systemd.is_none()) {
        let old = serving_pid(&setup.state);
        // Half by the command, half by the signal.
        if round % 2 == 0 {
            kill("USR2", old);
        } else {
            let out = Command::new(env!("CARGO_BIN_EXE_addonfs"))
                .args(["restart", "--state-dir"])
                .arg(&setup.state)
                .output()
                .expect("addonfs restart");
            assert!(
                out.status.success(),
                "upgrade round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let new = setup.wait_successor(old);
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(old) {
            assert!(Instant::now() < deadline, "upgrade round {round}: pid {old} did not retire");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert!(alive(new), "upgrade round {round}: the successor {new} died");
    }
    if setup.systemd.is_some() {
        let by_signal = setup.unit_log().matches("SIGUSR2: upgrading in place").count();
        assert_eq!(by_signal as u32, upgrades, "upgrades by SIGUSR2, not kills by it");
    } else {
        let log = std::fs::read_to_string(setup.state.join("serve.log")).expect("serve.log");
        let by_signal = log.matches("SIGUSR2: asking the holder for an upgrade").count();
        assert_eq!(by_signal as u32, upgrades / 2, "upgrades by SIGUSR2, not kills by it");
    }
    stop.store(true, Ordering::Relaxed);
    let file = reader.join().expect("reader");
    walker.join().expect("walker");
    let (reads, errors, wrong) = (
        stats.reads.load(Ordering::Relaxed),
        stats.errors.load(Ordering::Relaxed),
        stats.wrong.load(Ordering::Relaxed),
    );
    let (walks, walk_errors) =
        (stats.walks.load(Ordering::Relaxed), stats.walk_errors.load(Ordering::Relaxed));
    let kill_ms = stats.stall_us[0].load(Ordering::Relaxed) as f64 / 1e3;
    let upgrade_ms = stats.stall_us[1].load(Ordering::Relaxed) as f64 / 1e3;
    eprintln!(
        "restart figures ({what}): {reads} reads, {walks} walks; longest read stall: \
         {kill_ms:.1} ms through {kills} SIGKILLs, {upgrade_ms:.1} ms through {upgrades} \
         upgrades; {by_hand} started by hand"
    );
    assert_eq!((errors, wrong, walk_errors), (0, 0, 0), "read errors, wrong reads, walk errors");
    assert!(reads > 100 && walks > 10, "the readers ran ({reads} reads, {walks} walks)");
    assert_eq!(setup.inodes(), inodes, "the same inode numbers");
    assert_eq!(file.metadata().expect("fstat").ino(), file_ino, "the open file's inode");
}

/// Under systemd with `--fd-store`: ten SIGKILLs of the service's main process (systemd starts
/// it again and passes the stored connection back) and ten upgrades in place (a new binary,
/// SIGUSR2: the process re-executes it), with the same reader and walker: no error, no wrong
/// byte, the same inode numbers. Without `--fd-store` the first kill ends the mount (the open
/// file fails from then on).
#[test]
fn under_systemd_readers_see_no_error_through_10_kills_and_10_upgrades() {
    if !common::fuse_ready() {
        return;
    }
    let Some(mut setup) = Setup::start_systemd(&[], false) else { return };
    survive(&mut setup, 10, 10, "serve --fd-store");
}

/// The same for `addonfs node --fd-store` (on a directory store): six SIGKILLs and six
/// upgrades in place under systemd, no error.
#[test]
fn under_systemd_a_node_survives_6_kills_and_6_upgrades() {
    if !common::fuse_ready() {
        return;
    }
    let Some(mut setup) = Setup::start_systemd(&[], true) else { return };
    survive(&mut setup, 6, 6, "node --fd-store");
}

/// Under systemd: `systemctl restart` with `--keep-mount` is invisible (the open file reads on,
/// the same inode numbers); `systemctl stop` then ends the connection (systemd lets its store
/// go) and a read of the held file fails at once, never hangs; the next start mounts anew and
/// new opens work.
#[test]
fn under_systemd_a_restart_is_invisible_and_a_stop_ends_the_mount() {
    if !common::fuse_ready() {
        return;
    }
    let Some(setup) = Setup::start_systemd(&[], false) else { return };
    let sd = setup.systemd.as_ref().expect("systemd");
    let inodes = setup.inodes();
    let file = std::fs::File::open(setup.file("usr/data.bin")).expect("open");
    let expected = big_bytes();
    let mut buf = vec![0u8; 64 << 10];
    let old = sd.manager.main_pid(&sd.unit);
    let out = sd.manager.systemctl(&["restart", &sd.unit]);
    assert!(out.status.success(), "restart: {}", String::from_utf8_lossy(&out.stderr));
    assert_ne!(sd.manager.main_pid(&sd.unit), old, "a new process serves");
    let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
    let n = file.read_at(&mut buf, 1 << 20).expect("read after the restart");
    assert!(n > 0 && buf[..n] == expected[1 << 20..(1 << 20) + n], "the same bytes");
    assert_eq!(setup.inodes(), inodes, "the same inode numbers");
    assert!(setup.unit_log().contains("took over the mount"), "taken over, not mounted anew");

    let out = sd.manager.systemctl(&["stop", &sd.unit]);
    assert!(out.status.success(), "stop: {}", String::from_utf8_lossy(&out.stderr));
    // Read on a thread: a connection systemd kept would make it wait for ever.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        let _ = tx.send(file.read_at(&mut buf, 2 << 20));
    });
    let got = rx.recv_timeout(Duration::from_secs(30)).expect("a read of the ended mount hung");
    let err = got.expect_err("a stopped service's mount is gone");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    // (A transient unit is gone once stopped: started again as it was.)
    sd.start_unit();
    assert_eq!(std::fs::read_to_string(setup.file("usr/lib/f2.txt")).expect("read"), "file 2\n");
}

/// A request in flight when the serving process is killed (a slow `read` and a slow `lookup`:
/// the test hook delays both by 1.5 s) is resent to the successor, which answers it: the
/// reader gets the right bytes, the lookup the right file, with the inode numbers of before.
#[test]
fn requests_in_flight_at_a_kill_are_resent_to_the_successor() {
    if !common::fuse_ready() {
        return;
    }
    in_flight_requests_are_resent(&Setup::start(&[("ADDONFS_TEST_DELAY_MS", "1500")]));
}

/// The same under systemd (`--fd-store`): the requests the killed main process had read are
/// resent to the one systemd starts again.
#[test]
fn under_systemd_requests_in_flight_at_a_kill_are_resent() {
    if !common::fuse_ready() {
        return;
    }
    let Some(setup) = Setup::start_systemd(&[("ADDONFS_TEST_DELAY_MS", "1500")], false) else {
        return;
    };
    in_flight_requests_are_resent(&setup);
}

fn in_flight_requests_are_resent(setup: &Setup) {
    let dir_ino = std::fs::metadata(setup.file("usr/lib")).expect("stat").ino();
    // Both requests start in the daemon about to be killed.
    let cat = Command::new("cat")
        .arg(setup.file("usr/lib/f7.txt"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cat");
    let stat = Command::new("stat")
        .args(["-c", "%i %s"])
        .arg(setup.file("usr/lib/sub/g3.txt"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stat");
    std::thread::sleep(Duration::from_millis(600));
    let old = serving_pid(&setup.state);
    kill("KILL", old);
    let killed_at = Instant::now();
    // Without a resend both would wait for ever: give them 20 s, then fail.
    let finish = |mut child: std::process::Child, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait().expect("try_wait").is_some() {
                return child.wait_with_output().expect("output");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{what} still waits 20 s after the kill: its request was never resent");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let out = finish(cat, "cat");
    assert!(out.status.success(), "cat: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "file 7\n");
    let out = finish(stat, "stat");
    assert!(out.status.success(), "stat: {}", String::from_utf8_lossy(&out.stderr));
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    eprintln!("in-flight requests answered {:?} after the kill", killed_at.elapsed());
    let new = serving_pid(&setup.state);
    assert_ne!(new, old, "a successor serves");
    // The successor's own answers: the same inode numbers as the killed daemon's.
    let meta = std::fs::metadata(setup.file("usr/lib/sub/g3.txt")).expect("stat");
    assert_eq!(answer, format!("{} {}", meta.ino(), meta.len()));
    assert_eq!(std::fs::metadata(setup.file("usr/lib")).expect("stat").ino(), dir_ino);
}

/// The holder killed instead: the old behaviour, cleanly. The serving process keeps serving;
/// killed in turn, it leaves a stale mount that answers at once (ENOTCONN, no hang); the next
/// `serve` detaches it, mounts anew (with a new holder), and new opens work.
#[test]
fn a_killed_holder_falls_back_to_the_old_behaviour() {
    if !common::fuse_ready() {
        return;
    }
    let mut setup = Setup::start(&[]);
    let holder = holder_pid(&setup.state).expect("serve started a holder");
    kill("KILL", holder);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(std::fs::read_to_string(setup.file("usr/lib/f1.txt")).expect("read"), "file 1\n");
    let pid = serving_pid(&setup.state);
    kill("KILL", pid);
    drop(setup.serve.take());
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        assert!(Instant::now() < deadline, "pid {pid} survived SIGKILL");
        std::thread::sleep(Duration::from_millis(10));
    }
    // No holder: nobody starts a successor, and the mount fails at once.
    let started = Instant::now();
    let out = Command::new("cat")
        .arg(setup.file("usr/lib/f2.txt"))
        .output()
        .expect("cat on the stale mount");
    assert!(!out.status.success(), "the stale mount still answers");
    assert!(started.elapsed() < Duration::from_secs(5), "a read of the stale mount hung");
    assert!(holder_pid(&setup.state).is_none(), "no holder runs");
    let serve = Serve::start(&setup.state, KEY, Some(&setup.mount));
    assert_eq!(std::fs::read_to_string(setup.file("usr/lib/f2.txt")).expect("read"), "file 2\n");
    assert!(holder_pid(&setup.state).is_some(), "the new serve started a holder");
    setup.serve = Some(serve);
}

/// On a kernel without `FUSE_NOTIFY_RESEND` (before 6.9; simulated by the test hook
/// `ADDONFS_TEST_NO_RESEND`), a request in flight at the kill fails once with `EIO` (its
/// `unique` was journaled), instead of waiting for ever; the next read works.
#[test]
fn without_resend_a_request_in_flight_at_a_kill_fails_once_with_eio() {
    if !common::fuse_ready() {
        return;
    }
    let setup = Setup::start(&[("ADDONFS_TEST_DELAY_MS", "1500"), ("ADDONFS_TEST_NO_RESEND", "1")]);
    let file = setup.file("usr/lib/f5.txt");
    let cat = Command::new("cat")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cat");
    std::thread::sleep(Duration::from_millis(600));
    let old = serving_pid(&setup.state);
    kill("KILL", old);
    let mut cat = cat;
    let deadline = Instant::now() + Duration::from_secs(20);
    while cat.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = cat.kill();
            panic!("cat still waits 20 s after the kill: its request was never answered");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = cat.wait_with_output().expect("output");
    assert!(!out.status.success(), "the request in flight failed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Input/output error"), "{err}");
    setup.wait_successor(old);
    assert_eq!(std::fs::read_to_string(&file).expect("read again"), "file 5\n");
}
