//! addonfs: serve custom runtime add-on tarballs read-only, without extracting them.
//!
//! Data flows one way:
//! `tarball → archive scan → index (entries + seek points, persisted) → reader (random access +
//! chunk cache) → fs (FUSE) → mount → attach`.
//!
//! * [`archive`] detects the archive format and walks the tar headers once, while the bytes stream
//!   through ([`gzip`] inflates them and records seek points on the way).
//! * [`index`] turns the scanned entries into an immutable tree, persists it, and loads it back.
//! * [`reader`] serves random reads of any entry, with a shared, byte-bounded chunk cache.
//! * [`source`] is where the reader's bytes come from ([`source::ReadAt`]: a local file by
//!   `pread`, or a node's lazily fetched ranges).
//! * [`fs`] serves them as a read-only FUSE file system; [`mount`] runs its lifecycle.
//! * [`bench`] holds the benchmark harnesses (`addonfs bench startup`).
//! * [`api`] is the HTTP API; [`ui`] the admin web UI served beside it.
//! * [`cli`] implements the command-line tool over the library; `main.rs` only parses arguments.
// `unsafe` is allowed only where FFI lives: `gzip::ffi`, `mount::sys`, `process`.
#![deny(unsafe_code)]

pub mod addon;
pub mod api;
pub mod archive;
pub mod attach;
pub mod bench;
pub mod cli;
pub mod daemon;
pub mod fs;
pub mod gzip;
pub mod holder;
pub mod index;
pub mod limits;
pub mod mount;
pub mod process;
pub mod reader;
pub mod source;
pub mod time;
pub mod ui;

#[cfg(test)]
mod testutil;

pub use limits::Limits;
