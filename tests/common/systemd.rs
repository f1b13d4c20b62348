//! A real systemd for the tests of `--fd-store`: a user manager (`systemd --user`) of the
//! test's own, with its runtime directory in a temporary directory.
//!
//! This machine's init is not systemd, and a user manager refuses to start unless the system
//! was booted with it (`/run/systemd/system` exists). So it runs in a mount namespace of its
//! own (`unshare -m`, mounts private), where a tmpfs on `/run/systemd` holds that directory:
//! nothing outside the namespace changes. The units it starts run in that namespace too, so
//! their mounts are there; the test reaches them through `/proc/PID/root` of the manager
//! ([`UserManager::inside`]). When the manager ends, the namespace and its mounts go with it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running `systemd --user`.
pub struct UserManager {
    child: Child,
    runtime: tempfile::TempDir,
}

impl UserManager {
    /// Starts one, waiting until it answers `systemctl`. `None` (the caller skips) when
    /// systemd, `unshare` or root is missing; under `CI` that fails instead.
    pub fn start() -> Option<UserManager> {
        if !super::root_ready("a systemd user manager in a mount namespace")
            || !super::require("systemd")
            || !super::require("unshare")
        {
            return None;
        }
        let runtime =
            tempfile::Builder::new().prefix("addonfs-systemd").tempdir().expect("a runtime dir");
        let script = "mount -t tmpfs tmpfs /run/systemd 2>/dev/null || \
                      { mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd; } && \
                      mkdir /run/systemd/system && exec systemd --user";
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", script])
            .env("XDG_RUNTIME_DIR", runtime.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start systemd --user");
        let manager = UserManager { child, runtime };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = manager.systemctl(&["is-system-running"]);
            // Any state ("running", "degraded", "starting") means it answers.
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return Some(manager);
            }
            assert!(
                Instant::now() < deadline,
                "systemd --user did not answer within 20 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The manager's pid (its mount namespace's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `systemctl --user ARGS` against this manager.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        Command::new("systemctl")
            .arg("--user")
            .args(args)
            .env("XDG_RUNTIME_DIR", self.runtime.path())
            .output()
            .expect("run systemctl")
    }

    /// Starts `command` as the transient service `unit` with unit `properties`
    /// (`Type=notify`, ...) and environment `env`, as `systemd-run` does; waits for its start
    /// job (for `Type=notify`, until it says `READY=1`).
    pub fn run(
        &self,
        unit: &str,
        properties: &[&str],
        env: &[(&str, &str)],
        command: &[&OsStr],
    ) -> Output {
        let mut run = Command::new("systemd-run");
        run.args(["--user", "--unit", unit]).env("XDG_RUNTIME_DIR", self.runtime.path());
        for p in properties {
            run.arg("-p").arg(p);
        }
        for (k, v) in env {
            run.arg("-E").arg(format!("{k}={v}"));
        }
        run.args(command).output().expect("run systemd-run")
    }

    /// A unit's main pid (0 while none runs).
    pub fn main_pid(&self, unit: &str) -> u32 {
        let out = self.systemctl(&["show", "-p", "MainPID", "--value", unit]);
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    }

    /// `path` as the manager's units see it (through the manager's mount namespace).
    pub fn inside(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").unwrap_or(path);
        Path::new(&format!("/proc/{}/root", self.pid())).join(relative)
    }

    /// Whether something is mounted at `path` in the manager's mount namespace.
    pub fn mounted(&self, path: &Path) -> bool {
        let info =
            std::fs::read_to_string(format!("/proc/{}/mountinfo", self.pid())).unwrap_or_default();
        info.lines().any(|line| line.split(' ').nth(4) == Some(&*path.to_string_lossy()))
    }
}

impl Drop for UserManager {
    /// Stops every unit (SIGTERM makes the manager stop them and exit), then the manager;
    /// its namespace, and any mount left in it, go with it.
    fn drop(&mut self) {
        super::terminate(&mut self.child, Duration::from_secs(15));
    }
}
