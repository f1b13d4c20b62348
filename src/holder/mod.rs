//! The holder: a small long-lived process that keeps a mount's FUSE connection alive across the
//! death or upgrade of the process serving it (issue 15).
//!
//! The kernel keeps a FUSE connection as long as any process holds its `/dev/fuse` descriptor.
//! `addonfs holder` (started by the first `addonfs serve` of a state directory, or run on its
//! own, in its own pod under Kubernetes) listens on `STATE_DIR/holder.sock` ([`wire`]). A
//! serving process says hello; the holder either hands it the kept connection (the `/dev/fuse`
//! descriptor, the state directory's lock descriptor and what `FUSE_INIT` negotiated), which
//! it takes over without mounting ([`crate::mount::Attach::Adopt`]), or has it mount anew and
//! keep the new connection here. The newest serving process wins: once it serves, the others
//! are told to retire (exit without unmounting). When a serving process dies (its socket
//! closes without `Bye`), the kernel still holds the requests it had read; the holder tells the
//! process now serving to have them resent (`FUSE_NOTIFY_RESEND`), or, if none is left, starts
//! the same command again (unless `--no-spawn`), which resends when it serves.
//!
//! The holder itself does nothing else, so it never needs upgrading. If it dies, nothing
//! changes while the serving process lives; if that one then dies too, the connection goes
//! with it: today's behaviour (the mount goes stale, and the next `serve` detaches it and
//! mounts anew). When the connection ends (unmounted), the holder stops the processes it
//! started and exits.

pub mod client;
pub mod systemd;

/// What a keeper (the holder, or systemd's store) passed back to a serving process: the kept
/// connection with the protocol version `FUSE_INIT` negotiated, and the state directory's lock
/// descriptor. Each is taken once.
#[derive(Debug, Default)]
pub struct Passed {
    /// `/dev/fuse` and its protocol version.
    pub connection: Option<(OwnedFd, fuser::Version)>,
    /// The lock file's descriptor (see [`crate::addon::lock::StateLock::adopt`]).
    pub lock: Option<OwnedFd>,
}

impl Passed {
    /// The lock's descriptor, once.
    pub fn take_lock(&mut self) -> Option<OwnedFd> {
        self.lock.take()
    }

    /// How to attach the mount: take the kept connection over, or mount anew for the keeper
    /// to keep.
    pub fn attach(&mut self) -> crate::mount::Attach {
        match self.connection.take() {
            Some((fd, version)) => crate::mount::Attach::Adopt { fd, version },
            None => crate::mount::Attach::Held,
        }
    }
}
pub mod wire;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};

use wire::{Command, Conn, InitState, Message};

/// The environment variable that tells a serving process the holder started it (see
/// [`wire::Hello::spawned_at`]).
pub const SPAWNED_AT_ENV: &str = "ADDONFS_HOLDER_SPAWNED_AT";
/// The log of the serving processes the holder starts (standard output and error), in the
/// state directory.
pub const SERVE_LOG: &str = "serve.log";

/// What `addonfs holder` runs.
#[derive(Debug, Clone)]
pub struct HolderOptions {
    /// The state directory (its `holder.sock`).
    pub state_dir: PathBuf,
    /// Start the serving command again when the serving process dies (off under Kubernetes,
    /// where the daemon's pod is restarted instead).
    pub spawn: bool,
}

/// One connection to the holder.
struct Peer {
    conn: Conn,
    /// Said hello as a serving process (with this pid and mount point), as the `seq`th.
    pid: Option<u32>,
    seq: u64,
    mountpoint: Option<PathBuf>,
    ready: bool,
    retired: bool,
    bye: bool,
    /// An `addonfs restart` waiting for its successor to serve.
    waits_upgrade: bool,
}

struct Holder {
    dir: PathBuf,
    spawn: bool,
    listener: OwnedFd,
    /// The kept connection: `/dev/fuse`, the lock, what INIT negotiated, where it is mounted.
    fuse: Option<OwnedFd>,
    lock: Option<OwnedFd>,
    init: Option<InitState>,
    mountpoint: Option<PathBuf>,
    command: Option<Command>,
    peers: Vec<Peer>,
    hellos: u64,
    children: Vec<Child>,
    /// When to start the command again (after the serving process died).
    spawn_at: Option<Instant>,
    /// Serving processes in a row that died before serving (backs the restarts off).
    failures: u32,
    done: bool,
}

/// Runs the holder of `opts.state_dir` until its connection ends or a clean stop (`Bye`).
pub fn run(opts: &HolderOptions) -> io::Result<()> {
    let path = wire::socket_path(&opts.state_dir);
    let listener = match wire::listen(&path) {
        Ok(listener) => listener,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if wire::connect(&path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{}: a holder already runs for this state directory", path.display()),
                ));
            }
            // Left by a holder that died.
            std::fs::remove_file(&path)?;
            wire::listen(&path)?
        }
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    tracing::info!(socket = %path.display(), spawn = opts.spawn, "holder listening");
    let mut holder = Holder {
        dir: opts.state_dir.clone(),
        spawn: opts.spawn,
        listener,
        fuse: None,
        lock: None,
        init: None,
        mountpoint: None,
        command: None,
        peers: Vec::new(),
        hellos: 0,
        children: Vec::new(),
        spawn_at: None,
        failures: 0,
        done: false,
    };
    while !holder.done {
        holder.step()?;
    }
    let _ = std::fs::remove_file(&path);
    tracing::info!("holder exiting");
    Ok(())
}

impl Holder {
    fn step(&mut self) -> io::Result<()> {
        let ready: Vec<PollFlags> = {
            let mut fds = vec![PollFd::new(&self.listener, PollFlags::IN)];
            // No events asked: only an error (the connection ended) wakes us. Requests queued
            // for the serving process are not ours to read.
            if let Some(fuse) = &self.fuse {
                fds.push(PollFd::new(fuse, PollFlags::empty()));
            }
            for peer in &self.peers {
                fds.push(PollFd::new(&peer.conn, PollFlags::IN));
            }
            let timeout = rustix::event::Timespec { tv_sec: 0, tv_nsec: 200_000_000 };
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            fds.iter().map(PollFd::revents).collect()
        };
        let mut flags = ready.into_iter();
        if flags.next().is_some_and(|f| f.contains(PollFlags::IN)) {
            match wire::accept(&self.listener) {
                Ok(conn) => self.peers.push(Peer {
                    conn,
                    pid: None,
                    seq: 0,
                    mountpoint: None,
                    ready: false,
                    retired: false,
                    bye: false,
                    waits_upgrade: false,
                }),
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            }
        }
        if self.fuse.is_some()
            && flags.next().is_some_and(|f| f.intersects(PollFlags::ERR | PollFlags::HUP))
        {
            tracing::info!("the FUSE connection ended (unmounted): stopping");
            self.fuse = None;
            for child in &mut self.children {
                if let Ok(None) = child.try_wait() {
                    terminate(child.id());
                }
            }
            self.done = true;
            return Ok(());
        }
        let peer_flags: Vec<PollFlags> = flags.collect();
        let mut closed = Vec::new();
        for (i, f) in peer_flags.into_iter().enumerate() {
            if !f.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
                continue;
            }
            match self.peers[i].conn.receive() {
                Ok(Some((message, fds))) => self.handle(i, message, fds),
                Ok(None) => closed.push(i),
                Err(e) => {
                    tracing::warn!(error = %e, "dropping a holder connection");
                    closed.push(i);
                }
            }
        }
        for i in closed.into_iter().rev() {
            let peer = self.peers.remove(i);
            self.closed(peer);
        }
        self.reap();
        // A serving process started by hand (or by systemd) since the death that asked for
        // this spawn has said hello: it takes the mount over, and a spawn now would retire it.
        if self.spawn_at.is_some() && self.peers.iter().any(|p| p.pid.is_some() && !p.retired) {
            self.spawn_at = None;
        }
        if self.spawn_at.is_some_and(|at| Instant::now() >= at) {
            self.spawn_at = None;
            self.start_command();
        }
        Ok(())
    }

    fn handle(&mut self, i: usize, message: Message, fds: Vec<OwnedFd>) {
        match message {
            Message::Hello(hello) => {
                let before = self.hellos;
                self.hellos += 1;
                let peer = &self.peers[i];
                if hello.spawned_at.is_some_and(|at| at < before) {
                    // Somebody started a serving process by hand since we started this one.
                    let _ = peer.conn.send(
                        &Message::Welcome { init: None, mountpoint: None, superseded: true },
                        &[],
                    );
                    return;
                }
                if let (Some(kept), true) = (&self.mountpoint, self.fuse.is_some()) {
                    if *kept != hello.mountpoint {
                        let why = format!(
                            "the holder of {} keeps a mount at {}, not {}",
                            self.dir.display(),
                            kept.display(),
                            hello.mountpoint.display()
                        );
                        let _ = peer.conn.send(&Message::Refused(why), &[]);
                        return;
                    }
                }
                let mut command = hello.command;
                command.env.retain(|(k, _)| k != SPAWNED_AT_ENV);
                self.command = Some(command);
                let welcome = Message::Welcome {
                    init: self.fuse.as_ref().and(self.init),
                    mountpoint: self.mountpoint.clone(),
                    superseded: false,
                };
                let fds: Vec<_> =
                    self.fuse.iter().chain(self.lock.iter()).map(AsFd::as_fd).collect();
                if let Err(e) = peer.conn.send(&welcome, &fds) {
                    tracing::warn!(pid = hello.pid, error = %e, "cannot welcome");
                }
                let peer = &mut self.peers[i];
                peer.pid = Some(hello.pid);
                peer.seq = self.hellos;
                peer.mountpoint = Some(hello.mountpoint);
                tracing::info!(
                    pid = hello.pid,
                    handed_over = self.fuse.is_some(),
                    "serving process said hello"
                );
            }
            Message::Keep(init) => {
                let mut fds = fds.into_iter();
                self.fuse = fds.next();
                self.lock = fds.next();
                self.init = Some(init);
                self.mountpoint = self.peers[i].mountpoint.clone();
                tracing::info!(pid = ?self.peers[i].pid, abi = ?init, "keeping a new FUSE connection");
            }
            Message::Ready => {
                self.failures = 0;
                self.peers[i].ready = true;
                let pid = self.peers[i].pid.unwrap_or(0);
                let seq = self.peers[i].seq;
                // The newest wins: those that said hello before this one retire; one that said
                // hello since retires this one when it serves.
                let mut others = 0;
                for (j, peer) in self.peers.iter_mut().enumerate() {
                    if j != i && peer.pid.is_some() && !peer.retired && peer.seq < seq {
                        let _ = peer.conn.send(&Message::Retire, &[]);
                        peer.retired = true;
                        others += 1;
                    }
                }
                // With no predecessor left, whatever a dead one had read is resent now; else
                // when the predecessors are gone (see `closed`).
                if others == 0 {
                    let _ = self.peers[i].conn.send(&Message::Resend, &[]);
                }
                for peer in &mut self.peers {
                    if peer.waits_upgrade {
                        let _ = peer.conn.send(&Message::Upgraded { pid }, &[]);
                        peer.waits_upgrade = false;
                    }
                }
                tracing::info!(pid, retired = others, "serving");
            }
            Message::Bye => {
                tracing::info!(pid = ?self.peers[i].pid, "the mount was unmounted: letting the connection go");
                self.peers[i].bye = true;
                self.fuse = None;
                self.lock = None;
                self.init = None;
                self.done = true;
            }
            Message::Upgrade => {
                if self.command.is_none() || self.fuse.is_none() {
                    let why = "no serving process has handed a mount to the holder yet";
                    let _ = self.peers[i].conn.send(&Message::Refused(why.into()), &[]);
                    return;
                }
                self.peers[i].waits_upgrade = true;
                self.start_command();
            }
            other => tracing::warn!(message = ?other, "unexpected holder message"),
        }
    }

    /// A connection closed: a serving process that did not say `Bye` died (or retired).
    fn closed(&mut self, peer: Peer) {
        let Some(pid) = peer.pid else { return };
        if peer.bye || self.fuse.is_none() {
            return;
        }
        tracing::info!(pid, retired = peer.retired, "serving process gone");
        if !peer.ready && !peer.retired {
            self.failures += 1;
        }
        let serving = self.peers.iter().rposition(|p| p.pid.is_some() && p.ready && !p.retired);
        if let Some(j) = serving {
            let _ = self.peers[j].conn.send(&Message::Resend, &[]);
            return;
        }
        if self.peers.iter().any(|p| p.pid.is_some() && !p.retired) {
            // A successor is starting; it has everything resent once it serves.
            return;
        }
        if !self.spawn {
            tracing::warn!("no serving process: requests wait until one connects");
            return;
        }
        let delay = match self.failures {
            0 => Duration::ZERO,
            n => Duration::from_millis(250u64 << n.min(7)).min(Duration::from_secs(30)),
        };
        self.spawn_at = Some(Instant::now() + delay);
    }

    fn start_command(&mut self) {
        let Some(command) = &self.command else { return };
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(SERVE_LOG));
        let (out, err) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
            Ok((a, b)) => (Stdio::from(a), Stdio::from(b)),
            Err(_) => (Stdio::null(), Stdio::null()),
        };
        use std::os::unix::process::CommandExt;
        let started = std::process::Command::new(&command.exe)
            .args(&command.args)
            .current_dir(&command.cwd)
            .env_clear()
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .env(SPAWNED_AT_ENV, self.hellos.to_string())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn();
        match started {
            Ok(child) => {
                tracing::info!(pid = child.id(), exe = %command.exe.display(), "started a serving process");
                self.children.push(child);
            }
            Err(e) => {
                tracing::error!(exe = %command.exe.display(), error = %e, "cannot start the serving process");
                self.refuse_upgrades(&format!("cannot start {}: {e}", command.exe.display()));
            }
        }
    }

    /// Reaps the processes we started; one that exited before serving fails the upgrade
    /// that started it.
    fn reap(&mut self) {
        let mut failed = None;
        self.children.retain_mut(|child| match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                if !status.success() {
                    failed = Some(format!(
                        "the new serving process (pid {}) exited with {status} (see {})",
                        child.id(),
                        SERVE_LOG
                    ));
                }
                false
            }
            Err(_) => false,
        });
        if let Some(why) = failed {
            self.refuse_upgrades(&why);
        }
    }

    fn refuse_upgrades(&mut self, why: &str) {
        for peer in &mut self.peers {
            if peer.waits_upgrade {
                let _ = peer.conn.send(&Message::Refused(why.to_string()), &[]);
                peer.waits_upgrade = false;
            }
        }
    }
}

fn terminate(pid: u32) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// Asks the holder of `dir` to start a successor of its serving process (the same command, so
/// the binary now at its path) and waits until it serves; returns its pid. The predecessor
/// retires once the successor serves: the mount answers throughout.
pub fn upgrade(dir: &Path) -> io::Result<u32> {
    let path = wire::socket_path(dir);
    let conn = wire::connect(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{}: no holder runs for this state directory: {e}", path.display()),
        )
    })?;
    conn.send(&Message::Upgrade, &[])?;
    match conn.receive()? {
        Some((Message::Upgraded { pid }, _)) => Ok(pid),
        Some((Message::Refused(why), _)) => Err(io::Error::other(why)),
        Some((other, _)) => Err(io::Error::other(format!("unexpected answer {other:?}"))),
        None => Err(io::Error::other("the holder closed the connection")),
    }
}
