//! The range cache, fetcher and lazy source against a directory store, without an index: an
//! object cut into fixed chunks with their digests, read through [`LazyFile`] and compared
//! with the object's bytes.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::addon::backend::open_local;

const CHUNK: u64 = 1000;

fn object(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn table(bytes: &[u8]) -> Vec<ChunkSpec> {
    bytes
        .chunks(CHUNK as usize)
        .enumerate()
        .map(|(i, c)| ChunkSpec {
            offset: i as u64 * CHUNK,
            len: c.len() as u64,
            sha256: sha256(c),
        })
        .collect()
}

struct Rig {
    store: tempfile::TempDir,
    cache: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    stats: Arc<LazyStats>,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            store: tempfile::tempdir().unwrap(),
            cache: tempfile::tempdir().unwrap(),
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
            stats: Arc::default(),
        }
    }

    fn put(&self, key: &str, bytes: &[u8]) {
        let path = self.store.path().join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    fn ranges(&self, limit: u64) -> Arc<RangeCache> {
        Arc::new(
            RangeCache::open(
                &self.cache.path().join("lazy"),
                limit,
                Box::new(|| 0),
                Arc::clone(&self.stats),
            )
            .unwrap(),
        )
    }

    fn file(
        &self,
        ranges: &Arc<RangeCache>,
        key: &str,
        bytes: &[u8],
        policy: FetchPolicy,
    ) -> LazyFile {
        let dir = Rig::add_on_dir(ranges, bytes.len() as u64);
        let file = ranges.open_file(&dir, "archive", bytes.len() as u64, table(bytes)).unwrap();
        let backend = open_local(self.store.path()).unwrap();
        LazyFile::new(
            key.to_string(),
            file,
            Arc::clone(ranges),
            Fetcher::new(backend, Arc::clone(&self.stats)),
            self.runtime.handle().clone(),
            policy,
            Arc::default(),
        )
    }

    /// The directory of the add-on `ab` of an archive of `size` bytes, its head in place.
    fn add_on_dir(ranges: &RangeCache, size: u64) -> std::path::PathBuf {
        let dir = ranges.dir("ab");
        let meta = ranges::Meta {
            identifier: "custom-addon-a".into(),
            size,
            sha256: "ab".into(),
            index_size: 10,
            index_sha256: "cd".into(),
            head_size: 4,
            head_sha256: crate::daemon::cache::hex(&sha256(b"head")),
        };
        ranges.put_head(&dir, &meta, b"head").unwrap();
        dir
    }

    fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::Relaxed)
    }
}

fn policy(min: u64, timeout_ms: u64) -> FetchPolicy {
    FetchPolicy {
        min_request: min,
        read_ahead: min * super::source::MAX_REQUEST_FACTOR,
        timeout: Duration::from_millis(timeout_ms),
    }
}

fn read(file: &LazyFile, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

#[test]
fn reads_equal_the_object_and_neighbours_come_in_one_request() {
    let rig = Rig::new();
    let bytes = object(50_500, 1);
    rig.put("o", &bytes);
    let ranges = rig.ranges(1 << 30);
    let file = rig.file(&ranges, "o", &bytes, policy(4 * CHUNK, 5_000));
    // One byte: one request of the minimum size (4 chunks), not the whole object.
    assert_eq!(read(&file, 10, 1).unwrap(), &bytes[10..11]);
    assert_eq!(rig.requests(), 1);
    assert_eq!(rig.stats.request_bytes.load(Ordering::Relaxed), 4 * CHUNK);
    // Inside what came: no request.
    assert_eq!(read(&file, 3_000, 900).unwrap(), &bytes[3_000..3_900]);
    assert_eq!(rig.requests(), 1);
    // Across the end of what came: one more.
    assert_eq!(read(&file, 3_500, 2_000).unwrap(), &bytes[3_500..5_500]);
    assert_eq!(rig.requests(), 2);
    // Everything, in odd pieces, from the end backwards.
    let mut at = bytes.len() as u64;
    while at > 0 {
        let len = 777.min(at);
        at -= len;
        assert_eq!(
            read(&file, at, len as usize).unwrap(),
            &bytes[at as usize..(at + len) as usize]
        );
    }
    // The last chunk is short; past the end fails.
    assert!(read(&file, 50_000, 501).is_err());
    assert!(rig.requests() <= 2 + 51 / 4 + 1, "{} requests", rig.requests());
    assert_eq!(ranges.used(), bytes.len() as u64 + 4);
}

#[test]
fn bytes_that_fail_their_check_are_asked_once_more_then_refused() {
    let rig = Rig::new();
    let bytes = object(10_000, 2);
    let mut bad = bytes.clone();
    bad[4_321] ^= 1;
    rig.put("o", &bad);
    let ranges = rig.ranges(1 << 30);
    let file = rig.file(&ranges, "o", &bytes, policy(CHUNK, 5_000));
    let e = read(&file, 4_000, 500).unwrap_err();
    assert!(e.to_string().contains("SHA-256"), "{e}");
    assert_eq!(rig.stats.refetches.load(Ordering::Relaxed), 1);
    assert_eq!(rig.stats.bad_ranges.load(Ordering::Relaxed), 1);
    assert_eq!(rig.stats.eio.load(Ordering::Relaxed), 1);
    // Chunks that are right are served; the store repaired, the bad one too.
    assert_eq!(read(&file, 0, 1_000).unwrap(), &bytes[..1_000]);
    rig.put("o", &bytes);
    assert_eq!(read(&file, 4_000, 500).unwrap(), &bytes[4_000..4_500]);
    // A short object: refused the same way.
    rig.put("o", &bytes[..9_500]);
    assert!(read(&file, 9_000, 100).is_err());
}

#[test]
fn a_store_gone_fails_the_read_at_its_deadline_and_then_recovers() {
    let rig = Rig::new();
    let bytes = object(5_000, 3);
    let ranges = rig.ranges(1 << 30);
    let file = rig.file(&ranges, "o", &bytes, policy(CHUNK, 600));
    let start = Instant::now();
    let e = read(&file, 0, 10).unwrap_err();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(550) && took < Duration::from_secs(5), "{took:?}: {e}");
    assert!(rig.stats.retries.load(Ordering::Relaxed) >= 2, "retried with backoff");
    // Down from then on: the next read fails without asking the store.
    assert_eq!(rig.stats.store_down.load(Ordering::Relaxed), 1);
    let requests = rig.stats.requests.load(Ordering::Relaxed);
    assert!(read(&file, 1_000, 10).is_err());
    assert_eq!(rig.stats.requests.load(Ordering::Relaxed), requests, "a down store was asked");
    assert_eq!(rig.stats.fast_fails.load(Ordering::Relaxed), 1);
    // The probe sees it back; then reads fetch again.
    rig.put("o", &bytes);
    let start = Instant::now();
    while rig.stats.store_down.load(Ordering::Relaxed) == 1 {
        assert!(start.elapsed() < Duration::from_secs(30), "the probe never saw the store back");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(rig.stats.probes.load(Ordering::Relaxed) >= 1);
    assert_eq!(read(&file, 0, 10).unwrap(), &bytes[..10]);
}

#[test]
fn eviction_keeps_the_cache_bounded_and_never_takes_a_pinned_chunk() {
    let rig = Rig::new();
    let bytes = object(40_000, 4);
    rig.put("o", &bytes);
    let ranges = rig.ranges(5 * CHUNK);
    let file = Arc::new(rig.file(&ranges, "o", &bytes, policy(CHUNK, 5_000)));
    // Readers on two threads over the whole object, again and again.
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let file = Arc::clone(&file);
            let bytes = &bytes;
            s.spawn(move || {
                for round in 0..60u64 {
                    let at = (round * 2_333 + t * 7_919) % 39_000;
                    let got = read(&file, at, 1_000).unwrap();
                    assert_eq!(got, &bytes[at as usize..at as usize + 1_000]);
                }
            });
        }
    });
    assert!(rig.stats.evictions.load(Ordering::Relaxed) > 0);
    assert!(ranges.used() <= 5 * CHUNK + 4, "{} bytes held", ranges.used());
    // Evicted ranges are holes again: the data file holds little more than the bound.
    let held = du(&rig.cache.path().join("lazy"));
    assert!(held < 5 * CHUNK + (64 << 10), "{held} bytes on disk");
}

fn damage(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::options().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
}

/// Waits (up to 10 s) until the first `chunks` bytes of a `.have` file are all set.
fn wait_marked(have: &Path, chunks: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let marks = std::fs::read(have).unwrap_or_default();
        if marks.len() >= chunks && marks[..chunks].iter().all(|&b| b == 1) {
            return;
        }
        assert!(Instant::now() < deadline, "{}: never marked: {marks:?}", have.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A stored range counts as present at once (reads are served from it) but is marked present
/// on disk only when persisted; a chunk evicted before its persist is not marked then.
#[test]
fn stored_ranges_are_marked_on_disk_only_when_persisted_and_still_present() {
    let rig = Rig::new();
    let bytes = object(3_000, 9);
    let ranges = rig.ranges(CHUNK);
    let dir = Rig::add_on_dir(&ranges, 3_000);
    let file = ranges.open_file(&dir, "archive", 3_000, table(&bytes)).unwrap();
    let have = || std::fs::read(dir.join("archive.have")).unwrap();
    ranges.store(&file, 0..1, &bytes[..1_000]).unwrap();
    assert_ne!(file.state(0), ranges::ABSENT, "present for this process");
    assert_eq!(have()[0], 0, "not yet on disk");
    // Room for one chunk: storing the second evicts the first, before the first's persist.
    ranges.store(&file, 1..2, &bytes[1_000..2_000]).unwrap();
    assert_eq!(file.state(0), ranges::ABSENT, "evicted");
    ranges.persist(&file, 0..1).unwrap();
    ranges.persist(&file, 1..2).unwrap();
    assert_eq!(&have()[..3], &[0, 1, 0]);
    drop(file);
    // After a restart only the persisted, still present chunk is there.
    let ranges = rig.ranges(CHUNK);
    let file = ranges.open_file(&dir, "archive", 3_000, table(&bytes)).unwrap();
    let states: Vec<bool> = (0..3).map(|c| file.state(c) != ranges::ABSENT).collect();
    assert_eq!(states, [false, true, false]);
}

#[test]
fn a_restart_keeps_the_ranges_and_a_damaged_one_is_fetched_again() {
    let rig = Rig::new();
    let bytes = object(8_000, 5);
    rig.put("o", &bytes);
    {
        let ranges = rig.ranges(1 << 30);
        let file = rig.file(&ranges, "o", &bytes, policy(CHUNK, 5_000));
        assert_eq!(read(&file, 0, 8_000).unwrap(), bytes);
    }
    // Marked on disk once synced, after the read was served.
    wait_marked(&rig.cache.path().join("lazy/ab/archive.have"), 8);
    let fetched = rig.requests();
    // Damaged on disk while the node was down.
    damage(&rig.cache.path().join("lazy/ab/archive.data"), 2_500);
    let ranges = rig.ranges(1 << 30);
    assert_eq!(ranges.used(), 8_004, "kept across the restart");
    let file = rig.file(&ranges, "o", &bytes, policy(CHUNK, 5_000));
    assert_eq!(read(&file, 0, 2_000).unwrap(), &bytes[..2_000]);
    assert_eq!(rig.requests(), fetched, "served from the cache");
    assert_eq!(read(&file, 2_000, 1_000).unwrap(), &bytes[2_000..3_000]);
    assert_eq!(rig.requests(), fetched + 1, "the damaged chunk was fetched again");
    assert_eq!(rig.stats.corrupt.load(Ordering::Relaxed), 1);
    // A table that differs (another index) starts afresh.
    drop(file);
    let mut other = table(&bytes);
    other[0].sha256[0] ^= 1;
    let dir = ranges.dir("ab");
    let f = ranges.open_file(&dir, "archive", 8_000, other).unwrap();
    assert!((0..f.chunks().len()).all(|c| f.state(c) == ranges::ABSENT));
}

#[test]
fn sequential_reads_are_read_ahead_and_a_lookup_is_not() {
    let rig = Rig::new();
    let bytes = object(100_000, 6);
    rig.put("o", &bytes);
    let ranges = rig.ranges(1 << 30);
    // Minimum request 2 chunks: read-ahead asks 8 times that (16 chunks) at once.
    let file = rig.file(&ranges, "o", &bytes, policy(2 * CHUNK, 5_000));
    // A lookup and a small read inside it: nothing ahead.
    assert_eq!(read(&file, 50_000, 10).unwrap(), &bytes[50_000..50_010]);
    assert_eq!(read(&file, 50_500, 100).unwrap(), &bytes[50_500..50_600]);
    assert_eq!(rig.stats.read_ahead_bytes.load(Ordering::Relaxed), 0);
    // A reader stepping through the object from the start, 500 bytes at a time: without
    // read-ahead one 2-chunk request per 2 chunks (50); with it about one per 16.
    let before = rig.requests();
    let mut at = 0;
    while at < bytes.len() {
        let len = 500.min(bytes.len() - at);
        assert_eq!(read(&file, at as u64, len).unwrap(), &bytes[at..at + len]);
        at += len;
    }
    let requests = rig.requests() - before;
    assert!(rig.stats.read_ahead_bytes.load(Ordering::Relaxed) > 0);
    assert!(requests <= 15, "{requests} requests for a sequential read of 100 chunks");
}
