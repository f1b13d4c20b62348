//! The `addonfs` binary: parses the command line and hands it to the library.

use clap::Parser;

fn main() {
    std::process::exit(addonfs::cli::run(addonfs::cli::Cli::parse()));
}
