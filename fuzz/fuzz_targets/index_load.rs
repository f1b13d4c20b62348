//! Fuzzes the index loader: `Index::from_bytes` on arbitrary bytes, and again on the same bytes
//! with their checksums recomputed (so mutations reach the structural checks). Whatever is
//! accepted is walked through every accessor, which must not panic, and must keep the
//! invariants the loader promises (children exist, directories know their parent).
//!
//! Seed corpus: `cargo test --lib write_fuzz_seeds -- --ignored` writes valid indexes to
//! `fuzz/corpus/index_load/`.

#![no_main]

use std::collections::{HashSet, VecDeque};

use addonfs::archive::EntryKind;
use addonfs::index::{format, Index, ROOT_INO};
use libfuzzer_sys::fuzz_target;

fn exercise(bytes: Vec<u8>) {
    let Ok(index) = Index::from_bytes(bytes) else { return };
    let _ = (index.identity(), index.compression(), index.span(), index.warnings());
    let stats = index.stats();
    assert!(index.attr(ROOT_INO).is_some_and(|a| a.kind == EntryKind::Dir));
    assert_eq!(index.parent(ROOT_INO), Some(ROOT_INO));

    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([(Vec::<u8>::new(), ROOT_INO)]);
    while let Some((path, ino)) = queue.pop_front() {
        if !seen.insert((path.len(), ino)) || seen.len() > 100_000 {
            continue;
        }
        let attr = index.attr(ino).expect("every reachable inode has attributes");
        let _ = (index.symlink_target(ino), index.xattrs(ino), index.data(ino));
        let _ = index.resolve(&path);
        let count = index.child_count(ino);
        let mut listed = 0;
        for (name, child) in index.children(ino, 0) {
            listed += 1;
            let child_attr = index.attr(child).expect("children exist");
            if child_attr.kind == EntryKind::Dir {
                assert_eq!(index.parent(child), Some(ino), "a directory knows its parent");
            }
            let _ = index.lookup(ino, name);
            let mut p = path.clone();
            p.push(b'/');
            p.extend_from_slice(name);
            if attr.kind == EntryKind::Dir && path.len() < 4096 {
                queue.push_back((p, child));
            }
        }
        assert_eq!(listed, count);
        assert_eq!(index.children(ino, count / 2).count(), count - count / 2);
        let _ = index.lookup(ino, b"");
        let _ = index.lookup(ino, b"\xff\xff");
    }
    for ino in [0, stats.inodes, stats.inodes + 1, u64::MAX] {
        let _ = (index.attr(ino), index.parent(ino), index.child_count(ino), index.data(ino));
        let _ = (index.symlink_target(ino), index.xattrs(ino), index.children(ino, 0).count());
    }
    for i in 0..index.point_count() {
        let p = index.point(i);
        assert_eq!(index.point_for(p.uncompressed), Some(i));
        if let Ok(w) = index.point_window(i) {
            assert!(w.len() <= 32 * 1024);
            assert_eq!(w.is_empty(), !p.has_window);
        }
    }
    let _ = (index.point_for(0), index.point_for(u64::MAX), index.get_point(usize::MAX));
    let _ = index.verify_windows();
}

fuzz_target!(|data: &[u8]| {
    exercise(data.to_vec());
    let mut sealed = data.to_vec();
    if format::reseal(&mut sealed) {
        exercise(sealed);
    }
});
