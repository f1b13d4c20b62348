//! The serving process's side of the holder ([`super`]): find (or start) the holder, take the
//! kept connection over or hand it a new one, then follow its instructions (retire, resend).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::Version;

use super::wire::{self, Command, Conn, Hello, InitState, Message};
use super::{Passed, SPAWNED_AT_ENV};

/// How long a serving process waits for the holder it started to listen.
const HOLDER_START: Duration = Duration::from_secs(5);

/// A serving process's session with the holder.
pub struct Handover {
    conn: Arc<Conn>,
    /// What the holder handed over: `/dev/fuse`, what INIT negotiated, the lock's descriptor.
    passed: Passed,
    superseded: bool,
    /// Set by [`Handover::bye`]: the holder's going away is expected.
    leaving: Arc<std::sync::atomic::AtomicBool>,
}

impl Handover {
    /// Says hello to the holder of `dir` (starting one if none runs) as the serving process of
    /// `mountpoint`, and receives the connection it keeps, if any.
    pub fn begin(dir: &Path, mountpoint: &Path) -> io::Result<Handover> {
        let conn = connect_or_start(dir)?;
        let mountpoint = crate::mount::absolute_untouched(mountpoint)?;
        let hello = Hello {
            pid: std::process::id(),
            mountpoint: mountpoint.clone(),
            command: this_command()?,
            spawned_at: std::env::var(SPAWNED_AT_ENV).ok().and_then(|v| v.parse().ok()),
        };
        conn.send(&Message::Hello(hello), &[])?;
        let (welcome, fds) =
            conn.receive()?.ok_or_else(|| io::Error::other("the holder closed the connection"))?;
        match welcome {
            Message::Welcome { superseded: true, .. } => {
                Ok(Handover { superseded: true, ..Handover::new(conn) })
            }
            Message::Welcome { init: Some(init), .. } => {
                let mut fds = fds.into_iter();
                let fuse = fds
                    .next()
                    .ok_or_else(|| io::Error::other("the holder sent no /dev/fuse descriptor"))?;
                Ok(Handover {
                    passed: Passed {
                        connection: Some((fuse, Version(init.major, init.minor))),
                        lock: fds.next(),
                    },
                    ..Handover::new(conn)
                })
            }
            Message::Welcome { init: None, .. } => Ok(Handover::new(conn)),
            Message::Refused(why) => Err(io::Error::other(why)),
            other => Err(io::Error::other(format!("unexpected holder answer {other:?}"))),
        }
    }

    fn new(conn: Conn) -> Handover {
        Handover {
            conn: Arc::new(conn),
            passed: Passed::default(),
            superseded: false,
            leaving: Arc::default(),
        }
    }

    /// A newer serving process has come since the holder started this one: it should exit.
    pub fn superseded(&self) -> bool {
        self.superseded
    }

    /// What the holder handed over (taken by [`crate::daemon::restart::MountLife`]).
    pub fn passed(&mut self) -> &mut Passed {
        &mut self.passed
    }

    /// Hands a new connection to the holder (after mounting anew): `/dev/fuse` and the
    /// lock's descriptor.
    pub fn keep(&self, fuse: &OwnedFd, version: Version, lock: Option<&OwnedFd>) -> io::Result<()> {
        let init = InitState { major: version.0, minor: version.1 };
        let fds: Vec<_> = std::iter::once(fuse.as_fd()).chain(lock.map(AsFd::as_fd)).collect();
        self.conn.send(&Message::Keep(init), &fds)
    }

    /// Tells the holder this process serves, and follows its instructions from a thread: retire
    /// (exit at once, without unmounting: the successor serves the connection) and resend
    /// (`resend` asks the kernel for the requests a dead predecessor had read).
    /// `retire` runs first when told to retire (what this process must not leave behind, as a
    /// download half done in a cache's `tmp/`: no destructor runs at that exit).
    pub fn serving(
        &self,
        resend: impl Fn() + Send + 'static,
        retire: Option<Box<dyn FnOnce() + Send>>,
    ) -> io::Result<()> {
        self.conn.send(&Message::Ready, &[])?;
        let conn = Arc::clone(&self.conn);
        let leaving = Arc::clone(&self.leaving);
        let mut retire = retire;
        std::thread::Builder::new().name("addonfs-holder".into()).spawn(move || loop {
            match conn.receive() {
                Ok(Some((Message::Retire, _))) => {
                    tracing::info!("a successor serves the mount: retiring");
                    if let Some(retire) = retire.take() {
                        retire();
                    }
                    // No destructor runs: nothing is unmounted, the lock is not released (the
                    // successor shares it), the connection stays with the holder.
                    std::process::exit(0);
                }
                Ok(Some((Message::Resend, _))) => resend(),
                Ok(Some((other, _))) => {
                    tracing::warn!(message = ?other, "unexpected holder message")
                }
                Ok(None) | Err(_) if leaving.load(std::sync::atomic::Ordering::Relaxed) => return,
                Ok(None) | Err(_) => {
                    tracing::warn!(
                        "the holder is gone: the mount now ends with this process (a restart \
                         clears it and mounts anew)"
                    );
                    return;
                }
            }
        })?;
        Ok(())
    }

    /// Tells the holder the mount was unmounted (a clean stop): it lets the connection go.
    pub fn bye(&self) {
        self.leaving.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.conn.send(&Message::Bye, &[]);
    }
}

/// How the holder would start this process again.
fn this_command() -> io::Result<Command> {
    Ok(Command {
        exe: std::env::current_exe()?,
        args: std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect(),
        cwd: std::env::current_dir()?,
        env: std::env::vars_os()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
            .collect(),
    })
}

/// Connects to the holder of `dir`, starting `addonfs holder` (this executable) if none runs.
fn connect_or_start(dir: &Path) -> io::Result<Conn> {
    let path = wire::socket_path(dir);
    match wire::connect(&path) {
        Ok(conn) => return Ok(conn),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ECONNREFUSED)) => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
    std::fs::create_dir_all(dir)?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("holder.log"))?;
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("holder")
        .arg("--state-dir")
        .arg(dir)
        .env_remove(SPAWNED_AT_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    let deadline = Instant::now() + HOLDER_START;
    let conn = loop {
        match wire::connect(&path) {
            Ok(conn) => break conn,
            Err(e) if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{}: the holder did not start: {e}", path.display()),
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    // Reaped when it exits (it outlives this process normally).
    let _ = std::thread::Builder::new().name("addonfs-holder-wait".into()).spawn(move || {
        let _ = child.wait();
    });
    Ok(conn)
}
