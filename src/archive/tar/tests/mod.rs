//! Tests of the tar walker. The oracle is GNU tar: archives are built with it at test time, and
//! every reported entry is checked against what `tar -x` extracts.

mod bad;
mod craft;
mod oracle;
mod perf;
mod props;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::BufReader;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::archive::{DataLayout, EntryKind, ScanError, ScannedEntry};
use crate::limits::Limits;

/// What one walk produced.
#[derive(Debug)]
pub(super) struct Walked {
    pub entries: Vec<ScannedEntry>,
    pub warnings: Vec<String>,
    pub consumed: u64,
}

/// Walks `data` through a `BufReader` with a small buffer (so blocks straddle buffer ends).
pub(super) fn walk_bytes(data: &[u8], limits: &Limits) -> Result<Walked, ScanError> {
    let mut input = BufReader::with_capacity(1000, data);
    walk_reader(&mut input, limits)
}

pub(super) fn walk_reader(
    input: &mut impl std::io::BufRead,
    limits: &Limits,
) -> Result<Walked, ScanError> {
    let mut entries = Vec::new();
    let mut warnings = Vec::new();
    let consumed = super::walk(
        input,
        limits,
        &mut |e| {
            entries.push(e);
            Ok(())
        },
        &mut |w| warnings.push(w),
    )?;
    Ok(Walked { entries, warnings, consumed })
}

/// Walks a file through a default `BufReader`.
pub(super) fn walk_file(path: &Path) -> Walked {
    let mut input = BufReader::new(fs::File::open(path).unwrap());
    let w = walk_reader(&mut input, &Limits::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(w.consumed, fs::metadata(path).unwrap().len(), "{}: consumed bytes", path.display());
    w
}

/// Runs a command, panicking with its output if it fails.
pub(super) fn run(cmd: &mut Command) -> String {
    let out = cmd.env("LC_ALL", "C").output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tar ARGS...`, in `dir`.
pub(super) fn tar(dir: &Path, args: &[&str]) -> String {
    run(Command::new("tar").current_dir(dir).args(args))
}

/// The error of a walk that must fail.
pub(super) fn walk_err(data: &[u8], limits: &Limits) -> ScanError {
    match walk_bytes(data, limits) {
        Ok(w) => panic!("walk succeeded: {w:?}"),
        Err(e) => e,
    }
}

/// The (offset, reason) of a walk that must fail with a `TarError`.
pub(super) fn tar_err(data: &[u8], limits: &Limits) -> (u64, String) {
    match walk_err(data, limits) {
        ScanError::Tar(t) => (t.offset, t.reason),
        other => panic!("expected a TarError, got {other:?}"),
    }
}

/// Options of one comparison with GNU tar's extraction.
#[derive(Default, Clone, Copy)]
pub(super) struct Oracle {
    /// Extract with `-i` (concatenated archives).
    pub ignore_zeros: bool,
    /// Extract and compare extended attributes.
    pub xattrs: bool,
}

/// Lists every path under `root` (relative, `/`-separated), not following symlinks.
fn list_tree(root: &Path) -> Vec<(Vec<u8>, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![(Vec::new(), root.to_path_buf())];
    while let Some((rel, dir)) = stack.pop() {
        for d in fs::read_dir(&dir).unwrap() {
            let d = d.unwrap();
            let mut r = rel.clone();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(d.file_name().as_bytes());
            let p = d.path();
            if d.file_type().unwrap().is_dir() {
                stack.push((r.clone(), p.clone()));
            }
            out.push((r, p));
        }
    }
    out
}

/// The extended attributes of `p` (not following symlinks), read back with Python.
pub(super) fn read_xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let out = run(Command::new("python3")
        .arg("-c")
        .arg(
            "import os,sys\nfor n in sorted(os.listxattr(sys.argv[1], follow_symlinks=False)):\n \
         print(n.encode().hex(), os.getxattr(sys.argv[1], n, follow_symlinks=False).hex())",
        )
        .arg(p));
    out.lines()
        .map(|l| {
            let (n, v) = l.split_once(' ').unwrap();
            (hex(n), hex(v))
        })
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// True if Python can set user xattrs in `dir`.
pub(super) fn xattrs_supported(dir: &Path) -> bool {
    let f = dir.join(".xattr-probe");
    fs::write(&f, b"").unwrap();
    let ok = Command::new("python3")
        .arg("-c")
        .arg("import os,sys; os.setxattr(sys.argv[1], 'user.probe', b'1')")
        .arg(&f)
        .output()
        .is_ok_and(|o| o.status.success());
    fs::remove_file(&f).unwrap();
    ok
}

/// Sets a user xattr with Python.
pub(super) fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let hexv: String = value.iter().map(|b| format!("{b:02x}")).collect();
    run(Command::new("python3")
        .arg("-c")
        .arg("import os,sys; os.setxattr(sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), follow_symlinks=False)")
        .arg(p)
        .arg(name)
        .arg(hexv));
}

/// Checks the bytes of a regular file entry, read from the archive at the reported offsets,
/// against the extracted file.
fn check_data(archive: &fs::File, e: &ScannedEntry, extracted: &Path) {
    let what = String::from_utf8_lossy(&e.path).into_owned();
    let file = fs::File::open(extracted).unwrap();
    let read = |f: &fs::File, off: u64, len: u64| {
        let mut v = vec![0u8; len as usize];
        f.read_exact_at(&mut v, off)
            .unwrap_or_else(|err| panic!("{what}: read {len} at {off}: {err}"));
        v
    };
    match &e.data {
        DataLayout::None => assert_eq!(e.size, 0, "{what}: no data but size {}", e.size),
        DataLayout::Contiguous { offset } => {
            assert!(
                read(archive, *offset, e.size) == read(&file, 0, e.size),
                "{what}: data differs"
            );
        }
        DataLayout::Sparse(segs) if e.size <= 64 << 20 => {
            let mut want = vec![0u8; e.size as usize];
            for s in segs {
                let run = read(archive, s.stream_offset, s.len);
                want[s.logical as usize..(s.logical + s.len) as usize].copy_from_slice(&run);
            }
            assert!(want == fs::read(extracted).unwrap(), "{what}: sparse data differs");
        }
        DataLayout::Sparse(segs) => {
            // Too big to rebuild: compare every run, and sample the holes.
            let mut pos = 0;
            for s in segs {
                assert!(
                    read(archive, s.stream_offset, s.len) == read(&file, s.logical, s.len),
                    "{what}: run differs"
                );
                check_hole(&file, pos, s.logical, &what);
                pos = s.logical + s.len;
            }
            check_hole(&file, pos, e.size, &what);
        }
    }
}

/// Samples a hole of an extracted file: its first, middle and last 4 KiB read as zeros.
fn check_hole(f: &fs::File, start: u64, end: u64, what: &str) {
    if start >= end {
        return;
    }
    let len = (end - start).min(4096);
    for at in [start, start + (end - start) / 2, end - len] {
        let n = len.min(end - at);
        let mut v = vec![1u8; n as usize];
        f.read_exact_at(&mut v, at).unwrap();
        assert!(v.iter().all(|&b| b == 0), "{what}: hole at {at} is not zero");
    }
}

/// Extracts `archive` with GNU tar and checks every reported entry (the last one per path)
/// against the extraction, and that everything extracted was reported.
pub(super) fn compare_with_gnu_tar(archive: &Path, w: &Walked, opts: Oracle) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    fs::create_dir(&out).unwrap();
    let mut args = vec!["-x", "--numeric-owner", "-f"];
    let a = archive.to_str().unwrap();
    args.push(a);
    if opts.ignore_zeros {
        args.push("-i");
    }
    if opts.xattrs {
        args.extend(["--xattrs", "--xattrs-include=*"]);
    }
    tar(&out, &args);

    let mut last: HashMap<&[u8], &ScannedEntry> = HashMap::new();
    for e in &w.entries {
        last.insert(&e.path, e);
    }
    // Directories GNU tar creates implicitly for reported entries.
    let mut parents: HashSet<&[u8]> = HashSet::new();
    for p in last.keys() {
        for (i, &c) in p.iter().enumerate() {
            if c == b'/' {
                parents.insert(&p[..i]);
            }
        }
    }
    let tree = list_tree(&out);
    let arch = fs::File::open(archive).unwrap();
    for (rel, p) in &tree {
        let Some(e) = last.get(rel.as_slice()) else {
            assert!(
                parents.contains(rel.as_slice()) && p.is_dir(),
                "{}: extracted but not reported",
                String::from_utf8_lossy(rel)
            );
            continue;
        };
        check_entry(&arch, e, p, &out, opts);
    }
    let extracted: HashSet<&[u8]> = tree.iter().map(|(r, _)| r.as_slice()).collect();
    for (p, e) in &last {
        if p.is_empty() {
            check_entry(&arch, e, &out, &out, opts);
        } else {
            assert!(
                extracted.contains(p),
                "{}: reported but not extracted",
                String::from_utf8_lossy(p)
            );
        }
    }
}

fn check_entry(arch: &fs::File, e: &ScannedEntry, p: &Path, root: &Path, opts: Oracle) {
    let what = String::from_utf8_lossy(&e.path).into_owned();
    let md = fs::symlink_metadata(p).unwrap();
    let ft = md.file_type();
    let kind = match e.kind {
        EntryKind::Hardlink => {
            let target = e.link_target.as_ref().unwrap();
            let tmd = fs::symlink_metadata(root.join(std::ffi::OsStr::from_bytes(target))).unwrap();
            assert_eq!(
                md.ino(),
                tmd.ino(),
                "{what}: not a hard link to {}",
                String::from_utf8_lossy(target)
            );
            return;
        }
        k => k,
    };
    let got = if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_char_device() {
        EntryKind::CharDev
    } else if ft.is_block_device() {
        EntryKind::BlockDev
    } else {
        EntryKind::File
    };
    assert_eq!(kind, got, "{what}: kind");
    assert_eq!(e.uid, md.uid(), "{what}: uid");
    assert_eq!(e.gid, md.gid(), "{what}: gid");
    assert_eq!((e.mtime, i64::from(e.mtime_nsec)), (md.mtime(), md.mtime_nsec()), "{what}: mtime");
    match kind {
        EntryKind::Symlink => {
            let t = fs::read_link(p).unwrap();
            assert_eq!(
                e.link_target.as_deref(),
                Some(t.as_os_str().as_bytes()),
                "{what}: symlink target"
            );
        }
        EntryKind::File => {
            assert_eq!(e.mode, md.mode() & 0o7777, "{what}: mode");
            assert_eq!(e.size, md.len(), "{what}: size");
            check_data(arch, e, p);
        }
        EntryKind::CharDev | EntryKind::BlockDev => {
            let rdev = md.rdev();
            let (major, minor) = (
                ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff),
                (rdev & 0xff) | ((rdev >> 12) & !0xff),
            );
            assert_eq!(e.rdev, (major as u32, minor as u32), "{what}: rdev");
            assert_eq!(e.mode, md.mode() & 0o7777, "{what}: mode");
        }
        _ => assert_eq!(e.mode, md.mode() & 0o7777, "{what}: mode"),
    }
    if opts.xattrs && kind != EntryKind::Symlink {
        let mut want = read_xattrs(p);
        want.retain(|(n, _)| n.starts_with(b"user."));
        let mut got = e.xattrs.clone();
        got.sort();
        assert_eq!(got, want, "{what}: xattrs");
    }
}
