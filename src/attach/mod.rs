//! Attach: the workload-side step that symlinks every requested path of every enabled add-on
//! into the daemon's mount, following the seed's rule that a requested path must not exist yet
//! in the workload.
//!
//! It needs nothing but the mount: the list of enabled add-ons and their paths is the mount's
//! read-only `/.addons.json` ([`Manifest`]). It runs as the workload's (unprivileged) user.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The name of the manifest at the root of the mount.
pub const MANIFEST_NAME: &str = ".addons.json";

/// The mount's `/.addons.json`: the enabled add-ons and the paths each one asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The catalog's revision this manifest shows (absent, so 0, in manifests of daemons
    /// from before revisions).
    #[serde(default)]
    pub revision: u64,
    /// Enabled add-ons, in the order they are attached.
    pub addons: Vec<ManifestAddon>,
}

/// One enabled add-on in the [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestAddon {
    /// The add-on's identifier (`custom-addon-<name>`): its directory at the mount's root.
    pub identifier: String,
    /// Absolute paths the workload gets, each a symlink to the same path under the add-on's
    /// directory.
    pub paths: Vec<String>,
}

/// Why attach or detach could not start at all.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The manifest could not be read.
    #[error("cannot read {}: {source} (is the addonfs daemon's mount at {}?)", path.display(), mount.display())]
    ManifestUnreadable {
        /// The manifest path.
        path: PathBuf,
        /// The mount.
        mount: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error("{} is not a valid add-on manifest: {source}", path.display())]
    ManifestInvalid {
        /// The manifest path.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// What happened to one requested path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// The symlink was created.
    Linked,
    /// The right symlink was already there (a re-run).
    AlreadyLinked,
    /// The path could not be attached; the reason says why.
    Failed {
        /// What went wrong, naming what is in the way or which directory needs write access.
        reason: String,
    },
    /// (detach) The symlink into the mount was removed.
    Removed,
    /// (detach) Nothing of ours was there; a foreign file or symlink was left alone.
    Skipped {
        /// What was found.
        reason: String,
    },
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathReport {
    /// The add-on's identifier.
    pub addon: String,
    /// The requested absolute path.
    pub path: String,
    /// The symlink's location (the path under the root).
    pub link: PathBuf,
    /// Where the symlink points (into the mount).
    pub target: PathBuf,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The whole report of an attach or detach run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The mount.
    pub mount: PathBuf,
    /// The workload root.
    pub root: PathBuf,
    /// One entry per requested path.
    pub paths: Vec<PathReport>,
}

impl Report {
    /// Number of paths that failed.
    pub fn failures(&self) -> usize {
        self.paths.iter().filter(|p| matches!(p.outcome, Outcome::Failed { .. })).count()
    }

    /// One summary line.
    pub fn summary(&self) -> String {
        let count = |f: fn(&Outcome) -> bool| self.paths.iter().filter(|p| f(&p.outcome)).count();
        let addons = {
            let mut ids: Vec<&str> = self.paths.iter().map(|p| p.addon.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            ids.len()
        };
        format!(
            "{} paths of {addons} add-ons: {} linked, {} already linked, {} removed, {} skipped, {} failed",
            self.paths.len(),
            count(|o| matches!(o, Outcome::Linked)),
            count(|o| matches!(o, Outcome::AlreadyLinked)),
            count(|o| matches!(o, Outcome::Removed)),
            count(|o| matches!(o, Outcome::Skipped { .. })),
            self.failures(),
        )
    }
}

/// Reads the manifest at the root of `mount`.
pub fn read_manifest(mount: &Path) -> Result<Manifest, AttachError> {
    let path = mount.join(MANIFEST_NAME);
    let text = std::fs::read(&path).map_err(|source| AttachError::ManifestUnreadable {
        path: path.clone(),
        mount: mount.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| AttachError::ManifestInvalid { path, source })
}

/// The relative form of a requested absolute path, or `None` if it is not a clean absolute path
/// (the registry never lets one through, but the manifest is read from outside).
fn relative(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return None;
    }
    let mut rel = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(part) => rel.push(part),
            _ => return None,
        }
    }
    (!rel.as_os_str().is_empty()).then_some(rel)
}

/// The link and target locations of one requested path.
fn locations(
    mount: &Path,
    root: &Path,
    addon: &ManifestAddon,
    path: &str,
) -> Option<(PathBuf, PathBuf)> {
    let rel = relative(path)?;
    if relative(&format!("/{}", addon.identifier)).is_none_or(|id| id.components().count() != 1) {
        return None;
    }
    Some((root.join(&rel), mount.join(&addon.identifier).join(&rel)))
}

/// Describes what is at `link` (which exists).
fn describe(link: &Path) -> String {
    match std::fs::symlink_metadata(link) {
        Ok(meta) if meta.file_type().is_symlink() => match std::fs::read_link(link) {
            Ok(to) => format!("a symlink to {} is already there", to.display()),
            Err(_) => "a symlink is already there".to_string(),
        },
        Ok(meta) if meta.is_dir() => "a directory is already there".to_string(),
        Ok(meta) if meta.is_file() => "a file is already there".to_string(),
        Ok(_) => "a special file is already there".to_string(),
        Err(e) => format!("cannot inspect it: {e}"),
    }
}

/// The nearest existing ancestor of `path`, the directory that needs write access to create it.
fn nearest_existing(path: &Path) -> PathBuf {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if std::fs::symlink_metadata(d).is_ok() {
            return d.to_path_buf();
        }
        dir = d.parent();
    }
    PathBuf::from("/")
}

/// Creates the symlink for one path.
fn attach_one(link: &Path, target: &Path) -> Outcome {
    match std::fs::symlink_metadata(link) {
        Ok(_) => {
            if std::fs::read_link(link).is_ok_and(|to| to == target) {
                return Outcome::AlreadyLinked;
            }
            return Outcome::Failed { reason: describe(link) };
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Outcome::Failed { reason: format!("cannot inspect it: {e}") },
    }
    if std::fs::symlink_metadata(target).is_err() {
        return Outcome::Failed {
            reason: format!("{} is missing from the mount", target.display()),
        };
    }
    let denied = |dir: &Path| Outcome::Failed {
        reason: format!(
            "no write access to {} (needed to create {})",
            dir.display(),
            link.display()
        ),
    };
    if let Some(parent) = link.parent() {
        if let Err(e) = std::fs::create_dir_all(parent) {
            return match e.kind() {
                ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
                    denied(&nearest_existing(parent.join("x").as_path()))
                }
                _ => Outcome::Failed {
                    reason: format!("cannot create its parent {}: {e}", parent.display()),
                },
            };
        }
    }
    match std::os::unix::fs::symlink(target, link) {
        Ok(()) => Outcome::Linked,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            if std::fs::read_link(link).is_ok_and(|to| to == target) {
                Outcome::AlreadyLinked
            } else {
                Outcome::Failed { reason: describe(link) }
            }
        }
        Err(e)
            if matches!(e.kind(), ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem) =>
        {
            denied(&nearest_existing(link))
        }
        Err(e) => Outcome::Failed { reason: format!("cannot create the symlink: {e}") },
    }
}

/// Links every requested path of every add-on in `mount`'s manifest under `root`. A path that
/// fails does not stop the others.
pub fn attach(mount: &Path, root: &Path) -> Result<Report, AttachError> {
    let manifest = read_manifest(mount)?;
    // Symlinks must point at the mount wherever they are: make it absolute.
    let mount = &std::path::absolute(mount).unwrap_or_else(|_| mount.to_path_buf());
    let mut paths = Vec::new();
    for addon in &manifest.addons {
        for path in &addon.paths {
            let (link, target, outcome) = match locations(mount, root, addon, path) {
                Some((link, target)) => {
                    let outcome = attach_one(&link, &target);
                    (link, target, outcome)
                }
                None => (
                    PathBuf::new(),
                    PathBuf::new(),
                    Outcome::Failed { reason: "not a clean absolute path".to_string() },
                ),
            };
            paths.push(PathReport {
                addon: addon.identifier.clone(),
                path: path.clone(),
                link,
                target,
                outcome,
            });
        }
    }
    Ok(Report { mount: mount.to_path_buf(), root: root.to_path_buf(), paths })
}

/// Removes the symlinks that attach made: for every path in the manifest (and every extra path
/// given), a symlink under `root` that points into `mount` is removed; anything else is left
/// alone.
pub fn detach(mount: &Path, root: &Path, extra: &[String]) -> Result<Report, AttachError> {
    let mount = &std::path::absolute(mount).unwrap_or_else(|_| mount.to_path_buf());
    let mut wanted: Vec<(String, String)> = Vec::new();
    match read_manifest(mount) {
        Ok(manifest) => {
            for addon in manifest.addons {
                wanted.extend(addon.paths.into_iter().map(|p| (addon.identifier.clone(), p)));
            }
        }
        Err(e) if extra.is_empty() => return Err(e),
        Err(_) => {}
    }
    wanted.extend(extra.iter().map(|p| (String::new(), p.clone())));
    let mut paths = Vec::new();
    for (addon, path) in wanted {
        let Some(rel) = relative(&path) else {
            paths.push(PathReport {
                addon,
                path,
                link: PathBuf::new(),
                target: PathBuf::new(),
                outcome: Outcome::Failed { reason: "not a clean absolute path".to_string() },
            });
            continue;
        };
        let link = root.join(&rel);
        let outcome = match std::fs::read_link(&link) {
            Ok(to) if to.starts_with(mount) => match std::fs::remove_file(&link) {
                Ok(()) => Outcome::Removed,
                Err(e) if e.kind() == ErrorKind::PermissionDenied => Outcome::Failed {
                    reason: format!(
                        "no write access to {} (needed to remove {})",
                        nearest_existing(&link).display(),
                        link.display()
                    ),
                },
                Err(e) => Outcome::Failed { reason: format!("cannot remove it: {e}") },
            },
            Ok(to) => Outcome::Skipped { reason: format!("a foreign symlink to {}", to.display()) },
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Outcome::Skipped { reason: "nothing there".to_string() }
            }
            Err(_) => Outcome::Skipped { reason: describe(&link) },
        };
        let target = if addon.is_empty() { PathBuf::new() } else { mount.join(&addon).join(&rel) };
        paths.push(PathReport { addon, path, link, target, outcome });
    }
    Ok(Report { mount: mount.to_path_buf(), root: root.to_path_buf(), paths })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_absolute_paths_are_accepted() {
        assert_eq!(relative("/usr/custom_file"), Some(PathBuf::from("usr/custom_file")));
        assert_eq!(
            relative("/usr/bin/custom_folder"),
            Some(PathBuf::from("usr/bin/custom_folder"))
        );
        assert_eq!(relative("usr/x"), None);
        assert_eq!(relative("/usr/../etc"), None);
        assert_eq!(relative("/"), None);
    }
}
