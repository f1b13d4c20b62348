//! `addonfs-attach`: the workload-side step alone (`addonfs attach` / `addonfs detach`), in a
//! binary that links nothing else of addonfs. A workload runs it once at start, usually with a
//! cold page cache, where every page of a binary is a disk read: this one starts in a fraction
//! of the full `addonfs` binary's time (see docs/benchmarks.md, "Startup latency").

use clap::{Parser, Subcommand};

use addonfs::cli::args::{AttachCmd, DetachCmd};

/// Symlink the enabled add-ons' paths into a workload root (or remove those links).
#[derive(Debug, Parser)]
#[command(name = "addonfs-attach", version, about)]
struct Cli {
    /// `detach` removes the links into the mount; without it, attach.
    #[command(subcommand)]
    detach: Option<Detach>,
    #[command(flatten)]
    attach: AttachCmd,
}

#[derive(Debug, Subcommand)]
enum Detach {
    /// Remove only the symlinks that point into the mount.
    Detach(DetachCmd),
}

fn main() {
    let cli = Cli::parse();
    let code = match &cli.detach {
        Some(Detach::Detach(cmd)) => addonfs::cli::attach::detach(cmd),
        None => addonfs::cli::attach::attach(&cli.attach),
    };
    std::process::exit(code);
}
