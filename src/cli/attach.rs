//! `attach` and `detach`: print the report, exit non-zero if any path failed. Shared by
//! `addonfs attach`/`detach` and the lean `addonfs-attach` binary.

use super::args::{AttachCmd, DetachCmd};
use super::{EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL};
use crate::attach::{self, Outcome, Report};

fn print(report: &Report, json: bool) -> i32 {
    if json {
        match serde_json::to_string_pretty(report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("addonfs: cannot encode the report: {e}"),
        }
    } else {
        for p in &report.paths {
            match &p.outcome {
                Outcome::Linked => {
                    println!("linked   {} -> {}", p.link.display(), p.target.display())
                }
                Outcome::AlreadyLinked => {
                    println!("ok       {} (already linked)", p.link.display())
                }
                Outcome::Removed => println!("removed  {}", p.link.display()),
                Outcome::Skipped { reason } => println!("skipped  {}: {reason}", p.link.display()),
                Outcome::Failed { reason } => {
                    eprintln!("addonfs: add-on {}: path {}: {reason}", p.addon, p.path)
                }
            }
        }
        println!("{}", report.summary());
        for d in &report.deprecated {
            eprintln!("addonfs: warning: add-on {} is deprecated: {}", d.addon, d.reason);
        }
    }
    if report.failures() > 0 {
        EXIT_PARTIAL
    } else {
        EXIT_OK
    }
}

/// `addonfs attach`.
pub fn attach(cmd: &AttachCmd) -> i32 {
    match attach::attach(&cmd.mount, &cmd.root) {
        Ok(report) => print(&report, cmd.json),
        Err(e) => {
            eprintln!("addonfs: {e}");
            EXIT_FAILURE
        }
    }
}

/// `addonfs detach`.
pub fn detach(cmd: &DetachCmd) -> i32 {
    match attach::detach(&cmd.mount, &cmd.root, &cmd.paths) {
        Ok(report) => print(&report, cmd.json),
        Err(e) => {
            eprintln!("addonfs: {e}");
            EXIT_FAILURE
        }
    }
}
