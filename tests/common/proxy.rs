//! A TCP proxy on loopback between a node and its store, to make the store slow, cut or gone
//! while a test runs: [`addonfs::bench::proxy::Proxy`] (the benchmark uses the same one; its
//! own tests are in that module).
//!
//! ```ignore
//! let proxy = Proxy::start(garage.s3_addr()).unwrap();
//! proxy.set_latency(Duration::from_millis(20));  // every request, one more round trip
//! proxy.cut_after(100_000, Some(1));              // the next long answer cut mid-body
//! proxy.set_hang(true);                           // nothing forwarded: only timeouts notice
//! proxy.stop(); proxy.start_again().unwrap();     // refused, then back on the same port
//! ```
#![allow(dead_code, unused_imports)]

pub use addonfs::bench::proxy::{Counts, Proxy};
