//! The read-only FUSE file system (`fuser`) over a [`Namespace`] of indexed archives.
//!
//! Content is immutable, so everything the kernel may cache is cached for long: entries and
//! attributes (long TTLs, negative entries included), file pages (`FOPEN_KEEP_CACHE`),
//! directory listings (`FOPEN_CACHE_DIR`) and symlink targets (`FUSE_CACHE_SYMLINKS`). By
//! default the first `open`/`opendir` is declined, which the kernel takes as "zero-message
//! opens" with exactly those flags (see [`FsOptions::explicit_open`]). `readdirplus` (for every
//! call of a listing) answers a listing and the lookups that follow it in one round trip;
//! listings follow the archive stream (see [`namespace`]) and a forward reader gets the next
//! gzip spans inflated ahead of it, several at once ([`prefetch`]). Requests run on several
//! threads (see [`crate::mount`]), and the handler keeps no per-file state: reads go through
//! each volume's [`crate::reader::ArchiveReader`] and the shared, byte-bounded chunk cache,
//! replying straight from the cached span (or a per-thread buffer when a read crosses spans), so
//! memory stays flat however much is read.
//!
//! Every operation that would change something answers `EROFS`.

pub mod namespace;
pub mod prefetch;
pub mod push;
pub mod stats;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags,
    RenameFlags, ReplyAttr, ReplyBmap, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLock, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

pub use namespace::{Layout, Namespace, Node};

use crate::archive::EntryKind;
use crate::index::{Attr, Data};

/// How long the kernel may cache entries and attributes of archive content (immutable).
pub const CONTENT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long the kernel may cache attributes of synthesized nodes (the root of the directories
/// layout and synthesized files change when the daemon changes them).
pub const SYNTH_TTL: Duration = Duration::from_secs(1);
/// The block size reported by `stat` and `statfs`.
pub const BLOCK_SIZE: u32 = 4096;
/// The longest name the file system reports it supports.
pub const NAME_MAX: u32 = 255;

/// Options of the file system (what the kernel sees; mount options are in
/// [`crate::mount::MountOptions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsOptions {
    /// Report every inode as owned by this user (else the archive's owners).
    pub uid: Option<u32>,
    /// Report every inode as owned by this group (else the archive's groups).
    pub gid: Option<u32>,
    /// Answer `open` and `opendir` (with `FOPEN_KEEP_CACHE`, and `FOPEN_CACHE_DIR` for
    /// directories; synthesized nodes without them). When false (the default), the first
    /// `open` and `opendir` are declined with `ENOSYS`, which the kernel takes as "zero-message
    /// opens" (`FUSE_NO_OPEN_SUPPORT`): it stops sending `open`/`release` (and the directory
    /// pair) altogether and applies exactly `FOPEN_KEEP_CACHE` (and `FOPEN_CACHE_DIR`) itself:
    /// the same caching for two round trips less per file. Synthesized nodes are then cached
    /// too, so whoever changes them must invalidate them (see [`crate::mount::Mounted`]).
    pub explicit_open: bool,
}

/// The FUSE file system: a thin adapter from kernel requests to a shared [`Namespace`].
pub struct AddonFs {
    ns: Arc<Namespace>,
    opts: FsOptions,
    prefetch: Option<prefetch::Prefetcher>,
    channel: Arc<push::KernelChannel>,
    pusher: Option<push::Pusher>,
    stats: Arc<stats::FsStats>,
}

thread_local! {
    /// Each request thread's read buffer (bounded by the largest read the kernel sends).
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The `fuser` file type of an entry kind.
pub fn file_type(kind: EntryKind) -> FileType {
    match kind {
        EntryKind::File | EntryKind::Hardlink => FileType::RegularFile,
        EntryKind::Dir => FileType::Directory,
        EntryKind::Symlink => FileType::Symlink,
        EntryKind::CharDev => FileType::CharDevice,
        EntryKind::BlockDev => FileType::BlockDevice,
        EntryKind::Fifo => FileType::NamedPipe,
    }
}

/// The permission bits served for an entry: the archive's, except that a FIFO loses its write
/// bits. A FIFO's data never touches the file system, so a read-only mount does not stop two
/// users from passing data through a world-writable one; without write bits only root
/// (`CAP_DAC_OVERRIDE`) can open it for writing.
pub fn served_mode(kind: EntryKind, mode: u32) -> u16 {
    let mode = (mode & 0o7777) as u16;
    match kind {
        EntryKind::Fifo => mode & !0o222,
        _ => mode,
    }
}

/// `SystemTime` of seconds + nanoseconds since the epoch (negative seconds allowed).
pub fn system_time(secs: i64, nsec: u32) -> SystemTime {
    let nsec = Duration::from_nanos(u64::from(nsec.min(999_999_999)));
    let base = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    base.and_then(|t| t.checked_add(nsec)).unwrap_or(UNIX_EPOCH)
}

/// Linux's encoding of a device number in `st_rdev` (`new_encode_dev`).
pub fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// A test hook: the environment variable `ADDONFS_TEST_DELAY_MS` (read once) makes every
/// `lookup` and `read` sleep that long first, so that a test can kill the daemon while a request
/// is in flight (tests/restart.rs). Unset, it costs one load of an initialized `OnceLock`.
fn test_delay() {
    static DELAY: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    let delay = DELAY.get_or_init(|| {
        let ms = std::env::var("ADDONFS_TEST_DELAY_MS").ok()?.parse().ok()?;
        Some(Duration::from_millis(ms))
    });
    if let Some(delay) = delay {
        std::thread::sleep(*delay);
    }
}

/// The errno of a namespace "not a directory" answer.
fn not_dir() -> Errno {
    Errno::ENOTDIR
}

impl AddonFs {
    /// A file system serving `ns`.
    pub fn new(ns: Arc<Namespace>, opts: FsOptions) -> AddonFs {
        let prefetch = prefetch::Prefetcher::start();
        let channel = Arc::new(push::KernelChannel::default());
        let pusher = push::Pusher::start(Arc::clone(&channel), prefetch.clone());
        let stats = Arc::new(stats::FsStats::new(pusher.as_ref().map(push::Pusher::shared_stats)));
        AddonFs { ns, opts, prefetch, channel, pusher, stats }
    }

    /// The request counters (shared: they keep counting once the file system is mounted).
    pub fn stats(&self) -> Arc<stats::FsStats> {
        Arc::clone(&self.stats)
    }

    /// The kernel channel that pushes file contents into the page cache ahead of tree walkers
    /// ([`push`]); [`crate::mount::mount`] connects it to the session.
    pub fn kernel_channel(&self) -> Arc<push::KernelChannel> {
        Arc::clone(&self.channel)
    }

    /// The namespace served (to change the root while mounted).
    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.ns
    }

    /// The `stat` view of `node`, or `None` if it vanished.
    pub fn file_attr(&self, node: &Node) -> Option<FileAttr> {
        let attr = self.ns.attr(node)?;
        let bytes = match node {
            Node::Entry(volume, ino) if attr.kind == EntryKind::File => {
                match volume.index().data(*ino) {
                    Data::Sparse(runs) => runs.iter().map(|r| r.len).sum(),
                    _ => attr.size,
                }
            }
            _ => attr.size,
        };
        Some(self.to_file_attr(&attr, bytes))
    }

    /// Converts index attributes (with the FUSE inode number in `attr.ino`); `stored` is how
    /// many bytes are really stored (sparse files store fewer than their size).
    pub fn to_file_attr(&self, attr: &Attr, stored: u64) -> FileAttr {
        let time = system_time(attr.mtime, attr.mtime_nsec);
        let rdev = match attr.kind {
            EntryKind::CharDev | EntryKind::BlockDev => encode_dev(attr.rdev.0, attr.rdev.1),
            _ => 0,
        };
        FileAttr {
            ino: INodeNo(attr.ino),
            size: attr.size,
            blocks: stored.div_ceil(512),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind: file_type(attr.kind),
            perm: served_mode(attr.kind, attr.mode),
            nlink: attr.nlink.max(1),
            uid: self.opts.uid.unwrap_or(attr.uid),
            gid: self.opts.gid.unwrap_or(attr.gid),
            rdev,
            blksize: BLOCK_SIZE,
            flags: 0,
        }
    }

    fn ttl(&self, node: &Node) -> Duration {
        match node {
            Node::Root | Node::File(_) => SYNTH_TTL,
            Node::Entry(..) | Node::Merged(_) => CONTENT_TTL,
        }
    }

    fn node(&self, ino: INodeNo) -> Result<Node, Errno> {
        self.ns.resolve(ino.0).ok_or(Errno::ENOENT)
    }

    /// A negative entry (inode 0): the kernel caches "no such name" for `ttl`.
    fn negative(&self, ttl: Duration, reply: ReplyEntry) {
        let attr = FileAttr {
            ino: INodeNo(0),
            size: 0,
            blocks: 0,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: FileType::RegularFile,
            perm: 0,
            nlink: 0,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: BLOCK_SIZE,
            flags: 0,
        };
        reply.entry(&ttl, &attr, Generation(0));
    }

    /// Lists directory `ino` from `offset`: offsets 1 and 2 are `.` and `..`, then entry `i`
    /// (0-based, sorted by name) has offset `i + 3`. `add` returns `true` when the reply is full.
    fn list_from(
        &self,
        ino: INodeNo,
        offset: u64,
        mut add: impl FnMut(u64, u64, &Node, EntryKind, &[u8]) -> bool,
    ) -> Result<(), Errno> {
        let dir = self.node(ino)?;
        if self.ns.kind_of(&dir) != Some(EntryKind::Dir) {
            return Err(not_dir());
        }
        let mut next = offset;
        if next == 0 {
            if add(ino.0, 1, &dir, EntryKind::Dir, b".") {
                return Ok(());
            }
            next = 1;
        }
        if next == 1 {
            let parent_ino = self.ns.parent_of(&dir);
            let parent = self.ns.resolve(parent_ino).unwrap_or_else(|| dir.clone());
            if add(parent_ino, 2, &parent, EntryKind::Dir, b"..") {
                return Ok(());
            }
            next = 2;
        }
        let skip = usize::try_from(next - 2).unwrap_or(usize::MAX);
        let mut position = next;
        self.ns
            .list(&dir, skip, |listed| {
                position += 1;
                let child = match self.ns.resolve(listed.ino) {
                    Some(child) => child,
                    None => return true,
                };
                !add(listed.ino, position, &child, listed.kind, &listed.name)
            })
            .map_err(|()| not_dir())
    }

    /// The child `name` of directory `parent`, resolved (merged directories get registered).
    fn child(&self, parent: &Node, name: &[u8]) -> Result<Option<Node>, Errno> {
        self.ns.lookup(parent, name).map_err(|()| not_dir())
    }
}

/// The data of an extended-attribute reply: `size == 0` asks for the length only; a value
/// longer than `size` is `ERANGE`.
fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        match u32::try_from(data.len()) {
            Ok(len) => reply.size(len),
            Err(_) => reply.error(Errno::E2BIG),
        }
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

/// Whether `uid`/`gid` may access a node of `attr` for `mask` (R/X; W is refused earlier).
/// Supplementary groups are not known here; with `default_permissions` (always set by
/// [`crate::mount`]) the kernel checks permissions itself and never asks.
fn may_access(attr: &FileAttr, uid: u32, gid: u32, mask: AccessFlags) -> bool {
    let want = (mask & (AccessFlags::R_OK | AccessFlags::X_OK)).bits() as u16;
    if uid == 0 {
        let any_exec = attr.perm & 0o111 != 0 || attr.kind == FileType::Directory;
        return want & 1 == 0 || any_exec;
    }
    let class = if attr.uid == uid {
        (attr.perm >> 6) & 7
    } else if attr.gid == gid {
        (attr.perm >> 3) & 7
    } else {
        attr.perm & 7
    };
    class & want == want
}

#[allow(clippy::too_many_arguments)]
impl Filesystem for AddonFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Readdirplus for every call of a listing: with FUSE_READDIRPLUS_AUTO the kernel asks
        // for plain entries after a listing's first call (for every directory: the last call is
        // the empty one that says "end"), and then sends a LOOKUP for each entry a walker
        // stats or enters (1.6k more requests in a `find` of 46k files, 6.4k in `tar -c`).
        let wanted = [
            ("FUSE_DO_READDIRPLUS", InitFlags::FUSE_DO_READDIRPLUS),
            ("FUSE_CACHE_SYMLINKS", InitFlags::FUSE_CACHE_SYMLINKS),
            ("FUSE_PARALLEL_DIROPS", InitFlags::FUSE_PARALLEL_DIROPS),
            ("FUSE_ASYNC_READ", InitFlags::FUSE_ASYNC_READ),
        ];
        for (name, flag) in wanted {
            if config.add_capabilities(flag).is_err() {
                tracing::info!(capability = name, "the kernel does not offer this FUSE capability");
            }
        }
        let _ = config.set_max_background(64);
        tracing::debug!(abi = %config.kernel_abi(), "FUSE session initialized");
        Ok(())
    }

    fn destroy(&mut self) {
        let reads = self.stats.archive_reads();
        if reads > 0 {
            let max_in_flight = self.stats.max_reads_in_flight();
            tracing::info!(reads, max_in_flight, "archive reads served");
        }
        if let Some(pusher) = &self.pusher {
            let stats = pusher.stats();
            let files = stats.files.load(std::sync::atomic::Ordering::Relaxed);
            if files > 0 {
                let bytes = stats.bytes.load(std::sync::atomic::Ordering::Relaxed);
                tracing::info!(files, bytes, "pushed into the page cache ahead of tree walkers");
            }
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _timer = self.stats.time(stats::Op::Lookup);
        // Journaled for a successor on a kernel without FUSE_NOTIFY_RESEND.
        let _inflight = crate::mount::inflight::enter(req.unique().0);
        test_delay();
        let dir = match self.node(parent) {
            Ok(dir) => dir,
            Err(e) => return reply.error(e),
        };
        match self.child(&dir, name.as_bytes()) {
            Err(e) => reply.error(e),
            Ok(Some(child)) => match self.file_attr(&child) {
                Some(attr) => reply.entry(&self.ttl(&child), &attr, Generation(0)),
                None => reply.error(Errno::ENOENT),
            },
            // Archive directories never change: cache the miss too. The synthesized root can
            // gain entries, so its misses are not cached.
            Ok(None) => match dir {
                Node::Root => reply.error(Errno::ENOENT),
                _ => self.negative(CONTENT_TTL, reply),
            },
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _timer = self.stats.time(stats::Op::Getattr);
        // Journaled for a successor on a kernel without FUSE_NOTIFY_RESEND.
        let _inflight = crate::mount::inflight::enter(req.unique().0);
        match self.node(ino) {
            Ok(node) => match self.file_attr(&node) {
                Some(attr) => reply.attr(&self.ttl(&node), &attr),
                None => reply.error(Errno::ENOENT),
            },
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let _timer = self.stats.time(stats::Op::Readlink);
        // Journaled for a successor on a kernel without FUSE_NOTIFY_RESEND.
        let _inflight = crate::mount::inflight::enter(req.unique().0);
        match self.node(ino) {
            Ok(Node::Entry(volume, local)) => match volume.index().symlink_target(local) {
                Some(target) => reply.data(target),
                None => reply.error(Errno::EINVAL),
            },
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _timer = self.stats.time(stats::Op::Open);
        // Journaled for a successor on a kernel without FUSE_NOTIFY_RESEND.
        let _inflight = crate::mount::inflight::enter(req.unique().0);
        if !self.opts.explicit_open {
            tracing::debug!("declining open: zero-message opens with FOPEN_KEEP_CACHE");
            return reply.error(Errno::ENOSYS);
        }
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(Errno::EROFS);
        }
        match self.node(ino) {
            Ok(node @ (Node::Entry(..) | Node::File(_))) => match self.ns.kind_of(&node) {
                Some(EntryKind::Dir) => reply.error(Errno::EISDIR),
                // Synthesized files change: their pages are dropped at each open.
                Some(_) if matches!(node, Node::File(_)) => {
                    reply.opened(FileHandle(0), FopenFlags::empty())
                }
                Some(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
                None => reply.error(Errno::ENOENT),
            },
            Ok(_) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _timer = self.stats.time(stats::Op::Read);
        // Journaled for a successor on a kernel without FUSE_NOTIFY_RESEND.
        let _inflight = crate::mount::inflight::enter(req.unique().0);
        test_delay();
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        match node {
            Node::File(file) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(file.bytes.len());
                let end = start.saturating_add(size as usize).min(file.bytes.len());
                reply.data(&file.bytes[start..end]);
                self.stats.bytes_served.fetch_add((end - start) as u64, Ordering::Relaxed);
            }
            Node::Entry(volume, local) => READ_BUF.with(|buf| {
                let _counted = self.stats.read_started();
                let mut buf = buf.borrow_mut();
                // The reply is written from the chunk cache itself when it can be.
                let mut reply = Some(reply);
                let sent =
                    volume.reader().read_with(local, offset, size as usize, &mut buf, |data| {
                        if let Some(reply) = reply.take() {
                            reply.data(data);
                        }
                        data.len()
                    });
                match sent {
                    Ok(done) => {
                        self.stats.bytes_served.fetch_add(done as u64, Ordering::Relaxed);
                        if let Some(prefetch) = &self.prefetch {
                            prefetch.note(&volume, local, offset, done);
                        }
                        if let Some(pusher) = &self.pusher {
                            pusher.note_read(&volume, local, offset);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(ino = ino.0, offset, size, error = %e, "read failed");
                        if let Some(reply) = reply.take() {
                            reply.error(Errno::from_i32(e.errno()));
                        }
                    }
                }
            }),
            Node::Root | Node::Merged(_) => reply.error(Errno::EISDIR),
        }
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _timer = self.stats.time(stats::Op::Open);
        // Journaled for a successor on a kernel without FUSE_NOTIFY_RESEND.
        let _inflight = crate::mount::inflight::enter(req.unique().0);
        if !self.opts.explicit_open {
            tracing::debug!("declining opendir: zero-message opens with FOPEN_CACHE_DIR");
            return reply.error(Errno::ENOSYS);
        }
        match self.node(ino) {
            Ok(node) => match self.ns.kind_of(&node) {
                // The synthesized root changes while mounted: its listing is not cached.
                Some(EntryKind::Dir) if matches!(node, Node::Root) => {
                    reply.opened(FileHandle(0), FopenFlags::empty())
                }
                Some(EntryKind::Dir) => reply.opened(
                    FileHandle(0),
                    FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
                ),
                Some(_) => reply.error(Errno::ENOTDIR),
                None => reply.error(Errno::ENOENT),
            },
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _timer = self.stats.time(stats::Op::Readdir);
        // Journaled for a successor on a kernel without FUSE_NOTIFY_RESEND.
        let _inflight = crate::mount::inflight::enter(req.unique().0);
        let listed = self.list_from(ino, offset, |child_ino, next, _node, kind, name| {
            reply.add(INodeNo(child_ino), next, file_type(kind), OsStr::from_bytes(name))
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _timer = self.stats.time(stats::Op::Readdir);
        // Journaled for a successor on a kernel without FUSE_NOTIFY_RESEND.
        let _inflight = crate::mount::inflight::enter(req.unique().0);
        let dir = match self.node(ino) {
            Ok(dir) => dir,
            Err(e) => return reply.error(e),
        };
        if let (0, Some(pusher), Node::Entry(volume, local)) = (offset, &self.pusher, &dir) {
            pusher.note_listing(volume, *local);
        }
        let listed = self.list_from(ino, offset, |child_ino, next, node, _kind, name| {
            // A merged child directory is registered (and gets its merged attributes) through
            // a lookup, so later requests for its inode find it.
            let node = match (&dir, node) {
                (Node::Merged(_), Node::Entry(_, _)) if name != b"." && name != b".." => {
                    match self.ns.lookup(&dir, name) {
                        Ok(Some(node)) => node,
                        _ => node.clone(),
                    }
                }
                _ => node.clone(),
            };
            let Some(mut attr) = self.file_attr(&node) else { return false };
            attr.ino = INodeNo(child_ino);
            reply.add(
                INodeNo(child_ino),
                next,
                OsStr::from_bytes(name),
                &self.ttl(&node),
                &attr,
                Generation(0),
            )
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _timer = self.stats.time(stats::Op::Statfs);
        // Journaled for a successor on a kernel without FUSE_NOTIFY_RESEND.
        let _inflight = crate::mount::inflight::enter(req.unique().0);
        let (bytes, inodes) = self.ns.totals();
        let blocks = bytes.div_ceil(u64::from(BLOCK_SIZE));
        reply.statfs(blocks, 0, 0, inodes, 0, BLOCK_SIZE, NAME_MAX, BLOCK_SIZE);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _timer = self.stats.time(stats::Op::Xattr);
        // Journaled for a successor on a kernel without FUSE_NOTIFY_RESEND.
        let _inflight = crate::mount::inflight::enter(req.unique().0);
        match self.node(ino) {
            Ok(Node::Entry(volume, local)) => {
                let xattrs = volume.index().xattrs(local);
                match xattrs.iter().find(|(k, _)| *k == name.as_bytes()) {
                    Some((_, value)) => reply_xattr(reply, size, value),
                    None => reply.error(Errno::NO_XATTR),
                }
            }
            Ok(_) => reply.error(Errno::NO_XATTR),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _timer = self.stats.time(stats::Op::Xattr);
        // Journaled for a successor on a kernel without FUSE_NOTIFY_RESEND.
        let _inflight = crate::mount::inflight::enter(req.unique().0);
        match self.node(ino) {
            Ok(Node::Entry(volume, local)) => {
                let mut names = Vec::new();
                for (name, _) in volume.index().xattrs(local) {
                    names.extend_from_slice(name);
                    names.push(0);
                }
                reply_xattr(reply, size, &names);
            }
            Ok(_) => reply_xattr(reply, size, &[]),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let _timer = self.stats.time(stats::Op::Access);
        // Journaled for a successor on a kernel without FUSE_NOTIFY_RESEND.
        let _inflight = crate::mount::inflight::enter(req.unique().0);
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        if mask.contains(AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        match self.file_attr(&node) {
            Some(attr) if may_access(&attr, req.uid(), req.gid(), mask) => reply.ok(),
            Some(_) => reply.error(Errno::EACCES),
            None => reply.error(Errno::ENOENT),
        }
    }

    // Not supported, without the warning fuser's defaults log: the kernel then stops asking
    // (flush, fsync, lseek), uses local locks (getlk, setlk), or fails the call (ioctl, bmap).

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: ReplyLseek,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn getlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn setlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        _sleep: bool,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn bmap(&self, _req: &Request, _ino: INodeNo, _blocksize: u32, _idx: u64, reply: ReplyBmap) {
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    // Everything below would change the tree: a read-only file system refuses it.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }
}
