//! `addonfs mount`: index the archives (if needed), mount them, serve until a signal.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::args::MountCmd;
use super::open::open_index;
use super::Error;
use crate::fs::namespace::{Namespace, Slot, Volume, MAX_SLOT};
use crate::fs::{AddonFs, FsOptions};
use crate::index::open::Origin;
use crate::mount::{self, MountError, MountOptions, SignalSet};
use crate::reader::{ArchiveReader, ChunkCache};

/// The suffixes stripped from an archive's file name to name its directory (longest first,
/// matched without regard to case).
const SUFFIXES: [&str; 4] = [".tar.gz", ".tgz", ".tar", ".gz"];

/// The directory name of an archive: its file name without a known suffix.
fn base_name(archive: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let name = archive.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    let stem = SUFFIXES
        .iter()
        .find(|s| lower.ends_with(s.as_bytes()))
        .map_or(&name[..], |s| &name[..name.len() - s.len()]);
    if stem.is_empty() || stem == b"." || stem == b".." {
        b"archive".to_vec()
    } else {
        stem.to_vec()
    }
}

/// One directory name per archive, in order: the base name, and for later archives whose base
/// name is taken, `NAME-2`, `NAME-3`, ... (the smallest number that is neither an archive's
/// base name nor taken already). Deterministic: it depends only on the list.
pub fn volume_names(archives: &[PathBuf]) -> Vec<Vec<u8>> {
    let bases: Vec<Vec<u8>> = archives.iter().map(|a| base_name(a)).collect();
    let reserved: BTreeSet<&[u8]> = bases.iter().map(Vec::as_slice).collect();
    let mut taken: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut names = Vec::with_capacity(bases.len());
    for base in &bases {
        let name = if taken.contains(base) {
            (2u64..)
                .map(|n| {
                    let mut candidate = base.clone();
                    candidate.extend_from_slice(format!("-{n}").as_bytes());
                    candidate
                })
                .find(|c| !taken.contains(c) && !reserved.contains(c.as_slice()))
                .unwrap_or_else(|| base.clone())
        } else {
            base.clone()
        };
        taken.insert(name.clone());
        names.push(name);
    }
    names
}

fn mount_error(e: MountError) -> Error {
    let full = e.to_string();
    let path = e.path().map_or_else(|| PathBuf::from("addonfs"), Path::to_path_buf);
    // The message starts with the path already; `Error::Io` adds it back.
    let prefix = format!("{}: ", path.display());
    let message = full.strip_prefix(&prefix).map_or_else(|| full.clone(), str::to_string);
    Error::Io { path, source: std::io::Error::other(message) }
}

/// `addonfs mount`.
pub fn mount(cmd: &MountCmd) -> Result<(), Error> {
    // First, before any thread exists: every thread spawned later inherits the blocked mask,
    // so the stop signals are only ever taken by the signal thread.
    let signals =
        SignalSet::block(&mount::STOP_SIGNALS).map_err(|e| mount_error(MountError::Signals(e)))?;
    let (mountpoint, archives) = match cmd.paths.split_last() {
        Some((mountpoint, archives)) if !archives.is_empty() => (mountpoint, archives),
        _ => return Err(Error::Usage("mount needs at least one archive and a mount point".into())),
    };
    if archives.len() > MAX_SLOT as usize {
        return Err(Error::Usage(format!("at most {MAX_SLOT} archives can be mounted together")));
    }
    // Fail fast on a bad mount point (and clear a stale one) before indexing.
    let (_, (dir_uid, dir_gid)) = mount::prepare_mountpoint(mountpoint).map_err(mount_error)?;
    let started = Instant::now();
    let cache = Arc::new(ChunkCache::new(cmd.cache_size));
    let opts = cmd.scan.scan_options();
    let mut volumes = Vec::with_capacity(archives.len());
    for (i, archive) in archives.iter().enumerate() {
        let opened = open_index(archive, None, &opts, false)?;
        match &opened.origin {
            Origin::Loaded => tracing::info!(
                archive = %archive.display(),
                ms = opened.elapsed.as_secs_f64() * 1e3,
                "index loaded"
            ),
            Origin::Built { reason, persisted } => tracing::info!(
                archive = %archive.display(),
                seconds = opened.elapsed.as_secs_f64(),
                reason = %reason,
                persisted,
                "index built"
            ),
        }
        for warning in opened.index.warnings() {
            tracing::warn!(archive = %archive.display(), "{warning}");
        }
        let reader = ArchiveReader::open(archive, Arc::new(opened.index), Arc::clone(&cache))?;
        let slot = Slot::try_from(i + 1).unwrap_or(MAX_SLOT);
        volumes.push(Volume::new(slot, reader));
    }
    let owner = (cmd.uid.unwrap_or(dir_uid), cmd.gid.unwrap_or(dir_gid));
    let namespace = if volumes.len() == 1 {
        volumes.pop().map(|v| Namespace::single(v, owner))
    } else if cmd.merge {
        Some(Namespace::merged(volumes, owner))
    } else {
        let named = volume_names(archives).into_iter().zip(volumes).collect();
        Some(Namespace::directories(named, owner))
    };
    let namespace = match namespace {
        Some(Ok(ns)) => ns,
        Some(Err(e)) => return Err(Error::Usage(e.to_string())),
        None => return Err(Error::Usage("no archive to mount".into())),
    };
    let fs = AddonFs::new(
        Arc::new(namespace),
        FsOptions { uid: cmd.uid, gid: cmd.gid, ..FsOptions::default() },
    );
    let mount_opts =
        MountOptions { allow_other: cmd.allow_other, threads: usize::from(cmd.threads) };
    let mounted = mount::mount(fs, mountpoint, &mount_opts).map_err(mount_error)?;
    tracing::info!(
        mountpoint = %mounted.path().display(),
        archives = archives.len(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "serving"
    );
    mounted.serve_until_signal(signals).map_err(mount_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(paths: &[&str]) -> Vec<String> {
        let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
        volume_names(&paths).into_iter().map(|n| String::from_utf8(n).expect("utf8")).collect()
    }

    #[test]
    fn suffixes_are_stripped() {
        assert_eq!(
            names(&["/x/a.tar.gz", "b.tgz", "c.tar", "d.gz", "e.TAR.GZ", "f.zip", "g"]),
            ["a", "b", "c", "d", "e", "f.zip", "g"]
        );
        assert_eq!(names(&[".tar.gz", "x/.tgz"]), ["archive", "archive-2"]);
        assert_eq!(names(&["v1.2.tar"]), ["v1.2"]);
    }

    #[test]
    fn duplicates_get_numbers_that_no_archive_uses() {
        assert_eq!(names(&["a.tar", "a.tar.gz", "x/a.tgz"]), ["a", "a-2", "a-3"]);
        // "a-2" is another archive's own name, so the duplicate "a" skips it.
        assert_eq!(names(&["a.tar", "a.tgz", "a-2.tar"]), ["a", "a-3", "a-2"]);
        // Deterministic: the same list gives the same names.
        let list = ["p/a.tar", "q/a.tar", "a-3.tgz", "r/a.tar"];
        assert_eq!(names(&list), names(&list));
        assert_eq!(names(&list), ["a", "a-2", "a-3", "a-4"]);
    }
}
