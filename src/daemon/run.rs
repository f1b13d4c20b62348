//! `serve`'s whole lifecycle, in one place: the state directory (its lock), the API keys, the
//! mount and its following of the store, the API's runtime, and the shutdown order. The CLI
//! only turns flags into a [`Config`] and calls [`run`]; tests run it in process.
//!
//! Shutdown: when `shutdown` completes (SIGINT or SIGTERM for `addonfs serve`), the API stops
//! accepting connections and finishes the requests in flight, for at most [`Config::drain`]
//! (a client that uploads slowly cannot hold the daemon forever); what is still in flight then
//! is abandoned, and an abandoned upload is never stored (a commit is one rename, and the
//! staging is removed, or cleared at the next start); then the mount stops following the store and is unmounted, or
//! detached lazily when busy after a grace period; last, the store (and with it the state
//! directory's lock) is released.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::restart::{MountLife, Restarts};
use super::{DaemonError, DaemonMount};
use crate::addon::store::OpenOptions;
use crate::addon::{Store, StoreError};
use crate::api::tls::{ServerTls, TlsFiles};
use crate::api::{ApiKeys, ApiLimits, Observed};
use crate::mount::MountOptions;

/// How long a busy mount gets at shutdown before it is detached lazily.
pub const UNMOUNT_GRACE: Duration = Duration::from_secs(5);

/// How long requests in flight get to finish after the stop signal, by default: with
/// [`UNMOUNT_GRACE`], under Kubernetes' default grace period of 30 s (and the 20 s that
/// `docs/operations.md` sets).
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

/// Where the API keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// One key given directly (`--api-key`, `ADDONFS_API_KEY`).
    Key(String),
    /// A keys file (`--api-key-file`).
    File(PathBuf),
    /// `STATE_DIR/api-keys`, created with a fresh key if missing.
    StateDir,
}

/// The daemon's mount.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// The mount point (created if missing).
    pub path: PathBuf,
    /// The chunk cache's capacity in bytes.
    pub cache_bytes: u64,
    /// Let other users read the mount (`allow_other`).
    pub allow_other: bool,
    /// Who keeps the mount's connection so that it survives this process (a new `serve` takes
    /// it over), and whether a shutdown leaves it to them.
    pub restarts: Restarts,
}

/// The store of a `registry` (instead of the state directory).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The store.
    pub backend: crate::addon::backend::Backend,
    /// Unreferenced objects older than this are deleted.
    pub orphan_grace: Duration,
    /// Where uploads to a remote store are staged.
    pub scratch: Option<PathBuf>,
}

/// What `serve` (and `registry`) runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The state directory (for `registry` on a directory store, that directory).
    pub state_dir: PathBuf,
    /// The store, for `registry`; `None`: the state directory (`serve`).
    pub store: Option<StoreConfig>,
    /// The API's address (port 0 picks one).
    pub listen: SocketAddr,
    /// The API keys.
    pub keys: KeySource,
    /// The API's limits.
    pub limits: ApiLimits,
    /// The mount, or `None` for the API alone.
    pub mount: Option<MountConfig>,
    /// How long requests in flight get to finish after the stop signal
    /// ([`DEFAULT_DRAIN`] for `addonfs serve`).
    pub drain: Duration,
    /// Serve the API over TLS with these files (reloaded on SIGHUP and when they change).
    pub tls: Option<TlsFiles>,
}

/// Runs the daemon until `shutdown` completes. `listening` is told the API's bound address
/// once the daemon is ready (the mount up, the address recorded in the lock file). Progress
/// lines go to standard output, warnings to standard error, as `addonfs serve` prints them.
pub fn run(
    config: &Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    listening: impl FnOnce(SocketAddr),
) -> Result<(), DaemonError> {
    let dir = &config.state_dir;
    // Idle connections must not run the process out of descriptors: the soft limit goes up to
    // the hard one, and the connection cap comes down to fit it.
    let open_files = crate::api::server::raise_open_files_limit();
    let mut limits = config.limits;
    limits.max_connections =
        crate::api::server::connection_cap(config.limits.max_connections, open_files);
    if limits.max_connections < config.limits.max_connections {
        eprintln!(
            "addonfs: warning: at most {} connections at once (--max-connections {}), to fit the \
             open-files limit of {open_files}",
            limits.max_connections, config.limits.max_connections
        );
    }
    // A bad certificate fails the start before anything is locked or mounted.
    let tls = config.tls.as_ref().map(ServerTls::load).transpose()?;
    if let Some(warning) = crate::api::tls::plain_http_warning(config.listen, tls.is_some()) {
        eprintln!("addonfs: warning: {warning}");
    }
    // With a holder, the mount may be alive already: then it is taken over, and with it the
    // state directory's lock (shared with the holder, which keeps it between processes).
    let mut life = match &config.mount {
        Some(m) => match MountLife::begin(dir, &m.path, m.restarts)? {
            Some(life) => Some(life),
            None => return Ok(()),
        },
        None => None,
    };
    let handed = life.as_mut().map(|l| l.handed_lock(dir, "serve")).transpose();
    let store = Arc::new(match (&config.store, handed.map_err(StoreError::from)?.flatten()) {
        (None, Some(lock)) => Store::open_locked(dir, lock)?,
        (None, None) => Store::open(dir, "serve")?,
        (Some(s), _) => {
            let mut options = OpenOptions::new("registry");
            options.orphan_grace = s.orphan_grace;
            options.scratch = s.scratch.clone();
            Store::open_backend(s.backend.clone(), &options)?
        }
    });
    for problem in store.problems() {
        eprintln!("addonfs: warning: {problem}");
    }
    let keys = match &config.keys {
        KeySource::Key(key) => ApiKeys::new([key.clone()]),
        KeySource::File(path) => ApiKeys::from_file(path).map_err(|e| match e.kind() {
            // The message names the file already.
            std::io::ErrorKind::InvalidData => DaemonError::BadKeyFile(e.to_string()),
            _ => DaemonError::io(path, e),
        })?,
        KeySource::StateDir => {
            let (keys, path, created) = ApiKeys::load_or_create(dir)
                .map_err(|e| DaemonError::io(dir.join("api-keys"), e))?;
            if created {
                eprintln!("addonfs: created the API key file {} (mode 0600)", path.display());
            }
            keys
        }
    };
    let daemon = match (&config.mount, life.as_mut()) {
        (Some(m), Some(life)) => {
            let daemon = DaemonMount::detached(Some(Arc::clone(&store)), &m.path, m.cache_bytes)?;
            let opts = MountOptions { allow_other: m.allow_other, ..MountOptions::default() };
            if !life.attach(&daemon, &opts, || store.lock_fd())? {
                say(format_args!("addonfs: mounted the add-ons at {}", daemon.path().display()));
            }
            Some(Arc::new(daemon))
        }
        _ => None,
    };
    // The mount follows the store by the store's own notifications (see `crate::daemon`).
    let observed = daemon.as_ref().map_or_else(Observed::default, |d| Observed {
        mount: Some(d.path().to_path_buf()),
        fs: Some(d.fs_stats()),
        cache: Some(d.cache()),
    });
    let access = Access { keys, tls };
    let mountpoint = daemon.as_ref().map(|d| d.path().to_path_buf());
    let listening = |addr| {
        listening(addr);
        if let (Some(life), Some(path)) = (&life, &mountpoint) {
            life.serving(path);
        }
    };
    let result =
        serve_api(config, limits, Arc::clone(&store), access, observed, shutdown, listening);
    // The API has stopped (no request in flight): now the mount, then the store's lock.
    if let (Some(daemon), Some(life)) = (daemon, life) {
        life.stop(daemon, result.is_err());
    }
    drop(store);
    result
}

/// Who may use the API, and over what: its keys, and its TLS (none: plain HTTP).
struct Access {
    keys: ApiKeys,
    tls: Option<Arc<ServerTls>>,
}

/// Runs the HTTP API until `shutdown` completes.
fn serve_api(
    config: &Config,
    limits: ApiLimits,
    store: Arc<Store>,
    Access { keys, tls }: Access,
    observed: Observed,
    shutdown: impl Future<Output = ()> + Send + 'static,
    listening: impl FnOnce(SocketAddr),
) -> Result<(), DaemonError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Failed(format!("cannot start the runtime: {e}")))?;
    let result = runtime.block_on(async {
        // A predecessor retiring after a takeover releases the address a moment later.
        let patient = config.mount.as_ref().is_some_and(|m| m.restarts.kept());
        let listener = super::restart::bind(config.listen, patient).await?;
        let addr = listener.local_addr().map_err(|e| DaemonError::Failed(e.to_string()))?;
        // Where the admin commands reach this daemon (a wildcard address through loopback),
        // recorded before the address is printed.
        let reachable = match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
            }
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
            }
            _ => addr,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        // SIGHUP reloads the certificate; without TLS there is nothing to reload, but a
        // reflexive `systemctl reload` or `kill -HUP` must not end the daemon (the signal's
        // default action), so it is logged and ignored.
        let hangup = match &tls {
            Some(tls) => tls.reload_on_sighup(),
            None => ignore_sighup(),
        };
        hangup.map_err(|e| DaemonError::Failed(format!("cannot handle SIGHUP: {e}")))?;
        store.set_api_url(&format!("{scheme}://{reachable}"))?;
        match &config.store {
            None => say(format_args!(
                "addonfs: listening on {scheme}://{addr} (state {})",
                config.state_dir.display()
            )),
            Some(s) => {
                say(format_args!("addonfs: listening on {scheme}://{addr} (store {})", s.backend))
            }
        }
        listening(addr);
        let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown.await;
            let _ = stopping.send(());
        };
        let served = crate::api::serve_on(listener, store, keys, limits, observed, tls, shutdown);
        let drained = async {
            match stopped.await {
                Ok(()) => tokio::time::sleep(config.drain).await,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            result = served => result.map_err(|e| DaemonError::Failed(format!("server failed: {e}"))),
            () = drained => {
                tracing::warn!(
                    drain = ?config.drain,
                    "requests still in flight after the stop signal are abandoned"
                );
                Ok(())
            }
        }
    });
    // Abandoned requests' tasks are dropped; their blocking threads (an upload's indexing)
    // see their input end and stop on their own.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// A progress line on standard output, flushed (a supervisor or test waits for it); a closed
/// standard output does not stop a daemon.
pub(super) fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Logs and otherwise ignores every SIGHUP, from a task of the current tokio runtime (a daemon
/// without TLS has nothing to reload).
fn ignore_sighup() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: nothing to reload (no TLS certificate); ignored");
        }
    });
    Ok(())
}
