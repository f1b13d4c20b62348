//! Hand-built archives for what GNU tar does not write on its own (or writes only with odd
//! options), checked against GNU tar's extraction where it has an opinion.

use std::fs;
use std::path::Path;

use super::*;
use crate::archive::SparseSegment;

/// Writes `v` as zero-padded octal, NUL-terminated, into `f`.
pub(in crate::archive::tar) fn octal(f: &mut [u8], v: u64) {
    let s = format!("{v:0w$o}\0", w = f.len() - 1);
    assert_eq!(s.len(), f.len(), "{v} does not fit");
    f.copy_from_slice(s.as_bytes());
}

/// Recomputes the checksum of a header block.
pub(in crate::archive::tar) fn seal(b: &mut [u8; 512]) {
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&c| u32::from(c)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
}

/// A ustar header: mode 0644, uid/gid 1000, mtime 1_000_000_000.
pub(in crate::archive::tar) fn header(name: &[u8], ty: u8, size: u64) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[..name.len()].copy_from_slice(name);
    octal(&mut b[100..108], 0o644);
    octal(&mut b[108..116], 1000);
    octal(&mut b[116..124], 1000);
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], 1_000_000_000);
    b[156] = ty;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    seal(&mut b);
    b
}

/// PAX records, each `LEN key=value\n`.
pub(in crate::archive::tar) fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3; // the blank, '=' and the newline
        let mut n = body + 1;
        while n.to_string().len() + body != n {
            n += 1;
        }
        out.extend(format!("{n} {k}=").bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// Builds an archive block by block.
#[derive(Default)]
pub(in crate::archive::tar) struct Builder {
    pub out: Vec<u8>,
}

impl Builder {
    /// A header (as is) and its data, padded.
    pub fn raw(&mut self, h: &[u8; 512], data: &[u8]) -> &mut Self {
        self.out.extend_from_slice(h);
        self.out.extend_from_slice(data);
        self.pad()
    }

    pub fn pad(&mut self) -> &mut Self {
        let rem = self.out.len() % 512;
        if rem != 0 {
            self.out.resize(self.out.len() + 512 - rem, 0);
        }
        self
    }

    /// An entry of type `ty` with `data`.
    pub fn entry(&mut self, name: &str, ty: u8, data: &[u8]) -> &mut Self {
        self.raw(&header(name.as_bytes(), ty, data.len() as u64), data)
    }

    /// A link (hard or symbolic) to `target`.
    pub fn link(&mut self, name: &str, ty: u8, target: &str) -> &mut Self {
        let mut h = header(name.as_bytes(), ty, 0);
        h[157..157 + target.len()].copy_from_slice(target.as_bytes());
        seal(&mut h);
        self.raw(&h, &[])
    }

    /// A PAX header (`x` or `g`) with these records.
    pub fn pax(&mut self, ty: u8, records: &[(&str, &[u8])]) -> &mut Self {
        let data = pax_records(records);
        self.raw(&header(b"././@PaxHeader", ty, data.len() as u64), &data)
    }

    /// The two end-of-archive blocks.
    pub fn end(&mut self) -> Vec<u8> {
        self.out.extend_from_slice(&[0u8; 1024]);
        std::mem::take(&mut self.out)
    }
}

/// Writes `data` to a file in `dir`, walks it, and compares with GNU tar's extraction.
fn walk_and_compare(dir: &Path, data: &[u8]) -> Walked {
    let p = dir.join("crafted.tar");
    fs::write(&p, data).unwrap();
    let w = walk_file(&p);
    compare_with_gnu_tar(&p, &w, Oracle::default());
    w
}

fn paths(w: &Walked) -> Vec<String> {
    w.entries.iter().map(|e| String::from_utf8_lossy(&e.path).into_owned()).collect()
}

#[test]
fn hardlink_chains_and_old_style_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let data = Builder::default()
        .entry("olddir/", b'0', b"")
        .entry("olddir/a", b'0', b"content of a")
        .link("olddir/b", b'1', "olddir/a")
        .link("c", b'1', "./olddir//b")
        .entry("dumpdir", b'D', b"Yfile\0\0")
        .end();
    let w = walk_and_compare(tmp.path(), &data);
    assert_eq!(paths(&w), ["olddir", "olddir/a", "olddir/b", "c", "dumpdir"]);
    assert_eq!(w.entries[0].kind, EntryKind::Dir);
    assert_eq!(w.entries[3].link_target.as_deref(), Some(&b"olddir/b"[..]));
    assert_eq!(w.entries[4].kind, EntryKind::Dir);
}

#[test]
fn directory_size_is_not_data() {
    // GNU tar never skips data after a directory header, whatever its size field says.
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Builder::default();
    b.raw(&header(b"dir/", b'5', 4096), &[]);
    b.entry("dir/f", b'0', b"after the directory");
    let w = walk_and_compare(tmp.path(), &b.end());
    assert_eq!(paths(&w), ["dir", "dir/f"]);
    assert_eq!(w.entries[0].data, DataLayout::None);
}

#[test]
fn unknown_types_volume_labels_and_multivolume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = Builder::default()
        .entry("label", b'V', b"")
        .entry("weird", b'Z', b"read as a regular file")
        .entry("plain", b'0', b"x")
        .end();
    let w = walk_and_compare(tmp.path(), &data);
    assert_eq!(paths(&w), ["weird", "plain"]);
    assert_eq!(w.entries[0].kind, EntryKind::File);
    assert_eq!(w.warnings.len(), 1, "{:?}", w.warnings);
    assert!(w.warnings[0].contains("unknown type 'Z'"), "{:?}", w.warnings);

    // A label written by GNU tar itself.
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"labelled").unwrap();
    let archive = tmp.path().join("v.tar");
    tar(
        tmp.path(),
        &["-cf", archive.to_str().unwrap(), "-V", "My Volume", "-C", src.to_str().unwrap(), "f"],
    );
    let w = walk_file(&archive);
    assert_eq!(paths(&w), ["f"]);
    compare_with_gnu_tar(&archive, &w, Oracle::default());

    let data = Builder::default().entry("part", b'M', b"continued").end();
    let (offset, reason) = tar_err(&data, &Limits::default());
    assert_eq!(offset, 0);
    assert!(reason.contains("\"part\"") && reason.contains("multi-volume"), "{reason}");
}

#[test]
fn names_escaping_the_root_are_dropped() {
    let data = Builder::default()
        .entry("./", b'5', b"")
        .entry("../evil", b'0', b"outside")
        .entry("a/../../evil2", b'0', b"outside")
        .entry("/abs/ok", b'0', b"inside")
        .entry("x/../y", b'0', b"resolved")
        .entry("..", b'5', b"")
        .entry(".", b'0', b"a file cannot be the root")
        .link("h", b'1', "../outside")
        .link("h2", b'1', "./")
        .link("s", b'2', "../../symlink targets are kept raw")
        .entry("last", b'0', b"still read")
        .end();
    let w = walk_bytes(&data, &Limits::default()).unwrap();
    assert_eq!(paths(&w), ["", "abs/ok", "y", "s", "last"]);
    assert_eq!(
        w.entries[3].link_target.as_deref(),
        Some(&b"../../symlink targets are kept raw"[..])
    );
    let dropped: Vec<_> = w.warnings.iter().filter(|m| m.contains("dropped")).collect();
    assert_eq!(dropped.len(), 6, "{:?}", w.warnings);
    assert!(
        w.warnings[0].contains("\"../evil\" dropped: its name escapes the archive root"),
        "{:?}",
        w.warnings
    );
    assert!(w.warnings[0].starts_with("entry at offset 512:"), "{:?}", w.warnings);
    // Data of dropped entries was skipped: "last" has the right bytes.
    let last = w.entries.last().unwrap();
    let DataLayout::Contiguous { offset } = last.data else { panic!() };
    assert_eq!(&data[offset as usize..offset as usize + 10], b"still read");
}

#[test]
fn pax_globals_locals_and_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    let long_target = "t".repeat(300);
    let data = Builder::default()
        .pax(b'g', &[("mtime", b"1234567890.25"), ("uid", b"77"), ("comment", b"ignored")])
        .entry("g1", b'0', b"one")
        .pax(b'x', &[("mtime", b"1500000000"), ("gid", b"88"), ("path", b"renamed/by/pax")])
        .entry("ignored-name", b'0', b"two")
        .pax(b'x', &[("linkpath", long_target.as_bytes())])
        .link("sym", b'2', "short")
        // A later global header replaces the earlier one.
        .pax(b'g', &[("gid", b"99")])
        .entry("g2", b'0', b"three")
        .pax(b'x', &[("size", b"5")])
        .raw(&header(b"sized-by-pax", b'0', 0), b"five!")
        .end();
    let w = walk_and_compare(tmp.path(), &data);
    let got: Vec<_> = w
        .entries
        .iter()
        .map(|e| (e.path.clone(), e.uid, e.gid, e.mtime, e.mtime_nsec, e.size))
        .collect();
    assert_eq!(
        got,
        [
            (b"g1".to_vec(), 77, 1000, 1234567890, 250_000_000, 3),
            (b"renamed/by/pax".to_vec(), 77, 88, 1500000000, 0, 3),
            (b"sym".to_vec(), 77, 1000, 1234567890, 250_000_000, 0),
            (b"g2".to_vec(), 1000, 99, 1_000_000_000, 0, 5),
            (b"sized-by-pax".to_vec(), 1000, 99, 1_000_000_000, 0, 5),
        ]
    );
    assert_eq!(w.entries[2].link_target.as_deref(), Some(long_target.as_bytes()));
    // The entry's header offset includes its extended header, never a global one.
    assert_eq!(w.entries[1].header_offset, 2048);
}

#[test]
fn signed_checksums_and_numeric_oddities() {
    let tmp = tempfile::tempdir().unwrap();
    // Historic tars summed the bytes as signed chars.
    let mut h = header("caf\u{e9}-signed".as_bytes(), b'0', 4);
    h[148..156].fill(b' ');
    let signed: i32 = h.iter().map(|&c| i32::from(c as i8)).sum();
    h[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
    // Base-256 mtime (negative) and uid in a ustar header, leading blanks in gid.
    let mut h2 = header(b"base256", b'0', 0);
    h2[136..148]
        .copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0x00]);
    h2[108..116].copy_from_slice(&[0x80, 0, 0, 0, 0, 0x30, 0, 0]);
    h2[116..124].copy_from_slice(b"   1750\0");
    seal(&mut h2);
    let data = Builder::default().raw(&h, b"data").raw(&h2, &[]).end();
    let w = walk_and_compare(tmp.path(), &data);
    assert_eq!(w.entries.len(), 2);
    assert_eq!((w.entries[1].mtime, w.entries[1].uid, w.entries[1].gid), (-512, 0x300000, 0o1750));
}

/// Sparse data as GNU tar stores it: each run padded to a block, except the last.
fn runs_data(runs: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        out.extend_from_slice(r);
        if i + 1 < runs.len() {
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    out
}

/// A PAX sparse 0.1 entry with this map, realsize and runs.
fn pax_sparse(map: &str, realsize: u64, runs: &[&[u8]]) -> Vec<u8> {
    let real = realsize.to_string();
    let blocks = (map.split(',').count() / 2).to_string();
    Builder::default()
        .pax(
            b'x',
            &[
                ("GNU.sparse.major", b"0"),
                ("GNU.sparse.minor", b"1"),
                ("GNU.sparse.name", b"sparse"),
                ("GNU.sparse.realsize", real.as_bytes()),
                ("GNU.sparse.numblocks", blocks.as_bytes()),
                ("GNU.sparse.map", map.as_bytes()),
            ],
        )
        .entry("sparse", b'0', &runs_data(runs))
        .end()
}

#[test]
fn pax_sparse_maps_are_validated() {
    let tmp = tempfile::tempdir().unwrap();
    let good = pax_sparse("0,3,100,2,200,0", 200, &[b"abc", b"de"]);
    let w = walk_and_compare(tmp.path(), &good);
    assert_eq!(
        w.entries[0].data,
        DataLayout::Sparse(vec![
            SparseSegment { logical: 0, len: 3, stream_offset: 1536 },
            SparseSegment { logical: 100, len: 2, stream_offset: 2048 },
        ])
    );
    for (map, why) in [
        ("100,2,0,3", "precedes"),
        ("0,3,2,2", "overlaps"),
        ("0,3,199,2", "beyond the real size"),
        ("0,3,100,3", "need more than the 514 bytes stored"),
        ("18446744073709551615,1", "overflows"),
    ] {
        let (offset, reason) = tar_err(&pax_sparse(map, 200, &[b"abc", b"de"]), &Limits::default());
        assert_eq!(offset, 1024, "{map}");
        assert!(reason.contains("entry \"sparse\"") && reason.contains(why), "{map}: {reason}");
    }
}

/// A PAX sparse 1.0 entry whose data starts with `map_text`.
fn pax_sparse_1(map_text: &[u8], realsize: u64, runs: &[&[u8]]) -> Vec<u8> {
    let real = realsize.to_string();
    let mut data = map_text.to_vec();
    data.resize(map_text.len().div_ceil(512) * 512, 0);
    data.extend_from_slice(&runs_data(runs));
    Builder::default()
        .pax(
            b'x',
            &[
                ("GNU.sparse.major", b"1"),
                ("GNU.sparse.minor", b"0"),
                ("GNU.sparse.name", b"real/name"),
                ("GNU.sparse.realsize", real.as_bytes()),
            ],
        )
        .entry("GNUSparseFile.0/name", b'0', &data)
        .end()
}

#[test]
fn pax_sparse_1_0_maps() {
    let tmp = tempfile::tempdir().unwrap();
    let w = walk_and_compare(
        tmp.path(),
        &pax_sparse_1(b"3\n10\n3\n50\n2\n60\n0\n", 60, &[b"abc", b"de"]),
    );
    assert_eq!(w.entries[0].path, b"real/name");
    assert_eq!(w.entries[0].size, 60);
    assert_eq!(
        w.entries[0].data,
        DataLayout::Sparse(vec![
            SparseSegment { logical: 10, len: 3, stream_offset: 2048 },
            SparseSegment { logical: 50, len: 2, stream_offset: 2560 },
        ])
    );
    // A map longer than one block.
    let mut text = b"101\n".to_vec();
    for i in 0..100 {
        text.extend(format!("{}\n1\n", i * 1000).bytes());
    }
    text.extend(b"100000\n0\n");
    let runs: Vec<&[u8]> = (0..100).map(|_| &b"\x07"[..]).collect();
    let w = walk_and_compare(tmp.path(), &pax_sparse_1(&text, 100_000, &runs));
    let DataLayout::Sparse(segs) = &w.entries[0].data else { panic!() };
    assert_eq!(segs.len(), 100);
    assert_eq!(segs[99].stream_offset, 1536 + 1024 + 99 * 512);

    for (text, why) in [
        (&b"2\n10\n3\n5\n2\n"[..], "precedes"),
        (b"1\n10\nx\n", "digit"),
        (b"1\n\n", "empty number"),
        (b"9\n", "byte 0x00"),
    ] {
        let (offset, reason) = tar_err(&pax_sparse_1(text, 60, &[b"abcde"]), &Limits::default());
        assert_eq!(offset, 1024);
        assert!(reason.contains("entry \"real/name\"") && reason.contains(why), "{reason}");
    }
    // A map still incomplete where the entry's data ends.
    let mut text = b"1000\n10\n".to_vec();
    text.extend(b"1\n".repeat(252));
    let (_, reason) = tar_err(&pax_sparse_1(&text, 60, &[]), &Limits::default());
    assert!(reason.contains("sparse map runs past the 512 bytes of data"), "{reason}");

    let small = Limits { max_header_bytes: 1024, ..Limits::default() };
    let e = walk_err(&pax_sparse_1(b"1000\n", 60, &[&[0u8; 2048]]), &small);
    assert!(
        matches!(e, ScanError::Limit { what: "sparse map", limit: 1024, offset: 1024 }),
        "{e:?}"
    );
}

/// An old-GNU sparse header with these descriptors (all in the header).
fn old_gnu_sparse(map: &[(u64, u64)], realsize: u64, runs: &[&[u8]]) -> Vec<u8> {
    let stored = runs_data(runs);
    let mut h = header(b"oldsparse", b'S', stored.len() as u64);
    h[257..265].copy_from_slice(b"ustar  \0");
    for (i, &(off, len)) in map.iter().enumerate() {
        octal(&mut h[386 + 24 * i..398 + 24 * i], off);
        octal(&mut h[398 + 24 * i..410 + 24 * i], len);
    }
    octal(&mut h[483..495], realsize);
    seal(&mut h);
    Builder::default().raw(&h, &stored).end()
}

#[test]
fn old_gnu_sparse_maps_are_validated() {
    let tmp = tempfile::tempdir().unwrap();
    let w = walk_and_compare(
        tmp.path(),
        &old_gnu_sparse(&[(5, 2), (600, 3), (1000, 0)], 1000, &[b"ab", b"cde"]),
    );
    assert_eq!(w.entries[0].size, 1000);
    let (offset, reason) =
        tar_err(&old_gnu_sparse(&[(600, 3), (5, 2)], 1000, &[b"abc", b"de"]), &Limits::default());
    assert_eq!(offset, 0);
    assert!(reason.contains("entry \"oldsparse\"") && reason.contains("precedes"), "{reason}");
    let (_, reason) =
        tar_err(&old_gnu_sparse(&[(5, 2), (999, 3)], 1000, &[b"ab", b"cde"]), &Limits::default());
    assert!(reason.contains("beyond the real size"), "{reason}");

    // Extension blocks beyond the header limit.
    let mut h = header(b"ext", b'S', 0);
    h[257..265].copy_from_slice(b"ustar  \0");
    for i in 0..4 {
        octal(&mut h[386 + 24 * i..398 + 24 * i], 0);
        octal(&mut h[398 + 24 * i..410 + 24 * i], 0);
    }
    h[482] = 1;
    seal(&mut h);
    let mut ext = [0u8; 512];
    for i in 0..21 {
        octal(&mut ext[24 * i..24 * i + 12], 0);
        octal(&mut ext[24 * i + 12..24 * i + 24], 0);
    }
    ext[504] = 1;
    let mut data = h.to_vec();
    for _ in 0..4 {
        data.extend_from_slice(&ext);
    }
    let small = Limits { max_header_bytes: 1024, ..Limits::default() };
    let e = walk_err(&data, &small);
    assert!(matches!(e, ScanError::Limit { what: "sparse map", offset: 0, .. }), "{e:?}");
    let (offset, reason) = tar_err(&data, &Limits::default());
    assert_eq!(offset, 0);
    assert!(
        reason.contains("truncated") && reason.contains("sparse map of entry \"ext\""),
        "{reason}"
    );
}

#[test]
fn path_length_limit() {
    let data = Builder::default().entry("a/bbbbbbbbbb", b'0', b"").end();
    let e = walk_err(&data, &Limits { max_path_len: 11, ..Limits::default() });
    assert!(matches!(e, ScanError::Limit { what: "path length", limit: 11, offset: 0 }), "{e:?}");
    assert_eq!(
        walk_bytes(&data, &Limits { max_path_len: 12, ..Limits::default() }).unwrap().entries.len(),
        1
    );
}
