//! Opening an archive's index for a command, with a progress bar while it is built.

use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use super::Error;
use crate::archive::ScanOptions;
use crate::index::open::{self, Opened};

/// Opens (loading or building) the index of `archive` (kept at `index`, default beside it),
/// showing a progress bar on a terminal while it is built. `rebuild` forces a new index.
pub(crate) fn open_index(
    archive: &Path,
    index: Option<&Path>,
    opts: &ScanOptions,
    rebuild: bool,
) -> Result<Opened, Error> {
    let size = std::fs::metadata(archive).map(|m| m.len()).unwrap_or(0);
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template(
                "indexing {msg} {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let name = archive.file_name().unwrap_or(archive.as_os_str());
        bar.set_message(name.to_string_lossy().into_owned());
        Some(bar)
    } else {
        None
    };
    let progress = bar.clone().map(|bar| move |read: u64| bar.set_position(read));
    let progress_ref = progress.as_ref().map(|p| p as &(dyn Fn(u64) + Sync));
    let opened = open::open(archive, index, opts, rebuild, progress_ref);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(opened?)
}
