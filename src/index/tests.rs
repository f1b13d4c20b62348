//! Tests of the index: builder semantics, format round trips, corruption and truncation.
//! Sub-modules: `model` (proptest against a flat path model), `oracle` (GNU tar extraction),
//! `measure` (ignored measurements: window levels, load time, corpus size).

mod measure;
mod model;
mod oracle;

use super::*;
use crate::archive::{DataLayout, ScannedEntry};
use crate::gzip::AccessPoint;

pub(super) const DEFAULT_MTIME: i64 = 1_700_000_000;
pub(super) const STREAM: u64 = 1 << 40;

pub(super) fn entry(path: &str, kind: EntryKind) -> ScannedEntry {
    ScannedEntry {
        path: path.as_bytes().to_vec(),
        kind,
        mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
        uid: 1000,
        gid: 1000,
        mtime: 1_600_000_000,
        mtime_nsec: 0,
        size: 0,
        data: DataLayout::None,
        link_target: None,
        rdev: (0, 0),
        xattrs: Vec::new(),
        header_offset: 0,
    }
}

pub(super) fn file(path: &str, offset: u64, size: u64) -> ScannedEntry {
    ScannedEntry { size, data: DataLayout::Contiguous { offset }, ..entry(path, EntryKind::File) }
}

pub(super) fn dir(path: &str) -> ScannedEntry {
    entry(path, EntryKind::Dir)
}

pub(super) fn symlink(path: &str, target: &str) -> ScannedEntry {
    ScannedEntry {
        link_target: Some(target.as_bytes().to_vec()),
        size: 0,
        ..entry(path, EntryKind::Symlink)
    }
}

pub(super) fn hardlink(path: &str, target: &str) -> ScannedEntry {
    ScannedEntry {
        link_target: Some(target.as_bytes().to_vec()),
        ..entry(path, EntryKind::Hardlink)
    }
}

pub(super) fn identity() -> ArchiveIdentity {
    ArchiveIdentity { size: 123_456, mtime_sec: 1_700_000_123, mtime_nsec: 42, digest: [7; 32] }
}

/// Builds an index from `entries` (no points); returns it and the warning of each entry.
pub(super) fn build(entries: Vec<ScannedEntry>) -> (Index, Vec<Option<String>>) {
    let mut b = IndexBuilder::new(DEFAULT_MTIME);
    let warnings = entries.into_iter().map(|e| b.add_entry(e)).collect();
    let index = b.finish(identity(), Compression::Gzip, 1 << 20, STREAM).unwrap();
    (index, warnings)
}

fn ino(index: &Index, path: &str) -> Ino {
    index.resolve(path.as_bytes()).unwrap_or_else(|| panic!("{path} not found"))
}

fn names(index: &Index, dir: Ino) -> Vec<String> {
    index.children(dir, 0).map(|(n, _)| String::from_utf8_lossy(n).into_owned()).collect()
}

fn window(seed: u32, len: usize) -> Vec<u8> {
    // Compressible but not trivial: words from a small vocabulary, chosen by an LCG.
    let words: [&[u8]; 8] =
        [b"import ", b"def ", b"self", b"return ", b"(x, y)", b"\n    ", b"0x7f45", b"numpy"];
    let mut out = Vec::with_capacity(len);
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    while out.len() < len {
        s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
        out.extend_from_slice(words[(s >> 16) as usize % words.len()]);
        out.push((s >> 8) as u8);
    }
    out.truncate(len);
    out
}

pub(super) fn point(uncompressed: u64, window_len: usize) -> AccessPoint {
    AccessPoint {
        uncompressed,
        compressed: uncompressed / 3,
        bits: (uncompressed % 8) as u8,
        window: window(uncompressed as u32, window_len),
    }
}

/// A small index exercising every section: dirs, files, a sparse file, a symlink, a hard
/// link, devices, xattrs, points with and without windows, warnings.
pub(super) fn sample() -> Index {
    let mut b = IndexBuilder::new(DEFAULT_MTIME);
    let mut f = file("usr/lib/libx.so", 4096, 1000);
    f.xattrs =
        vec![(b"user.a".to_vec(), b"1".to_vec()), (b"security.capability".to_vec(), vec![0, 1, 2])];
    let entries = vec![
        dir(""),
        dir("usr"),
        f,
        file("usr/lib/empty", 0, 0),
        ScannedEntry {
            size: 10_000,
            data: DataLayout::Sparse(vec![
                SparseSegment { logical: 0, len: 512, stream_offset: 8192 },
                SparseSegment { logical: 8192, len: 100, stream_offset: 9216 },
            ]),
            ..entry("usr/sparse", EntryKind::File)
        },
        symlink("usr/lib/libx.so.1", "libx.so"),
        hardlink("usr/bin-link", "usr/lib/libx.so"),
        ScannedEntry { rdev: (8, 1), ..entry("dev/sda1", EntryKind::BlockDev) },
        ScannedEntry { rdev: (1, 3), ..entry("dev/null", EntryKind::CharDev) },
        entry("run/fifo", EntryKind::Fifo),
        hardlink("broken", "missing"),
    ];
    for e in entries {
        b.add_entry(e);
    }
    b.add_point(AccessPoint { uncompressed: 0, compressed: 0, bits: 0, window: Vec::new() });
    b.add_point(point(1 << 20, 32 * 1024));
    b.add_point(point(2 << 20, 100));
    b.add_warning("scan: something odd".into());
    b.finish(identity(), Compression::Gzip, 1 << 20, 3 << 20).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Builder semantics.

#[test]
fn missing_parents_become_implicit_directories() {
    let (index, warnings) = build(vec![file("a/b/c", 0, 5)]);
    assert_eq!(warnings, vec![None]);
    for (path, nlink) in [("a", 3), ("a/b", 2)] {
        let attr = index.attr(ino(&index, path)).unwrap();
        assert_eq!(attr.kind, EntryKind::Dir);
        assert_eq!((attr.mode, attr.uid, attr.gid), (0o755, 0, 0));
        assert_eq!((attr.mtime, attr.mtime_nsec), (DEFAULT_MTIME, 0));
        assert_eq!(attr.nlink, nlink);
    }
    let root = index.attr(ROOT_INO).unwrap();
    assert_eq!(
        (root.kind, root.mode, root.mtime, root.nlink),
        (EntryKind::Dir, 0o755, DEFAULT_MTIME, 3)
    );
    let c = index.attr(ino(&index, "a/b/c")).unwrap();
    assert_eq!((c.kind, c.size, c.mode, c.uid, c.nlink), (EntryKind::File, 5, 0o644, 1000, 1));
    assert_eq!(index.stats().inodes, 4);
    assert_eq!(index.stats().dirents, 3);
}

#[test]
fn root_entry_sets_root_attributes() {
    let mut root = dir("");
    root.mode = 0o700;
    root.uid = 5;
    root.mtime = 99;
    root.mtime_nsec = 7;
    root.xattrs = vec![(b"user.x".to_vec(), b"y".to_vec())];
    let (index, warnings) = build(vec![file("f", 0, 1), root]);
    assert_eq!(warnings, vec![None, None]);
    let attr = index.attr(ROOT_INO).unwrap();
    assert_eq!((attr.mode, attr.uid, attr.mtime, attr.mtime_nsec), (0o700, 5, 99, 7));
    assert_eq!(index.xattrs(ROOT_INO), vec![(&b"user.x"[..], &b"y"[..])]);
    assert_eq!(names(&index, ROOT_INO), ["f"]);
}

#[test]
fn root_entry_that_is_not_a_directory_is_dropped() {
    let (index, warnings) = build(vec![file("", 0, 1)]);
    assert!(warnings[0].as_deref().unwrap().contains("root"));
    assert_eq!(index.attr(ROOT_INO).unwrap().kind, EntryKind::Dir);
    assert_eq!(index.stats().inodes, 1);
    assert_eq!(index.warnings(), vec![warnings[0].clone().unwrap()]);
}

#[test]
fn duplicate_file_last_wins() {
    let (index, warnings) = build(vec![file("f", 0, 1), file("f", 512, 7)]);
    assert_eq!(warnings, vec![None, None]);
    let f = ino(&index, "f");
    assert_eq!(index.attr(f).unwrap().size, 7);
    assert_eq!(index.data(f), Data::Contiguous(512));
    assert_eq!(index.stats().inodes, 2, "the replaced inode is not stored");
}

#[test]
fn directory_over_directory_updates_attributes_and_keeps_children() {
    let mut second = dir("d");
    second.mode = 0o750;
    second.mtime = 42;
    let (index, warnings) = build(vec![dir("d"), file("d/x", 0, 1), second]);
    assert_eq!(warnings, vec![None, None, None]);
    let d = index.attr(ino(&index, "d")).unwrap();
    assert_eq!((d.mode, d.mtime), (0o750, 42));
    assert_eq!(names(&index, d.ino), ["x"]);
}

#[test]
fn directory_over_implicit_directory_sets_its_attributes() {
    let mut d = dir("a");
    d.mode = 0o711;
    let (index, _) = build(vec![file("a/f", 0, 1), d]);
    let a = index.attr(ino(&index, "a")).unwrap();
    assert_eq!((a.mode, a.uid, a.mtime), (0o711, 1000, 1_600_000_000));
    assert_eq!(names(&index, a.ino), ["f"]);
}

#[test]
fn file_over_non_empty_directory_drops_the_subtree_with_a_warning() {
    let (index, warnings) = build(vec![
        dir("d"),
        file("d/x", 0, 1),
        dir("d/sub"),
        file("d/sub/y", 0, 1),
        file("d", 0, 3),
    ]);
    let w = warnings[4].as_deref().unwrap();
    assert!(w.contains("'d'") && w.contains("3 names"), "{w}");
    let d = index.attr(ino(&index, "d")).unwrap();
    assert_eq!((d.kind, d.size), (EntryKind::File, 3));
    assert_eq!(index.resolve(b"d/x"), None);
    assert_eq!(index.stats().inodes, 2);
    assert_eq!(index.warnings(), vec![w.to_string()]);
}

#[test]
fn file_over_empty_directory_is_silent() {
    let (index, warnings) = build(vec![dir("d"), file("d", 0, 3)]);
    assert_eq!(warnings, vec![None, None]);
    assert_eq!(index.attr(ino(&index, "d")).unwrap().kind, EntryKind::File);
}

#[test]
fn directory_over_file_replaces_it() {
    let (index, warnings) = build(vec![file("f", 0, 3), dir("f"), file("f/x", 0, 1)]);
    assert_eq!(warnings, vec![None, None, None]);
    assert_eq!(index.attr(ino(&index, "f")).unwrap().kind, EntryKind::Dir);
    assert_eq!(names(&index, ino(&index, "f")), ["x"]);
}

#[test]
fn entry_under_a_non_directory_replaces_the_parent_with_a_warning() {
    let (index, warnings) = build(vec![file("a", 0, 3), symlink("a/b/c", "t")]);
    let w = warnings[1].as_deref().unwrap();
    assert!(w.contains("parent 'a'") && w.contains("regular file"), "{w}");
    let a = index.attr(ino(&index, "a")).unwrap();
    assert_eq!((a.kind, a.mode, a.uid, a.mtime), (EntryKind::Dir, 0o755, 0, DEFAULT_MTIME));
    assert_eq!(index.attr(ino(&index, "a/b/c")).unwrap().kind, EntryKind::Symlink);
}

#[test]
fn hard_link_shares_the_inode() {
    let (index, warnings) = build(vec![file("t", 0, 4), hardlink("sub/l", "t")]);
    assert_eq!(warnings, vec![None, None]);
    let (t, l) = (ino(&index, "t"), ino(&index, "sub/l"));
    assert_eq!(t, l);
    let attr = index.attr(t).unwrap();
    assert_eq!((attr.kind, attr.nlink, attr.size), (EntryKind::File, 2, 4));
    assert_eq!(index.stats().inodes, 3); // root, t, sub: no inode of its own for the link
}

#[test]
fn hard_link_keeps_the_inode_its_target_had_when_seen() {
    let (index, _) = build(vec![file("t", 0, 1), hardlink("l", "t"), file("t", 512, 2)]);
    let (t, l) = (ino(&index, "t"), ino(&index, "l"));
    assert_ne!(t, l);
    assert_eq!((index.attr(l).unwrap().size, index.attr(l).unwrap().nlink), (1, 1));
    assert_eq!((index.attr(t).unwrap().size, index.attr(t).unwrap().nlink), (2, 1));
    assert_eq!(index.data(l), Data::Contiguous(0));
}

#[test]
fn hard_link_to_a_missing_path_is_dropped_without_creating_parents() {
    let (index, warnings) = build(vec![hardlink("d/l", "nope")]);
    assert!(warnings[0].as_deref().unwrap().contains("does not exist"));
    assert_eq!(index.resolve(b"d"), None);
    assert_eq!(index.stats().inodes, 1);
}

#[test]
fn hard_link_to_a_directory_is_dropped() {
    let (index, warnings) = build(vec![dir("d"), hardlink("l", "d")]);
    assert!(warnings[1].as_deref().unwrap().contains("directory"));
    assert_eq!(index.resolve(b"l"), None);
    let (_, warnings) = build(vec![hardlink("l", "")]);
    assert!(warnings[0].is_some());
    let (_, warnings) = build(vec![hardlink("l", "f/x"), hardlink("m", "f"), file("f", 0, 1)]);
    assert!(warnings[0].is_some() && warnings[1].is_some());
    let mut no_target = hardlink("l", "");
    no_target.link_target = None;
    let (_, warnings) = build(vec![no_target]);
    assert!(warnings[0].as_deref().unwrap().contains("without a target"));
}

#[test]
fn links_to_links_resolve_to_the_same_inode() {
    let (index, _) = build(vec![file("t", 0, 1), hardlink("l1", "t"), hardlink("l2", "l1")]);
    let t = ino(&index, "t");
    assert_eq!(ino(&index, "l1"), t);
    assert_eq!(ino(&index, "l2"), t);
    assert_eq!(index.attr(t).unwrap().nlink, 3);
}

#[test]
fn hard_link_to_a_symlink_is_a_symlink() {
    let (index, _) = build(vec![symlink("s", "target"), hardlink("l", "s")]);
    let attr = index.attr(ino(&index, "l")).unwrap();
    assert_eq!((attr.kind, attr.nlink, attr.size), (EntryKind::Symlink, 2, 6));
    assert_eq!(index.symlink_target(attr.ino), Some(&b"target"[..]));
}

#[test]
fn replacing_a_link_name_lowers_the_link_count() {
    let (index, _) = build(vec![file("t", 0, 1), hardlink("l", "t"), file("l", 0, 9)]);
    assert_eq!(index.attr(ino(&index, "t")).unwrap().nlink, 1);
    assert_eq!(index.attr(ino(&index, "l")).unwrap().size, 9);
    // A self link changes nothing.
    let (index, warnings) = build(vec![file("t", 0, 1), hardlink("t", "t")]);
    assert_eq!(warnings, vec![None, None]);
    assert_eq!(index.attr(ino(&index, "t")).unwrap().nlink, 1);
}

#[test]
fn linked_file_survives_the_drop_of_its_directory() {
    let (index, warnings) =
        build(vec![dir("d"), file("d/x", 0, 4), hardlink("y", "d/x"), file("d", 0, 1)]);
    assert!(warnings[3].is_some());
    let y = index.attr(ino(&index, "y")).unwrap();
    assert_eq!((y.size, y.nlink), (4, 1));
    assert_eq!(index.stats().inodes, 3); // root, d (file), y
}

#[test]
fn inode_numbers_are_breadth_first_in_name_order() {
    let (index, _) = build(vec![file("b/x", 0, 1), file("a", 0, 1), file("b/a", 0, 1), dir("b/c")]);
    let got: Vec<(&str, Ino)> =
        ["", "a", "b", "b/a", "b/c", "b/x"].iter().map(|p| (*p, ino(&index, p))).collect();
    assert_eq!(got, [("", 1), ("a", 2), ("b", 3), ("b/a", 4), ("b/c", 5), ("b/x", 6)]);
    for i in 1..=6 {
        assert!(index.attr(i).is_some());
    }
    assert_eq!(index.attr(0), None);
    assert_eq!(index.attr(7), None);
}

#[test]
fn names_sort_bytewise() {
    let entries = ["b", "B", "a", "é", "a.b", "a-b", "_"].map(|n| file(n, 0, 1)).to_vec();
    let (index, _) = build(entries);
    let mut expected: Vec<Vec<u8>> =
        ["b", "B", "a", "é", "a.b", "a-b", "_"].iter().map(|n| n.as_bytes().to_vec()).collect();
    expected.sort();
    let got: Vec<Vec<u8>> = index.children(ROOT_INO, 0).map(|(n, _)| n.to_vec()).collect();
    assert_eq!(got, expected);
    for name in &expected {
        assert!(index.lookup(ROOT_INO, name).is_some());
    }
}

#[test]
fn same_tree_from_different_orders_gives_identical_bytes() {
    let a = vec![
        dir("d"),
        file("d/x", 0, 1),
        file("d/y", 512, 2),
        symlink("s", "d/x"),
        hardlink("h", "d/y"),
    ];
    let b = vec![
        file("d/y", 512, 2),
        symlink("s", "d/x"),
        dir("d"),
        hardlink("h", "d/y"),
        file("d/x", 0, 1),
    ];
    let (ia, _) = build(a.clone());
    let (ib, _) = build(b);
    assert_eq!(ia.as_bytes(), ib.as_bytes());
    let (ia2, _) = build(a);
    assert_eq!(ia.as_bytes(), ia2.as_bytes());
}

#[test]
fn kinds_sizes_and_references_round_trip() {
    let index = sample();
    let lib = ino(&index, "usr/lib/libx.so");
    assert_eq!(index.data(lib), Data::Contiguous(4096));
    assert_eq!(index.attr(lib).unwrap().nlink, 2);
    assert_eq!(ino(&index, "usr/bin-link"), lib);
    assert_eq!(
        index.xattrs(lib),
        vec![(&b"user.a"[..], &b"1"[..]), (&b"security.capability"[..], &[0u8, 1, 2][..])]
    );
    assert!(index.xattrs(ino(&index, "usr")).is_empty());
    let link = ino(&index, "usr/lib/libx.so.1");
    assert_eq!(index.attr(link).unwrap().size, 7);
    assert_eq!(index.symlink_target(link), Some(&b"libx.so"[..]));
    assert_eq!(index.symlink_target(lib), None);
    let sparse = ino(&index, "usr/sparse");
    assert_eq!(
        index.data(sparse),
        Data::Sparse(vec![
            SparseSegment { logical: 0, len: 512, stream_offset: 8192 },
            SparseSegment { logical: 8192, len: 100, stream_offset: 9216 },
        ])
    );
    assert_eq!(index.attr(sparse).unwrap().size, 10_000);
    assert_eq!(index.attr(ino(&index, "dev/sda1")).unwrap().rdev, (8, 1));
    assert_eq!(index.attr(ino(&index, "dev/null")).unwrap().kind, EntryKind::CharDev);
    assert_eq!(index.attr(ino(&index, "run/fifo")).unwrap().kind, EntryKind::Fifo);
    assert_eq!(index.data(ino(&index, "usr/lib/empty")), Data::Contiguous(0));
    assert_eq!(index.data(ino(&index, "usr")), Data::None);
    assert_eq!(index.data(999), Data::None);
    assert_eq!(index.identity(), identity());
    assert_eq!(index.compression(), Compression::Gzip);
    assert_eq!(index.span(), 1 << 20);
    let stats = index.stats();
    assert_eq!(stats.bytes, index.as_bytes().len() as u64);
    assert_eq!((stats.points, stats.uncompressed_size), (3, 3 << 20));
    let w = index.warnings();
    assert_eq!(w.len(), 2);
    assert!(w[0].contains("broken") && w[0].contains("does not exist"), "{w:?}");
    assert_eq!(w[1], "scan: something odd");
}

#[test]
fn navigation_accessors() {
    let index = sample();
    let usr = ino(&index, "usr");
    let lib = ino(&index, "usr/lib");
    assert_eq!(index.resolve(b"/usr//lib/"), Some(lib));
    assert_eq!(index.resolve(b"//"), Some(ROOT_INO));
    assert_eq!(index.resolve(b""), Some(ROOT_INO));
    assert_eq!(index.resolve(b"usr/lib/libx.so/x"), None);
    assert_eq!(index.resolve(b"usr/nope"), None);
    assert_eq!(index.parent(lib), Some(usr));
    assert_eq!(index.parent(usr), Some(ROOT_INO));
    assert_eq!(index.parent(ROOT_INO), Some(ROOT_INO));
    assert_eq!(index.parent(ino(&index, "usr/sparse")), None);
    assert_eq!(names(&index, ROOT_INO), ["dev", "run", "usr"]);
    assert_eq!(index.child_count(lib), 3);
    let all: Vec<_> = index.children(lib, 0).collect();
    assert_eq!(all.len(), 3);
    assert_eq!(index.children(lib, 1).collect::<Vec<_>>(), all[1..]);
    assert_eq!(index.children(lib, 3).count(), 0);
    assert_eq!(index.children(lib, usize::MAX).count(), 0);
    assert_eq!(index.children(ino(&index, "usr/sparse"), 0).count(), 0);
    assert_eq!(index.child_count(ino(&index, "usr/sparse")), 0);
    assert_eq!(index.lookup(ino(&index, "usr/sparse"), b"x"), None);
    assert_eq!(index.lookup(999, b"x"), None);
    assert_eq!(index.child_count(0), 0);
}

#[test]
fn points_round_trip() {
    let index = sample();
    assert_eq!(index.point_count(), 3);
    assert_eq!(
        index.point(0),
        PointInfo { uncompressed: 0, compressed: 0, bits: 0, has_window: false }
    );
    let p = point(1 << 20, 32 * 1024);
    assert_eq!(
        index.point(1),
        PointInfo {
            uncompressed: p.uncompressed,
            compressed: p.compressed,
            bits: p.bits,
            has_window: true
        }
    );
    assert_eq!(index.point_window(0).unwrap(), Vec::<u8>::new());
    assert_eq!(index.point_window(1).unwrap(), p.window);
    assert_eq!(index.point_window(2).unwrap(), point(2 << 20, 100).window);
    match index.point_window(3) {
        Err(IndexError::Corrupt(m)) => assert!(m.contains("access point 3 out of range"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(index.get_point(3), None);
    assert_eq!(index.point_for(0), Some(0));
    assert_eq!(index.point_for((1 << 20) - 1), Some(0));
    assert_eq!(index.point_for(1 << 20), Some(1));
    assert_eq!(index.point_for(u64::MAX), Some(2));
    index.verify_windows().unwrap();

    let (empty, _) = build(vec![]);
    assert_eq!(empty.point_count(), 0);
    assert_eq!(empty.point_for(5), None);
    let mut b = IndexBuilder::new(0);
    b.add_point(point(100, 10));
    let index = b.finish(identity(), Compression::Gzip, 1, 1000).unwrap();
    assert_eq!(index.point_for(99), None);
    assert_eq!(index.point_for(100), Some(0));
}

#[test]
fn points_must_increase_and_fit() {
    for (second, why) in [
        (point(1000, 10), "not after"),
        (point(999, 10), "not after"),
        (point(2000, 32 * 1024 + 1), "window"),
        (AccessPoint { bits: 8, ..point(2000, 10) }, "bits"),
    ] {
        let mut b = IndexBuilder::new(0);
        b.add_point(point(1000, 10));
        b.add_point(second);
        b.add_point(point(5000, 10));
        match b.finish(identity(), Compression::Gzip, 1, 10_000) {
            Err(IndexError::Build(msg)) => assert!(msg.contains("access point 1"), "{why}: {msg}"),
            other => panic!("{why}: {other:?}"),
        }
    }
}

#[test]
fn inconsistent_data_is_a_build_error() {
    let mut b = IndexBuilder::new(0);
    b.add_entry(file("f", 900, 200));
    assert!(matches!(b.finish(identity(), Compression::None, 1, 1000), Err(IndexError::Build(_))));
    let mut b = IndexBuilder::new(0);
    b.add_point(point(2000, 10));
    assert!(matches!(b.finish(identity(), Compression::None, 1, 1000), Err(IndexError::Build(_))));
}

#[test]
fn bad_entries_are_dropped_with_warnings() {
    let bad_sparse = ScannedEntry {
        size: 100,
        data: DataLayout::Sparse(vec![
            SparseSegment { logical: 50, len: 10, stream_offset: 0 },
            SparseSegment { logical: 40, len: 10, stream_offset: 0 },
        ]),
        ..entry("s", EntryKind::File)
    };
    let past_size = ScannedEntry {
        size: 100,
        data: DataLayout::Sparse(vec![SparseSegment { logical: 95, len: 10, stream_offset: 0 }]),
        ..entry("s2", EntryKind::File)
    };
    let mut no_target = symlink("l", "");
    no_target.link_target = None;
    let (index, warnings) = build(vec![
        bad_sparse,
        past_size,
        no_target,
        symlink("l2", ""),
        file("x", u64::MAX, 2),
        file("a/../b", 0, 1),
    ]);
    assert!(warnings.iter().all(Option::is_some), "{warnings:?}");
    assert_eq!(index.stats().inodes, 1);
    assert_eq!(index.warnings().len(), 6);
}

#[test]
fn non_files_carry_no_data() {
    let mut d = dir("d");
    d.size = 77;
    d.data = DataLayout::Contiguous { offset: 5 };
    let mut f = entry("p", EntryKind::Fifo);
    f.data = DataLayout::Contiguous { offset: 5 };
    let (index, _) = build(vec![d, f]);
    assert_eq!(index.data(ino(&index, "d")), Data::None);
    assert_eq!(index.attr(ino(&index, "d")).unwrap().size, 0);
    assert_eq!(index.data(ino(&index, "p")), Data::None);
}

#[test]
fn warnings_are_capped() {
    let mut b = IndexBuilder::new(0);
    for i in 0..builder::MAX_KEPT_WARNINGS + 5 {
        b.add_warning(format!("w{i}"));
    }
    b.add_warning("é".repeat(builder::MAX_WARNING_LEN));
    let index = b.finish(identity(), Compression::None, 1, 0).unwrap();
    let w = index.warnings();
    assert_eq!(w.len(), builder::MAX_KEPT_WARNINGS + 1);
    assert_eq!(w[builder::MAX_KEPT_WARNINGS], "... and 6 more warnings, not kept");
    let mut b = IndexBuilder::new(0);
    b.add_warning("é".repeat(builder::MAX_WARNING_LEN));
    let w = b.finish(identity(), Compression::None, 1, 0).unwrap().warnings();
    assert_eq!(w[0].len(), builder::MAX_WARNING_LEN);
}

#[test]
fn long_names_use_multi_byte_length_prefixes() {
    let long = "n".repeat(300);
    let longer = "m".repeat(20_000);
    let (index, _) = build(vec![file(&long, 0, 1), file(&format!("{longer}/x"), 0, 1)]);
    assert!(index.lookup(ROOT_INO, long.as_bytes()).is_some());
    assert!(index.resolve(format!("{longer}/x").as_bytes()).is_some());
}

// ---------------------------------------------------------------------------------------------
// Bytes and files.

#[test]
fn round_trip_through_bytes_and_file() {
    let index = sample();
    let again = Index::from_bytes(index.as_bytes().to_vec()).unwrap();
    assert_eq!(again.as_bytes(), index.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.idx");
    std::fs::write(&path, b"old content").unwrap();
    index.write(&path).unwrap();
    let loaded = Index::load(&path).unwrap();
    assert_eq!(loaded.as_bytes(), index.as_bytes());
    assert_eq!(loaded.resolve(b"usr/lib/libx.so"), index.resolve(b"usr/lib/libx.so"));
    let leftovers: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("archive.idx")]);
    // A missing directory is an I/O error.
    match index.write(&dir.path().join("missing-dir/x.idx")) {
        Err(IndexError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(Index::load(&dir.path().join("nope")), Err(IndexError::Io(_))));
}

/// The byte range of the header and the metadata sections (everything but the windows).
fn checked_ranges(index: &Index) -> Vec<std::ops::Range<usize>> {
    let h = format::parse_header(index.as_bytes()).unwrap();
    let mut ranges = Vec::new();
    ranges.push(0..format::HEADER_LEN);
    for s in format::Section::LAYOUT {
        if s.checked_at_load() {
            ranges.push(format::section_range(&h, s));
        }
    }
    ranges
}

#[test]
fn any_flipped_byte_in_header_or_metadata_is_an_error() {
    let index = sample();
    let bytes = index.as_bytes();
    let mut tried = 0;
    for range in checked_ranges(&index) {
        for at in range {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.to_vec();
                bad[at] ^= flip;
                // Named as corrupt; a flip in the version field as another version.
                match Index::from_bytes(bad) {
                    Err(IndexError::Corrupt(_)) => {}
                    Err(IndexError::Version { .. }) if (8..12).contains(&at) => {}
                    other => panic!("flip {flip:#x} at {at}: {other:?}"),
                }
                tried += 1;
            }
        }
    }
    assert!(tried > 3 * format::HEADER_LEN);
}

#[test]
fn flipped_window_bytes_never_give_a_wrong_window() {
    let index = sample();
    let h = format::parse_header(index.as_bytes()).unwrap();
    let windows = format::section_range(&h, format::Section::Windows);
    let good: Vec<Vec<u8>> =
        (0..index.point_count()).map(|i| index.point_window(i).unwrap()).collect();
    let mut errors = 0;
    for at in windows.clone() {
        let mut bad = index.as_bytes().to_vec();
        bad[at] ^= 0x10;
        let corrupt = Index::from_bytes(bad).expect("windows are not checked at load");
        assert!(
            matches!(corrupt.verify_windows(), Err(IndexError::Corrupt(m)) if m.contains("crc32 mismatch"))
        );
        for (i, good) in good.iter().enumerate() {
            match corrupt.point_window(i) {
                Ok(w) => assert_eq!(&w, good, "flip at {at} gave a wrong window {i}"),
                Err(_) => errors += 1,
            }
        }
    }
    assert!(errors >= windows.len() * 9 / 10, "{errors} errors for {} flips", windows.len());
}

#[test]
fn truncation_at_any_length_is_an_error() {
    let index = sample();
    let bytes = index.as_bytes();
    for len in 0..bytes.len() {
        match Index::from_bytes(bytes[..len].to_vec()) {
            Err(IndexError::Corrupt(_)) => {}
            other => panic!("truncated to {len}: {other:?}"),
        }
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(matches!(Index::from_bytes(longer), Err(IndexError::Corrupt(_))));
}

#[test]
fn other_versions_are_rejected_as_such() {
    let index = sample();
    for version in [0, format::VERSION + 1, u32::MAX] {
        let mut bytes = index.as_bytes().to_vec();
        bytes[8..12].copy_from_slice(&version.to_le_bytes());
        match Index::from_bytes(bytes) {
            Err(IndexError::Version { found, expected: format::VERSION }) if found == version => {}
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn garbage_is_rejected() {
    for bad in [Vec::new(), b"ADDONFS\0".to_vec(), vec![0; 4096]] {
        let len = bad.len();
        assert!(matches!(Index::from_bytes(bad), Err(IndexError::Corrupt(_))), "{len} bytes");
    }
    let mut s = 1u32;
    let noise: Vec<u8> = (0..10_000)
        .map(|_| {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (s >> 16) as u8
        })
        .collect();
    assert!(matches!(Index::from_bytes(noise.clone()), Err(IndexError::Corrupt(_))));
    let mut with_magic = noise;
    with_magic[..8].copy_from_slice(&format::MAGIC);
    with_magic[8..12].copy_from_slice(&format::VERSION.to_le_bytes());
    assert!(matches!(Index::from_bytes(with_magic), Err(IndexError::Corrupt(_))));
}

/// Rewrites a metadata section of `index` with `edit`, fixing its CRC-32 and the header's, so
/// that only the structural checks stand between the bytes and the accessors.
fn forge(index: &Index, section: format::Section, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut bytes = index.as_bytes().to_vec();
    let h = format::parse_header(&bytes).unwrap();
    let range = format::section_range(&h, section);
    edit(&mut bytes[range.clone()]);
    let crc = crc32fast::hash(&bytes[range]);
    let position = format::Section::LAYOUT.iter().position(|&s| s == section).unwrap();
    let at = format::HEADER_FIXED_LEN + position * format::SECTION_ENTRY_LEN + 16;
    bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    let hcrc = crc32fast::hash(&bytes[..format::HEADER_LEN - 4]);
    bytes[format::HEADER_LEN - 4..format::HEADER_LEN].copy_from_slice(&hcrc.to_le_bytes());
    bytes
}

#[test]
fn structural_checks_catch_forged_references() {
    use format::{Section, DIRENT_LEN, INODE_LEN};
    let index = sample();
    let lib = ino(&index, "usr/lib") as usize;
    let file_ino = ino(&index, "usr/lib/libx.so") as usize;
    type Edit = Box<dyn Fn(&mut [u8])>;
    let cases: Vec<(&str, Section, Edit)> = vec![
        ("unknown kind", Section::Inodes, Box::new(|b| b[0] = 9)),
        (
            "data kind on a directory",
            Section::Inodes,
            Box::new(|b| b[0] = format::KIND_DIR | 1 << 4),
        ),
        (
            "parent over 32 bits",
            Section::Inodes,
            Box::new(move |b| b[(lib - 1) * INODE_LEN + 13] = 1),
        ),
        ("root not a dir", Section::Inodes, Box::new(|b| b[0] = format::KIND_FIFO)),
        ("nlink zero", Section::Inodes, Box::new(|b| b[5..9].fill(0))),
        ("attr out of range", Section::Inodes, Box::new(|b| b[1..5].fill(0xff))),
        (
            "dir parent cycle",
            Section::Inodes,
            Box::new(move |b| b[(lib - 1) * INODE_LEN + 9] = lib as u8),
        ),
        (
            "data past the stream",
            Section::Inodes,
            Box::new(move |b| b[(file_ino - 1) * INODE_LEN + 24] = 0xff),
        ),
        ("dirent child out of range", Section::Dirents, Box::new(|b| b[4..8].fill(0xff))),
        ("dirent name out of range", Section::Dirents, Box::new(|b| b[0..4].fill(0xff))),
        (
            "dirent points at root",
            Section::Dirents,
            Box::new(|b| b[4..8].copy_from_slice(&1u32.to_le_bytes())),
        ),
        (
            "second dirent name",
            Section::Dirents,
            Box::new(|b| b[DIRENT_LEN..DIRENT_LEN + 4].fill(0xee)),
        ),
        ("xattr owner", Section::Xattrs, Box::new(|b| b[0..4].fill(0))),
        ("point order", Section::Points, Box::new(|b| b[32..40].fill(0))),
        ("point bits", Section::Points, Box::new(|b| b[32 + 30] = 9)),
        ("window length", Section::Points, Box::new(|b| b[32 + 28..32 + 30].fill(0xff))),
        ("sparse order", Section::Sparse, Box::new(|b| b[24..32].fill(0))),
    ];
    for (what, section, edit) in cases {
        let bytes = forge(&index, section, edit);
        match Index::from_bytes(bytes) {
            Err(IndexError::Corrupt(msg)) => assert!(!msg.is_empty()),
            other => panic!("{what}: {other:?}"),
        }
    }
    // Forging nothing is accepted (the forge itself is right).
    Index::from_bytes(forge(&index, Section::Inodes, |_| {})).unwrap();
}

/// Writes valid indexes (the sample, and a few built trees) as a seed corpus for the
/// `index_load` fuzz target: `cargo test --lib write_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes the fuzz seed corpus"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/index_load");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sample.idx"), sample().as_bytes()).unwrap();
    let (tree, _) = build(vec![
        dir_entry_with_xattr(),
        file("a/b/c", 0, 5),
        symlink("a/s", "b/c"),
        hardlink("h", "a/b/c"),
        entry("p", EntryKind::Fifo),
    ]);
    std::fs::write(dir.join("tree.idx"), tree.as_bytes()).unwrap();
    let (empty, _) = build(vec![]);
    std::fs::write(dir.join("empty.idx"), empty.as_bytes()).unwrap();
}

fn dir_entry_with_xattr() -> ScannedEntry {
    let mut d = dir("a");
    d.xattrs = vec![(b"user.k".to_vec(), b"v".to_vec())];
    d
}

#[test]
fn reseal_only_fixes_checksums() {
    let index = sample();
    let mut bytes = index.as_bytes().to_vec();
    assert!(format::reseal(&mut bytes));
    assert_eq!(bytes, index.as_bytes(), "a valid index is unchanged");
    let h = format::parse_header(&bytes).unwrap();
    let dirents = format::section_range(&h, format::Section::Dirents);
    bytes[dirents.start + 4..dirents.start + 8].fill(0xff); // child inode out of range
    assert!(
        matches!(Index::from_bytes(bytes.clone()), Err(IndexError::Corrupt(m)) if m.contains("crc32"))
    );
    assert!(format::reseal(&mut bytes));
    assert!(
        matches!(Index::from_bytes(bytes), Err(IndexError::Corrupt(m)) if m.contains("out of range"))
    );
    assert!(!format::reseal(&mut [0u8; 10]));
}

/// The committed version-2 fixture's index (it has chunks and windows).
fn fixture_v2() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/index-v2/addon.tar.gz.addonfs-index");
    std::fs::read(path).unwrap()
}

#[test]
fn forged_chunks_are_refused() {
    let bytes = fixture_v2();
    let index = Index::from_bytes(bytes.clone()).unwrap();
    let size = index.identity().size;
    assert!(index.chunk_count() > 2);
    let h = format::parse_header(&bytes).unwrap();
    let chunks = format::section_range(&h, format::Section::Chunks);
    let at = |i: usize| chunks.start + i * format::CHUNK_LEN;
    let second = index.chunk(1).unwrap().offset;
    let last = index.chunk_count() - 1;
    let cases: [(&str, usize, u64); 4] = [
        ("first chunk not at 0", at(0), 1),
        ("offsets not increasing", at(1), 0),
        ("equal offsets", at(2), second),
        ("last chunk at the end", at(last), size),
    ];
    for (what, offset_at, value) in cases {
        let mut forged = bytes.clone();
        forged[offset_at..offset_at + 8].copy_from_slice(&value.to_le_bytes());
        assert!(format::reseal(&mut forged));
        match Index::from_bytes(forged) {
            Err(IndexError::Corrupt(m)) => assert!(m.contains("chunk"), "{what}: {m}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    // A changed checksum is only caught by the section's CRC-32 (and, when resealed, by the
    // bytes it no longer matches: the lazy source's check).
    let mut forged = bytes.clone();
    forged[at(0) + 8] ^= 1;
    assert!(matches!(Index::from_bytes(forged), Err(IndexError::Corrupt(_))));
}

#[test]
fn a_head_must_be_exactly_the_head() {
    let bytes = fixture_v2();
    let index = Index::from_bytes(bytes.clone()).unwrap();
    let head_len = index.head_len().unwrap() as usize;
    assert_eq!(Index::peek_head_len(&bytes).unwrap() as usize, head_len);
    assert!(Index::peek_head_len(&bytes[..format::HEADER_LEN - 1]).is_err());
    let source =
        || -> std::sync::Arc<dyn crate::source::ReadAt> { std::sync::Arc::new(bytes.clone()) };
    let lazy = Index::from_head(bytes[..head_len].to_vec(), source()).unwrap();
    assert!(!lazy.is_whole());
    assert_eq!(lazy.stats(), index.stats());
    assert_eq!(lazy.head(), index.head());
    for len in [0, format::HEADER_LEN, head_len - 1, head_len + 1, bytes.len()] {
        let head = bytes[..len.min(bytes.len())].to_vec();
        match Index::from_head(head, source()) {
            Err(IndexError::Corrupt(_)) => {}
            other => panic!("a head of {len} bytes (not {head_len}): {other:?}"),
        }
    }
    // The windows' source must be the whole file.
    let short: std::sync::Arc<dyn crate::source::ReadAt> =
        std::sync::Arc::new(bytes[..bytes.len() - 1].to_vec());
    assert!(matches!(
        Index::from_head(bytes[..head_len].to_vec(), short),
        Err(IndexError::Corrupt(_))
    ));
    // Every flipped byte of the head is refused (all of it is checked).
    for at in (0..head_len).step_by(7) {
        let mut head = bytes[..head_len].to_vec();
        head[at] ^= 0x04;
        assert!(Index::from_head(head, source()).is_err(), "flip at {at}");
    }
    // A head-only index is not written as if it were the file.
    let dir = tempfile::tempdir().unwrap();
    assert!(lazy.write(&dir.path().join("x.idx")).is_err());
    // A version-1 index has no head.
    let v1 = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/index-v1/addon.tar.gz.addonfs-index"),
    )
    .unwrap();
    assert!(matches!(Index::peek_head_len(&v1), Err(IndexError::Version { found: 1, .. })));
    let whole_v1 = Index::from_bytes(v1.clone()).unwrap();
    assert_eq!((whole_v1.version(), whole_v1.head_len(), whole_v1.chunk_for(0)), (1, None, None));
    assert!(matches!(
        Index::from_head(v1.clone(), std::sync::Arc::new(v1)),
        Err(IndexError::Version { found: 1, .. })
    ));
}

/// Every access point's first byte starts a chunk: the reader's advice for a span
/// ([`PointInfo::first_byte`] to the next point's) covers whole chunks of that span and not a
/// byte of its neighbours'.
#[test]
fn every_point_starts_a_chunk_at_its_first_byte() {
    let index = Index::from_bytes(fixture_v2()).unwrap();
    assert!(index.point_count() > 2);
    for p in 0..index.point_count() {
        let first = index.point(p).first_byte();
        assert_eq!(index.chunk_for(first).unwrap().offset, first, "point {p}");
    }
}

/// One reused compressor gives each window a zlib stream of its own, whatever came before it:
/// every window, inflated by flate2's decoder (not the code under test), is the window again,
/// and its checksum is that of its compressed bytes. Incompressible windows (stored blocks,
/// output larger than input) between compressible ones, and an empty one, in one sequence.
#[test]
fn a_reused_window_compressor_keeps_windows_apart() {
    use std::io::Read;
    let mut noise = Vec::with_capacity(32 * 1024);
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    while noise.len() < 32 * 1024 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        noise.extend_from_slice(&s.to_le_bytes());
    }
    let windows = [
        window(1, 32 * 1024),
        noise.clone(),
        Vec::new(),
        window(7, 100),
        noise,
        window(9, 32 * 1024),
    ];
    let mut compressor = builder::WindowCompressor::new();
    for (i, w) in windows.iter().enumerate() {
        let p = AccessPoint { window: w.clone(), ..point(i as u64 * 1000 + 1, 0) };
        let c = compressor.point(&p, w).expect("compresses");
        assert_eq!(c.window_len, w.len(), "window {i}");
        if w.is_empty() {
            assert!(c.zwindow.is_empty() && c.window_sha256 == [0; 32], "window {i}");
            continue;
        }
        let mut back = Vec::new();
        flate2::read::ZlibDecoder::new(&c.zwindow[..]).read_to_end(&mut back).expect("inflates");
        assert_eq!(&back, w, "window {i} round trip");
        let sha: [u8; 32] = sha2::Sha256::digest(&c.zwindow).into();
        assert_eq!(c.window_sha256, sha, "window {i}");
        assert_eq!(
            c,
            builder::CompressedPoint::new(&p, w).expect("fresh"),
            "window {i}: same as a fresh stream"
        );
    }
}
