//! The command-line tool, over the library. `main.rs` parses arguments and calls [`run`].
