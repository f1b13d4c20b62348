#![no_main]
//! Parses and validates arbitrary bytes as an add-on's `metadata.json`, against a small index
//! holding a file, a directory, a symlink and a fifo: must never panic; whatever is accepted
//! obeys every rule and round-trips through JSON; every problem has a message.

use std::sync::OnceLock;

use addonfs::addon::metadata::{self, check_name, check_path, paths_collide, Metadata};
use addonfs::archive::{Compression, DataLayout, EntryKind, ScannedEntry};
use addonfs::index::{ArchiveIdentity, Index, IndexBuilder};
use libfuzzer_sys::fuzz_target;

fn entry(path: &str, kind: EntryKind) -> ScannedEntry {
    ScannedEntry {
        path: path.as_bytes().to_vec(),
        kind,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: 0,
        mtime_nsec: 0,
        size: 0,
        data: DataLayout::None,
        link_target: (kind == EntryKind::Symlink).then(|| b"f".to_vec()),
        rdev: (0, 0),
        xattrs: Vec::new(),
        header_offset: 0,
    }
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut b = IndexBuilder::new(0);
        b.add_entry(entry("usr/bin/tool", EntryKind::File));
        b.add_entry(entry("usr/lib", EntryKind::Dir));
        b.add_entry(entry("usr/link", EntryKind::Symlink));
        b.add_entry(entry("usr/pipe", EntryKind::Fifo));
        let identity = ArchiveIdentity { size: 0, mtime_sec: 0, mtime_nsec: 0, digest: [0; 32] };
        b.finish(identity, Compression::None, 1 << 20, 0).expect("a valid index")
    })
}

fuzz_target!(|data: &[u8]| {
    let index = index();
    match metadata::validate(data, Some(index)) {
        Ok(m) => {
            assert!(check_name(&m.name).is_ok());
            assert!(m.identifier().starts_with(metadata::IDENTIFIER_PREFIX));
            assert!(!m.spec.paths.is_empty());
            assert!(m.check().is_empty());
            assert!(m.check_against(index).is_empty());
            for (i, p) in m.spec.paths.iter().enumerate() {
                assert!(check_path(i, p).is_ok());
                assert!(index.resolve(p.trim_start_matches('/').as_bytes()).is_some());
                for q in &m.spec.paths[i + 1..] {
                    assert!(!paths_collide(p, q), "{p} and {q} collide but were accepted");
                }
            }
            let again = Metadata::parse(&serde_json::to_vec(&m).expect("serialize"))
                .expect("accepted metadata parses again");
            assert_eq!(again, m);
        }
        Err(problems) => {
            assert!(!problems.is_empty());
            for p in &problems {
                assert!(!p.to_string().is_empty());
            }
        }
    }
    // The collision rule is symmetric.
    if let Ok(m) = Metadata::parse(data) {
        for p in &m.spec.paths {
            for q in &m.spec.paths {
                assert_eq!(paths_collide(p, q), paths_collide(q, p));
            }
        }
    }
});
