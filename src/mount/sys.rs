//! The few system calls the mount lifecycle needs that `std` lacks: blocking and waiting for
//! signals, and lazy unmounting. With the zlib bindings and `crate::process`, the only
//! `unsafe` code of the crate (`#![deny(unsafe_code)]` elsewhere); each block is a plain FFI
//! call on values owned right here.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A set of signals blocked in the calling thread (and every thread it spawns afterwards),
/// to be received synchronously with [`SignalSet::wait`].
#[derive(Clone, Copy)]
pub struct SignalSet {
    set: libc::sigset_t,
}

impl SignalSet {
    /// Blocks `signals` in the calling thread. Call it before spawning threads, so none of
    /// them gets the signals asynchronously.
    pub fn block(signals: &[libc::c_int]) -> io::Result<SignalSet> {
        // SAFETY: sigset_t is plain data; an all-zero value is a valid argument for
        // sigemptyset, which initializes it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, exclusively borrowed sigset_t.
        if unsafe { libc::sigemptyset(&mut set) } != 0 {
            return Err(io::Error::last_os_error());
        }
        for &signal in signals {
            // SAFETY: as above; an invalid signal number is reported as EINVAL.
            if unsafe { libc::sigaddset(&mut set, signal) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: `set` is initialized; a null old-set pointer is allowed.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(SignalSet { set })
    }

    /// Waits until one of the signals is pending and takes it; returns its number.
    pub fn wait(&self) -> io::Result<libc::c_int> {
        let mut signal: libc::c_int = 0;
        // SAFETY: `self.set` is an initialized sigset_t and `signal` a valid out pointer.
        let rc = unsafe { libc::sigwait(&self.set, &mut signal) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(signal)
    }
}

/// The name of a signal, for log lines.
pub fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        _ => "signal",
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Asks the file system at `path` for its statistics (`statvfs`). Unlike `stat`, which the
/// kernel may answer from its cache, this always reaches a FUSE daemon, so a dead one shows
/// as `ENOTCONN`.
pub fn statvfs(path: &Path) -> io::Result<()> {
    let target = c_path(path)?;
    // SAFETY: statvfs is plain data, fully written by the call on success.
    let mut out: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `target` is a NUL-terminated string and `out` a valid, exclusive out pointer.
    if unsafe { libc::statvfs(target.as_ptr(), &mut out) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `umount2(path, flags)`.
fn umount2(path: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = c_path(path)?;
    // SAFETY: `target` is a NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(target.as_ptr(), flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts `path` now; fails with `EBUSY` if it is in use.
pub fn unmount(path: &Path) -> io::Result<()> {
    umount2(path, 0)
}

/// Detaches `path` lazily (`MNT_DETACH`): it leaves the namespace at once and is cleaned up
/// when its last user goes.
pub fn detach(path: &Path) -> io::Result<()> {
    umount2(path, libc::MNT_DETACH)
}
