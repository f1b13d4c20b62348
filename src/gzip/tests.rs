//! Tests of the gzip layer against the `gzip` binary (and `pigz`, `bgzip` when installed).

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use super::{
    sparsify_window, AccessPoint, GzipError, GzipIndexer, GzipSummary, SpanInflater, WINDOW_SIZE,
};

/// A small deterministic generator (xorshift64*), so test data needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Incompressible bytes.
fn random_data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Highly compressible bytes: long runs and repeats.
fn compressible_data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let byte = rng.below(4) as u8;
        // Short runs: very long ones would fit megabytes in one deflate block, leaving no
        // boundaries (and so no points) to test.
        let run = 1 + rng.below(100) as usize;
        v.extend(std::iter::repeat_n(byte, run));
    }
    v.truncate(len);
    v
}

/// Text-like bytes: words from a small vocabulary, lines of varying length.
fn text_data(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "archive",
        "index",
        "gzip",
        "member",
        "deflate",
        "block",
        "window",
        "point",
        "stream",
        "random",
        "access",
        "file",
        "directory",
        "inode",
        "offset",
        "header",
        "trailer",
        "python",
        "import",
        "def",
        "return",
        "self",
        "class",
        "lambda",
        "yield",
        "None",
        "True",
    ];
    let mut rng = Rng(seed | 1);
    let mut v = Vec::with_capacity(len + 64);
    while v.len() < len {
        v.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
        v.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
        if rng.below(50) == 0 {
            v.extend_from_slice(format!("{}", rng.next()).as_bytes());
        }
    }
    v.truncate(len);
    v
}

/// Runs `cmd` with `input` on stdin and returns its stdout; panics if it fails.
fn pipe(cmd: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The oracle: `gzip -dc` of `comp`. Returns the output and whether gzip exited 0.
fn gunzip_oracle(comp: &[u8]) -> (Vec<u8>, bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.gz");
    std::fs::write(&path, comp).unwrap();
    let out = Command::new("gzip").arg("-dc").arg(&path).output().unwrap();
    (out.stdout, out.status.code() == Some(0))
}

/// A BGZF file made by hand: members of at most 64 KiB with the `BC` extra subfield holding the
/// member size, then the standard empty EOF member.
fn bgzf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut member = |chunk: &[u8]| {
        let mut enc =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(chunk).unwrap();
        let deflated = enc.finish().unwrap();
        let bsize = (18 + deflated.len() + 8 - 1) as u16;
        out.extend_from_slice(&[0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 6, 0, b'B', b'C', 2, 0]);
        out.extend_from_slice(&bsize.to_le_bytes());
        out.extend_from_slice(&deflated);
        out.extend_from_slice(&crc32fast::hash(chunk).to_le_bytes());
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
    };
    for chunk in data.chunks(65280) {
        member(chunk);
    }
    member(&[]);
    out
}

/// Drains an indexer through `fill_buf`/`consume`, returning the bytes, points and summary.
fn index_all(
    comp: &[u8],
    span: u64,
    max: u64,
) -> Result<(Vec<u8>, Vec<AccessPoint>, GzipSummary), GzipError> {
    let mut idx = GzipIndexer::new(comp, span, max);
    let mut out = Vec::new();
    let mut points = Vec::new();
    loop {
        let buf = match idx.fill_buf() {
            Ok(buf) => buf,
            Err(e) => {
                let inner = e.into_inner().expect("gzip errors travel inside io::Error");
                return Err(*inner.downcast::<GzipError>().expect("a GzipError"));
            }
        };
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        out.extend_from_slice(buf);
        idx.consume(n);
        points.extend(idx.take_points());
    }
    points.extend(idx.take_points());
    let summary = idx.finish()?;
    Ok((out, points, summary))
}

/// Checks the points' invariants.
fn check_points(points: &[AccessPoint], total: u64, comp_len: u64) {
    assert!(!points.is_empty());
    assert_eq!(points[0].uncompressed, 0);
    assert_eq!(points[0].compressed, 0);
    assert!(points[0].at_member_start());
    for w in points.windows(2) {
        assert!(w[0].uncompressed < w[1].uncompressed, "{:?} {:?}", w[0], w[1]);
        assert!(w[0].compressed < w[1].compressed);
    }
    for p in points {
        assert!(p.window.len() <= WINDOW_SIZE);
        assert!(p.bits <= 7);
        assert!(p.uncompressed <= total);
        assert!(p.compressed < comp_len);
        if p.at_member_start() {
            assert_eq!(p.bits, 0);
        }
    }
}

/// Resumes at `p` in the file `path` and checks the next `len` bytes (to the end if `len` is
/// `None`, in which case the inflater must also report the end).
fn check_resume(file: &Arc<File>, p: &AccessPoint, expect: &[u8], len: Option<usize>) {
    let mut inf =
        SpanInflater::new(file.clone(), p.uncompressed, p.compressed, p.bits, &p.window).unwrap();
    let start = p.uncompressed as usize;
    let end = len.map_or(expect.len(), |l| (start + l).min(expect.len()));
    let mut got = vec![0u8; end - start];
    let mut filled = 0;
    while filled < got.len() {
        assert_eq!(inf.position(), (start + filled) as u64);
        let n = inf.read(&mut got[filled..]).unwrap();
        assert!(n > 0, "early end at {} (point {:?})", start + filled, p.uncompressed);
        filled += n;
    }
    assert!(got == expect[start..end], "bytes differ after point at {}", p.uncompressed);
    if len.is_none() {
        assert_eq!(inf.read(&mut [0u8; 100]).unwrap(), 0);
    }
}

/// The full check of one compressed file: indexer output equals `gzip -dc`, points are sound,
/// and resuming at every point reproduces the bytes that follow.
fn check_file(name: &str, comp: &[u8], spans: &[u64]) {
    let (expect, ok) = gunzip_oracle(comp);
    assert!(ok, "{name}: gzip -dc rejects the test input");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.gz");
    std::fs::write(&path, comp).unwrap();
    let file = Arc::new(File::open(&path).unwrap());
    for &span in spans {
        let (out, points, summary) = index_all(comp, span, u64::MAX).unwrap();
        assert!(out == expect, "{name} span {span}: output differs from gzip -dc");
        assert_eq!(summary.uncompressed, expect.len() as u64);
        assert_eq!(summary.compressed, comp.len() as u64);
        check_points(&points, expect.len() as u64, comp.len() as u64);
        for p in &points {
            check_resume(&file, p, &expect, Some(200 * 1024));
            // The sparse window serves the same bytes.
            let sparse = AccessPoint { window: sparsify_window(&file, p).unwrap(), ..p.clone() };
            assert_eq!(sparse.window.len(), p.window.len());
            check_resume(&file, &sparse, &expect, Some(64 * 1024));
        }
        // A few to the very end: the first, a middle one, the last.
        for &i in &[0, points.len() / 2, points.len() - 1] {
            check_resume(&file, &points[i], &expect, None);
        }
    }
}

/// The test inputs: (kind, data).
fn datasets() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("random", random_data(1_500_000, 1)),
        ("compressible", compressible_data(6_000_000, 2)),
        ("text", text_data(3_000_000, 3)),
    ]
}

const SPANS: &[u64] = &[64 * 1024, 1 << 20];

#[test]
fn gzip_levels_match_oracle() {
    let mut mid_byte = 0;
    for (kind, data) in datasets() {
        for level in ["-6", "-1", "-9"] {
            let comp = pipe("gzip", &["-c", level], &data);
            check_file(&format!("{kind} gzip {level}"), &comp, SPANS);
            let (_, points, _) = index_all(&comp, 64 * 1024, u64::MAX).unwrap();
            mid_byte += points.iter().filter(|p| p.bits != 0).count();
        }
    }
    // Resuming mid-byte (inflatePrime) is exercised, not only byte-aligned points.
    assert!(mid_byte > 20, "only {mid_byte} points start mid-byte");
}

#[test]
fn points_come_by_compressed_bytes_too() {
    // Random bytes barely compress. With only the 1 MiB of output to go by, a cold read could
    // inflate ~1 MiB of literals; points also come after 341 KiB (span / 3) of input, so no
    // span reads much more than that (a deflate block at most past it).
    let data = random_data(3_000_000, 7);
    let comp = pipe("gzip", &["-c", "-6"], &data);
    let (_, points, summary) = index_all(&comp, 1 << 20, u64::MAX).unwrap();
    let mut bounds: Vec<u64> = points.iter().map(|p| p.compressed).collect();
    bounds.push(summary.compressed);
    for w in bounds.windows(2) {
        assert!(w[1] - w[0] <= (341 + 64) * 1024, "a span of {} compressed bytes", w[1] - w[0]);
    }
    assert!(points.len() >= 8, "{} points for {} compressed bytes", points.len(), comp.len());
    // Text at 1 MiB still gets its points by output: about one per MiB.
    let text = text_data(3_000_000, 8);
    let comp = pipe("gzip", &["-c", "-6"], &text);
    let (_, points, _) = index_all(&comp, 1 << 20, u64::MAX).unwrap();
    assert_eq!(points.len(), 3, "{points:?}");
}

/// A gzip member whose deflate stream is cut into many small blocks by partial flushes (each
/// adds an empty fixed block, so most boundaries fall mid-byte), with `name` in the header.
fn many_blocks_gzip(data: &[u8], every: usize) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::new(6), false);
    let mut deflated = Vec::with_capacity(data.len() + 1024);
    let chunks: Vec<&[u8]> = data.chunks(every).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let flush = if i + 1 == chunks.len() {
            flate2::FlushCompress::Finish
        } else {
            flate2::FlushCompress::Partial
        };
        let mut input = *chunk;
        loop {
            deflated.reserve(64 * 1024);
            let before = c.total_in();
            let status = c.compress_vec(input, &mut deflated, flush).unwrap();
            input = &input[(c.total_in() - before) as usize..];
            let done = match flush {
                flate2::FlushCompress::Finish => status == flate2::Status::StreamEnd,
                _ => input.is_empty() && deflated.capacity() > deflated.len(),
            };
            if done {
                break;
            }
        }
    }
    let mut out = vec![0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3];
    out.extend_from_slice(b"many-blocks.tar\0");
    out.extend_from_slice(&deflated);
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

#[test]
fn many_mid_byte_boundaries() {
    for (kind, data) in datasets() {
        let data = &data[..data.len().min(1_000_000)];
        let comp = many_blocks_gzip(data, 3000);
        check_file(&format!("{kind} partial flushes"), &comp, &[4096, 20_000]);
        let (_, points, _) = index_all(&comp, 4096, u64::MAX).unwrap();
        let mid = points.iter().filter(|p| p.bits != 0).count();
        if kind != "random" {
            assert!(mid * 2 > points.len(), "{kind}: {mid} of {} points mid-byte", points.len());
        }
    }
}

#[test]
fn concatenated_members_match_oracle() {
    for (kind, data) in datasets() {
        let third = data.len() / 3;
        let mut comp = pipe("gzip", &["-c"], &data[..third]);
        comp.extend(pipe("gzip", &["-c", "-1"], &data[third..2 * third]));
        comp.extend(pipe("gzip", &["-c"], &[]));
        comp.extend(pipe("gzip", &["-c", "-9"], &data[2 * third..]));
        check_file(&format!("{kind} cat"), &comp, SPANS);
        let (_, points, summary) = index_all(&comp, 1 << 20, u64::MAX).unwrap();
        assert_eq!(summary.members, 4);
        // Member starts get cheap points (each member here produces more than 32 KiB).
        let starts = points.iter().filter(|p| p.at_member_start()).count();
        assert_eq!(starts, 3, "{kind}: points at the starts of the non-empty members");
    }
}

#[test]
fn pigz_matches_oracle() {
    if !crate::testutil::require("pigz") {
        return;
    }
    for (kind, data) in datasets() {
        let comp = pipe("pigz", &["-c", "-p", "2"], &data);
        check_file(&format!("{kind} pigz"), &comp, SPANS);
        let comp = pipe("pigz", &["-c", "-i", "-b", "32", "-p", "2"], &data);
        check_file(&format!("{kind} pigz -i"), &comp, SPANS);
    }
}

/// The members of a BGZF file, read from the file itself: each member's `BC` extra subfield
/// holds its size less one (BSIZE), its trailer its uncompressed size (ISIZE). Returns each
/// member's (uncompressed offset, compressed offset, uncompressed size).
fn bgzf_members(comp: &[u8]) -> Vec<(u64, u64, u64)> {
    let (mut at, mut out_at, mut members) = (0usize, 0u64, Vec::new());
    while at < comp.len() {
        let m = &comp[at..];
        assert_eq!(m[..4], [0x1f, 0x8b, 8, 4], "a BGZF member with FEXTRA at {at}");
        let xlen = u16::from_le_bytes([m[10], m[11]]) as usize;
        let (mut field, mut bsize) = (12, None);
        while field + 4 <= 12 + xlen {
            let len = u16::from_le_bytes([m[field + 2], m[field + 3]]) as usize;
            if m[field..field + 2] == *b"BC" && len == 2 {
                bsize = Some(u16::from_le_bytes([m[field + 4], m[field + 5]]) as usize);
            }
            field += 4 + len;
        }
        let size = bsize.unwrap_or_else(|| panic!("no BC subfield in the member at {at}")) + 1;
        let isize = u32::from_le_bytes(m[size - 4..size].try_into().unwrap());
        members.push((out_at, at as u64, u64::from(isize)));
        out_at += u64::from(isize);
        at += size;
    }
    assert_eq!(at, comp.len(), "the members end where the file does");
    members
}

/// The access points a 1 MiB span gives a BGZF file, from its members alone: BGZF members are
/// far smaller than a span, so only member starts get points (they need no window), one at
/// each member start that follows a member holding 32 KiB or more (a window's worth: a point
/// after less is not worth its entry). As (uncompressed, compressed) pairs.
fn bgzf_expected_points(members: &[(u64, u64, u64)]) -> Vec<(u64, u64)> {
    let mut expect = vec![(0, 0)];
    for pair in members.windows(2) {
        let (before, next) = (pair[0], pair[1]);
        if before.2 >= 32 * 1024 {
            expect.push((next.0, next.1));
        }
    }
    expect
}

/// Checks the points of a BGZF file at a 1 MiB span against its members.
fn check_bgzf_points(name: &str, comp: &[u8], data_len: usize) {
    let members = bgzf_members(comp);
    let (_, points, summary) = index_all(comp, 1 << 20, u64::MAX).unwrap();
    assert_eq!(summary.members, members.len() as u64, "{name}");
    assert_eq!(members.iter().map(|m| m.2).sum::<u64>(), data_len as u64, "{name}");
    let got: Vec<(u64, u64)> = points.iter().map(|p| (p.uncompressed, p.compressed)).collect();
    let want = bgzf_expected_points(&members);
    assert!(want.len() > 10, "{name}: only {} member starts to check", want.len());
    assert_eq!(got, want, "{name}");
    assert!(points.iter().all(|p| p.at_member_start()), "{name}");
}

#[test]
fn bgzf_matches_oracle() {
    for (kind, data) in datasets() {
        let comp = bgzf(&data);
        check_file(&format!("{kind} bgzf"), &comp, SPANS);
        check_bgzf_points(&format!("{kind} bgzf"), &comp, data.len());
    }
}

/// The real `bgzip` (required under CI: `.ci/run` installs it), with the points checked
/// against the member sizes it wrote.
#[test]
fn bgzip_matches_oracle() {
    if !crate::testutil::require("bgzip") {
        return;
    }
    for (kind, data) in datasets() {
        let comp = pipe("bgzip", &["-c"], &data);
        check_file(&format!("{kind} bgzip"), &comp, SPANS);
        check_bgzf_points(&format!("{kind} bgzip"), &comp, data.len());
    }
}

#[test]
fn empty_gzip_is_valid_and_empty_file_is_not() {
    let comp = pipe("gzip", &["-c"], &[]);
    let (out, points, summary) = index_all(&comp, 1 << 20, 100).unwrap();
    assert!(out.is_empty());
    assert_eq!(points.len(), 1);
    assert_eq!(summary, GzipSummary { compressed: comp.len() as u64, uncompressed: 0, members: 1 });

    let err = index_all(&[], 1 << 20, 100).unwrap_err();
    assert_eq!(err.offset, 0);
    assert!(err.reason.contains("empty file"), "{err}");
}

#[test]
fn non_gzip_input_is_rejected() {
    for input in [&b"hello world, this is not gzip"[..], b"\x1f", b"\x1f\x8c\x08\x00", b"\0\0\0\0"]
    {
        let err = index_all(input, 1 << 20, 1 << 20).unwrap_err();
        assert!(err.reason.contains("not a gzip file"), "{input:?}: {err}");
        assert_eq!(err.offset, 0);
    }
    // Bad method and reserved flags, named as such.
    let mut comp = pipe("gzip", &["-c"], b"some data");
    comp[2] = 7;
    let err = index_all(&comp, 1 << 20, 1 << 20).unwrap_err();
    assert!(err.reason.contains("compression method 7"), "{err}");
    let mut comp = pipe("gzip", &["-c"], b"some data");
    comp[3] |= 0x40;
    let err = index_all(&comp, 1 << 20, 1 << 20).unwrap_err();
    assert!(err.reason.contains("reserved flag"), "{err}");
}

#[test]
fn trailing_bytes_after_last_member() {
    let data = text_data(100_000, 4);
    let comp = pipe("gzip", &["-c"], &data);
    // Zero padding is accepted (gzip -dc also outputs the data).
    let mut padded = comp.clone();
    padded.extend(std::iter::repeat_n(0u8, 10_000));
    let (out, _, summary) = index_all(&padded, 1 << 20, u64::MAX).unwrap();
    assert!(out == gunzip_oracle(&padded).0, "padded output differs");
    assert_eq!(summary.compressed, padded.len() as u64);
    // Garbage is not, nor zeros followed by something else.
    // A member after zero padding is garbage too, even when the zeros fill whole reads.
    let mut zeros_then_member = vec![0u8; 1_500_000];
    zeros_then_member.extend_from_slice(&comp);
    for tail in [&b"garbage"[..], b"\x1f", b"\0\0\0\x01", b"\x1f\x8b", &zeros_then_member] {
        let mut bad = comp.clone();
        bad.extend_from_slice(tail);
        let err = index_all(&bad, 1 << 20, u64::MAX).unwrap_err();
        assert!(err.offset >= comp.len() as u64, "tail of {} bytes: {err}", tail.len());
        assert!(
            err.reason.contains("trailing garbage") || err.reason.contains("truncated"),
            "tail of {} bytes: {err}",
            tail.len()
        );
    }
}

#[test]
fn truncation_at_every_position_is_an_error() {
    let data = text_data(40_000, 5);
    let comp = pipe("gzip", &["-c"], &data);
    for cut in 0..comp.len() {
        match index_all(&comp[..cut], 4096, u64::MAX) {
            Ok(_) => panic!("truncated at {cut} of {} accepted", comp.len()),
            Err(e) => assert!(e.offset <= cut as u64, "cut {cut}: {e}"),
        }
    }
    // With several members, a cut is an error unless it falls exactly between members (where
    // the file is valid, as gzip agrees).
    let a = pipe("gzip", &["-c"], &data[..20_000]);
    let b = pipe("gzip", &["-c"], &data[20_000..]);
    let cat = [a.clone(), b].concat();
    for cut in (1..cat.len()).step_by(7).chain([a.len()]) {
        let ours = index_all(&cat[..cut], 4096, u64::MAX);
        if cut == a.len() {
            let (expect, ok) = gunzip_oracle(&cat[..cut]);
            assert!(ok);
            assert!(ours.unwrap().0 == expect, "cut between members: output differs");
        } else {
            let err = ours.err().unwrap_or_else(|| panic!("cut {cut} accepted"));
            // One byte cannot be told from other data; past it, a member was cut short.
            let want = if cut < 2 { "not a gzip file" } else { "truncated" };
            assert!(err.reason.contains(want), "cut {cut}: {err}");
        }
    }
}

#[test]
fn flipped_bytes_are_caught() {
    // `gzip -n` and stdin: no name, no timestamp, so every byte after the fixed header is deflate
    // data or trailer.
    for (kind, data) in [("text", text_data(60_000, 6)), ("random", random_data(60_000, 7))] {
        let comp = pipe("gzip", &["-c", "-n"], &data);
        let mut rng = Rng(42);
        let mut positions: Vec<usize> = (0..4).collect();
        positions.extend(10..comp.len().min(40));
        positions.extend(comp.len().saturating_sub(40)..comp.len());
        positions.extend((0..150).map(|_| 10 + rng.below(comp.len() as u64 - 10) as usize));
        let mut crc_caught = 0;
        for &pos in &positions {
            let mut bad = comp.clone();
            bad[pos] ^= 0xff;
            let err = index_all(&bad, 8192, 1 << 20)
                .err()
                .unwrap_or_else(|| panic!("{kind}: flip at {pos} accepted"));
            if err.reason.contains("CRC-32") {
                crc_caught += 1;
            }
        }
        // Cross-check a sample with the oracle: gzip rejects these too.
        for &pos in positions.iter().step_by(15) {
            let mut bad = comp.clone();
            bad[pos] ^= 0xff;
            assert!(!gunzip_oracle(&bad).1, "{kind}: gzip accepts the flip at {pos}");
        }
        if kind == "random" {
            // Stored blocks: only the CRC can see a flipped data byte.
            assert!(crc_caught > 100, "{kind}: only {crc_caught} flips caught by the CRC");
        }
    }
    // Flips of MTIME/XFL/OS change nothing gzip cares about: same output as gzip.
    let data = text_data(10_000, 8);
    let comp = pipe("gzip", &["-c", "-n"], &data);
    for pos in 4..10 {
        let mut bad = comp.clone();
        bad[pos] ^= 0xff;
        let (expect, ok) = gunzip_oracle(&bad);
        assert!(ok);
        assert!(index_all(&bad, 8192, 1 << 20).unwrap().0 == expect, "flip at {pos}");
    }
}

#[test]
fn trailer_mismatches_are_named() {
    let data = text_data(50_000, 12);
    let comp = pipe("gzip", &["-c"], &data);
    let n = comp.len();
    let mut bad = comp.clone();
    bad[n - 8] ^= 1;
    let err = index_all(&bad, 1 << 20, u64::MAX).unwrap_err();
    assert!(err.reason.contains("CRC-32 mismatch"), "{err}");
    assert!(err.offset >= (n - 8) as u64, "{err}");
    let mut bad = comp.clone();
    bad[n - 1] ^= 1;
    let err = index_all(&bad, 1 << 20, u64::MAX).unwrap_err();
    assert!(err.reason.contains("ISIZE"), "{err}");
    // The same mismatch in a second member names that member's offset.
    let mut cat = [comp.clone(), comp.clone()].concat();
    let m = cat.len();
    cat[m - 6] ^= 0x10;
    let err = index_all(&cat, 1 << 20, u64::MAX).unwrap_err();
    assert!(err.reason.contains(&format!("member starting at offset {n}")), "{err}");
}

#[test]
fn readers_can_move_between_threads() {
    fn is_send<T: Send>() {}
    is_send::<SpanInflater>();
    is_send::<GzipIndexer<File>>();
}

#[test]
fn decompression_bomb_fails_fast() {
    let comp = {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..100 {
            enc.write_all(&zeros).unwrap();
        }
        enc.finish().unwrap()
    };
    let limit = 10 * 1000 * 1000;
    let err = index_all(&comp, 1 << 20, limit).unwrap_err();
    assert!(err.reason.contains("exceeds the limit of 10000000 bytes"), "{err}");
    // It stops soon after the limit, not at the end of the input: about a tenth of the
    // compressed bytes make the first 10 MB (the data is uniform), and inflating is done in
    // steps of at most a buffer (1 MiB of output) past that.
    let at_limit = comp.len() as u64 / 10;
    assert!(err.offset < at_limit * 2, "stopped at {} of {} bytes", err.offset, comp.len());
    // finish() enforces the limit too.
    let idx = GzipIndexer::new(&comp[..], 1 << 20, limit);
    assert!(idx.finish().unwrap_err().reason.contains("decompression bomb"));
    // Exactly at the limit is fine.
    let data = vec![7u8; 300_000];
    let comp = pipe("gzip", &["-c"], &data);
    assert!(index_all(&comp, 1 << 20, 300_000).is_ok());
    let err = index_all(&comp, 1 << 20, 299_999).unwrap_err();
    assert!(err.reason.contains("exceeds the limit of 299999 bytes"), "{err}");
}

#[test]
fn read_and_finish_early() {
    let data = text_data(2_000_000, 10);
    let comp = pipe("gzip", &["-c"], &data);
    let mut idx = GzipIndexer::new(&comp[..], 65536, u64::MAX);
    let mut head = vec![0u8; 1000];
    idx.read_exact(&mut head).unwrap();
    assert!(head == data[..1000]);
    let summary = idx.finish().unwrap();
    assert_eq!(summary.uncompressed, data.len() as u64);
    assert_eq!(summary.members, 1);
    // An error is sticky: every later call returns it again.
    let mut bad = comp.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    let mut idx = GzipIndexer::new(&bad[..], 65536, u64::MAX);
    let mut sink = Vec::new();
    let e1 = idx.read_to_end(&mut sink).unwrap_err().to_string();
    let e2 = idx.fill_buf().unwrap_err().to_string();
    assert_eq!(e1, e2);
    assert_eq!(idx.finish().unwrap_err().to_string(), e1);
}

#[test]
fn span_inflater_skip_and_bad_points() {
    let data = text_data(3_000_000, 11);
    let comp = pipe("gzip", &["-c"], &data);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.gz");
    std::fs::write(&path, &comp).unwrap();
    let file = Arc::new(File::open(&path).unwrap());
    let (_, points, _) = index_all(&comp, 1 << 20, u64::MAX).unwrap();
    let p = &points[1];
    let mut inf =
        SpanInflater::new(file.clone(), p.uncompressed, p.compressed, p.bits, &p.window).unwrap();
    inf.skip(123_457).unwrap();
    assert_eq!(inf.position(), p.uncompressed + 123_457);
    let mut buf = vec![0u8; 4096];
    let n = inf.read(&mut buf).unwrap();
    let at = inf.position() as usize - n;
    assert!(buf[..n] == data[at..at + n]);
    let left = data.len() as u64 - inf.position();
    let err = inf.skip(left + 1).unwrap_err();
    assert!(err.reason.contains("cannot skip"), "{err}");

    let bad = |compressed: u64, bits: u8, window: &[u8], want: &str| {
        let err = SpanInflater::new(file.clone(), 0, compressed, bits, window)
            .err()
            .unwrap_or_else(|| panic!("point at {compressed} ({bits} bits) accepted"));
        assert!(err.reason.contains(want), "{err} lacks {want:?}");
        assert_eq!(err.offset, compressed, "{err}");
    };
    bad(0, 8, &[1], "8 bits to prime (at most 7)");
    bad(0, 3, &[1], "bits to prime before offset 0");
    bad(0, 0, &vec![0; WINDOW_SIZE + 1], "window of 32769 bytes");
    // A member start that is not one.
    bad(5, 0, &[], "no gzip member starts here");
    bad(comp.len() as u64 + 10, 0, &[], "no gzip member starts here");
    // A mid-stream point past the end fails on read, not with a panic.
    let mut inf = SpanInflater::new(file, 0, comp.len() as u64 + 10, 0, &[1, 2, 3]).unwrap();
    let err = inf.read(&mut buf).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

/// Path of the benchmark corpus.
fn bench_corpus() -> Option<PathBuf> {
    let path = PathBuf::from(
        std::env::var("ADDONFS_BENCH_GZ").unwrap_or_else(|_| "/tmp/py.tar.gz".to_string()),
    );
    path.exists().then_some(path)
}

/// Runs `f` and returns how long it took, in seconds, and its result.
fn timed<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let v = f();
    (t.elapsed().as_secs_f64(), v)
}

/// Drains the indexer (span 1 MiB) over `path`: (points, summary).
fn drain_indexer(path: &Path) -> (Vec<AccessPoint>, GzipSummary) {
    let mut idx = GzipIndexer::new(File::open(path).unwrap(), 1 << 20, u64::MAX);
    let mut points = Vec::new();
    loop {
        let n = idx.fill_buf().unwrap().len();
        if n == 0 {
            break;
        }
        idx.consume(n);
        points.extend(idx.take_points());
    }
    let summary = idx.finish().unwrap();
    (points, summary)
}

/// zlib-rs alone: gzip mode (CRC checked), no block stops, 1 MiB buffers. The ceiling.
fn drain_zlib_alone(path: &Path) -> u64 {
    use super::ffi::{Flush, Inflater, Status, GZIP};
    let mut f = File::open(path).unwrap();
    let mut inf = Inflater::new(GZIP).unwrap();
    let (mut inbuf, mut outbuf) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let (mut pos, mut len, mut produced) = (0usize, 0usize, 0u64);
    loop {
        if pos == len {
            len = f.read(&mut inbuf).unwrap();
            pos = 0;
            assert!(len > 0);
        }
        let step = inf.inflate(&inbuf[pos..len], &mut outbuf, Flush::None).unwrap();
        pos += step.consumed;
        produced += step.produced as u64;
        if step.status == Status::StreamEnd {
            // Another member may follow; this is only for the single-member corpus.
            return produced;
        }
    }
}

/// Throughput of the indexer against `gzip -dc`, flate2 and zlib-rs alone, and the latency of
/// random 4 KiB reads. Run:
/// `cargo test --release --lib gzip::tests::bench_index -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: needs /tmp/py.tar.gz (or ADDONFS_BENCH_GZ) and a release build"]
fn bench_index() {
    let Some(path) = bench_corpus() else {
        eprintln!("no corpus");
        return;
    };
    let comp_len = std::fs::metadata(&path).unwrap().len();
    // Warm the page cache.
    std::io::copy(&mut File::open(&path).unwrap(), &mut std::io::sink()).unwrap();

    // For profiling one side: ADDONFS_BENCH_ONLY=indexer or =zlib.
    match std::env::var("ADDONFS_BENCH_ONLY").as_deref() {
        Ok("indexer") => {
            drain_indexer(&path);
            return;
        }
        Ok("zlib") => {
            drain_zlib_alone(&path);
            return;
        }
        Ok("random") => {
            let (points, summary) = drain_indexer(&path);
            for _ in 0..3 {
                random_reads(&path, &points, summary.uncompressed);
            }
            return;
        }
        _ => {}
    }
    // Interleaved rounds, best of each, so a change in machine load hits all sides alike.
    let (mut ours, mut flate, mut gzip, mut alone) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    let mut indexed = None;
    let mut alone_out = 0;
    for _ in 0..3 {
        let (t, r) = timed(|| drain_indexer(&path));
        ours = ours.min(t);
        indexed = Some(r);
        let (t, n) = timed(|| {
            let file = std::io::BufReader::with_capacity(1 << 20, File::open(&path).unwrap());
            let mut dec = flate2::read::MultiGzDecoder::new(file);
            std::io::copy(&mut dec, &mut std::io::sink()).unwrap()
        });
        flate = flate.min(t);
        assert_eq!(Some(n), indexed.as_ref().map(|(_, s)| s.uncompressed));
        let (t, ()) = timed(|| {
            let status =
                Command::new("gzip").arg("-dc").arg(&path).stdout(Stdio::null()).status().unwrap();
            assert!(status.success());
        });
        gzip = gzip.min(t);
        let (t, n) = timed(|| drain_zlib_alone(&path));
        alone = alone.min(t);
        alone_out = n;
    }
    let (points, summary) = indexed.expect("ran");
    let total = summary.uncompressed;
    let alone_complete = alone_out == total;

    let mb = |secs: f64| total as f64 / secs / 1e6;
    let windows: usize = points.iter().map(|p| p.window.len()).sum();
    let mid_byte = points.iter().filter(|p| p.bits != 0).count();
    eprintln!("corpus {}: {comp_len} B compressed, {total} B uncompressed", path.display());
    eprintln!(
        "members {}, points {} ({mid_byte} mid-byte), raw window bytes {windows}",
        summary.members,
        points.len()
    );
    eprintln!("GzipIndexer span 1 MiB  {ours:.3} s  {:.0} MB/s", mb(ours));
    eprintln!("flate2 MultiGzDecoder   {flate:.3} s  {:.0} MB/s", mb(flate));
    eprintln!("gzip -dc > /dev/null    {gzip:.3} s  {:.0} MB/s", mb(gzip));
    if alone_complete {
        eprintln!("zlib-rs alone           {alone:.3} s  {:.0} MB/s", mb(alone));
    }
    eprintln!(
        "speed-up vs gzip {:.2}x, vs flate2 {:.2}x; zlib-rs alone / ours {:.2}",
        gzip / ours,
        flate / ours,
        alone / ours
    );

    random_reads(&path, &points, total);
}

/// Times 500 random 4 KiB reads (resume at the nearest point, skip, read) and prints the
/// median, 90th percentile and maximum.
fn random_reads(path: &Path, points: &[AccessPoint], total: u64) {
    // Random 4 KiB reads: resume at the nearest point, skip, read.
    let file = Arc::new(File::open(path).unwrap());
    let mut rng = Rng(7);
    let mut times = Vec::new();
    let mut buf = vec![0u8; 4096];
    let (mut inflated, mut setup) = (0u64, Vec::new());
    for _ in 0..500 {
        let off = rng.below(total - 4096);
        let i = points.partition_point(|p| p.uncompressed <= off) - 1;
        let p = &points[i];
        let t = Instant::now();
        let mut inf =
            SpanInflater::new(file.clone(), p.uncompressed, p.compressed, p.bits, &p.window)
                .unwrap();
        setup.push(t.elapsed().as_secs_f64() * 1e3);
        inf.skip(off - p.uncompressed).unwrap();
        inflated += off - p.uncompressed + 4096;
        let mut filled = 0;
        while filled < buf.len() {
            filled += inf.read(&mut buf[filled..]).unwrap();
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let busy: f64 = times.iter().sum::<f64>() / 1e3;
    times.sort_by(f64::total_cmp);
    setup.sort_by(f64::total_cmp);
    let pct = |q: usize| times[times.len() * q / 100];
    eprintln!(
        "random 4 KiB read, span 1 MiB: median {:.3} ms, p90 {:.3} ms, max {:.3} ms",
        pct(50),
        pct(90),
        times[times.len() - 1]
    );
    eprintln!(
        "  (median setup {:.3} ms; {:.0} KiB inflated per read on average, at {:.0} MB/s)",
        setup[setup.len() / 2],
        inflated as f64 / times.len() as f64 / 1024.0,
        inflated as f64 / busy / 1e6
    );
}

/// Sparse windows keep only what the following stream copies: on text most window bytes go.
#[test]
fn sparse_windows_drop_unused_bytes() {
    let data = text_data(3_000_000, 9);
    let comp = pipe("gzip", &["-6", "-c"], &data);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gz");
    std::fs::write(&path, &comp).unwrap();
    let file = Arc::new(File::open(&path).unwrap());
    let (_, points, _) = index_all(&comp, 128 * 1024, u64::MAX).unwrap();
    let (mut kept, mut total) = (0usize, 0usize);
    for p in points.iter().filter(|p| !p.at_member_start()) {
        let sparse = sparsify_window(&file, p).unwrap();
        for (s, w) in sparse.iter().zip(&p.window) {
            assert!(*s == 0 || s == w, "a sparse window only zeroes bytes");
        }
        kept += sparse.iter().zip(&p.window).filter(|(s, w)| s == w).count();
        total += p.window.len();
    }
    assert!(total > 0);
    eprintln!("sparse windows keep {kept} of {total} bytes");
    assert!(kept < total * 9 / 10, "kept {kept} of {total}");
}
