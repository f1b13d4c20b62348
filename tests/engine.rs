//! The archive engine against its oracle, GNU tar: every format and compression, every entry's
//! kind, mode, owner, mtime, size, link target, hard-link group, xattrs and bytes.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use addonfs::archive::ScanOptions;
use addonfs::index::open::{build, open, Origin};
use addonfs::index::Index;
use addonfs::reader::{ArchiveReader, ChunkCache, ReadAhead};
use common::corpus::{self, Gz};
use common::{assert_same_bytes, assert_same_tree, read_entry, sh, walk_dir, walk_index, Compare};

/// A small span so every archive has many access points.
const SPAN: u64 = 64 << 10;

fn opts() -> ScanOptions {
    ScanOptions { span: SPAN, ..ScanOptions::default() }
}

/// Indexes `archive` and checks it serves exactly the tree extracted at `dest`.
fn check_archive(archive: &Path, dest: &Path, cmp: Compare, hot: &[u64], what: &str) -> Arc<Index> {
    let index = Arc::new(build(archive, &opts(), None).unwrap_or_else(|e| panic!("{what}: {e}")));
    // The persisted form serves the same tree as the built one.
    let reloaded = Index::from_bytes(index.as_bytes().to_vec()).expect("reload");
    let expected = walk_dir(dest);
    let served = walk_index(&index);
    assert_same_tree(&expected, &served, cmp, what);
    assert_eq!(walk_index(&reloaded), served, "{what}: reloaded index differs");
    let cache = Arc::new(ChunkCache::new(4 << 20));
    let reader = ArchiveReader::open(archive, Arc::clone(&index), cache).expect("reader");
    assert_same_bytes(dest, &expected, hot, what, |path, offset, len| {
        read_entry(&reader, path, offset, len)
    });
    index
}

fn full_compare() -> Compare {
    Compare { nsec: false, root: true, dir_nlink: true }
}

/// Builds the tree for `format`, archives it, extracts it, and checks every compression.
fn check_format(format: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = corpus::source_tree(&tmp.path().join("src"));
    corpus::trim_for(format, &src);
    let tar = tmp.path().join(format!("{format}.tar"));
    corpus::tar_create(&src, &tar, format, &[]);
    let dest = tmp.path().join("extracted");
    corpus::extract(&tar, &dest, false);
    let cmp = Compare { nsec: format == "posix", ..full_compare() };
    for how in Gz::ALL {
        if !how.available() {
            continue;
        }
        let archive = corpus::compress(&tar, how);
        let what = format!("{format}/{}", how.name());
        check_archive(&archive, &dest, cmp, &[], &what);
    }
    if format == "posix" {
        let want = common::xattrs_of(&dest);
        assert!(want.contains_key("xattrs/with-xattr"), "the source tree has xattrs");
        let index = build(&tar, &opts(), None).expect("index");
        for (path, attrs) in want {
            let ino = index.resolve(path.as_bytes()).expect("xattr path");
            let got: std::collections::BTreeMap<String, String> = index
                .xattrs(ino)
                .into_iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), hex(v)))
                .collect();
            assert_eq!(got, attrs, "xattrs of {path}");
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn gnu_format_matches_tar_x_in_every_compression() {
    check_format("gnu");
}

#[test]
fn oldgnu_format_matches_tar_x_in_every_compression() {
    check_format("oldgnu");
}

#[test]
fn posix_format_matches_tar_x_in_every_compression() {
    check_format("posix");
}

#[test]
fn ustar_format_matches_tar_x_in_every_compression() {
    check_format("ustar");
}

#[test]
fn v7_format_matches_tar_x_in_every_compression() {
    check_format("v7");
}

/// A sparse file of more than 8 GiB with a few data runs, in every sparse flavour GNU tar
/// writes, plain and gzipped.
#[test]
fn sparse_files_match_tar_x() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    corpus::sparse_tree(&src);
    let hot = corpus::SPARSE_HOT;
    let flavours: [(&str, &[&str]); 5] = [
        ("gnu", &["--sparse"]),
        ("oldgnu", &["--sparse"]),
        ("posix", &["--sparse"]),
        ("posix", &["--sparse", "--sparse-version=0.1"]),
        ("posix", &["--sparse", "--sparse-version=0.0"]),
    ];
    for (i, (format, args)) in flavours.iter().enumerate() {
        let tar = tmp.path().join(format!("sparse-{i}.tar"));
        corpus::tar_create(&src, &tar, format, args);
        let dest = tmp.path().join(format!("x{i}"));
        corpus::extract(&tar, &dest, false);
        let cmp = Compare { nsec: *format == "posix", ..full_compare() };
        for how in [Gz::None, Gz::Level(1)] {
            let archive = corpus::compress(&tar, how);
            let what = format!("sparse {format} {args:?} {}", how.name());
            check_archive(&archive, &dest, cmp, &hot, &what);
        }
        std::fs::remove_dir_all(&dest).expect("cleanup");
    }
}

/// Appending the same names again (`tar -r`): the last copy wins, as extraction does.
#[test]
fn duplicate_entries_last_one_wins() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tar = corpus::duplicates_archive(tmp.path());
    let dest = tmp.path().join("x");
    corpus::extract(&tar, &dest, false);
    // GNU tar replaces f, so the hard link keeps the first content in its own inode.
    for how in [Gz::None, Gz::Level(6)] {
        let archive = corpus::compress(&tar, how);
        check_archive(&archive, &dest, full_compare(), &[], &format!("duplicates {}", how.name()));
    }
}

/// `cat a.tar b.tar`: both archives are served, as `tar -x --ignore-zeros` extracts them.
#[test]
fn concatenated_archives_are_served_whole() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path().display();
    sh(&format!(
        "cd {t} && mkdir -p a/x b/y && echo a > a/x/one && echo b > b/y/two \
         && tar -cf a.tar -C a . && tar -cf b.tar -C b . && cat a.tar b.tar > ab.tar \
         && cat a.tar.gz b.tar.gz > ab.tar.gz 2>/dev/null; gzip -k a.tar b.tar && cat a.tar.gz b.tar.gz > ab.tar.gz"
    ));
    let dest = tmp.path().join("x");
    corpus::extract(&tmp.path().join("ab.tar"), &dest, true);
    assert!(dest.join("x/one").exists() && dest.join("y/two").exists());
    for name in ["ab.tar", "ab.tar.gz"] {
        check_archive(&tmp.path().join(name), &dest, full_compare(), &[], name);
    }
}

/// Names without `./`, with a leading `/` (`tar -P`), and an archive without a root entry.
#[test]
fn leading_slash_and_plain_names_are_normalized() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path().display();
    sh(&format!(
        "cd {t} && mkdir -p src/usr/bin/custom_folder && echo hi > src/usr/bin/custom_folder/a \
         && echo f > src/usr/custom_file && tar -cf plain.tar -C src usr \
         && tar -cPf abs.tar {t}/src/usr"
    ));
    let dest = tmp.path().join("x");
    corpus::extract(&tmp.path().join("plain.tar"), &dest, false);
    let cmp = Compare { root: false, ..full_compare() };
    check_archive(&tmp.path().join("plain.tar"), &dest, cmp, &[], "plain names");
    let dest_abs = tmp.path().join("xa");
    corpus::extract(&tmp.path().join("abs.tar"), &dest_abs, false);
    // The directories above `src/usr` are not in the archive: tar -x gives them the time of
    // extraction, addonfs the archive's mtime (as documented). Give the extracted ones the
    // archive's mtime, so the comparison does not depend on both happening in the same second.
    let mut implicit = dest_abs.clone();
    for part in tmp.path().join("src").components().skip(1) {
        implicit.push(part);
        sh(&format!("touch -r {t}/abs.tar {}", implicit.display()));
    }
    check_archive(&tmp.path().join("abs.tar"), &dest_abs, cmp, &[], "absolute names");
}

/// An archive with no entries serves an empty root.
#[test]
fn empty_archive_serves_an_empty_root() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tar = tmp.path().join("empty.tar");
    common::run(std::process::Command::new("tar").arg("-cf").arg(&tar).arg("-T").arg("/dev/null"));
    for how in [Gz::None, Gz::Level(6)] {
        let archive = corpus::compress(&tar, how);
        let index = build(&archive, &opts(), None).expect("empty archive indexes");
        assert_eq!(index.child_count(addonfs::index::ROOT_INO), 0);
        assert_eq!(index.stats().inodes, 1);
    }
}

/// A PAX global header is honoured as defaults and never shown as a file.
#[test]
fn pax_global_headers_are_not_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path().display();
    sh(&format!(
        "cd {t} && mkdir src && echo g > src/file \
         && tar --format=posix --pax-option=comment=global-note -cf g.tar -C src ."
    ));
    let tar = tmp.path().join("g.tar");
    let raw = std::fs::read(&tar).expect("read");
    assert!(raw.windows(11).any(|w| w == b"global-note"), "tar wrote a global header");
    let dest = tmp.path().join("x");
    corpus::extract(&tar, &dest, false);
    check_archive(&tar, &dest, Compare { nsec: true, ..full_compare() }, &[], "global header");
}

/// The index is persisted beside the archive, reused while the archive is unchanged, and
/// rebuilt when the archive changes, when it is corrupt, or when another span is asked for.
#[test]
fn persisted_index_is_reused_only_while_valid() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a"), corpus::text(1, 300_000)).expect("write");
    let tar = tmp.path().join("a.tar");
    corpus::tar_create(&src, &tar, "gnu", &[]);
    let archive = corpus::compress(&tar, Gz::Level(6));
    let first = open(&archive, None, &opts(), false, None).expect("first open");
    assert!(matches!(first.origin, Origin::Built { persisted: true, .. }), "{:?}", first.origin);
    assert!(first.path.exists());
    let second = open(&archive, None, &opts(), false, None).expect("second open");
    assert_eq!(second.origin, Origin::Loaded);
    assert_eq!(second.index.as_bytes(), first.index.as_bytes());

    let other_span = ScanOptions { span: 128 << 10, ..opts() };
    let third = open(&archive, None, &other_span, false, None).expect("other span");
    assert!(matches!(third.origin, Origin::Built { .. }), "span change rebuilds");

    // Corrupt one byte in the middle of the index: detected, rebuilt.
    let mut bytes = std::fs::read(&first.path).expect("read index");
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x55;
    std::fs::write(&first.path, &bytes).expect("write");
    let fourth = open(&archive, None, &other_span, false, None).expect("corrupt index");
    assert!(matches!(fourth.origin, Origin::Built { .. }), "corruption rebuilds");

    // Rewrite the archive with other content: stale, rebuilt, and serves the new content.
    std::fs::write(src.join("a"), b"changed").expect("write");
    corpus::tar_create(&src, &tar, "gnu", &[]);
    let archive = corpus::compress(&tar, Gz::Level(6));
    let fifth = open(&archive, None, &other_span, false, None).expect("stale");
    assert!(matches!(fifth.origin, Origin::Built { ref reason, .. } if reason.contains("stale")));
    let index = Arc::new(fifth.index);
    let reader =
        ArchiveReader::open(&archive, index, Arc::new(ChunkCache::default())).expect("reader");
    assert_eq!(read_entry(&reader, "a", 0, 100), b"changed");
}

/// Reads like [`read_entry`], through [`ArchiveReader::read_with`] (straight out of the chunk
/// cache when the range lies in one span).
fn read_entry_with(reader: &ArchiveReader, path: &str, offset: u64, len: u64) -> Vec<u8> {
    let ino = reader.index().resolve(path.as_bytes()).unwrap_or_else(|| panic!("no entry {path}"));
    let mut scratch = Vec::new();
    reader.read_with(ino, offset, len as usize, &mut scratch, <[u8]>::to_vec).expect("read_with")
}

/// Many threads reading random ranges of random files through one small cache (so chunks are
/// evicted, and their buffers reused, while others read them), half with `read` and half with
/// `read_with`: every byte right.
#[test]
fn concurrent_random_reads_are_exact() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    for i in 0..8u64 {
        let bytes = if i % 2 == 0 { corpus::noise(i, 700_000) } else { corpus::text(i, 900_000) };
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(src.join(format!("f{i}")), bytes).expect("write");
    }
    let tar = tmp.path().join("c.tar");
    corpus::tar_create(&src, &tar, "gnu", &[]);
    let archive = corpus::compress(&tar, Gz::Level(6));
    let index = Arc::new(build(&archive, &opts(), None).expect("index"));
    // A cache smaller than the data, so chunks are evicted while others read them.
    let cache = Arc::new(ChunkCache::new(256 << 10));
    let reader = Arc::new(ArchiveReader::open(&archive, index, cache).expect("reader"));
    let files: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        (0..8)
            .map(|i| (format!("f{i}"), std::fs::read(src.join(format!("f{i}"))).expect("read")))
            .collect(),
    );
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let (reader, files) = (Arc::clone(&reader), Arc::clone(&files));
            std::thread::spawn(move || {
                let rand = corpus::noise(t + 1000, 3 * 200 * 8);
                for k in 0..200 {
                    let word = |j: usize| {
                        u64::from_le_bytes(rand[(k * 3 + j) * 8..][..8].try_into().unwrap())
                    };
                    let (name, bytes) = &files[(word(0) % 8) as usize];
                    let offset = word(1) % bytes.len() as u64;
                    let len = word(2) % 200_000;
                    let got = if t % 2 == 0 {
                        read_entry(&reader, name, offset, len)
                    } else {
                        read_entry_with(&reader, name, offset, len)
                    };
                    let end = (offset + len).min(bytes.len() as u64) as usize;
                    assert!(
                        got == bytes[offset as usize..end],
                        "thread {t}: {name} @{offset}+{len}"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("reader thread");
    }
    let stats = reader.index().stats();
    assert!(stats.points > 10, "the archive has many access points");
}

/// Parallel read-ahead against GNU tar: a multi-span archive of large files, extracted by
/// `tar -x`, read through one reader and a pool of 3 workers inflating ahead, from 6 threads at
/// once on a cache of a few spans: 3 read every file front to back (in different orders and
/// read sizes, through `Sequential`, so spans are inflated ahead of them and evicted behind),
/// 3 read random ranges. Every byte equals the extracted file's.
#[test]
fn parallel_read_ahead_serves_what_tar_extracts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("lib")).expect("mkdir");
    for i in 0..6u64 {
        let bytes = match i % 3 {
            0 => corpus::noise(i, 900_000),
            1 => corpus::text(i, 1_400_000),
            _ => [corpus::text(i, 500_000), corpus::noise(i, 300_000)].concat(),
        };
        std::fs::write(src.join(format!("lib/m{i}.jar")), bytes).expect("write");
    }
    let tar = tmp.path().join("big.tar");
    corpus::tar_create(&src, &tar, "gnu", &[]);
    let archive = corpus::compress(&tar, Gz::Level(6));
    let dest = tmp.path().join("x");
    corpus::extract(&archive, &dest, false);
    let index = Arc::new(build(&archive, &opts(), None).expect("index"));
    assert!(index.stats().points > 40, "the archive has many spans");
    let cache = Arc::new(ChunkCache::new(16 * SPAN));
    let reader =
        Arc::new(ArchiveReader::open(&archive, index, Arc::clone(&cache)).expect("reader"));
    let names: Vec<String> = (0..6).map(|i| format!("lib/m{i}.jar")).collect();
    let want: Vec<Vec<u8>> =
        names.iter().map(|n| std::fs::read(dest.join(n)).expect("extracted")).collect();
    let pool = ReadAhead::start(3).expect("pool");
    std::thread::scope(|s| {
        for t in 0..3usize {
            let (pool, reader, names, want) = (&pool, Arc::clone(&reader), &names, &want);
            s.spawn(move || {
                let mut sequential = pool.sequential(reader);
                let step = [128 << 10, 4096, 1 << 20][t];
                let mut buf = vec![0u8; step];
                for k in 0..names.len() {
                    // Thread 0 in stream order, the others starting elsewhere.
                    let i = (k + 2 * t) % names.len();
                    let ino =
                        sequential.reader().index().resolve(names[i].as_bytes()).expect("entry");
                    let mut got = Vec::new();
                    loop {
                        let n = sequential.read(ino, got.len() as u64, &mut buf).expect("read");
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    assert!(got == want[i], "sequential reader {t}: {} differs", names[i]);
                }
            });
        }
        for t in 0..3u64 {
            let (reader, names, want) = (Arc::clone(&reader), &names, &want);
            s.spawn(move || {
                let rand = corpus::noise(t + 500, 3 * 8 * 150);
                for k in 0..150 {
                    let word = |j: usize| {
                        u64::from_le_bytes(rand[(k * 3 + j) * 8..][..8].try_into().unwrap())
                    };
                    let i = (word(0) % names.len() as u64) as usize;
                    let offset = word(1) % want[i].len() as u64;
                    let len = word(2) % 300_000;
                    let got = read_entry(&reader, &names[i], offset, len);
                    let end = (offset + len).min(want[i].len() as u64) as usize;
                    assert!(
                        got == want[i][offset as usize..end],
                        "random reader {t}: {}",
                        names[i]
                    );
                }
            });
        }
    });
    pool.wait_idle();
    assert!(cache.stats().bytes <= cache.stats().capacity);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]
    /// Random (offset, len) reads of one file equal the extracted bytes, through `read` and
    /// through `read_with`.
    #[test]
    fn random_reads_equal_extracted_bytes(offset in 0u64..3_200_000, len in 0u64..300_000) {
        let (reader, bytes) = &*RANDOM_READ_FIXTURE;
        let got = read_entry(reader, "data", offset, len);
        let start = (offset as usize).min(bytes.len());
        let end = ((offset + len) as usize).min(bytes.len());
        proptest::prop_assert!(got == bytes[start..end]);
        let with = read_entry_with(reader, "data", offset, len);
        proptest::prop_assert!(with == bytes[start..end]);
    }
}

static RANDOM_READ_FIXTURE: std::sync::LazyLock<(ArchiveReader, Vec<u8>)> =
    std::sync::LazyLock::new(|| {
        let dir: PathBuf = tempfile::tempdir().expect("tempdir").keep();
        let src = dir.join("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        let mut bytes = corpus::text(7, 1_500_000);
        bytes.extend(corpus::noise(8, 1_500_000));
        std::fs::write(src.join("data"), &bytes).expect("write");
        let tar = dir.join("r.tar");
        corpus::tar_create(&src, &tar, "posix", &[]);
        let archive = corpus::compress(&tar, Gz::Level(9));
        let index = Arc::new(build(&archive, &opts(), None).expect("index"));
        let reader = ArchiveReader::open(&archive, index, Arc::new(ChunkCache::new(1 << 20)))
            .expect("reader");
        (reader, bytes)
    });
