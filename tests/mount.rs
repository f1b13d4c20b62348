//! The FUSE mount, really mounted (as root with /dev/fuse, like CI), against its oracle GNU tar:
//! the mounted tree must be what `tar -x` extracts — names, kinds, modes, owners, sizes, mtimes,
//! symlink targets, hard links sharing an inode, xattrs and bytes — and the mount must be
//! read-only, concurrent-safe, and leave nothing behind when stopped or killed.
//!
//! Every test runs the real binary (`addonfs mount ... MOUNTPOINT`) on a unique temporary mount
//! point; a guard stops it and removes any mount left, even when an assertion fails. When the
//! `CI` variable is set and FUSE is unusable, the tests fail; elsewhere they skip with a reason.

mod common;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use addonfs::mount::{mount_at, FS_TYPE};
use common::corpus::{self, Gz};
use common::{assert_same_bytes, assert_same_tree, read_file_range, run, sh, walk_dir, Compare};

/// How long a mount may take to appear (it may index a multi-GiB sparse archive first).
const MOUNT_TIMEOUT: Duration = Duration::from_secs(120);

/// A running `addonfs mount`, stopped (and its mount removed) on drop.
struct Mounted {
    child: Option<Child>,
    mountpoint: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Mounts `archives` with `extra` options on a fresh mount point and waits until it serves.
fn mount(archives: &[&Path], extra: &[&str]) -> Mounted {
    let dir = tempfile::Builder::new().prefix("addonfs-mnt-").tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&mountpoint).expect("mkdir mountpoint");
    mount_on(&mountpoint, archives, extra, dir)
}

/// Mounts on an existing mount point (whose temporary directory `dir` the guard keeps).
fn mount_on(
    mountpoint: &Path,
    archives: &[&Path],
    extra: &[&str],
    dir: tempfile::TempDir,
) -> Mounted {
    let log = unique(dir.path().join("mount.log"));
    let stderr = File::create(&log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_addonfs"))
        .args(["--log-level", "info", "mount"])
        .args(archives)
        .arg(mountpoint)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn addonfs mount");
    let mut guard =
        Mounted { child: Some(child), mountpoint: mountpoint.to_path_buf(), log, _dir: dir };
    guard.wait_mounted();
    guard
}

/// `path`, or `path` with a number added if it exists.
fn unique(path: PathBuf) -> PathBuf {
    (0..).map(|i| path.with_extension(format!("{i}.log"))).find(|p| !p.exists()).unwrap_or(path)
}

impl Mounted {
    fn wait_mounted(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(info) = mount_at(&self.mountpoint).expect("mountinfo") {
                // statvfs reaches the daemon (a stale mount answers ENOTCONN).
                if info.fs_type == FS_TYPE && addonfs::mount::sys::statvfs(&self.mountpoint).is_ok()
                {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("try_wait"))
            {
                self.child = None;
                panic!("addonfs mount exited with {status} before mounting:\n{}", self.log_text());
            }
            assert!(
                start.elapsed() < MOUNT_TIMEOUT,
                "not mounted after {MOUNT_TIMEOUT:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.mountpoint.clone()
        } else {
            self.mountpoint.join(rel)
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn signal(&self, signal: &str) {
        run(Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()));
    }

    /// Waits for the process to exit (at most `timeout`).
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "still running after {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn is_mounted(&self) -> bool {
        mount_at(&self.mountpoint).expect("mountinfo").is_some()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        while mount_at(&self.mountpoint).ok().flatten().is_some() {
            let status = Command::new("umount").arg("-l").arg(&self.mountpoint).status();
            if !status.is_ok_and(|s| s.success()) {
                break;
            }
        }
    }
}

/// A temporary directory holding the corpus source tree (`src`) and its tar (`a.tar`) in
/// `format`, made with the extra tar `args`; returns the directory and the tar's path.
fn source_tar(format: &str, args: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = corpus::source_tree(&tmp.path().join("src"));
    let tar = tmp.path().join("a.tar");
    corpus::tar_create(&src, &tar, format, args);
    (tmp, tar)
}

/// The tree extracted at `dest` as the mount serves it: FIFOs without write bits
/// (`addonfs::fs::served_mode`).
fn served_tree(dest: &Path) -> common::Tree {
    let mut tree = walk_dir(dest);
    for node in tree.values_mut() {
        if node.kind == addonfs::archive::EntryKind::Fifo {
            node.mode &= !0o222;
        }
    }
    tree
}

fn compare_for(format: &str) -> Compare {
    Compare { nsec: format == "posix", root: true, dir_nlink: true }
}

/// Mounts `archive` and checks the mount serves exactly the tree extracted at `dest`.
fn check_mount(
    archive: &Path,
    dest: &Path,
    cmp: Compare,
    hot: &[u64],
    extra: &[&str],
    what: &str,
) -> Mounted {
    let m = mount(&[archive], extra);
    let expected = served_tree(dest);
    let served = walk_dir(&m.mountpoint);
    assert_same_tree(&expected, &served, cmp, what);
    assert_same_bytes(dest, &expected, hot, what, |path, offset, len| {
        read_file_range(&m.path(path), offset, len)
    });
    m
}

#[test]
fn every_format_and_compression_mounts_like_tar_x() {
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    for format in corpus::FORMATS {
        let src = corpus::source_tree(&tmp.path().join(format!("src-{format}")));
        corpus::trim_for(format, &src);
        let tar = tmp.path().join(format!("{format}.tar"));
        corpus::tar_create(&src, &tar, format, &[]);
        let dest = tmp.path().join(format!("x-{format}"));
        corpus::extract(&tar, &dest, false);
        let compressions: &[Gz] = if format == "gnu" {
            &[Gz::None, Gz::Level(6), Gz::Level(1), Gz::MultiMember, Gz::Pigz, Gz::Bgzip]
        } else {
            &[Gz::None, Gz::Level(6)]
        };
        for &how in compressions {
            if !how.available() {
                continue;
            }
            let archive = corpus::compress(&tar, how);
            let what = format!("{format}/{}", how.name());
            // A small span and cache, so reads cross access points and evict spans.
            let m = check_mount(
                &archive,
                &dest,
                compare_for(format),
                &[],
                &["--span", "64K", "--cache-size", "1M"],
                &what,
            );
            // The device nodes (compared above with the extraction) are there, with their
            // numbers as mknod made them.
            if format != "v7" && corpus::devices_possible() {
                for (name, kind, major, minor) in corpus::DEVICES {
                    let meta = std::fs::symlink_metadata(m.path(&format!("dev/{name}")))
                        .unwrap_or_else(|e| panic!("{what}: dev/{name}: {e}"));
                    let ft = meta.file_type();
                    let is_kind =
                        if kind == "b" { ft.is_block_device() } else { ft.is_char_device() };
                    assert!(is_kind, "{what}: dev/{name} is {ft:?}");
                    let rdev = std::os::unix::fs::MetadataExt::rdev(&meta);
                    assert_eq!(
                        (libc::major(rdev), libc::minor(rdev)),
                        (major, minor),
                        "{what}: dev/{name}"
                    );
                }
            }
            if format == "posix" {
                let want = common::xattrs_of(&dest);
                assert!(want.contains_key("xattrs/with-xattr"), "the source tree has xattrs");
                assert_eq!(common::xattrs_of(&m.mountpoint), want, "{what}: xattrs");
            }
        }
        std::fs::remove_dir_all(&src).expect("cleanup");
        std::fs::remove_dir_all(&dest).expect("cleanup");
    }
}

#[test]
fn mount_is_read_only_nosuid_nodev_with_default_permissions() {
    if !common::fuse_ready() {
        return;
    }
    let (_tmp, tar) = source_tar("posix", &[]);
    let m = mount(&[&tar], &[]);
    let info = mount_at(&m.mountpoint).expect("mountinfo").expect("mounted");
    let options: Vec<&str> = info.mount_options.split(',').collect();
    for want in ["ro", "nosuid", "nodev"] {
        assert!(options.contains(&want), "{want} missing from {}", info.mount_options);
    }
    assert_eq!(info.fs_type, FS_TYPE);
    assert_eq!(info.source, "addonfs");
    assert!(info.super_options.contains("default_permissions"), "{}", info.super_options);
    assert!(!info.super_options.contains("allow_other"), "{}", info.super_options);
    // statvfs agrees: read-only and nosuid flags, our block size.
    let out = run(Command::new("python3").arg("-c").arg(
        "import os,sys; s=os.statvfs(sys.argv[1]); print(s.f_flag & os.ST_RDONLY != 0, s.f_flag & os.ST_NOSUID != 0, s.f_bsize, s.f_files > 200)",
    ).arg(&m.mountpoint));
    assert_eq!(out.trim(), "True True 4096 True");
    // The set-uid bit is shown (as tar -x keeps it) but not honoured (nosuid).
    let suid = std::fs::metadata(m.path("modes/setuid")).expect("stat").permissions().mode();
    assert_eq!(suid & 0o7777, 0o4755);
}

/// Every way of changing the tree fails with EROFS.
#[test]
fn writes_fail_with_erofs() {
    if !common::fuse_ready() {
        return;
    }
    let (tmp, tar) = source_tar("posix", &["--xattrs", "--xattrs-include=user.*"]);
    let m = mount(&[&tar], &[]);
    let file = m.path("usr/custom_file");
    let erofs = |what: &str, result: std::io::Result<()>| {
        let err = result.expect_err(what);
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{what}: {err}");
    };
    erofs("open for write", OpenOptions::new().write(true).open(&file).map(drop));
    erofs("open for append", OpenOptions::new().append(true).open(&file).map(drop));
    erofs("truncate", OpenOptions::new().write(true).truncate(true).open(&file).map(drop));
    erofs("create", File::create(m.path("usr/new")).map(drop));
    erofs("mkdir", std::fs::create_dir(m.path("newdir")));
    erofs("rename", std::fs::rename(&file, m.path("usr/renamed")));
    erofs("chmod", std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)));
    erofs("unlink", std::fs::remove_file(&file));
    erofs("rmdir", std::fs::remove_dir(m.path("empty-dir")));
    erofs("symlink", std::os::unix::fs::symlink("x", m.path("usr/link")));
    erofs("hard link", std::fs::hard_link(&file, m.path("usr/hard")));
    let setxattr = Command::new("python3")
        .arg("-c")
        .arg("import os,sys\ntry:\n os.setxattr(sys.argv[1],'user.x',b'1')\nexcept OSError as e:\n print(e.errno)")
        .arg(&file)
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&setxattr.stdout).trim(),
        libc::EROFS.to_string(),
        "setxattr"
    );
    let removexattr = Command::new("python3")
        .arg("-c")
        .arg("import os,sys\ntry:\n os.removexattr(sys.argv[1],'user.addon')\nexcept OSError as e:\n print(e.errno)")
        .arg(m.path("xattrs/with-xattr"))
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&removexattr.stdout).trim(),
        libc::EROFS.to_string(),
        "removexattr"
    );
    // Nothing changed.
    assert_eq!(
        std::fs::read(&file).expect("read"),
        std::fs::read(tmp.path().join("src/usr/custom_file")).expect("read")
    );
}

/// Sparse files (here 9 GiB with a few data runs), as GNU tar writes them, plain and gzipped.
#[test]
fn sparse_files_mount_like_tar_x() {
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    corpus::sparse_tree(&src);
    let hot = corpus::SPARSE_HOT;
    for (i, (format, args)) in
        [("gnu", &["--sparse"][..]), ("posix", &["--sparse"][..])].iter().enumerate()
    {
        let tar = tmp.path().join(format!("sparse-{i}.tar"));
        corpus::tar_create(&src, &tar, format, args);
        let dest = tmp.path().join(format!("x{i}"));
        corpus::extract(&tar, &dest, false);
        for how in [Gz::None, Gz::Level(1)] {
            let archive = corpus::compress(&tar, how);
            let what = format!("sparse {format} {}", how.name());
            let m = check_mount(&archive, &dest, compare_for(format), &hot, &[], &what);
            // A sparse file's blocks count what is stored, not its size.
            let blocks = run(Command::new("stat").args(["-c", "%b"]).arg(m.path("big")));
            let blocks: u64 = blocks.trim().parse().expect("blocks");
            assert!(blocks < 1 << 12, "{what}: big has {blocks} blocks");
        }
        std::fs::remove_dir_all(&dest).expect("cleanup");
    }
}

/// Appending the same names again (`tar -r`): the last copy wins, as extraction does.
#[test]
fn duplicate_entries_mount_like_tar_x() {
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let tar = corpus::duplicates_archive(tmp.path());
    let dest = tmp.path().join("x");
    corpus::extract(&tar, &dest, false);
    for how in [Gz::None, Gz::Level(6)] {
        let archive = corpus::compress(&tar, how);
        check_mount(
            &archive,
            &dest,
            compare_for("gnu"),
            &[],
            &[],
            &format!("duplicates {}", how.name()),
        );
    }
}

/// 32 threads read random ranges of random files, half of them with O_DIRECT so every read
/// reaches the daemon, through a cache much smaller than the data: every byte is right, and
/// the daemon served reads in parallel (its own count of reads in flight, logged at unmount,
/// went above one). How fast is a benchmark's business (`scripts/bench-concurrent-reads.py`).
#[test]
fn concurrent_random_reads_are_exact() {
    if !common::fuse_ready() {
        return;
    }
    const THREADS: u64 = 32;
    const READS_PER_THREAD: usize = 30;
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    let mut files = Vec::new();
    for i in 0..12u64 {
        let len = 100_000 + (i as usize * 290_000);
        let bytes = if i % 2 == 0 { corpus::noise(i, len) } else { corpus::text(i, len) };
        let name = format!("dir{}/f{i}", i % 3);
        std::fs::create_dir_all(src.join(format!("dir{}", i % 3))).expect("mkdir");
        std::fs::write(src.join(&name), &bytes).expect("write");
        files.push((name, bytes));
    }
    let tar = tmp.path().join("c.tar");
    corpus::tar_create(&src, &tar, "gnu", &[]);
    let archive = corpus::compress(&tar, Gz::Level(6));
    let mut m = mount(&[&archive], &["--span", "64K", "--cache-size", "512K", "--threads", "4"]);
    let files = Arc::new(files);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let files = Arc::clone(&files);
            let root = m.mountpoint.clone();
            std::thread::spawn(move || {
                let direct = t % 2 == 0;
                let handles: Vec<File> = files
                    .iter()
                    .map(|(name, _)| {
                        let mut options = OpenOptions::new();
                        options.read(true);
                        if direct {
                            options.custom_flags(libc::O_DIRECT);
                        }
                        options.open(root.join(name)).expect("open")
                    })
                    .collect();
                let rand = corpus::noise(t + 77, 24 * READS_PER_THREAD);
                let mut direct_reads = 0usize;
                for k in 0..READS_PER_THREAD {
                    let word = |j: usize| {
                        u64::from_le_bytes(rand[k * 24 + j * 8..][..8].try_into().expect("8 bytes"))
                    };
                    let f = (word(0) % files.len() as u64) as usize;
                    let bytes = &files[f].1;
                    let offset = word(1) % (bytes.len() as u64 + 1000);
                    let len = (word(2) % 300_000) as usize;
                    let mut buf = vec![0u8; len];
                    let mut done = 0;
                    while done < len {
                        let n = handles[f]
                            .read_at(&mut buf[done..], offset + done as u64)
                            .expect("read");
                        if n == 0 {
                            break;
                        }
                        done += n;
                    }
                    let start = (offset as usize).min(bytes.len());
                    let end = (offset as usize + len).min(bytes.len());
                    assert!(
                        buf[..done] == bytes[start..end],
                        "thread {t}: {} @{offset}+{len}",
                        files[f].0
                    );
                    if direct && done > 0 {
                        direct_reads += 1;
                    }
                }
                direct_reads
            })
        })
        .collect();
    let direct: usize = threads.into_iter().map(|t| t.join().expect("reader thread")).sum();
    m.signal("TERM");
    let status = m.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}:\n{}", m.log_text());
    let log = m.log_text();
    let field = |name: &str| -> u64 {
        let line = log.lines().rfind(|l| l.contains("archive reads served")).unwrap_or_else(|| {
            panic!("no read counts logged:\n{log}");
        });
        let at = line.find(&format!("{name}=")).unwrap_or_else(|| panic!("no {name}: {line}"));
        let digits: String =
            line[at + name.len() + 1..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or_else(|_| panic!("{name} in {line}"))
    };
    // Every O_DIRECT read that returned bytes reached the daemon at least once.
    assert!(
        field("reads") >= direct as u64,
        "{} reads served, {direct} O_DIRECT reads",
        field("reads")
    );
    assert!(field("max_in_flight") >= 2, "reads were served one at a time:\n{log}");
}

/// `--merge`: oracle is extracting the archives one after the other into one directory.
#[test]
fn merge_later_archives_win_and_directories_merge() {
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path().display();
    sh(&format!(
        "cd {t} && mkdir -p a/common/sub a/onlyA a/dir-then-file a/file-then-dir \
         && echo A > a/common/a.txt && echo 'shared from A' > a/common/shared && echo deepA > a/common/sub/deepA \
         && echo x > a/onlyA/x && rmdir a/file-then-dir && echo file > a/file-then-dir \
         && chmod 0640 a/common/shared \
         && touch -d '2001-01-01' a/common/a.txt a/common a/onlyA \
         && mkdir -p b/common/sub b/onlyB b/file-then-dir \
         && echo B > b/common/b.txt && echo 'shared from B, longer' > b/common/shared && echo deepB > b/common/sub/deepB \
         && echo y > b/onlyB/y && echo now-a-file > b/dir-then-file && echo z > b/file-then-dir/z \
         && chmod 0600 b/common/shared && chmod 0750 b/common && touch -d '2002-02-02' b/common b/common/b.txt \
         && mkdir -p c/common/sub && echo 'shared from C' > c/common/sub/deepA \
         && echo linked > a/common/linked && ln a/common/linked a/common/hidden-link \
         && echo 'not a link any more' > c/common/hidden-link \
         && mkdir -p a/dir-then-symlink/inner && echo under > a/dir-then-symlink/inner/f \
         && ln -s onlyB c/dir-then-symlink \
         && tar -cf a.tar -C a . && tar -cf b.tar -C b . && tar -czf c.tar.gz -C c ."
    ));
    // The oracle: extracted one after the other. tar -x cannot put a symlink where a
    // non-empty directory is; a later archive wins, so that directory goes first.
    let dest = tmp.path().join("x");
    for name in ["a.tar", "b.tar", "c.tar.gz"] {
        if name == "c.tar.gz" {
            std::fs::remove_dir_all(dest.join("dir-then-symlink")).expect("rm -r");
        }
        corpus::extract(&tmp.path().join(name), &dest, false);
    }
    assert!(
        dest.join("dir-then-file").is_file() && dest.join("file-then-dir/z").is_file(),
        "tar replaced both"
    );
    // A hard link one of whose names a later archive replaced: the other name is left with
    // one link; a directory replaced by a symlink is gone with everything under it.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(dest.join("common/linked")).expect("stat").nlink(), 1);
    assert!(std::fs::symlink_metadata(dest.join("dir-then-symlink")).expect("lstat").is_symlink());
    let archives =
        [tmp.path().join("a.tar"), tmp.path().join("b.tar"), tmp.path().join("c.tar.gz")];
    let refs: Vec<&Path> = archives.iter().map(PathBuf::as_path).collect();
    let m = mount(&refs, &["--merge"]);
    let expected = served_tree(&dest);
    let served = walk_dir(&m.mountpoint);
    assert_same_tree(&expected, &served, compare_for("gnu"), "merge");
    assert_same_bytes(&dest, &expected, &[], "merge", |path, offset, len| {
        read_file_range(&m.path(path), offset, len)
    });
    // The listing of a merged directory and the lookups agree (readdir twice: cached).
    for _ in 0..2 {
        let mut names: Vec<String> = std::fs::read_dir(m.path("common"))
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a.txt", "b.txt", "hidden-link", "linked", "shared", "sub"]);
    }
    // Through the symlink that replaced a directory: the later archive's tree, not the
    // directory's old contents.
    assert_eq!(std::fs::read(m.path("dir-then-symlink/y")).expect("read"), b"y\n");
    let gone = std::fs::metadata(m.path("dir-then-symlink/inner")).expect_err("hidden");
    assert_eq!(gone.kind(), std::io::ErrorKind::NotFound, "{gone}");
}

/// `--merge` gives the same inode numbers on every mount, merged directories included (a
/// merged directory takes its topmost layer's number), whatever order paths are first looked
/// up in.
#[test]
fn merged_inode_numbers_are_stable_across_mounts() {
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path().display();
    sh(&format!(
        "cd {t} && mkdir -p a/usr/lib/py a/usr/bin b/usr/lib/py/pkg b/opt c/usr/lib \
         && echo a > a/usr/lib/py/mod.py && echo tool > a/usr/bin/tool && echo b > b/usr/lib/py/pkg/x.py \
         && echo opt > b/opt/o && echo c > c/usr/lib/libc.so && ln a/usr/bin/tool a/usr/bin/tool2 \
         && tar -cf a.tar -C a . && tar -czf b.tar.gz -C b . && tar -cf c.tar -C c ."
    ));
    let archives =
        [tmp.path().join("a.tar"), tmp.path().join("b.tar.gz"), tmp.path().join("c.tar")];
    let refs: Vec<&Path> = archives.iter().map(PathBuf::as_path).collect();
    let inos = |m: &Mounted| -> BTreeMap<String, u64> {
        walk_dir(&m.mountpoint).into_iter().map(|(path, node)| (path, node.ino)).collect()
    };
    let first = mount(&refs, &["--merge"]);
    let before = inos(&first);
    for merged in ["usr", "usr/lib", "usr/lib/py"] {
        assert!(before.contains_key(merged), "{merged} in {before:?}");
    }
    assert_eq!(before.len(), 13, "{before:?}");
    let distinct: std::collections::BTreeSet<u64> = before.values().copied().collect();
    // tool and tool2 are one file.
    assert_eq!(distinct.len(), before.len() - 1, "{before:?}");
    drop(first);
    let second = mount(&refs, &["--merge"]);
    // The deepest paths first this time, then everything.
    for path in before.keys().rev() {
        let meta = std::fs::symlink_metadata(second.path(path)).expect("lstat");
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&meta), before[path], "{path}");
    }
    assert_eq!(inos(&second), before);
}

/// Several archives without `--merge`: one directory each, named after the file, duplicates
/// numbered; each holds its archive's tree, and inode numbers never collide across them.
#[test]
fn several_archives_get_one_directory_each() {
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = corpus::source_tree(&tmp.path().join("src"));
    let tar = tmp.path().join("addon.tar");
    corpus::tar_create(&src, &tar, "gnu", &[]);
    let dest = tmp.path().join("x");
    corpus::extract(&tar, &dest, false);
    let gz = corpus::compress(&tar, Gz::Level(6));
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    let same_name = other.join("addon.tgz");
    std::fs::rename(&gz, &same_name).expect("rename");
    let small = tmp.path().join("tools.tar.gz");
    sh(&format!(
        "cd {} && mkdir t && echo tool > t/tool && tar -czf {} -C t .",
        tmp.path().display(),
        small.display()
    ));
    let m = mount(&[&tar, &same_name, &small], &[]);
    let mut root: Vec<String> = std::fs::read_dir(&m.mountpoint)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    root.sort();
    assert_eq!(root, ["addon", "addon-2", "tools"]);
    let expected = served_tree(&dest);
    for name in ["addon", "addon-2"] {
        let served = walk_dir(&m.path(name));
        // The root of each is the archive's root entry.
        assert_same_tree(&expected, &served, compare_for("gnu"), name);
        assert_same_bytes(&dest, &expected, &[], name, |path, offset, len| {
            read_file_range(&m.path(&format!("{name}/{path}")), offset, len)
        });
    }
    assert_eq!(std::fs::read(m.path("tools/tool")).expect("read"), b"tool\n");
    let whole = walk_dir(&m.mountpoint);
    let mut by_ino: BTreeMap<u64, Vec<&String>> = BTreeMap::new();
    for (path, node) in &whole {
        by_ino.entry(node.ino).or_default().push(path);
    }
    for paths in by_ino.values() {
        let top: Vec<&str> = paths.iter().map(|p| p.split('/').next().unwrap_or("")).collect();
        assert!(top.windows(2).all(|w| w[0] == w[1]), "inode shared across archives: {paths:?}");
    }
    let meta = std::fs::metadata(&m.mountpoint).expect("stat root");
    assert!(meta.is_dir());
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&meta), 2 + 3);
}

/// Restarting the mount gives the same inode numbers (they come from the index); the first
/// mount builds the index, the second loads it.
#[test]
fn inode_numbers_are_stable_across_mounts_and_the_index_is_reused() {
    if !common::fuse_ready() {
        return;
    }
    let (_tmp, tar) = source_tar("gnu", &[]);
    let archive = corpus::compress(&tar, Gz::Level(6));
    let inos = |m: &Mounted| -> BTreeMap<String, u64> {
        walk_dir(&m.mountpoint).into_iter().map(|(path, node)| (path, node.ino)).collect()
    };
    let first = mount(&[&archive], &[]);
    let before = inos(&first);
    assert!(first.log_text().contains("index built"), "{}", first.log_text());
    drop(first);
    // Walk in another order this time: numbers must not depend on lookup order.
    let second = mount(&[&archive], &[]);
    let deep = std::fs::metadata(second.path("deep/a/b/c/d/e/f/g/h/i/j/leaf")).expect("stat");
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&deep), before["deep/a/b/c/d/e/f/g/h/i/j/leaf"]);
    assert_eq!(inos(&second), before);
    assert!(second.log_text().contains("index loaded"), "{}", second.log_text());
    assert!(before.values().all(|&ino| ino == 1 || ino >= 1 << 40), "slot 1 numbers: {before:?}");
}

#[test]
fn owners_can_be_mapped() {
    if !common::fuse_ready() {
        return;
    }
    let (_tmp, tar) = source_tar("gnu", &["--owner=1234", "--group=5678"]);
    let kept = mount(&[&tar], &[]);
    assert!(
        walk_dir(&kept.mountpoint).values().all(|n| (n.uid, n.gid) == (1234, 5678)),
        "owners kept"
    );
    drop(kept);
    let mapped = mount(&[&tar], &["--uid", "4242", "--gid", "4343"]);
    let tree = walk_dir(&mapped.mountpoint);
    assert!(tree.values().all(|n| (n.uid, n.gid) == (4242, 4343)), "owners mapped");
}

/// `--allow-other` lets other users read what the modes allow (and only that); without it,
/// only the mounting user gets in.
#[test]
fn allow_other_lets_other_users_read_what_modes_allow() {
    if !common::fuse_ready() || !common::require("setpriv") {
        return;
    }
    let (_tmp, tar) = source_tar("gnu", &[]);
    let as_nobody = |path: PathBuf| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(path)
            .output()
            .expect("setpriv")
    };
    let open = mount(&[&tar], &["--allow-other"]);
    let info = mount_at(&open.mountpoint).expect("mountinfo").expect("mounted");
    assert!(info.super_options.contains("allow_other"), "{}", info.super_options);
    let out = as_nobody(open.path("usr/custom_file"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"custom file\n");
    let denied = as_nobody(open.path("modes/private"));
    assert!(!denied.status.success(), "a 0600 root file is not readable by nobody");
    assert!(String::from_utf8_lossy(&denied.stderr).contains("Permission denied"));
    drop(open);
    let closed = mount(&[&tar], &[]);
    let out = as_nobody(closed.path("usr/custom_file"));
    assert!(!out.status.success(), "without --allow-other other users are refused");
}

/// A FIFO in an archive is served without write bits: through a read-only mount, other users
/// cannot pass data to each other through it (only root, which ignores modes, could).
#[test]
fn fifos_are_served_without_write_bits() {
    if !common::fuse_ready() || !common::require("setpriv") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    sh(&format!(
        "cd '{}' && mkfifo -m 0666 open && mkfifo -m 0640 private && echo x > file && chmod 0666 file",
        src.display()
    ));
    let tar = tmp.path().join("fifo.tar");
    run(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&src).arg("."));
    let m = mount(&[&tar], &["--allow-other"]);
    let mode = |name: &str| {
        std::os::unix::fs::MetadataExt::mode(
            &std::fs::symlink_metadata(m.path(name)).expect("lstat"),
        ) & 0o7777
    };
    assert_eq!(mode("open"), 0o444);
    assert_eq!(mode("private"), 0o440);
    // Other kinds keep the archive's bits (the mount is read-only anyway).
    assert_eq!(mode("file"), 0o666);
    // Opening it read-write (which never blocks on a FIFO) as another user is refused.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", "exec 3<>\"$0\""])
        .arg(m.path("open"))
        .output()
        .expect("setpriv");
    assert!(!out.status.success(), "nobody opened the FIFO for writing");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{out:?}");
}

/// SIGTERM unmounts and exits 0, leaving no mount behind.
#[test]
fn sigterm_unmounts_cleanly() {
    if !common::fuse_ready() {
        return;
    }
    let (_tmp, tar) = source_tar("gnu", &[]);
    let mut m = mount(&[&tar], &[]);
    assert_eq!(std::fs::read(m.path("usr/custom_file")).expect("read"), b"custom file\n");
    m.signal("TERM");
    let status = m.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}:\n{}", m.log_text());
    assert!(!m.is_mounted(), "a mount is left behind:\n{}", m.log_text());
    assert!(m.log_text().contains("unmounting"), "{}", m.log_text());
}

/// A busy mount (a file held open) is detached lazily on SIGINT: it leaves the namespace at
/// once, the open file still reads, and the daemon exits once the file is closed.
#[test]
fn busy_mount_is_detached_lazily() {
    if !common::fuse_ready() {
        return;
    }
    let (tmp, tar) = source_tar("gnu", &[]);
    let archive = corpus::compress(&tar, Gz::Level(6));
    let mut m = mount(&[&archive], &[]);
    let mut held = File::open(m.path("sizes/text-5m")).expect("open");
    let mut head = [0u8; 100];
    held.read_exact(&mut head).expect("read");
    m.signal("INT");
    let start = Instant::now();
    while m.is_mounted() {
        assert!(start.elapsed() < Duration::from_secs(10), "not detached:\n{}", m.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(m.log_text().contains("detaching it lazily"), "{}", m.log_text());
    // Still served while open.
    let mut rest = Vec::new();
    held.read_to_end(&mut rest).expect("the open file still reads");
    assert_eq!(
        rest.len() as u64 + 100,
        std::fs::metadata(tmp.path().join("src/sizes/text-5m")).expect("stat").len()
    );
    drop(held);
    let status = m.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}:\n{}", m.log_text());
}

/// A daemon killed with SIGKILL leaves a dead mount ("transport endpoint is not connected");
/// the next mount on the same mount point clears it and works.
#[test]
fn a_stale_mount_is_cleared_by_the_next_mount() {
    if !common::fuse_ready() {
        return;
    }
    let (_tmp, tar) = source_tar("gnu", &[]);
    let mut crashed = mount(&[&tar], &[]);
    crashed.signal("KILL");
    let status = crashed.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    assert!(crashed.is_mounted(), "SIGKILL leaves the mount behind");
    // `stat` may be answered from the kernel's cache; `statvfs` reaches the (dead) daemon.
    let probe = Command::new("python3")
        .arg("-c")
        .arg("import os,sys\ntry:\n os.statvfs(sys.argv[1])\nexcept OSError as e:\n print(e.errno)")
        .arg(&crashed.mountpoint)
        .output()
        .expect("python3");
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), libc::ENOTCONN.to_string(), "stale");
    // Take the mount point's directory over from the crashed guard.
    let mountpoint = crashed.mountpoint.clone();
    let dir = std::mem::replace(&mut crashed._dir, tempfile::tempdir().expect("tempdir"));
    crashed.mountpoint = crashed._dir.path().join("nothing-here");
    drop(crashed);
    let again = mount_on(&mountpoint, &[&tar], &[], dir);
    assert!(again.log_text().contains("stale mount"), "{}", again.log_text());
    assert_eq!(std::fs::read(again.path("usr/custom_file")).expect("read"), b"custom file\n");
    let mounts = addonfs::mount::mounts().expect("mountinfo");
    assert_eq!(
        mounts.iter().filter(|i| i.mount_point == mountpoint).count(),
        1,
        "the stale mount is gone"
    );
}

/// Bad mount points are refused before anything is indexed, naming the path.
#[test]
fn bad_mount_points_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tar = tmp.path().join("a.tar");
    run(Command::new("tar").arg("-cf").arg(&tar).arg("-T").arg("/dev/null"));
    for (mountpoint, want) in [
        (tmp.path().join("missing"), "No such file or directory"),
        (tar.clone(), "not a directory"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_addonfs"))
            .arg("mount")
            .arg(&tar)
            .arg(&mountpoint)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&*mountpoint.to_string_lossy()) && stderr.contains(want),
            "{stderr}"
        );
        assert!(!tmp.path().join("a.tar.addonfs-index").exists(), "nothing indexed");
    }
    let out =
        Command::new(env!("CARGO_BIN_EXE_addonfs")).arg("mount").arg(&tar).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "one path is not enough");
}

/// The daemon's side of the root (issue 4 builds on it), in process: synthesized read-only
/// files appear in the root, change when set again (after an invalidation), and a hidden
/// entry leaves the listing but still answers lookups.
#[test]
fn synthesized_root_entries_change_live() {
    if !common::fuse_ready() {
        return;
    }
    // Both ways of opening: declined (zero-message opens, cached) and answered.
    for explicit_open in [false, true] {
        synthesized_root_entries(explicit_open);
    }
}

fn synthesized_root_entries(explicit_open: bool) {
    use addonfs::fs::namespace::{Layout, Namespace, FUSE_ROOT};
    use addonfs::fs::{AddonFs, FsOptions};
    use addonfs::mount::{MountOptions, Unmounted};
    let dir = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let ns = Arc::new(Namespace::new(Layout::Directories, (0, 0)));
    ns.set_file(b".addons.json", 2, b"[]\n".to_vec(), true).expect("set file");
    ns.set_file(b"hidden.txt", 3, b"secret\n".to_vec(), false).expect("set file");
    let fs = AddonFs::new(Arc::clone(&ns), FsOptions { explicit_open, ..FsOptions::default() });
    let mounted = addonfs::mount::mount(fs, dir.path(), &MountOptions::default()).expect("mount");
    let root = mounted.path().to_path_buf();
    let list = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&root)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_eq!(list(), [".addons.json"]);
        assert_eq!(std::fs::read(root.join(".addons.json")).expect("read"), b"[]\n");
        assert_eq!(
            std::fs::read(root.join("hidden.txt")).expect("hidden still answers"),
            b"secret\n"
        );
        let meta = std::fs::metadata(root.join(".addons.json")).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o444);
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&meta), 2);
        // New content, then the kernel is told: readers see it at once.
        ns.set_file(b".addons.json", 2, b"[{\"name\": \"x\"}]\n".to_vec(), true).expect("set file");
        mounted.invalidate_inode(2).expect("invalidate file");
        assert_eq!(
            std::fs::read(root.join(".addons.json")).expect("read"),
            b"[{\"name\": \"x\"}]\n"
        );
        // Show the hidden entry, then hide the other.
        assert!(ns.set_visible(b"hidden.txt", true).expect("show"));
        mounted.invalidate_inode(FUSE_ROOT).expect("invalidate root");
        assert_eq!(list(), [".addons.json", "hidden.txt"]);
        assert!(ns.set_visible(b".addons.json", false).expect("hide"));
        mounted.invalidate_inode(FUSE_ROOT).expect("invalidate root");
        assert_eq!(list(), ["hidden.txt"]);
        assert!(root.join(".addons.json").exists(), "a hidden entry still answers lookups");
        // An archive added while mounted appears once its name is invalidated.
        let src = work.path().join("src");
        std::fs::create_dir_all(src.join("usr/bin")).expect("mkdir");
        std::fs::write(src.join("usr/bin/tool"), corpus::text(3, 200_000)).expect("write");
        let tar = work.path().join("addon.tar");
        corpus::tar_create(&src, &tar, "gnu", &[]);
        let archive = corpus::compress(&tar, Gz::Level(6));
        let index =
            addonfs::index::open::build(&archive, &Default::default(), None).expect("index");
        let cache = Arc::new(addonfs::reader::ChunkCache::default());
        let reader =
            addonfs::reader::ArchiveReader::open(&archive, Arc::new(index), cache).expect("reader");
        let volume = addonfs::fs::namespace::Volume::new(7, reader);
        ns.add_volume(b"custom-addon-tool", volume, true).expect("add volume");
        mounted.invalidate_entry(FUSE_ROOT, b"custom-addon-tool").expect("invalidate entry");
        mounted.invalidate_inode(FUSE_ROOT).expect("invalidate root");
        assert_eq!(list(), ["custom-addon-tool", "hidden.txt"]);
        let tool = root.join("custom-addon-tool/usr/bin/tool");
        let want = std::fs::read(src.join("usr/bin/tool")).expect("read source");
        assert_eq!(std::fs::read(&tool).expect("read tool"), want);
        assert_eq!(
            std::os::unix::fs::MetadataExt::nlink(&std::fs::metadata(&root).expect("stat")),
            3
        );
        // Disabled while a workload holds it open: gone from the listing, still readable, and
        // its paths still resolve.
        let mut held = File::open(&tool).expect("open");
        assert!(ns.set_visible(b"custom-addon-tool", false).expect("hide"));
        mounted.invalidate_inode(FUSE_ROOT).expect("invalidate root");
        assert_eq!(list(), ["hidden.txt"]);
        let mut again = Vec::new();
        held.read_to_end(&mut again).expect("the open file still reads");
        assert_eq!(again, want);
        assert_eq!(std::fs::read(&tool).expect("a hidden add-on still resolves"), want);
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&tool).expect("stat"));
        assert_eq!(ino >> 40, 7, "inode numbers carry the volume's slot");
        // Nothing is writable.
        let err = File::create(root.join("new")).expect_err("create");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    }));
    let unmounted = mounted.unmount(Duration::from_secs(5));
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(unmounted.expect("unmount"), Unmounted::Clean);
    assert!(mount_at(dir.path()).expect("mountinfo").is_none());
}

/// Listings follow the archive's order (so tree walkers read it front to back), stay exact
/// over the several calls a large directory takes.
#[test]
fn listings_follow_the_archive_order() {
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("big")).expect("mkdir");
    // 1500 names, archived in a scrambled order (every 7th, modulo), each with some bytes.
    let names: Vec<String> = (0..1500).map(|i| format!("entry-{:04}", (i * 7) % 1500)).collect();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(src.join("big").join(name), corpus::text(i as u64, 100 + i % 300))
            .expect("write");
    }
    let list = tmp.path().join("list");
    let mut order: Vec<String> = vec!["./big".into()];
    order.extend(names.iter().map(|n| format!("./big/{n}")));
    std::fs::write(&list, order.join("\n") + "\n").expect("list");
    let tar = tmp.path().join("o.tar");
    run(Command::new("tar")
        .args(["--no-recursion", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg("-T")
        .arg(&list));
    let archive = corpus::compress(&tar, Gz::Level(6));
    // The oracle: the order tar itself lists.
    let listed = run(Command::new("tar").arg("-tzf").arg(&archive));
    let want: Vec<&str> =
        listed.lines().filter_map(|l| l.strip_prefix("./big/")).filter(|l| !l.is_empty()).collect();
    assert_eq!(want.len(), 1500);
    let m = mount(&[&archive], &[]);
    for _ in 0..2 {
        let got: Vec<String> = std::fs::read_dir(m.path("big"))
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, want, "listing order");
    }
}

/// A tree walker (`tar -c`, here two at once) gets the files ahead of it pushed into the page
/// cache: what it archives, and every byte read through the mount afterwards (now served from
/// those pages), is what `tar -x` extracts.
#[test]
fn tree_walkers_read_pushed_pages_exactly() {
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    for d in 0..12u64 {
        let dir = src.join(format!("d{d:02}")).join("sub");
        std::fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..25u64 {
            let seed = d * 100 + f;
            // Mostly small files; some span several pieces, a few are too large to push.
            let len = match seed % 23 {
                0 => 1_300_000,
                1 | 2 => 300_000 + (seed as usize * 131) % 70_000,
                _ => (seed as usize * 7919) % 20_000,
            };
            let bytes =
                if seed % 3 == 0 { corpus::noise(seed, len) } else { corpus::text(seed, len) };
            let parent = if f % 2 == 0 { dir.clone() } else { src.join(format!("d{d:02}")) };
            std::fs::write(parent.join(format!("f{f:02}")), bytes).expect("write");
        }
    }
    let tar = tmp.path().join("w.tar");
    corpus::tar_create(&src, &tar, "gnu", &[]);
    let dest = tmp.path().join("x");
    corpus::extract(&tar, &dest, false);
    let archive = corpus::compress(&tar, Gz::Level(6));
    let mut m = mount(&[&archive], &["--span", "256K", "--cache-size", "2M"]);
    let (out1, out2) = (tmp.path().join("out1"), tmp.path().join("out2"));
    std::fs::create_dir_all(&out1).expect("mkdir");
    std::fs::create_dir_all(&out2).expect("mkdir");
    let mnt = m.mountpoint.display().to_string();
    sh(&format!(
        "set -e; (tar -cf - -C '{mnt}' . | tar -xf - -C '{o1}') & w=$!; \
         tar -cf - -C '{mnt}' . | tar -xf - -C '{o2}'; wait $w",
        o1 = out1.display(),
        o2 = out2.display()
    ));
    let expected = served_tree(&dest);
    let cmp = compare_for("gnu");
    for out in [&out1, &out2] {
        let archived = walk_dir(out);
        assert_same_tree(&expected, &archived, cmp, "walked");
        assert_same_bytes(&dest, &expected, &[], "walked", |path, offset, len| {
            read_file_range(&out.join(path), offset, len)
        });
    }
    assert_same_bytes(&dest, &expected, &[], "cached", |path, offset, len| {
        read_file_range(&m.path(path), offset, len)
    });
    m.signal("TERM");
    let status = m.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}:\n{}", m.log_text());
    let log = m.log_text();
    assert!(log.contains("pushed into the page cache"), "nothing was pushed:\n{log}");
}
