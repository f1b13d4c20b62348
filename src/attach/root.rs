//! The workload root, resolved as if it were `/`.
//!
//! `attach` runs with more rights than the workload (often as root) in a directory tree the
//! workload owns. A symlink planted in that tree (`usr -> /etc`, `lib -> ../../..`) must not
//! redirect a link outside it. So no path under the root is ever handed to a path-based system
//! call: every parent directory is opened with `openat2(RESOLVE_IN_ROOT)` against a descriptor
//! of the root (an absolute symlink resolves inside the root, `..` never leaves it, as in a
//! `chroot`), missing parents are made with `mkdirat` in the directory just opened, and the
//! link itself is created, read or removed with `symlinkat`/`readlinkat`/`unlinkat` relative to
//! its parent's descriptor. Merged-`/usr` images (`bin -> usr/bin`) keep working: their links
//! are followed, inside the root.
//!
//! `openat2` needs Linux 5.6 or later.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::shown;

/// How a path under the root is resolved: inside the root, never through `/proc` magic links.
const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);
/// A directory opened only to be the base of `*at` calls.
const DIR: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

/// An open workload root.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// Why a parent directory could not be opened.
#[derive(Debug, PartialEq, Eq)]
pub enum ParentError {
    /// It does not exist (and was not to be created).
    Missing,
    /// Something else; the text says what, naming the directory.
    Failed(String),
}

/// What is at a name, as `lstat` sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing.
    Nothing,
    /// A symlink with this text.
    Symlink(PathBuf),
    /// Something else, described ("a directory").
    Other(&'static str),
}

fn os(e: Errno) -> io::Error {
    io::Error::from(e)
}

impl Root {
    /// Opens the workload root (following it: the operator named it). It must exist and be a
    /// directory; nothing is created.
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(path, DIR, Mode::empty()).map_err(os)?;
        Ok(Root { fd, path: path.to_path_buf() })
    }

    /// The root as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where `rel` is, for messages: the root joined with it (the root itself for "").
    pub fn show(&self, rel: &Path) -> String {
        if rel.as_os_str().is_empty() {
            shown(&self.path)
        } else {
            shown(&self.path.join(rel))
        }
    }

    fn open_in_root(&self, rel: &Path) -> rustix::io::Result<OwnedFd> {
        // "." is the root itself.
        let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(&self.fd, rel, DIR, Mode::empty(), RESOLVE) {
                // A rename elsewhere raced a `..`: the kernel could not prove it stayed inside
                // and asks for a retry (openat2(2)).
                Err(Errno::AGAIN) if tries < 8 => tries += 1,
                result => return result,
            }
        }
    }

    /// Opens the directory `rel` (a relative path of plain names) inside the root. With
    /// `create`, missing directories are made, each in the directory resolved before it.
    pub fn dir(&self, rel: &Path, create: bool) -> Result<OwnedFd, ParentError> {
        let failed = |rel: &Path, e: Errno| match e {
            Errno::NOTDIR => ParentError::Failed(format!(
                "{} (or a directory above it) is not a directory",
                self.show(rel)
            )),
            Errno::NOSYS => ParentError::Failed(
                "this kernel has no openat2 (Linux 5.6 or later is needed to resolve paths \
                 inside the workload root safely)"
                    .to_string(),
            ),
            e => ParentError::Failed(format!("cannot open {}: {}", self.show(rel), os(e))),
        };
        match self.open_in_root(rel) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) if create => {}
            Err(Errno::NOENT) => return Err(ParentError::Missing),
            Err(e) => return Err(failed(rel, e)),
        }
        // Some directory is missing: go down one name at a time, making what is not there.
        let mut current: Option<OwnedFd> = None;
        let mut prefix = PathBuf::new();
        for name in rel.iter() {
            let above = prefix.clone();
            prefix.push(name);
            let fd = match self.open_in_root(&prefix) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    let base: BorrowedFd<'_> =
                        current.as_ref().map_or(self.fd.as_fd(), |fd| fd.as_fd());
                    match rustix::fs::mkdirat(base, name, Mode::from_raw_mode(0o777)) {
                        // EEXIST: made meanwhile, or a dangling symlink (reported below).
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(Errno::ACCESS | Errno::PERM | Errno::ROFS) => {
                            return Err(ParentError::Failed(format!(
                                "no write access to {} (needed to create {})",
                                self.show(&above),
                                self.show(rel)
                            )))
                        }
                        Err(e) => {
                            return Err(ParentError::Failed(format!(
                                "cannot create its parent {}: {}",
                                self.show(&prefix),
                                os(e)
                            )))
                        }
                    }
                    match self.open_in_root(&prefix) {
                        Ok(fd) => fd,
                        Err(Errno::NOENT) => {
                            return Err(ParentError::Failed(format!(
                                "cannot create its parent {}: a dangling symlink is in the way",
                                self.show(&prefix)
                            )))
                        }
                        Err(e) => return Err(failed(&prefix, e)),
                    }
                }
                Err(e) => return Err(failed(&prefix, e)),
            };
            current = Some(fd);
        }
        current.ok_or_else(|| failed(rel, Errno::NOENT))
    }
}

/// What is at `name` in the directory `dir` (not following a symlink).
pub fn lookup(dir: &OwnedFd, name: &Path) -> io::Result<Found> {
    let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => return Ok(Found::Nothing),
        Err(e) => return Err(os(e)),
    };
    Ok(match FileType::from_raw_mode(stat.st_mode) {
        FileType::Symlink => {
            use std::os::unix::ffi::OsStringExt;
            let text = rustix::fs::readlinkat(dir, name, Vec::new()).map_err(os)?;
            Found::Symlink(PathBuf::from(std::ffi::OsString::from_vec(text.into_bytes())))
        }
        FileType::Directory => Found::Other("a directory"),
        FileType::RegularFile => Found::Other("a file"),
        _ => Found::Other("a special file"),
    })
}

/// Creates the symlink `name -> target` in `dir`.
pub fn symlink(dir: &OwnedFd, name: &Path, target: &Path) -> rustix::io::Result<()> {
    rustix::fs::symlinkat(target, dir, name)
}

/// Removes `name` (not a directory) from `dir`.
pub fn unlink(dir: &OwnedFd, name: &Path) -> rustix::io::Result<()> {
    rustix::fs::unlinkat(dir, name, AtFlags::empty())
}
