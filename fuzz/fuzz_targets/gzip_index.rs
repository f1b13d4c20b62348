//! Indexes arbitrary bytes as gzip; when that succeeds, resumes at every recorded access point
//! and checks that the bytes that follow are the ones the indexer produced, with the whole window
//! and with its sparse version.

#![no_main]

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::sync::Arc;

use addonfs::gzip::{sparsify_window, AccessPoint, GzipIndexer, SpanInflater, WINDOW_SIZE};
use libfuzzer_sys::fuzz_target;

const SPAN: u64 = 4096;
const MAX_UNCOMPRESSED: u64 = 16 << 20;

/// Writes `data` to an unlinked temporary file and returns it open.
fn temp_file(data: &[u8]) -> File {
    let path = std::env::temp_dir().join(format!("addonfs-fuzz-gzip-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("create temp file");
    let _ = std::fs::remove_file(&path);
    file.write_all(data).expect("write temp file");
    file
}

/// Resumes at `p` and checks `expect[p.uncompressed..end]`; at the true end, also that the
/// inflater reports the end.
fn check_resume(file: &Arc<File>, p: &AccessPoint, expect: &[u8], end: usize) {
    let mut inf = SpanInflater::new(file.clone(), p.uncompressed, p.compressed, p.bits, &p.window)
        .expect("resume at a recorded point");
    let start = p.uncompressed as usize;
    let mut got = vec![0u8; end - start];
    let mut filled = 0;
    while filled < got.len() {
        assert_eq!(inf.position(), (start + filled) as u64);
        let n = inf.read(&mut got[filled..]).expect("inflate after a recorded point");
        assert!(n > 0, "early end after point at {start}");
        filled += n;
    }
    assert!(got == expect[start..end], "bytes differ after point at {start}");
    if end == expect.len() {
        assert_eq!(inf.read(&mut [0u8; 64]).expect("read at the end"), 0);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut idx = GzipIndexer::new(data, SPAN, MAX_UNCOMPRESSED);
    let mut out = Vec::new();
    let mut points = Vec::new();
    loop {
        let Ok(buf) = idx.fill_buf() else { return };
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        out.extend_from_slice(buf);
        idx.consume(n);
        points.extend(idx.take_points());
    }
    points.extend(idx.take_points());
    let Ok(summary) = idx.finish() else { return };
    assert_eq!(summary.uncompressed, out.len() as u64);
    assert_eq!(summary.compressed, data.len() as u64);
    assert!(summary.uncompressed <= MAX_UNCOMPRESSED);

    assert_eq!(points.first().map(|p| (p.uncompressed, p.compressed)), Some((0, 0)));
    for w in points.windows(2) {
        assert!(w[0].uncompressed < w[1].uncompressed);
        assert!(w[0].compressed < w[1].compressed);
    }
    for p in &points {
        assert!(p.bits <= 7 && p.window.len() <= WINDOW_SIZE);
        assert!(p.uncompressed <= out.len() as u64 && p.compressed < data.len() as u64);
    }

    let file = Arc::new(temp_file(data));
    for (i, p) in points.iter().enumerate() {
        // Up to a little past the next point (so member ends get crossed), and to the very end
        // for the first and the last point.
        let end = if i == 0 || i + 1 == points.len() {
            out.len()
        } else {
            (points[i + 1].uncompressed as usize + 1000).min(out.len())
        };
        check_resume(&file, p, &out, end);
        // The sparse window (only the bytes the stream copies) serves the same bytes.
        let sparse = sparsify_window(&file, p).expect("sparsify at a recorded point");
        assert_eq!(sparse.len(), p.window.len());
        let sparse = AccessPoint { window: sparse, ..p.clone() };
        check_resume(&file, &sparse, &out, end);
    }
});
