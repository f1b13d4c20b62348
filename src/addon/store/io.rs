//! The store's bridge from its blocking callers (the API's blocking tasks, the admin commands,
//! the mount's follower) to the asynchronous object store: a small runtime of its own.

use std::future::Future;

/// A runtime for the store's object-store calls.
#[derive(Debug)]
pub(crate) struct Io {
    rt: Option<tokio::runtime::Runtime>,
}

impl Io {
    pub(crate) fn new() -> std::io::Result<Io> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("addonfs-store")
            .enable_all()
            .build()?;
        Ok(Io { rt: Some(rt) })
    }

    /// Runs `f` to completion and returns its output. From inside another runtime (where
    /// blocking on one is forbidden) it runs on a scoped thread of its own.
    pub(crate) fn block<F>(&self, f: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        let rt = self.rt.as_ref().expect("the runtime lives as long as the store");
        if tokio::runtime::Handle::try_current().is_err() {
            return rt.block_on(f);
        }
        std::thread::scope(|s| match s.spawn(|| rt.block_on(f)).join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        // Not `drop`: dropping a runtime from inside another one (the API's, at shutdown)
        // panics; this does not wait.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
