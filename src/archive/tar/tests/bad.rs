//! Corrupt, truncated and hostile input: each is a precise error (or a documented warning),
//! never a panic.

use std::fs;
use std::io::{self, BufRead, Read};
use std::path::Path;

use super::craft::{header, pax_records, seal, Builder};
use super::oracle::random_bytes;
use super::*;
use crate::gzip::GzipError;

/// A GNU-format and a PAX archive of a small tree with long names, links and a sparse file
/// with extension blocks.
fn sample_archives(tmp: &Path) -> Vec<Vec<u8>> {
    let src = tmp.join("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("small"), b"small file").unwrap();
    fs::write(src.join("dir").join("x".repeat(120)), random_bytes(1500, 9)).unwrap();
    std::os::unix::fs::symlink("y".repeat(110), src.join("link")).unwrap();
    fs::hard_link(src.join("small"), src.join("hard")).unwrap();
    let sparse = src.join("sparse");
    let f = fs::File::create(&sparse).unwrap();
    f.set_len(40 * 8192).unwrap();
    for i in 0..20 {
        std::os::unix::fs::FileExt::write_all_at(&f, &random_bytes(100, i), i * 16384 + 100)
            .unwrap();
    }
    ["gnu", "posix"]
        .iter()
        .map(|fmt| {
            let a = tmp.join(format!("{fmt}.tar"));
            let format = format!("--format={fmt}");
            tar(
                tmp,
                &[
                    "-c",
                    "--sparse",
                    "--sort=name",
                    &format,
                    "-f",
                    a.to_str().unwrap(),
                    "-C",
                    src.to_str().unwrap(),
                    ".",
                ],
            );
            fs::read(a).unwrap()
        })
        .collect()
}

/// Offset of the end-of-archive blocks: the first cut after the last header at which the
/// walk reports every entry.
fn end_of_archive(data: &[u8], w: &Walked) -> u64 {
    let last = w.entries.last().unwrap().header_offset as usize;
    (last + 512..data.len())
        .step_by(512)
        .find(|&o| {
            walk_bytes(&data[..o], &Limits::default())
                .is_ok_and(|x| x.entries.len() == w.entries.len())
        })
        .unwrap() as u64
}

#[test]
fn truncated_at_every_offset() {
    let tmp = tempfile::tempdir().unwrap();
    for data in sample_archives(tmp.path()) {
        let full = walk_bytes(&data, &Limits::default()).unwrap();
        let starts: Vec<u64> = full.entries.iter().map(|e| e.header_offset).collect();
        assert!(matches!(
            full.entries.iter().find(|e| e.path == b"sparse").unwrap().data,
            DataLayout::Sparse(_)
        ));
        let eoa = end_of_archive(&data, &full);
        let cuts = (0..data.len() as u64).step_by(512).flat_map(|b| [b, b + 1, b + 300, b + 511]);
        for cut in cuts.filter(|&c| c < data.len() as u64) {
            let r = walk_bytes(&data[..cut as usize], &Limits::default());
            if starts.contains(&cut) || cut == eoa {
                let w = r.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
                let n = starts.iter().filter(|&&s| s < cut).count();
                assert_eq!(w.entries, full.entries[..n], "cut at {cut}");
                assert_eq!(w.warnings.len(), 1, "cut at {cut}");
                assert!(
                    w.warnings[0].contains("without end-of-archive blocks"),
                    "{:?}",
                    w.warnings
                );
                assert_eq!(w.consumed, cut);
            } else if cut >= eoa + 512 {
                let w = r.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
                assert_eq!(w.entries, full.entries, "cut at {cut}");
                assert!(w.warnings.is_empty());
            } else {
                match r {
                    Err(ScanError::Tar(t)) => {
                        assert!(t.reason.contains("truncated"), "cut at {cut}: {}", t.reason);
                        assert!(t.offset < cut, "cut at {cut}: error at {}", t.offset);
                    }
                    other => panic!("cut at {cut}: {other:?}"),
                }
            }
        }
    }
}

#[test]
fn truncated_data_names_the_entry() {
    let data = Builder::default().entry("some/file", b'0', &[7u8; 3000]).end();
    let (offset, reason) = tar_err(&data[..2000], &Limits::default());
    assert_eq!(offset, 0);
    assert_eq!(
        reason,
        "archive is truncated inside the data of entry \"some/file\" (input ends at 2000)"
    );
}

#[test]
fn bad_checksums() {
    let tmp = tempfile::tempdir().unwrap();
    let data = sample_archives(tmp.path()).remove(0);
    let full = walk_bytes(&data, &Limits::default()).unwrap();
    for e in &full.entries {
        let at = e.header_offset as usize;
        for pos in [at + 150, at + 3, at + 300] {
            let mut bad = data.clone();
            bad[pos] ^= 0x01;
            let (offset, reason) = tar_err(&bad, &Limits::default());
            assert_eq!(offset, at as u64);
            assert!(reason.contains("checksum"), "{reason}");
        }
    }
    // A checksum field that is not a number.
    let mut h = header(b"f", b'0', 0);
    h[148..156].copy_from_slice(b"  xyz  \0");
    let (offset, reason) = tar_err(&Builder::default().raw(&h, &[]).end(), &Limits::default());
    assert_eq!(offset, 0);
    assert!(reason.starts_with("bad header checksum field"), "{reason}");
}

#[test]
fn garbage_after_the_end() {
    let good = Builder::default().entry("f", b'0', b"data").end();
    let mut bad = good.clone();
    bad.extend_from_slice(&[0u8; 512]);
    bad.extend(random_bytes(512, 5));
    let (offset, reason) = tar_err(&bad, &Limits::default());
    assert_eq!(offset, good.len() as u64 + 512);
    assert!(reason.starts_with("trailing garbage after end of archive"), "{reason}");
    // A partial block: garbage if not zero, accepted if zero.
    let mut bad = good.clone();
    bad.extend_from_slice(b"junk");
    let (offset, reason) = tar_err(&bad, &Limits::default());
    assert_eq!(
        (offset, reason.as_str()),
        (good.len() as u64, "trailing garbage after end of archive")
    );
    let mut ok = good.clone();
    ok.extend_from_slice(&[0u8; 100]);
    let w = walk_bytes(&ok, &Limits::default()).unwrap();
    assert_eq!((w.entries.len(), w.consumed), (1, ok.len() as u64));
}

#[test]
fn not_a_tar_file() {
    let text = b"This is not a tar archive, just some text.\n".repeat(40);
    let (offset, reason) = tar_err(&text, &Limits::default());
    assert_eq!(offset, 0);
    assert!(reason.contains("checksum"), "{reason}");
    let (offset, reason) = tar_err(&text[..100], &Limits::default());
    assert_eq!(offset, 0);
    assert!(reason.contains("truncated: header block has only 100 of 512 bytes"), "{reason}");
    // Empty input: no entries, a warning.
    let w = walk_bytes(b"", &Limits::default()).unwrap();
    assert!(w.entries.is_empty() && w.warnings.len() == 1);
}

#[test]
fn absurd_sizes() {
    // The largest octal size, and nothing after the header.
    let h = header(b"big", b'0', 0o77777777777);
    let (offset, reason) = tar_err(&h, &Limits::default());
    assert_eq!(offset, 0);
    assert!(reason.contains("truncated inside the data of entry \"big\""), "{reason}");
    // Base-256 sizes: u64::MAX overflows when padded; a negative size is out of range.
    let mut h = header(b"huge", b'0', 0);
    h[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    seal(&mut h);
    let (_, reason) = tar_err(&h, &Limits::default());
    assert!(reason.contains("entry \"huge\": size 18446744073709551615 overflows"), "{reason}");
    let mut h = header(b"negative", b'0', 0);
    h[124..136].copy_from_slice(&[0xff; 12]);
    seal(&mut h);
    let (_, reason) = tar_err(&h, &Limits::default());
    assert!(reason.contains("entry \"negative\": size field value -1 is out of range"), "{reason}");
    // Other bad fields name the entry and the field.
    let mut h = header(b"badmode", b'0', 0);
    h[100..108].copy_from_slice(b"0006x4\0\0");
    seal(&mut h);
    let (_, reason) = tar_err(&h, &Limits::default());
    assert!(reason.starts_with("entry \"badmode\": bad mode field"), "{reason}");
    let mut h = header(b"biguid", b'0', 0);
    h[108..116].copy_from_slice(&[0x80, 0, 0, 1, 0, 0, 0, 0]);
    seal(&mut h);
    let (_, reason) = tar_err(&h, &Limits::default());
    assert!(
        reason.contains("entry \"biguid\": uid field value 4294967296 is out of range"),
        "{reason}"
    );
}

#[test]
fn hostile_extended_headers() {
    let limits = Limits::default();
    // A PAX header claiming a huge size: refused before anything is allocated.
    let h = header(b"././@PaxHeader", b'x', 0o77777777777);
    let e = walk_err(&h, &limits);
    assert!(
        matches!(
            e,
            ScanError::Limit {
                what: "PAX extended header",
                limit: Limits::DEFAULT_MAX_HEADER_BYTES,
                offset: 0
            }
        ),
        "{e:?}"
    );
    // A record whose length is huge.
    let rec = b"99999999999999999999999 path=x\n";
    let data = Builder::default()
        .raw(&header(b"././@PaxHeader", b'x', rec.len() as u64), rec)
        .entry("f", b'0', b"")
        .end();
    let (offset, reason) = tar_err(&data, &limits);
    assert_eq!(offset, 0);
    assert!(reason.contains("PAX record at byte 0: length out of range"), "{reason}");
    // A value that does not parse.
    let recs = pax_records(&[("path", b"ok"), ("mtime", b"yesterday")]);
    let data = Builder::default()
        .raw(&header(b"././@PaxHeader", b'x', recs.len() as u64), &recs)
        .entry("f", b'0', b"")
        .end();
    let (offset, reason) = tar_err(&data, &limits);
    assert_eq!(offset, 0);
    assert!(reason.contains("bad PAX record mtime=\"yesterday\""), "{reason}");
    let data = Builder::default()
        .entry("first", b'0', b"")
        .pax(b'g', &[("uid", b"-5")])
        .entry("f", b'0', b"")
        .end();
    let (offset, reason) = tar_err(&data, &limits);
    assert_eq!(offset, 512);
    assert_eq!(reason, "PAX global header: bad PAX record uid=\"-5\"");
    // Long-name bombs: GNU long names, long links and PAX globals over max_header_bytes.
    let small = Limits { max_header_bytes: 4096, ..limits };
    for (ty, what) in
        [(b'L', "GNU long name"), (b'K', "GNU long link name"), (b'g', "PAX global header")]
    {
        let mut data = Builder::default().raw(&header(b"././@LongLink", ty, 2 << 20), &[]).end();
        data.resize(3 << 20, b'a');
        let e = walk_err(&data, &small);
        assert!(
            matches!(e, ScanError::Limit { what: w, limit: 4096, offset: 0 } if w == what),
            "{e:?}"
        );
    }
    // A long name just under the limit is fine.
    let name = vec![b'n'; 4000];
    let data = Builder::default()
        .raw(&header(b"././@LongLink", b'L', 4000), &name)
        .entry("short", b'0', b"")
        .end();
    let w = walk_bytes(&data, &small).unwrap();
    assert_eq!(w.entries[0].path, name);
    assert_eq!(w.entries[0].header_offset, 0);
    // Extended headers not followed by their entry.
    let orphan = Builder::default().raw(&header(b"././@LongLink", b'L', 3), b"abc").end();
    let (offset, reason) = tar_err(&orphan, &limits);
    assert_eq!(offset, 0);
    assert!(reason.contains("followed by an end-of-archive block"), "{reason}");
    let (offset, reason) = tar_err(&orphan[..1024], &limits);
    assert_eq!(offset, 0);
    assert!(reason.contains("truncated: extended header is not followed by its entry"), "{reason}");
}

#[test]
fn too_many_entries() {
    let mut b = Builder::default();
    for i in 0..10 {
        b.entry(&format!("f{i}"), b'0', b"x");
    }
    let data = b.end();
    let e = walk_err(&data, &Limits { max_entries: 9, ..Limits::default() });
    assert!(matches!(e, ScanError::Limit { what: "entry count", limit: 9, offset: 9216 }), "{e:?}");
    let w = walk_bytes(&data, &Limits { max_entries: 10, ..Limits::default() }).unwrap();
    assert_eq!(w.entries.len(), 10);
}

/// Serves `data`, then fails with `err` (once).
struct Failing {
    data: io::Cursor<Vec<u8>>,
    err: Option<io::Error>,
}

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.fill_buf()?.len().min(buf.len());
        buf[..n].copy_from_slice(&self.fill_buf()?[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Failing {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.data.position() == self.data.get_ref().len() as u64 {
            if let Some(e) = self.err.take() {
                return Err(e);
            }
        }
        self.data.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        self.data.consume(n)
    }
}

fn walk_failing(err: io::Error) -> ScanError {
    let data = Builder::default().entry("f", b'0', &[1u8; 2000]).end();
    let mut r = Failing { data: io::Cursor::new(data[..1000].to_vec()), err: Some(err) };
    walk_reader(&mut r, &Limits::default()).unwrap_err()
}

#[test]
fn input_errors() {
    let e = walk_failing(io::Error::other("disk on fire"));
    assert!(matches!(&e, ScanError::Io(io) if io.to_string() == "disk on fire"), "{e:?}");
    let e = walk_failing(io::Error::new(io::ErrorKind::UnexpectedEof, "short"));
    assert!(
        matches!(&e, ScanError::Tar(t) if t.offset == 1000 && t.reason.contains("truncated")),
        "{e:?}"
    );
    let gz = GzipError { offset: 77, reason: "bad deflate block".into() };
    let e = walk_failing(io::Error::new(io::ErrorKind::InvalidData, gz));
    assert!(matches!(&e, ScanError::Gzip(g) if g.offset == 77), "{e:?}");
    let limit = ScanError::Limit { what: "uncompressed size", limit: 5, offset: 6 };
    let e = walk_failing(io::Error::other(limit));
    assert!(matches!(e, ScanError::Limit { what: "uncompressed size", .. }), "{e:?}");
    // Interrupted reads are retried.
    let data = Builder::default().entry("f", b'0', b"x").end();
    let mut r = Failing {
        data: io::Cursor::new(data),
        err: Some(io::Error::from(io::ErrorKind::Interrupted)),
    };
    assert_eq!(walk_reader(&mut r, &Limits::default()).unwrap().entries.len(), 1);
}

#[test]
fn callback_errors_stop_the_walk() {
    let data = Builder::default().entry("a", b'0', b"x").entry("b", b'0', b"y").end();
    let mut seen = 0;
    let r = crate::archive::tar::walk(
        &mut &data[..],
        &Limits::default(),
        &mut |_| {
            seen += 1;
            Err(ScanError::Limit { what: "test", limit: 0, offset: 0 })
        },
        &mut |_| {},
    );
    assert!(matches!(r, Err(ScanError::Limit { what: "test", .. })));
    assert_eq!(seen, 1);
}
