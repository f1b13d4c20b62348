//! The on-disk index format (see `docs/index-format.md`).
