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
//! A second key that may only read the bucket, as a node's credential:
//!
//! ```ignore
//! let ro = garage.read_only_key("node");                 // garage key create + bucket allow --read
//! Command::new(bin).envs(garage.env_for(&ro))...
//! ```
//!
//! Garage ignores conditional writes (`If-None-Match`, `If-Match`): a test that needs them
//! needs another store.
#![allow(dead_code)]

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::Command;

/// A running Garage (everything of [`addonfs::bench::garage::Garage`] through `Deref`).
pub struct Garage(addonfs::bench::garage::Garage);

/// An access key of the bucket other than the owner's (see [`Garage::read_only_key`]).
#[derive(Debug, Clone)]
pub struct Key {
    /// Its name in Garage.
    pub name: String,
    /// The access key id (`GK…`).
    pub access_key: String,
    /// The secret key.
    pub secret_key: String,
}

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

    /// A new key `name` allowed only to read the bucket (`garage key create`, then `bucket
    /// allow --read`): a node's credential.
    pub fn read_only_key(&self, name: &str) -> Key {
        let garage = || {
            let mut c = Command::new(self.0.program());
            c.arg("-c").arg(self.0.config_path());
            c
        };
        let created = super::run(garage().args(["key", "create", name]));
        let field = |label: &str| -> String {
            created
                .lines()
                .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no `{label}` in garage's answer:\n{created}"))
        };
        let key = Key {
            name: name.to_string(),
            access_key: field("Key ID:"),
            secret_key: field("Secret key:"),
        };
        super::run(garage().args(["bucket", "allow", "--read", &self.0.bucket, "--key", name]));
        key
    }

    /// [`addonfs::bench::garage::Garage::env`] with `key` instead of the owner's.
    pub fn env_for(&self, key: &Key) -> Vec<(String, String)> {
        self.0
            .env()
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "AWS_ACCESS_KEY_ID" => (k, key.access_key.clone()),
                "AWS_SECRET_ACCESS_KEY" => (k, key.secret_key.clone()),
                _ => (k, v),
            })
            .collect()
    }

    /// [`Garage::env_for`] as object_store configuration keys, for a store opened in process.
    pub fn options_for(&self, key: &Key) -> Vec<(String, String)> {
        self.env_for(key).into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect()
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
