//! Unit tests of [`Namespace`] without FUSE: the merge overlay, hiding and showing a volume,
//! and the stability of inode numbers. Volumes are small tarballs built here with the `tar`
//! crate and indexed as `addonfs mount` does.

use std::path::Path;
use std::sync::Arc;

use super::{compose, split, Layout, Namespace, Node, Slot, Volume, FUSE_ROOT};
use crate::archive::{EntryKind, ScanOptions};
use crate::index::ROOT_INO;
use crate::reader::{ArchiveReader, ChunkCache};

/// One member of a test archive: a directory (`None`) or a file with its bytes.
type Member<'a> = (&'a str, Option<&'a [u8]>);

/// Writes `members` as the tarball `dir/name.tar` (once) and opens it as the volume `slot`.
fn volume(dir: &Path, name: &str, slot: Slot, members: &[Member<'_>]) -> Volume {
    let path = dir.join(format!("{name}.tar"));
    if !path.exists() {
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (member, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1_700_000_000);
            match data {
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, member, &[][..]).unwrap();
                }
                Some(bytes) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_size(bytes.len() as u64);
                    b.append_data(&mut h, member, *bytes).unwrap();
                }
            }
        }
        b.into_inner().unwrap().sync_all().unwrap();
    }
    let index = crate::index::open::build(&path, &ScanOptions::default(), None).unwrap();
    let cache = Arc::new(ChunkCache::new(1 << 20));
    Volume::new(slot, ArchiveReader::open(&path, Arc::new(index), cache).unwrap())
}

/// The node at `path` (`/`-separated, relative to the mount's root), found by lookups.
fn walk(ns: &Namespace, path: &str) -> Option<Node> {
    let mut node = ns.resolve(FUSE_ROOT)?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        node = ns.lookup(&node, part.as_bytes()).ok()??;
    }
    Some(node)
}

/// The FUSE inode number of `path`.
fn ino(ns: &Namespace, path: &str) -> u64 {
    let node = walk(ns, path).unwrap_or_else(|| panic!("{path} does not resolve"));
    ns.ino_of(&node)
}

/// The names directory `path` lists, in listing order.
fn names(ns: &Namespace, path: &str) -> Vec<String> {
    let dir = walk(ns, path).unwrap_or_else(|| panic!("{path} does not resolve"));
    let mut out = Vec::new();
    ns.list(&dir, 0, |e| {
        out.push(String::from_utf8_lossy(&e.name).into_owned());
        true
    })
    .unwrap();
    out.sort();
    out
}

const LOWER: &[Member<'_>] = &[
    ("etc/", None),
    ("etc/a.conf", Some(b"lower a")),
    ("etc/shared.conf", Some(b"lower shared")),
    ("bin/", None),
    ("bin/tool", Some(b"lower tool")),
    ("only-lower", Some(b"x")),
];

const UPPER: &[Member<'_>] = &[
    ("etc/", None),
    ("etc/b.conf", Some(b"upper b")),
    ("etc/shared.conf", Some(b"upper shared")),
    // A file where the lower volume has a directory: it hides the whole directory.
    ("bin", Some(b"upper bin")),
];

#[test]
fn a_later_volume_hides_an_earlier_ones_entry_and_directories_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let ns = Namespace::merged(
        vec![volume(tmp.path(), "lower", 1, LOWER), volume(tmp.path(), "upper", 2, UPPER)],
        (0, 0),
    )
    .unwrap();
    assert_eq!(names(&ns, ""), ["bin", "etc", "only-lower"]);
    // `etc` exists in both: one directory listing both volumes' entries.
    assert_eq!(names(&ns, "etc"), ["a.conf", "b.conf", "shared.conf"]);
    assert!(matches!(walk(&ns, "etc"), Some(Node::Merged(_))));
    // The same name in both: the later volume's entry wins.
    assert_eq!(split(ino(&ns, "etc/shared.conf")).0, 2);
    assert_eq!(split(ino(&ns, "etc/a.conf")).0, 1);
    assert_eq!(split(ino(&ns, "etc/b.conf")).0, 2);
    assert_eq!(split(ino(&ns, "only-lower")).0, 1);
    // The upper file `bin` hides the lower directory `bin` and everything in it.
    let bin = walk(&ns, "bin").unwrap();
    assert_eq!(ns.kind_of(&bin), Some(EntryKind::File));
    assert_eq!(split(ns.ino_of(&bin)).0, 2);
    assert!(ns.lookup(&bin, b"tool").is_err(), "bin is a file, not a directory");
    // A merged directory's `..` is the merged parent.
    assert_eq!(ns.parent_of(&walk(&ns, "etc").unwrap()), FUSE_ROOT);

    // In the other order the other volume wins.
    let swapped = Namespace::merged(
        vec![volume(tmp.path(), "upper", 2, UPPER), volume(tmp.path(), "lower", 1, LOWER)],
        (0, 0),
    )
    .unwrap();
    assert_eq!(split(ino(&swapped, "etc/shared.conf")).0, 1);
    assert_eq!(names(&swapped, "bin"), ["tool"]);
}

#[test]
fn a_hidden_volume_still_resolves_but_is_not_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let ns = Namespace::directories(
        vec![
            (b"one".to_vec(), volume(tmp.path(), "lower", 1, LOWER)),
            (b"two".to_vec(), volume(tmp.path(), "upper", 2, UPPER)),
        ],
        (0, 0),
    )
    .unwrap();
    assert_eq!(names(&ns, ""), ["one", "two"]);
    let before = ino(&ns, "two/etc/b.conf");

    assert!(ns.set_visible(b"two", false).unwrap(), "the visibility changed");
    assert!(!ns.set_visible(b"two", false).unwrap(), "hiding twice changes nothing");
    assert_eq!(names(&ns, ""), ["one"]);
    assert_eq!(ns.root_state().1, 1, "the root counts listed directories only");
    // Whoever already uses it keeps its paths and inode numbers.
    assert_eq!(ino(&ns, "two/etc/b.conf"), before);
    assert_eq!(names(&ns, "two/etc"), ["b.conf", "shared.conf"]);
    assert!(ns.resolve(before).is_some());

    assert!(ns.set_visible(b"two", true).unwrap());
    assert_eq!(names(&ns, ""), ["one", "two"]);
    assert_eq!(ino(&ns, "two/etc/b.conf"), before);
    assert!(ns.set_visible(b"three", false).is_err(), "no such entry");

    // A volume added hidden is not listed either, and resolves.
    ns.add_volume(b"three", volume(tmp.path(), "lower", 3, LOWER), false).unwrap();
    assert_eq!(names(&ns, ""), ["one", "two"]);
    assert_eq!(split(ino(&ns, "three/etc/a.conf")).0, 3);
}

#[test]
fn inode_numbers_are_the_slot_and_the_index_inode_whatever_the_order() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = ["etc", "etc/a.conf", "etc/shared.conf", "bin/tool", "only-lower"];
    let forward = Namespace::directories(
        vec![
            (b"low".to_vec(), volume(tmp.path(), "lower", 5, LOWER)),
            (b"up".to_vec(), volume(tmp.path(), "upper", 9, UPPER)),
        ],
        (0, 0),
    )
    .unwrap();
    // The same volumes added in the other order, into a namespace that has seen no lookups.
    let backward = Namespace::new(Layout::Directories, (0, 0));
    backward.add_volume(b"up", volume(tmp.path(), "upper", 9, UPPER), true).unwrap();
    backward.add_volume(b"low", volume(tmp.path(), "lower", 5, LOWER), true).unwrap();
    for path in paths.iter().rev() {
        let path = format!("low/{path}");
        assert_eq!(ino(&backward, &path), ino(&forward, &path), "{path}");
    }
    for path in ["up/etc/b.conf", "up/bin", "up"] {
        assert_eq!(ino(&backward, path), ino(&forward, path), "{path}");
    }
    // `slot << 40 | index inode`, the index inode found in the volume's own index.
    let low = walk(&forward, "low").unwrap();
    let Node::Entry(low_volume, root) = &low else { panic!("low is a volume's root") };
    assert_eq!(*root, ROOT_INO);
    assert_eq!(forward.ino_of(&low), 5 << 40 | ROOT_INO);
    let index = low_volume.index();
    let etc = index.lookup(ROOT_INO, b"etc").unwrap();
    let a = index.lookup(etc, b"a.conf").unwrap();
    assert_eq!(ino(&forward, "low/etc/a.conf"), compose(5, a));
    assert_eq!(ino(&forward, "low/etc/a.conf"), 5 << 40 | a);

    // Merged: the same volumes in the same order, looked up in another order, give the same
    // numbers (merged directories too).
    let merged = |order: &[&str]| {
        let ns = Namespace::merged(
            vec![volume(tmp.path(), "lower", 5, LOWER), volume(tmp.path(), "upper", 9, UPPER)],
            (0, 0),
        )
        .unwrap();
        order
            .iter()
            .map(|p| (p.to_string(), ino(&ns, p)))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let all = ["etc", "etc/a.conf", "etc/b.conf", "etc/shared.conf", "bin", "only-lower"];
    let mut reversed = all;
    reversed.reverse();
    assert_eq!(merged(&all), merged(&reversed));
    assert_eq!(merged(&all)["etc/a.conf"], 5 << 40 | a);
}
