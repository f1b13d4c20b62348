//! The mount lifecycle: prepare the mount point (clearing a stale mount left by a crashed
//! daemon), mount an [`AddonFs`] read-only with several request threads, serve until told to
//! stop, and unmount cleanly (lazily if the mount is busy).
//!
//! The pieces are usable on their own by a long-running daemon: [`mount`] returns a
//! [`Mounted`] handle whose [`Mounted::invalidate_entry`] and [`Mounted::invalidate_inode`]
//! tell the kernel about changes of the namespace's root, and [`Mounted::unmount`] ends it.

pub mod inflight;
#[allow(unsafe_code)] // signals, umount2, statvfs
pub mod sys;

use std::fs::File;
use std::io;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{
    Config, INodeNo, MountOption, Notifier, Session, SessionACL, SessionUnmounter, Version,
};

pub use sys::SignalSet;

use crate::fs::AddonFs;

/// The file system type shown in `/proc/self/mountinfo` (`fuse.` + the subtype).
pub const FS_TYPE: &str = "fuse.addonfs";
/// The mount's source name (`fsname`).
pub const FS_NAME: &str = "addonfs";
/// How long a stop waits for the session to end after unmounting (or detaching a busy mount,
/// whose open files are served until closed or until this runs out).
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Tries of a plain unmount after a busy answer, [`BUSY_RETRY_PAUSE`] apart, before the mount
/// is detached lazily.
const BUSY_RETRIES: u32 = 10;
const BUSY_RETRY_PAUSE: Duration = Duration::from_millis(20);
/// The signals that stop a foreground mount.
pub const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Why mounting or unmounting failed. Every variant names the mount point.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mount point cannot be examined.
    #[error("{}: {source}", path.display())]
    Io {
        /// The mount point.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The mount point is not a directory.
    #[error("{}: the mount point is not a directory", path.display())]
    NotADirectory {
        /// The mount point.
        path: PathBuf,
    },
    /// Another addonfs is serving the mount point.
    #[error("{}: already mounted by a running addonfs (unmount it first)", path.display())]
    AlreadyMounted {
        /// The mount point.
        path: PathBuf,
    },
    /// A stale mount (its daemon is gone) could not be detached.
    #[error("{}: a stale mount (transport endpoint not connected) is in the way and cannot be detached: {source}", path.display())]
    Stale {
        /// The mount point.
        path: PathBuf,
        /// Why the detach failed.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the mount.
    #[error("{}: mount failed: {source} (FUSE needs /dev/fuse, and root or fusermount3)", path.display())]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The mount could not be removed, not even lazily.
    #[error("{}: unmount failed: {source}", path.display())]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// Signals could not be set up.
    #[error("cannot set up signal handling: {0}")]
    Signals(#[source] io::Error),
}

impl MountError {
    /// The mount point concerned (if any).
    pub fn path(&self) -> Option<&Path> {
        match self {
            MountError::Io { path, .. }
            | MountError::NotADirectory { path }
            | MountError::AlreadyMounted { path }
            | MountError::Stale { path, .. }
            | MountError::Mount { path, .. }
            | MountError::Unmount { path, .. } => Some(path),
            MountError::Signals(_) => None,
        }
    }
}

/// Options of the mount itself (the file system's own are in [`crate::fs::FsOptions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountOptions {
    /// Let every user use the mount (`allow_other`); permissions are checked by the kernel
    /// against the served modes (`default_permissions` is always on).
    pub allow_other: bool,
    /// Request threads (each with its own `/dev/fuse` descriptor).
    pub threads: usize,
}

impl MountOptions {
    /// The default number of request threads.
    pub const DEFAULT_THREADS: usize = 4;
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions { allow_other: false, threads: Self::DEFAULT_THREADS }
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// The mount's unique id (first field).
    pub id: u64,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Per-mount options (`ro,nosuid,nodev,...`).
    pub mount_options: String,
    /// File system type (`fuse.addonfs`).
    pub fs_type: String,
    /// Source (`addonfs`).
    pub source: String,
    /// Super-block options (`user_id=0,group_id=0,default_permissions,allow_other`).
    pub super_options: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(digits) = bytes.get(i + 1..i + 4) {
                if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                    let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                    if let Ok(byte) = u8::try_from(value) {
                        out.push(byte);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Parses `/proc/self/mountinfo` text (lines that do not parse are skipped).
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    use std::os::unix::ffi::OsStringExt;
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            if dash < 6 || fields.len() < dash + 4 {
                return None;
            }
            Some(MountInfo {
                id: fields[0].parse().ok()?,
                mount_point: PathBuf::from(std::ffi::OsString::from_vec(unescape(fields[4]))),
                mount_options: fields[5].to_string(),
                fs_type: fields[dash + 1].to_string(),
                source: String::from_utf8_lossy(&unescape(fields[dash + 2])).into_owned(),
                super_options: fields[dash + 3].to_string(),
            })
        })
        .collect()
}

/// The mounts currently in this process's namespace.
pub fn mounts() -> io::Result<Vec<MountInfo>> {
    Ok(parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// The topmost mount at `path` (absolute, as mountinfo shows it), if any.
pub fn mount_at(path: &Path) -> io::Result<Option<MountInfo>> {
    Ok(mounts()?.into_iter().rev().find(|m| m.mount_point == path))
}

/// `path` made absolute without following it (a stale mount point cannot be followed): its
/// parent is canonicalized, its last component kept.
pub fn absolute(path: &Path) -> io::Result<PathBuf> {
    if let Ok(canonical) = path.canonicalize() {
        return Ok(canonical);
    }
    let path =
        if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) };
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok(parent.canonicalize()?.join(name)),
        _ => Ok(path),
    }
}

/// `path` made absolute without touching it: its parent is canonicalized, its last component
/// kept. A mount being taken over must not be looked at before this process serves it: the
/// `stat` would wait for an answer from this very process.
pub fn absolute_untouched(path: &Path) -> io::Result<PathBuf> {
    let path =
        if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) };
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok(parent.canonicalize()?.join(name)),
        _ => Ok(path),
    }
}

/// Creates `mountpoint` (with its parents) if nothing is there, for commands that own their
/// mount point (`serve`'s `STATE_DIR/mnt`). Whatever is there is left for
/// [`prepare_mountpoint`] to judge: above all a stale mount left by a killed daemon, whose
/// `stat` fails with ENOTCONN, so that `create_dir_all` takes it for a file and fails with
/// EEXIST, and the daemon could never start again.
pub fn create_mountpoint(mountpoint: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(mountpoint) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir_all(mountpoint),
        _ => Ok(()),
    }
}

/// Makes `mountpoint` ready: a stale mount on it (its daemon died: "transport endpoint is
/// not connected") is detached lazily, with a log line; a live addonfs mount on it is an
/// error; it must be a directory. Returns its absolute path and its (uid, gid).
pub fn prepare_mountpoint(mountpoint: &Path) -> Result<(PathBuf, (u32, u32)), MountError> {
    let io_error = |source| MountError::Io { path: mountpoint.to_path_buf(), source };
    let path = absolute(mountpoint).map_err(io_error)?;
    let not_connected = |e: &io::Error| e.raw_os_error() == Some(libc::ENOTCONN);
    // `stat` may be answered from the kernel's cache even when the daemon is gone; `statvfs`
    // always reaches it, so a FUSE mount is probed with it too.
    let stale = match std::fs::metadata(&path) {
        Err(e) if not_connected(&e) => true,
        Err(source) => return Err(MountError::Io { path, source }),
        Ok(_) => {
            let fuse =
                mount_at(&path).ok().flatten().is_some_and(|m| m.fs_type.starts_with("fuse"));
            fuse && sys::statvfs(&path).is_err_and(|e| not_connected(&e))
        }
    };
    if stale {
        let what = mount_at(&path).ok().flatten().map(|m| m.fs_type).unwrap_or_default();
        tracing::warn!(
            mountpoint = %path.display(),
            fs_type = %what,
            "stale mount found (transport endpoint is not connected: its daemon died); detaching it"
        );
        sys::detach(&path).map_err(|source| MountError::Stale { path: path.clone(), source })?;
    }
    let meta =
        std::fs::metadata(&path).map_err(|source| MountError::Io { path: path.clone(), source })?;
    if let Ok(Some(info)) = mount_at(&path) {
        if info.fs_type == FS_TYPE || (info.fs_type.starts_with("fuse") && info.source == FS_NAME) {
            return Err(MountError::AlreadyMounted { path });
        }
    }
    if !meta.is_dir() {
        return Err(MountError::NotADirectory { path });
    }
    Ok((path, (meta.uid(), meta.gid())))
}

/// The `fuser` configuration for `opts`: read-only, `nosuid`, `nodev`, `noatime`,
/// `default_permissions`, several threads each with a cloned `/dev/fuse` descriptor.
pub fn config(opts: &MountOptions) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
        MountOption::FSName(FS_NAME.into()),
        // The kernel takes `subtype` as a mount option (mountinfo then shows `fuse.addonfs`);
        // fuser's `Subtype` only reaches fusermount.
        MountOption::CUSTOM(format!("subtype={FS_NAME}")),
    ];
    config.acl = if opts.allow_other { SessionACL::All } else { SessionACL::Owner };
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    config
}

/// Something the serving loop reacts to.
#[derive(Debug)]
pub enum Event {
    /// A stop signal arrived.
    Signal(libc::c_int),
    /// The session ended (unmounted from outside, or after our unmount).
    Ended(io::Result<()>),
}

/// How [`Mounted::unmount`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// Unmounted at once; the session ended.
    Clean,
    /// The mount was busy and was detached lazily; the session ended when its last open file
    /// was closed, within the grace period.
    Detached,
    /// Detached lazily, but files were still open when the grace period ran out.
    DetachedBusy,
    /// Somebody else unmounted it first.
    Gone,
}

/// How [`attach`] gets its FUSE connection.
#[derive(Debug)]
pub enum Attach {
    /// Mount anew; each request thread reads its own cloned `/dev/fuse` descriptor.
    Fresh,
    /// Mount anew for a holder to keep ([`crate::holder`]): every request thread reads the one
    /// descriptor (its open file) that the holder will also hold. A cloned descriptor is a
    /// connection end of its own: the kernel fails the requests a dead process had read from
    /// it (`ECONNABORTED`) when its last reference goes, whereas requests read from the held
    /// one stay queued, for the next process to have resent.
    Held,
    /// Take over a connection another process mounted and initialized (handed over by the
    /// holder): no mount, no `FUSE_INIT`; `version` is what that one negotiated.
    Adopt {
        /// The `/dev/fuse` descriptor.
        fd: OwnedFd,
        /// The protocol version the kernel reported in `FUSE_INIT`.
        version: Version,
    },
}

/// A mounted file system, served by background threads.
pub struct Mounted {
    path: PathBuf,
    notifier: Notifier,
    /// `None` for an adopted connection: fuser did not mount it, so [`Mounted::unmount`]
    /// calls `umount2` itself.
    unmounter: Option<SessionUnmounter>,
    /// A duplicate of the session's `/dev/fuse` descriptor (to hand over, and to ask for
    /// resends); the protocol version negotiated.
    device: Option<File>,
    version: Option<Version>,
    events: Sender<Event>,
    received: Receiver<Event>,
    session: Option<JoinHandle<()>>,
    ended: bool,
    stopped: bool,
}

/// Mounts `fs` on `mountpoint` (see [`prepare_mountpoint`]) and serves it from background
/// threads until [`Mounted::unmount`] (or an outside `umount`).
pub fn mount(fs: AddonFs, mountpoint: &Path, opts: &MountOptions) -> Result<Mounted, MountError> {
    attach(fs, mountpoint, opts, Attach::Fresh)
}

/// Serves `fs` at `mountpoint`, mounted anew or taken over as `how` says, from background
/// threads until [`Mounted::unmount`] (or an outside `umount`).
pub fn attach(
    fs: AddonFs,
    mountpoint: &Path,
    opts: &MountOptions,
    how: Attach,
) -> Result<Mounted, MountError> {
    let started = Instant::now();
    let channel = fs.kernel_channel();
    let mut config = config(opts);
    let adopted = matches!(how, Attach::Adopt { .. });
    let (path, mut session) = match how {
        Attach::Fresh | Attach::Held => {
            let (path, _) = prepare_mountpoint(mountpoint)?;
            config.clone_fd = matches!(how, Attach::Fresh);
            let session = Session::new(fs, &path, &config)
                .map_err(|source| MountError::Mount { path: path.clone(), source })?;
            (path, session)
        }
        Attach::Adopt { fd, version } => {
            // The mount is there and alive (its connection is this descriptor): not prepared,
            // which would take it for somebody else's.
            let path = absolute_untouched(mountpoint)
                .map_err(|source| MountError::Io { path: mountpoint.to_path_buf(), source })?;
            config.clone_fd = false;
            (path, Session::from_initialized_fd(fs, fd, config.acl, config, version))
        }
    };
    // A second descriptor of the session, for storing file contents in the page cache.
    match session.as_fd().try_clone_to_owned() {
        Ok(fd) => channel.connect(fd),
        Err(e) => tracing::warn!(error = %e, "no page-cache push (cannot duplicate /dev/fuse)"),
    }
    let device = session.as_fd().try_clone_to_owned().map(File::from).ok();
    if adopted {
        // Requests a dead predecessor had read wait in the kernel, some holding a directory's
        // lock that the first invalidation will want: have them resent before anything else.
        // (A live predecessor's are resent too; the kernel takes the first answer of each.)
        if let Some(device) = &device {
            if let Err(e) = recover(device) {
                tracing::warn!(error = %e, "the kernel cannot resend requests (FUSE_NOTIFY_RESEND needs Linux 6.9)");
            }
        }
    }
    let version = session.proto_version();
    let notifier = session.notifier();
    let unmounter = (!adopted).then(|| session.unmount_callable());
    let (events, received) = mpsc::channel();
    let done = events.clone();
    let thread = std::thread::Builder::new()
        .name("addonfs-session".into())
        .spawn(move || {
            let _ = done.send(Event::Ended(session.run()));
        })
        .map_err(|source| MountError::Mount { path: path.clone(), source })?;
    tracing::info!(
        mountpoint = %path.display(),
        threads = opts.threads,
        allow_other = opts.allow_other,
        adopted,
        ms = started.elapsed().as_secs_f64() * 1e3,
        "mounted"
    );
    Ok(Mounted {
        path,
        notifier,
        unmounter,
        device,
        version,
        events,
        received,
        session: Some(thread),
        ended: false,
        stopped: false,
    })
}

impl Mounted {
    /// The absolute mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A duplicate of the session's `/dev/fuse` descriptor and the protocol version the kernel
    /// negotiated: what a successor needs to take the connection over ([`Attach::Adopt`]).
    pub fn handover(&self) -> io::Result<(OwnedFd, Version)> {
        let device =
            self.device.as_ref().ok_or_else(|| io::Error::other("no /dev/fuse duplicate"))?;
        let version = self.version.ok_or_else(|| io::Error::other("FUSE_INIT never happened"))?;
        Ok((device.try_clone()?.into(), version))
    }

    /// Asks the kernel to queue again every request of this connection that was read but not
    /// answered (`FUSE_NOTIFY_RESEND`, Linux 6.9): those a killed predecessor had taken. Those
    /// this process is answering right now are queued again too; the kernel then refuses their
    /// first answer (`ENOENT`) and takes the second. Older kernels refuse the notification
    /// (`EINVAL`).
    pub fn resend(&self) -> io::Result<()> {
        let device =
            self.device.as_ref().ok_or_else(|| io::Error::other("no /dev/fuse duplicate"))?;
        recover(device)
    }

    /// A sender into this mount's event queue (for a signal thread, say).
    pub fn events(&self) -> Sender<Event> {
        self.events.clone()
    }

    /// Waits for the next event, at most `timeout` (`None`: forever).
    pub fn next_event(&self, timeout: Option<Duration>) -> Option<Event> {
        match timeout {
            None => self.received.recv().ok(),
            Some(t) => self.received.recv_timeout(t).ok(),
        }
    }

    /// Tells the kernel to forget its cached entry `name` in directory `parent` (after the
    /// namespace changed it). `ENOENT` (nothing cached) is not an error.
    pub fn invalidate_entry(&self, parent: u64, name: &[u8]) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(name);
        match self.notifier.inval_entry(INodeNo(parent), name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    }

    /// Tells the kernel to drop its cached attributes and pages (or listing) of `ino`.
    /// `ENOENT` (nothing cached) is not an error.
    pub fn invalidate_inode(&self, ino: u64) -> io::Result<()> {
        match self.notifier.inval_inode(INodeNo(ino), 0, 0) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    }

    fn wait_ended(&mut self, grace: Duration) -> bool {
        if self.ended {
            return true;
        }
        match self.received.recv_timeout(grace) {
            Ok(Event::Ended(result)) => {
                if let Err(e) = result {
                    tracing::warn!(mountpoint = %self.path.display(), error = %e, "the FUSE session ended with an error");
                }
                self.mark_ended();
                true
            }
            // A second stop signal: do not wait any longer.
            Ok(Event::Signal(_)) | Err(_) => false,
        }
    }

    /// Records that the session ended (the caller received [`Event::Ended`]).
    pub fn mark_ended(&mut self) {
        self.ended = true;
        if let Some(thread) = self.session.take() {
            let _ = thread.join();
        }
    }

    /// Unmounts; a busy mount is detached lazily (it leaves the namespace at once and its open
    /// files keep working until closed). Waits up to `grace` for the session to end.
    pub fn unmount(mut self, grace: Duration) -> Result<Unmounted, MountError> {
        self.stop(grace)
    }

    fn stop(&mut self, grace: Duration) -> Result<Unmounted, MountError> {
        if self.ended || self.stopped {
            return Ok(Unmounted::Gone);
        }
        self.stopped = true;
        let path = self.path.clone();
        // fuser unmounts what it mounted; an adopted connection is unmounted here.
        let mut unmounted = match self.unmounter.as_mut() {
            Some(unmounter) => unmounter.unmount(),
            None => sys::unmount(&path),
        };
        // A file closed just before may still count against the mount for a moment (its
        // release on its way through the kernel): a few short tries before calling it busy.
        for _ in 0..BUSY_RETRIES {
            if !matches!(&unmounted, Err(e) if e.raw_os_error() == Some(libc::EBUSY)) {
                break;
            }
            std::thread::sleep(BUSY_RETRY_PAUSE);
            // Not through fuser's unmounter again: it gave its mount up on the first try.
            unmounted = sys::unmount(&path);
        }
        let detached = match unmounted {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                tracing::warn!(mountpoint = %path.display(), "the mount is busy: detaching it lazily; open files are served until closed");
                match sys::detach(&path) {
                    Ok(()) => true,
                    Err(source) if source.raw_os_error() == Some(libc::EINVAL) => false,
                    Err(source) => return Err(MountError::Unmount { path, source }),
                }
            }
            // EINVAL: not a mount point any more (unmounted from outside meanwhile).
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => false,
            Err(source) => return Err(MountError::Unmount { path, source }),
        };
        let ended = self.wait_ended(grace);
        Ok(match (detached, ended) {
            (false, _) => Unmounted::Clean,
            (true, true) => Unmounted::Detached,
            (true, false) => Unmounted::DetachedBusy,
        })
    }

    /// Serves until a stop signal arrives (or the mount is removed from outside), then
    /// unmounts. `signals` must have been blocked before any thread was spawned (first thing
    /// in the command). A second signal during the grace period stops at once.
    pub fn serve_until_signal(mut self, signals: SignalSet) -> Result<(), MountError> {
        let events = self.events();
        std::thread::Builder::new()
            .name("addonfs-signals".into())
            .spawn(move || loop {
                match signals.wait() {
                    Ok(signal) => {
                        if events.send(Event::Signal(signal)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "waiting for signals failed");
                        return;
                    }
                }
            })
            .map_err(MountError::Signals)?;
        match self.next_event(None) {
            Some(Event::Signal(signal)) => {
                tracing::info!(signal = sys::signal_name(signal), mountpoint = %self.path.display(), "unmounting");
                let path = self.path.clone();
                match self.unmount(STOP_GRACE)? {
                    Unmounted::DetachedBusy => tracing::warn!(
                        mountpoint = %path.display(),
                        "files were still open after {}s; exiting (their readers get ENOTCONN)",
                        STOP_GRACE.as_secs()
                    ),
                    how => tracing::info!(mountpoint = %path.display(), result = ?how, "unmounted"),
                }
                Ok(())
            }
            Some(Event::Ended(result)) => {
                self.mark_ended();
                tracing::info!(mountpoint = %self.path.display(), "unmounted from outside");
                result.map_err(|source| MountError::Mount { path: self.path.clone(), source })
            }
            None => Ok(()),
        }
    }
}

/// Has the requests of dead predecessors resent, or, when the kernel cannot, answers those in
/// their journals with `EIO` ([`inflight`]) and returns why it could not resend.
fn recover(device: &File) -> io::Result<()> {
    match resend(device) {
        Ok(()) => Ok(()),
        Err(e) => {
            let failed = inflight::fail_orphans(device);
            tracing::warn!(failed, "requests of a dead predecessor answered with EIO");
            Err(e)
        }
    }
}

/// `FUSE_NOTIFY_RESEND`: a notification (`unique` 0) of code 7 with no payload. The test hook
/// `ADDONFS_TEST_NO_RESEND` makes it fail as on a kernel before 6.9 (`EINVAL`).
fn resend(device: &File) -> io::Result<()> {
    const FUSE_NOTIFY_RESEND: i32 = 7;
    if std::env::var_os("ADDONFS_TEST_NO_RESEND").is_some() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut message = [0u8; 16];
    message[0..4].copy_from_slice(&16u32.to_ne_bytes());
    message[4..8].copy_from_slice(&FUSE_NOTIFY_RESEND.to_ne_bytes());
    let written = (&*device).write(&message)?;
    if written != message.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short write to /dev/fuse"));
    }
    Ok(())
}

impl Drop for Mounted {
    /// A mount dropped without [`Mounted::unmount`] is unmounted (detached if busy), so it
    /// never outlives its handle.
    fn drop(&mut self) {
        if let Err(e) = self.stop(Duration::from_secs(1)) {
            tracing::warn!(error = %e, "unmount on drop failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes_and_optional_fields() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n\
                    50 36 0:45 / /tmp/m ro,nosuid,nodev,noatime - fuse.addonfs addonfs ro,user_id=0,group_id=0,default_permissions\n\
                    garbage line\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 2);
        assert_eq!((mounts[0].id, mounts[1].id), (36, 50));
        assert_eq!(mounts[0].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(mounts[0].fs_type, "ext3");
        assert_eq!(mounts[0].source, "/dev/root");
        assert_eq!(mounts[1].mount_point, PathBuf::from("/tmp/m"));
        assert_eq!(mounts[1].mount_options, "ro,nosuid,nodev,noatime");
        assert_eq!(mounts[1].fs_type, FS_TYPE);
        assert!(mounts[1].super_options.contains("default_permissions"));
    }

    #[test]
    fn unescape_keeps_lone_backslashes() {
        assert_eq!(unescape("a\\134b"), b"a\\b");
        assert_eq!(unescape("a\\9"), b"a\\9");
        assert_eq!(unescape("tail\\"), b"tail\\");
        assert_eq!(unescape("\\011x\\012"), b"\tx\n");
    }

    #[test]
    fn this_process_sees_its_root_mount() {
        let all = mounts().expect("mountinfo");
        assert!(all.iter().any(|m| m.mount_point == Path::new("/")));
    }

    #[test]
    fn a_missing_mountpoint_is_reported_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let err = prepare_mountpoint(&missing).expect_err("missing");
        assert!(matches!(err, MountError::Io { .. }), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let err = prepare_mountpoint(&file).expect_err("file");
        assert!(matches!(err, MountError::NotADirectory { .. }), "{err}");
        let (path, _) = prepare_mountpoint(dir.path()).expect("a directory is fine");
        assert!(path.is_absolute());
    }

    #[test]
    fn a_missing_mountpoint_is_created_and_anything_there_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("a/b/mnt");
        create_mountpoint(&missing).expect("created");
        assert!(missing.is_dir());
        create_mountpoint(&missing).expect("an existing directory is fine");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        create_mountpoint(&file).expect("left for prepare_mountpoint to refuse");
        assert!(matches!(prepare_mountpoint(&file), Err(MountError::NotADirectory { .. })));
    }

    #[test]
    fn config_is_read_only_and_multithreaded() {
        let c = config(&MountOptions { allow_other: true, threads: 3 });
        for option in [
            MountOption::RO,
            MountOption::NoSuid,
            MountOption::NoDev,
            MountOption::DefaultPermissions,
        ] {
            assert!(c.mount_options.contains(&option), "{option:?}");
        }
        assert_eq!(c.acl, SessionACL::All);
        assert_eq!(c.n_threads, Some(3));
        assert!(c.clone_fd);
        assert_eq!(config(&MountOptions::default()).acl, SessionACL::Owner);
    }
}
