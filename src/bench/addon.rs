//! The add-ons the startup benchmark measures: real files of this machine, picked
//! deterministically until a target size of content is reached, packed with `tar -czf` under
//! their absolute paths (as the seed's add-ons are: `usr/lib/...`), with a `metadata.json`, and
//! cached in a work directory so reruns skip packing.
//!
//! Layout of one add-on's directory (`WORK/<label>/`, e.g. `WORK/100M/`):
//!
//! | file | what |
//! |---|---|
//! | `addon.tar.gz` | the tarball (`tar -czf`, gzip -6) |
//! | `metadata.json` | `{"name": "bench-<label>", "spec": {"paths": [...]}}` |
//! | `addon.json` | [`BuiltAddon`]: what was packed; written last, so its presence means done |
//! | `state/` | an addonfs store holding the add-on, registered (indexed) once |

use std::collections::{BTreeSet, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{run_command, BenchError};
use crate::addon::{metadata, Store};

/// The tarball's file name in an add-on's directory.
pub const TARBALL: &str = "addon.tar.gz";
/// The metadata file's name in an add-on's directory.
pub const METADATA: &str = "metadata.json";
/// The description's file name in an add-on's directory (written last).
pub const DESCRIPTION: &str = "addon.json";
/// The store's directory in an add-on's directory.
pub const STATE: &str = "state";

/// Fraction of the target an add-on's content must reach, or the source is too small.
const MIN_FILL: f64 = 0.95;

/// One add-on built for the benchmark (persisted as `addon.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltAddon {
    /// The size label, e.g. `1M`, `500M`, `1G` (binary units).
    pub label: String,
    /// The target size of content, in bytes.
    pub target_bytes: u64,
    /// The source directory the files were picked from (absolute).
    pub source: PathBuf,
    /// The add-on's directory.
    pub dir: PathBuf,
    /// Regular files packed.
    pub files: u64,
    /// Their total size, in bytes (at most the target).
    pub content_bytes: u64,
    /// The tarball's size, in bytes.
    pub tarball_bytes: u64,
    /// The chosen file, relative to `/` (as in the tarball): the deepest non-empty file packed,
    /// the first in name order among those as deep.
    pub chosen: String,
    /// Number of components of `chosen`.
    pub chosen_depth: usize,
    /// The add-on's name in its metadata (`bench-<label>` in lowercase).
    pub name: String,
    /// The absolute paths the metadata requests: the source's children present in the add-on.
    pub paths: Vec<String>,
}

impl BuiltAddon {
    /// The tarball.
    pub fn tarball(&self) -> PathBuf {
        self.dir.join(TARBALL)
    }

    /// The metadata file.
    pub fn metadata(&self) -> PathBuf {
        self.dir.join(METADATA)
    }

    /// The store (state directory) that holds the add-on once [`BuiltAddon::register`] ran.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join(STATE)
    }

    /// The add-on's identifier in the store (`custom-addon-<name>`).
    pub fn identifier(&self) -> String {
        format!("{}{}", metadata::IDENTIFIER_PREFIX, self.name)
    }

    /// Registers the add-on in its own store ([`BuiltAddon::state_dir`]) unless it is there
    /// already, with [`crate::addon::register`] (what `addonfs addons register` runs): the
    /// tarball is copied into the store and indexed in one pass, the metadata checked against
    /// the index, and both committed atomically.
    pub fn register(&self) -> Result<(), BenchError> {
        let store = Store::open(&self.state_dir(), "bench startup")?;
        if store.find(&self.identifier()).is_some() {
            return Ok(());
        }
        let meta_path = self.metadata();
        let bytes = crate::addon::register::read_metadata(&meta_path)?;
        crate::addon::register(&store, &meta_path, &bytes, &self.tarball())?;
        Ok(())
    }
}

/// The label of a size: `1G`, `500M`, `64K`, or bytes.
pub fn size_label(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A regular file of the source that may be packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its path relative to `/` (UTF-8: names that are not are skipped).
    pub rel: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its device and inode (hard links are packed once).
    pub id: (u64, u64),
}

/// Lists the non-empty regular files under `source` (absolute), not following symlinks nor
/// leaving its file system, in a deterministic pseudo-random order: by the SHA-256 of their
/// path, so that every size samples the whole tree. Unreadable directories are skipped.
pub fn candidates(source: &Path) -> Result<Vec<Candidate>, BenchError> {
    let top = std::fs::metadata(source).map_err(|e| BenchError::io(source, e))?;
    if !top.is_dir() {
        return Err(BenchError::Usage(format!("{} is not a directory", source.display())));
    }
    let mut found = Vec::new();
    let mut stack = vec![source.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.dev() != top.dev() {
                continue;
            }
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() && meta.len() > 0 {
                let Some(rel) = relative_to_root(&path) else { continue };
                found.push(Candidate { rel, size: meta.len(), id: (meta.dev(), meta.ino()) });
            }
        }
    }
    found.sort_by_cached_key(|c| (Sha256::digest(c.rel.as_bytes()), c.rel.clone()));
    Ok(found)
}

/// `path` (absolute) relative to `/`, if it is clean UTF-8 without characters tar lists could
/// mangle.
fn relative_to_root(path: &Path) -> Option<String> {
    let text = path.to_str()?;
    if text.contains(['\n', '\\']) {
        return None;
    }
    let rel = text.strip_prefix('/')?;
    (!rel.is_empty()).then(|| rel.to_string())
}

/// Picks candidates in order: each that still fits under `target` (counting content bytes)
/// and is not a hard link of one already picked. `readable` filters out files that cannot be
/// opened.
pub fn pick(
    candidates: &[Candidate],
    target: u64,
    readable: impl Fn(&Candidate) -> bool,
) -> (Vec<&Candidate>, u64) {
    let mut picked = Vec::new();
    let mut seen = HashSet::new();
    let mut total = 0u64;
    for c in candidates {
        if total == target {
            break;
        }
        if c.size > target - total || seen.contains(&c.id) || !readable(c) {
            continue;
        }
        seen.insert(c.id);
        total += c.size;
        picked.push(c);
    }
    (picked, total)
}

/// The deepest path (most components), first in name order among the deepest.
pub fn deepest<'a>(paths: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    paths.into_iter().max_by(|a, b| depth(a).cmp(&depth(b)).then_with(|| b.cmp(a)))
}

/// Number of components of a relative path.
pub fn depth(rel: &str) -> usize {
    Path::new(rel).components().filter(|c| matches!(c, Component::Normal(_))).count()
}

/// Every entry to pack for these files: the files and all their parent directories (so the
/// archive has directory entries, as `tar -czf` of a tree has), sorted so parents come first.
fn entries(files: &[&Candidate]) -> Vec<String> {
    let mut all = BTreeSet::new();
    for f in files {
        let mut path = Path::new(&f.rel);
        all.insert(f.rel.clone());
        while let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !all.insert(parent.to_string_lossy().into_owned()) {
                break;
            }
            path = parent;
        }
    }
    all.into_iter().collect()
}

/// Builds add-ons from one source directory into a work directory, reusing what is there.
pub struct AddonBuilder {
    source: PathBuf,
    work_dir: PathBuf,
    scanned: Option<Vec<Candidate>>,
}

impl AddonBuilder {
    /// A builder picking files under `source` (made absolute) into `work_dir`.
    pub fn new(source: &Path, work_dir: &Path) -> Result<AddonBuilder, BenchError> {
        let source = std::fs::canonicalize(source).map_err(|e| BenchError::io(source, e))?;
        Ok(AddonBuilder { source, work_dir: work_dir.to_path_buf(), scanned: None })
    }

    /// The add-on of `target` bytes of content: the cached one if its description matches
    /// (same source, same target), else built anew (in a temporary directory renamed into
    /// place). `log` is told what is being done.
    pub fn get(
        &mut self,
        target: u64,
        log: &mut dyn FnMut(&str),
    ) -> Result<BuiltAddon, BenchError> {
        let label = size_label(target);
        let dir = self.work_dir.join(&label);
        if let Some(built) = self.cached(&dir, target) {
            return Ok(built);
        }
        if self.scanned.is_none() {
            log(&format!("listing the files under {} ...", self.source.display()));
            self.scanned = Some(candidates(&self.source)?);
        }
        let scanned = self.scanned.as_deref().unwrap_or_default();
        let (files, total) =
            pick(scanned, target, |c| std::fs::File::open(Path::new("/").join(&c.rel)).is_ok());
        if (total as f64) < target as f64 * MIN_FILL {
            return Err(BenchError::SourceTooSmall {
                source_dir: self.source.clone(),
                wanted: target,
                found: total,
            });
        }
        let chosen = deepest(files.iter().map(|c| c.rel.as_str())).unwrap_or_default().to_string();
        let source_rel = relative_to_root(&self.source).unwrap_or_default();
        let mut paths = BTreeSet::new();
        for f in &files {
            let inner = f.rel.strip_prefix(&source_rel).unwrap_or(&f.rel).trim_start_matches('/');
            let first = inner.split('/').next().unwrap_or(inner);
            let parts: Vec<&str> =
                [source_rel.as_str(), first].into_iter().filter(|s| !s.is_empty()).collect();
            paths.insert(format!("/{}", parts.join("/")));
        }
        let name = format!("bench-{}", label.to_lowercase());

        log(&format!(
            "packing the {label} add-on: {} files, {total} bytes (tar -czf) ...",
            files.len()
        ));
        // Built in a directory of this run's own, renamed into place at the end.
        let tmp_dir = tempfile::Builder::new()
            .prefix(&format!("{label}."))
            .suffix(".tmp")
            .tempdir_in(&self.work_dir)
            .map_err(|e| BenchError::io(&self.work_dir, e))?;
        let tmp = tmp_dir.path().to_path_buf();
        let list = tmp.join("files.list");
        let mut bytes = Vec::new();
        for e in entries(&files) {
            bytes.extend_from_slice(e.as_bytes());
            bytes.push(0);
        }
        std::fs::write(&list, bytes).map_err(|e| BenchError::io(&list, e))?;
        run_command(
            Command::new("tar")
                .arg("-czf")
                .arg(tmp.join(TARBALL))
                .args(["-C", "/", "--null", "--no-recursion", "-T"])
                .arg(&list),
        )?;
        std::fs::remove_file(&list).map_err(|e| BenchError::io(&list, e))?;
        let metadata = serde_json::json!({ "name": name, "spec": { "paths": paths } });
        let meta_path = tmp.join(METADATA);
        let text = serde_json::to_string_pretty(&metadata).unwrap_or_default() + "\n";
        std::fs::write(&meta_path, text).map_err(|e| BenchError::io(&meta_path, e))?;
        let tarball_bytes = std::fs::metadata(tmp.join(TARBALL))
            .map_err(|e| BenchError::io(tmp.join(TARBALL), e))?
            .len();
        let built = BuiltAddon {
            label,
            target_bytes: target,
            source: self.source.clone(),
            dir: dir.clone(),
            files: files.len() as u64,
            content_bytes: total,
            tarball_bytes,
            chosen_depth: depth(&chosen),
            chosen,
            name,
            paths: paths.into_iter().collect(),
        };
        let desc = tmp.join(DESCRIPTION);
        let json = serde_json::to_vec_pretty(&built).unwrap_or_default();
        std::fs::write(&desc, json).map_err(|e| BenchError::io(&desc, e))?;
        // Another run may have put the same add-on in place meanwhile: then use it.
        if let Some(theirs) = self.cached(&dir, target) {
            return Ok(theirs);
        }
        remove_all(&dir)?;
        std::fs::rename(&tmp, &dir).map_err(|e| BenchError::io(&dir, e))?;
        let _ = tmp_dir.keep();
        Ok(built)
    }

    /// The cached add-on in `dir`, if its description is readable and matches.
    fn cached(&self, dir: &Path, target: u64) -> Option<BuiltAddon> {
        let text = std::fs::read(dir.join(DESCRIPTION)).ok()?;
        let built: BuiltAddon = serde_json::from_slice(&text).ok()?;
        let ok = built.target_bytes == target
            && built.source == self.source
            && built.dir == dir
            && std::fs::metadata(built.tarball()).is_ok_and(|m| m.len() == built.tarball_bytes);
        ok.then_some(built)
    }
}

/// Removes a directory tree if it exists.
pub fn remove_all(path: &Path) -> Result<(), BenchError> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(BenchError::io(path, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(rel: &str, size: u64, ino: u64) -> Candidate {
        Candidate { rel: rel.to_string(), size, id: (1, ino) }
    }

    #[test]
    fn labels_use_the_largest_exact_binary_unit() {
        assert_eq!(size_label(1 << 20), "1M");
        assert_eq!(size_label(500 << 20), "500M");
        assert_eq!(size_label(1 << 30), "1G");
        assert_eq!(size_label(1536 << 20), "1536M");
        assert_eq!(size_label(64 << 10), "64K");
        assert_eq!(size_label(1000), "1000");
    }

    #[test]
    fn picking_fills_the_target_skipping_what_does_not_fit_and_hard_links() {
        let all = [
            cand("a", 60, 1),
            cand("b", 50, 2), // does not fit after a
            cand("c", 30, 3),
            cand("d", 30, 1), // a hard link of a
            cand("e", 10, 4),
            cand("f", 5, 5), // the target is reached before it
        ];
        let (picked, total) = pick(&all, 100, |_| true);
        let names: Vec<&str> = picked.iter().map(|c| c.rel.as_str()).collect();
        assert_eq!(names, ["a", "c", "e"]);
        assert_eq!(total, 100);
        let (picked, total) = pick(&all, 100, |c| c.rel != "a");
        let names: Vec<&str> = picked.iter().map(|c| c.rel.as_str()).collect();
        assert_eq!(names, ["b", "c", "e", "f"]);
        assert_eq!(total, 95);
    }

    #[test]
    fn the_chosen_file_is_the_deepest_then_first_by_name() {
        let paths = ["usr/a/b", "usr/x/y/z", "usr/c/d/e", "usr/lib"];
        assert_eq!(deepest(paths), Some("usr/c/d/e"));
        assert_eq!(depth("usr/c/d/e"), 4);
        assert_eq!(deepest(std::iter::empty()), None);
    }

    #[test]
    fn entries_include_every_parent_before_its_children() {
        let a = cand("usr/lib/x/a", 1, 1);
        let b = cand("usr/lib/b", 1, 2);
        let c = cand("usr/lib-2/c", 1, 3);
        let all = entries(&[&a, &b, &c]);
        assert_eq!(
            all,
            ["usr", "usr/lib", "usr/lib-2", "usr/lib-2/c", "usr/lib/b", "usr/lib/x", "usr/lib/x/a"]
        );
    }

    #[test]
    fn candidates_are_sampled_in_a_stable_order_without_symlinks_or_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        for (i, name) in ["f1", "d/f2", "d/e/f3", "d/e/f4"].iter().enumerate() {
            std::fs::write(root.join(name), vec![b'x'; i + 1]).unwrap();
        }
        std::fs::write(root.join("empty"), b"").unwrap();
        std::os::unix::fs::symlink("f1", root.join("link")).unwrap();
        let first = candidates(&root).unwrap();
        let mut names: Vec<String> = first
            .iter()
            .map(|c| c.rel.strip_prefix(&root.to_str().unwrap()[1..]).unwrap().to_string())
            .collect();
        assert_eq!(first, candidates(&root).unwrap());
        names.sort();
        assert_eq!(names, ["/d/e/f3", "/d/e/f4", "/d/f2", "/f1"]);
        let sizes: u64 = first.iter().map(|c| c.size).sum();
        assert_eq!(sizes, 1 + 2 + 3 + 4);
    }
}
