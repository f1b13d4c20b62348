//! How fast can this machine inflate an archive's spans, and how close does the read-ahead pool
//! come to it, without FUSE (issue 16). Printed as a Markdown table for `docs/benchmarks.md`.
//!
//! `cargo bench --bench cores [-- ARCHIVE]` (default: `/var/tmp/addonfs-bench/jdk.tar.gz`,
//! made from `/usr/lib/jvm` with `tar -czf` if missing: a few hundred large files)
//!
//! * the inflate limit: every span inflated straight from its access point with a
//!   `SpanInflater` into a scratch buffer, by one thread, and by N threads at once (N = the
//!   cores; each takes the next span not taken yet): the limit a reader of every file could
//!   reach with perfect overlap;
//! * every file read front to back through an `ArchiveReader` (default chunk cache), in stream
//!   order, without read-ahead (one thread inflates, as a reader did before issue 16) and
//!   through a `ReadAhead` pool of one worker per core (`Sequential`, as `addonfs cat` does).
//!
//! Warm page cache; each figure is the median of 3 rounds, the steps alternating in each round.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use addonfs::archive::{EntryKind, ScanOptions};
use addonfs::gzip::SpanInflater;
use addonfs::index::{Data, Index, Ino, ROOT_INO};
use addonfs::reader::{ArchiveReader, ChunkCache, ReadAhead};

const ROUNDS: usize = 3;

fn corpus() -> PathBuf {
    if let Some(arg) = std::env::args().skip(1).find(|a| !a.starts_with("--")) {
        return PathBuf::from(arg);
    }
    let dir = PathBuf::from("/var/tmp/addonfs-bench");
    let archive = dir.join("jdk.tar.gz");
    if !archive.exists() {
        std::fs::create_dir_all(&dir).expect("mkdir");
        eprintln!("making the corpus: tar -czf {} -C /usr/lib/jvm .", archive.display());
        let part = tempfile::Builder::new()
            .prefix("jdk.tar.gz.")
            .suffix(".part")
            .tempfile_in(&dir)
            .expect("temporary file");
        let ok = Command::new("tar")
            .arg("-czf")
            .arg(part.path())
            .args(["-C", "/usr/lib/jvm", "."])
            .status();
        assert!(ok.is_ok_and(|s| s.success()), "tar failed");
        part.persist(&archive).expect("rename");
    }
    archive
}

/// Regular files stored in one piece, in stream order (as `tar -c` over the mount reads them).
fn files(index: &Index) -> Vec<(Ino, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![ROOT_INO];
    while let Some(dir) = stack.pop() {
        for (_, child) in index.children(dir, 0) {
            match (index.attr(child), index.data(child)) {
                (Some(a), _) if a.kind == EntryKind::Dir => stack.push(child),
                (Some(a), Data::Contiguous(start)) if a.kind == EntryKind::File => {
                    out.push((start, child, a.size))
                }
                _ => {}
            }
        }
    }
    out.sort_unstable();
    out.into_iter().map(|(_, ino, size)| (ino, size)).collect()
}

/// Inflates every span of `index` with `threads` threads at once; returns the bytes produced.
fn inflate_spans(archive: &Path, index: &Index, threads: usize) -> u64 {
    let file = Arc::new(std::fs::File::open(archive).expect("open"));
    let next = AtomicUsize::new(0);
    let total = index.stats().uncompressed_size;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = vec![0u8; 256 << 10];
                    let mut produced = 0u64;
                    loop {
                        let p = next.fetch_add(1, Ordering::Relaxed);
                        if p >= index.point_count() {
                            return produced;
                        }
                        let point = index.point(p);
                        let end = if p + 1 < index.point_count() {
                            index.point(p + 1).uncompressed
                        } else {
                            total
                        };
                        let window = if point.has_window {
                            index.point_window(p).expect("window")
                        } else {
                            Vec::new()
                        };
                        let mut inflater = SpanInflater::new(
                            Arc::<std::fs::File>::clone(&file),
                            point.uncompressed,
                            point.compressed,
                            point.bits,
                            &window,
                        )
                        .expect("inflater");
                        let mut left = end - point.uncompressed;
                        while left > 0 {
                            let want = left.min(out.len() as u64) as usize;
                            let n = inflater.read(&mut out[..want]).expect("inflate");
                            assert!(n > 0, "span {p} ends early");
                            left -= n as u64;
                            produced += n as u64;
                        }
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("worker")).sum()
    })
}

/// Reads every file front to back (128 KiB reads, as FUSE asks), with or without read-ahead.
fn read_all(archive: &Path, index: &Arc<Index>, pool: Option<&ReadAhead>) -> u64 {
    let cache = Arc::new(ChunkCache::default());
    let reader = Arc::new(ArchiveReader::open(archive, Arc::clone(index), cache).expect("reader"));
    let mut buf = vec![0u8; 128 << 10];
    let mut total = 0u64;
    let mut sequential = pool.map(|p| p.sequential(Arc::clone(&reader)));
    for (ino, size) in files(index) {
        let mut offset = 0;
        while offset < size {
            let n = match sequential.as_mut() {
                Some(s) => s.read(ino, offset, &mut buf),
                None => reader.read(ino, offset, &mut buf),
            }
            .expect("read");
            assert!(n > 0);
            offset += n as u64;
        }
        total += size;
    }
    total
}

/// CPU time of this process so far (user + system, from `/proc/self/stat`, in clock ticks of
/// 10 ms): CPU ÷ wall tells how many cores a step kept busy, whatever else runs on the machine.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which ends with the last ')'): utime is the 14th field.
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let archive = corpus();
    let size = std::fs::metadata(&archive).expect("archive").len();
    let cores = ReadAhead::default_workers();
    let t = Instant::now();
    let index = Arc::new(
        addonfs::index::open::build(&archive, &ScanOptions::default(), None).expect("index"),
    );
    let build = t.elapsed();
    let stats = index.stats();
    let total = stats.uncompressed_size;
    println!(
        "corpus: {} ({:.1} MB gzip, {:.1} MB tar, {} files, {} spans); index build {:.2} s; {} cores",
        archive.display(),
        size as f64 / 1e6,
        total as f64 / 1e6,
        files(&index).len(),
        index.point_count(),
        build.as_secs_f64(),
        cores
    );
    let pool = ReadAhead::start(cores).expect("pool");
    type Samples = Vec<(Duration, Duration)>;
    let mut steps: Vec<(String, Samples)> = vec![
        ("inflate every span, 1 thread".into(), vec![]),
        (format!("inflate every span, {cores} threads at once (the limit)"), vec![]),
        ("read every file, no read-ahead (1 thread inflates)".into(), vec![]),
        (format!("read every file, read-ahead pool of {} workers", pool.workers()), vec![]),
    ];
    for round in 0..ROUNDS {
        for i in 0..steps.len() {
            let step = (i + round) % steps.len();
            let (t, cpu) = (Instant::now(), cpu_time());
            let n = match step {
                0 => inflate_spans(&archive, &index, 1),
                1 => inflate_spans(&archive, &index, cores),
                2 => read_all(&archive, &index, None),
                _ => read_all(&archive, &index, Some(&pool)),
            };
            steps[step].1.push((t.elapsed(), cpu_time() - cpu));
            if step < 2 {
                assert_eq!(n, total, "every span inflated");
            }
        }
    }
    let wall = |samples: &Samples| median(samples.iter().map(|s| s.0).collect());
    let limit = wall(&steps[1].1);
    println!();
    println!(
        "| step | time (median of {ROUNDS}) | MB/s (uncompressed) | ÷ the {cores}-thread limit \
         | CPU ÷ wall (cores kept busy, median) |"
    );
    println!("|---|---|---|---|---|");
    for (name, samples) in &steps {
        let m = wall(samples);
        let mut busy: Vec<f64> =
            samples.iter().map(|(w, c)| c.as_secs_f64() / w.as_secs_f64()).collect();
        busy.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.3} s | {:.0} | {:.2} | {:.2} |",
            m.as_secs_f64(),
            total as f64 / 1e6 / m.as_secs_f64(),
            m.as_secs_f64() / limit.as_secs_f64(),
            busy[busy.len() / 2]
        );
    }
}
