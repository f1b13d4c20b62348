//! Archives made by GNU tar from a source tree that exercises every feature we serve.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{have, run, sh};

/// A deterministic pseudo-random byte generator (xorshift), so content is reproducible.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Compressible text: lines of words.
pub fn text(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "import", "def", "return", "self", "value", "addon", "path", "tar", "gzip", "(x)", "\n",
        "    ",
    ];
    let pick = noise(seed, len / 3 + 1);
    let mut out = Vec::with_capacity(len + 16);
    for b in pick {
        out.extend_from_slice(WORDS[b as usize % WORDS.len()].as_bytes());
        out.push(b' ');
        if out.len() >= len {
            break;
        }
    }
    out.truncate(len);
    out
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{path:?}: {e}"));
}

/// The device nodes of [`source_tree`] under `dev/`: (name, `mknod` type, major, minor). The
/// last minor needs the high bits of Linux's device encoding.
pub const DEVICES: [(&str, &str, u32, u32); 3] =
    [("null-like", "c", 1, 3), ("loop200", "b", 7, 200), ("bigminor", "c", 240, 70000)];

/// Builds the standard source tree under `root` (created): files of many sizes and contents,
/// nested and long names, unicode, symlinks, hard links (and links to links), a fifo, device
/// nodes (as root; required under CI), odd modes and mtimes, and user xattrs. Returns `root`.
pub fn source_tree(root: &Path) -> PathBuf {
    std::fs::create_dir_all(root).expect("mkdir root");
    let f = |rel: &str, bytes: &[u8]| write(&root.join(rel), bytes);
    f("usr/custom_file", b"custom file\n");
    f("usr/bin/custom_folder/tool.sh", b"#!/bin/sh\necho custom\n");
    f("usr/bin/custom_folder/empty", b"");
    f("usr/bin/custom_folder/one", b"1");
    f("sizes/511", &noise(1, 511));
    f("sizes/512", &noise(2, 512));
    f("sizes/513", &noise(3, 513));
    f("sizes/random-3m", &noise(4, 3 << 20));
    f("sizes/text-5m", &text(5, 5 << 20));
    f("sizes/zeros-2m", &vec![0u8; 2 << 20]);
    for i in 0..200 {
        f(&format!("many/file-{i:03}.py"), &text(100 + i, (i as usize * 37) % 4000));
    }
    let long_dir = "d".repeat(60);
    let deep = format!("{long_dir}/{long_dir}/{long_dir}/{}", "n".repeat(120));
    f(&format!("long/{deep}"), b"a path longer than 255 bytes\n");
    f(&format!("long/{}", "x".repeat(101)), b"a name longer than 100 bytes\n");
    f("unicode/Grüße-日本語-ünï.txt", "unicode\n".as_bytes());
    f("deep/a/b/c/d/e/f/g/h/i/j/leaf", b"deep\n");
    std::fs::create_dir_all(root.join("empty-dir")).expect("mkdir");
    f("modes/setuid", b"suid\n");
    f("modes/private", b"private\n");
    f("modes/readonly", b"ro\n");
    f("times/old", b"1960\n");
    f("times/future", b"2100\n");
    f("links/target", b"link target\n");
    f("xattrs/with-xattr", b"x\n");
    let r = root.display();
    sh(&format!(
        "cd {r} && chmod 4755 modes/setuid && chmod 0600 modes/private && chmod 0444 modes/readonly \
         && mkdir -m 0700 modes/private-dir && touch -h -d '1960-01-01 00:00:01' times/old \
         && touch -d '2100-01-01 12:00:00' times/future && mkfifo fifo \
         && ln -s target links/relative && ln -s /etc/hostname links/absolute \
         && ln -s does-not-exist links/dangling && ln -s ../usr links/dir-link \
         && ln -s {long} links/long-target \
         && ln links/target links/hard1 && ln links/hard1 links/hard2 \
         && ln sizes/random-3m links/hard-big",
        long = "t".repeat(150)
    ));
    run(Command::new("python3")
        .arg("-c")
        .arg(
            "import os,sys; p=sys.argv[1]; os.setxattr(p,'user.addon',b'yes'); \
         os.setxattr(p,'user.binary',bytes(range(256)))",
        )
        .arg(root.join("xattrs/with-xattr")));
    if devices_possible() {
        std::fs::create_dir_all(root.join("dev")).expect("mkdir dev");
        for (name, kind, major, minor) in DEVICES {
            run(Command::new("mknod")
                .arg(root.join("dev").join(name))
                .arg(kind)
                .arg(major.to_string())
                .arg(minor.to_string()));
        }
    }
    root.to_path_buf()
}

/// True if device nodes can be made (`mknod` needs root). Under CI, which runs as root, a
/// missing root fails; elsewhere the tree goes without them and the test says so (a line
/// `test part skipped: ...`, not counted as a skipped test: the rest of the test runs).
pub fn devices_possible() -> bool {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "the corpus's device nodes need root under CI");
    use std::io::Write;
    let name = std::thread::current().name().unwrap_or("?").to_string();
    let line = format!("test part skipped: {name}: device nodes need root (mknod)\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    false
}

/// The tar formats GNU tar writes.
pub const FORMATS: [&str; 5] = ["gnu", "oldgnu", "posix", "ustar", "v7"];

/// True if `format` can hold the standard tree (v7/ustar cannot hold every long name, owner
/// id or special file; those get a reduced tree).
pub fn format_holds_everything(format: &str) -> bool {
    matches!(format, "gnu" | "oldgnu" | "posix")
}

/// Removes from `root` what `format` cannot store (so tar does not fail).
pub fn trim_for(format: &str, root: &Path) {
    let r = root.display();
    match format {
        "ustar" => sh(&format!("cd {r} && rm -rf long times/old links/long-target")),
        "v7" => sh(&format!("cd {r} && rm -rf long times/old links/long-target fifo unicode dev")),
        _ => String::new(),
    };
}

/// Runs `tar -c` with `format` over `src` (`-C src .`), writing `out`.
pub fn tar_create(src: &Path, out: &Path, format: &str, extra: &[&str]) {
    let mut cmd = Command::new("tar");
    cmd.arg("-c").arg("-f").arg(out).arg(format!("--format={format}"));
    if format == "posix" {
        cmd.arg("--xattrs").arg("--xattrs-include=user.*");
    }
    cmd.args(extra).arg("-C").arg(src).arg(".");
    run(&mut cmd);
}

/// How the tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gz {
    /// Plain tar.
    None,
    /// `gzip -<level>`.
    Level(u32),
    /// The tar split in three parts, each gzipped, concatenated.
    MultiMember,
    /// `pigz` (many deflate blocks, one member... per its defaults).
    Pigz,
    /// `bgzip` (BGZF: many small members with an extra field).
    Bgzip,
}

impl Gz {
    /// Every variant.
    pub const ALL: [Gz; 7] =
        [Gz::None, Gz::Level(6), Gz::Level(1), Gz::Level(9), Gz::MultiMember, Gz::Pigz, Gz::Bgzip];

    /// A short name for file names and messages.
    pub fn name(self) -> String {
        match self {
            Gz::None => "tar".into(),
            Gz::Level(l) => format!("gz{l}"),
            Gz::MultiMember => "multi".into(),
            Gz::Pigz => "pigz".into(),
            Gz::Bgzip => "bgzf".into(),
        }
    }

    /// The tool this variant needs, if any beyond gzip.
    pub fn tool(self) -> Option<&'static str> {
        match self {
            Gz::Pigz => Some("pigz"),
            Gz::Bgzip => Some("bgzip"),
            _ => None,
        }
    }

    /// Whether the tool is available (in CI a missing tool fails).
    pub fn available(self) -> bool {
        self.tool().is_none_or(super::require)
    }
}

/// Compresses `tar` as `how`, returning the new file (or `tar` itself for [`Gz::None`]).
pub fn compress(tar: &Path, how: Gz) -> PathBuf {
    let out = PathBuf::from(format!("{}.{}", tar.display(), how.name()));
    let (t, o) = (tar.display(), out.display());
    match how {
        Gz::None => return tar.to_path_buf(),
        Gz::Level(l) => sh(&format!("gzip -{l} -c {t} > {o}")),
        Gz::MultiMember => sh(&format!(
            "size=$(stat -c %s {t}); third=$((size / 3)); \
             head -c $third {t} | gzip -c > {o}; \
             tail -c +$((third + 1)) {t} | head -c $third | gzip -1 -c >> {o}; \
             tail -c +$((2 * third + 1)) {t} | gzip -9 -c >> {o}"
        )),
        Gz::Pigz => sh(&format!("pigz -c -p 2 {t} > {o}")),
        Gz::Bgzip => sh(&format!("bgzip -c {t} > {o}")),
    };
    assert!(have("gzip"));
    out
}

/// Extracts `archive` into `dest` (created) with GNU tar as root, keeping owners, modes, xattrs.
pub fn extract(archive: &Path, dest: &Path, ignore_zeros: bool) {
    std::fs::create_dir_all(dest).expect("mkdir dest");
    let mut cmd = Command::new("tar");
    cmd.arg("-x")
        .arg("-f")
        .arg(archive)
        .arg("-C")
        .arg(dest)
        .arg("--xattrs")
        .arg("--xattrs-include=user.*");
    cmd.arg("--same-owner").arg("--same-permissions").arg("--numeric-owner");
    if ignore_zeros {
        cmd.arg("--ignore-zeros");
    }
    run(&mut cmd);
}

/// Offsets of the data runs of [`sparse_tree`]'s 9 GiB file (worth sampling when comparing).
pub const SPARSE_HOT: [u64; 4] = [0, 1 << 30, (4 << 30) + 123, (8 << 30) + 4096];

/// A tree of sparse files under `src` (created): a 9 GiB file with data at [`SPARSE_HOT`], a
/// 1 MiB file with one byte, and a file that is all hole.
pub fn sparse_tree(src: &Path) {
    std::fs::create_dir_all(src).expect("mkdir");
    let hot = SPARSE_HOT;
    sh(&format!(
        "cd {s} && truncate -s 9G big && printf head | dd of=big conv=notrunc status=none \
         && printf one | dd of=big bs=1 seek={} conv=notrunc status=none \
         && head -c 100000 /dev/urandom | dd of=big bs=1 seek={} conv=notrunc status=none \
         && printf tail | dd of=big bs=1 seek={} conv=notrunc status=none \
         && truncate -s 1M small && printf x | dd of=small bs=1 seek=700000 conv=notrunc status=none \
         && truncate -s 64K allhole && touch -d '2020-02-02 02:02:02' big small allhole",
        hot[1],
        hot[2],
        hot[3],
        s = src.display()
    ));
}

/// Writes `dir/a.tar` whose `./d/f` is appended twice more with new content (`tar -r`), after a
/// hard link to its first version; returns the archive.
pub fn duplicates_archive(dir: &Path) -> PathBuf {
    sh(&format!(
        "cd {t} && mkdir -p src/d && echo first > src/d/f && echo keep > src/k \
         && ln src/d/f src/d/link-to-first && tar -cf a.tar -C src . \
         && sleep 1 && echo second-version > src/d/f && chmod 600 src/d/f \
         && tar -rf a.tar -C src ./d/f && echo third > src/d/f && tar -rf a.tar -C src ./d/f",
        t = dir.display()
    ));
    dir.join("a.tar")
}
