//! Property test: random entry sequences built into an index agree, through every accessor,
//! with a flat model (a `BTreeMap` from full paths to inode ids) that applies the same rules in
//! a different way (prefix deletion instead of a tree).

use std::collections::{BTreeMap, HashMap, VecDeque};

use proptest::prelude::*;

use super::{identity, DEFAULT_MTIME, STREAM};
use crate::archive::{DataLayout, EntryKind, ScannedEntry, SparseSegment};
use crate::index::{Compression, Data, Index, IndexBuilder, Ino, ROOT_INO};

#[derive(Debug, Clone, PartialEq)]
struct MInode {
    kind: EntryKind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nsec: u32,
    size: u64,
    rdev: (u32, u32),
    data: Data,
    target: Vec<u8>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Model {
    paths: BTreeMap<Vec<u8>, usize>,
    inodes: Vec<MInode>,
}

fn implicit_dir() -> MInode {
    MInode {
        kind: EntryKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: DEFAULT_MTIME,
        mtime_nsec: 0,
        size: 0,
        rdev: (0, 0),
        data: Data::None,
        target: Vec::new(),
        xattrs: Vec::new(),
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        [parent, b"/", name].concat()
    }
}

impl Model {
    fn new() -> Model {
        let mut paths = BTreeMap::new();
        paths.insert(Vec::new(), 0);
        Model { paths, inodes: vec![implicit_dir()] }
    }

    fn is_dir(&self, path: &[u8]) -> Option<bool> {
        self.paths.get(path).map(|&id| self.inodes[id].kind == EntryKind::Dir)
    }

    fn remove_below(&mut self, path: &[u8]) {
        let prefix = [path, b"/"].concat();
        self.paths.retain(|k, _| !k.starts_with(&prefix));
    }

    fn new_inode(&mut self, e: &ScannedEntry) -> usize {
        let (size, data, target, rdev) = match e.kind {
            EntryKind::File => (
                e.size,
                match &e.data {
                    DataLayout::None => Data::None,
                    DataLayout::Contiguous { offset } => Data::Contiguous(*offset),
                    DataLayout::Sparse(s) => Data::Sparse(s.clone()),
                },
                Vec::new(),
                (0, 0),
            ),
            EntryKind::Symlink => {
                let t = e.link_target.clone().unwrap_or_default();
                (t.len() as u64, Data::None, t, (0, 0))
            }
            EntryKind::CharDev | EntryKind::BlockDev => (0, Data::None, Vec::new(), e.rdev),
            _ => (0, Data::None, Vec::new(), (0, 0)),
        };
        self.inodes.push(MInode {
            kind: e.kind,
            mode: e.mode & 0o7777,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime,
            mtime_nsec: e.mtime_nsec,
            size,
            rdev,
            data,
            target,
            xattrs: e.xattrs.clone(),
        });
        self.inodes.len() - 1
    }

    fn apply(&mut self, e: &ScannedEntry) {
        let path = e.path.clone();
        let target = if e.kind == EntryKind::Hardlink {
            let t = e.link_target.clone().unwrap_or_default();
            match self.paths.get(&t) {
                Some(&id) if self.inodes[id].kind != EntryKind::Dir => Some(id),
                _ => return,
            }
        } else {
            None
        };
        if path.is_empty() {
            if e.kind == EntryKind::Dir {
                let root = &mut self.inodes[0];
                root.mode = e.mode & 0o7777;
                root.uid = e.uid;
                root.gid = e.gid;
                root.mtime = e.mtime;
                root.mtime_nsec = e.mtime_nsec;
                root.xattrs = e.xattrs.clone();
            }
            return;
        }
        // Parents: every proper prefix must be a directory.
        let mut prefix = Vec::new();
        let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
        for comp in &comps[..comps.len() - 1] {
            prefix = join(&prefix, comp);
            if self.is_dir(&prefix) != Some(true) {
                // Missing, or a non-directory (which has nothing below it): a new directory.
                self.inodes.push(implicit_dir());
                self.paths.insert(prefix.clone(), self.inodes.len() - 1);
            }
        }
        let existing_dir = self.is_dir(&path) == Some(true);
        match e.kind {
            EntryKind::Hardlink => {
                if self.paths.get(&path) != target.as_ref() {
                    self.remove_below(&path);
                    self.paths.insert(path, target.unwrap_or(0));
                }
            }
            EntryKind::Dir if existing_dir => {
                let id = self.paths[&path];
                let d = &mut self.inodes[id];
                d.mode = e.mode & 0o7777;
                d.uid = e.uid;
                d.gid = e.gid;
                d.mtime = e.mtime;
                d.mtime_nsec = e.mtime_nsec;
                d.xattrs = e.xattrs.clone();
            }
            _ => {
                self.remove_below(&path);
                let id = self.new_inode(e);
                self.paths.insert(path, id);
            }
        }
    }

    fn parent_of(path: &[u8]) -> (&[u8], &[u8]) {
        match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&[][..], path),
        }
    }

    /// The children of directory `dir`, sorted by name.
    fn children(&self, dir: &[u8]) -> Vec<(Vec<u8>, usize)> {
        self.paths
            .iter()
            .filter(|(p, _)| !p.is_empty() && Model::parent_of(p).0 == dir)
            .map(|(p, &id)| (Model::parent_of(p).1.to_vec(), id))
            .collect()
    }

    /// Inode numbers by a breadth-first walk in name order (the rule, derived independently).
    fn numbering(&self) -> HashMap<usize, Ino> {
        let mut numbers = HashMap::new();
        numbers.insert(0usize, ROOT_INO);
        let mut queue = VecDeque::from([Vec::<u8>::new()]);
        while let Some(dir) = queue.pop_front() {
            for (name, id) in self.children(&dir) {
                if !numbers.contains_key(&id) {
                    let next = numbers.len() as Ino + 1;
                    numbers.insert(id, next);
                }
                if self.inodes[id].kind == EntryKind::Dir {
                    queue.push_back(join(&dir, &name));
                }
            }
        }
        numbers
    }
}

fn check(index: &Index, model: &Model) {
    let numbers = model.numbering();
    assert_eq!(index.stats().inodes as usize, numbers.len());
    assert_eq!(index.stats().dirents as usize, model.paths.len() - 1);
    let mut names_of: HashMap<usize, u32> = HashMap::new();
    for &id in model.paths.values() {
        *names_of.entry(id).or_default() += 1;
    }
    for (path, &id) in &model.paths {
        let ino = index.resolve(path).unwrap_or_else(|| panic!("{path:?} missing"));
        assert_eq!(ino, numbers[&id], "inode number of {path:?}");
        let m = &model.inodes[id];
        let attr = index.attr(ino).unwrap();
        assert_eq!(attr.ino, ino);
        assert_eq!(attr.kind, m.kind, "{path:?}");
        assert_eq!(
            (attr.mode, attr.uid, attr.gid, attr.mtime, attr.mtime_nsec, attr.size, attr.rdev),
            (m.mode, m.uid, m.gid, m.mtime, m.mtime_nsec, m.size, m.rdev),
            "{path:?}"
        );
        let children = model.children(path);
        if m.kind == EntryKind::Dir {
            let subdirs =
                children.iter().filter(|(_, c)| model.inodes[*c].kind == EntryKind::Dir).count();
            assert_eq!(attr.nlink as usize, 2 + subdirs, "{path:?}");
            let got: Vec<(Vec<u8>, Ino)> =
                index.children(ino, 0).map(|(n, i)| (n.to_vec(), i)).collect();
            let want: Vec<(Vec<u8>, Ino)> =
                children.iter().map(|(n, c)| (n.clone(), numbers[c])).collect();
            assert_eq!(got, want, "children of {path:?}");
            assert_eq!(index.child_count(ino), want.len());
            for (k, (name, child)) in want.iter().enumerate() {
                assert_eq!(index.lookup(ino, name), Some(*child));
                assert_eq!(index.children(ino, k).next().map(|(_, i)| i), Some(*child));
            }
            let (parent, _) = Model::parent_of(path);
            let parent_ino = if path.is_empty() { ROOT_INO } else { numbers[&model.paths[parent]] };
            assert_eq!(index.parent(ino), Some(parent_ino));
        } else {
            assert_eq!(attr.nlink, names_of[&id], "{path:?}");
            assert_eq!(index.child_count(ino), 0);
            assert_eq!(index.parent(ino), None);
        }
        assert_eq!(index.data(ino), m.data, "{path:?}");
        let target = index.symlink_target(ino);
        if m.kind == EntryKind::Symlink {
            assert_eq!(target, Some(&m.target[..]));
        } else {
            assert_eq!(target, None);
        }
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> =
            index.xattrs(ino).into_iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
        assert_eq!(xattrs, m.xattrs, "{path:?}");
    }
}

fn arb_path() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "a.b", "B"]), 0..4)
        .prop_map(|comps| comps.join("/").into_bytes())
}

fn arb_entry() -> impl Strategy<Value = ScannedEntry> {
    let kind = prop::sample::select(vec![
        EntryKind::File,
        EntryKind::File,
        EntryKind::Dir,
        EntryKind::Dir,
        EntryKind::Symlink,
        EntryKind::Hardlink,
        EntryKind::Hardlink,
        EntryKind::Fifo,
        EntryKind::CharDev,
    ]);
    let xattrs = prop::collection::vec(
        (prop::sample::select(vec!["user.a", "user.b"]), prop::collection::vec(any::<u8>(), 0..4)),
        0..3,
    );
    (
        arb_path(),
        kind,
        arb_path(),
        (prop::sample::select(vec![0o644u32, 0o755, 0o4711, 0o170777]), 0u32..3, 0i64..4, 0u32..3),
        (0u64..1 << 30, 0u64..5000, any::<bool>()),
        xattrs,
    )
        .prop_map(
            |(path, kind, target, (mode, uid, mtime, nsec), (offset, size, sparse), xattrs)| {
                let data = match kind {
                    EntryKind::File if sparse => DataLayout::Sparse(vec![
                        SparseSegment { logical: 0, len: size / 3, stream_offset: offset },
                        SparseSegment {
                            logical: size / 2,
                            len: size / 4,
                            stream_offset: offset + 7,
                        },
                    ]),
                    EntryKind::File => DataLayout::Contiguous { offset },
                    _ => DataLayout::None,
                };
                let link_target = match kind {
                    EntryKind::Hardlink => Some(target),
                    EntryKind::Symlink => Some([b"../".as_slice(), &target, b"x"].concat()),
                    _ => None,
                };
                ScannedEntry {
                    path,
                    kind,
                    mode,
                    uid,
                    gid: uid + 1,
                    mtime: 1_600_000_000 + mtime,
                    mtime_nsec: nsec,
                    size,
                    data,
                    link_target,
                    rdev: (uid, uid * 2),
                    xattrs: xattrs.into_iter().map(|(n, v)| (n.as_bytes().to_vec(), v)).collect(),
                    header_offset: 0,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_agree_with_the_model(entries in prop::collection::vec(arb_entry(), 0..40)) {
        let mut model = Model::new();
        let mut builder = IndexBuilder::new(DEFAULT_MTIME);
        for e in &entries {
            model.apply(e);
            builder.add_entry(e.clone());
        }
        let index = builder.finish(identity(), Compression::None, 0, STREAM).unwrap();
        check(&index, &model);
        let again = Index::from_bytes(index.as_bytes().to_vec()).unwrap();
        prop_assert_eq!(again.as_bytes(), index.as_bytes());
        check(&again, &model);
    }
}
