//! `attach` and `detach`: print the report, exit non-zero if any path failed. Shared by
//! `addonfs attach`/`detach` and the lean `addonfs-attach` binary.

use std::fmt::Write as _;
use std::io::Write as _;

use super::args::{AttachCmd, DetachCmd};
use super::{EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE};
use crate::attach::{self, quoted, shown, AttachError, Outcome, Report};

/// The report's text: what goes to standard output and what goes to standard error. Names
/// that are not printable are quoted, so each path stays on its line.
fn text(report: &Report) -> (String, String) {
    let (mut out, mut err) = (String::new(), String::new());
    for p in &report.paths {
        let link = shown(&p.link);
        let _ = match &p.outcome {
            Outcome::Linked => writeln!(out, "linked   {link} -> {}", shown(&p.target)),
            Outcome::AlreadyLinked => writeln!(out, "ok       {link} (already linked)"),
            Outcome::Removed => writeln!(out, "removed  {link}"),
            Outcome::Skipped { reason } => writeln!(out, "skipped  {link}: {reason}"),
            Outcome::Failed { reason } => writeln!(
                err,
                "addonfs: add-on {}: path {}: {reason}",
                quoted(p.addon.as_ref()),
                quoted(p.path.as_ref())
            ),
        };
    }
    let _ = writeln!(out, "{}", report.summary());
    for d in &report.deprecated {
        let _ = writeln!(
            err,
            "addonfs: warning: add-on {} is deprecated: {}",
            quoted(d.addon.as_ref()),
            d.reason
        );
    }
    (out, err)
}

/// Prints the report and returns the run's exit code. A closed standard output (the reader
/// went away) stops the printing quietly, as ripgrep does: the links are made either way, so
/// the code is still the run's own.
fn print(report: &Report, json: bool) -> i32 {
    let (out, err) = if json {
        match serde_json::to_string_pretty(report) {
            Ok(text) => (text + "\n", String::new()),
            Err(e) => (String::new(), format!("addonfs: cannot encode the report: {e}\n")),
        }
    } else {
        text(report)
    };
    let _ = std::io::stderr().write_all(err.as_bytes());
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            super::error_line(format_args!("addonfs: <stdout>: {e}"));
        }
    }
    if report.failures() > 0 {
        EXIT_PARTIAL
    } else {
        EXIT_OK
    }
}

fn fail(e: &AttachError) -> i32 {
    super::error_line(format_args!("addonfs: {e}"));
    if e.is_usage() {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

/// `addonfs attach`.
pub fn attach(cmd: &AttachCmd) -> i32 {
    let min = cmd.min_revision.map(|n| (n, cmd.wait));
    match attach::attach_min(&cmd.mount, &cmd.root, min) {
        Ok(report) => print(&report, cmd.json),
        Err(e) => fail(&e),
    }
}

/// `addonfs detach`.
pub fn detach(cmd: &DetachCmd) -> i32 {
    match attach::detach(&cmd.mount, &cmd.root, &cmd.paths) {
        Ok(report) => print(&report, cmd.json),
        Err(e) => fail(&e),
    }
}
