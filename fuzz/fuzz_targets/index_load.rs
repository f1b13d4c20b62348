//! Fuzzes the index loader: `Index::from_bytes` on arbitrary bytes, and again on the same bytes
//! with their checksums recomputed (so mutations reach the structural checks); and
//! `Index::from_head` on the same bytes cut where their header says the head ends (with the
//! windows read from the whole bytes through a `ReadAt`). Whatever is accepted is walked through
//! every accessor, which must not panic, and must keep the invariants the loader promises
//! (children exist, directories know their parent, chunks cover the archive back to back, a
//! window from the head equals the window from the whole file or is refused).
//!
//! Seed corpus: `cargo test --lib write_fuzz_seeds -- --ignored` writes valid indexes to
//! `fuzz/corpus/index_load/`.

#![no_main]

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use addonfs::archive::EntryKind;
use addonfs::index::{format, Index, ROOT_INO};
use addonfs::reader::ReadAt;
use libfuzzer_sys::fuzz_target;

fn exercise(bytes: Vec<u8>) {
    let Ok(index) = Index::from_bytes(bytes.clone()) else {
        // A file that does not load whole may still have a head that does.
        let _ = from_head(&bytes).map(|lazy| walk(&lazy));
        return;
    };
    walk(&index);
    if let Some(lazy) = from_head(&bytes) {
        walk(&lazy);
        assert_eq!(lazy.head_len(), index.head_len());
        assert_eq!(lazy.chunks().collect::<Vec<_>>(), index.chunks().collect::<Vec<_>>());
        for i in 0..index.point_count() {
            if let (Ok(a), Ok(b)) = (lazy.point_window(i), index.point_window(i)) {
                assert_eq!(a, b, "a window from the head is the window from the whole file");
            }
        }
    }
}

/// The index loaded from the head its header states, its windows read from `bytes`.
fn from_head(bytes: &[u8]) -> Option<Index> {
    let len = usize::try_from(Index::peek_head_len(bytes).ok()?).ok()?;
    let head = bytes.get(..len)?.to_vec();
    let windows: Arc<dyn ReadAt> = Arc::new(bytes.to_vec());
    Index::from_head(head, windows).ok()
}

fn walk(index: &Index) {
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
    let size = index.identity().size;
    let mut next = 0u64;
    for (i, c) in index.chunks().enumerate() {
        assert_eq!((c.index, c.offset), (i, next), "chunks are back to back from 0");
        assert!(c.len > 0 && c.end() <= size);
        assert_eq!(index.chunk_for(c.offset), Some(c));
        assert_eq!(index.chunk_for(c.end() - 1), Some(c));
        next = c.end();
    }
    if index.chunk_count() > 0 {
        assert_eq!(next, size, "the chunks cover the archive");
    }
    let _ = (index.chunk_for(size), index.chunk_for(u64::MAX), index.chunk(usize::MAX));
    let _ = (index.head(), index.version(), index.stats());
}

fuzz_target!(|data: &[u8]| {
    exercise(data.to_vec());
    let mut sealed = data.to_vec();
    if format::reseal(&mut sealed) {
        exercise(sealed);
    }
});
