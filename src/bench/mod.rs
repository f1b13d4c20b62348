//! Benchmark harnesses run by `addonfs bench` (see `docs/benchmarks.md`).
//!
//! * [`addon`] builds the add-ons measured: real files of this machine packed with `tar -czf`,
//!   cached in a work directory.
//! * [`startup`] measures workload start to first byte of a chosen file, for extraction,
//!   addonfs (attach through the daemon's mount, or a mount of the tarball), ratarmount and
//!   archivemount, with the page cache dropped before every run.
//! * [`garage`] runs a real Garage S3 server on loopback (the store the lazy methods read).
//! * [`node`] runs the store methods: a lazy node, a node that downloads whole add-ons, and a
//!   download then `tar -xzf`, on Garage through the proxy; and the tree walk.
//! * [`proxy`] is a TCP proxy on loopback adding latency, cuts and outages (the benchmark's
//!   far store, and the fault tests').
//! * [`plot`] draws the results as an SVG line chart (log-log).

pub mod addon;
pub mod garage;
pub mod node;
pub mod plot;
pub mod proxy;
pub mod startup;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use startup::{run_startup, Measurement, Method, StartupConfig, StartupReport};

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The benchmark needs root (to drop the page cache and to mount).
    #[error("addonfs bench must run as root ({0}): it drops the page cache and mounts")]
    NotRoot(String),
    /// Bad options.
    #[error("{0}")]
    Usage(String),
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// An external command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// The source directory holds too little content for a size.
    #[error(
        "{}: only {found} bytes of readable regular files could be picked, fewer than the {wanted} bytes asked for",
        source_dir.display()
    )]
    SourceTooSmall {
        /// The source directory.
        source_dir: PathBuf,
        /// The target size.
        wanted: u64,
        /// What could be picked.
        found: u64,
    },
    /// A method did not deliver the first byte of the chosen file.
    #[error("{method}: {what} (file {})", file.display())]
    Method {
        /// The method's name.
        method: &'static str,
        /// What went wrong.
        what: String,
        /// The chosen file (through the workload's root or the mount).
        file: PathBuf,
    },
    /// The chart could not be drawn.
    #[error("{}: cannot draw the chart: {message}", path.display())]
    Plot {
        /// The SVG file.
        path: PathBuf,
        /// What the plotting library said.
        message: String,
    },
    /// An add-on could not be registered.
    #[error(transparent)]
    Register(#[from] crate::addon::RegisterError),
    /// The daemon's mount could not start.
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
    /// An archive's index could not be built or loaded.
    #[error(transparent)]
    Open(#[from] crate::index::open::OpenError),
    /// The add-on store failed.
    #[error(transparent)]
    Store(#[from] crate::addon::StoreError),
}

impl BenchError {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> BenchError {
        BenchError::Io { path: path.as_ref().to_path_buf(), source }
    }
}

/// Renders a command line for messages.
fn command_line(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs a command to completion (standard output discarded); fails with its standard error
/// if it cannot start or exits non-zero.
pub fn run_command(cmd: &mut Command) -> Result<(), BenchError> {
    let out =
        cmd.stdout(std::process::Stdio::null()).output().map_err(|e| BenchError::Command {
            command: command_line(cmd),
            status: "cannot start".to_string(),
            stderr: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String =
        stderr.chars().rev().take(2000).collect::<Vec<_>>().into_iter().rev().collect();
    Err(BenchError::Command {
        command: command_line(cmd),
        status: out.status.to_string(),
        stderr: tail.trim().to_string(),
    })
}
