//! Throughput of the walker (ignored by default; run with
//! `cargo test --release --lib archive::tar::tests::perf -- --ignored --nocapture`).

use std::time::Instant;

use super::craft::Builder;
use super::*;

fn measure(what: &str, data: &[u8]) {
    let mut best = f64::MAX;
    let mut n = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let mut input = data;
        n = 0;
        super::super::walk(
            &mut input,
            &Limits::default(),
            &mut |e| {
                n += 1;
                std::hint::black_box(e);
                Ok(())
            },
            &mut |_| {},
        )
        .unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    eprintln!(
        "{what}: {n} entries, {} MB in {:.1} ms: {:.0} MB/s, {:.2} M entries/s",
        data.len() >> 20,
        best * 1e3,
        data.len() as f64 / best / 1e6,
        n as f64 / best / 1e6
    );
}

#[test]
#[ignore]
fn walker_throughput() {
    let payload = vec![0x5au8; 1 << 20];
    // Small files (ustar headers, 0..2 KiB of data each).
    let mut b = Builder::default();
    for i in 0..200_000usize {
        b.entry(&format!("dir{}/sub/file-{i}.txt", i % 100), b'0', &payload[..(i * 37) % 2048]);
    }
    measure("ustar small files", &b.end());
    // Small files with a PAX header each (what --format=posix writes).
    let mut b = Builder::default();
    for i in 0..100_000usize {
        let path = format!("dir{}/sub/file-{i}.txt", i % 100);
        b.pax(
            b'x',
            &[
                ("path", path.as_bytes()),
                ("mtime", b"1700000000.123456789"),
                ("atime", b"1700000000.1"),
            ],
        );
        b.entry("x", b'0', &payload[..(i * 37) % 2048]);
    }
    measure("pax small files", &b.end());
    // Large files: the walker only consumes.
    let mut b = Builder::default();
    for i in 0..512 {
        b.entry(&format!("big{i}"), b'0', &payload);
    }
    measure("1 MiB files", &b.end());
}
