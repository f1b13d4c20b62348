//! The state directory's inter-process lock: one writer process at a time.
//!
//! `STATE_DIR/addonfs.lock` is locked exclusively (`flock` through [`File::try_lock`]) by the
//! process that writes the store: `addonfs serve` for its whole life, the admin commands
//! (`addons enable|disable|register`) for the moment of their change. The holder writes a
//! line of JSON into it (pid, command and, for a daemon, the URL of its API), so a refused
//! process can say who holds the directory, and an admin command can reach a running daemon.
//! The lock goes with the process: a crash or `kill -9` releases it.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the lock inside the state directory.
pub const LOCK_FILE: &str = "addonfs.lock";

/// Who holds the lock, as written into the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The holder's process id.
    pub pid: u32,
    /// What it runs (`serve`, `addons enable`, ...).
    pub command: String,
    /// The URL of the daemon's API (`http://127.0.0.1:7474`), once it listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} (`addonfs {}`", self.pid, self.command)?;
        if let Some(api) = &self.api {
            write!(f, ", API at {api}")?;
        }
        write!(f, ")")
    }
}

/// A failure to take the lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("the state directory {} is in use by another addonfs process{}; only one process may change it at a time", dir.display(), holder.as_ref().map(|h| format!(": {h}")).unwrap_or_default())]
    Held {
        /// The state directory.
        dir: PathBuf,
        /// Who holds it, if the lock file says.
        holder: Option<Holder>,
    },
    /// The lock file could not be opened, locked or written.
    #[error("{}: cannot lock the state directory: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// The held lock of one state directory; released on drop (or when the process ends).
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
    holder: Holder,
}

impl StateLock {
    /// Takes the lock of the state directory `dir` (created if needed) for `command`, or says
    /// who holds it. Never waits.
    pub fn acquire(dir: &Path, command: &str) -> Result<StateLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held { dir: dir.to_path_buf(), holder: read_holder(&path) })
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let holder = Holder { pid: std::process::id(), command: command.to_string(), api: None };
        let mut lock = StateLock { file, path: path.clone(), holder };
        lock.write_holder().map_err(io)?;
        Ok(lock)
    }

    /// Takes the lock through `fd`, an open lock file of `dir` passed on by the process that
    /// holds it (a restart's holder, [`crate::holder`]): `flock` belongs to the open file, not
    /// to a process, so the lock is now held by both, and outlives the one that passed it on.
    /// The lock file then names this process.
    pub fn adopt(dir: &Path, command: &str, fd: OwnedFd) -> Result<StateLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io { path: path.clone(), source };
        let file = File::from(fd);
        match file.try_lock() {
            Ok(()) => {}
            // Not the lock's open file after all: somebody else holds the lock.
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held { dir: dir.to_path_buf(), holder: read_holder(&path) })
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let holder = Holder { pid: std::process::id(), command: command.to_string(), api: None };
        let mut lock = StateLock { file, path: path.clone(), holder };
        lock.write_holder().map_err(io)?;
        Ok(lock)
    }

    /// A duplicate of the lock file's descriptor (it carries the lock; see [`StateLock::adopt`]).
    pub fn try_clone_fd(&self) -> std::io::Result<OwnedFd> {
        Ok(self.file.try_clone()?.into())
    }

    /// Records the URL of the holder's API in the lock file, for admin commands to use.
    pub fn set_api(&mut self, url: &str) -> Result<(), LockError> {
        self.holder.api = Some(url.to_string());
        self.write_holder().map_err(|source| LockError::Io { path: self.path.clone(), source })
    }

    /// What the lock file says about this holder.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    fn write_holder(&mut self) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&self.holder).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.write_all(&line)?;
        self.file.flush()
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Unlock explicitly: closing our descriptor alone would keep the lock while a child
        // forked meanwhile (by another thread) still shares the open file.
        let _ = self.file.unlock();
    }
}

/// Who holds the lock of `dir`, if anyone: `None` when the lock is free (whatever an old lock
/// file says) or the holder wrote nothing readable.
pub fn holder(dir: &Path) -> Result<Option<Holder>, LockError> {
    let path = dir.join(LOCK_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LockError::Io { path, source }),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(None),
        Err(TryLockError::WouldBlock) => Ok(read_holder(&path)),
        Err(TryLockError::Error(source)) => Err(LockError::Io { path, source }),
    }
}

/// Reads the holder line of a lock file (best effort: it may be being rewritten).
fn read_holder(path: &Path) -> Option<Holder> {
    let mut text = String::new();
    File::open(path).ok()?.take(4096).read_to_string(&mut text).ok()?;
    serde_json::from_str(text.lines().next()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_it_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder(dir.path()).unwrap(), None);
        let mut lock = StateLock::acquire(dir.path(), "serve").unwrap();
        lock.set_api("http://127.0.0.1:1").unwrap();
        let e = StateLock::acquire(dir.path(), "addons enable").unwrap_err();
        let text = e.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        assert!(text.contains("`addonfs serve`") && text.contains("http://127.0.0.1:1"), "{text}");
        let seen = holder(dir.path()).unwrap().unwrap();
        assert_eq!(seen.api.as_deref(), Some("http://127.0.0.1:1"));
        drop(lock);
        // Released: the stale file's contents are not a holder any more.
        assert_eq!(holder(dir.path()).unwrap(), None);
        let again = StateLock::acquire(dir.path(), "addons enable").unwrap();
        assert_eq!(again.holder().command, "addons enable");
    }

    #[test]
    fn a_passed_on_lock_outlives_the_process_that_passed_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path(), "serve").unwrap();
        // What the holder keeps and hands to the next process: the same open lock file.
        let kept = first.try_clone_fd().unwrap();
        let next = StateLock::adopt(dir.path(), "serve", kept.try_clone().unwrap()).unwrap();
        // The first process dies without unlocking (its descriptor closes): still locked.
        std::mem::forget(first);
        assert!(matches!(
            StateLock::acquire(dir.path(), "addons enable"),
            Err(LockError::Held { .. })
        ));
        assert_eq!(holder(dir.path()).unwrap().unwrap().command, "serve");
        drop(next);
        // A lock file opened anew is another open file: adopting it while held is refused.
        let other = StateLock::acquire(dir.path(), "serve").unwrap();
        let stranger: OwnedFd = File::open(dir.path().join(LOCK_FILE)).unwrap().into();
        assert!(matches!(
            StateLock::adopt(dir.path(), "serve", stranger),
            Err(LockError::Held { .. })
        ));
        drop(other);
        drop(kept);
    }
}
