//! The journal of requests in flight, for kernels without `FUSE_NOTIFY_RESEND` (before 6.9).
//!
//! When a serving process dies, the requests it had read but not answered stay in the kernel,
//! their callers waiting. Linux 6.9 can queue them again ([`super::Mounted::resend`]); older
//! kernels cannot, and only the `unique` of each lets a successor answer it. So each request
//! thread writes the `unique` of the request it handles into its own slot of
//! `STATE_DIR/inflight.PID` (8 bytes, `pwrite`, before the answer is computed) and clears it
//! after answering. A successor that cannot have them resent answers every `unique` left in
//! the journal of a dead process with `EIO`: the caller fails once, and nothing else does. An
//! answer to a request that was answered after all (a kill between answer and clear) is
//! refused by the kernel (`ENOENT`): uniques are never reused on a connection.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Slots of a journal (one per request thread; threads past this many are not journaled).
const SLOTS: usize = 64;
/// The journal file's name prefix in the state directory.
const PREFIX: &str = "inflight.";

struct Journal {
    dir: PathBuf,
    file: File,
    next_slot: AtomicUsize,
}

static JOURNAL: OnceLock<Journal> = OnceLock::new();

thread_local! {
    static SLOT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Starts this process's journal in `dir` (once; `serve` with a holder does it).
pub fn start(dir: &Path) -> io::Result<()> {
    let path = dir.join(format!("{PREFIX}{}", std::process::id()));
    let file = File::create(&path)?;
    file.set_len((SLOTS * 8) as u64)?;
    let _ = JOURNAL.set(Journal { dir: dir.to_path_buf(), file, next_slot: AtomicUsize::new(0) });
    Ok(())
}

/// Clears the thread's slot when dropped.
pub struct InFlight(Option<usize>);

/// Records that this thread handles request `unique` until the guard drops.
pub fn enter(unique: u64) -> InFlight {
    let Some(journal) = JOURNAL.get() else { return InFlight(None) };
    let slot = SLOT.with(|slot| {
        if slot.get().is_none() {
            let next = journal.next_slot.fetch_add(1, Ordering::Relaxed);
            slot.set((next < SLOTS).then_some(next));
        }
        slot.get()
    });
    if let Some(slot) = slot {
        let _ = journal.file.write_all_at(&unique.to_ne_bytes(), (slot * 8) as u64);
    }
    InFlight(slot)
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let (Some(slot), Some(journal)) = (self.0, JOURNAL.get()) {
            let _ = journal.file.write_all_at(&0u64.to_ne_bytes(), (slot * 8) as u64);
        }
    }
}

/// Answers with `EIO` every request left in the journals of dead processes, through `device`
/// (this connection's `/dev/fuse`), and removes those journals. Returns how many.
pub fn fail_orphans(device: &File) -> usize {
    let Some(journal) = JOURNAL.get() else { return 0 };
    let Ok(entries) = std::fs::read_dir(&journal.dir) else { return 0 };
    let mut failed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid == std::process::id() || alive(pid) {
            continue;
        }
        if let Ok(bytes) = std::fs::read(entry.path()) {
            for chunk in bytes.chunks_exact(8) {
                let unique = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
                if unique != 0 && reply_eio(device, unique).is_ok() {
                    failed += 1;
                }
            }
        }
        let _ = std::fs::remove_file(entry.path());
    }
    failed
}

/// Whether process `pid` runs (a zombie, killed but not yet reaped, does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name's closing parenthesis.
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        }
        Err(_) => false,
    }
}

/// `struct fuse_out_header { len: 16, error: -EIO, unique }`.
fn reply_eio(device: &File, unique: u64) -> io::Result<()> {
    let mut message = [0u8; 16];
    message[0..4].copy_from_slice(&16u32.to_ne_bytes());
    message[4..8].copy_from_slice(&(-libc::EIO).to_ne_bytes());
    message[8..16].copy_from_slice(&unique.to_ne_bytes());
    (&*device).write(&message).map(drop)
}
