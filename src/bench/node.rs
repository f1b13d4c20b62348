//! The startup benchmark's methods on a node following a store (issue 13): a real Garage on
//! loopback holds each add-on (registered with the library, as `addonfs registry` does, under
//! a prefix of its own, so a node of one add-on sees only that one), a [`Proxy`] stands
//! between the store and its clients (no fault, or latency added to every request), and:
//!
//! * **lazy**: `addonfs node` with an empty cache directory (a node that never saw the add-on)
//!   mounts it from its index head and fetches only the ranges the workload reads;
//! * **download-serve**: the same node fetching the whole tarball and index first (issue 12's
//!   node), then serving;
//! * **download-extract**: the workload downloads the tarball itself and runs `tar -xzf`.
//!
//! Each run is timed from the node's spawn (or the download's first request) to the first
//! byte of the chosen file read through `addonfs attach`'s root (or the extracted tree), with
//! the page cache dropped before. A node run also tells when the add-on was mounted (its
//! `/.addons.json` shows the catalog's revision), so "attach + first byte" on a node that has
//! only what a lookup needs is measured apart. What the run fetched comes from the node's own
//! `/metrics` and, as an outside check, from the proxy's counts.
//!
//! The tree walk (`tar -cf - .` of the add-on's directory through the mount) compares a cold
//! lazy node with a node that holds the whole add-on.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use super::addon::{remove_all, BuiltAddon};
use super::garage::Garage;
use super::proxy::Proxy;
use super::BenchError;
use crate::addon::backend;
use crate::addon::store::OpenOptions;
use crate::addon::Store;

/// How a node gets an add-on's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeMode {
    /// Index head first, then ranges as reads need them; no background fill (so what a
    /// workload start costs is what is counted).
    Lazy,
    /// The whole tarball and index fetched and verified before the add-on is mounted.
    Whole,
}

/// The flags `addonfs node` takes for a mode. `None`: this build's node cannot run it.
pub fn node_flags(mode: NodeMode) -> Option<&'static [&'static str]> {
    match mode {
        NodeMode::Lazy => Some(&["--fetch", "lazy", "--prefetch", "none"]),
        NodeMode::Whole => Some(&["--fetch", "whole"]),
    }
}

/// What one run on a node (or one download) fetched, and when.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fetched {
    /// From spawn to the add-on mounted (`None` for a download-extract run).
    pub ready: Option<Duration>,
    /// From the add-on mounted to the first byte (attach + first read).
    pub first: Option<Duration>,
    /// Bytes of the add-on the node says it fetched from the store (its `/metrics`: whole
    /// fetches and range requests, index included); for a download, the bytes downloaded.
    pub node_bytes: u64,
    /// Requests the node says it sent to the store (`None` when its metrics do not say).
    pub node_requests: Option<u64>,
    /// Chunks reads found in the node's range cache, and chunks they had to fetch.
    pub hits: (u64, u64),
    /// Bytes the proxy passed to the client (HTTP headers included).
    pub proxy_bytes: u64,
    /// Requests the proxy saw.
    pub proxy_requests: u64,
}

/// One add-on in the store.
#[derive(Debug, Clone)]
struct Stored {
    /// `s3://bucket/<prefix>`.
    url: String,
    /// The catalog's revision once it was registered.
    revision: u64,
    /// The tarball's key under the prefix.
    tarball_key: String,
    /// The directory of the add-on in a node's mount.
    identifier: String,
}

/// Garage, the proxy in front of it, and the add-ons registered so far.
pub struct StoreBench {
    garage: Garage,
    proxy: Proxy,
    addonfs: PathBuf,
    work: PathBuf,
    stored: HashMap<String, Stored>,
    rt: tokio::runtime::Runtime,
}

/// The node's metrics that count the add-on bytes it fetched, summed: whole fetches (tarball
/// and index), and range requests (the index head, windows and archive ranges). The catalog's
/// few bytes are not counted (the proxy's count has them).
const BYTES_METRICS: &[&str] =
    &["addonfs_node_fetch_bytes_total", "addonfs_node_range_bytes_total"];

/// The requests a node sent to the store by its own counts: catalog reads, range requests,
/// and two GETs (tarball, index) per whole fetch.
fn node_requests(m: &HashMap<String, u64>) -> Option<u64> {
    let get = |n: &str| m.get(n).copied();
    let catalog = get("addonfs_node_catalog_requests_total")?;
    let ranges = get("addonfs_node_range_requests_total").unwrap_or(0);
    let whole = get("addonfs_node_fetches_total").unwrap_or(0)
        + get("addonfs_node_fetch_failures_total").unwrap_or(0);
    Some(catalog + ranges + 2 * whole)
}

/// (hits, misses) of the range cache by chunk.
fn hits(m: &HashMap<String, u64>) -> (u64, u64) {
    let get = |n: &str| m.get(n).copied().unwrap_or(0);
    (get("addonfs_node_range_hits_total"), get("addonfs_node_range_misses_total"))
}

impl StoreBench {
    /// Starts Garage (`garage` program) and the proxy, in `work`.
    pub fn start(garage: &Path, addonfs: &Path, work: &Path) -> Result<StoreBench, BenchError> {
        let garage = Garage::start(garage, Some(work))?;
        let proxy = Proxy::start(garage.s3_addr()).map_err(|e| BenchError::io(work, e))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BenchError::io("the benchmark's runtime", e))?;
        Ok(StoreBench {
            garage,
            proxy,
            addonfs: addonfs.to_path_buf(),
            work: work.to_path_buf(),
            stored: HashMap::new(),
            rt,
        })
    }

    /// The environment of a store client going through the proxy.
    fn env(&self) -> Vec<(String, String)> {
        self.garage
            .env()
            .into_iter()
            .map(|(k, v)| if k == "AWS_ENDPOINT_URL" { (k, self.proxy.url()) } else { (k, v) })
            .collect()
    }

    /// Registers `addon` in the store under a prefix of its own (once per benchmark run):
    /// indexed and uploaded as `addonfs registry` does, untimed.
    pub fn prepare(
        &mut self,
        addon: &BuiltAddon,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), BenchError> {
        if self.stored.contains_key(&addon.label) {
            return Ok(());
        }
        log(&format!("{}: registering in Garage ...", addon.label));
        let url = self.garage.url(&format!("bench-{}", addon.label.to_lowercase()));
        let backend = backend::open_with(&url, &self.garage.options())
            .map_err(|e| BenchError::Usage(format!("{url}: {e}")))?;
        let mut options = OpenOptions::new("bench startup");
        options.scratch = Some(self.work.join("scratch"));
        options.orphan_interval = None;
        let store = Store::open_backend(backend, &options)?;
        let meta_path = addon.metadata();
        let bytes = crate::addon::register::read_metadata(&meta_path)?;
        crate::addon::register(&store, &meta_path, &bytes, &addon.tarball())?;
        let found = store.find(&addon.identifier()).ok_or_else(|| {
            BenchError::Usage(format!("{}: not in the store after registering", addon.label))
        })?;
        self.stored.insert(
            addon.label.clone(),
            Stored {
                url,
                revision: store.revision(),
                tarball_key: found.objects.tarball.clone(),
                identifier: addon.identifier(),
            },
        );
        Ok(())
    }

    fn stored(&self, addon: &BuiltAddon) -> Result<&Stored, BenchError> {
        self.stored
            .get(&addon.label)
            .ok_or_else(|| BenchError::Usage(format!("{}: not registered", addon.label)))
    }

    /// Sets the latency the proxy adds to every request.
    pub fn set_latency(&self, latency: Duration) {
        self.proxy.set_latency(latency);
    }

    /// One node run: spawn `addonfs node` (mode `mode`) on a fresh cache, wait until the
    /// add-on is mounted, run `attach` (the caller's closure, into `root`), read the first
    /// byte of the chosen file through `root`. Timed from the spawn; the page cache is dropped
    /// before.
    pub fn node_run(
        &self,
        mode: NodeMode,
        addon: &BuiltAddon,
        run_dir: &Path,
        root: &Path,
        attach: &dyn Fn(&Path, &Path) -> Result<(), String>,
        timeout: Duration,
    ) -> Result<(Duration, Fetched), String> {
        let stored = self.stored(addon).map_err(|e| e.to_string())?;
        let dirs = NodeDirs::fresh(run_dir).map_err(|e| e.to_string())?;
        super::startup::fresh_dir(root).map_err(|e| e.to_string())?;
        super::startup::drop_caches().map_err(|e| e.to_string())?;
        self.proxy.reset_counts();
        let start = Instant::now();
        let mut node = NodeProcess::spawn(&self.addonfs, mode, &stored.url, &self.env(), &dirs)?;
        let result = (|| {
            node.wait_revision(stored.revision, start, timeout)?;
            let ready = start.elapsed();
            attach(&dirs.mount, root)?;
            super::startup::first_byte(&root.join(&addon.chosen))
                .map_err(|e| format!("first byte: {e}"))?;
            let total = start.elapsed();
            let metrics = node.metrics()?;
            let counts = self.proxy.counts();
            Ok((
                total,
                Fetched {
                    ready: Some(ready),
                    first: Some(total - ready),
                    node_bytes: sum(&metrics, BYTES_METRICS).unwrap_or(0),
                    node_requests: node_requests(&metrics),
                    hits: hits(&metrics),
                    proxy_bytes: counts.bytes_down,
                    proxy_requests: counts.requests,
                },
            ))
        })();
        node.stop();
        let _ = remove_all(root);
        dirs.remove();
        result
    }

    /// One download-extract run: download the tarball (through the proxy), `tar -xzf` it
    /// into `root`, read the first byte of the chosen file. Timed from the first request.
    pub fn download_extract(
        &self,
        addon: &BuiltAddon,
        run_dir: &Path,
        root: &Path,
    ) -> Result<(Duration, Fetched), String> {
        use futures_util::StreamExt;
        use object_store::ObjectStoreExt;
        let stored = self.stored(addon).map_err(|e| e.to_string())?;
        let options: Vec<(String, String)> =
            self.env().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        let download = run_dir.join("download.tar.gz");
        super::startup::fresh_dir(root).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&download);
        super::startup::drop_caches().map_err(|e| e.to_string())?;
        self.proxy.reset_counts();
        let start = Instant::now();
        let result = (|| {
            let backend =
                backend::open_with(&stored.url, &options).map_err(|e| format!("store: {e}"))?;
            let mut file = std::fs::File::create(&download)
                .map_err(|e| format!("{}: {e}", download.display()))?;
            let bytes = self.rt.block_on(async {
                let got = backend
                    .store()
                    .get(&backend.key(&stored.tarball_key))
                    .await
                    .map_err(|e| format!("download: {e}"))?;
                let mut stream = got.into_stream();
                let mut n = 0u64;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| format!("download: {e}"))?;
                    file.write_all(&chunk).map_err(|e| format!("{}: {e}", download.display()))?;
                    n += chunk.len() as u64;
                }
                Ok::<u64, String>(n)
            })?;
            drop(file);
            super::run_command(Command::new("tar").arg("-xzf").arg(&download).arg("-C").arg(root))
                .map_err(|e| e.to_string())?;
            super::startup::first_byte(&root.join(&addon.chosen))
                .map_err(|e| format!("first byte: {e}"))?;
            let total = start.elapsed();
            let counts = self.proxy.counts();
            Ok((
                total,
                Fetched {
                    ready: None,
                    first: None,
                    node_bytes: bytes,
                    node_requests: None,
                    hits: (0, 0),
                    proxy_bytes: counts.bytes_down,
                    proxy_requests: counts.requests,
                },
            ))
        })();
        let _ = std::fs::remove_file(&download);
        let _ = remove_all(root);
        result
    }

    /// The tree walk: `tar -cf - .` of the add-on's directory through a node's mount, piped
    /// to `wc -c` (GNU tar skips reading files when it writes to `/dev/null`). A lazy node
    /// walks cold (mounted from its head, nothing else fetched); a whole node has fetched
    /// everything before. The page cache is dropped before the timed walk; what the node
    /// fetched during the walk is returned beside its time.
    pub fn walk(
        &self,
        mode: NodeMode,
        addon: &BuiltAddon,
        run_dir: &Path,
        timeout: Duration,
    ) -> Result<(Duration, Fetched), String> {
        let stored = self.stored(addon).map_err(|e| e.to_string())?;
        let dirs = NodeDirs::fresh(run_dir).map_err(|e| e.to_string())?;
        let start = Instant::now();
        let mut node = NodeProcess::spawn(&self.addonfs, mode, &stored.url, &self.env(), &dirs)?;
        let result = (|| {
            node.wait_revision(stored.revision, start, timeout)?;
            let before = node.metrics()?;
            super::startup::drop_caches().map_err(|e| e.to_string())?;
            self.proxy.reset_counts();
            let dir = dirs.mount.join(&stored.identifier);
            let walk_start = Instant::now();
            let out = Command::new("sh")
                .arg("-c")
                .arg("tar -cf - . | wc -c")
                .current_dir(&dir)
                .output()
                .map_err(|e| format!("tar -cf: {e}"))?;
            let elapsed = walk_start.elapsed();
            if !out.status.success() || !out.stderr.is_empty() {
                return Err(format!(
                    "tar -cf - . in {}: {}: {}",
                    dir.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let after = node.metrics()?;
            let counts = self.proxy.counts();
            let delta = |names: &[&str]| {
                Some(sum(&after, names)?.saturating_sub(sum(&before, names).unwrap_or(0)))
            };
            Ok((
                elapsed,
                Fetched {
                    ready: None,
                    first: None,
                    node_bytes: delta(BYTES_METRICS).unwrap_or(0),
                    node_requests: node_requests(&after)
                        .map(|a| a.saturating_sub(node_requests(&before).unwrap_or(0))),
                    hits: {
                        let (a, b) = (hits(&after), hits(&before));
                        (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1))
                    },
                    proxy_bytes: counts.bytes_down,
                    proxy_requests: counts.requests,
                },
            ))
        })();
        node.stop();
        dirs.remove();
        result
    }
}

/// A node's mount point and cache directory, fresh for one run.
struct NodeDirs {
    base: PathBuf,
    mount: PathBuf,
    cache: PathBuf,
}

impl NodeDirs {
    fn fresh(run_dir: &Path) -> Result<NodeDirs, BenchError> {
        let base = run_dir.join("node");
        super::startup::unmount(&base.join("mnt"));
        remove_all(&base)?;
        let dirs = NodeDirs { mount: base.join("mnt"), cache: base.join("cache"), base };
        std::fs::create_dir_all(&dirs.mount).map_err(|e| BenchError::io(&dirs.mount, e))?;
        Ok(dirs)
    }

    /// Unmounts and removes everything but the node's log, kept in the work directory as `node.log` (the
    /// last run's, for when a run fails).
    fn remove(&self) {
        super::startup::unmount(&self.mount);
        // base = WORK/run.XXXX/node: the log goes to WORK, which outlives the run.
        if let Some(work) = self.base.parent().and_then(Path::parent) {
            let _ = std::fs::rename(self.base.join("node.log"), work.join("node.log"));
        }
        let _ = remove_all(&self.base);
    }
}

/// A running `addonfs node`.
struct NodeProcess {
    child: Option<Child>,
    stdout: BufReader<ChildStdout>,
    mount: PathBuf,
    endpoint: Option<String>,
}

impl NodeProcess {
    fn spawn(
        addonfs: &Path,
        mode: NodeMode,
        url: &str,
        env: &[(String, String)],
        dirs: &NodeDirs,
    ) -> Result<NodeProcess, String> {
        let flags = node_flags(mode).ok_or("this build's node cannot run this mode")?;
        let log_path = dirs.base.join("node.log");
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let mut child = Command::new(addonfs)
            .args([
                "--log-level",
                "debug",
                "node",
                "--listen",
                "127.0.0.1:0",
                "--store",
                url,
                "--mount",
            ])
            .arg(&dirs.mount)
            .arg("--cache-dir")
            .arg(&dirs.cache)
            .args(flags)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {} node: {e}", addonfs.display()))?;
        let stdout = child.stdout.take().ok_or("no standard output")?;
        Ok(NodeProcess {
            child: Some(child),
            stdout: BufReader::new(stdout),
            mount: dirs.mount.clone(),
            endpoint: None,
        })
    }

    /// Waits until the mount's manifest shows `revision` (every add-on of it mounted).
    fn wait_revision(
        &mut self,
        revision: u64,
        start: Instant,
        timeout: Duration,
    ) -> Result<(), String> {
        let manifest = self.mount.join(".addons.json");
        loop {
            if let Ok(bytes) = std::fs::read(&manifest) {
                let shown = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["revision"].as_u64())
                    .unwrap_or(0);
                if shown >= revision {
                    return Ok(());
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!("the node exited ({status}) before mounting the add-on"));
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "the node did not mount revision {revision} within {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The node's `/metrics`, parsed (the address is read from its standard output).
    fn metrics(&mut self) -> Result<HashMap<String, u64>, String> {
        if self.endpoint.is_none() {
            for _ in 0..8 {
                let mut line = String::new();
                if self.stdout.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                    break;
                }
                if let Some(u) = line.split_whitespace().find(|w| w.starts_with("http://")) {
                    self.endpoint = Some(u.trim_start_matches("http://").to_string());
                    break;
                }
            }
        }
        let addr = self.endpoint.as_deref().ok_or("the node did not print its address")?;
        let text = http_get(addr, "/metrics")?;
        Ok(parse_metrics(&text))
    }

    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
            }
            super::startup::reap(child, Duration::from_secs(10));
        }
        super::startup::unmount(&self.mount);
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A plain HTTP/1.0 GET on loopback; the body.
fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| format!("{addr}: {e}"))?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {path}: {}", head.lines().next().unwrap_or_default()));
    }
    Ok(body.to_string())
}

/// Prometheus text to `name → value` (labels are part of the name; comments skipped).
pub fn parse_metrics(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.trim().to_string(), value.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// The sum of the metrics named (`None` if none is there).
fn sum(metrics: &HashMap<String, u64>, names: &[&str]) -> Option<u64> {
    let found: Vec<u64> = names.iter().filter_map(|n| metrics.get(*n).copied()).collect();
    (!found.is_empty()).then(|| found.iter().sum())
}

impl Drop for StoreBench {
    fn drop(&mut self) {
        self.proxy.stop();
        self.garage.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_is_parsed_by_name() {
        let text = "# HELP a x\n# TYPE a counter\na_total 12\nb{x=\"y\"} 3.0\nbad\n";
        let m = parse_metrics(text);
        assert_eq!(m.get("a_total"), Some(&12));
        assert_eq!(m.get("b{x=\"y\"}"), Some(&3));
        assert_eq!(m.len(), 2);
        assert_eq!(sum(&m, &["a_total", "c"]), Some(12));
        assert_eq!(sum(&m, &["c"]), None);
    }
}
