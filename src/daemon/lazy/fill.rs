//! The background fill: once reads have left the store alone for `--prefetch-after`, a
//! thread fetches the missing chunks of every add-on opened lazily, one minimum-size request
//! at a time, paced to `--prefetch-rate`, so a node stops depending on the store. Reads jump
//! the queue: the fill waits while any read fetches (at most its one request in flight is
//! ahead of them). It never evicts to make room: it fills only free space, so it cannot push
//! out what reads use.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::ranges::ABSENT;
use super::{Lazy, LazyFile};

/// How often the fill looks whether it may work.
const TICK: Duration = Duration::from_millis(200);

/// Starts the fill thread of `lazy`; it ends when `stop` is set or `lazy` is gone.
pub fn start(lazy: Weak<Lazy>, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new().name("addonfs-fill".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(TICK);
            let Some(lazy) = lazy.upgrade() else { return };
            let config = *lazy.config();
            let activity = lazy.activity();
            if activity.fetching.load(Ordering::Relaxed) > 0
                || activity.quiet_for() < config.prefetch_after
            {
                continue;
            }
            let Some((file, c)) = next_missing(&lazy) else { continue };
            if lazy.cache().free() < file.file().chunks()[c].len {
                continue;
            }
            let started = Instant::now();
            let deadline = started + config.store_timeout;
            match file.prefetch(c, deadline) {
                Ok(bytes) => {
                    lazy.stats().prefetch_bytes.fetch_add(bytes, Ordering::Relaxed);
                    // Paced: `bytes` at `rate` take this long.
                    let pace =
                        Duration::from_secs_f64(bytes as f64 / config.prefetch_rate.max(1) as f64);
                    let spent = started.elapsed();
                    drop(lazy);
                    if pace > spent {
                        std::thread::sleep(pace - spent);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "background fill: will try again");
                    drop(lazy);
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the background fill");
    }
}

/// The first missing chunk of the add-ons opened: the archive's, then the windows'.
fn next_missing(lazy: &Lazy) -> Option<(Arc<LazyFile>, usize)> {
    for addon in lazy.opened().iter().filter_map(Weak::upgrade) {
        for file in [&addon.archive, &addon.windows] {
            let f = file.file();
            if let Some(c) = (0..f.chunks().len()).find(|&c| f.state(c) == ABSENT) {
                return Some((Arc::clone(file), c));
            }
        }
    }
    None
}
