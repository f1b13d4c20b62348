//! The add-on metadata file (`metadata.json`) and the seed's rules for it.
//!
//! ```json
//! { "name": "name-of-the-addon", "spec": { "paths": ["/usr/custom_file", "/usr/bin/custom_folder"] } }
//! ```

use serde::{Deserialize, Serialize};

use crate::archive::EntryKind;
use crate::index::Index;

/// Largest metadata file accepted, in bytes.
pub const MAX_METADATA_BYTES: usize = 64 << 10;
/// Longest add-on name accepted (the seed's rule).
pub const MAX_NAME_LEN: usize = 35;
/// Longest requested path accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// The prefix of every stored identifier.
pub const IDENTIFIER_PREFIX: &str = "custom-addon-";

/// A parsed and checked metadata file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The add-on's name: `[a-z0-9_-]{1,35}`.
    pub name: String,
    /// What the add-on provides.
    pub spec: Spec,
}

/// The `spec` object of a metadata file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The absolute paths the workload symlinks to the add-on's tree.
    pub paths: Vec<String>,
}

/// One broken metadata rule. Each names the field or value and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// The file is larger than [`MAX_METADATA_BYTES`].
    #[error("metadata is {size} bytes, larger than the limit of {limit} bytes")]
    TooLarge {
        /// The size seen (at least).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The file is not valid JSON.
    #[error("metadata is not valid JSON at line {line}, column {column}: {message}")]
    InvalidJson {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// An object holds a field the format does not know.
    #[error("metadata has an unknown field `{field}` at line {line}, column {column} (allowed: `name`, `spec` with `paths`)")]
    UnknownField {
        /// The field.
        field: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// A required field is missing.
    #[error("metadata lacks the required field `{field}`")]
    MissingField {
        /// The field.
        field: String,
    },
    /// A field has the wrong JSON type (or a field appears twice).
    #[error("metadata has a wrong value at line {line}, column {column}: {message} (expected {{\"name\": string, \"spec\": {{\"paths\": [string, ...]}}}})")]
    WrongType {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// `name` is empty.
    #[error("`name` is empty; it needs 1 to {MAX_NAME_LEN} characters from [a-z0-9_-]")]
    EmptyName,
    /// `name` is longer than [`MAX_NAME_LEN`] characters.
    #[error("`name` {name:?} has {len} characters; at most {MAX_NAME_LEN} are allowed")]
    NameTooLong {
        /// The name.
        name: String,
        /// Its length in characters.
        len: usize,
    },
    /// `name` holds a character outside `[a-z0-9_-]`.
    #[error("`name` {name:?} has {ch:?} at character {position}; only lowercase letters, digits, `_` and `-` are allowed")]
    NameBadChar {
        /// The name.
        name: String,
        /// The first offending character.
        ch: char,
        /// Its 1-based position in characters.
        position: usize,
    },
    /// `spec.paths` is empty.
    #[error("`spec.paths` is empty; at least one path is required")]
    NoPaths,
    /// A path does not start with `/`.
    #[error("`spec.paths[{i}]` {path:?} is not absolute (it must start with `/`)")]
    PathNotAbsolute {
        /// Position in `spec.paths`.
        i: usize,
        /// The path.
        path: String,
    },
    /// A path is `/` itself.
    #[error("`spec.paths[{i}]` is `/`; the root cannot be requested")]
    PathIsRoot {
        /// Position in `spec.paths`.
        i: usize,
    },
    /// A path ends with `/`.
    #[error("`spec.paths[{i}]` {path:?} ends with `/`, which is not allowed")]
    PathTrailingSlash {
        /// Position in `spec.paths`.
        i: usize,
        /// The path.
        path: String,
    },
    /// A path has an empty, `.` or `..` component, or a NUL byte.
    #[error("`spec.paths[{i}]` {path:?} is not normalized: component {component:?} is not allowed (no `.`, `..`, `//` or NUL)")]
    PathNotNormalized {
        /// Position in `spec.paths`.
        i: usize,
        /// The path.
        path: String,
        /// The offending component.
        component: String,
    },
    /// A path is longer than [`MAX_PATH_LEN`].
    #[error("`spec.paths[{i}]` is {len} bytes long; at most {MAX_PATH_LEN} are allowed")]
    PathTooLong {
        /// Position in `spec.paths`.
        i: usize,
        /// Its length.
        len: usize,
    },
    /// A path appears twice.
    #[error("`spec.paths[{i}]` {path:?} duplicates `spec.paths[{first}]`")]
    DuplicatePath {
        /// Position of the repeat.
        i: usize,
        /// Position of the first occurrence.
        first: usize,
        /// The path.
        path: String,
    },
    /// One path lies inside another of the same add-on.
    #[error("`spec.paths[{i}]` {inner:?} lies inside `spec.paths[{outer_i}]` {outer:?}; a workload cannot symlink both")]
    NestedPath {
        /// Position of the inner path.
        i: usize,
        /// The inner path.
        inner: String,
        /// Position of the outer path.
        outer_i: usize,
        /// The outer path.
        outer: String,
    },
    /// A path is not in the tarball.
    #[error("`spec.paths[{i}]` {path:?} does not exist in the tarball")]
    PathNotInTarball {
        /// Position in `spec.paths`.
        i: usize,
        /// The path.
        path: String,
    },
    /// A path is in the tarball, but not as a file, directory or symlink.
    #[error("`spec.paths[{i}]` {path:?} is a {kind} in the tarball; only a file, directory or symlink can be requested")]
    PathBadKind {
        /// Position in `spec.paths`.
        i: usize,
        /// The path.
        path: String,
        /// What it is.
        kind: &'static str,
    },
}

impl Metadata {
    /// Parses a metadata file: size limit, JSON syntax and shape (unknown fields, wrong types,
    /// missing fields). The rules are checked by [`Metadata::check`].
    pub fn parse(bytes: &[u8]) -> Result<Metadata, MetadataError> {
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(MetadataError::TooLarge { size: bytes.len(), limit: MAX_METADATA_BYTES });
        }
        serde_json::from_slice(bytes).map_err(|e| classify(&e))
    }

    /// The stored identifier: `custom-addon-<name>`.
    pub fn identifier(&self) -> String {
        format!("{IDENTIFIER_PREFIX}{}", self.name)
    }

    /// Checks the seed's rules on the name and the paths; returns every problem found.
    pub fn check(&self) -> Vec<MetadataError> {
        let mut problems = Vec::new();
        if let Err(e) = check_name(&self.name) {
            problems.push(e);
        }
        if self.spec.paths.is_empty() {
            problems.push(MetadataError::NoPaths);
        }
        let mut good: Vec<(usize, &str)> = Vec::new();
        for (i, path) in self.spec.paths.iter().enumerate() {
            match check_path(i, path) {
                Err(e) => problems.push(e),
                Ok(()) => {
                    if let Some(&(first, _)) = good.iter().find(|(_, p)| *p == path) {
                        problems.push(MetadataError::DuplicatePath {
                            i,
                            first,
                            path: path.clone(),
                        });
                        continue;
                    }
                    for &(j, other) in &good {
                        let (inner, outer, ii, oi) = if is_inside(path, other) {
                            (path.as_str(), other, i, j)
                        } else if is_inside(other, path) {
                            (other, path.as_str(), j, i)
                        } else {
                            continue;
                        };
                        problems.push(MetadataError::NestedPath {
                            i: ii,
                            inner: inner.to_string(),
                            outer_i: oi,
                            outer: outer.to_string(),
                        });
                    }
                    good.push((i, path));
                }
            }
        }
        problems
    }

    /// Checks that every (well-formed) path exists in the tarball described by `index` as a
    /// file, directory or symlink; returns every problem found.
    pub fn check_against(&self, index: &Index) -> Vec<MetadataError> {
        let mut problems = Vec::new();
        for (i, path) in self.spec.paths.iter().enumerate() {
            if check_path(i, path).is_err() {
                continue;
            }
            let rel = path.trim_start_matches('/');
            let Some(attr) = index.resolve(rel.as_bytes()).and_then(|ino| index.attr(ino)) else {
                problems.push(MetadataError::PathNotInTarball { i, path: path.clone() });
                continue;
            };
            let kind = match attr.kind {
                EntryKind::File | EntryKind::Hardlink | EntryKind::Dir | EntryKind::Symlink => {
                    continue
                }
                EntryKind::CharDev => "character device",
                EntryKind::BlockDev => "block device",
                EntryKind::Fifo => "fifo",
            };
            problems.push(MetadataError::PathBadKind { i, path: path.clone(), kind });
        }
        problems
    }
}

/// Parses `bytes` and checks every rule, against the tarball's `index` when given. Returns the
/// metadata, or every problem found.
pub fn validate(bytes: &[u8], index: Option<&Index>) -> Result<Metadata, Vec<MetadataError>> {
    let metadata = Metadata::parse(bytes).map_err(|e| vec![e])?;
    let mut problems = metadata.check();
    if let Some(index) = index {
        problems.extend(metadata.check_against(index));
    }
    if problems.is_empty() {
        Ok(metadata)
    } else {
        Err(problems)
    }
}

/// Checks the name rule: 1..=35 characters from `[a-z0-9_-]`.
pub fn check_name(name: &str) -> Result<(), MetadataError> {
    if name.is_empty() {
        return Err(MetadataError::EmptyName);
    }
    if let Some((pos, ch)) = name
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(MetadataError::NameBadChar { name: name.to_string(), ch, position: pos + 1 });
    }
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Err(MetadataError::NameTooLong { name: name.to_string(), len });
    }
    Ok(())
}

/// Checks one path rule set: absolute, not `/`, no trailing `/`, normalized, bounded.
pub fn check_path(i: usize, path: &str) -> Result<(), MetadataError> {
    if path.len() > MAX_PATH_LEN {
        return Err(MetadataError::PathTooLong { i, len: path.len() });
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(MetadataError::PathNotAbsolute { i, path: path.to_string() });
    };
    if rest.is_empty() {
        return Err(MetadataError::PathIsRoot { i });
    }
    if rest.ends_with('/') {
        return Err(MetadataError::PathTrailingSlash { i, path: path.to_string() });
    }
    if let Some(component) =
        rest.split('/').find(|c| c.is_empty() || *c == "." || *c == ".." || c.contains('\0'))
    {
        return Err(MetadataError::PathNotNormalized {
            i,
            path: path.to_string(),
            component: component.to_string(),
        });
    }
    Ok(())
}

/// Whether normalized absolute path `inner` lies strictly inside `outer`.
pub fn is_inside(inner: &str, outer: &str) -> bool {
    inner.len() > outer.len()
        && inner.starts_with(outer)
        && inner.as_bytes().get(outer.len()) == Some(&b'/')
}

/// Whether two normalized absolute paths collide: equal, or one inside the other.
pub fn paths_collide(a: &str, b: &str) -> bool {
    a == b || is_inside(a, b) || is_inside(b, a)
}

/// Turns a serde_json error into the matching rule.
fn classify(e: &serde_json::Error) -> MetadataError {
    use serde_json::error::Category;
    let (line, column) = (e.line(), e.column());
    let text = e.to_string();
    // serde_json appends " at line L column C"; keep only the message.
    let message = text.split(" at line ").next().unwrap_or(&text).to_string();
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            MetadataError::InvalidJson { line, column, message }
        }
        Category::Data => {
            if let Some(field) = between_backticks(&message, "unknown field `") {
                MetadataError::UnknownField { field, line, column }
            } else if let Some(field) = between_backticks(&message, "missing field `") {
                MetadataError::MissingField { field }
            } else {
                MetadataError::WrongType { line, column, message }
            }
        }
    }
}

/// The text after `prefix` up to the next backtick, if `message` starts with `prefix`.
fn between_backticks(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    Some(rest.split('`').next().unwrap_or(rest).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(json: &str) -> Result<Metadata, Vec<MetadataError>> {
        validate(json.as_bytes(), None)
    }

    fn named(name: &str) -> Vec<MetadataError> {
        let json = serde_json::json!({"name": name, "spec": {"paths": ["/opt/x"]}}).to_string();
        meta(&json).err().unwrap_or_default()
    }

    fn pathed(paths: &[&str]) -> Vec<MetadataError> {
        let json = serde_json::json!({"name": "ok", "spec": {"paths": paths}}).to_string();
        meta(&json).err().unwrap_or_default()
    }

    #[test]
    fn the_seed_example_is_valid() {
        let m = meta(r#"{ "name" : "name-of-the-addon", "spec" : {"paths" : ["/usr/custom_file", "/usr/bin/custom_folder"]} }"#)
            .unwrap();
        assert_eq!(m.identifier(), "custom-addon-name-of-the-addon");
        assert_eq!(m.spec.paths.len(), 2);
    }

    #[test]
    fn name_with_uppercase_is_refused() {
        let p = named("Spark");
        assert!(
            matches!(&p[..], [MetadataError::NameBadChar { ch: 'S', position: 1, .. }]),
            "{p:?}"
        );
        assert!(p[0].to_string().contains("only lowercase letters"));
    }

    #[test]
    fn name_with_space_slash_or_unicode_is_refused() {
        for (name, bad, pos) in
            [("a b", ' ', 2), ("a/b", '/', 2), ("café", 'é', 4), ("a.b", '.', 2)]
        {
            let p = named(name);
            assert!(
                matches!(&p[..], [MetadataError::NameBadChar { ch, position, .. }] if *ch == bad && *position == pos),
                "{name}: {p:?}"
            );
        }
    }

    #[test]
    fn name_length_limit_is_35() {
        assert!(named(&"a".repeat(35)).is_empty());
        let p = named(&"a".repeat(36));
        assert!(matches!(&p[..], [MetadataError::NameTooLong { len: 36, .. }]), "{p:?}");
        assert!(matches!(&named("")[..], [MetadataError::EmptyName]));
        assert!(named("a-b_c9").is_empty());
    }

    #[test]
    fn path_rules() {
        assert!(matches!(&pathed(&[])[..], [MetadataError::NoPaths]));
        assert!(matches!(&pathed(&["usr/x"])[..], [MetadataError::PathNotAbsolute { i: 0, .. }]));
        assert!(matches!(
            &pathed(&["/usr/x/"])[..],
            [MetadataError::PathTrailingSlash { i: 0, .. }]
        ));
        assert!(matches!(&pathed(&["/"])[..], [MetadataError::PathIsRoot { i: 0 }]));
        for bad in ["/usr//x", "/usr/./x", "/usr/../x", "/a/."] {
            assert!(
                matches!(&pathed(&[bad])[..], [MetadataError::PathNotNormalized { .. }]),
                "{bad}"
            );
        }
        let p = pathed(&["/a", "/b", "/a"]);
        assert!(matches!(&p[..], [MetadataError::DuplicatePath { i: 2, first: 0, .. }]), "{p:?}");
        let p = pathed(&["/a/b", "/a"]);
        assert!(matches!(&p[..], [MetadataError::NestedPath { i: 0, outer_i: 1, .. }]), "{p:?}");
        assert!(pathed(&["/ab", "/a"]).is_empty());
        let p = pathed(&["rel", "/x/"]);
        assert_eq!(p.len(), 2, "every problem is reported: {p:?}");
    }

    #[test]
    fn json_shape_errors() {
        let p =
            meta("{\"name\": \"x\",\n \"spec\": {\"paths\": [\"/a\"]}, \"extra\": 1}").unwrap_err();
        assert!(
            matches!(&p[..], [MetadataError::UnknownField { field, line: 2, .. }] if field == "extra"),
            "{p:?}"
        );
        let p = meta(r#"{"name": "x", "spec": {"paths": ["/a"], "mode": 1}}"#).unwrap_err();
        assert!(
            matches!(&p[..], [MetadataError::UnknownField { field, .. }] if field == "mode"),
            "{p:?}"
        );
        let p = meta(r#"{"name": 5, "spec": {"paths": ["/a"]}}"#).unwrap_err();
        assert!(matches!(&p[..], [MetadataError::WrongType { .. }]), "{p:?}");
        let p = meta(r#"{"name": "x", "spec": {"paths": "/a"}}"#).unwrap_err();
        assert!(matches!(&p[..], [MetadataError::WrongType { .. }]), "{p:?}");
        let p = meta(r#"{"name": "x"}"#).unwrap_err();
        assert!(
            matches!(&p[..], [MetadataError::MissingField { field }] if field == "spec"),
            "{p:?}"
        );
        let p = meta("{\"name\": \"x\",\n\n  oops").unwrap_err();
        assert!(matches!(&p[..], [MetadataError::InvalidJson { line: 3, .. }]), "{p:?}");
        let p = meta("not json").unwrap_err();
        assert!(matches!(&p[..], [MetadataError::InvalidJson { line: 1, .. }]), "{p:?}");
        let p = meta(&" ".repeat(MAX_METADATA_BYTES + 1)).unwrap_err();
        assert!(matches!(&p[..], [MetadataError::TooLarge { .. }]), "{p:?}");
    }

    #[test]
    fn collisions() {
        assert!(paths_collide("/a", "/a"));
        assert!(paths_collide("/a", "/a/b"));
        assert!(paths_collide("/a/b", "/a"));
        assert!(!paths_collide("/a", "/ab"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = validate(&bytes, None);
        }

        #[test]
        fn arbitrary_names_and_paths_never_panic(name in ".{0,40}", paths in proptest::collection::vec(".{0,20}", 0..5)) {
            let json = serde_json::json!({"name": name, "spec": {"paths": paths}}).to_string();
            if let Ok(m) = validate(json.as_bytes(), None) {
                proptest::prop_assert!(check_name(&m.name).is_ok());
                proptest::prop_assert!(m.spec.paths.iter().all(|p| p.starts_with('/') && !p.ends_with('/')));
            }
        }
    }
}
