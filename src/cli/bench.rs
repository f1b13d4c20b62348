//! `addonfs bench startup`: run the harness, print the table, write the CSV and the chart.

use std::time::Duration;

use super::args::{BenchCmd, StartupCmd};
use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::bench::{plot, run_startup, BenchError, Method, StartupConfig};

/// `addonfs bench ...`.
pub fn bench(cmd: &BenchCmd) -> i32 {
    let result = match cmd {
        BenchCmd::Startup(cmd) => startup(cmd),
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("addonfs: {e}");
            match e {
                BenchError::NotRoot(_) | BenchError::Usage(_) => EXIT_USAGE,
                _ => EXIT_FAILURE,
            }
        }
    }
}

fn startup(cmd: &StartupCmd) -> Result<(), BenchError> {
    let addonfs = std::env::current_exe().map_err(|e| BenchError::io("/proc/self/exe", e))?;
    let config = StartupConfig {
        sizes: cmd.sizes.clone(),
        runs: cmd.runs as usize,
        source: cmd.source.clone(),
        work_dir: cmd.work_dir.clone(),
        peers: !cmd.no_peers,
        addonfs,
        attach_bin: cmd.attach_bin.clone(),
        timeout: Duration::from_secs(cmd.timeout),
        garage: if cmd.no_store {
            None
        } else {
            match &cmd.garage {
                Some(path) => Some(path.clone()),
                None => crate::bench::startup::find_program("garage"),
            }
        },
        store_latency: Duration::from_millis(cmd.store_latency_ms),
        only: cmd
            .methods
            .iter()
            .map(|name| {
                Method::from_name(name)
                    .ok_or_else(|| BenchError::Usage(format!("--methods: no method `{name}`")))
            })
            .collect::<Result<_, _>>()?,
        walk: cmd.walk,
    };
    crate::bench::startup::require_root()?;
    std::fs::create_dir_all(&cmd.out).map_err(|e| BenchError::io(&cmd.out, e))?;
    let report = run_startup(&config, &mut |line| eprintln!("{line}"))?;
    for (method, why) in &report.skipped {
        eprintln!("{}: not measured ({why})", method.name());
    }
    // A closed standard output must not lose a run of minutes: the CSV and chart follow.
    let _ = outln!("{}", report.table().trim_end_matches('\n'));
    if report.measurements.iter().any(|m| !m.fetched.is_empty()) {
        let _ = outln!("\n{}", report.store_table().trim_end_matches('\n'));
    }
    if !report.walks.is_empty() {
        let _ = outln!("\n{}", report.walk_table().trim_end_matches('\n'));
    }
    let csv = cmd.out.join("startup.csv");
    std::fs::write(&csv, report.csv()).map_err(|e| BenchError::io(&csv, e))?;
    let svg = cmd.out.join("startup.svg");
    plot::write_svg(&report, &svg)?;
    let _ = outln!("\nwrote {} and {}", csv.display(), svg.display());
    Ok(())
}
