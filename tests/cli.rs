//! The inspection commands (`index`, `ls`, `cat`, `stat`) as a user runs them: exit codes as
//! README documents them, and a reader that goes away.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;

fn addonfs(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_addonfs"));
    cmd.args(args);
    cmd
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// An archive made by GNU tar: a file, symlinks that leave the archive, a loop.
fn archive(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("d")).expect("mkdir");
    std::fs::write(src.join("d/file"), "x".repeat(256 << 10)).expect("write");
    for (link, to) in [
        ("abs", "/etc/hostname"),
        ("up", "../outside"),
        ("d/upup", "../../outside"),
        ("inside", "d/file"),
        ("loop1", "loop2"),
        ("loop2", "loop1"),
    ] {
        std::os::unix::fs::symlink(to, src.join(link)).expect("symlink");
    }
    let tar = dir.join("a.tar");
    common::run(Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&src).arg("."));
    tar
}

/// `cat` of a symlink that leaves the archive (absolute, or `..` past its root) or loops finds
/// no entry: exit code 4, like a missing name, not 2 (usage).
#[test]
fn cat_of_a_symlink_leaving_the_archive_is_not_found() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tar = archive(tmp.path());
    let tar = tar.to_str().unwrap();
    let ok = addonfs(&["cat", tar, "inside"]).output().expect("run");
    assert!(ok.status.success(), "{}", text(&ok));
    assert_eq!(ok.stdout.len(), 256 << 10);
    for (path, says) in [
        ("abs", "a symlink to /etc/hostname, outside the archive"),
        ("up", "leading outside the archive"),
        ("d/upup", "leading outside the archive"),
        ("loop1", "too many levels of symbolic links"),
        ("nothing", "no such entry"),
    ] {
        let out = addonfs(&["cat", tar, path]).output().expect("run");
        assert_eq!(out.status.code(), Some(4), "{path}: {}", text(&out));
        assert!(text(&out).contains(says), "{path}: {}", text(&out));
        assert!(text(&out).contains(path), "{path}: {}", text(&out));
    }
}

/// A reader that goes away (`addonfs ls ... | head -1`) ends every command quietly with exit
/// code 0, as ripgrep does: no panic, no message.
#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tar = archive(tmp.path());
    let tar = tar.to_str().unwrap();
    for args in [
        &["index", tar][..],
        &["index", "--json", tar],
        &["ls", "-lR", tar],
        &["cat", tar, "d/file"],
        &["stat", tar, "d/file"],
        &["stat", "--json", tar, "d/file"],
    ] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = addonfs(args).stdin(Stdio::null()).stdout(writer).output().expect("run addonfs");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out));
    }
}

/// `cat` of large files of a gzip archive of many spans (read ahead on a worker pool, several
/// spans at once) writes exactly what `tar -x` extracts, file after file in one command; and
/// when its reader goes away mid-file, it ends quietly (the read-ahead cancelled, no hang).
#[test]
fn cat_of_large_gzip_files_is_what_tar_extracts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    let names = ["big1", "big2", "big3"];
    for (i, name) in names.iter().enumerate() {
        let mut bytes = common::corpus::text(i as u64, 1_500_000);
        bytes.extend(common::corpus::noise(i as u64, 700_000));
        std::fs::write(src.join(name), bytes).expect("write");
    }
    let archive = tmp.path().join("a.tar.gz");
    common::run(Command::new("tar").arg("-czf").arg(&archive).arg("-C").arg(&src).arg("."));
    let dest = tmp.path().join("x");
    common::corpus::extract(&archive, &dest, false);
    let archive = archive.to_str().unwrap();
    let want: Vec<u8> =
        names.iter().flat_map(|n| std::fs::read(dest.join(n)).expect("extracted")).collect();
    let out = addonfs(&["cat", "--span", "64K", archive, "big1", "big2", "big3"])
        .output()
        .expect("run addonfs");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == want, "cat's bytes differ from tar -x's ({} bytes)", out.stdout.len());

    // A reader that stops after the first bytes.
    let mut child = addonfs(&["cat", "--span", "64K", archive, "big1", "big2", "big3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run addonfs");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = vec![0u8; 4096];
    std::io::Read::read_exact(&mut stdout, &mut first).expect("first bytes");
    assert!(first == want[..4096]);
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}
