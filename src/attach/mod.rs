//! Attach: the workload-side step that symlinks every requested path of every enabled add-on
//! into the daemon's mount, following the seed's rule that a requested path must not exist yet
//! in the workload.
//!
//! It needs nothing but the mount: the list of enabled add-ons and their paths is the mount's
//! read-only `/.addons.json` ([`Manifest`]). It runs as the workload's (unprivileged) user,
//! or as root in a tree the workload owns: every path under the workload root is resolved
//! inside it ([`root`]), so no symlink there can steer a link outside it.

pub mod root;

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use root::{Found, ParentError, Root};

/// The name of the manifest at the root of the mount.
pub const MANIFEST_NAME: &str = ".addons.json";

/// The largest manifest read (far above what a node's add-ons need: a manifest that size is
/// not the daemon's).
pub const MANIFEST_LIMIT: u64 = 16 << 20;

/// The mount's `/.addons.json`: the enabled add-ons (`AVAILABLE` and `DEPRECATED`) and the
/// paths each one asks for. Readers ignore fields they do not know, and fields added later
/// have defaults, so older and newer daemons and attach binaries read each other's manifests.
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
    /// The add-on is deprecated: still attached, but its administrators plan to disable it.
    /// Written only when true; absent (manifests of older daemons) reads as false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deprecated: bool,
    /// Why it is deprecated. Written only when not empty; absent reads as empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Why attach or detach could not start at all.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// `--root` or `--mount` was given as an empty string.
    #[error("{flag} is empty: give a directory (`/` for the whole file system)")]
    EmptyPath {
        /// The flag.
        flag: &'static str,
    },
    /// The workload root cannot be opened.
    #[error("the workload root {}: {source} (it must be an existing directory; attach creates nothing above the requested paths)", shown(path))]
    Root {
        /// The root as given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The manifest is larger than [`MANIFEST_LIMIT`].
    #[error("{} is larger than {} MiB: not an addonfs manifest", path.display(), MANIFEST_LIMIT >> 20)]
    ManifestTooLarge {
        /// The manifest path.
        path: PathBuf,
    },
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
    /// The mount did not show the catalog revision asked for (`--min-revision`) in time.
    #[error("the mount {} shows catalog revision {have}, and at least {want} was asked for (--min-revision): the node did not catch up within {} ms (--wait)", mount.display(), waited.as_millis())]
    Behind {
        /// The mount.
        mount: PathBuf,
        /// The revision it showed last.
        have: u64,
        /// The revision asked for.
        want: u64,
        /// How long attach waited.
        waited: Duration,
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

impl AttachError {
    /// Whether the command line was at fault (exit code 2) rather than the system.
    pub fn is_usage(&self) -> bool {
        matches!(self, AttachError::EmptyPath { .. })
    }
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
    /// (attach) The attached add-ons that are deprecated, to warn the workload's user.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deprecated: Vec<Deprecation>,
}

/// A deprecated add-on in a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deprecation {
    /// Its identifier.
    pub addon: String,
    /// Why, as its administrator gave it.
    pub reason: String,
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

/// `path` for a message or a report line: as it is when it is printable UTF-8, else quoted
/// with escapes (`"/usr/a\nb"`), so a newline in a name cannot split a line.
pub fn shown(path: &Path) -> String {
    quoted(path.as_os_str())
}

/// `text` as it is when it is printable UTF-8, else quoted with escapes.
pub fn quoted(text: &OsStr) -> String {
    match text.to_str() {
        Some(s) if !s.chars().any(char::is_control) && !s.starts_with('"') => s.to_string(),
        _ => format!("{text:?}"),
    }
}

/// Parses a manifest's bytes.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Reads the manifest at the root of `mount` (at most [`MANIFEST_LIMIT`] bytes).
pub fn read_manifest(mount: &Path) -> Result<Manifest, AttachError> {
    let path = mount.join(MANIFEST_NAME);
    let unreadable = |source| AttachError::ManifestUnreadable {
        path: path.clone(),
        mount: mount.into(),
        source,
    };
    let mut text = Vec::new();
    std::fs::File::open(&path)
        .and_then(|file| file.take(MANIFEST_LIMIT + 1).read_to_end(&mut text))
        .map_err(unreadable)?;
    if text.len() as u64 > MANIFEST_LIMIT {
        return Err(AttachError::ManifestTooLarge { path });
    }
    parse_manifest(&text).map_err(|source| AttachError::ManifestInvalid { path, source })
}

/// How often [`wait_for_revision`] reads the manifest again.
const REVISION_POLL: Duration = Duration::from_millis(20);

/// Reads the manifest of `mount` until it shows at least catalog revision `want`, for at most
/// `wait` (the mount's daemon rewrites the manifest, and tells the kernel to forget it, when
/// it has applied a newer catalog). A manifest that cannot be read keeps the wait going too
/// (a node still starting); its error is the answer if the time runs out before any manifest
/// was read.
pub fn wait_for_revision(mount: &Path, want: u64, wait: Duration) -> Result<Manifest, AttachError> {
    let start = Instant::now();
    loop {
        let result = read_manifest(mount);
        let have = match result {
            Ok(manifest) if manifest.revision >= want => return Ok(manifest),
            Ok(manifest) => Some(manifest.revision),
            Err(_) if start.elapsed() < wait => None,
            Err(e) => return Err(e),
        };
        let waited = start.elapsed();
        if waited >= wait {
            return Err(AttachError::Behind {
                mount: mount.to_path_buf(),
                have: have.unwrap_or(0),
                want,
                waited,
            });
        }
        std::thread::sleep(REVISION_POLL.min(wait - waited));
    }
}

/// Parses a wait: `5s`, `500ms`, `1.5s`, or seconds without a unit; at most a day.
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1.0)
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v >= 0.0 && v * scale <= 86_400.0 => Ok(Duration::from_secs_f64(v * scale)),
        _ => Err(format!("{text:?} is not a duration (5s, 500ms) of at most a day")),
    }
}

/// The relative form of a requested absolute path, or `None` if it is not a clean absolute path
/// of plain names (the registry never lets another through, but the manifest is read from
/// outside).
pub fn relative(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    if !p.is_absolute() || path.contains('\0') {
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

/// Where one requested path of `addon` is linked: its relative path under the root, and the
/// link's target in `mount`. `None` if the path or the identifier is not clean (one plain
/// name).
pub fn plan(mount: &Path, addon: &str, path: &str) -> Option<(PathBuf, PathBuf)> {
    let rel = relative(path)?;
    if !is_identifier(OsStr::new(addon)) {
        return None;
    }
    let target = mount.join(addon).join(&rel);
    Some((rel, target))
}

/// Whether `name` can be an add-on's directory at the mount's root: one plain name, not
/// hidden (the manifest is `.addons.json`).
fn is_identifier(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty() && !bytes.starts_with(b".") && !bytes.iter().any(|&b| b == b'/' || b == 0)
}

/// The names of an absolute path once `.` and `..` are applied as text (`..` at `/` stays
/// there); `None` for a relative path.
fn lexical(path: &Path) -> Option<Vec<&OsStr>> {
    if !path.is_absolute() {
        return None;
    }
    let mut names = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(name) => names.push(name),
            Component::ParentDir => {
                names.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(names)
}

/// Whether a symlink whose text is `to` is one of attach's: once normalized it points into an
/// add-on's directory of `mount` (`MOUNT/<identifier>/...`, below the identifier). A link to
/// the mount itself, to its manifest, or out of it through `..`, is not.
pub fn is_ours(mount: &Path, to: &Path) -> bool {
    let (Some(mount), Some(to)) = (lexical(mount), lexical(to)) else { return false };
    let Some(rest) = to.strip_prefix(mount.as_slice()) else { return false };
    match rest {
        [id, _, ..] => is_identifier(id),
        _ => false,
    }
}

/// The root and the mount of a run, checked.
fn start(mount: &Path, root: &Path) -> Result<(PathBuf, Root), AttachError> {
    if mount.as_os_str().is_empty() {
        return Err(AttachError::EmptyPath { flag: "--mount" });
    }
    if root.as_os_str().is_empty() {
        return Err(AttachError::EmptyPath { flag: "--root" });
    }
    let root =
        Root::open(root).map_err(|source| AttachError::Root { path: root.into(), source })?;
    // Symlinks must point at the mount wherever they are: make it absolute.
    let mount = std::path::absolute(mount).unwrap_or_else(|_| mount.to_path_buf());
    Ok((mount, root))
}

/// What is in the way at `link`, as a reason.
fn in_the_way(found: &Found) -> String {
    match found {
        Found::Nothing => "nothing is there".to_string(),
        Found::Symlink(to) => format!("a symlink to {} is already there", shown(to)),
        Found::Other(what) => format!("{what} is already there"),
    }
}

/// Creates the symlink for one path (`rel` under the root, pointing at `target`).
fn attach_one(root: &Root, rel: &Path, target: &Path) -> Outcome {
    let failed = |reason: String| Outcome::Failed { reason };
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return failed("not a clean absolute path".to_string());
    };
    let name = Path::new(name);
    let dir = match root.dir(parent, false) {
        Ok(dir) => Some(dir),
        Err(ParentError::Missing) => None,
        Err(ParentError::Failed(reason)) => return failed(reason),
    };
    if let Some(dir) = &dir {
        match root::lookup(dir, name) {
            Ok(Found::Nothing) => {}
            Ok(Found::Symlink(to)) if to == target => return Outcome::AlreadyLinked,
            Ok(found) => return failed(in_the_way(&found)),
            Err(e) => return failed(format!("cannot inspect it: {e}")),
        }
    }
    if std::fs::symlink_metadata(target).is_err() {
        return failed(format!("{} is missing from the mount", shown(target)));
    }
    let dir = match dir.map_or_else(|| root.dir(parent, true), Ok) {
        Ok(dir) => dir,
        Err(ParentError::Failed(reason)) => return failed(reason),
        Err(ParentError::Missing) => return failed(format!("{} is missing", root.show(parent))),
    };
    match root::symlink(&dir, name, target) {
        Ok(()) => Outcome::Linked,
        Err(rustix::io::Errno::EXIST) => match root::lookup(&dir, name) {
            Ok(Found::Symlink(to)) if to == target => Outcome::AlreadyLinked,
            Ok(found) => failed(in_the_way(&found)),
            Err(e) => failed(format!("cannot inspect it: {e}")),
        },
        Err(rustix::io::Errno::ACCESS | rustix::io::Errno::PERM | rustix::io::Errno::ROFS) => {
            failed(format!(
                "no write access to {} (needed to create {})",
                root.show(parent),
                root.show(rel)
            ))
        }
        Err(e) => failed(format!("cannot create the symlink: {}", std::io::Error::from(e))),
    }
}

/// Links every requested path of every add-on in `mount`'s manifest under `root`, resolving
/// each inside `root`. A path that fails does not stop the others. `root` must exist.
pub fn attach(mount: &Path, root: &Path) -> Result<Report, AttachError> {
    attach_min(mount, root, None)
}

/// [`attach`], after waiting (bounded) until the mount shows at least a catalog revision:
/// `min` = (revision, longest wait), see [`wait_for_revision`].
pub fn attach_min(
    mount: &Path,
    root: &Path,
    min: Option<(u64, Duration)>,
) -> Result<Report, AttachError> {
    let (mount, root) = start(mount, root)?;
    let manifest = match min {
        Some((want, wait)) => wait_for_revision(&mount, want, wait)?,
        None => read_manifest(&mount)?,
    };
    let mut paths = Vec::new();
    for addon in &manifest.addons {
        for path in &addon.paths {
            let (link, target, outcome) = match plan(&mount, &addon.identifier, path) {
                Some((rel, target)) => {
                    let outcome = attach_one(&root, &rel, &target);
                    (root.path().join(&rel), target, outcome)
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
    let deprecated = manifest
        .addons
        .iter()
        .filter(|a| a.deprecated)
        .map(|a| Deprecation { addon: a.identifier.clone(), reason: a.reason.clone() })
        .collect();
    Ok(Report { mount, root: root.path().to_path_buf(), paths, deprecated })
}

/// Removes one of attach's symlinks at `rel` under the root, if it is one ([`is_ours`]).
fn detach_one(root: &Root, mount: &Path, rel: &Path) -> Outcome {
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Outcome::Failed { reason: "not a clean absolute path".to_string() };
    };
    let name = Path::new(name);
    let dir = match root.dir(parent, false) {
        Ok(dir) => dir,
        Err(ParentError::Missing) => return Outcome::Skipped { reason: "nothing there".into() },
        Err(ParentError::Failed(reason)) => return Outcome::Skipped { reason },
    };
    match root::lookup(&dir, name) {
        Ok(Found::Nothing) => Outcome::Skipped { reason: "nothing there".to_string() },
        Ok(Found::Symlink(to)) if is_ours(mount, &to) => match root::unlink(&dir, name) {
            Ok(()) => Outcome::Removed,
            Err(rustix::io::Errno::ACCESS | rustix::io::Errno::PERM | rustix::io::Errno::ROFS) => {
                Outcome::Failed {
                    reason: format!(
                        "no write access to {} (needed to remove {})",
                        root.show(parent),
                        root.show(rel)
                    ),
                }
            }
            Err(e) => {
                Outcome::Failed { reason: format!("cannot remove it: {}", std::io::Error::from(e)) }
            }
        },
        Ok(Found::Symlink(to)) => {
            Outcome::Skipped { reason: format!("a foreign symlink to {}", shown(&to)) }
        }
        Ok(Found::Other(what)) => Outcome::Skipped { reason: format!("{what} is there") },
        Err(e) => Outcome::Skipped { reason: format!("cannot inspect it: {e}") },
    }
}

/// Removes the symlinks that attach made: for every path in the manifest (and every extra path
/// given), a symlink under `root` that points into an add-on of `mount` ([`is_ours`]) is
/// removed; anything else is left alone.
pub fn detach(mount: &Path, root: &Path, extra: &[String]) -> Result<Report, AttachError> {
    let (mount, root) = start(mount, root)?;
    let mut wanted: Vec<(String, String)> = Vec::new();
    match read_manifest(&mount) {
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
        let outcome = detach_one(&root, &mount, &rel);
        let target = plan(&mount, &addon, &path).map(|(_, target)| target).unwrap_or_default();
        paths.push(PathReport { addon, path, link: root.path().join(&rel), target, outcome });
    }
    Ok(Report { mount, root: root.path().to_path_buf(), paths, deprecated: vec![] })
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
        assert_eq!(relative("/usr/a\0b"), None);
    }

    #[test]
    fn plans_need_a_plain_identifier() {
        let m = Path::new("/m");
        assert_eq!(
            plan(m, "custom-addon-x", "/usr/f"),
            Some((PathBuf::from("usr/f"), PathBuf::from("/m/custom-addon-x/usr/f")))
        );
        for id in ["", ".", "..", "a/b", "../x", "/abs", "a\0b", ".addons.json"] {
            assert_eq!(plan(m, id, "/usr/f"), None, "{id:?}");
        }
    }

    #[test]
    fn ours_is_judged_after_dot_dot() {
        let m = Path::new("/run/m");
        for (to, ours) in [
            ("/run/m/custom-addon-x/usr/f", true),
            ("/run/m/./custom-addon-x//usr/../usr/f", true),
            ("/run/x/../m/custom-addon-x/f", true),
            ("/run/m/../../../etc/hostname", false),
            ("/run/m", false),
            ("/run/m/", false),
            ("/run/m/custom-addon-x", false),
            ("/run/m/.addons.json", false),
            ("/run/m/custom-addon-x/..", false),
            ("/run/m/custom-addon-x/../../m2/y/z", false),
            ("/run/mnt/custom-addon-x/f", false),
            ("run/m/custom-addon-x/f", false),
            ("", false),
        ] {
            assert_eq!(is_ours(m, Path::new(to)), ours, "{to}");
        }
        // What attach makes, detach takes back.
        let (_, target) = plan(m, "custom-addon-x", "/a/b").expect("plan");
        assert!(is_ours(m, &target));
    }

    #[test]
    fn waits_parse_with_and_without_units() {
        assert_eq!(parse_wait("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_wait("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_wait("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_wait("0.25s"), Ok(Duration::from_millis(250)));
        for bad in ["", "s", "-1s", "5m", "1e9", "abc"] {
            assert!(parse_wait(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_mount_behind_the_revision_asked_for_fails_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let write = |rev: u64| {
            let m = Manifest { revision: rev, addons: vec![] };
            std::fs::write(dir.path().join(MANIFEST_NAME), serde_json::to_vec(&m).unwrap())
                .unwrap();
        };
        write(3);
        assert_eq!(wait_for_revision(dir.path(), 3, Duration::ZERO).unwrap().revision, 3);
        let started = Instant::now();
        let e = wait_for_revision(dir.path(), 4, Duration::from_millis(100)).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(matches!(e, AttachError::Behind { have: 3, want: 4, .. }), "{e}");
        assert!(e.to_string().contains("--min-revision"), "{e}");
        // Caught up while waiting.
        let path = dir.path().to_path_buf();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let m = Manifest { revision: 5, addons: vec![] };
            std::fs::write(path.join(MANIFEST_NAME), serde_json::to_vec(&m).unwrap()).unwrap();
        });
        assert_eq!(wait_for_revision(dir.path(), 5, Duration::from_secs(5)).unwrap().revision, 5);
        writer.join().unwrap();
    }

    #[test]
    fn unprintable_names_are_quoted() {
        assert_eq!(quoted(OsStr::new("/usr/plain name")), "/usr/plain name");
        assert_eq!(quoted(OsStr::new("/usr/a\nb")), "\"/usr/a\\nb\"");
        assert_eq!(quoted(OsStr::new("\"q")), "\"\\\"q\"");
        assert_eq!(quoted(OsStr::from_bytes(b"/x\xff")), "\"/x\\xFF\"");
    }

    #[test]
    fn manifests_with_and_without_the_deprecation_fields_read_both_ways() {
        // As daemons before DEPRECATED wrote it.
        let old = r#"{"addons": [{"identifier": "custom-addon-a", "paths": ["/opt/a"]}]}"#;
        let m: Manifest = serde_json::from_str(old).unwrap();
        assert_eq!(m.addons[0].paths, ["/opt/a"]);
        assert!(!m.addons[0].deprecated && m.addons[0].reason.is_empty());
        // An add-on that is not deprecated is written exactly as before (the manifest itself
        // gained `revision`, which older readers ignore).
        assert_eq!(m.revision, 0);
        assert_eq!(
            serde_json::to_value(&m).unwrap()["addons"],
            serde_json::from_str::<serde_json::Value>(old).unwrap()["addons"]
        );
        // A deprecated one carries both fields, and a reader of the old shape (no such fields,
        // unknown fields ignored) still gets its identifier and paths.
        let mut m = m;
        m.addons[0].deprecated = true;
        m.addons[0].reason = "use b".into();
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains(r#""deprecated":true"#) && text.contains(r#""reason":"use b""#));
        #[derive(Deserialize)]
        struct OldManifest {
            addons: Vec<OldAddon>,
        }
        #[derive(Deserialize)]
        struct OldAddon {
            identifier: String,
            paths: Vec<String>,
        }
        let old_reader: OldManifest = serde_json::from_str(&text).unwrap();
        assert_eq!(old_reader.addons[0].identifier, "custom-addon-a");
        assert_eq!(old_reader.addons[0].paths, ["/opt/a"]);
    }
}
