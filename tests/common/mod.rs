//! Test support shared by the integration tests: a corpus of archives made by GNU tar, a model
//! of a file tree, and comparisons of what addonfs serves against what `tar -x` extracts.
#![allow(dead_code)]

pub mod corpus;
pub mod garage;
pub mod http;
pub mod node;
pub mod proxy;
pub mod systemd;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use addonfs::archive::EntryKind;
use addonfs::index::{Index, Ino, ROOT_INO};
use addonfs::reader::ArchiveReader;

/// One node of a tree, as `lstat` (and friends) show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub size: u64,
    pub nlink: u64,
    pub ino: u64,
    pub target: Option<Vec<u8>>,
    pub rdev: (u32, u32),
}

/// A tree: relative path ("" is the root) to node.
pub type Tree = BTreeMap<String, Node>;

/// Runs a command and panics with its stderr if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops `child` as a supervisor would: SIGTERM, up to `patience` for it to exit, then SIGKILL.
pub fn terminate(child: &mut std::process::Child, patience: std::time::Duration) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = std::time::Instant::now() + patience;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Shell one-liner.
pub fn sh(script: &str) -> String {
    run(Command::new("sh").arg("-c").arg(script))
}

/// True if `prog` is on PATH.
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {prog}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Says loudly that the running test skips, and why: a line `test skipped: NAME: REASON` on
/// the real standard error, past cargo's capture (`.ci/run` counts these lines apart from the
/// passed tests, which cargo counts them among).
pub fn skip(reason: &str) {
    use std::io::Write;
    let name = std::thread::current().name().unwrap_or("?").to_string();
    let _ = std::io::stderr().write_all(format!("test skipped: {name}: {reason}\n").as_bytes());
}

/// True if this process runs as root. When `CI` is set (CI runs as root) it panics instead of
/// returning false; elsewhere the caller skips, and this says so ([`skip`]). `what` names what
/// needs root.
pub fn root_ready(what: &str) -> bool {
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{what} needs root, and CI runs as root");
    skip(&format!("{what} needs root"));
    false
}

/// True if this process can mount FUSE file systems (root, and `/dev/fuse` opens for reading
/// and writing: addonfs mounts without fusermount). When `CI` is set it panics instead of
/// returning false, so a CI machine without FUSE fails the tests rather than skipping them.
pub fn fuse_ready() -> bool {
    static READY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let ready = READY.get_or_init(|| {
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if !root {
            return Err("not running as root".to_string());
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .map(drop)
            .map_err(|e| format!("/dev/fuse cannot be opened: {e}"))
    });
    match ready {
        Ok(()) => true,
        Err(reason) => {
            assert!(std::env::var_os("CI").is_none(), "FUSE is required in CI: {reason}");
            skip(reason);
            false
        }
    }
}

/// Requires an optional tool: in CI (env `CI` set) a missing tool fails the test; elsewhere
/// the caller skips (returns false), said by [`skip`].
pub fn require(prog: &str) -> bool {
    if have(prog) {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{prog} is required in CI (.ci/run installs it)");
    skip(&format!("{prog} is not installed"));
    false
}

fn kind_of(ft: std::fs::FileType) -> EntryKind {
    if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_char_device() {
        EntryKind::CharDev
    } else if ft.is_block_device() {
        EntryKind::BlockDev
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else {
        EntryKind::File
    }
}

/// Walks a real directory (an extraction, or a mount) with `lstat`.
pub fn walk_dir(root: &Path) -> Tree {
    let mut tree = Tree::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((path, rel)) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let kind = kind_of(meta.file_type());
        let target = (kind == EntryKind::Symlink).then(|| {
            use std::os::unix::ffi::OsStrExt;
            std::fs::read_link(&path).expect("readlink").as_os_str().as_bytes().to_vec()
        });
        let rdev = meta.rdev();
        tree.insert(
            rel.clone(),
            Node {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.mtime(),
                mtime_nsec: meta.mtime_nsec() as u32,
                size: if kind == EntryKind::Dir { 0 } else { meta.size() },
                nlink: meta.nlink(),
                ino: meta.ino(),
                target,
                rdev: (
                    ((rdev >> 8) & 0xfff) as u32,
                    ((rdev & 0xff) | ((rdev >> 12) & 0xfff00)) as u32,
                ),
            },
        );
        if kind == EntryKind::Dir {
            for entry in std::fs::read_dir(&path).unwrap_or_else(|e| panic!("{path:?}: {e}")) {
                let entry = entry.expect("dir entry");
                let name = entry.file_name().to_string_lossy().into_owned();
                let child_rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                stack.push((entry.path(), child_rel));
            }
        }
    }
    tree
}

/// Walks an index from its root.
pub fn walk_index(index: &Index) -> Tree {
    let mut tree = Tree::new();
    let mut stack: Vec<(Ino, String)> = vec![(ROOT_INO, String::new())];
    while let Some((ino, rel)) = stack.pop() {
        let attr = index.attr(ino).unwrap_or_else(|| panic!("no attr for inode {ino} ({rel})"));
        tree.insert(
            rel.clone(),
            Node {
                kind: attr.kind,
                mode: attr.mode,
                uid: attr.uid,
                gid: attr.gid,
                mtime: attr.mtime,
                mtime_nsec: attr.mtime_nsec,
                size: if attr.kind == EntryKind::Dir { 0 } else { attr.size },
                nlink: u64::from(attr.nlink),
                ino,
                target: index.symlink_target(ino).map(<[u8]>::to_vec),
                rdev: attr.rdev,
            },
        );
        if attr.kind == EntryKind::Dir {
            assert_eq!(
                index.child_count(ino),
                index.children(ino, 0).count(),
                "child count of {rel:?}"
            );
            for (name, child) in index.children(ino, 0) {
                let name = String::from_utf8_lossy(name).into_owned();
                assert_eq!(index.lookup(ino, name.as_bytes()), Some(child), "lookup {rel}/{name}");
                let child_rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
                stack.push((child, child_rel));
            }
        }
    }
    tree
}

/// What to compare.
#[derive(Debug, Clone, Copy)]
pub struct Compare {
    /// Compare sub-second mtimes (PAX archives carry them).
    pub nsec: bool,
    /// Compare the root directory's attributes (only when the archive has a `./` entry).
    pub root: bool,
    /// Compare directory link counts.
    pub dir_nlink: bool,
}

/// Asserts that `actual` (what addonfs serves) has exactly the names, kinds, modes, owners,
/// sizes, mtimes, symlink targets and hard-link groups of `expected` (what tar extracted).
pub fn assert_same_tree(expected: &Tree, actual: &Tree, cmp: Compare, what: &str) {
    let missing: Vec<_> = expected.keys().filter(|k| !actual.contains_key(*k)).collect();
    let extra: Vec<_> = actual.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{what}: missing {missing:?}, extra {extra:?}");
    for (path, want) in expected {
        let got = &actual[path];
        if path.is_empty() && !cmp.root {
            continue;
        }
        let ctx = format!("{what}: {path:?}");
        assert_eq!(got.kind, want.kind, "{ctx}: kind");
        assert_eq!(got.mode, want.mode, "{ctx}: mode {:o} vs {:o}", got.mode, want.mode);
        assert_eq!((got.uid, got.gid), (want.uid, want.gid), "{ctx}: owner");
        if want.kind != EntryKind::Symlink {
            // tar -x cannot set a symlink's mtime portably; it uses lutimes where it can.
            assert_eq!(got.mtime, want.mtime, "{ctx}: mtime");
            if cmp.nsec {
                assert_eq!(got.mtime_nsec, want.mtime_nsec, "{ctx}: mtime nsec");
            }
        }
        assert_eq!(got.size, want.size, "{ctx}: size");
        assert_eq!(got.target, want.target, "{ctx}: symlink target");
        if matches!(want.kind, EntryKind::CharDev | EntryKind::BlockDev) {
            assert_eq!(got.rdev, want.rdev, "{ctx}: rdev");
        }
        if want.kind != EntryKind::Dir || cmp.dir_nlink {
            assert_eq!(got.nlink, want.nlink, "{ctx}: nlink");
        }
    }
    // Hard-link groups: two paths share an inode in one tree iff they do in the other.
    fn groups(tree: &Tree) -> Vec<Vec<&String>> {
        let mut by_ino: BTreeMap<u64, Vec<&String>> = BTreeMap::new();
        for (path, node) in tree {
            if node.kind != EntryKind::Dir {
                by_ino.entry(node.ino).or_default().push(path);
            }
        }
        let mut groups: Vec<Vec<&String>> = by_ino.into_values().filter(|g| g.len() > 1).collect();
        groups.sort();
        groups
    }
    assert_eq!(groups(actual), groups(expected), "{what}: hard-link groups");
    // Distinct inodes everywhere else.
    let mut seen = BTreeMap::new();
    for (path, node) in actual {
        if let Some(other) = seen.insert(node.ino, path) {
            let linked = node.kind != EntryKind::Dir && expected[path].ino == expected[other].ino;
            assert!(linked, "{what}: {path:?} and {other:?} share inode {}", node.ino);
        }
    }
}

/// Ranges of a file to compare: everything for normal files, samples for huge (sparse) ones.
pub fn sample_ranges(size: u64, extra: &[u64]) -> Vec<(u64, u64)> {
    const WHOLE: u64 = 64 << 20;
    const WINDOW: u64 = 64 << 10;
    if size <= WHOLE {
        return vec![(0, size)];
    }
    let mut starts: Vec<u64> = (0..size).step_by(512 << 20).collect();
    starts.extend(extra.iter().map(|o| o.saturating_sub(WINDOW / 2)));
    starts.push(size.saturating_sub(WINDOW));
    starts.sort_unstable();
    starts.dedup();
    starts.into_iter().map(|s| (s, WINDOW.min(size - s))).collect()
}

/// Reads `len` bytes at `offset` of a real file.
pub fn read_file_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut buf = vec![0u8; len as usize];
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64).expect("read");
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    buf
}

/// Compares every regular file's bytes: `expected_root` on disk against `read(path, offset,
/// len)`. `hot` lists offsets worth sampling in huge files.
pub fn assert_same_bytes(
    expected_root: &Path,
    tree: &Tree,
    hot: &[u64],
    what: &str,
    mut read: impl FnMut(&str, u64, u64) -> Vec<u8>,
) {
    for (path, node) in tree {
        if node.kind != EntryKind::File {
            continue;
        }
        let on_disk: PathBuf = expected_root.join(path);
        for (offset, len) in sample_ranges(node.size, hot) {
            let want = read_file_range(&on_disk, offset, len);
            let got = read(path, offset, len);
            assert!(
                got == want,
                "{what}: {path:?} bytes {offset}..{} differ (got {} bytes, want {})",
                offset + len,
                got.len(),
                want.len()
            );
        }
    }
}

/// Reads `len` bytes at `offset` of the entry at `path` through the library reader.
pub fn read_entry(reader: &ArchiveReader, path: &str, offset: u64, len: u64) -> Vec<u8> {
    let ino = reader.index().resolve(path.as_bytes()).unwrap_or_else(|| panic!("no entry {path}"));
    let mut out = vec![0u8; len as usize];
    let mut done = 0usize;
    while done < out.len() {
        let n = reader.read(ino, offset + done as u64, &mut out[done..]).expect("read entry");
        if n == 0 {
            break;
        }
        done += n;
    }
    out.truncate(done);
    out
}

/// Extended attributes of every node of a real tree (via python3, which has the calls).
pub fn xattrs_of(root: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let script = r#"
import os, sys, json
root = sys.argv[1]
out = {}
for dirpath, dirs, files in os.walk(root):
    for name in [''] + dirs + files:
        p = os.path.join(dirpath, name) if name else dirpath
        rel = os.path.relpath(p, root)
        rel = '' if rel == '.' else rel
        try:
            names = os.listxattr(p, follow_symlinks=False)
        except OSError:
            names = []
        names = [n for n in names if n.startswith('user.')]
        if names:
            out[rel] = {n: os.getxattr(p, n, follow_symlinks=False).hex() for n in names}
print(json.dumps(out))
"#;
    let text = run(Command::new("python3").arg("-c").arg(script).arg(root));
    serde_json::from_str(&text).expect("xattr json")
}
