//! Pushing file contents into the kernel's page cache ahead of a tree walker.
//!
//! A walker such as `tar -c`, `cp -r` or `rsync` lists a directory, then reads its files one
//! after the other; since listings follow the archive stream (see [`super::namespace`]), it
//! reads the archive front to back, and every file costs a `READ` round trip (46k of them for a
//! Python installation). Once reads are seen to go file after file through the stream
//! ([`WALK`] files in a row, each starting just after the previous one), a background thread
//! takes the files that follow in the stream and stores their bytes in the kernel's page cache
//! (`FUSE_NOTIFY_STORE`); with `FOPEN_KEEP_CACHE` the walker then finds them cached and its
//! reads never reach the daemon. The spans they lie in are inflated ahead by the read-ahead
//! pool meanwhile ([`super::prefetch`]: several at once, one per core), so inflating and
//! storing overlap.
//!
//! Only files the kernel knows can be stored (the entries of directories it has listed): the
//! first file of a directory not listed yet stops the push (after a few short waits, since the
//! walker may be taking in the listing right then) until the walker's next read or listing. The push stays within [`AHEAD`] bytes of stream past the walker, and files larger
//! than [`MAX_FILE`] are left to ordinary reads. Random readers (imports, single lookups)
//! never start it. What is stored is exactly what a `READ` would return; the kernel may drop
//! it under memory pressure like any clean page, and then simply asks.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::namespace::{self, Volume};
use super::prefetch::Prefetcher;
use crate::archive::EntryKind;
use crate::index::{Data, Index, Ino, ROOT_INO};

/// How many files read in a row, each starting just after the previous one, make a walk.
pub const WALK: u32 = 3;
/// How far (bytes of uncompressed stream) past the walker's position files are pushed.
pub const AHEAD: u64 = 8 << 20;
/// Larger files are not pushed (the walker reads them; the span read-ahead serves it).
pub const MAX_FILE: u64 = 1 << 20;
/// How far past the end of the previous file (tar headers, entries without data) the next
/// read of a walk may start.
const GAP: u64 = 64 << 10;
/// The largest piece stored at once (a multiple of the page size, so every piece but a file's
/// last fills whole pages and the kernel marks them up to date).
const PIECE: usize = 128 << 10;
/// How long (microseconds) the push waits, one after the other, for the kernel to learn of a
/// file it does not know yet, before it gives up until the walker's next read or listing.
const NOT_LISTED_WAITS: [u64; 4] = [25, 50, 100, 200];
/// `FUSE_NOTIFY_STORE` (`enum fuse_notify_code` in `linux/fuse.h`).
const FUSE_NOTIFY_STORE: i32 = 4;
/// `struct fuse_out_header` (16 bytes) + `struct fuse_notify_store_out` (24 bytes).
const STORE_HEADER: usize = 40;

/// The kernel end of a mounted session, for notifications: a duplicate of the session's
/// `/dev/fuse` descriptor, connected once mounted ([`crate::mount::mount`] does it).
#[derive(Debug, Default)]
pub struct KernelChannel(OnceLock<File>);

impl KernelChannel {
    /// Connects the channel to the session's `/dev/fuse` descriptor (once; later calls are
    /// ignored).
    pub fn connect(&self, fd: OwnedFd) {
        let _ = self.0.set(File::from(fd));
    }

    /// Whether [`KernelChannel::connect`] was called.
    pub fn is_connected(&self) -> bool {
        self.0.get().is_some()
    }

    /// Stores `data` as the bytes of FUSE inode `fuse_ino` from `offset` in the kernel's page
    /// cache. `NotFound` means the kernel does not know the inode (not looked up or listed, or
    /// forgotten).
    pub fn store(&self, fuse_ino: u64, offset: u64, data: &[u8]) -> io::Result<()> {
        let file = self.0.get().ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        let too_big = |_| io::Error::new(io::ErrorKind::InvalidInput, "store larger than 4 GiB");
        let size = u32::try_from(data.len()).map_err(too_big)?;
        let len = u32::try_from(STORE_HEADER + data.len()).map_err(too_big)?;
        let mut head = [0u8; STORE_HEADER];
        head[0..4].copy_from_slice(&len.to_ne_bytes());
        head[4..8].copy_from_slice(&FUSE_NOTIFY_STORE.to_ne_bytes());
        // head[8..16]: `unique` 0 marks a notification.
        head[16..24].copy_from_slice(&fuse_ino.to_ne_bytes());
        head[24..32].copy_from_slice(&offset.to_ne_bytes());
        head[32..36].copy_from_slice(&size.to_ne_bytes());
        // /dev/fuse takes a message in one write, whole or not at all.
        let written = (&*file).write_vectored(&[IoSlice::new(&head), IoSlice::new(data)])?;
        if written != len as usize {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write to /dev/fuse"));
        }
        Ok(())
    }
}

/// A volume's walk state, kept on the [`Volume`].
#[derive(Debug, Default)]
pub struct Walk(Mutex<WalkState>);

#[derive(Debug, Default)]
struct WalkState {
    /// Files read in a row through the stream (0 before any read).
    streak: u32,
    /// Stream offset of the first byte of the last file read from its start.
    last_start: Option<u64>,
    /// Stream offset just past that file's bytes.
    last_end: u64,
    /// How far the walker has got (its last read or listing).
    reached: u64,
    /// Files are pushed from the first one starting past this offset.
    from: u64,
    /// Files with their bytes in one piece, by stream offset (built when a walk first starts).
    order: Option<Arc<[Ino]>>,
    /// The next position in `order` to push.
    cursor: usize,
    /// Stream offset just past the last file pushed (or skipped).
    pushed_to: u64,
    /// Whether a job for this volume is queued.
    queued: bool,
    /// Set after an unexpected store error: the volume is not pushed anymore.
    failed: bool,
}

impl Walk {
    fn lock(&self) -> MutexGuard<'_, WalkState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl WalkState {
    fn walking(&self) -> bool {
        self.streak >= WALK && !self.failed
    }
}

/// Counters of a [`Pusher`].
#[derive(Debug, Default)]
pub struct PushStats {
    /// Files stored whole.
    pub files: AtomicU64,
    /// Bytes stored.
    pub bytes: AtomicU64,
}

/// Sends volumes with a walk in progress to the background thread.
pub struct Pusher {
    queue: SyncSender<Arc<Volume>>,
    channel: Arc<KernelChannel>,
    stats: Arc<PushStats>,
}

/// The stream offset of the bytes of `ino` and its size, for a regular file stored in one
/// piece with at least one byte.
fn contiguous(index: &Index, ino: Ino) -> Option<(u64, u64)> {
    let attr = index.attr(ino)?;
    match (attr.kind, index.data(ino)) {
        (EntryKind::File, Data::Contiguous(start)) if attr.size > 0 => Some((start, attr.size)),
        _ => None,
    }
}

impl Pusher {
    /// Starts the background thread (it ends when the pusher is dropped); it stores through
    /// `channel` once that is connected, and asks `prefetch` for the spans ahead of it. `None`
    /// if the thread cannot be spawned (then nothing is pushed).
    pub fn start(channel: Arc<KernelChannel>, prefetch: Option<Prefetcher>) -> Option<Pusher> {
        let (queue, jobs) = mpsc::sync_channel(16);
        let stats = Arc::new(PushStats::default());
        let (thread_channel, thread_stats) = (Arc::clone(&channel), Arc::clone(&stats));
        std::thread::Builder::new()
            .name("addonfs-push".into())
            .spawn(move || run(&jobs, &thread_channel, prefetch.as_ref(), &thread_stats))
            .map_err(|e| tracing::warn!(error = %e, "no page-cache push thread"))
            .ok()?;
        Some(Pusher { queue, channel, stats })
    }

    /// The counters.
    pub fn stats(&self) -> &PushStats {
        &self.stats
    }

    /// The counters, shared (for whoever reports them).
    pub fn shared_stats(&self) -> Arc<PushStats> {
        Arc::clone(&self.stats)
    }

    /// Notes a read of file `ino` of `volume` at `offset` (after it was answered).
    pub fn note_read(&self, volume: &Arc<Volume>, ino: Ino, offset: u64) {
        if !self.channel.is_connected() {
            return;
        }
        let Some((start, size)) = contiguous(volume.index(), ino) else { return };
        let mut st = volume.walk().lock();
        if offset == 0 {
            // Reads of a walk come slightly out of order (several request threads, the
            // kernel's asynchronous read-ahead): one just behind the walker keeps the walk.
            let was = st.streak;
            let within = st.last_start.is_some_and(|last| {
                start.saturating_add(AHEAD) > last
                    && start <= st.last_end.max(st.pushed_to).saturating_add(GAP)
            });
            match st.last_start {
                Some(last) if within => {
                    if start > last {
                        st.streak = st.streak.saturating_add(1);
                        st.last_start = Some(start);
                        st.last_end = start + size;
                    }
                }
                _ => {
                    st.streak = 1;
                    st.last_start = Some(start);
                    st.last_end = start + size;
                }
            }
            st.reached = st.reached.max(start);
            if was < WALK && st.streak == WALK {
                // A walk starts (or starts again elsewhere): push from here on.
                st.cursor = 0;
                st.from = start;
                st.pushed_to = start + size;
                st.reached = start;
            } else {
                st.from = st.from.max(start);
            }
        } else {
            st.reached = st.reached.max(start.saturating_add(offset));
        }
        if st.walking() {
            self.wake(volume, &mut st);
        }
    }

    /// Notes that directory `dir` of `volume` was listed from its start: during a walk, the
    /// walker has got to the directory's place in the stream.
    pub fn note_listing(&self, volume: &Arc<Volume>, dir: Ino) {
        if !self.channel.is_connected() {
            return;
        }
        if !volume.walk().lock().walking() {
            return;
        }
        let at = namespace::stream_position(volume.index(), dir);
        let mut st = volume.walk().lock();
        if st.walking() && at > st.reached && at <= st.reached.saturating_add(AHEAD) {
            st.reached = at;
            self.wake(volume, &mut st);
        }
    }

    fn wake(&self, volume: &Arc<Volume>, st: &mut WalkState) {
        if !st.queued && self.queue.try_send(Arc::clone(volume)).is_ok() {
            st.queued = true;
        }
    }
}

/// Files of `index` stored in one piece, by stream offset (those over [`MAX_FILE`] included:
/// the push steps over them).
fn stream_order(index: &Index) -> Arc<[Ino]> {
    let inodes = index.stats().inodes;
    let mut files: Vec<(u64, Ino)> = (ROOT_INO..ROOT_INO + inodes)
        .filter_map(|ino| contiguous(index, ino).map(|(start, _)| (start, ino)))
        .collect();
    files.sort_unstable();
    files.dedup_by_key(|(start, _)| *start);
    files.into_iter().map(|(_, ino)| ino).collect()
}

/// The background thread: pushes the files ahead of each walk it is woken for.
fn run(
    jobs: &Receiver<Arc<Volume>>,
    channel: &KernelChannel,
    prefetch: Option<&Prefetcher>,
    stats: &PushStats,
) {
    let mut buf = Vec::new();
    while let Ok(volume) = jobs.recv() {
        push_ahead(&volume, channel, prefetch, stats, &mut buf);
    }
}

/// Pushes the files of `volume` from its walk's cursor, until the window past the walker is
/// full, a file's inode is not known to the kernel yet, or the stream ends.
fn push_ahead(
    volume: &Arc<Volume>,
    channel: &KernelChannel,
    prefetch: Option<&Prefetcher>,
    stats: &PushStats,
    buf: &mut Vec<u8>,
) {
    let index = volume.index();
    let order = {
        let mut st = volume.walk().lock();
        st.queued = false;
        Arc::clone(st.order.get_or_insert_with(|| stream_order(index)))
    };
    let start_of = |ino: Ino| contiguous(index, ino).map_or(0, |(start, _)| start);
    let mut last_span = usize::MAX;
    let mut from = None;
    let mut waits = NOT_LISTED_WAITS.iter();
    loop {
        let (position, ino, start, size) = {
            let mut st = volume.walk().lock();
            if !st.walking() {
                return;
            }
            if from != Some(st.from) {
                from = Some(st.from);
                let first = order.partition_point(|&ino| start_of(ino) <= st.from);
                st.cursor = st.cursor.max(first);
            }
            let Some(&ino) = order.get(st.cursor) else { return };
            let Some((start, size)) = contiguous(index, ino) else { return };
            if start > st.reached.saturating_add(AHEAD) {
                return;
            }
            (st.cursor, ino, start, size)
        };
        if size <= MAX_FILE {
            if let (Some(prefetch), Some(span)) = (prefetch, index.point_for(start)) {
                if span != last_span {
                    prefetch.ahead(volume, span);
                    last_span = span;
                }
            }
            let fuse_ino = namespace::compose(volume.slot(), ino);
            match push_file(volume, channel, fuse_ino, ino, size, buf) {
                Ok(()) => {
                    waits = NOT_LISTED_WAITS.iter();
                    stats.files.fetch_add(1, Ordering::Relaxed);
                    stats.bytes.fetch_add(size, Ordering::Relaxed);
                }
                // Not known yet: the walker may be taking in its directory's listing right
                // now, so look again a few times before waiting for its next read or listing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => match waits.next() {
                    Some(&micros) => {
                        std::thread::sleep(Duration::from_micros(micros));
                        continue;
                    }
                    None => return,
                },
                Err(e) => {
                    tracing::debug!(ino = fuse_ino, error = %e, "page-cache push stopped");
                    volume.walk().lock().failed = true;
                    return;
                }
            }
        }
        let mut st = volume.walk().lock();
        if st.cursor == position {
            st.cursor = position + 1;
        }
        st.pushed_to = st.pushed_to.max(start + size);
    }
}

/// Stores file `ino` (FUSE inode `fuse_ino`, `size` bytes) in the page cache, a piece at a
/// time. Each piece is copied out of the chunk cache first: a store can wait for a page that a
/// `READ` of the same file holds locked, and that `READ` may need the chunk.
fn push_file(
    volume: &Volume,
    channel: &KernelChannel,
    fuse_ino: u64,
    ino: Ino,
    size: u64,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    let mut offset = 0u64;
    while offset < size {
        let len = usize::try_from(size - offset).map_or(PIECE, |left| left.min(PIECE));
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let n = volume
            .reader()
            .read(ino, offset, &mut buf[..len])
            .map_err(|e| io::Error::other(e.to_string()))?;
        if n == 0 {
            break;
        }
        channel.store(fuse_ino, offset, &buf[..n])?;
        offset += n as u64;
    }
    Ok(())
}
