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
}

impl Method {
    /// Every method, in table order.
    pub const ALL: [Method; 6] = [
        Method::Extract,
        Method::Attach,
        Method::AttachLib,
        Method::AddonfsMount,
        Method::Ratarmount,
        Method::Archivemount,
    ];

    /// The short name used in the CSV.
    pub fn name(self) -> &'static str {
        match self {
            Method::Extract => "extract",
            Method::Attach => "addonfs-attach",
            Method::AttachLib => "addonfs-attach-lib",
            Method::AddonfsMount => "addonfs-mount",
            Method::Ratarmount => "ratarmount",
            Method::Archivemount => "archivemount",
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

/// Quotes a CSV field when it needs it (RFC 4180).
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// The CSV header (see [`StartupReport::csv`]).
pub const CSV_HEADER: &str = "size,target_bytes,content_bytes,files,tarball_bytes,chosen_file,chosen_depth,method,runs,median_ms,min_ms,max_ms,runs_ms";

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
                    "{},{},{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{}\n",
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
                ));
            }
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
fn first_byte(path: &Path) -> std::io::Result<()> {
    let mut file = File::open(path)?;
    let mut byte = [0u8; 1];
    match file.read(&mut byte)? {
        1 => Ok(()),
        _ => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file is empty")),
    }
}

/// Detaches whatever is mounted at `mnt` (lazily if it is busy).
fn unmount(mnt: &Path) {
    use crate::mount::sys;
    if crate::mount::mount_at(mnt).is_ok_and(|m| m.is_some()) && sys::unmount(mnt).is_err() {
        let _ = sys::detach(mnt);
    }
}

/// Waits up to `grace` for a child to exit, then kills it.
fn reap(mut child: Child, grace: Duration) {
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
fn fresh_dir(path: &Path) -> Result<(), BenchError> {
    remove_all(path)?;
    std::fs::create_dir_all(path).map_err(|e| BenchError::io(path, e))
}

/// One benchmark session: the configuration plus its scratch locations.
struct Bench<'a> {
    config: &'a StartupConfig,
    mnt: PathBuf,
    root: PathBuf,
    peers: Vec<(Method, PathBuf)>,
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
                // The lean `addonfs-attach` is what a workload ships (the one asked for, else
                // the one beside `addonfs`); the full binary's `attach` when it is missing.
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
                    .arg(&self.mnt)
                    .arg("--root")
                    .arg(&self.root)
                    .stdout(Stdio::null())
                    .output()
                    .map_err(|e| Self::fail(method, format!("cannot run addonfs: {e}"), &file))?;
                if !out.status.success() {
                    let why = format!(
                        "addonfs attach {}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    );
                    return Err(Self::fail(method, why, &file));
                }
            }
            first_byte(&file).map_err(|e| Self::fail(method, e.to_string(), &file))?;
            Ok(start.elapsed())
        })();
        daemon.unmount(Duration::from_secs(1));
        remove_all(&self.root)?;
        measured
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

    /// One run of `method` on `addon`.
    fn run(&self, method: Method, addon: &BuiltAddon) -> Result<Duration, BenchError> {
        match method {
            Method::Extract => self.extract(addon),
            Method::Attach => self.attach(addon, false),
            Method::AttachLib => self.attach(addon, true),
            _ => self.mounted(method, self.mount_command(method, addon), addon),
        }
    }

    /// Builds each method's index once, untimed: the store's (registration), addonfs's
    /// beside the tarball, and ratarmount's beside the tarball (by one mount).
    fn prepare(
        &self,
        addon: &BuiltAddon,
        methods: &[Method],
        log: &mut dyn FnMut(&str),
    ) -> Result<(), BenchError> {
        log(&format!("{}: registering in {} ...", addon.label, addon.state_dir().display()));
        addon.register()?;
        crate::index::open::open(&addon.tarball(), None, &ScanOptions::default(), false, None)?;
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
    // The mount point and workload root are this run's own (the add-ons stay cached in the
    // work directory for the next run): two runs never share them.
    let run_dir = tempfile::Builder::new()
        .prefix("run.")
        .tempdir_in(&work_dir)
        .map_err(|e| BenchError::io(&work_dir, e))?;
    let bench =
        Bench { config, mnt: run_dir.path().join("mnt"), root: run_dir.path().join("root"), peers };
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
        for round in 0..config.runs {
            for (i, method) in methods.iter().enumerate() {
                let t = bench.run(*method, &addon)?;
                log(&format!(
                    "{} run {}/{} {}: {}",
                    addon.label,
                    round + 1,
                    config.runs,
                    method.name(),
                    human(t)
                ));
                times[i].push(t);
            }
        }
        for (method, times) in methods.iter().zip(times) {
            report.measurements.push(Measurement { addon: addon.clone(), method: *method, times });
        }
    }
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
                });
            }
        }
        let csv = report.csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[1],
            "1M,1048576,1048575,3,524288,\"usr/a,b/c\",3,extract,3,30.000,20.000,40.000,40.000;20.000;30.000"
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
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
