//! Archives written by GNU tar in every format, walked and checked against `tar -x`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::*;

/// Deterministic pseudo-random bytes (xorshift).
pub(in crate::archive::tar) fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Seconds since the epoch of a `touch -d` date, computed by `date`.
fn epoch(date: &str) -> i64 {
    run(Command::new("date").arg("-d").arg(date).arg("+%s")).trim().parse().unwrap()
}

fn touch(p: &Path, date: &str) {
    run(Command::new("touch").arg("-h").arg("-d").arg(date).arg(p));
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn symlink(target: &str, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// Node types v7 cannot hold.
#[derive(Clone, Copy, PartialEq)]
enum Specials {
    With,
    Without,
}

/// The device nodes of [`basic_tree`]: (name, `mknod` type, major, minor). The last minor
/// needs the high bits of Linux's device encoding.
const DEVICES: [(&str, &str, u32, u32); 3] =
    [("chardev", "c", 1, 3), ("blockdev", "b", 7, 200), ("bigminor", "c", 240, 70000)];

/// True if [`basic_tree`] makes device nodes here: `mknod` needs root (CAP_MKNOD). Under CI,
/// which runs as root, a missing root fails the test; elsewhere the test goes on without
/// devices and says so.
fn devices_possible() -> bool {
    crate::testutil::root_ready("the device nodes of the oracle tree (mknod)")
}

/// A tree every format can hold (short names, octal-sized fields).
fn basic_tree(root: &Path, specials: Specials) {
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    fs::create_dir(root.join("emptydir")).unwrap();
    chmod(&root.join("emptydir"), 0o700);
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("small"), b"hello, tar\n").unwrap();
    fs::write(root.join("exact512"), random_bytes(512, 1)).unwrap();
    fs::write(root.join("sub/large"), random_bytes(3 << 20, 2)).unwrap();
    fs::write(root.join("sub/deeper/odd"), random_bytes(1000, 3)).unwrap();
    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    chmod(&root.join("setuid"), 0o4755);
    fs::write(root.join("private"), b"secret").unwrap();
    chmod(&root.join("private"), 0o700);
    fs::write(root.join("ünïcødé-файл-文件.txt"), "unicode content".as_bytes()).unwrap();
    symlink("small", &root.join("rel-link"));
    symlink("/etc/passwd", &root.join("abs-link"));
    symlink("nowhere/at/all", &root.join("dangling"));
    symlink("../small", &root.join("sub/up-link"));
    fs::hard_link(root.join("small"), root.join("hard1")).unwrap();
    fs::hard_link(root.join("hard1"), root.join("sub/hard2")).unwrap();
    if specials == Specials::With {
        run(Command::new("mkfifo").arg(root.join("fifo")));
        if devices_possible() {
            for (name, kind, major, minor) in DEVICES {
                run(Command::new("mknod")
                    .arg(root.join(name))
                    .arg(kind)
                    .arg(major.to_string())
                    .arg(minor.to_string()));
            }
        }
    }
    touch(&root.join("small"), "2001-02-03 04:05:06.789");
    touch(&root.join("sub/large"), "2020-06-07 08:09:10.123456789");
    touch(&root.join("rel-link"), "2010-01-01 00:00:00");
}

/// What only GNU and PAX formats hold: long names and link targets, out-of-range times.
fn extended_tree(root: &Path) {
    let long_dir = root.join("d".repeat(90)).join("e".repeat(60));
    fs::create_dir_all(&long_dir).unwrap();
    fs::write(long_dir.join("f".repeat(120)), b"over 255 bytes of path").unwrap();
    fs::write(root.join("n".repeat(150)), b"over 100 bytes of name").unwrap();
    symlink(&format!("{}/target", "t".repeat(130)), &root.join("long-target"));
    fs::hard_link(root.join("n".repeat(150)), root.join("l".repeat(140))).unwrap();
    fs::write(root.join("old"), b"before the epoch").unwrap();
    touch(&root.join("old"), "1960-05-06 07:08:09");
    fs::write(root.join("future"), b"far future").unwrap();
    touch(&root.join("future"), "2400-01-01 00:00:00");
}

/// Archives `src` with `tar --format=FORMAT ARGS -C src .`, walks it and compares.
fn check_format(tmp: &Path, src: &Path, format: &str, args: &[&str]) -> Walked {
    let archive = tmp.join(format!("{format}-{}.tar", args.join("").replace(['/', '=', ' '], "_")));
    let mut all = vec!["-c", "--sort=name"];
    let fmt = format!("--format={format}");
    all.push(&fmt);
    all.extend_from_slice(args);
    let a = archive.to_str().unwrap();
    all.extend(["-f", a, "-C", src.to_str().unwrap(), "."]);
    tar(tmp, &all);
    let w = walk_file(&archive);
    compare_with_gnu_tar(&archive, &w, Oracle::default());
    // As many entries as `tar -t` lists (none of these archives has a name with a newline).
    let listed = tar(tmp, &["-tf", a]).lines().count();
    assert_eq!(w.entries.len(), listed, "{format} {args:?}: entry count");
    w
}

fn find<'a>(w: &'a Walked, path: &str) -> &'a ScannedEntry {
    w.entries
        .iter()
        .rev()
        .find(|e| e.path == path.as_bytes())
        .unwrap_or_else(|| panic!("{path} not reported"))
}

#[test]
fn basic_tree_in_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    basic_tree(&full, Specials::With);
    let v7 = tmp.path().join("v7");
    basic_tree(&v7, Specials::Without);
    for format in ["gnu", "oldgnu", "ustar", "posix", "v7"] {
        let src = if format == "v7" { &v7 } else { &full };
        let w = check_format(tmp.path(), src, format, &[]);
        assert!(w.warnings.is_empty(), "{format}: {:?}", w.warnings);
        // The root comes first, as "." ("./" in the archive).
        assert_eq!(w.entries[0].path, b"", "{format}");
        assert_eq!(w.entries[0].kind, EntryKind::Dir, "{format}");
        assert_eq!(find(&w, "sub/large").size, 3 << 20, "{format}");
        assert_eq!(find(&w, "setuid").mode, 0o4755, "{format}");
        assert_eq!(
            find(&w, "dangling").link_target.as_deref(),
            Some(&b"nowhere/at/all"[..]),
            "{format}"
        );
        // Device numbers as mknod made them (and compare_with_gnu_tar saw them extracted).
        if format != "v7" && devices_possible() {
            for (name, kind, major, minor) in DEVICES {
                let e = find(&w, name);
                let want = if kind == "b" { EntryKind::BlockDev } else { EntryKind::CharDev };
                assert_eq!((e.kind, e.rdev), (want, (major, minor)), "{format}: {name}");
            }
        }
        // GNU tar stores the second name of an inode as a hard link to the first.
        let links: Vec<_> = w.entries.iter().filter(|e| e.kind == EntryKind::Hardlink).collect();
        assert_eq!(links.len(), 2, "{format}");
        let sub_mtime = find(&w, "sub/large");
        if format == "posix" {
            assert_eq!(
                (sub_mtime.mtime, sub_mtime.mtime_nsec),
                (epoch("2020-06-07 08:09:10"), 123456789)
            );
        } else {
            assert_eq!((sub_mtime.mtime, sub_mtime.mtime_nsec), (epoch("2020-06-07 08:09:10"), 0));
        }
        let header_offsets: Vec<u64> = w.entries.iter().map(|e| e.header_offset).collect();
        assert!(header_offsets.windows(2).all(|p| p[0] < p[1]), "{format}: offsets not increasing");
    }
}

#[test]
fn extended_tree_in_gnu_and_pax_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    basic_tree(&src, Specials::With);
    extended_tree(&src);
    for format in ["gnu", "oldgnu", "posix"] {
        let w = check_format(tmp.path(), &src, format, &[]);
        let long = format!("{}/{}/{}", "d".repeat(90), "e".repeat(60), "f".repeat(120));
        assert_eq!(find(&w, &long).size, 22, "{format}");
        let t = find(&w, "long-target").link_target.clone().unwrap();
        assert_eq!(t.len(), 137, "{format}");
        assert_eq!(find(&w, "old").mtime, epoch("1960-05-06 07:08:09"), "{format}");
    }
    // Ids beyond the octal range: base-256 in GNU formats, PAX records in posix.
    for format in ["gnu", "oldgnu", "posix"] {
        let w = check_format(tmp.path(), &src, format, &["--owner=3000000", "--group=3000001"]);
        assert!(w.entries.iter().all(|e| (e.uid, e.gid) == (3000000, 3000001)), "{format}");
    }
}

/// A sparse file with holes at the start, middle and end, written with `dd`.
fn sparse_file(p: &Path, size: u64, writes: &[(u64, usize)]) {
    run(Command::new("truncate").arg("-s").arg(size.to_string()).arg(p));
    for (i, &(at, len)) in writes.iter().enumerate() {
        let chunk = p.with_extension(format!("chunk{i}"));
        fs::write(&chunk, random_bytes(len, 100 + i as u64)).unwrap();
        run(Command::new("dd")
            .arg(format!("if={}", chunk.display()))
            .arg(format!("of={}", p.display()))
            .args(["bs=1M", "oflag=seek_bytes", "conv=notrunc", "status=none"])
            .arg(format!("seek={at}")));
        fs::remove_file(chunk).unwrap();
    }
}

#[test]
fn sparse_files_in_every_sparse_format() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    sparse_file(
        &src.join("small-sparse"),
        20 << 20,
        &[(4096, 8192), (5 << 20, 10_000), (12 << 20, 1)],
    );
    sparse_file(&src.join("starts-with-data"), 3 << 20, &[(0, 5000), (2 << 20, 4096)]);
    sparse_file(&src.join("all-hole"), 1 << 20, &[]);
    // Many runs: old-GNU extension blocks (4 descriptors in the header, 21 per block).
    let many: Vec<(u64, usize)> = (0..60).map(|i| (i * 65536 + 4096, 4096)).collect();
    sparse_file(&src.join("many-runs"), 60 * 65536 + 4096, &many);
    // Over 8 GiB: beyond the octal size field.
    sparse_file(
        &src.join("huge-sparse"),
        9 << 30,
        &[(1 << 20, 4096), (9 << 29, 70_000), ((9 << 30) - 10, 10)],
    );
    let cases: [(&str, &[&str]); 5] = [
        ("gnu", &["--sparse"]),
        ("oldgnu", &["--sparse"]),
        ("posix", &["--sparse"]),
        ("posix", &["--sparse", "--sparse-version=0.0"]),
        ("posix", &["--sparse", "--sparse-version=0.1"]),
    ];
    for (format, args) in cases {
        let w = check_format(tmp.path(), &src, format, args);
        let huge = find(&w, "huge-sparse");
        assert_eq!(huge.size, 9 << 30, "{format} {args:?}");
        let DataLayout::Sparse(segs) = &huge.data else {
            panic!("{format} {args:?}: huge-sparse is not sparse")
        };
        assert!(
            segs.iter().map(|s| s.len).sum::<u64>() < 1 << 20,
            "{format} {args:?}: holes stored"
        );
        assert!(matches!(find(&w, "all-hole").data, DataLayout::Sparse(_)), "{format} {args:?}");
        let DataLayout::Sparse(segs) = &find(&w, "many-runs").data else {
            panic!("many-runs is not sparse")
        };
        assert!(segs.len() > 25, "{format} {args:?}: {} runs", segs.len());
        assert!(w.warnings.is_empty(), "{format} {args:?}: {:?}", w.warnings);
    }
}

#[test]
fn sparse_file_without_sparse_option() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    sparse_file(&src.join("sparse"), 2 << 20, &[(4096, 100), (1 << 20, 5000)]);
    for format in ["gnu", "ustar", "posix", "v7"] {
        let w = check_format(tmp.path(), &src, format, &[]);
        assert!(matches!(find(&w, "sparse").data, DataLayout::Contiguous { .. }), "{format}");
    }
}

#[test]
fn pax_global_header_applies_to_later_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    basic_tree(&src, Specials::With);
    // keyword=value puts the record in a global header.
    let w = check_format(tmp.path(), &src, "posix", &["--pax-option=uid=4242,gid=4343,comment=hi"]);
    assert!(w.entries.iter().all(|e| (e.uid, e.gid) == (4242, 4343)));
}

#[test]
fn xattrs_from_pax_records() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    if !xattrs_supported(tmp.path()) {
        // CI's temporary directory takes user xattrs (tmpfs or ext4): there this is a failure.
        assert!(std::env::var_os("CI").is_none(), "cannot set user xattrs in {tmp:?} under CI");
        crate::testutil::skip("cannot set user xattrs here (python3 or file system support)");
        return;
    }
    fs::write(src.join("plain"), b"data").unwrap();
    fs::write(src.join("tagged"), b"data").unwrap();
    set_xattr(&src.join("tagged"), "user.simple", b"value");
    set_xattr(&src.join("tagged"), "user.binary", b"a\0b\nc=d\n");
    set_xattr(&src.join("tagged"), "user.empty", b"");
    fs::create_dir(src.join("dir")).unwrap();
    set_xattr(&src.join("dir"), "user.on-dir", &[0xff, 0, 1]);
    let archive = tmp.path().join("x.tar");
    tar(
        tmp.path(),
        &[
            "-c",
            "--xattrs",
            "--format=posix",
            "-f",
            archive.to_str().unwrap(),
            "-C",
            src.to_str().unwrap(),
            ".",
        ],
    );
    let w = walk_file(&archive);
    compare_with_gnu_tar(&archive, &w, Oracle { xattrs: true, ..Oracle::default() });
    let tagged = find(&w, "tagged");
    assert_eq!(tagged.xattrs.len(), 3);
    assert!(tagged.xattrs.contains(&(b"user.binary".to_vec(), b"a\0b\nc=d\n".to_vec())));
}

#[test]
fn duplicates_plain_and_absolute_names() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    basic_tree(&src, Specials::Without);
    let s = src.to_str().unwrap();
    // Appending the same names with new content: the last one wins.
    let dup = tmp.path().join("dup.tar");
    let d = dup.to_str().unwrap();
    // (Not a hard-linked name: tar -x would break the link when it replaces the file.)
    tar(tmp.path(), &["-cf", d, "-C", s, "private", "sub"]);
    fs::write(src.join("private"), b"second version, longer than the first").unwrap();
    tar(tmp.path(), &["-rf", d, "-C", s, "private"]);
    let w = walk_file(&dup);
    assert_eq!(w.entries.iter().filter(|e| e.path == b"private").count(), 2);
    assert_eq!(find(&w, "private").size, 37);
    compare_with_gnu_tar(&dup, &w, Oracle::default());

    // Absolute names (-P): the leading '/' is stripped, like tar -x does.
    let abs = tmp.path().join("abs.tar");
    tar(tmp.path(), &["-cPf", abs.to_str().unwrap(), &format!("{s}/sub"), &format!("{s}/small")]);
    let w = walk_file(&abs);
    assert!(w.entries.iter().all(|e| e.path.starts_with(s.trim_start_matches('/').as_bytes())));
    compare_with_gnu_tar(&abs, &w, Oracle::default());
}

#[test]
fn concatenated_and_empty_archives() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    basic_tree(&src, Specials::Without);
    let s = src.to_str().unwrap();
    let a = tmp.path().join("a.tar");
    let b = tmp.path().join("b.tar");
    tar(tmp.path(), &["-cf", a.to_str().unwrap(), "-C", s, "small", "sub/deeper"]);
    tar(
        tmp.path(),
        &["--format=posix", "-cf", b.to_str().unwrap(), "-C", s, "exact512", "rel-link"],
    );
    let mut both = fs::read(&a).unwrap();
    both.extend(fs::read(&b).unwrap());
    let ab = tmp.path().join("ab.tar");
    fs::write(&ab, &both).unwrap();
    let w = walk_file(&ab);
    let names: Vec<&[u8]> = w.entries.iter().map(|e| e.path.as_slice()).collect();
    assert_eq!(names, [&b"small"[..], b"sub/deeper", b"sub/deeper/odd", b"exact512", b"rel-link"]);
    compare_with_gnu_tar(&ab, &w, Oracle { ignore_zeros: true, ..Oracle::default() });

    let empty = tmp.path().join("empty.tar");
    tar(tmp.path(), &["-cf", empty.to_str().unwrap(), "-T", "/dev/null"]);
    let w = walk_file(&empty);
    assert!(w.entries.is_empty() && w.warnings.is_empty());
    assert_eq!(w.consumed, 10240);
}

#[test]
fn incremental_dumpdirs() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    basic_tree(&src, Specials::Without);
    let snar = tmp.path().join("snar");
    let arg = format!("--listed-incremental={}", snar.display());
    let w = check_format(tmp.path(), &src, "gnu", &[&arg]);
    // GNU tar writes directories as dumpdirs ('D', with their listing as data).
    let archive =
        fs::read(tmp.path().join(format!("gnu-{}.tar", arg.replace(['/', '=', ' '], "_"))))
            .unwrap();
    let sub = find(&w, "sub");
    assert_eq!(archive[sub.header_offset as usize + 156], b'D');
    assert_eq!((sub.kind, &sub.data), (EntryKind::Dir, &DataLayout::None));
}
