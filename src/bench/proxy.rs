//! A TCP proxy on loopback that makes a store slow, cut or gone, controlled while it runs:
//! the benchmark puts it between a node and Garage to add latency per request, and the fault
//! tests (`tests/lazy_faults.rs`) use it to cut responses mid-body, hang, or refuse connections.
//!
//! `toxiproxy` would do the same, but no registry we reach ships its server (only clients on
//! PyPI and npm), so this is the small one the tests need, on tokio (already a dependency).
//!
//! It sees bytes, not HTTP, and works out requests from the traffic's direction: a chunk from
//! the client after the server has answered (or the first on a connection) starts a request.
//! That holds for HTTP/1.1 keep-alive without pipelining, which is what object_store sends.
//!
//! * **Latency**: every chunk from the client is delivered `latency` after it arrived (in
//!   order, without slowing a stream: chunks are timestamped, not queued behind a sleep), so
//!   each request waits `latency` more, as one more round trip of a far store would. A new
//!   connection's upstream connect waits `latency` too (a TCP handshake is a round trip).
//! * **Bandwidth**: answers to the client are paced to at most that many bytes a second, per
//!   connection.
//! * **Cut**: an answer that goes past `after` bytes is cut there: exactly `after` bytes reach
//!   the client, then both sides are closed (a store dying mid-body). Armed for a number of
//!   cuts or for ever.
//! * **Hang**: nothing is forwarded (connections stay open, new ones are accepted): a store that
//!   stopped answering without closing anything, which only a timeout notices.
//! * **Stall**: the answers to the next `n` requests are held back for as long as their
//!   connections stay open, while other requests flow: one slow answer in a healthy store
//!   (the tail a client hedges against).
//! * **Stop / start**: the listener closes (connections are refused) and every open connection
//!   is closed; `start` listens on the same port again.
//!
//! Counters (connections, requests, bytes each way, cuts) are an outside view of what a client
//! asked for, to check the client's own metrics against.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// Size of one read from either side.
const CHUNK: usize = 64 << 10;
/// How often a hung forwarder looks whether it may go on.
const HANG_POLL: Duration = Duration::from_millis(5);

/// The faults applied to new traffic (each change applies from the next chunk on).
#[derive(Debug, Clone, Default)]
struct Faults {
    latency: Duration,
    bandwidth: Option<u64>,
    cut_after: Option<u64>,
    /// Cuts left before the cut disarms; `None`: every answer longer than `cut_after`.
    cuts_left: Option<u64>,
    /// Requests whose answers are still to be stalled.
    stalls_left: u64,
    /// Only requests whose first chunk holds these bytes (ASCII case ignored) are stalled.
    stall_matching: Vec<u8>,
}

/// What the proxy counted since it started (or since [`Proxy::reset_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connections accepted.
    pub connections: u64,
    /// Requests seen (see the module's note on how they are told apart).
    pub requests: u64,
    /// Bytes from the client to the upstream.
    pub bytes_up: u64,
    /// Bytes from the upstream to the client.
    pub bytes_down: u64,
    /// Answers cut mid-way.
    pub cuts: u64,
    /// Answers stalled.
    pub stalls: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    cuts: AtomicU64,
    stalls: AtomicU64,
}

struct Shared {
    upstream: SocketAddr,
    faults: Mutex<Faults>,
    hang: AtomicBool,
    counters: Counters,
    /// Bumped by [`Proxy::stop`]: every connection of an older generation closes.
    generation: watch::Sender<u64>,
}

impl Shared {
    fn faults(&self) -> Faults {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether an answer that has sent `sent` bytes may send `n` more; `Some(k)`: only `k`,
    /// then cut (the cut is counted and, if limited, used up).
    fn cut_point(&self, sent: u64, n: u64) -> Option<u64> {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let after = faults.cut_after?;
        if sent + n <= after {
            return None;
        }
        match faults.cuts_left {
            Some(0) => return None,
            Some(ref mut left) => *left -= 1,
            None => {}
        }
        if faults.cuts_left == Some(0) {
            faults.cut_after = None;
            faults.cuts_left = None;
        }
        self.counters.cuts.fetch_add(1, Ordering::Relaxed);
        Some(after.saturating_sub(sent))
    }

    /// Whether the request starting now with `first` is to be stalled (using up one stall).
    fn take_stall(&self, first: &[u8]) -> bool {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let needle = &faults.stall_matching;
        let matches = needle.is_empty()
            || first.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle));
        if faults.stalls_left == 0 || !matches {
            return false;
        }
        faults.stalls_left -= 1;
        self.counters.stalls.fetch_add(1, Ordering::Relaxed);
        true
    }

    async fn wait_while_hung(&self) {
        while self.hang.load(Ordering::Relaxed) {
            tokio::time::sleep(HANG_POLL).await;
        }
    }
}

/// A running proxy: listens on `127.0.0.1:PORT` and forwards to one upstream address.
/// Dropping it stops it (its own runtime, its own threads).
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish()
    }
}

impl Proxy {
    /// Starts a proxy to `upstream` on a free loopback port, with no fault.
    pub fn start(upstream: SocketAddr) -> io::Result<Proxy> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("addonfs-proxy")
            .enable_all()
            .build()?;
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            faults: Mutex::new(Faults::default()),
            hang: AtomicBool::new(false),
            counters: Counters::default(),
            generation: watch::channel(0).0,
        });
        let accept = rt.spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Proxy { addr, shared, rt: Some(rt), accept: Mutex::new(Some(accept)) })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: an endpoint URL through the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds `latency` to every request (and to every new connection's connect).
    pub fn set_latency(&self, latency: Duration) {
        self.update(|f| f.latency = latency);
    }

    /// Paces answers to `bytes_per_second` per connection (`None`: as fast as they come).
    pub fn set_bandwidth(&self, bytes_per_second: Option<u64>) {
        self.update(|f| f.bandwidth = bytes_per_second.filter(|b| *b > 0));
    }

    /// Cuts answers longer than `after` bytes (headers included) after exactly `after` bytes,
    /// closing the connection: the next `times` such answers, or all of them (`None`).
    pub fn cut_after(&self, after: u64, times: Option<u64>) {
        self.update(|f| {
            f.cut_after = Some(after);
            f.cuts_left = times;
        });
    }

    /// Disarms the cut.
    pub fn no_cut(&self) {
        self.update(|f| {
            f.cut_after = None;
            f.cuts_left = None;
        });
    }

    /// Holds back the answers to the next `n` requests whose first chunk holds `matching`
    /// (ASCII case ignored; empty: any request) for as long as their connections stay open;
    /// other requests are answered meanwhile. (A test picks range reads with `b"range:"`, so
    /// a node's catalog poll landing in between is not the one stalled.)
    pub fn stall_next(&self, n: u64, matching: &[u8]) {
        self.update(|f| {
            f.stalls_left = n;
            f.stall_matching = matching.to_vec();
        });
    }

    /// Stops forwarding anything (`true`) or lets it flow again (`false`).
    pub fn set_hang(&self, hang: bool) {
        self.shared.hang.store(hang, Ordering::Relaxed);
    }

    /// Closes the listener (new connections are refused) and every open connection.
    pub fn stop(&self) {
        if let Some(task) = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
            // The listener is dropped with the task; wait until it is, so a connect right after
            // `stop` is refused. (Polled, not awaited: `stop` may be called on a runtime.)
            while !task.is_finished() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Listens again on the same port after [`Proxy::stop`] (a no-op while it listens).
    pub fn start_again(&self) -> io::Result<()> {
        let mut accept = self.accept.lock().unwrap_or_else(|e| e.into_inner());
        if accept.is_some() {
            return Ok(());
        }
        let rt = self.rt.as_ref().ok_or_else(|| io::Error::other("the proxy is shut down"))?;
        let addr = self.addr;
        let listener = rt.block_on(TcpListener::bind(addr))?;
        *accept = Some(rt.spawn(accept_loop(listener, Arc::clone(&self.shared))));
        Ok(())
    }

    /// What was counted so far.
    pub fn counts(&self) -> Counts {
        let c = &self.shared.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            connections: load(&c.connections),
            requests: load(&c.requests),
            bytes_up: load(&c.bytes_up),
            bytes_down: load(&c.bytes_down),
            cuts: load(&c.cuts),
            stalls: load(&c.stalls),
        }
    }

    /// Sets every counter back to zero.
    pub fn reset_counts(&self) {
        let c = &self.shared.counters;
        for a in [&c.connections, &c.requests, &c.bytes_up, &c.bytes_down, &c.cuts, &c.stalls] {
            a.store(0, Ordering::Relaxed);
        }
    }

    fn update(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors, say: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(client, Arc::clone(&shared)));
    }
}

/// One client connection: connects upstream, then forwards both ways until either side
/// closes, a cut, or a [`Proxy::stop`].
async fn connection(client: TcpStream, shared: Arc<Shared>) {
    let mut generation = shared.generation.subscribe();
    let born = *generation.borrow_and_update();
    let work = async {
        let latency = shared.faults().latency;
        tokio::time::sleep(latency).await;
        shared.wait_while_hung().await;
        let Ok(upstream) = TcpStream::connect(shared.upstream).await else { return };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (upstream_read, upstream_write) = upstream.into_split();
        // Bytes of the answer in progress: a request resets it; the cut counts against it.
        let answered = Arc::new(AtomicU64::new(0));
        // Set when the request in progress is stalled: its connection answers nothing more.
        let stalled = AtomicBool::new(false);
        let up = forward_up(client_read, upstream_write, &shared, &answered, &stalled);
        let down = forward_down(upstream_read, client_write, &shared, &answered, &stalled);
        // Either direction ending ends the connection (a cut must close the client's side
        // even while it still sends).
        tokio::select! {
            () = up => {}
            () = down => {}
        }
    };
    tokio::select! {
        () = work => {}
        _ = generation.wait_for(|g| *g != born) => {}
    }
}

/// Client → upstream: each chunk is timestamped on arrival and written `latency` later.
async fn forward_up(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
    answered: &AtomicU64,
    stalled: &AtomicBool,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut first = true;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // A request starts with the first chunk, or with one after the upstream answered.
            if first || answered.swap(0, Ordering::Relaxed) > 0 {
                shared.counters.requests.fetch_add(1, Ordering::Relaxed);
                if shared.take_stall(&buf[..n]) {
                    stalled.store(true, Ordering::Relaxed);
                }
            }
            first = false;
            let due = Instant::now() + shared.faults().latency;
            if tx.send((due, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            shared.wait_while_hung().await;
            // Counted before it is written, so a peer that saw the bytes sees them counted.
            shared.counters.bytes_up.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// Upstream → client: paced to the bandwidth, cut where armed.
async fn forward_down(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
    answered: &AtomicU64,
    stalled: &AtomicBool,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        shared.wait_while_hung().await;
        if stalled.load(Ordering::Relaxed) {
            // Held until the client gives up on the connection (which ends this task).
            std::future::pending::<()>().await;
        }
        let sent = answered.load(Ordering::Relaxed);
        let cut = shared.cut_point(sent, n as u64);
        let take = cut.map_or(n, |k| k.min(n as u64) as usize);
        let bandwidth = shared.faults().bandwidth;
        let started = Instant::now();
        shared.counters.bytes_down.fetch_add(take as u64, Ordering::Relaxed);
        answered.fetch_add(take as u64, Ordering::Relaxed);
        if to.write_all(&buf[..take]).await.is_err() {
            return;
        }
        if cut.is_some() {
            // Exactly `after` bytes went out: close (the caller drops both halves).
            let _ = to.flush().await;
            return;
        }
        if let Some(bps) = bandwidth {
            let due = started + Duration::from_secs_f64(take as f64 / bps as f64);
            tokio::time::sleep_until(due).await;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;

    /// A toy upstream: for each line `N\n` it answers N bytes (a pattern from the request's
    /// number), so answers of any size can be asked for on one connection.
    fn upstream() -> (SocketAddr, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut line = Vec::new();
                    let mut byte = [0u8; 1];
                    let mut served = 0u8;
                    while stream.read_exact(&mut byte).is_ok() {
                        if byte[0] != b'\n' {
                            line.push(byte[0]);
                            continue;
                        }
                        let text = String::from_utf8_lossy(&line).to_string();
                        line.clear();
                        if text == "quit" {
                            return;
                        }
                        let n: usize = text.parse().unwrap();
                        served = served.wrapping_add(1);
                        if stream.write_all(&pattern(served, n)).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, handle)
    }

    fn pattern(seed: u8, n: usize) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// Asks for `n` bytes on `s` and reads what comes (until `n` or EOF).
    fn ask(s: &mut StdStream, n: usize) -> Vec<u8> {
        s.write_all(format!("{n}\n").as_bytes()).unwrap();
        let mut got = vec![0u8; n];
        let mut done = 0;
        while done < n {
            match s.read(&mut got[done..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => done += k,
            }
        }
        got.truncate(done);
        got
    }

    fn connect(proxy: &Proxy) -> StdStream {
        let s = StdStream::connect(proxy.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    #[test]
    fn forwards_exactly_and_counts_requests_and_bytes() {
        let (up, _h) = upstream();
        let proxy = Proxy::start(up).unwrap();
        let mut s = connect(&proxy);
        for (i, n) in [1usize, 100, 5 << 20, 7].into_iter().enumerate() {
            assert_eq!(ask(&mut s, n), pattern(i as u8 + 1, n), "answer {i} of {n} bytes");
        }
        let counts = proxy.counts();
        assert_eq!(counts.connections, 1);
        assert_eq!(counts.requests, 4);
        assert_eq!(counts.bytes_down, 1 + 100 + (5 << 20) + 7);
        assert_eq!(counts.bytes_up, "1\n100\n5242880\n7\n".len() as u64);
        assert_eq!(counts.cuts, 0);
    }

    #[test]
    fn latency_is_added_to_every_request() {
        let (up, _h) = upstream();
        let proxy = Proxy::start(up).unwrap();
        let mut s = connect(&proxy);
        ask(&mut s, 10);
        proxy.set_latency(Duration::from_millis(150));
        for _ in 0..3 {
            let start = std::time::Instant::now();
            assert_eq!(ask(&mut s, 10).len(), 10);
            assert!(start.elapsed() >= Duration::from_millis(150), "{:?}", start.elapsed());
        }
        // A new connection pays it on connect too, then once more for its request.
        let start = std::time::Instant::now();
        let mut s2 = connect(&proxy);
        assert_eq!(ask(&mut s2, 10).len(), 10);
        assert!(start.elapsed() >= Duration::from_millis(300), "{:?}", start.elapsed());
    }

    #[test]
    fn bandwidth_paces_answers() {
        let (up, _h) = upstream();
        let proxy = Proxy::start(up).unwrap();
        proxy.set_bandwidth(Some(4 << 20));
        let mut s = connect(&proxy);
        let start = std::time::Instant::now();
        assert_eq!(ask(&mut s, 2 << 20), pattern(1, 2 << 20));
        // 2 MiB at 4 MiB/s: at least the last chunk's pacing short of 0.5 s.
        assert!(start.elapsed() >= Duration::from_millis(450), "{:?}", start.elapsed());
    }

    #[test]
    fn a_cut_delivers_exactly_the_bytes_before_it_then_closes() {
        let (up, _h) = upstream();
        let proxy = Proxy::start(up).unwrap();
        proxy.cut_after(100_000, Some(1));
        let mut s = connect(&proxy);
        // Short answers pass.
        assert_eq!(ask(&mut s, 500), pattern(1, 500));
        let got = ask(&mut s, 1 << 20);
        assert_eq!(got.len(), 100_000);
        assert_eq!(got, pattern(2, 1 << 20)[..100_000]);
        let mut more = [0u8; 1];
        assert!(matches!(s.read(&mut more), Ok(0) | Err(_)), "the connection is closed");
        assert_eq!(proxy.counts().cuts, 1);
        // The cut was for once: a new connection gets whole answers.
        let mut s = connect(&proxy);
        assert_eq!(ask(&mut s, 1 << 20), pattern(1, 1 << 20));
        assert_eq!(proxy.counts().cuts, 1);
    }

    #[test]
    fn a_hung_proxy_forwards_nothing_until_released() {
        let (up, _h) = upstream();
        let proxy = Proxy::start(up).unwrap();
        let mut s = connect(&proxy);
        assert_eq!(ask(&mut s, 10).len(), 10);
        proxy.set_hang(true);
        s.write_all(b"10\n").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut buf = [0u8; 10];
        let err = s.read(&mut buf).unwrap_err();
        assert!(matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut));
        proxy.set_hang(false);
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf.to_vec(), pattern(2, 10));
    }

    #[test]
    fn a_stalled_answer_is_held_while_other_requests_are_answered() {
        let (up, _h) = upstream();
        let proxy = Proxy::start(up).unwrap();
        // Only a request holding "7" is stalled: the first one below passes.
        proxy.stall_next(1, b"7");
        let mut first = connect(&proxy);
        assert_eq!(ask(&mut first, 10), pattern(1, 10));
        let mut stalled = connect(&proxy);
        stalled.write_all(b"17\n").unwrap();
        let start = std::time::Instant::now();
        while proxy.counts().stalls == 0 {
            assert!(start.elapsed() < Duration::from_secs(20), "the request never arrived");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Another connection's request, sent after the stalled one, is answered.
        let mut other = connect(&proxy);
        assert_eq!(ask(&mut other, 1000), pattern(1, 1000));
        assert_eq!(ask(&mut other, 17), pattern(2, 17), "the stall was used up");
        stalled.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut buf = [0u8; 10];
        let err = stalled.read(&mut buf).unwrap_err();
        assert!(matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut));
        let counts = proxy.counts();
        assert_eq!((counts.stalls, counts.requests), (1, 4), "{counts:?}");
    }

    #[test]
    fn stopped_refuses_and_closes_then_starts_again_on_the_same_port() {
        let (up, _h) = upstream();
        let proxy = Proxy::start(up).unwrap();
        let mut s = connect(&proxy);
        assert_eq!(ask(&mut s, 10).len(), 10);
        proxy.stop();
        let err = StdStream::connect(proxy.addr()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        // The open connection was closed.
        assert!(ask(&mut s, 10).is_empty());
        proxy.start_again().unwrap();
        let mut s = connect(&proxy);
        assert_eq!(ask(&mut s, 10), pattern(1, 10));
    }
}
