//! The startup-latency benchmark (`addonfs bench startup`): for add-ons of several sizes, the
//! time from workload start to the first byte of a chosen file (the deepest file of the
//! add-on), by each [`Method`].
//!
//! Every run starts from a cold page cache (`sync; echo 3 > /proc/sys/vm/drop_caches`, which
//! also drops the kernel's cached dentries and inodes of every mount) and is timed with a
//! monotonic clock from the moment the first process is spawned to the moment one byte of the
//! chosen file has been read. Methods alternate within each round, so a disturbance on this
//! shared machine hits every method alike. Needs root.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::addon::{remove_all, AddonBuilder, BuiltAddon};
use super::node::{Fetched, NodeMode, StoreBench};
use super::{run_command, BenchError};
use crate::addon::Store;
use crate::archive::ScanOptions;
use crate::daemon::DaemonMount;
use crate::mount::MountOptions;

/// The chunk cache of the daemon's mount (as `addonfs serve` has by default).
const DAEMON_CACHE_BYTES: u64 = 32 << 20;

/// How a workload gets to the chosen file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    /// What a naive system does: `tar -xzf` of the tarball into a fresh, empty root, then
    /// `open` + `read` of one byte of the chosen file there.
    Extract,
    /// addonfs as deployed: the node daemon already serves the add-on (a fresh in-process
    /// [`DaemonMount`] of the add-on's store, so its chunk cache is cold), and the workload
    /// runs `addonfs-attach --mount M --root R` (the lean binary beside `addonfs`, or
    /// `addonfs attach` when it is missing) into a fresh root, then `open` + `read` of one
    /// byte of the chosen file through the symlink.
    Attach,
    /// The same as [`Method::Attach`] with `addonfs::attach::attach` called in-process instead
    /// of spawning the binary: what attach itself costs, without starting a process.
    AttachLib,
    /// addonfs as a per-workload mount, like the peers: spawn `addonfs mount TARBALL M` (its
    /// index already built beside the tarball), then the first byte read through the mount.
    AddonfsMount,
    /// Spawn `ratarmount -f --index-file TARBALL.index.sqlite TARBALL M` (the index already
    /// built beside the tarball), then the first byte read through the mount.
    Ratarmount,
    /// Spawn `archivemount -f -o ro,readonly TARBALL M` (it has no persistent index), then the
    /// first byte read through the mount.
    Archivemount,
    /// A lazy `addonfs node` on an empty cache, following a Garage store on loopback: spawn,
    /// the add-on mounted from its index head, `addonfs attach`, the first byte (fetched by
    /// range). See [`super::node`].
    Lazy,
    /// [`Method::Lazy`] with latency added to every store request (the proxy).
    LazyLatency,
    /// The same node fetching the whole tarball and index before mounting, then attach and
    /// the first byte.
    DownloadServe,
    /// [`Method::DownloadServe`] with latency added to every store request.
    DownloadServeLatency,
    /// The workload downloads the tarball from the store, `tar -xzf`, the first byte.
    DownloadExtract,
    /// [`Method::DownloadExtract`] with latency added to every store request.
    DownloadExtractLatency,
}

impl Method {
    /// Every method, in table order.
    pub const ALL: [Method; 12] = [
        Method::Extract,
        Method::Attach,
        Method::AttachLib,
        Method::AddonfsMount,
        Method::Ratarmount,
        Method::Archivemount,
        Method::Lazy,
        Method::LazyLatency,
        Method::DownloadServe,
        Method::DownloadServeLatency,
        Method::DownloadExtract,
        Method::DownloadExtractLatency,
    ];

    /// The methods on a store (Garage on loopback), in table order.
    pub const STORE: [Method; 6] = [
        Method::Lazy,
        Method::LazyLatency,
        Method::DownloadServe,
        Method::DownloadServeLatency,
        Method::DownloadExtract,
        Method::DownloadExtractLatency,
    ];

    /// Whether the method reads from the store through the proxy's added latency.
    pub fn with_latency(self) -> bool {
        matches!(
            self,
            Method::LazyLatency | Method::DownloadServeLatency | Method::DownloadExtractLatency
        )
    }

    /// The method of that name ([`Method::name`]).
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The short name used in the CSV.
    pub fn name(self) -> &'static str {
        match self {
            Method::Extract => "extract",
            Method::Attach => "addonfs-attach",
            Method::AttachLib => "addonfs-attach-lib",
            Method::AddonfsMount => "addonfs-mount",
            Method::Ratarmount => "ratarmount",
            Method::Archivemount => "archivemount",
            Method::Lazy => "lazy",
            Method::LazyLatency => "lazy-latency",
            Method::DownloadServe => "download-serve",
            Method::DownloadServeLatency => "download-serve-latency",
            Method::DownloadExtract => "download-extract",
            Method::DownloadExtractLatency => "download-extract-latency",
        }
    }

    /// The label used in the table and the chart's legend.
    pub fn title(self) -> &'static str {
        match self {
            Method::Extract => "tar -xzf (extract)",
            Method::Attach => "addonfs attach",
            Method::AttachLib => "addonfs attach (in-process)",
            Method::AddonfsMount => "addonfs mount",
            Method::Ratarmount => "ratarmount",
            Method::Archivemount => "archivemount",
            Method::Lazy => "lazy node",
            Method::LazyLatency => "lazy node +latency",
            Method::DownloadServe => "download, serve",
            Method::DownloadServeLatency => "download, serve +latency",
            Method::DownloadExtract => "download, tar -xzf",
            Method::DownloadExtractLatency => "download, tar -xzf +latency",
        }
    }

    /// The external program a peer method needs (`None` for addonfs and extraction).
    pub fn peer_program(self) -> Option<&'static str> {
        match self {
            Method::Ratarmount => Some("ratarmount"),
            Method::Archivemount => Some("archivemount"),
            _ => None,
        }
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct StartupConfig {
    /// Target sizes of content, in bytes.
    pub sizes: Vec<u64>,
    /// Runs per size and method.
    pub runs: usize,
    /// The directory files are picked from.
    pub source: PathBuf,
    /// Where add-ons are built and cached, and runs take place.
    pub work_dir: PathBuf,
    /// Measure ratarmount and archivemount too, when installed.
    pub peers: bool,
    /// The `addonfs` binary (spawned for `attach` and `mount`).
    pub addonfs: PathBuf,
    /// The workload-side binary [`Method::Attach`] spawns, run as `BIN --mount M --root R`;
    /// `None`: `addonfs-attach` beside [`StartupConfig::addonfs`], or `addonfs attach` when it
    /// is missing.
    pub attach_bin: Option<PathBuf>,
    /// Longest a single run may take before it is abandoned as failed.
    pub timeout: Duration,
    /// The `garage` program for the store methods ([`Method::STORE`]); `None`: they are not
    /// measured.
    pub garage: Option<PathBuf>,
    /// The latency the proxy adds to every store request for the `*-latency` methods (zero:
    /// they are not measured).
    pub store_latency: Duration,
    /// Only these methods (by [`Method::name`]); empty: every one available.
    pub only: Vec<Method>,
    /// Also the tree walk (`tar -cf - .`) through a cold lazy node and a whole one.
    pub walk: bool,
}

/// The runs of one method on one add-on.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// The add-on.
    pub addon: BuiltAddon,
    /// The method.
    pub method: Method,
    /// Each run's time from spawn to first byte, in run order.
    pub times: Vec<Duration>,
    /// For the store methods: what each run fetched, in run order (empty for the others).
    pub fetched: Vec<Fetched>,
}

impl Measurement {
    /// The median run (the mean of the two middle ones for an even count).
    pub fn median(&self) -> Duration {
        let mut sorted = self.times.clone();
        sorted.sort();
        match sorted.len() {
            0 => Duration::ZERO,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
        }
    }

    /// The store columns of the CSV (see [`CSV_HEADER`]); empty fields for other methods.
    fn fetched_columns(&self, tarball_bytes: u64) -> Vec<String> {
        if self.fetched.is_empty() {
            return vec![String::new(); 7];
        }
        let f = &self.fetched;
        let node = f.iter().any(|x| x.ready.is_some());
        let bytes = median_of(f.iter().map(|x| x.node_bytes));
        let requests = f.iter().any(|x| x.node_requests.is_some());
        vec![
            if node {
                format!("{:.3}", ms(median_of(f.iter().filter_map(|x| x.ready))))
            } else {
                String::new()
            },
            if node {
                format!("{:.3}", ms(median_of(f.iter().filter_map(|x| x.first))))
            } else {
                String::new()
            },
            bytes.to_string(),
            format!("{:.3}", percent(bytes, tarball_bytes)),
            if requests {
                median_of(f.iter().filter_map(|x| x.node_requests)).to_string()
            } else {
                String::new()
            },
            median_of(f.iter().map(|x| x.proxy_bytes)).to_string(),
            median_of(f.iter().map(|x| x.proxy_requests)).to_string(),
        ]
    }

    /// The fastest run.
    pub fn min(&self) -> Duration {
        self.times.iter().copied().min().unwrap_or_default()
    }

    /// The slowest run.
    pub fn max(&self) -> Duration {
        self.times.iter().copied().max().unwrap_or_default()
    }
}

/// Everything one benchmark run measured.
#[derive(Debug, Clone, Default)]
pub struct StartupReport {
    /// One entry per add-on and method, add-ons in size order.
    pub measurements: Vec<Measurement>,
    /// Methods not measured, with the reason (a peer not installed, `--no-peers`).
    pub skipped: Vec<(Method, String)>,
    /// The tree walks (with `walk`), add-ons in size order.
    pub walks: Vec<Walk>,
}

/// The tree walk on one add-on: a cold lazy node against a node holding the whole add-on.
#[derive(Debug, Clone)]
pub struct Walk {
    /// The add-on.
    pub addon: BuiltAddon,
    /// Through a lazy node mounted from its head only: each run's time and fetches.
    pub cold: Vec<(Duration, Fetched)>,
    /// Through a node that fetched the whole add-on before.
    pub whole: Vec<(Duration, Fetched)>,
}

/// The median of some values (the lower middle one for an even count).
pub fn median_of<T: Ord + Copy + Default>(values: impl IntoIterator<Item = T>) -> T {
    let mut v: Vec<T> = values.into_iter().collect();
    v.sort_unstable();
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or_default()
}

/// Milliseconds of a duration.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A latency for people: `0.84 ms`, `12.3 ms`, `4.21 s`.
pub fn human(d: Duration) -> String {
    let ms = ms(d);
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1e3)
    }
}

/// A byte count for people: `1.0 MiB`, `402.3 MiB`, `1.00 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

/// `part` as a percentage of `whole`.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Quotes a CSV field when it needs it (RFC 4180).
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// The CSV header (see [`StartupReport::csv`]).
///
/// The last columns are for the store methods only (empty for the others), medians over the
/// runs: `ready_ms` (spawn to the add-on mounted), `first_ms` (attach + first byte after it),
/// `fetched_bytes` (what the node's `/metrics` counts, or the download's bytes),
/// `fetched_pct` (of the tarball), `requests` (the node's count, if its metrics have one),
/// `proxy_bytes` and `proxy_requests` (what the proxy saw: the outside view).
pub const CSV_HEADER: &str = "size,target_bytes,content_bytes,files,tarball_bytes,chosen_file,chosen_depth,method,runs,median_ms,min_ms,max_ms,runs_ms,ready_ms,first_ms,fetched_bytes,fetched_pct,requests,proxy_bytes,proxy_requests";

impl StartupReport {
    /// The methods measured, in [`Method::ALL`] order.
    pub fn methods(&self) -> Vec<Method> {
        Method::ALL
            .into_iter()
            .filter(|m| self.measurements.iter().any(|x| x.method == *m))
            .collect()
    }

    /// The add-ons measured, in size order.
    pub fn addons(&self) -> Vec<&BuiltAddon> {
        let mut addons: Vec<&BuiltAddon> = Vec::new();
        for m in &self.measurements {
            if !addons.iter().any(|a| a.label == m.addon.label) {
                addons.push(&m.addon);
            }
        }
        addons.sort_by_key(|a| a.target_bytes);
        addons
    }

    /// The measurement of `method` on the add-on labelled `label`.
    pub fn get(&self, label: &str, method: Method) -> Option<&Measurement> {
        self.measurements.iter().find(|m| m.addon.label == label && m.method == method)
    }

    /// The CSV: [`CSV_HEADER`], then one row per add-on and method, times in milliseconds
    /// (`runs_ms`: every run, `;`-separated, in run order).
    pub fn csv(&self) -> String {
        let mut out = format!("{CSV_HEADER}\n");
        for addon in self.addons() {
            for method in self.methods() {
                let Some(m) = self.get(&addon.label, method) else { continue };
                let runs: Vec<String> = m.times.iter().map(|t| format!("{:.3}", ms(*t))).collect();
                out.push_str(&format!(
                    "{},{},{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{},{}\n",
                    csv_field(&addon.label),
                    addon.target_bytes,
                    addon.content_bytes,
                    addon.files,
                    addon.tarball_bytes,
                    csv_field(&addon.chosen),
                    addon.chosen_depth,
                    method.name(),
                    m.times.len(),
                    ms(m.median()),
                    ms(m.min()),
                    ms(m.max()),
                    runs.join(";"),
                    m.fetched_columns(addon.tarball_bytes).join(","),
                ));
            }
        }
        out
    }

    /// A Markdown table of the store methods: per add-on and method, the medians of the time
    /// to the add-on mounted, of attach + first byte after it, and of the total; what was
    /// fetched (bytes, % of the tarball) and in how many requests.
    pub fn store_table(&self) -> String {
        let mut out = String::from(
            "| add-on (tar.gz) | method | node ready | attach + first byte | total | fetched | of tarball | requests (node / proxy) |\n|---|---|---|---|---|---|---|---|\n",
        );
        for addon in self.addons() {
            for method in Method::STORE {
                let Some(m) = self.get(&addon.label, method) else { continue };
                let opt = |d: Option<Duration>| d.map_or("—".to_string(), human);
                let ready = median_of(m.fetched.iter().filter_map(|f| f.ready));
                let first = median_of(m.fetched.iter().filter_map(|f| f.first));
                let has_node = m.fetched.iter().any(|f| f.ready.is_some());
                let bytes = median_of(m.fetched.iter().map(|f| f.node_bytes));
                let node_req = median_of(m.fetched.iter().filter_map(|f| f.node_requests));
                let proxy_req = median_of(m.fetched.iter().map(|f| f.proxy_requests));
                let has_node_req = m.fetched.iter().any(|f| f.node_requests.is_some());
                out.push_str(&format!(
                    "| {} ({}) | {} | {} | {} | {} | {} | {:.2}% | {} / {} |\n",
                    addon.label,
                    human_bytes(addon.tarball_bytes),
                    method.title(),
                    opt(has_node.then_some(ready)),
                    opt(has_node.then_some(first)),
                    human(m.median()),
                    human_bytes(bytes),
                    percent(bytes, addon.tarball_bytes),
                    if has_node_req { node_req.to_string() } else { "—".to_string() },
                    proxy_req,
                ));
            }
        }
        out
    }

    /// A Markdown table of the tree walks: medians through a cold lazy node and through a
    /// node holding the whole add-on, their ratio, and what the cold walk fetched.
    pub fn walk_table(&self) -> String {
        let mut out = String::from(
            "| add-on (tar.gz) | cold lazy node | whole add-on on the node | cold ÷ whole | fetched by the cold walk | requests (node / proxy) | range cache hit ratio |\n|---|---|---|---|---|---|---|\n",
        );
        for w in &self.walks {
            let cold = median_of(w.cold.iter().map(|(t, _)| *t));
            let whole = median_of(w.whole.iter().map(|(t, _)| *t));
            let bytes = median_of(w.cold.iter().map(|(_, f)| f.node_bytes.max(f.proxy_bytes)));
            let requests = median_of(w.cold.iter().map(|(_, f)| f.proxy_requests));
            let node_requests = median_of(w.cold.iter().filter_map(|(_, f)| f.node_requests));
            let (hits, misses) =
                w.cold.iter().fold((0, 0), |(h, m), (_, f)| (h + f.hits.0, m + f.hits.1));
            let ratio = if whole > Duration::ZERO {
                format!("{:.2}×", cold.as_secs_f64() / whole.as_secs_f64())
            } else {
                "—".to_string()
            };
            out.push_str(&format!(
                "| {} ({}) | {} | {} | {} | {} | {} / {} | {:.1}% |\n",
                w.addon.label,
                human_bytes(w.addon.tarball_bytes),
                human(cold),
                human(whole),
                ratio,
                human_bytes(bytes),
                node_requests,
                requests,
                percent(hits, hits + misses),
            ));
        }
        out
    }

    /// A Markdown table of the medians: one row per add-on, one column per method, and the
    /// ratio of extraction to addonfs attach.
    pub fn table(&self) -> String {
        let methods = self.methods();
        let mut out = String::from("| add-on (content) | files | tar.gz |");
        for m in &methods {
            out.push_str(&format!(" {} |", m.title()));
        }
        out.push_str(" extract ÷ attach |\n|---|---|---|");
        out.push_str(&"---|".repeat(methods.len() + 1));
        out.push('\n');
        for addon in self.addons() {
            out.push_str(&format!(
                "| {} ({}) | {} | {} |",
                addon.label,
                human_bytes(addon.content_bytes),
                addon.files,
                human_bytes(addon.tarball_bytes)
            ));
            for m in &methods {
                match self.get(&addon.label, *m) {
                    Some(x) => out.push_str(&format!(" {} |", human(x.median()))),
                    None => out.push_str(" — |"),
                }
            }
            let ratio = match (
                self.get(&addon.label, Method::Extract),
                self.get(&addon.label, Method::Attach),
            ) {
                (Some(e), Some(a)) if a.median() > Duration::ZERO => {
                    format!("{:.0}×", e.median().as_secs_f64() / a.median().as_secs_f64())
                }
                _ => "—".to_string(),
            };
            out.push_str(&format!(" {ratio} |\n"));
        }
        out
    }
}

/// Fails unless the process runs as root (the owner of `/proc/self` is the effective user).
pub fn require_root() -> Result<(), BenchError> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata("/proc/self") {
        Ok(m) if m.uid() == 0 => Ok(()),
        Ok(m) => Err(BenchError::NotRoot(format!("running as uid {}", m.uid()))),
        Err(e) => Err(BenchError::NotRoot(format!("cannot tell the user: /proc/self: {e}"))),
    }
}

/// Flushes dirty pages and drops the page cache, dentries and inodes.
pub fn drop_caches() -> Result<(), BenchError> {
    run_command(&mut Command::new("sync"))?;
    let path = "/proc/sys/vm/drop_caches";
    std::fs::write(path, "3").map_err(|e| BenchError::io(path, e))
}

/// Finds a program on `PATH`. A pyenv shim (a shell script that looks the program up again
/// at every start, ~0.1 s) is resolved to the real executable with `pyenv which`, so the peer
/// is timed, not the shim.
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })?;
    if found.parent().is_some_and(|d| d.ends_with("shims")) {
        let out = Command::new("pyenv").args(["which", name]).output().ok()?;
        let real = String::from_utf8_lossy(&out.stdout).trim().to_string();
        return (out.status.success() && !real.is_empty()).then(|| PathBuf::from(real));
    }
    Some(found)
}

/// Opens `path` and reads its first byte.
pub(super) fn first_byte(path: &Path) -> std::io::Result<()> {
    let mut file = File::open(path)?;
    let mut byte = [0u8; 1];
    match file.read(&mut byte)? {
        1 => Ok(()),
        _ => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file is empty")),
    }
}

/// Detaches whatever is mounted at `mnt` (lazily if it is busy).
pub(super) fn unmount(mnt: &Path) {
    use crate::mount::sys;
    if crate::mount::mount_at(mnt).is_ok_and(|m| m.is_some()) && sys::unmount(mnt).is_err() {
        let _ = sys::detach(mnt);
    }
}

/// Waits up to `grace` for a child to exit, then kills it.
pub(super) fn reap(mut child: Child, grace: Duration) {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// An empty directory at `path` (anything there before is removed).
pub(super) fn fresh_dir(path: &Path) -> Result<(), BenchError> {
    remove_all(path)?;
    std::fs::create_dir_all(path).map_err(|e| BenchError::io(path, e))
}

/// One benchmark session: the configuration plus its scratch locations.
struct Bench<'a> {
    config: &'a StartupConfig,
    run_dir: PathBuf,
    mnt: PathBuf,
    root: PathBuf,
    peers: Vec<(Method, PathBuf)>,
    /// Garage and the proxy, for the store methods.
    store: Option<StoreBench>,
}

impl Bench<'_> {
    fn fail(method: Method, what: impl Into<String>, file: &Path) -> BenchError {
        BenchError::Method { method: method.name(), what: what.into(), file: file.to_path_buf() }
    }

    /// (a) `tar -xzf` into a fresh root, then the first byte.
    fn extract(&self, addon: &BuiltAddon) -> Result<Duration, BenchError> {
        fresh_dir(&self.root)?;
        let file = self.root.join(&addon.chosen);
        drop_caches()?;
        let start = Instant::now();
        let out = Command::new("tar")
            .arg("-xzf")
            .arg(addon.tarball())
            .arg("-C")
            .arg(&self.root)
            .stdout(Stdio::null())
            .output()
            .map_err(|e| Self::fail(Method::Extract, format!("cannot run tar: {e}"), &file))?;
        if !out.status.success() {
            let why = format!("tar -xzf {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
            return Err(Self::fail(Method::Extract, why, &file));
        }
        first_byte(&file).map_err(|e| Self::fail(Method::Extract, e.to_string(), &file))?;
        let elapsed = start.elapsed();
        remove_all(&self.root)?;
        Ok(elapsed)
    }

    /// (b) The daemon's mount serves the add-on; `addonfs attach` into a fresh root (the binary,
    /// or the library call if `in_process`), then the first byte through the symlink.
    fn attach(&self, addon: &BuiltAddon, in_process: bool) -> Result<Duration, BenchError> {
        let method = if in_process { Method::AttachLib } else { Method::Attach };
        fresh_dir(&self.root)?;
        let file = self.root.join(&addon.chosen);
        let store = Arc::new(Store::open(&addon.state_dir(), "bench startup")?);
        let daemon =
            DaemonMount::start(store, &self.mnt, DAEMON_CACHE_BYTES, &MountOptions::default())?;
        let measured = (|| {
            drop_caches()?;
            let start = Instant::now();
            if in_process {
                let report = crate::attach::attach(&self.mnt, &self.root)
                    .map_err(|e| Self::fail(method, e.to_string(), &file))?;
                if report.failures() > 0 {
                    return Err(Self::fail(method, report.summary(), &file));
                }
            } else {
                self.attach_binary(&self.mnt, &self.root)
                    .map_err(|e| Self::fail(method, e, &file))?;
            }
            first_byte(&file).map_err(|e| Self::fail(method, e.to_string(), &file))?;
            Ok(start.elapsed())
        })();
        daemon.unmount(Duration::from_secs(1));
        remove_all(&self.root)?;
        measured
    }

    /// Runs `addonfs attach --mount MNT --root ROOT`: the lean `addonfs-attach` is what a
    /// workload ships (the one asked for, else the one beside `addonfs`); the full binary's
    /// `attach` when it is missing.
    fn attach_binary(&self, mnt: &Path, root: &Path) -> Result<(), String> {
        let lean = match &self.config.attach_bin {
            Some(bin) => bin.clone(),
            None => self.config.addonfs.with_file_name("addonfs-attach"),
        };
        let mut command = if self.config.attach_bin.is_some() || lean.is_file() {
            Command::new(lean)
        } else {
            let mut full = Command::new(&self.config.addonfs);
            full.arg("attach");
            full
        };
        let out = command
            .arg("--mount")
            .arg(mnt)
            .arg("--root")
            .arg(root)
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run addonfs: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "addonfs attach {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// (d) A store method: a node run, or a download and extraction.
    fn store_run(
        &self,
        method: Method,
        addon: &BuiltAddon,
    ) -> Result<(Duration, Fetched), BenchError> {
        let file = self.root.join(&addon.chosen);
        let store =
            self.store.as_ref().ok_or_else(|| Self::fail(method, "no store was started", &file))?;
        store.set_latency(if method.with_latency() {
            self.config.store_latency
        } else {
            Duration::ZERO
        });
        let attach = |mnt: &Path, root: &Path| self.attach_binary(mnt, root);
        let timeout = self.config.timeout;
        let result = match method {
            Method::Lazy | Method::LazyLatency => {
                store.node_run(NodeMode::Lazy, addon, &self.run_dir, &self.root, &attach, timeout)
            }
            Method::DownloadServe | Method::DownloadServeLatency => {
                store.node_run(NodeMode::Whole, addon, &self.run_dir, &self.root, &attach, timeout)
            }
            _ => store.download_extract(addon, &self.run_dir, &self.root),
        };
        result.map_err(|e| Self::fail(method, e, &file))
    }

    /// The tree walk on `addon`: `runs` rounds of a cold lazy node and a whole one, alternating.
    fn walk(&self, addon: &BuiltAddon, log: &mut dyn FnMut(&str)) -> Result<Walk, BenchError> {
        let store = self.store.as_ref().ok_or_else(|| {
            BenchError::Usage("the tree walk needs the store (garage)".to_string())
        })?;
        store.set_latency(Duration::ZERO);
        let mut walk = Walk { addon: addon.clone(), cold: Vec::new(), whole: Vec::new() };
        let dir = self.mnt.join(addon.identifier());
        for round in 0..self.config.runs {
            for (mode, into) in
                [(NodeMode::Lazy, &mut walk.cold), (NodeMode::Whole, &mut walk.whole)]
            {
                let run = store
                    .walk(mode, addon, &self.run_dir, self.config.timeout)
                    .map_err(|e| Self::fail(Method::Lazy, format!("tree walk: {e}"), &dir))?;
                log(&format!(
                    "{} walk {}/{} {:?}: {} ({} fetched)",
                    addon.label,
                    round + 1,
                    self.config.runs,
                    mode,
                    human(run.0),
                    human_bytes(run.1.node_bytes.max(run.1.proxy_bytes))
                ));
                into.push(run);
            }
        }
        Ok(walk)
    }

    /// (c) Spawn a mount of the tarball, poll for the chosen file, read its first byte, unmount.
    fn mounted(
        &self,
        method: Method,
        mut cmd: Command,
        addon: &BuiltAddon,
    ) -> Result<Duration, BenchError> {
        let file = self.mnt.join(&addon.chosen);
        unmount(&self.mnt);
        let log_path = self.config.work_dir.join(format!("{}.log", method.name()));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| BenchError::io(&log_path, e))?;
        let log2 = log.try_clone().map_err(|e| BenchError::io(&log_path, e))?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        drop_caches()?;
        let start = Instant::now();
        let mut child =
            cmd.spawn().map_err(|e| Self::fail(method, format!("cannot start: {e}"), &file))?;
        let result = loop {
            match first_byte(&file) {
                Ok(()) => break Ok(start.elapsed()),
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    break Err(Self::fail(method, format!("first read: {e}"), &file))
                }
                Err(_) => {}
            }
            if let Ok(Some(status)) = child.try_wait() {
                let why = format!(
                    "exited ({status}) before serving the file; see {}",
                    log_path.display()
                );
                break Err(Self::fail(method, why, &file));
            }
            if start.elapsed() > self.config.timeout {
                let why = format!("no first byte within {} s", self.config.timeout.as_secs());
                break Err(Self::fail(method, why, &file));
            }
            std::thread::sleep(Duration::from_micros(100));
        };
        unmount(&self.mnt);
        reap(child, Duration::from_secs(10));
        result
    }

    /// The command that mounts `addon` by `method` (a mount method).
    fn mount_command(&self, method: Method, addon: &BuiltAddon) -> Command {
        let tarball = addon.tarball();
        match method {
            Method::Ratarmount | Method::Archivemount => {
                let program = self.peers.iter().find(|(m, _)| *m == method).map(|(_, p)| p.clone());
                let mut cmd = Command::new(program.unwrap_or_else(|| method.name().into()));
                if method == Method::Ratarmount {
                    let mut index = tarball.clone().into_os_string();
                    index.push(".index.sqlite");
                    cmd.arg("-f").arg("--index-file").arg(index);
                } else {
                    cmd.args(["-f", "-o", "ro,readonly"]);
                }
                cmd.arg(&tarball).arg(&self.mnt);
                cmd
            }
            _ => {
                let mut cmd = Command::new(&self.config.addonfs);
                cmd.arg("mount").arg(&tarball).arg(&self.mnt);
                cmd
            }
        }
    }

    /// One run of `method` on `addon`, and what it fetched (store methods).
    fn run(
        &self,
        method: Method,
        addon: &BuiltAddon,
    ) -> Result<(Duration, Option<Fetched>), BenchError> {
        let time = match method {
            Method::Extract => self.extract(addon)?,
            Method::Attach => self.attach(addon, false)?,
            Method::AttachLib => self.attach(addon, true)?,
            m if Method::STORE.contains(&m) => {
                let (time, fetched) = self.store_run(m, addon)?;
                return Ok((time, Some(fetched)));
            }
            _ => self.mounted(method, self.mount_command(method, addon), addon)?,
        };
        Ok((time, None))
    }

    /// Builds each method's index once, untimed: the store's (registration), addonfs's
    /// beside the tarball, and ratarmount's beside the tarball (by one mount).
    fn prepare(
        &mut self,
        addon: &BuiltAddon,
        methods: &[Method],
        log: &mut dyn FnMut(&str),
    ) -> Result<(), BenchError> {
        log(&format!("{}: registering in {} ...", addon.label, addon.state_dir().display()));
        addon.register()?;
        crate::index::open::open(&addon.tarball(), None, &ScanOptions::default(), false, None)?;
        if let Some(store) = self.store.as_mut() {
            store.prepare(addon, log)?;
        }
        if methods.contains(&Method::Ratarmount) {
            let mut index = addon.tarball().into_os_string();
            index.push(".index.sqlite");
            if !Path::new(&index).exists() {
                log(&format!(
                    "{}: building ratarmount's index (one untimed mount) ...",
                    addon.label
                ));
                self.run(Method::Ratarmount, addon)?;
            }
        }
        Ok(())
    }
}

/// Runs the benchmark: builds (or reuses) each add-on, then for each size `runs` rounds of
/// every method, alternating. `log` is told the progress, one line at a time.
pub fn run_startup(
    config: &StartupConfig,
    log: &mut dyn FnMut(&str),
) -> Result<StartupReport, BenchError> {
    require_root()?;
    if config.sizes.is_empty() {
        return Err(BenchError::Usage("no add-on sizes given".to_string()));
    }
    if config.runs == 0 {
        return Err(BenchError::Usage("--runs must be at least 1".to_string()));
    }
    std::fs::create_dir_all(&config.work_dir).map_err(|e| BenchError::io(&config.work_dir, e))?;
    let work_dir =
        std::fs::canonicalize(&config.work_dir).map_err(|e| BenchError::io(&config.work_dir, e))?;
    let mut report = StartupReport::default();
    let mut methods =
        vec![Method::Extract, Method::Attach, Method::AttachLib, Method::AddonfsMount];
    let mut peers = Vec::new();
    for method in [Method::Ratarmount, Method::Archivemount] {
        let program = method.peer_program().unwrap_or_default();
        if !config.peers {
            report.skipped.push((method, "--no-peers".to_string()));
        } else if let Some(path) = find_program(program) {
            methods.push(method);
            peers.push((method, path));
        } else {
            report.skipped.push((method, format!("{program} is not installed")));
        }
    }
    // The store methods: Garage (started below, in this run's directory) and a node of this
    // build; the lazy ones only where this build's node reads lazily.
    for method in Method::STORE {
        let mode = match method {
            Method::Lazy | Method::LazyLatency => Some(NodeMode::Lazy),
            Method::DownloadServe | Method::DownloadServeLatency => Some(NodeMode::Whole),
            _ => None,
        };
        let why = if config.garage.is_none() {
            Some("no garage (--no-store, or garage is not installed)".to_string())
        } else if method.with_latency() && config.store_latency.is_zero() {
            Some("--store-latency-ms 0".to_string())
        } else if mode.is_some_and(|m| super::node::node_flags(m).is_none()) {
            Some("this build's node cannot read lazily".to_string())
        } else {
            None
        };
        match why {
            Some(why) => report.skipped.push((method, why)),
            None => methods.push(method),
        }
    }
    if !config.only.is_empty() {
        methods.retain(|m| config.only.contains(m));
    }
    // The mount point and workload root are this run's own (the add-ons stay cached in the
    // work directory for the next run): two runs never share them.
    let run_dir = tempfile::Builder::new()
        .prefix("run.")
        .tempdir_in(&work_dir)
        .map_err(|e| BenchError::io(&work_dir, e))?;
    let wants_store = config.walk || methods.iter().any(|m| Method::STORE.contains(m));
    let store = match (&config.garage, wants_store) {
        (Some(garage), true) => {
            log("starting Garage on loopback and the proxy in front of it ...");
            Some(StoreBench::start(garage, &config.addonfs, run_dir.path())?)
        }
        _ => None,
    };
    if config.walk && store.is_none() {
        return Err(BenchError::Usage("--walk needs garage".to_string()));
    }
    if config.walk && super::node::node_flags(NodeMode::Lazy).is_none() {
        return Err(BenchError::Usage("--walk needs a node that reads lazily".to_string()));
    }
    let mut bench = Bench {
        config,
        run_dir: run_dir.path().to_path_buf(),
        mnt: run_dir.path().join("mnt"),
        root: run_dir.path().join("root"),
        peers,
        store,
    };
    std::fs::create_dir_all(&bench.mnt).map_err(|e| BenchError::io(&bench.mnt, e))?;

    let mut sizes = config.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let mut builder = AddonBuilder::new(&config.source, &work_dir)?;
    for size in sizes {
        let addon = builder.get(size, log)?;
        log(&format!(
            "{}: {} files, {} bytes of content, {} bytes of tar.gz; chosen file /{} (depth {})",
            addon.label,
            addon.files,
            addon.content_bytes,
            addon.tarball_bytes,
            addon.chosen,
            addon.chosen_depth
        ));
        bench.prepare(&addon, &methods, log)?;
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); methods.len()];
        let mut fetched: Vec<Vec<Fetched>> = vec![Vec::new(); methods.len()];
        for round in 0..config.runs {
            for (i, method) in methods.iter().enumerate() {
                let (t, f) = bench.run(*method, &addon)?;
                let what = f.map_or(String::new(), |f| {
                    format!(
                        " ({} fetched, {:.2}% of the tarball; {} requests)",
                        human_bytes(f.node_bytes),
                        percent(f.node_bytes, addon.tarball_bytes),
                        f.node_requests.unwrap_or(f.proxy_requests)
                    )
                });
                log(&format!(
                    "{} run {}/{} {}: {}{what}",
                    addon.label,
                    round + 1,
                    config.runs,
                    method.name(),
                    human(t)
                ));
                times[i].push(t);
                fetched[i].extend(f);
            }
        }
        for ((method, times), fetched) in methods.iter().zip(times).zip(fetched) {
            report.measurements.push(Measurement {
                addon: addon.clone(),
                method: *method,
                times,
                fetched,
            });
        }
        if config.walk {
            report.walks.push(bench.walk(&addon, log)?);
        }
    }
    drop(bench.store.take());
    unmount(&bench.mnt);
    run_dir.close().map_err(|e| BenchError::io(&work_dir, e))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addon(label: &str, target: u64) -> BuiltAddon {
        BuiltAddon {
            label: label.to_string(),
            target_bytes: target,
            source: "/usr".into(),
            dir: format!("/w/{label}").into(),
            files: 3,
            content_bytes: target - 1,
            tarball_bytes: target / 2,
            chosen: "usr/a,b/c".to_string(),
            chosen_depth: 3,
            name: format!("bench-{label}"),
            paths: vec!["/usr/a,b".to_string()],
        }
    }

    fn ms_list(list: &[u64]) -> Vec<Duration> {
        list.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn median_min_max() {
        let m = |t: &[u64]| Measurement {
            addon: addon("1M", 1 << 20),
            method: Method::Attach,
            times: ms_list(t),
            fetched: vec![],
        };
        assert_eq!(m(&[5, 1, 3]).median(), Duration::from_millis(3));
        assert_eq!(m(&[4, 1, 3, 2]).median(), Duration::from_micros(2500));
        assert_eq!(m(&[4, 1, 3, 2]).min(), Duration::from_millis(1));
        assert_eq!(m(&[4, 1, 3, 2]).max(), Duration::from_millis(4));
    }

    #[test]
    fn csv_and_table_have_one_row_per_addon_and_method() {
        let mut report = StartupReport::default();
        for (label, size) in [("10M", 10u64 << 20), ("1M", 1 << 20)] {
            for (method, times) in [(Method::Extract, [40, 20, 30]), (Method::Attach, [2, 1, 3])] {
                report.measurements.push(Measurement {
                    addon: addon(label, size),
                    method,
                    times: ms_list(&times),
                    fetched: vec![],
                });
            }
        }
        let csv = report.csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[1],
            "1M,1048576,1048575,3,524288,\"usr/a,b/c\",3,extract,3,30.000,20.000,40.000,40.000;20.000;30.000,,,,,,,"
        );
        assert!(
            lines[2].starts_with("1M,")
                && lines[2].contains(",addonfs-attach,3,2.000,1.000,3.000,")
        );
        assert!(lines[3].starts_with("10M,"));
        let table = report.table();
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 4);
        assert!(rows[0].contains("tar -xzf (extract)") && rows[0].contains("addonfs attach"));
        assert!(rows[2].starts_with("| 1M (1.0 MiB) | 3 |"), "{}", rows[2]);
        assert!(rows[2].ends_with(" 30.0 ms | 2.00 ms | 15× |"), "{}", rows[2]);
    }

    #[test]
    fn store_methods_have_their_columns_and_tables() {
        let fetched = |ms: u64, bytes: u64| Fetched {
            ready: Some(Duration::from_millis(ms)),
            first: Some(Duration::from_millis(ms / 10)),
            node_bytes: bytes,
            node_requests: Some(4),
            hits: (3, 1),
            proxy_bytes: bytes + 100,
            proxy_requests: 4,
        };
        let mut report = StartupReport::default();
        report.measurements.push(Measurement {
            addon: addon("1M", 1 << 20),
            method: Method::Lazy,
            times: ms_list(&[30, 10, 20]),
            fetched: vec![fetched(300, 5000), fetched(100, 1000), fetched(200, 3000)],
        });
        let csv = report.csv();
        let row = csv.lines().nth(1).unwrap();
        // ready, first, bytes, % of the 524288-byte tarball, requests, proxy bytes, requests.
        assert!(row.ends_with(",lazy,3,20.000,10.000,30.000,30.000;10.000;20.000,200.000,20.000,3000,0.572,4,3100,4"), "{row}");
        let table = report.store_table();
        assert!(
            table.contains("| 1M (0.5 MiB) | lazy node | 200.0 ms | 20.0 ms | 20.0 ms |"),
            "{table}"
        );
        assert!(table.contains("| 0.57% | 4 / 4 |"), "{table}");
        report.walks.push(Walk {
            addon: addon("1M", 1 << 20),
            cold: vec![(Duration::from_millis(300), fetched(0, 1 << 20))],
            whole: vec![(Duration::from_millis(200), fetched(0, 0))],
        });
        let walk = report.walk_table();
        assert!(
            walk.contains("| 300.0 ms | 200.0 ms | 1.50× | 1.0 MiB | 4 / 4 | 75.0% |"),
            "{walk}"
        );
        assert_eq!(median_of([3u64, 1, 2]), 2);
        assert_eq!(median_of(Vec::<u64>::new()), 0);
        assert_eq!(Method::from_name("download-serve-latency"), Some(Method::DownloadServeLatency));
        assert!(Method::STORE.iter().all(|m| Method::ALL.contains(m)));
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
