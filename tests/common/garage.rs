//! A real Garage S3 server for tests: [`addonfs::bench::garage::Garage`] (single node on
//! loopback, its own directories and ports, one bucket and one key, killed when dropped), with
//! the tests' rule for a missing `garage`: skipped, but a failure under `CI`.
//!
//! ```ignore
//! let Some(garage) = Garage::start() else { return };   // None = skipped (never under CI)
//! let url = garage.url("some/prefix");                   // s3://<bucket>/some/prefix
//! Command::new(bin).envs(garage.env())...                // AWS_* for a child process
//! let backend = addonfs::addon::backend::open_with(&url, &garage.options())?; // in process
//! garage.stop(); garage.resume();                        // gone, then back (same data)
//! ```
//!
//! Garage ignores conditional writes (`If-None-Match`, `If-Match`): a test that needs them
//! needs another store.
#![allow(dead_code)]

use std::ops::{Deref, DerefMut};
use std::path::Path;

/// A running Garage (everything of [`addonfs::bench::garage::Garage`] through `Deref`).
pub struct Garage(addonfs::bench::garage::Garage);

impl Garage {
    /// Starts Garage and waits until the bucket takes a write. `None` (with a skip line) when
    /// `garage` is not installed; under `CI` that panics instead.
    pub fn start() -> Option<Garage> {
        if !super::require("garage") {
            return None;
        }
        match addonfs::bench::garage::Garage::start(Path::new("garage"), None) {
            Ok(g) => Some(Garage(g)),
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts the server again after [`Garage::stop`], on the same directories and ports.
    pub fn resume(&mut self) {
        if let Err(e) = self.0.resume() {
            panic!("{e}");
        }
    }
}

impl Deref for Garage {
    type Target = addonfs::bench::garage::Garage;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Garage {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
