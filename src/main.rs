//! The `addonfs` binary: parses the command line and hands it to the library.

#![deny(unsafe_code)]

use clap::Parser;

fn main() {
    std::process::exit(addonfs::cli::run(addonfs::cli::Cli::parse()));
}
