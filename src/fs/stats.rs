//! Counters of the FUSE file system: requests by kind with their latency, and bytes served.
//! Plain atomics bumped on the request path; whoever reports them (the daemon's `/metrics`)
//! reads them, so this module knows nothing of any metrics format.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::push::PushStats;

/// The kinds of request counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `LOOKUP`.
    Lookup,
    /// `GETATTR`.
    Getattr,
    /// `READLINK`.
    Readlink,
    /// `OPEN` and `OPENDIR`.
    Open,
    /// `READ`.
    Read,
    /// `READDIR` and `READDIRPLUS`.
    Readdir,
    /// `STATFS`.
    Statfs,
    /// `GETXATTR` and `LISTXATTR`.
    Xattr,
    /// `ACCESS`.
    Access,
}

impl Op {
    /// Every kind, in [`Op::name`] order of the counters.
    pub const ALL: [Op; 9] = [
        Op::Lookup,
        Op::Getattr,
        Op::Readlink,
        Op::Open,
        Op::Read,
        Op::Readdir,
        Op::Statfs,
        Op::Xattr,
        Op::Access,
    ];

    /// The label: `lookup`, `read`, ...
    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Getattr => "getattr",
            Op::Readlink => "readlink",
            Op::Open => "open",
            Op::Read => "read",
            Op::Readdir => "readdir",
            Op::Statfs => "statfs",
            Op::Xattr => "xattr",
            Op::Access => "access",
        }
    }
}

/// Upper bounds of the latency buckets, in microseconds (a last, unbounded bucket follows).
pub const LATENCY_BOUNDS_US: [u64; 10] =
    [10, 50, 100, 250, 500, 1_000, 5_000, 10_000, 50_000, 250_000];

/// One kind's counters: requests, total latency, and requests per latency bucket.
#[derive(Debug, Default)]
pub struct OpCounters {
    /// Requests answered.
    pub count: AtomicU64,
    /// Their total latency in nanoseconds.
    pub nanos: AtomicU64,
    /// Requests per bucket of [`LATENCY_BOUNDS_US`] (not cumulative), the last unbounded.
    pub buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
}

/// The file system's counters.
#[derive(Debug, Default)]
pub struct FsStats {
    ops: [OpCounters; Op::ALL.len()],
    /// File bytes answered to `READ`s.
    pub bytes_served: AtomicU64,
    /// Page-cache pushes ahead of tree walkers (absent if the push thread did not start).
    pub push: Option<Arc<PushStats>>,
    /// Reads of archive content served (not the manifest's).
    archive_reads: AtomicU64,
    /// Archive reads being served right now, and the most at any moment: several request
    /// threads serve reads in parallel, and this shows they did (logged at unmount).
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl FsStats {
    /// Counters starting at zero, with the push thread's `push` counters.
    pub fn new(push: Option<Arc<PushStats>>) -> FsStats {
        FsStats { push, ..Default::default() }
    }

    /// The counters of `op`.
    pub fn op(&self, op: Op) -> &OpCounters {
        &self.ops[op as usize]
    }

    /// Reads of archive content served so far.
    pub fn archive_reads(&self) -> u64 {
        self.archive_reads.load(Ordering::Relaxed)
    }

    /// The most archive reads that were being served at the same moment.
    pub fn max_reads_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::Relaxed)
    }

    /// Counts an archive read from now until the returned guard drops.
    pub fn read_started(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight(self)
    }

    /// Starts timing a request of kind `op`; counted when the guard drops (after the reply).
    pub fn time(&self, op: Op) -> Timer<'_> {
        Timer { counters: self.op(op), start: Instant::now() }
    }
}

/// One archive read being served (see [`FsStats::read_started`]).
pub struct InFlight<'a>(&'a FsStats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.archive_reads.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts one request when dropped.
pub struct Timer<'a> {
    counters: &'a OpCounters,
    start: Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let micros = nanos / 1_000;
        let bucket =
            LATENCY_BOUNDS_US.iter().position(|&b| micros <= b).unwrap_or(LATENCY_BOUNDS_US.len());
        self.counters.count.fetch_add(1, Ordering::Relaxed);
        self.counters.nanos.fetch_add(nanos, Ordering::Relaxed);
        self.counters.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_counts_its_request_in_one_bucket() {
        let stats = FsStats::default();
        drop(stats.time(Op::Read));
        drop(stats.time(Op::Read));
        let read = stats.op(Op::Read);
        assert_eq!(read.count.load(Ordering::Relaxed), 2);
        let in_buckets: u64 = read.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum();
        assert_eq!(in_buckets, 2);
        assert_eq!(stats.op(Op::Lookup).count.load(Ordering::Relaxed), 0);
    }
}
