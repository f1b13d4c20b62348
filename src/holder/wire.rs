//! The holder's socket protocol: one JSON message per `SOCK_SEQPACKET` packet (the kernel keeps
//! the boundaries), with descriptors attached as `SCM_RIGHTS` where a message carries them.
//! Safe code only: rustix builds the control messages.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use serde::{Deserialize, Serialize};

/// The holder's socket in the state directory.
pub const SOCKET: &str = "holder.sock";
/// The largest message (a `Hello` carries the command line and the environment).
const MAX_MESSAGE: usize = 256 * 1024;
/// The most descriptors a message carries (`/dev/fuse` and the state directory's lock).
const MAX_FDS: usize = 2;

/// What the connection's `FUSE_INIT` negotiated, for a successor (fuser needs the version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitState {
    /// Protocol major version.
    pub major: u32,
    /// Protocol minor version.
    pub minor: u32,
}

/// How to start a serving process again: its command line, working directory and environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The executable (absolute; after an upgrade, the new binary at the same path).
    pub exe: PathBuf,
    /// The arguments after the executable.
    pub args: Vec<String>,
    /// The working directory.
    pub cwd: PathBuf,
    /// The environment.
    pub env: Vec<(String, String)>,
}

/// A serving process introducing itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Its process id.
    pub pid: u32,
    /// The mount point it serves.
    pub mountpoint: PathBuf,
    /// How to start it again.
    pub command: Command,
    /// Set when the holder started it: the number of serving processes that had said hello
    /// by then (a process started by hand since then supersedes it).
    pub spawned_at: Option<u64>,
}

/// One message, either way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// Serving process → holder: here I am.
    Hello(Hello),
    /// Holder → serving process: the kept connection (with the `/dev/fuse` and lock
    /// descriptors attached) or `None` (mount anew, then `Keep`), the mount point it is
    /// mounted at; `superseded`: exit, a newer process took over.
    Welcome {
        /// The negotiated state of the kept connection.
        init: Option<InitState>,
        /// Where the kept connection is mounted.
        mountpoint: Option<PathBuf>,
        /// A newer serving process has come since this one was started: exit.
        superseded: bool,
    },
    /// Serving process → holder: keep this new connection (descriptors attached).
    Keep(InitState),
    /// Serving process → holder: I serve the connection now.
    Ready,
    /// Serving process → holder: I unmounted (a clean stop): let the connection go and exit.
    Bye,
    /// Command → holder: start a successor of the serving process now (an upgrade in place).
    Upgrade,
    /// Holder → command: the successor (this pid) serves; its predecessor was told to retire.
    Upgraded {
        /// The successor's process id.
        pid: u32,
    },
    /// Holder → command or serving process: the request cannot be done, and why.
    Refused(String),
    /// Holder → serving process: a successor serves: exit at once without unmounting.
    Retire,
    /// Holder → serving process: a predecessor died: have the kernel resend what it had read.
    Resend,
}

/// A connected `SOCK_SEQPACKET` Unix socket.
#[derive(Debug)]
pub struct Conn(pub OwnedFd);

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

fn socket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// The holder's socket path for the state directory `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET)
}

/// Binds and listens at `path`.
pub fn listen(path: &Path) -> io::Result<OwnedFd> {
    let fd = socket()?;
    rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
    rustix::net::listen(&fd, 16)?;
    Ok(fd)
}

/// Accepts one connection.
pub fn accept(listener: &OwnedFd) -> io::Result<Conn> {
    Ok(Conn(rustix::net::accept_with(listener, SocketFlags::CLOEXEC)?))
}

/// Connects to the holder at `path`.
pub fn connect(path: &Path) -> io::Result<Conn> {
    let fd = socket()?;
    rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
    Ok(Conn(fd))
}

impl Conn {
    /// Sends `message` with `fds` attached.
    pub fn send(&self, message: &Message, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors"));
        }
        rustix::net::sendmsg(&self.0, &[IoSlice::new(&bytes)], &mut control, SendFlags::NOSIGNAL)?;
        Ok(())
    }

    /// Receives the next message and the descriptors attached to it; `None` when the other end
    /// closed the connection. A message that does not parse is `InvalidData`.
    pub fn receive(&self) -> io::Result<Option<(Message, Vec<OwnedFd>)>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = loop {
            match rustix::net::recvmsg(
                &self.0,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other?,
            }
        };
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = message {
                fds.extend(rights);
            }
        }
        if received.bytes == 0 {
            return Ok(None);
        }
        if received.flags.contains(ReturnFlags::TRUNC) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "holder message too long"));
        }
        let message = serde_json::from_slice(&buf[..received.bytes]).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("bad holder message: {e}"))
        })?;
        Ok(Some((message, fds)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn messages_and_descriptors_cross_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        let listener = listen(&path).unwrap();
        let client = connect(&path).unwrap();
        let server = accept(&listener).unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"passed").unwrap();
        let keep = Message::Keep(InitState { major: 7, minor: 45 });
        client.send(&keep, &[file.as_fd()]).unwrap();
        let (got, fds) = server.receive().unwrap().unwrap();
        assert_eq!(got, keep);
        assert_eq!(fds.len(), 1);
        // The same open file: its offset is shared.
        let mut passed = std::fs::File::from(fds.into_iter().next().unwrap());
        passed.rewind().unwrap();
        let mut text = String::new();
        passed.read_to_string(&mut text).unwrap();
        assert_eq!(text, "passed");
        server.send(&Message::Retire, &[]).unwrap();
        let (got, fds) = client.receive().unwrap().unwrap();
        assert_eq!((got, fds.len()), (Message::Retire, 0));
        drop(server);
        assert!(client.receive().unwrap().is_none(), "a closed end reads as None");
    }
}
