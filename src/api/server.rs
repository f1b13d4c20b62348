//! Serving connections: an accept loop with a cap on open connections, hyper's HTTP/1 with a
//! timeout on reading a request head, and the process's open-files limit raised to its
//! maximum.
//!
//! Without these, anyone who can reach the port takes the API down without a key: connections
//! that send half a header, or nothing, stay open forever, until the open-files limit is
//! reached and every `accept` fails with `EMFILE`.
//!
//! * A connection gets [`ApiLimits::header_timeout`] to send a complete request head, counted
//!   from when it was accepted or its previous response was sent: so this is also the idle
//!   (keep-alive) timeout. hyper closes the connection when it expires.
//! * At most [`ApiLimits::max_connections`] connections are open at once. The loop does not
//!   `accept` while at the cap: further connections wait in the kernel's listen backlog (and,
//!   once that is full, the kernel drops new SYNs so clients retry) until a slot frees. Slots
//!   free as the timeouts close idle connections, so held-open sockets cannot starve others
//!   for longer than the timeouts.
//! * A body that stalls is the handlers' business ([`ApiLimits::body_timeout`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{watch, Semaphore};

use super::ApiLimits;

/// Connections kept free of the open-files limit for everything else the daemon opens (the
/// store, the FUSE mount, each upload's staging and window files, the add-ons' archives).
pub const RESERVED_FILES: u64 = 128;

/// How long the loop waits after a failed `accept` (out of files, say) before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Raises the soft open-files limit (`RLIMIT_NOFILE`) to the hard limit; returns the soft
/// limit in force afterwards (the old one if it could not be raised). Call it at process start.
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit.clone()) {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The connection cap that fits `open_files` (the soft open-files limit): `wanted`, lowered
/// so that [`RESERVED_FILES`] stay free, and at least 1.
pub fn connection_cap(wanted: usize, open_files: u64) -> usize {
    let room = usize::try_from(open_files.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
    wanted.min(room).max(1)
}

/// Serves `router` on `listener` until `shutdown` completes, then lets open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: &ApiLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
        // A free slot first: at the cap, connections wait in the kernel's backlog.
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            let stopping = async {
                // Ends when shutdown starts (or the sender is gone).
                let _ = stop.wait_for(|&s| s).await;
            };
            tokio::select! {
                result = conn.as_mut() => log_conn_end(result),
                () = stopping => {
                    conn.as_mut().graceful_shutdown();
                    log_conn_end(conn.await);
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends: having them all back means all ended.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

fn log_conn_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        // Timeouts, resets and malformed requests: routine on an open port.
        tracing::debug!(error = %e, "connection ended");
    }
}
