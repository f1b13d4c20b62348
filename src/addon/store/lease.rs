//! One writer per store: the lease `writer.json`.
//!
//! `{"owner": "<hostname>:<pid>:<random>", "url": "<API URL>", "heartbeat_ms": <unix ms>}`.
//! A starting writer reads it: another owner whose heartbeat is younger than [`LEASE`] (and,
//! on this host, whose process is alive) → refused, naming the owner and its URL. Otherwise it
//! writes its own, waits [`SETTLE`] and reads it back: still its own → it holds the lease (two
//! writers starting together: the later write wins, the other reads it back and is refused).
//! It refreshes the heartbeat every [`HEARTBEAT`], and before every catalog write it reads the
//! lease again (fencing): a writer that lost it refuses to write.
//!
//! No conditional write is needed for this, because Garage ignores `If-None-Match` and
//! `If-Match` (it overwrites): what holds on every store is the check-write-wait-read-back
//! above plus fencing; the window left is two writers whose read and write interleave within
//! [`SETTLE`], and then fencing stops the loser at its next catalog write. A local directory
//! store also takes the state directory's `flock` (same machine).

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::io::Io;
use super::objects;
use super::StoreError;
use crate::addon::backend::Backend;

/// The lease's key.
pub const WRITER_KEY: &str = "writer.json";
/// How long a heartbeat holds the lease.
pub const LEASE: Duration = Duration::from_secs(15);
/// How often the holder refreshes it.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a new writer waits before reading its lease back.
pub const SETTLE: Duration = Duration::from_millis(500);

/// The contents of `writer.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    /// `<hostname>:<pid>:<random>`.
    pub owner: String,
    /// The API URL of the writer (empty until it listens).
    #[serde(default)]
    pub url: String,
    /// Its last heartbeat, ms since the epoch.
    pub heartbeat_ms: u64,
}

impl std::fmt::Display for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`", self.owner)?;
        if !self.url.is_empty() {
            write!(f, " (API at {})", self.url)?;
        }
        Ok(())
    }
}

/// A held lease.
#[derive(Debug)]
pub struct Lease {
    owner: String,
    url: Mutex<String>,
    /// Taken over with the state directory's lock ([`Lease::take_over`]): an owner on this
    /// host is a twin sharing that lock (a predecessor not yet retired, or a process started
    /// at the same moment that the holder will retire), not another writer, so it fences
    /// nothing; the holder decides which of them serves.
    handed_over: bool,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// Whether the owner is a process of this host.
fn on_this_host(owner: &str) -> bool {
    owner.rsplitn(3, ':').nth(2) == Some(hostname().as_str())
}

/// Whether the owner is a process of this host that no longer runs (its lease is stale at
/// once: a writer killed with -9 and restarted on the same machine need not wait).
fn dead_here(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (_random, pid, host) = (parts.next(), parts.next(), parts.next());
    let Some(pid) = pid.and_then(|p| p.parse::<i32>().ok()) else { return false };
    if host != Some(hostname().as_str()) || pid == std::process::id() as i32 {
        return false;
    }
    rustix::process::Pid::from_raw(pid)
        .is_some_and(|p| rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH))
}

async fn read(backend: &Backend) -> Result<Option<Writer>, StoreError> {
    let Some(bytes) = objects::get(backend, WRITER_KEY).await? else { return Ok(None) };
    match serde_json::from_slice(&bytes) {
        Ok(w) => Ok(Some(w)),
        Err(e) => {
            // A damaged lease cannot name its owner: it is stale.
            tracing::warn!(error = %e, "{WRITER_KEY} is not a lease; taking it over");
            Ok(None)
        }
    }
}

impl Lease {
    /// Takes the lease of `backend` or says who holds it.
    pub(crate) fn acquire(io: &Io, backend: &Backend) -> Result<Lease, StoreError> {
        Self::take(io, backend, false)
    }

    /// Takes the lease over from a predecessor on this host that handed this process the
    /// state directory's lock (a restart through the holder, [`crate::holder`]): the shared
    /// `flock` already proves that the predecessor is superseded (it may live on for a moment
    /// during an upgrade, until the holder retires it), so its lease is no refusal, and there
    /// is no race to settle. A live owner on another host still refuses, and still fences.
    pub(crate) fn take_over(io: &Io, backend: &Backend) -> Result<Lease, StoreError> {
        Self::take(io, backend, true)
    }

    fn take(io: &Io, backend: &Backend, handed_over: bool) -> Result<Lease, StoreError> {
        let owner = format!(
            "{}:{}:{:08x}",
            hostname(),
            std::process::id(),
            crate::addon::catalog::random_u64() as u32
        );
        let lease = Lease { owner, url: Mutex::new(String::new()), handed_over };
        io.block(async {
            if let Some(other) = read(backend).await? {
                let age = now_ms().saturating_sub(other.heartbeat_ms);
                let superseded = handed_over && on_this_host(&other.owner);
                if other.owner != lease.owner
                    && age < LEASE.as_millis() as u64
                    && !superseded
                    && !dead_here(&other.owner)
                {
                    return Err(StoreError::WriterHeld {
                        store: backend.url().to_string(),
                        other,
                        age: Duration::from_millis(age),
                    });
                }
            }
            lease.write(backend).await?;
            if !handed_over {
                tokio::time::sleep(SETTLE).await;
            }
            lease.check_async(backend).await
        })?;
        Ok(lease)
    }

    /// This writer's owner string.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn current(&self) -> Writer {
        Writer {
            owner: self.owner.clone(),
            url: self.url.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            heartbeat_ms: now_ms(),
        }
    }

    async fn write(&self, backend: &Backend) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(&self.current()).unwrap_or_default();
        objects::put(backend, WRITER_KEY, bytes).await
    }

    async fn check_async(&self, backend: &Backend) -> Result<(), StoreError> {
        match read(backend).await? {
            Some(w) if w.owner == self.owner => Ok(()),
            Some(w) if self.handed_over && on_this_host(&w.owner) => Ok(()),
            other => Err(StoreError::Fenced {
                store: backend.url().to_string(),
                other: other.map_or_else(
                    || "nobody (the lease was removed)".to_string(),
                    |w| w.to_string(),
                ),
            }),
        }
    }

    /// Fencing: refuses unless the lease is still this writer's.
    pub(crate) fn check(&self, io: &Io, backend: &Backend) -> Result<(), StoreError> {
        io.block(self.check_async(backend))
    }

    /// Records the API's URL in the lease.
    pub(crate) fn set_url(&self, io: &Io, backend: &Backend, url: &str) -> Result<(), StoreError> {
        *self.url.lock().unwrap_or_else(|e| e.into_inner()) = url.to_string();
        self.heartbeat(io, backend)
    }

    /// Refreshes the heartbeat, if the lease is still this writer's.
    pub(crate) fn heartbeat(&self, io: &Io, backend: &Backend) -> Result<(), StoreError> {
        io.block(async {
            self.check_async(backend).await?;
            self.write(backend).await
        })
    }

    /// Gives the lease up (if still held), so that the next writer need not wait.
    pub(crate) fn release(&self, io: &Io, backend: &Backend) {
        let released = io.block(async {
            self.check_async(backend).await?;
            objects::delete(backend, WRITER_KEY).await
        });
        if let Err(e) = released {
            tracing::debug!(error = %e, "the writer lease was not released");
        }
    }
}
