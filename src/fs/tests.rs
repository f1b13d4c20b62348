//! Unit tests of the FUSE adapter's pure parts (the file system itself is tested by mounting
//! it, in `tests/mount.rs`).

use std::time::{Duration, UNIX_EPOCH};

use fuser::{AccessFlags, FileAttr, FileType, INodeNo};

use super::namespace::{compose, split, valid_name, LOCAL_MASK, MAX_SLOT};
use super::{encode_dev, may_access, system_time};

#[test]
fn inode_numbers_split_back_into_slot_and_index_inode() {
    for (slot, ino) in [(1, 1), (1, 2), (7, 123_456), (MAX_SLOT, LOCAL_MASK)] {
        let fuse = compose(slot, ino);
        assert_eq!(split(fuse), (slot, ino));
        assert_ne!(fuse, 1, "only the mount root is 1");
    }
    assert_eq!(compose(1, 1), 1 << 40 | 1);
    assert!(compose(2, 1) > compose(1, LOCAL_MASK), "slots never overlap");
}

#[test]
fn times_before_and_after_the_epoch_convert() {
    assert_eq!(system_time(0, 0), UNIX_EPOCH);
    assert_eq!(system_time(5, 7), UNIX_EPOCH + Duration::new(5, 7));
    assert_eq!(system_time(-2, 500_000_000), UNIX_EPOCH - Duration::from_millis(1500));
    // Out-of-range nanoseconds are clamped, never a panic.
    assert_eq!(system_time(1, u32::MAX), UNIX_EPOCH + Duration::new(1, 999_999_999));
    let _ = system_time(i64::MIN, 0);
    let _ = system_time(i64::MAX, 999_999_999);
}

#[test]
fn device_numbers_use_the_kernel_encoding() {
    // The same numbers libc's makedev gives (truncated to the 32 bits FUSE carries).
    for (major, minor) in [(1, 3), (8, 17), (259, 0), (4095, 0xfffff)] {
        let want = libc::makedev(major, minor) as u32;
        assert_eq!(encode_dev(major, minor), want, "{major}:{minor}");
    }
}

#[test]
fn names_that_cannot_be_entries_are_refused() {
    assert!(valid_name(b"custom-addon-x"));
    for bad in [&b""[..], b".", b"..", b"a/b", b"nul\0"] {
        assert!(!valid_name(bad), "{bad:?}");
    }
}

fn attr(perm: u16, uid: u32, gid: u32, kind: FileType) -> FileAttr {
    FileAttr {
        ino: INodeNo(2),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind,
        perm,
        nlink: 1,
        uid,
        gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

#[test]
fn access_follows_the_permission_classes() {
    let r = AccessFlags::R_OK;
    let x = AccessFlags::X_OK;
    let file = attr(0o640, 1000, 100, FileType::RegularFile);
    assert!(may_access(&file, 1000, 1, r));
    assert!(!may_access(&file, 1000, 1, x));
    assert!(may_access(&file, 2000, 100, r));
    assert!(!may_access(&file, 2000, 200, r));
    assert!(may_access(&file, 0, 0, r), "root reads anything");
    assert!(!may_access(&file, 0, 0, x), "root executes only what has an x bit");
    assert!(may_access(&attr(0o700, 5, 5, FileType::Directory), 0, 0, x));
    assert!(may_access(&file, 2000, 200, AccessFlags::F_OK));
}
