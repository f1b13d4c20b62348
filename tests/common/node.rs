//! A real `addonfs node` process for the node-side tests (cluster, lazy, lazy faults): started
//! on a free loopback port with its own mount point and cache directory under one directory,
//! read through its HTTP address, and stopped on drop (SIGTERM so that it unmounts, SIGKILL
//! after 10 s, then a lazy unmount).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http::serve_url;

/// A running (or stopped, between [`Node::stop`] and [`Node::spawn`]) `addonfs node`.
pub struct Node {
    pub child: Option<Child>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    pub mount: PathBuf,
    pub cache: PathBuf,
    /// `http://127.0.0.1:PORT` of the current start.
    pub url: String,
    /// Where its standard error goes (every start appends); `None`: the test's own.
    log: Option<PathBuf>,
}

impl Node {
    /// Starts `addonfs --log-level info node --listen 127.0.0.1:0 --store STORE --mount
    /// DIR/mnt --cache-dir DIR/cache EXTRA...` with `env`; its standard error is the test's.
    pub fn start(store: &str, env: &[(String, String)], dir: &Path, extra: &[&str]) -> Node {
        Self::start_with(store, env, dir, extra, None)
    }

    /// [`Node::start`] without extra arguments, its standard error kept in `DIR/node.log`
    /// (see [`Node::log`]; printed if the test panics).
    pub fn start_logged(store: &str, env: &[(String, String)], dir: &Path) -> Node {
        Self::start_with(store, env, dir, &[], Some(dir.join("node.log")))
    }

    fn start_with(
        store: &str,
        env: &[(String, String)],
        dir: &Path,
        extra: &[&str],
        log: Option<PathBuf>,
    ) -> Node {
        let mount = dir.join("mnt");
        let cache = dir.join("cache");
        let mut args: Vec<String> =
            ["--log-level", "info", "node", "--listen", "127.0.0.1:0", "--store", store]
                .iter()
                .map(|s| s.to_string())
                .collect();
        args.extend(["--mount".into(), mount.display().to_string()]);
        args.extend(["--cache-dir".into(), cache.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut node =
            Node { child: None, args, env: env.to_vec(), mount, cache, url: String::new(), log };
        node.spawn();
        node
    }

    /// Starts the process (again, after [`Node::stop`] or [`Node::kill9`]) with the same
    /// arguments; waits for the address it prints.
    pub fn spawn(&mut self) {
        let stderr = match &self.log {
            Some(path) => {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let file =
                    std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
                Stdio::from(file)
            }
            None => Stdio::inherit(),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_addonfs"))
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start addonfs node");
        self.url = serve_url(&mut child);
        self.child = Some(child);
    }

    /// SIGTERM (the node unmounts), SIGKILL after 10 s, then a lazy unmount.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mount).stderr(Stdio::null()).status();
    }

    /// SIGKILL, as a crash; the stale mount stays for the next start to clear.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Everything the node has logged so far (all its starts); empty unless started with
    /// [`Node::start_logged`].
    pub fn log(&self) -> String {
        self.log.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default()
    }

    /// `GET URL PATH` through curl: (HTTP status, 0 for none; body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}", &format!("{}{path}", self.url)])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// The text of `/metrics`.
    pub fn metrics(&self) -> String {
        self.get("/metrics").1
    }

    /// A counter or gauge of `/metrics` (a float one truncated).
    pub fn metric(&self, name: &str) -> u64 {
        let text = self.metrics();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| {
                let v = v.trim();
                v.parse().ok().or_else(|| v.parse::<f64>().ok().map(|f| f as u64))
            })
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    /// Waits, at most `bound`, until the add-on `name` is mounted (its directory has `top`);
    /// its directory.
    pub fn wait_for_addon(&self, name: &str, top: &str, bound: Duration) -> PathBuf {
        let dir = self.mount.join(format!("custom-addon-{name}"));
        let start = Instant::now();
        while !dir.join(top).exists() {
            assert!(start.elapsed() < bound, "{name} not mounted within {bound:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        dir
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() && self.log.is_some() {
            eprintln!("--- log of the node at {}:\n{}", self.mount.display(), self.log());
        }
        self.stop();
    }
}
