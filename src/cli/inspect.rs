//! `index`, `ls`, `cat` and `stat`: local testing of an archive without extracting it.

use std::io::Write;
use std::sync::Arc;

use serde_json::json;

use super::args::{ArchiveOpts, CatCmd, IndexCmd, LsCmd, StatCmd};
use super::format::{human_bytes, kind_name, mode_string, show, utc_time};
use super::Error;
use crate::archive::{Compression, EntryKind};
use crate::index::open::{Opened, Origin};
use crate::index::{Attr, Data, Index, Ino, ROOT_INO};
use crate::reader::{ArchiveReader, ChunkCache, ReadAhead};

/// Most symlinks followed while resolving one path (as Linux's `MAXSYMLINKS`).
const MAX_SYMLINK_HOPS: usize = 40;

/// Opens (loading or building) the index of the archive, with a progress bar on a terminal.
fn open_index(opts: &ArchiveOpts, rebuild: bool) -> Result<Opened, Error> {
    super::open::open_index(
        &opts.archive,
        opts.index.as_deref(),
        &opts.scan.scan_options(),
        rebuild,
    )
}

/// `addonfs index`.
pub fn index(cmd: &IndexCmd) -> Result<(), Error> {
    let opened = open_index(&cmd.archive, cmd.rebuild)?;
    let index = &opened.index;
    let stats = index.stats();
    let identity = index.identity();
    let compression = match index.compression() {
        Compression::None => "tar",
        Compression::Gzip => "gzip",
    };
    let (action, reason, persisted) = match &opened.origin {
        Origin::Loaded => ("loaded", String::new(), true),
        Origin::Built { reason, persisted } => ("built", reason.clone(), *persisted),
    };
    let seconds = opened.elapsed.as_secs_f64();
    let warnings = index.warnings();
    if cmd.json {
        let report = json!({
            "archive": cmd.archive.archive,
            "compression": compression,
            "archive_size": identity.size,
            "uncompressed_size": stats.uncompressed_size,
            "sha256": identity.digest.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "index": opened.path,
            "index_size": stats.bytes,
            "persisted": persisted,
            "action": action,
            "reason": reason,
            "seconds": seconds,
            "inodes": stats.inodes,
            "names": stats.dirents,
            "access_points": stats.points,
            "span": index.span(),
            "warnings": warnings,
        });
        outln!("{report:#}")?;
        return Ok(());
    }
    let ratio = if stats.uncompressed_size > 0 {
        100.0 * stats.bytes as f64 / stats.uncompressed_size as f64
    } else {
        0.0
    };
    outln!(
        "archive:       {} ({compression}, {}, {} uncompressed)",
        cmd.archive.archive.display(),
        human_bytes(identity.size),
        human_bytes(stats.uncompressed_size)
    )?;
    outln!(
        "index:         {} ({}, {ratio:.2}% of uncompressed){}",
        opened.path.display(),
        human_bytes(stats.bytes),
        if persisted { "" } else { " [not persisted: kept in memory only]" }
    )?;
    match &opened.origin {
        Origin::Loaded => outln!("loaded in:     {:.2} ms", seconds * 1e3)?,
        Origin::Built { reason, .. } => outln!("built in:      {seconds:.3} s ({reason})")?,
    }
    outln!("entries:       {} inodes, {} names", stats.inodes, stats.dirents)?;
    if index.compression() == Compression::Gzip {
        outln!("access points: {} (span {})", stats.points, human_bytes(index.span()))?;
    }
    for warning in &warnings {
        outln!("warning:       {warning}")?;
    }
    Ok(())
}

/// Opens the archive for reading.
fn reader(opts: &ArchiveOpts) -> Result<ArchiveReader, Error> {
    let opened = open_index(opts, false)?;
    Ok(ArchiveReader::open(&opts.archive, Arc::new(opened.index), Arc::new(ChunkCache::default()))?)
}

/// Resolves `path` in the archive without following a final symlink.
fn find(index: &Index, opts: &ArchiveOpts, path: &str) -> Result<Ino, Error> {
    index
        .resolve(path.as_bytes())
        .ok_or_else(|| Error::NotFound { archive: opts.archive.clone(), entry: path.to_string() })
}

/// Resolves `path`, following symlinks that stay inside the archive. A symlink that leaves it
/// (absolute, or `..` past the root), or a loop, leads to no entry of the archive: not found
/// (exit code 4), like a missing name.
fn follow(index: &Index, opts: &ArchiveOpts, path: &str) -> Result<Ino, Error> {
    let not_found = |why: String| Error::NotFound {
        archive: opts.archive.clone(),
        entry: format!("{path} ({why})"),
    };
    let mut current: Vec<u8> = path.as_bytes().to_vec();
    for _ in 0..=MAX_SYMLINK_HOPS {
        let ino = find(index, opts, &String::from_utf8_lossy(&current))?;
        let Some(target) = index.symlink_target(ino) else {
            return Ok(ino);
        };
        let mut base: Vec<&[u8]> =
            current.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
        base.pop();
        if target.starts_with(b"/") {
            return Err(not_found(format!("a symlink to {}, outside the archive", show(target))));
        }
        for part in target.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    if base.pop().is_none() {
                        return Err(not_found(format!(
                            "a symlink to {}, leading outside the archive",
                            show(target)
                        )));
                    }
                }
                other => base.push(other),
            }
        }
        current = base.join(&b'/');
    }
    Err(not_found("too many levels of symbolic links".to_string()))
}

/// One `ls -l` line.
fn long_line(index: &Index, attr: &Attr, name: &str) -> String {
    let target = match index.symlink_target(attr.ino) {
        Some(t) => format!(" -> {}", show(t)),
        None => String::new(),
    };
    let size = match attr.kind {
        EntryKind::CharDev | EntryKind::BlockDev => format!("{}, {}", attr.rdev.0, attr.rdev.1),
        _ => attr.size.to_string(),
    };
    format!(
        "{} {:>3} {:>5} {:>5} {:>10} {} {name}{target}",
        mode_string(attr.kind, attr.mode),
        attr.nlink,
        attr.uid,
        attr.gid,
        size,
        utc_time(attr.mtime)
    )
}

/// `addonfs ls`.
pub fn ls(cmd: &LsCmd) -> Result<(), Error> {
    let opened = open_index(&cmd.archive, false)?;
    let index = &opened.index;
    let ino = find(index, &cmd.archive, &cmd.path)?;
    let mut out = std::io::stdout().lock();
    let mut write = |line: String| writeln!(out, "{line}").map_err(|e| Error::io("<stdout>", e));
    let attr = index.attr(ino).ok_or_else(|| Error::NotFound {
        archive: cmd.archive.archive.clone(),
        entry: cmd.path.clone(),
    })?;
    if attr.kind != EntryKind::Dir {
        let name = cmd.path.trim_matches('/').to_string();
        return write(if cmd.long { long_line(index, &attr, &name) } else { name });
    }
    let prefix = cmd.path.trim_matches('/').to_string();
    let mut stack = vec![(ino, prefix)];
    while let Some((dir, prefix)) = stack.pop() {
        let mut subdirs = Vec::new();
        for (name, child) in index.children(dir, 0) {
            let name = show(name);
            let shown = if cmd.recursive && !prefix.is_empty() {
                format!("{prefix}/{name}")
            } else {
                name.clone()
            };
            let Some(attr) = index.attr(child) else { continue };
            write(if cmd.long { long_line(index, &attr, &shown) } else { shown.clone() })?;
            if cmd.recursive && attr.kind == EntryKind::Dir {
                subdirs.push((child, shown));
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

/// `addonfs cat`.
pub fn cat(cmd: &CatCmd) -> Result<(), Error> {
    let reader = Arc::new(reader(&cmd.archive)?);
    let index = Arc::clone(reader.index());
    // The spans ahead of the one being written out are inflated on the other cores meanwhile.
    let pool = match index.compression() {
        Compression::Gzip => ReadAhead::start(ReadAhead::default_workers()).ok(),
        Compression::None => None,
    };
    let mut sequential = pool.as_ref().map(|pool| pool.sequential(Arc::clone(&reader)));
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 1 << 20];
    for path in &cmd.paths {
        let ino = follow(&index, &cmd.archive, path)?;
        let attr = index.attr(ino).ok_or_else(|| Error::NotFound {
            archive: cmd.archive.archive.clone(),
            entry: path.clone(),
        })?;
        if attr.kind != EntryKind::File {
            return Err(Error::Usage(format!(
                "{}: {path} is a {}, not a file",
                cmd.archive.archive.display(),
                kind_name(attr.kind)
            )));
        }
        let mut offset = 0u64;
        while offset < attr.size {
            let n = match sequential.as_mut() {
                Some(sequential) => sequential.read(ino, offset, &mut buf)?,
                None => reader.read(ino, offset, &mut buf)?,
            };
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(|e| Error::io("<stdout>", e))?;
            offset += n as u64;
        }
    }
    out.flush().map_err(|e| Error::io("<stdout>", e))
}

/// `addonfs stat`.
pub fn stat(cmd: &StatCmd) -> Result<(), Error> {
    let opened = open_index(&cmd.archive, false)?;
    let index = &opened.index;
    let ino = find(index, &cmd.archive, &cmd.path)?;
    let attr = index.attr(ino).ok_or_else(|| Error::NotFound {
        archive: cmd.archive.archive.clone(),
        entry: cmd.path.clone(),
    })?;
    let target = index.symlink_target(ino).map(show);
    let xattrs: Vec<(String, String)> =
        index.xattrs(ino).into_iter().map(|(k, v)| (show(k), show(v))).collect();
    let (layout, stream_offset, runs) = match index.data(ino) {
        Data::None => ("none", None, Vec::new()),
        Data::Contiguous(offset) => ("contiguous", Some(offset), Vec::new()),
        Data::Sparse(segments) => {
            ("sparse", None, segments.iter().map(|s| (s.logical, s.len, s.stream_offset)).collect())
        }
    };
    if cmd.json {
        let report = json!({
            "path": cmd.path.trim_matches('/'),
            "ino": attr.ino,
            "kind": kind_name(attr.kind),
            "mode": format!("{:04o}", attr.mode),
            "uid": attr.uid,
            "gid": attr.gid,
            "size": attr.size,
            "nlink": attr.nlink,
            "mtime": attr.mtime,
            "mtime_nsec": attr.mtime_nsec,
            "rdev": [attr.rdev.0, attr.rdev.1],
            "symlink_target": target,
            "xattrs": xattrs.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            "layout": layout,
            "stream_offset": stream_offset,
            "sparse_runs": runs.iter().map(|r| json!({"offset": r.0, "len": r.1, "stream_offset": r.2})).collect::<Vec<_>>(),
        });
        outln!("{report:#}")?;
        return Ok(());
    }
    outln!("  File: {}", if ino == ROOT_INO { "/" } else { cmd.path.trim_matches('/') })?;
    outln!("  Kind: {}", kind_name(attr.kind))?;
    outln!("  Size: {:<12} Inode: {:<10} Links: {}", attr.size, attr.ino, attr.nlink)?;
    outln!(
        "  Mode: {:04o} ({})  Uid: {}  Gid: {}",
        attr.mode,
        mode_string(attr.kind, attr.mode),
        attr.uid,
        attr.gid
    )?;
    outln!("Modify: {}.{:09} UTC", utc_time(attr.mtime), attr.mtime_nsec)?;
    if let Some(target) = target {
        outln!("Target: {target}")?;
    }
    if matches!(attr.kind, EntryKind::CharDev | EntryKind::BlockDev) {
        outln!("Device: {}, {}", attr.rdev.0, attr.rdev.1)?;
    }
    match (layout, stream_offset) {
        ("contiguous", Some(offset)) => {
            outln!("  Data: {} bytes at stream offset {offset}", attr.size)?
        }
        ("sparse", _) => outln!("  Data: sparse, {} runs", runs.len())?,
        _ => {}
    }
    for (name, value) in xattrs {
        outln!(" Xattr: {name}={value}")?;
    }
    Ok(())
}
