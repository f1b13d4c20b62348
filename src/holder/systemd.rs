//! systemd's file-descriptor store as the keeper of a mount's connection (`--fd-store`,
//! issue 15): under a systemd service, systemd itself holds the `/dev/fuse` descriptor
//! between the serving process's lives, instead of an `addonfs holder` process.
//!
//! After mounting anew, the serving process stores the descriptor with systemd (`sd_notify(3)`:
//! `FDSTORE=1` with the descriptor attached, named `addonfs-fuse.vMAJOR.MINOR`: what `FUSE_INIT`
//! negotiated travels in the name) and the state directory's lock (`addonfs-lock`), and says
//! `READY=1` once its API listens. When the process dies (a crash, an OOM kill) or is restarted
//! (`systemctl restart`), systemd starts the unit again and passes the stored descriptors back
//! (`LISTEN_FDS`, `LISTEN_FDNAMES`); the new process takes the connection over without mounting,
//! and the requests the dead one had read are resent (see [`crate::mount::attach`]). An upgrade in
//! place (SIGUSR2: `systemctl kill -s USR2 --kill-who=main UNIT`; `systemctl reload` stays the
//! certificate's SIGHUP) re-executes the binary at the path the process started from, in the same
//! process (systemd's main pid does not change), handing the descriptors to the new image through
//! [`crate::process::PASSED_FDS_ENV`].
//!
//! The unit needs `Type=notify` (systemd takes stored descriptors only from a process it
//! listens to), `FileDescriptorStoreMax=2` or more, and `Restart=always` (see
//! `deploy/systemd/`). systemd drops a stored descriptor that reports an error (a connection
//! unmounted), and drops them all when the unit stops: a stop ends the connection, as it ends
//! the mount.

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fuser::Version;
use rustix::net::{
    AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};

use super::Passed;

/// The name the `/dev/fuse` descriptor is stored under, before the protocol version.
const FUSE_NAME: &str = "addonfs-fuse.v";
/// The name the state directory's lock descriptor is stored under.
const LOCK_NAME: &str = "addonfs-lock";

/// The name the connection is stored under: it carries the protocol version `FUSE_INIT`
/// negotiated, all a successor needs besides the descriptor.
fn fuse_name(version: Version) -> String {
    format!("{FUSE_NAME}{}.{}", version.0, version.1)
}

/// The protocol version in a stored connection's name; `None` for any other name.
fn parse_fuse_name(name: &str) -> Option<Version> {
    let (major, minor) = name.strip_prefix(FUSE_NAME)?.split_once('.')?;
    Some(Version(major.parse().ok()?, minor.parse().ok()?))
}

/// The service manager's notification socket (`NOTIFY_SOCKET`: a path, or an abstract name
/// after `@`).
fn notify_address() -> io::Result<SocketAddrUnix> {
    let value = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "--fd-store: NOTIFY_SOCKET is not set: run it as a systemd service with \
             Type=notify and FileDescriptorStoreMax=2 or more (deploy/systemd/)",
        )
    })?;
    let bytes = value.as_bytes();
    let address = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddrUnix::new_abstract_name(name),
        None => SocketAddrUnix::new(Path::new(&value)),
    };
    address.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("NOTIFY_SOCKET: {e}")))
}

/// Sends one notification (`sd_notify(3)`'s `KEY=VALUE` lines) with `fds` attached.
fn notify(address: &SocketAddrUnix, message: &str, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors"));
    }
    let sent = rustix::net::sendmsg_addr(
        &socket,
        address,
        &[IoSlice::new(message.as_bytes())],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent != message.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short notification"));
    }
    Ok(())
}

/// A connection systemd kept is alive unless its descriptor reports an error (the kernel
/// aborted it: unmounted, or forcibly ended through `/sys/fs/fuse/connections`).
fn alive(fd: &OwnedFd) -> bool {
    let mut poll = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::empty())];
    match rustix::event::poll(&mut poll, Some(&rustix::event::Timespec::default())) {
        Ok(_) => !poll[0].revents().intersects(
            rustix::event::PollFlags::ERR
                | rustix::event::PollFlags::HUP
                | rustix::event::PollFlags::NVAL,
        ),
        Err(_) => false,
    }
}

/// A serving process's session with systemd's file-descriptor store.
pub struct FdStore {
    address: SocketAddrUnix,
    /// What systemd passed back: the connection and its protocol version, the lock.
    passed: Passed,
    /// The names this process stored (to remove at a clean stop).
    stored: Mutex<Vec<String>>,
}

impl FdStore {
    /// Begins a session for the mount at `mountpoint`: takes the descriptors systemd (or this
    /// program's own re-execution) passed. A connection is taken over only if it is alive and
    /// mounted at `mountpoint` (the unit's `--mount` may have changed since it was stored);
    /// otherwise it is removed from the store and the mount made anew.
    pub fn begin(mountpoint: &Path) -> io::Result<FdStore> {
        let address = notify_address()?;
        let mut store = FdStore { address, passed: Passed::default(), stored: Mutex::default() };
        for (name, fd) in crate::process::take_passed_fds() {
            if name == LOCK_NAME {
                store.passed.lock = Some(fd);
                store.note_stored(name);
            } else if let Some(version) = parse_fuse_name(&name) {
                store.note_stored(name.clone());
                let at = crate::mount::absolute_untouched(mountpoint)?;
                let mounted = crate::mount::mount_at(&at)
                    .ok()
                    .flatten()
                    .is_some_and(|m| m.fs_type == "fuse.addonfs");
                let alive = alive(&fd);
                if alive && mounted {
                    store.passed.connection = Some((fd, version));
                } else {
                    tracing::warn!(
                        mountpoint = %at.display(),
                        alive,
                        mounted,
                        "the connection systemd kept is not this mount's (ended, or mounted \
                         elsewhere): mounting anew"
                    );
                    store.forget(&name);
                }
            } else {
                tracing::warn!(name, "a descriptor of an unknown name was passed; closed");
            }
        }
        Ok(store)
    }

    fn note_stored(&self, name: String) {
        let mut stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        if !stored.contains(&name) {
            stored.push(name);
        }
    }

    /// What systemd passed back (taken by [`crate::daemon::restart::MountLife`]).
    pub fn passed(&mut self) -> &mut Passed {
        &mut self.passed
    }

    /// Stores a new connection (after mounting anew) and the lock's descriptor with systemd.
    pub fn keep(&self, fuse: &OwnedFd, version: Version, lock: Option<&OwnedFd>) -> io::Result<()> {
        let name = fuse_name(version);
        notify(&self.address, &format!("FDSTORE=1\nFDNAME={name}"), &[fuse.as_fd()])?;
        self.note_stored(name);
        if let Some(lock) = lock {
            notify(&self.address, &format!("FDSTORE=1\nFDNAME={LOCK_NAME}"), &[lock.as_fd()])?;
            self.note_stored(LOCK_NAME.to_string());
        }
        Ok(())
    }

    /// Tells systemd this process serves (`READY=1`, with its pid as the main one: after a
    /// re-execution it is the same).
    pub fn ready(&self, mountpoint: &Path) -> io::Result<()> {
        let message = format!(
            "READY=1\nMAINPID={}\nSTATUS=serving {}",
            std::process::id(),
            mountpoint.display()
        );
        notify(&self.address, &message, &[])
    }

    /// Removes `name` from the store.
    fn forget(&self, name: &str) {
        if let Err(e) = notify(&self.address, &format!("FDSTOREREMOVE=1\nFDNAME={name}"), &[]) {
            tracing::warn!(name, error = %e, "cannot remove a descriptor from systemd's store");
        }
        self.stored.lock().unwrap_or_else(|p| p.into_inner()).retain(|n| n != name);
    }

    /// At a clean stop (the mount is being unmounted): removes what this process stored, so a
    /// start that follows mounts anew.
    pub fn bye(&self) {
        let _ = notify(&self.address, "STOPPING=1", &[]);
        let names = self.stored.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for name in names {
            self.forget(&name);
        }
    }
}

/// What an upgrade in place needs: the program and its arguments as this process started,
/// the connection, the lock, and what must not be left behind.
struct Reexec {
    exe: PathBuf,
    args: Vec<std::ffi::OsString>,
    fuse: OwnedFd,
    version: Version,
    lock: Option<OwnedFd>,
    address: SocketAddrUnix,
    before: Option<Box<dyn FnOnce() + Send>>,
}

static REEXEC: Mutex<Option<Reexec>> = Mutex::new(None);

/// Makes [`upgrade_in_place`] possible for this process, which serves the connection `fuse`
/// (negotiated `version`) with the state directory's lock `lock`; `before` runs just before
/// the new image replaces this one (no destructor runs then). The program is the path this
/// process started from, read now: after an upgrade replaced the file, `/proc/self/exe` names
/// the old, deleted one.
pub fn enable_upgrade(
    fuse: OwnedFd,
    version: Version,
    lock: Option<OwnedFd>,
    before: Option<Box<dyn FnOnce() + Send>>,
) -> io::Result<()> {
    let exe = std::env::current_exe()?;
    let reexec = Reexec {
        exe,
        args: std::env::args_os().skip(1).collect(),
        fuse,
        version,
        lock,
        address: notify_address()?,
        before,
    };
    *REEXEC.lock().unwrap_or_else(|p| p.into_inner()) = Some(reexec);
    Ok(())
}

/// Whether [`enable_upgrade`] was called (this process serves under `--fd-store`).
pub fn can_upgrade() -> bool {
    REEXEC.lock().unwrap_or_else(|p| p.into_inner()).is_some()
}

/// Upgrades in place: re-executes the program at the path this process started from, in
/// this process, handing it the connection and the lock; the new image takes the connection
/// over and has the requests this one had read resent. Returns only if that failed (the
/// process then goes on serving).
pub fn upgrade_in_place() -> io::Error {
    use std::os::unix::process::CommandExt;
    let mut guard = REEXEC.lock().unwrap_or_else(|p| p.into_inner());
    let Some(reexec) = guard.as_mut() else {
        return io::Error::other(
            "no upgrade in place: this process does not serve with --fd-store",
        );
    };
    let _ = notify(&reexec.address, "RELOADING=1\nSTATUS=upgrading in place", &[]);
    let mut passed = vec![(fuse_name(reexec.version), reexec.fuse.as_raw_fd())];
    passed.extend(reexec.lock.as_ref().map(|l| (LOCK_NAME.to_string(), l.as_raw_fd())));
    for fd in [Some(&reexec.fuse), reexec.lock.as_ref()].into_iter().flatten() {
        if let Err(e) = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty()) {
            return e.into();
        }
    }
    let list: Vec<String> = passed.iter().map(|(name, fd)| format!("{name}={fd}")).collect();
    if let Some(before) = reexec.before.take() {
        before();
    }
    tracing::info!(exe = %reexec.exe.display(), "upgrading in place: re-executing");
    let error = std::process::Command::new(&reexec.exe)
        .args(&reexec.args)
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_FDNAMES")
        .env(crate::process::PASSED_FDS_ENV, format!("{};{}", std::process::id(), list.join(",")))
        .exec();
    // Still here: the descriptors go back to close-on-exec.
    for fd in [Some(&reexec.fuse), reexec.lock.as_ref()].into_iter().flatten() {
        let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC);
    }
    let _ = notify(&reexec.address, "READY=1", &[]);
    io::Error::new(error.kind(), format!("{}: cannot re-execute: {error}", reexec.exe.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_version_travels_in_the_name() {
        let name = fuse_name(Version(7, 45));
        assert_eq!(name, "addonfs-fuse.v7.45");
        assert_eq!(parse_fuse_name(&name), Some(Version(7, 45)));
        for bad in ["addonfs-lock", "addonfs-fuse.v7", "addonfs-fuse.vx.1", "fuse.v7.45", ""] {
            assert_eq!(parse_fuse_name(bad), None, "{bad}");
        }
    }

    /// What systemd receives, read from a socket of our own standing in for its notification
    /// socket: the message and the descriptor attached.
    #[test]
    fn a_stored_descriptor_reaches_the_notification_socket() {
        use std::io::IoSliceMut;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let address = SocketAddrUnix::new(&path).unwrap();
        let file = tempfile::tempfile().unwrap();
        let fd = OwnedFd::from(file.try_clone().unwrap());
        notify(&address, "FDSTORE=1\nFDNAME=addonfs-lock", &[fd.as_fd()]).unwrap();

        let mut buf = [0u8; 256];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            &receiver,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            rustix::net::RecvFlags::CMSG_CLOEXEC,
        )
        .unwrap();
        assert_eq!(&buf[..got.bytes], b"FDSTORE=1\nFDNAME=addonfs-lock");
        let fds: Vec<OwnedFd> = control
            .drain()
            .flat_map(|m| match m {
                rustix::net::RecvAncillaryMessage::ScmRights(fds) => fds.collect(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(fds.len(), 1);
        // The same open file arrived (same inode as the one sent).
        let sent = file.metadata().unwrap().ino();
        let received = std::fs::File::from(fds.into_iter().next().unwrap()).metadata().unwrap();
        assert_eq!(received.ino(), sent);
    }
}
