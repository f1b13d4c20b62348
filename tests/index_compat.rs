//! Index format compatibility: indexes written by earlier builds, kept in `tests/data/index-vN/`
//! beside their archives, against this build. An index of every version this build reads
//! (`OLDEST_VERSION..=VERSION`) must load and serve its archive exactly as `tar -x` extracts it
//! (so a change of the on-disk layout without a `VERSION` bump fails here); an index of any
//! other version must be rebuilt cleanly by `open()`, never misread. The current version's
//! index also loads from its head alone, with its windows fetched by range, and its chunk
//! checksums are those of the archive's bytes.
//!
//! After a deliberate `VERSION` bump, add the new version's fixture (the old ones stay):
//! `cargo test --test index_compat -- --ignored write_fixture`, then commit
//! `tests/data/index-vN/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use addonfs::archive::ScanOptions;
use addonfs::index::format::{OLDEST_VERSION, VERSION};
use addonfs::index::open::{default_index_path, open, Origin};
use addonfs::index::Index;
use addonfs::reader::{ArchiveReader, ChunkCache};
use common::{assert_same_bytes, assert_same_tree, read_entry, run, walk_dir, walk_index, Compare};

/// The span the fixtures are indexed with: small, so the archive has several access points
/// with windows.
const SPAN: u64 = 64 << 10;
const ARCHIVE: &str = "addon.tar.gz";

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The committed fixtures: (version, directory).
fn fixtures() -> Vec<(u32, PathBuf)> {
    let mut out: Vec<(u32, PathBuf)> = std::fs::read_dir(data_dir())
        .expect("tests/data")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("index-v")?.parse().ok()?;
            Some((version, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The version an index file says it has (bytes 8..12, after the magic).
fn version_of(index: &[u8]) -> u32 {
    u32::from_le_bytes(index[8..12].try_into().expect("4 bytes"))
}

/// Copies a fixture into `dir`, giving the archive the modification time the index was bound
/// to (a checkout does not keep it); returns the archive's path.
fn copy_fixture(fixture: &Path, dir: &Path, mtime: Option<(i64, u32)>) -> PathBuf {
    let archive = dir.join(ARCHIVE);
    std::fs::copy(fixture.join(ARCHIVE), &archive).expect("copy archive");
    let index = default_index_path(&archive);
    std::fs::copy(default_index_path(&fixture.join(ARCHIVE)), &index).expect("copy index");
    if let Some((sec, nsec)) = mtime {
        run(Command::new("touch").arg("-d").arg(format!("@{sec}.{nsec:09}")).arg(&archive));
    }
    archive
}

/// Checks that `index` serves `archive` exactly as `tar -x` extracts it.
fn check_serves(archive: &Path, index: Index, what: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("x");
    common::corpus::extract(archive, &dest, false);
    let index = Arc::new(index);
    let expected = walk_dir(&dest);
    assert!(expected.len() > 10, "{what}: the fixture holds {} paths", expected.len());
    assert_same_tree(
        &expected,
        &walk_index(&index),
        Compare { nsec: false, root: true, dir_nlink: true },
        what,
    );
    let reader = ArchiveReader::open(archive, Arc::clone(&index), Arc::new(ChunkCache::default()))
        .expect("reader");
    assert_same_bytes(&dest, &expected, &[], what, |path, offset, len| {
        read_entry(&reader, path, offset, len)
    });
}

#[test]
fn a_fixture_of_the_current_version_exists() {
    assert!(
        fixtures().iter().any(|(v, _)| *v == VERSION),
        "no tests/data/index-v{VERSION}: after a VERSION bump, write it (see the module docs)"
    );
}

/// The index of every version this build reads, written by an earlier build, loads with this
/// build and serves its archive exactly; `open()` takes it as it is (no rebuild).
#[test]
fn the_committed_indexes_of_readable_versions_load_and_serve_their_archives() {
    let readable = fixtures().into_iter().filter(|(v, _)| (OLDEST_VERSION..=VERSION).contains(v));
    for (version, fixture) in readable {
        let what = format!("index-v{version}");
        let bytes = std::fs::read(default_index_path(&fixture.join(ARCHIVE))).expect("read");
        assert_eq!(version_of(&bytes), version, "{what}: the directory names its version");
        let index = Index::from_bytes(bytes.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
        index.verify_windows().unwrap_or_else(|e| panic!("{what}: windows: {e}"));
        assert!(index.stats().points > 3, "{what}: {} access points", index.stats().points);
        // Bound to the archive's bytes: the SHA-256 it holds is the archive's.
        let sum = run(Command::new("sha256sum").arg(fixture.join(ARCHIVE)));
        let hex: String = index.identity().digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(sum.split_whitespace().next(), Some(hex.as_str()), "{what}: digest");

        let tmp = tempfile::tempdir().expect("tempdir");
        let id = index.identity();
        let archive = copy_fixture(&fixture, tmp.path(), Some((id.mtime_sec, id.mtime_nsec)));
        let opts = ScanOptions { span: SPAN, ..ScanOptions::default() };
        let opened = open(&archive, None, &opts, false, None).expect("open");
        assert_eq!(opened.origin, Origin::Loaded, "{what}");
        assert_eq!(opened.index.as_bytes(), &bytes[..], "{what}");
        check_serves(&archive, opened.index, &what);
    }
}

/// An index of another version is not misread: `open()` rebuilds it (saying why), persists
/// the rebuilt one in the current version, and that serves the archive exactly. Covers the
/// committed fixtures too old to read (none yet) and the current one with its version changed.
#[test]
fn an_index_of_another_version_is_rebuilt_cleanly() {
    let mut cases: Vec<(String, PathBuf, Option<u32>)> = fixtures()
        .into_iter()
        .filter(|(v, _)| *v == VERSION || *v < OLDEST_VERSION)
        .map(|(v, dir)| {
            let bump = (v == VERSION).then_some(VERSION + 1);
            (format!("index-v{v}"), dir, bump)
        })
        .collect();
    assert!(!cases.is_empty());
    for (what, fixture, bump) in cases.drain(..) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let archive = copy_fixture(&fixture, tmp.path(), None);
        let index_path = default_index_path(&archive);
        let mut bytes = std::fs::read(&index_path).expect("read");
        let found = match bump {
            Some(v) => {
                bytes[8..12].copy_from_slice(&v.to_le_bytes());
                std::fs::write(&index_path, &bytes).expect("write");
                v
            }
            None => version_of(&bytes),
        };
        let opts = ScanOptions { span: SPAN, ..ScanOptions::default() };
        let opened = open(&archive, None, &opts, false, None).expect("open");
        match &opened.origin {
            Origin::Built { reason, persisted: true } => assert!(
                reason.contains(&found.to_string()) && reason.contains("version"),
                "{what}: {reason}"
            ),
            other => panic!("{what}: {other:?}"),
        }
        let rewritten = std::fs::read(&index_path).expect("read");
        assert_eq!(version_of(&rewritten), VERSION, "{what}: rewritten in this version");
        let again = open(&archive, None, &opts, false, None).expect("reopen");
        assert_eq!(again.origin, Origin::Loaded, "{what}");
        check_serves(&archive, opened.index, &what);
    }
}

/// The current version's committed index loads from its head alone (the windows fetched from
/// the file by range, each checked by its SHA-256) and serves its archive exactly; its chunks
/// cover the archive with the SHA-256 of its bytes. A version-1 index has no head and no
/// chunks.
#[test]
fn the_committed_index_loads_from_its_head_and_checks_the_archive() {
    use sha2::{Digest, Sha256};
    for (version, fixture) in fixtures() {
        let what = format!("index-v{version}");
        let bytes = std::fs::read(default_index_path(&fixture.join(ARCHIVE))).expect("read");
        let whole = Index::from_bytes(bytes.clone()).expect("load");
        if version < 2 {
            assert_eq!((whole.head_len(), whole.chunk_count()), (None, 0), "{what}");
            let windows: Arc<dyn addonfs::reader::ReadAt> = Arc::new(bytes.clone());
            assert!(Index::from_head(bytes.clone(), windows).is_err(), "{what}: no head");
            continue;
        }
        let head_len = Index::peek_head_len(&bytes[..addonfs::index::format::HEADER_LEN])
            .expect("peek the head's length");
        assert_eq!(Some(head_len), whole.head_len(), "{what}");
        assert!(head_len < bytes.len() as u64, "{what}: the windows come after the head");
        let head = bytes[..head_len as usize].to_vec();
        let windows: Arc<dyn addonfs::reader::ReadAt> = Arc::new(bytes.clone());
        let lazy = Index::from_head(head, windows).unwrap_or_else(|e| panic!("{what}: {e}"));
        lazy.verify_windows().expect("the fetched windows' CRC-32");
        for i in 0..whole.point_count() {
            assert_eq!(lazy.point_window(i).ok(), whole.point_window(i).ok(), "{what}: window {i}");
        }
        let archive_bytes = std::fs::read(fixture.join(ARCHIVE)).expect("archive");
        let mut next = 0u64;
        for c in lazy.chunks() {
            assert_eq!(c.offset, next, "{what}: chunk {} follows the one before", c.index);
            let got: [u8; 32] =
                Sha256::digest(&archive_bytes[c.offset as usize..c.end() as usize]).into();
            assert_eq!(got, c.sha256, "{what}: chunk {} checksum", c.index);
            assert_eq!(lazy.chunk_for(c.end() - 1), Some(c), "{what}");
            next = c.end();
        }
        assert_eq!(next, archive_bytes.len() as u64, "{what}: the chunks cover the archive");
        assert!(lazy.chunk_count() > 3, "{what}: {} chunks", lazy.chunk_count());

        let tmp = tempfile::tempdir().expect("tempdir");
        let id = lazy.identity();
        let archive = copy_fixture(&fixture, tmp.path(), Some((id.mtime_sec, id.mtime_nsec)));
        check_serves(&archive, lazy, &format!("{what} from its head"));
    }
}

/// Writes `tests/data/index-v{VERSION}/`: a small gzip tar (GNU tar, fixed owners and times,
/// `gzip -n`) of text and binary files, a long name, a symlink, a hard link, a fifo, odd modes and an
/// empty directory, and its index at a 64 KiB span, written by this build.
#[test]
#[ignore = "writes the committed fixture: run after a deliberate index VERSION bump"]
fn write_fixture() {
    let dir = data_dir().join(format!("index-v{VERSION}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    for i in 0..6u64 {
        let sub = src.join(format!("lib/pkg{}", i % 2));
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(
            sub.join(format!("mod{i}.py")),
            common::corpus::text(i, 60_000 + i as usize),
        )
        .expect("write");
    }
    // Incompressible bytes: points come after a third of a span of compressed bytes too.
    for i in 0..2u64 {
        std::fs::write(src.join(format!("lib/blob{i}.so")), common::corpus::noise(i, 45_000))
            .expect("write");
    }
    std::fs::write(src.join("lib/empty"), b"").expect("write");
    std::fs::write(src.join(format!("lib/{}", "n".repeat(120))), b"a long name\n").expect("write");
    std::fs::create_dir_all(src.join("share/empty-dir")).expect("mkdir");
    common::sh(&format!(
        "cd {s} && ln -s pkg0/mod0.py lib/link && ln lib/pkg1/mod1.py lib/hard && mkfifo fifo \
         && chmod 0755 lib/pkg0/mod2.py && chmod 0600 lib/pkg1/mod3.py",
        s = src.display()
    ));
    let archive = dir.join(ARCHIVE);
    common::sh(&format!(
        "tar --format=gnu --sort=name --owner=0 --group=0 --numeric-owner \
         --mtime='2026-01-01 00:00:00' -cf - -C {s} . | gzip -n -6 > {a}",
        s = src.display(),
        a = archive.display()
    ));
    let opts = ScanOptions { span: SPAN, ..ScanOptions::default() };
    let opened = open(&archive, None, &opts, true, None).expect("index");
    assert!(matches!(opened.origin, Origin::Built { persisted: true, .. }));
    eprintln!("wrote {} and {}", archive.display(), opened.path.display());
}
