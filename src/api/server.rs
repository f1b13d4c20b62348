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
//! * A request hyper cannot parse (a garbage request line, a head over its buffer) is answered
//!   by hyper itself, with a status and an empty body, before any route runs; [`EnvelopeIo`]
//!   gives that answer the JSON error envelope every other error has.
//! * With TLS ([`super::tls`]), the handshake also has [`ApiLimits::header_timeout`] to
//!   complete (a client that opens a connection and stalls mid-handshake, or sends garbage,
//!   holds its slot no longer than one that stalls mid-head), and a plain-HTTP request sent to
//!   the TLS port gets a plain `400` saying to use `https://` instead of a TLS alert. Every
//!   request carries a [`Transport`] extension saying whether it came over TLS.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};

use super::tls::ServerTls;
use super::ApiLimits;

/// How a request reached the server (a request extension): the admin UI marks its cookie
/// `Secure` when it came over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transport {
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

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
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
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

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown` completes, then lets
/// open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: &ApiLimits,
    tls: Option<Arc<ServerTls>>,
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
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // A changed certificate is picked up here, before the handshake that would use it.
        let acceptor = tls.as_ref().map(|tls| {
            tls.check_files();
            tls.acceptor()
        });
        // The peer's address for the routes that want it (the UI limits wrong keys per client).
        let service = TowerToHyperService::new(
            router
                .clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(peer)))
                .layer(axum::Extension(Transport { tls: acceptor.is_some() })),
        );
        let http = http.clone();
        let handshake_timeout = limits.header_timeout;
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let io: Box<dyn Stream> = match acceptor {
                None => Box::new(stream),
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, handshake(acceptor, stream)).await
                    {
                        Ok(Ok(tls)) => Box::new(tls),
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %peer, "TLS handshake failed");
                            drop(permit);
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            drop(permit);
                            return;
                        }
                    }
                }
            };
            let conn = http.serve_connection(TokioIo::new(EnvelopeIo::new(io)), service);
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

/// A connection's byte stream: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The server side of a TLS handshake on `stream`. A connection whose first byte is not a TLS
/// handshake record is most likely plain HTTP sent to the TLS port: it gets a plain-HTTP `400`
/// that says so (what a person running `curl http://...` needs), not a TLS alert.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    mut stream: TcpStream,
) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        // What the client sent is read before answering, and after the answer until it closes
        // (bounded by the caller's timeout): closing with unread bytes would reset the
        // connection and lose the answer.
        let mut sink = vec![0u8; 8192];
        let _ = stream.read(&mut sink).await?;
        let answer = envelope_answer(
            "400 Bad Request",
            "this port speaks HTTPS (TLS): use an https:// URL; plain HTTP is refused here",
        );
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        while stream.read(&mut sink).await? > 0 {}
        return Err(std::io::Error::other("a plain-HTTP request on the TLS port (answered 400)"));
    }
    acceptor.accept(stream).await
}

fn log_conn_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        // Timeouts, resets and malformed requests: routine on an open port.
        tracing::debug!(error = %e, "connection ended");
    }
}

/// A connection's socket as hyper sees it: everything passes through, except hyper's own
/// answer to a request it could not parse (`400`, `414` or `431` with `content-length: 0`, which
/// no route ever sends: every error of a route is the envelope), which is replaced by the same
/// status with the JSON error envelope. hyper writes that answer in one piece from its buffer
/// (writes are not vectored here, so it flattens), then closes the connection.
struct EnvelopeIo {
    inner: Box<dyn Stream>,
    /// A replacement answer still to be written, and how much of it was.
    pending: Vec<u8>,
    written: usize,
}

impl EnvelopeIo {
    fn new(inner: Box<dyn Stream>) -> Self {
        EnvelopeIo { inner, pending: Vec::new(), written: 0 }
    }

    /// Writes what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }
}

/// The envelope answer for hyper's own answer `head` to an unparsable request, if it is one.
fn parser_answer(head: &[u8]) -> Option<Vec<u8>> {
    let (status, message) = if head.starts_with(b"HTTP/1.1 400 ") {
        ("400 Bad Request", "the request could not be parsed: a malformed request line or header")
    } else if head.starts_with(b"HTTP/1.1 431 ") {
        (
            "431 Request Header Fields Too Large",
            "the request head is larger than the server accepts",
        )
    } else if head.starts_with(b"HTTP/1.1 414 ") {
        ("414 URI Too Long", "the request target is longer than the server accepts")
    } else {
        return None;
    };
    let text = std::str::from_utf8(head).ok()?.to_ascii_lowercase();
    if !text.ends_with("\r\n\r\n") || !text.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    Some(envelope_answer(status, message))
}

/// A whole `HTTP/1.1` answer with `status` and the JSON error envelope of `message` (an
/// invalid argument), that closes the connection.
fn envelope_answer(status: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "error": message,
        "code": super::Code::InvalidArgument.number(),
        "message": message,
        "details": [],
    })
    .to_string();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl AsyncRead for EnvelopeIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for EnvelopeIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(answer) = parser_answer(buf) {
            self.pending = answer;
            self.written = 0;
            // The rest is written by the next write, flush or shutdown.
            if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
