//! Migration: a state directory written by `serve` before stores had a catalog opens without
//! loss.
//!
//! The old layout:
//!
//! ```text
//! <state>/addons/<identifier>/{metadata.json, addon.tar.gz, addon.tar.gz.addonfs-index, record.json}
//! <state>/revision                 the catalog's revision (decimal, one line)
//! <state>/status-change.json       the journal of an interrupted status change, if any
//! ```
//!
//! [`load`] reads it the way the old store did (malformed entries noted and skipped, an
//! interrupted status change completed from its journal), and the store writes `catalog.json`
//! from it, the objects' keys pointing at the files where they are (no copy), the revision
//! kept. From then on the catalog is the truth: `record.json`, `revision` and the journal are
//! no longer written (they are left in place, stale after the next change).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{Record, StoreError};
use crate::addon::catalog::{Entry, IndexHead, Objects};
use crate::addon::metadata::{Metadata, MAX_METADATA_BYTES};

/// File name of the record inside an old add-on directory.
pub const RECORD_FILE: &str = "record.json";
/// File name of the old revision.
pub const REVISION_FILE: &str = "revision";
/// File name of the old status-change journal.
pub const STATUS_JOURNAL: &str = "status-change.json";

/// What an old state directory holds.
pub(crate) struct Legacy {
    /// Every loadable add-on, by id.
    pub addons: BTreeMap<u64, Entry>,
    /// The revision.
    pub revision: u64,
    /// Malformed entries (skipped).
    pub problems: Vec<String>,
}

/// Whether `root` looks like an old state directory (an `addons/` directory).
pub(crate) fn present(root: &Path) -> bool {
    root.join("addons").is_dir()
}

/// Loads an old state directory.
pub(crate) fn load(root: &Path) -> Result<Legacy, StoreError> {
    let addons_dir = root.join("addons");
    let mut problems = Vec::new();
    let mut addons = BTreeMap::new();
    let mut dirs: Vec<_> = std::fs::read_dir(&addons_dir)
        .map_err(|source| StoreError::Io { path: addons_dir.clone(), source })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    for dir in dirs {
        match load_addon(&dir) {
            Ok(entry) => {
                if addons.contains_key(&entry.record.id) {
                    problems.push(format!(
                        "{}: id {} is used twice; entry ignored",
                        dir.display(),
                        entry.record.id
                    ));
                    continue;
                }
                addons.insert(entry.record.id, entry);
            }
            Err(why) => problems.push(format!("{}: {why}; entry ignored", dir.display())),
        }
    }
    let revision = read_revision(root)?;
    apply_journal(root, &mut addons, &mut problems);
    Ok(Legacy { addons, revision, problems })
}

/// Sets the records of an interrupted status change's journal (those whose id and identifier
/// match a loaded add-on); a journal that cannot be read is noted in `problems`.
fn apply_journal(root: &Path, addons: &mut BTreeMap<u64, Entry>, problems: &mut Vec<String>) {
    let path = root.join(STATUS_JOURNAL);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            problems.push(format!("{}: cannot read it: {e}; ignored", path.display()));
            return;
        }
    };
    let records: Vec<Record> = match serde_json::from_slice(&bytes) {
        Ok(records) => records,
        Err(e) => {
            problems.push(format!("{}: not a list of records: {e}; ignored", path.display()));
            return;
        }
    };
    for record in records {
        if let Some(entry) = addons.get_mut(&record.id) {
            if entry.record.identifier == record.identifier {
                entry.record = record;
            }
        }
    }
}

/// Reads the old revision file: 0 when absent; an error naming it when it is not a number.
pub(crate) fn read_revision(root: &Path) -> Result<u64, StoreError> {
    let path = root.join(REVISION_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|e| StoreError::Io {
            path: path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the revision {:?} is not a non-negative integer: {e}", text.trim()),
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StoreError::Io { path, source: e }),
    }
}

/// The head of `index` (written at `path`) for the catalog: its length and the SHA-256 of the
/// file's first that many bytes; `None` for an index without a head (format 1), which nodes
/// fetch whole.
pub(crate) fn digest_head(
    path: &Path,
    index: &crate::index::Index,
) -> std::io::Result<Option<IndexHead>> {
    let Some(len) = index_head_len(index) else { return Ok(None) };
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let copied = std::io::copy(&mut (&mut file).take(len), &mut HashWriter(&mut hasher))?;
    if copied != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the index's head is {len} bytes, the file has {copied}"),
        ));
    }
    let digest = hasher.finalize();
    Ok(Some(IndexHead { size: len, sha256: digest.iter().map(|b| format!("{b:02x}")).collect() }))
}

/// The length of `index`'s head, if it has one.
fn index_head_len(index: &crate::index::Index) -> Option<u64> {
    // A head is only worth recording if a node can check the archive's ranges by it.
    index.head_len().filter(|_| index.chunk_count() > 0 || index.identity().size == 0)
}

/// `io::Write` into a hasher.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The size and SHA-256 (lowercase hex) of a file, read in blocks.
pub(crate) fn digest_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()))
}

/// Loads one old add-on directory as a catalog entry, or says what is wrong with it.
fn load_addon(dir: &Path) -> Result<Entry, String> {
    use super::{INDEX_FILE, METADATA_FILE, TARBALL_FILE};
    if !dir.is_dir() {
        return Err("not a directory".into());
    }
    let read = |name: &str| {
        let path = dir.join(name);
        let meta = std::fs::metadata(&path).map_err(|e| format!("{name}: {e}"))?;
        if meta.len() > MAX_METADATA_BYTES as u64 {
            return Err(format!("{name}: {} bytes, too large", meta.len()));
        }
        std::fs::read(&path).map_err(|e| format!("{name}: {e}"))
    };
    let record: Record =
        serde_json::from_slice(&read(RECORD_FILE)?).map_err(|e| format!("{RECORD_FILE}: {e}"))?;
    let metadata =
        Metadata::parse(&read(METADATA_FILE)?).map_err(|e| format!("{METADATA_FILE}: {e}"))?;
    let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if record.identifier != metadata.identifier() || record.identifier != dir_name {
        return Err(format!(
            "record identifier `{}`, metadata identifier `{}` and directory `{dir_name}` differ",
            record.identifier,
            metadata.identifier()
        ));
    }
    if !dir.join(TARBALL_FILE).is_file() {
        return Err(format!("{TARBALL_FILE} is missing"));
    }
    // Old code rebuilt a missing or stale index when it mounted the add-on; so does the
    // migration, rather than drop an add-on whose index was deleted or never written (the
    // catalog records the index's digest, so it must exist and match its archive).
    crate::index::open::open(
        &dir.join(TARBALL_FILE),
        Some(&dir.join(INDEX_FILE)),
        &crate::archive::ScanOptions::default(),
        false,
        None,
    )
    .map_err(|e| format!("{INDEX_FILE}: {e}"))?;
    let (index_size, index_sha256) =
        digest_file(&dir.join(INDEX_FILE)).map_err(|e| format!("{INDEX_FILE}: {e}"))?;
    let index_head = crate::index::Index::load(&dir.join(INDEX_FILE))
        .map_err(|e| format!("{INDEX_FILE}: {e}"))
        .and_then(|index| {
            digest_head(&dir.join(INDEX_FILE), &index).map_err(|e| format!("{INDEX_FILE}: {e}"))
        })?;
    Ok(Entry {
        objects: Objects::legacy(&record.identifier),
        record,
        paths: metadata.spec.paths,
        index_size,
        index_sha256,
        index_head,
    })
}
