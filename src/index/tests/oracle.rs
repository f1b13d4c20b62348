//! The builder against GNU tar: archives made with `tar` at test time (duplicates appended with
//! `tar -r`), read with the `tar` crate into scanned entries, built into an index, and compared
//! with what `tar -x` extracts: the same names, kinds, modes, owners, mtimes, sizes, contents,
//! symlink targets, link counts, and the same sharing of inodes.
//!
//! One rule has no oracle: an entry below a non-directory (`a` then `a/b`). GNU tar 1.34 fails
//! there ("Cannot open: Not a directory", exit 2) and keeps `a`; the index replaces `a` by an
//! implicit directory (tested in `tests.rs`). And a file over a non-empty directory fails in a
//! plain `tar -x` ("Cannot open: File exists"), so that case compares with
//! `tar --recursive-unlink -x`, which does what the index does.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::archive::{DataLayout, EntryKind, ScannedEntry};
use crate::index::{Compression, Data, Index, IndexBuilder, Ino, ROOT_INO};

const DEFAULT_MTIME: i64 = 1_234_567_890;

fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh").arg("-ec").arg(script).current_dir(dir).output().unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn normalize(path: &[u8]) -> Vec<u8> {
    let comps: Vec<&[u8]> =
        path.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".").collect();
    comps.join(&b'/')
}

/// Reads a tar file with the `tar` crate into scanned entries (what the project's scanner
/// reports), plus the whole stream.
pub(super) fn scan(path: &Path) -> (Vec<ScannedEntry>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut entries = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let kind = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink,
            tar::EntryType::Link => EntryKind::Hardlink,
            tar::EntryType::Char => EntryKind::CharDev,
            tar::EntryType::Block => EntryKind::BlockDev,
            tar::EntryType::Fifo => EntryKind::Fifo,
            other => panic!("unexpected entry type {other:?}"),
        };
        let link = e.link_name_bytes().map(|l| l.into_owned());
        let link_target = match kind {
            EntryKind::Hardlink => link.map(|l| normalize(&l)),
            EntryKind::Symlink => link,
            _ => None,
        };
        let mut xattrs = Vec::new();
        if let Some(pax) = e.pax_extensions().unwrap() {
            for ext in pax {
                let ext = ext.unwrap();
                if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                }
            }
        }
        let size = if kind == EntryKind::File { e.size() } else { 0 };
        entries.push(ScannedEntry {
            path: normalize(&e.path_bytes()),
            kind,
            mode: h.mode().unwrap() & 0o7777,
            uid: h.uid().unwrap() as u32,
            gid: h.gid().unwrap() as u32,
            mtime: h.mtime().unwrap() as i64,
            mtime_nsec: 0,
            size,
            data: if kind == EntryKind::File {
                DataLayout::Contiguous { offset: e.raw_file_position() }
            } else {
                DataLayout::None
            },
            link_target,
            rdev: (
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0),
            ),
            xattrs,
            header_offset: e.raw_header_position(),
        });
    }
    (entries, bytes)
}

fn index_of(tar: &Path) -> (Index, Vec<u8>) {
    let (entries, bytes) = scan(tar);
    let mut b = IndexBuilder::new(DEFAULT_MTIME);
    for e in entries {
        b.add_entry(e);
    }
    let id = crate::index::ArchiveIdentity {
        size: bytes.len() as u64,
        mtime_sec: 0,
        mtime_nsec: 0,
        digest: [0; 32],
    };
    let index = b.finish(id, Compression::None, 0, bytes.len() as u64).unwrap();
    (index, bytes)
}

/// Every path of the index (relative, "" for the root) with its inode.
fn index_paths(index: &Index) -> BTreeMap<Vec<u8>, Ino> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(Vec::new(), ROOT_INO)];
    while let Some((path, ino)) = stack.pop() {
        for (name, child) in index.children(ino, 0) {
            let p = if path.is_empty() { name.to_vec() } else { [&path[..], b"/", name].concat() };
            stack.push((p.clone(), child));
        }
        out.insert(path, ino);
    }
    out
}

fn fs_paths(root: &Path) -> BTreeMap<Vec<u8>, std::fs::Metadata> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![Vec::<u8>::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(std::ffi::OsStr::from_bytes(&rel));
        let meta = std::fs::symlink_metadata(&full).unwrap();
        if meta.is_dir() {
            for e in std::fs::read_dir(&full).unwrap() {
                let name = e.unwrap().file_name();
                let p = if rel.is_empty() {
                    name.as_bytes().to_vec()
                } else {
                    [&rel[..], b"/", name.as_bytes()].concat()
                };
                stack.push(p);
            }
        }
        out.insert(rel, meta);
    }
    out
}

/// Extracts `tar` with GNU tar (and `flags`) and compares with the index. `implicit` lists the
/// directories the archive does not contain (tar makes them with its own mode and mtime; `""`
/// is the root, when the archive has no `./` entry).
fn compare(dir: &Path, tar: &str, flags: &str, implicit: &[&str]) {
    use std::os::unix::ffi::OsStrExt;
    let (index, stream) = index_of(&dir.join(tar));
    let out = dir.join(format!("out-{tar}"));
    std::fs::create_dir(&out).unwrap();
    sh(&out, &format!("tar {flags} -xf ../{tar}"));
    let fs = fs_paths(&out);
    let ix = index_paths(&index);
    assert_eq!(
        fs.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>(),
        ix.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>(),
        "names"
    );
    let mut fs_to_index: HashMap<u64, Ino> = HashMap::new();
    let mut index_to_fs: HashMap<Ino, u64> = HashMap::new();
    for (path, meta) in &fs {
        let shown = String::from_utf8_lossy(path);
        let ino = ix[path];
        let attr = index.attr(ino).unwrap();
        assert_eq!(*fs_to_index.entry(meta.ino()).or_insert(ino), ino, "sharing of {shown}");
        assert_eq!(*index_to_fs.entry(ino).or_insert(meta.ino()), meta.ino(), "sharing of {shown}");
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            EntryKind::Symlink
        } else if ft.is_file() {
            EntryKind::File
        } else {
            EntryKind::Fifo
        };
        assert_eq!(attr.kind, kind, "{shown}");
        assert_eq!(u64::from(attr.nlink), meta.nlink(), "nlink of {shown}");
        assert_eq!((attr.uid, attr.gid), (meta.uid(), meta.gid()), "owner of {shown}");
        if !implicit.contains(&&*shown) {
            assert_eq!(attr.mtime, meta.mtime(), "mtime of {shown}");
            if kind != EntryKind::Symlink {
                assert_eq!(attr.mode, meta.mode() & 0o7777, "mode of {shown}");
            }
        }
        match kind {
            EntryKind::File => {
                assert_eq!(attr.size, meta.len(), "size of {shown}");
                let content = std::fs::read(out.join(std::ffi::OsStr::from_bytes(path))).unwrap();
                let from_index = match index.data(ino) {
                    Data::Contiguous(off) => &stream[off as usize..(off + attr.size) as usize],
                    Data::None => &[][..],
                    other => panic!("{shown}: {other:?}"),
                };
                assert_eq!(from_index, &content[..], "content of {shown}");
            }
            EntryKind::Symlink => {
                let target =
                    std::fs::read_link(out.join(std::ffi::OsStr::from_bytes(path))).unwrap();
                assert_eq!(index.symlink_target(ino), Some(target.as_os_str().as_bytes()));
                assert_eq!(attr.size, meta.len());
            }
            _ => {}
        }
    }
}

#[test]
fn plain_tree_matches_gnu_tar() {
    let dir = tempfile::tempdir().unwrap();
    let long = "L".repeat(150);
    sh(
        dir.path(),
        &format!(
            "mkdir -p src/d/sub src/e src/{long}
             cd src
             echo hello > d/f
             : > empty
             echo deep > {long}/{long}
             ln d/f d/sub/hl
             ln d/f hl2
             ln -s ../f d/sub/sl
             ln -P d/sub/sl sl2
             mkfifo p
             chmod 0700 d/sub
             chmod 4755 d/f
             chmod 0640 empty
             find . -exec touch -h -d @1500000000 {{}} +
             touch -h -d @1500000123 d/sub/sl
             cd .. && tar cf a.tar -C src ."
        ),
    );
    compare(dir.path(), "a.tar", "", &[]);
}

#[test]
fn appended_duplicates_match_gnu_tar() {
    let dir = tempfile::tempdir().unwrap();
    sh(
        dir.path(),
        "mkdir src && cd src
         echo old > t && ln t l && mkdir e d && echo x > d/x && echo f > f
         touch -d @1500000000 t l e d d/x f
         tar cf ../a.tar t l e d f
         rm t && echo newer > t && touch -d @1500000001 t && tar rf ../a.tar t
         rmdir e && echo ee > e && touch -d @1500000002 e && tar rf ../a.tar e
         rm f && mkdir f && echo y > f/y && touch -d @1500000003 f f/y && tar rf ../a.tar f
         chmod 0700 d && touch -d @1500000004 d && tar rf ../a.tar --no-recursion d
         mkdir -p n/m && echo z > n/m/z && touch -d @1500000005 n/m/z && tar rf ../a.tar n/m/z",
    );
    // No `./` entry; `n` and `n/m` are only implied by `n/m/z`.
    compare(dir.path(), "a.tar", "", &["", "n", "n/m"]);
}

#[test]
fn file_over_directory_matches_gnu_tar_with_recursive_unlink() {
    let dir = tempfile::tempdir().unwrap();
    sh(
        dir.path(),
        "mkdir -p src/d/s && cd src
         echo c > d/c && echo s > d/s/s && echo keep > k && ln d/c k2
         touch -d @1500000000 d d/c d/s d/s/s k
         tar cf ../a.tar d k k2
         rm -r d && echo now-a-file > d && touch -d @1500000009 d && tar rf ../a.tar d",
    );
    compare(dir.path(), "a.tar", "--recursive-unlink", &[""]);
    let (index, _) = index_of(&dir.path().join("a.tar"));
    assert_eq!(index.warnings().len(), 1, "{:?}", index.warnings());
}
