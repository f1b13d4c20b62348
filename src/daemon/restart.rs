//! A daemon's mount across the daemon's own restarts (issue 15), the same for `serve` and
//! `node`: the session with the holder ([`crate::holder`]) from the start to the stop.
//!
//! At the start, [`MountLife::begin`] says hello to the holder of the state directory (a
//! node's is its cache directory), starting one if none runs, and starts the journal of
//! requests in flight ([`crate::mount::inflight`]). The state directory's lock comes from the
//! holder when it kept one ([`MountLife::lock`]). [`MountLife::attach`] then takes the kept
//! connection over, or mounts anew and hands the new connection (and the lock) to the holder
//! to keep; either way it tells the holder that this process serves, and from then on follows
//! its instructions (retire, resend). At the stop, [`MountLife::stop`] unmounts and lets the
//! holder go, or, with `keep_on_stop` (`--keep-mount`), leaves the mount to the holder for
//! the next process. Without a holder (`--no-holder`) the mount is simply mounted and
//! unmounted, and dies with the process.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::run::say;
use super::{DaemonError, DaemonMount, UNMOUNT_GRACE};
use crate::addon::{LockError, StateLock};
use crate::holder::client::Handover;
use crate::holder::systemd::FdStore;
use crate::mount::{Attach, MountOptions};

/// How long a process that took the mount over waits for its predecessor to free the
/// address it listens on.
const BIND_PATIENCE: Duration = Duration::from_secs(15);

/// Who keeps the mount's connection while no process serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keeper {
    /// An `addonfs holder` process of the state directory ([`crate::holder`]), started by the
    /// first serving process if none runs.
    #[default]
    Holder,
    /// systemd's file-descriptor store (`--fd-store`, [`crate::holder::systemd`]).
    FdStore,
    /// Nobody (`--no-holder`): the mount dies with the process.
    None,
}

/// How a daemon's mount lives through the daemon's restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restarts {
    /// Who keeps the mount's connection so that it survives this process: the next process of
    /// the same state directory takes it over.
    pub keeper: Keeper,
    /// At shutdown, leave the mount to the keeper rather than unmounting it
    /// (`--keep-mount`: a Kubernetes rolling update, a `systemctl restart`).
    pub keep_on_stop: bool,
}

impl Restarts {
    /// Whether the mount outlives this process (a predecessor may still be retiring).
    pub fn kept(&self) -> bool {
        self.keeper != Keeper::None
    }
}

/// Who this process's mount is kept by.
enum Session {
    Holder(Handover),
    FdStore(FdStore),
}

impl Session {
    /// What the keeper passed back.
    fn passed(&mut self) -> &mut crate::holder::Passed {
        match self {
            Session::Holder(h) => h.passed(),
            Session::FdStore(s) => s.passed(),
        }
    }
}

/// A daemon's session with the keeper of its mount's connection, or none (`--no-holder`).
pub struct MountLife {
    session: Option<Session>,
    keep_on_stop: bool,
    on_retire: Option<Box<dyn FnOnce() + Send>>,
}

fn holder_error(e: std::io::Error) -> DaemonError {
    DaemonError::Failed(format!("holder: {e}"))
}

impl MountLife {
    /// Begins the life of the mount at `mountpoint` for the state directory `dir`. `None`: a
    /// newer process has taken the mount over since the holder started this one, which should
    /// exit.
    pub fn begin(
        dir: &Path,
        mountpoint: &Path,
        restarts: Restarts,
    ) -> Result<Option<MountLife>, DaemonError> {
        if restarts.kept() {
            // The mount point is named by its absolute path, found through its parent.
            if let Some(parent) = mountpoint.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| DaemonError::io(parent, e))?;
            }
        }
        let session = match restarts.keeper {
            Keeper::Holder => {
                let handover = Handover::begin(dir, mountpoint).map_err(holder_error)?;
                if handover.superseded() {
                    say(format_args!(
                        "addonfs: another process took the mount over since this one was started"
                    ));
                    return Ok(None);
                }
                Some(Session::Holder(handover))
            }
            Keeper::FdStore => Some(Session::FdStore(FdStore::begin(mountpoint).map_err(|e| {
                DaemonError::Failed(format!("systemd's file-descriptor store: {e}"))
            })?)),
            Keeper::None => None,
        };
        if session.is_some() {
            // Requests in flight are journaled for a successor on a kernel that cannot resend
            // them.
            std::fs::create_dir_all(dir)
                .and_then(|()| crate::mount::inflight::start(dir))
                .map_err(|e| DaemonError::io(dir, e))?;
        }
        Ok(Some(MountLife { session, keep_on_stop: restarts.keep_on_stop, on_retire: None }))
    }

    /// Runs `f` when a successor retires this process (which then exits at once, without
    /// destructors). Set before [`MountLife::attach`].
    pub fn on_retire(&mut self, f: impl FnOnce() + Send + 'static) {
        self.on_retire = Some(Box::new(f));
    }

    /// The state directory's lock if the keeper kept it (shared with the keeper, which keeps
    /// it between processes), taken for `command`.
    pub fn handed_lock(
        &mut self,
        dir: &Path,
        command: &str,
    ) -> Result<Option<StateLock>, LockError> {
        let fd = self.session.as_mut().and_then(|s| s.passed().take_lock());
        fd.map(|fd| StateLock::adopt(dir, command, fd)).transpose()
    }

    /// The state directory's lock for `command`: the one the holder kept, else taken anew.
    pub fn lock(&mut self, dir: &Path, command: &str) -> Result<StateLock, LockError> {
        match self.handed_lock(dir, command)? {
            Some(lock) => Ok(lock),
            None => StateLock::acquire(dir, command),
        }
    }

    /// Attaches `daemon` ([`DaemonMount::attach`]): takes the kept connection over, or mounts
    /// anew (creating the mount point) and hands the new connection to the holder with
    /// `lock()`, a duplicate of the state directory's lock descriptor; then tells the holder
    /// this process serves. Returns whether the mount was taken over.
    pub fn attach(
        &mut self,
        daemon: &DaemonMount,
        opts: &MountOptions,
        lock: impl FnOnce() -> Option<std::io::Result<OwnedFd>>,
    ) -> Result<bool, DaemonError> {
        let how = self.session.as_mut().map_or(Attach::Fresh, |s| s.passed().attach());
        let took_over = matches!(how, Attach::Adopt { .. });
        // A mount to take over is not looked at: nobody would answer. Not `create_dir_all`:
        // after a crash a stale mount is there (see `create_mountpoint`).
        if !took_over {
            crate::mount::create_mountpoint(daemon.path())
                .map_err(|e| DaemonError::io(daemon.path(), e))?;
        }
        daemon.attach(opts, how)?;
        match &self.session {
            Some(Session::Holder(h)) => {
                if !took_over {
                    let (fuse, version) = daemon.handover().map_err(holder_error)?;
                    let lock = lock().transpose().map_err(holder_error)?;
                    h.keep(&fuse, version, lock.as_ref()).map_err(holder_error)?;
                }
                h.serving(daemon.resender(), self.on_retire.take()).map_err(holder_error)?;
            }
            Some(Session::FdStore(s)) => {
                let store_error = |e| DaemonError::Failed(format!("systemd's fd store: {e}"));
                // An adopted connection and lock are in the store already (systemd keeps what
                // it passes back); kept here too, for an upgrade in place.
                let (fuse, version) = daemon.handover().map_err(store_error)?;
                let lock = lock().transpose().map_err(store_error)?;
                if !took_over {
                    s.keep(&fuse, version, lock.as_ref()).map_err(store_error)?;
                }
                crate::holder::systemd::enable_upgrade(fuse, version, lock, self.on_retire.take())
                    .map_err(store_error)?;
            }
            None => {}
        }
        if took_over {
            say(format_args!("addonfs: took over the mount at {}", daemon.path().display()));
        }
        Ok(took_over)
    }

    /// Says this process serves, once its API (or a node's endpoints) listens: under systemd,
    /// `READY=1`. Not at [`MountLife::attach`]: a unit that says ready before its API answers
    /// sends whoever waits for it (`systemctl start`, units ordered after it) to a port that
    /// nothing listens on yet, and to a lock file that names no API.
    pub fn serving(&self, mountpoint: &Path) {
        if let Some(Session::FdStore(s)) = &self.session {
            if let Err(e) = s.ready(mountpoint) {
                // systemd then ends the start at its timeout, naming the unit.
                tracing::error!(error = %e, "cannot tell systemd this process serves");
            }
        }
    }

    /// Ends the mount's life in this process: leaves it to the holder (`keep_on_stop`, or a
    /// process that `failed`), or lets the holder go and unmounts (lazily if busy, after
    /// [`UNMOUNT_GRACE`]). A process that failed (fenced, its port taken) leaves the mount to
    /// the holder like one that crashed: another serving process (a newer one already
    /// serving, or the one the holder starts) answers it, instead of this one unmounting it
    /// for everyone.
    pub fn stop(self, daemon: Arc<DaemonMount>, failed: bool) {
        let Ok(daemon) = Arc::try_unwrap(daemon) else {
            tracing::warn!("the mount is still shared at shutdown; left to the kernel");
            return;
        };
        match &self.session {
            Some(_) if self.keep_on_stop || failed => daemon.leave(),
            Some(Session::Holder(h)) => {
                // The holder lets the connection go first: the unmount ends it anyway.
                h.bye();
                daemon.unmount(UNMOUNT_GRACE);
            }
            Some(Session::FdStore(s)) => {
                s.bye();
                daemon.unmount(UNMOUNT_GRACE);
            }
            None => daemon.unmount(UNMOUNT_GRACE),
        }
    }
}

/// Listens on `addr`; `patient`ly (a process that may have taken a mount over) waits up to
/// [`BIND_PATIENCE`] for a retiring predecessor to release it.
pub async fn bind(addr: SocketAddr, patient: bool) -> Result<tokio::net::TcpListener, DaemonError> {
    let deadline = std::time::Instant::now() + BIND_PATIENCE;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Err(e)
                if patient
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => {
                return other
                    .map_err(|e| DaemonError::Failed(format!("cannot listen on {addr}: {e}")))
            }
        }
    }
}
