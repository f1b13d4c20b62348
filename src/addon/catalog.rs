//! The catalog: the one object of a store that changes (`catalog.json`), listing every add-on
//! with its record, its requested paths and the keys of its immutable objects, and the store's
//! revision.
//!
//! ```json
//! {"format": 1, "revision": 7,
//!  "addons": [{"id": 1, "identifier": "custom-addon-a", "component": "Custom", "display_name": "a",
//!              "status": "AVAILABLE", "manageable": true, "created_at": "2026-11-30T20:00:00Z",
//!              "reason": "", "size": 213, "sha256": "<hex>",
//!              "paths": ["/opt/a"],
//!              "objects": {"tarball": "addons/custom-addon-a/<upload-id>/addon.tar.gz",
//!                          "index": "addons/custom-addon-a/<upload-id>/addon.tar.gz.addonfs-index",
//!                          "metadata": "addons/custom-addon-a/<upload-id>/metadata.json"},
//!              "index_size": 1234, "index_sha256": "<hex>",
//!              "index_head_size": 456, "index_head_sha256": "<hex>"}]}
//! ```
//!
//! `index_head_size` and `index_head_sha256` (both or neither) describe the index's head: the
//! prefix `[0, index_head_size)` of a format-2 index that holds everything but the access
//! points' windows, so a node can fetch and check it alone and read the rest lazily (issue
//! 13). A catalog written before them, or an add-on whose index is format 1, has neither, and
//! nodes fetch that add-on whole. A node older than these fields refuses a catalog that has
//! them (`deny_unknown_fields`): upgrade nodes before the registry.
//!
//! A node reads it from a store it does not trust more than the network: [`Catalog::parse`]
//! bounds its size, refuses unknown fields and checks every rule a registry keeps (identifier
//! and name rules, object keys under `addons/<identifier>/` with no way out, hex digests,
//! unique ids and identifiers, enabled add-ons' paths not colliding). Every refusal names the
//! entry, the field and the rule. That the revision never goes backwards is the reader's check:
//! it needs the revision it saw before.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::metadata::{check_name, check_path, IDENTIFIER_PREFIX, MAX_METADATA_BYTES};
use super::store::TARBALL_FILE;
use super::store::{Record, Status, COMPONENT, INDEX_FILE, MAX_REASON_CHARS, METADATA_FILE};

/// The catalog's key, relative to the store's prefix.
pub const CATALOG_KEY: &str = "catalog.json";
/// The format this code writes and reads.
pub const FORMAT: u32 = 1;
/// Largest catalog accepted, in bytes (a record is a few hundred bytes: room for ~100,000
/// add-ons).
pub const MAX_CATALOG_BYTES: usize = 64 << 20;
/// Most add-ons accepted in one catalog.
pub const MAX_ADDONS: usize = 100_000;
/// Most paths one add-on may request (the metadata's own size limit bounds them anyway).
pub const MAX_PATHS: usize = MAX_METADATA_BYTES / 4;
/// Longest object key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// Longest upload id accepted (the directory between the identifier and the file name).
pub const MAX_UPLOAD_ID_LEN: usize = 64;

/// The whole catalog.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Catalog {
    /// Bumped by every change; never goes backwards.
    pub revision: u64,
    /// Every add-on, by ascending id.
    pub addons: Vec<Entry>,
}

/// One add-on in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its API record.
    pub record: Record,
    /// The paths its metadata requests.
    pub paths: Vec<String>,
    /// Where its immutable objects are.
    pub objects: Objects,
    /// Size of the index object in bytes.
    pub index_size: u64,
    /// SHA-256 of the index object, lowercase hex.
    pub index_sha256: String,
    /// The index's head (a format-2 index), so a node can read the add-on lazily.
    pub index_head: Option<IndexHead>,
}

/// The head of a format-2 index: its first `size` bytes (everything but the windows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexHead {
    /// Bytes of the head, `1..=index_size`.
    pub size: u64,
    /// SHA-256 of those bytes, lowercase hex.
    pub sha256: String,
}

/// The keys (relative to the store's prefix) of an add-on's objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objects {
    /// The archive as uploaded.
    pub tarball: String,
    /// Its index.
    pub index: String,
    /// The metadata as uploaded.
    pub metadata: String,
}

impl Objects {
    /// The keys of a new upload: `addons/<identifier>/<upload_id>/<file>`.
    pub fn new(identifier: &str, upload_id: &str) -> Objects {
        let dir = format!("addons/{identifier}/{upload_id}");
        Objects {
            tarball: format!("{dir}/{TARBALL_FILE}"),
            index: format!("{dir}/{INDEX_FILE}"),
            metadata: format!("{dir}/{METADATA_FILE}"),
        }
    }

    /// The keys of an add-on in the layout of a state directory from before stores
    /// (`addons/<identifier>/<file>`, no upload id).
    pub fn legacy(identifier: &str) -> Objects {
        let dir = format!("addons/{identifier}");
        Objects {
            tarball: format!("{dir}/{TARBALL_FILE}"),
            index: format!("{dir}/{INDEX_FILE}"),
            metadata: format!("{dir}/{METADATA_FILE}"),
        }
    }

    /// The three keys.
    pub fn keys(&self) -> [&str; 3] {
        [&self.tarball, &self.index, &self.metadata]
    }
}

/// The catalog as it is written: the record's fields flat in each entry.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    format: u32,
    revision: u64,
    addons: Vec<WireEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEntry {
    id: u64,
    identifier: String,
    component: String,
    display_name: String,
    status: Status,
    manageable: bool,
    created_at: String,
    reason: String,
    size: u64,
    sha256: String,
    paths: Vec<String>,
    objects: Objects,
    index_size: u64,
    index_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index_head_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index_head_sha256: Option<String>,
}

impl From<WireEntry> for Entry {
    fn from(w: WireEntry) -> Entry {
        // One without the other is kept as a broken head (size 0 or an empty digest), so
        // `check` names it rather than the parser dropping it silently.
        let index_head = match (w.index_head_size, w.index_head_sha256) {
            (None, None) => None,
            (size, sha256) => {
                Some(IndexHead { size: size.unwrap_or(0), sha256: sha256.unwrap_or_default() })
            }
        };
        Entry {
            record: Record {
                id: w.id,
                identifier: w.identifier,
                component: w.component,
                display_name: w.display_name,
                status: w.status,
                manageable: w.manageable,
                created_at: w.created_at,
                reason: w.reason,
                size: w.size,
                sha256: w.sha256,
            },
            paths: w.paths,
            objects: w.objects,
            index_size: w.index_size,
            index_sha256: w.index_sha256,
            index_head,
        }
    }
}

impl From<&Entry> for WireEntry {
    fn from(e: &Entry) -> WireEntry {
        let r = e.record.clone();
        WireEntry {
            id: r.id,
            identifier: r.identifier,
            component: r.component,
            display_name: r.display_name,
            status: r.status,
            manageable: r.manageable,
            created_at: r.created_at,
            reason: r.reason,
            size: r.size,
            sha256: r.sha256,
            paths: e.paths.clone(),
            objects: e.objects.clone(),
            index_size: e.index_size,
            index_sha256: e.index_sha256.clone(),
            index_head_size: e.index_head.as_ref().map(|h| h.size),
            index_head_sha256: e.index_head.as_ref().map(|h| h.sha256.clone()),
        }
    }
}

/// A catalog that breaks a rule: where (`at`, e.g. `addons[3] (custom-addon-x).objects.index`)
/// and which rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{CATALOG_KEY}: {at}: {rule}")]
pub struct CatalogError {
    /// Where in the catalog: `the file`, `format`, `addons[i] (identifier).field`.
    pub at: String,
    /// The rule broken.
    pub rule: String,
}

fn bad(at: impl Into<String>, rule: impl Into<String>) -> CatalogError {
    CatalogError { at: at.into(), rule: rule.into() }
}

impl Catalog {
    /// Parses and checks a catalog from untrusted bytes (see the module's rules).
    pub fn parse(bytes: &[u8]) -> Result<Catalog, CatalogError> {
        if bytes.len() > MAX_CATALOG_BYTES {
            return Err(bad(
                "the file",
                format!("{} bytes, larger than the limit of {MAX_CATALOG_BYTES}", bytes.len()),
            ));
        }
        // The format first, so that a newer registry's catalog is named as such rather than
        // as a field this version does not know.
        #[derive(Deserialize)]
        struct Head {
            format: Option<serde_json::Value>,
        }
        let head: Head = serde_json::from_slice(bytes)
            .map_err(|e| bad("the file", format!("not a JSON object: {e}")))?;
        match head.format.as_ref().and_then(serde_json::Value::as_u64) {
            Some(f) if f == u64::from(FORMAT) => {}
            Some(f) => {
                return Err(bad(
                    "format",
                    format!("format {f} is not known to this version (it reads format {FORMAT}); upgrade the node"),
                ))
            }
            None => return Err(bad("format", "missing or not a number")),
        }
        let wire: Wire = serde_json::from_slice(bytes)
            .map_err(|e| bad("the file", format!("not a format-{FORMAT} catalog: {e}")))?;
        let catalog = Catalog {
            revision: wire.revision,
            addons: wire.addons.into_iter().map(Entry::from).collect(),
        };
        catalog.check()?;
        Ok(catalog)
    }

    /// The catalog as written to the store (pretty JSON; entries in the order held).
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire = Wire {
            format: FORMAT,
            revision: self.revision,
            addons: self.addons.iter().map(WireEntry::from).collect(),
        };
        // Serializing plain structs of strings and numbers cannot fail.
        serde_json::to_vec_pretty(&wire).unwrap_or_default()
    }

    /// Checks every rule (see the module); the first broken one is returned.
    pub fn check(&self) -> Result<(), CatalogError> {
        if self.addons.len() > MAX_ADDONS {
            return Err(bad(
                "addons",
                format!("{} add-ons, more than the limit of {MAX_ADDONS}", self.addons.len()),
            ));
        }
        let mut last_id = 0;
        let mut identifiers = HashSet::new();
        // Every enabled add-on's path, to find collisions without comparing every pair.
        let mut enabled: HashMap<&str, &str> = HashMap::new();
        for (i, entry) in self.addons.iter().enumerate() {
            let at = |field: &str| {
                format!("addons[{i}] ({}).{field}", printable(&entry.record.identifier))
            };
            check_entry(entry, &at)?;
            if entry.record.id <= last_id {
                return Err(bad(
                    at("id"),
                    format!(
                        "id {} after id {last_id}: ids are unique and in ascending order",
                        entry.record.id
                    ),
                ));
            }
            last_id = entry.record.id;
            if !identifiers.insert(entry.record.identifier.as_str()) {
                return Err(bad(at("identifier"), "used by two add-ons; identifiers are unique"));
            }
            if entry.record.status.is_enabled() {
                for path in &entry.paths {
                    if let Some(other) = colliding(&enabled, path) {
                        return Err(bad(
                            at("paths"),
                            format!("`{path}` collides with a path of the enabled add-on `{other}`; two enabled add-ons cannot request the same path or one inside the other"),
                        ));
                    }
                }
                for path in &entry.paths {
                    enabled.insert(path, &entry.record.identifier);
                }
            }
        }
        Ok(())
    }

    /// The entry with this identifier.
    pub fn find(&self, identifier: &str) -> Option<&Entry> {
        self.addons.iter().find(|e| e.record.identifier == identifier)
    }

    /// Every object key the catalog references.
    pub fn referenced(&self) -> HashSet<&str> {
        self.addons.iter().flat_map(|e| e.objects.keys()).collect()
    }

    /// The entries by id.
    pub fn by_id(&self) -> BTreeMap<u64, &Entry> {
        self.addons.iter().map(|e| (e.record.id, e)).collect()
    }
}

/// The identifier of an enabled add-on one of whose paths collides with `path` (equal, inside
/// it, or it inside `path`), if any.
fn colliding<'a>(enabled: &HashMap<&str, &'a str>, path: &str) -> Option<&'a str> {
    // Equal, or an ancestor of `path` is requested.
    let mut prefix = path;
    loop {
        if let Some(other) = enabled.get(prefix) {
            return Some(other);
        }
        match prefix.rfind('/') {
            Some(0) | None => break,
            Some(cut) => prefix = &prefix[..cut],
        }
    }
    // `path` is an ancestor of a requested path (rare: checked by scanning).
    enabled.iter().find(|(p, _)| super::metadata::is_inside(p, path)).map(|(_, id)| *id)
}

/// A bounded, printable rendering of untrusted text for error messages.
fn printable(text: &str) -> String {
    let mut out: String = text.chars().take(80).flat_map(char::escape_debug).collect();
    if text.chars().count() > 80 {
        out.push('…');
    }
    out
}

fn check_entry(entry: &Entry, at: &dyn Fn(&str) -> String) -> Result<(), CatalogError> {
    let r = &entry.record;
    if r.id == 0 {
        return Err(bad(at("id"), "ids start at 1"));
    }
    let Some(name) = r.identifier.strip_prefix(IDENTIFIER_PREFIX) else {
        return Err(bad(at("identifier"), format!("does not start with `{IDENTIFIER_PREFIX}`")));
    };
    check_name(name).map_err(|e| bad(at("identifier"), e.to_string()))?;
    if r.display_name != name {
        return Err(bad(
            at("display_name"),
            format!(
                "`{}` is not the name in the identifier (`{name}`)",
                printable(&r.display_name)
            ),
        ));
    }
    if r.component != COMPONENT {
        return Err(bad(at("component"), format!("must be `{COMPONENT}`")));
    }
    if !r.manageable {
        return Err(bad(at("manageable"), "custom add-ons are always manageable"));
    }
    match r.status {
        Status::Available | Status::Deprecated | Status::Disabled => {}
        other => {
            return Err(bad(
                at("status"),
                format!("{} is never stored; AVAILABLE, DEPRECATED or DISABLED", other.as_str()),
            ))
        }
    }
    if r.status == Status::Available && !r.reason.is_empty() {
        return Err(bad(at("reason"), "an AVAILABLE add-on has no reason"));
    }
    if r.reason.chars().count() > MAX_REASON_CHARS || r.reason.chars().any(char::is_control) {
        return Err(bad(
            at("reason"),
            format!("one line of at most {MAX_REASON_CHARS} characters"),
        ));
    }
    if !is_rfc3339_utc(&r.created_at) {
        return Err(bad(at("created_at"), "not an RFC 3339 UTC time (YYYY-MM-DDTHH:MM:SSZ)"));
    }
    check_hex(&r.sha256).map_err(|rule| bad(at("sha256"), rule))?;
    check_hex(&entry.index_sha256).map_err(|rule| bad(at("index_sha256"), rule))?;
    if entry.index_size == 0 {
        return Err(bad(at("index_size"), "an index is never empty"));
    }
    if let Some(head) = &entry.index_head {
        if head.sha256.is_empty() {
            return Err(bad(at("index_head_sha256"), "missing: given with index_head_size only"));
        }
        check_hex(&head.sha256).map_err(|rule| bad(at("index_head_sha256"), rule))?;
        if head.size == 0 || head.size > entry.index_size {
            return Err(bad(
                at("index_head_size"),
                format!(
                    "{} is not within 1..={} (the index's size); given with index_head_sha256 \
                     it is required",
                    head.size, entry.index_size
                ),
            ));
        }
    }
    if entry.paths.is_empty() || entry.paths.len() > MAX_PATHS {
        return Err(bad(at("paths"), format!("1 to {MAX_PATHS} paths")));
    }
    for (i, path) in entry.paths.iter().enumerate() {
        check_path(i, path).map_err(|e| bad(at("paths"), e.to_string()))?;
        if entry.paths[..i].iter().any(|q| super::metadata::paths_collide(path, q)) {
            return Err(bad(
                at("paths"),
                format!("`{path}` collides with another path of the same add-on"),
            ));
        }
    }
    let o = &entry.objects;
    let dir = check_key(&r.identifier, &o.tarball, TARBALL_FILE)
        .map_err(|rule| bad(at("objects.tarball"), rule))?;
    for (field, key, file) in
        [("objects.index", &o.index, INDEX_FILE), ("objects.metadata", &o.metadata, METADATA_FILE)]
    {
        let d = check_key(&r.identifier, key, file).map_err(|rule| bad(at(field), rule))?;
        if d != dir {
            return Err(bad(at(field), "not in the same directory as objects.tarball"));
        }
    }
    Ok(())
}

/// Checks an object key: `addons/<identifier>/[<upload-id>/]<file>`, the upload id from
/// `[0-9A-Za-z_-]`; returns its directory.
fn check_key<'k>(identifier: &str, key: &'k str, file: &str) -> Result<&'k str, String> {
    if key.len() > MAX_KEY_LEN {
        return Err(format!("{} bytes, longer than the limit of {MAX_KEY_LEN}", key.len()));
    }
    let shown = printable(key);
    let rule = format!("`{shown}` is not `addons/{identifier}/<upload-id>/{file}`");
    let rest = key
        .strip_prefix("addons/")
        .and_then(|r| r.strip_prefix(identifier))
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| rule.clone())?;
    let dir_len = key.len() - file.len() - 1;
    let middle = rest.strip_suffix(file).ok_or_else(|| rule.clone())?;
    match middle {
        "" => Ok(&key[..dir_len]),
        m => {
            let id = m.strip_suffix('/').ok_or_else(|| rule.clone())?;
            let good = !id.is_empty()
                && id.len() <= MAX_UPLOAD_ID_LEN
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if good {
                Ok(&key[..dir_len])
            } else {
                Err(format!("{rule}: the upload id is 1 to {MAX_UPLOAD_ID_LEN} of [0-9A-Za-z_-]"))
            }
        }
    }
}

fn check_hex(text: &str) -> Result<(), String> {
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err("not a SHA-256 digest (64 lowercase hex digits)".to_string())
    }
}

fn is_rfc3339_utc(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// A fresh upload id: `<unix-ms>-<16 random hex digits>`, so that two uploads (even of the
/// same identifier, by two registries) never share a key.
pub fn new_upload_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{ms}-{:016x}", random_u64())
}

/// 64 random bits from the operating system (falls back to hashing the time and the process,
/// which is unique enough for an upload id).
pub fn random_u64() -> u64 {
    use std::io::Read;
    let mut buf = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).is_ok() {
        return u64::from_le_bytes(buf);
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, name: &str, paths: &[&str], status: Status) -> Entry {
        let identifier = format!("{IDENTIFIER_PREFIX}{name}");
        Entry {
            record: Record {
                id,
                identifier: identifier.clone(),
                component: COMPONENT.to_string(),
                display_name: name.to_string(),
                status,
                manageable: true,
                created_at: "2026-11-30T20:00:00Z".to_string(),
                reason: if status == Status::Available { String::new() } else { "x".into() },
                size: 213,
                sha256: "ab".repeat(32),
            },
            paths: paths.iter().map(|p| p.to_string()).collect(),
            objects: Objects::new(&identifier, "1764532800000-00ff00ff00ff00ff"),
            index_size: 99,
            index_sha256: "cd".repeat(32),
            index_head: (id % 2 == 1).then(|| IndexHead { size: 40, sha256: "ef".repeat(32) }),
        }
    }

    fn sample() -> Catalog {
        Catalog {
            revision: 7,
            addons: vec![
                entry(1, "a", &["/opt/a", "/usr/bin/a"], Status::Available),
                entry(2, "b", &["/opt/a"], Status::Disabled),
                entry(4, "c", &["/opt/c"], Status::Deprecated),
            ],
        }
    }

    #[test]
    fn round_trips() {
        let c = sample();
        let bytes = c.to_bytes();
        assert_eq!(Catalog::parse(&bytes).unwrap(), c);
        let mut legacy = sample();
        legacy.addons[0].objects = Objects::legacy("custom-addon-a");
        assert_eq!(Catalog::parse(&legacy.to_bytes()).unwrap(), legacy);
        assert_eq!(Catalog::parse(&Catalog::default().to_bytes()).unwrap(), Catalog::default());
    }

    /// Edits the sample's JSON and returns the error's text.
    fn refused(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
        edit(&mut v);
        let bytes = serde_json::to_vec(&v).unwrap();
        Catalog::parse(&bytes).unwrap_err().to_string()
    }

    /// A change to a valid catalog, and the words its refusal must contain.
    type Case = (Box<dyn FnOnce(&mut serde_json::Value)>, &'static [&'static str]);

    #[test]
    fn every_rule_is_named() {
        let cases: Vec<Case> = vec![
            (Box::new(|v| v["format"] = 2.into()), &["format 2", "upgrade"]),
            (Box::new(|v| v["extra"] = 1.into()), &["unknown field `extra`"]),
            (
                Box::new(|v| {
                    v["addons"][0]["objects"]["tarball"] =
                        "addons/custom-addon-a/../x/addon.tar.gz".into()
                }),
                &["addons[0] (custom-addon-a).objects.tarball", "upload id"],
            ),
            (
                Box::new(|v| {
                    v["addons"][0]["objects"]["index"] =
                        "addons/custom-addon-b/1/addon.tar.gz.addonfs-index".into()
                }),
                &["addons[0] (custom-addon-a).objects.index", "is not `addons/custom-addon-a/"],
            ),
            (
                Box::new(|v| {
                    v["addons"][0]["objects"]["metadata"] =
                        "addons/custom-addon-a/2/metadata.json".into()
                }),
                &["objects.metadata", "same directory"],
            ),
            (
                Box::new(|v| v["addons"][1]["identifier"] = "custom-addon-B".into()),
                &["addons[1] (custom-addon-B).identifier", "lowercase"],
            ),
            (Box::new(|v| v["addons"][1]["identifier"] = "other-b".into()), &["custom-addon-"]),
            (Box::new(|v| v["addons"][1]["display_name"] = "z".into()), &["display_name"]),
            (Box::new(|v| v["addons"][1]["sha256"] = "AB".repeat(32).into()), &["sha256", "hex"]),
            (Box::new(|v| v["addons"][2]["index_sha256"] = "ab".into()), &["index_sha256"]),
            (
                Box::new(|v| v["addons"][0]["index_head_size"] = 100.into()),
                &["addons[0] (custom-addon-a).index_head_size", "100", "1..=99"],
            ),
            (
                Box::new(|v| v["addons"][0]["index_head_size"] = 0.into()),
                &["index_head_size", "within"],
            ),
            (
                Box::new(|v| v["addons"][0]["index_head_sha256"] = "EF".repeat(32).into()),
                &["index_head_sha256", "hex"],
            ),
            (
                Box::new(|v| {
                    v["addons"][0].as_object_mut().unwrap().remove("index_head_sha256");
                }),
                &["addons[0] (custom-addon-a).index_head_sha256", "missing"],
            ),
            (
                Box::new(|v| {
                    v["addons"][0].as_object_mut().unwrap().remove("index_head_size");
                }),
                &["addons[0] (custom-addon-a).index_head_size", "required"],
            ),
            (
                Box::new(|v| v["addons"][2]["id"] = 1.into()),
                &["addons[2] (custom-addon-c).id", "ascending"],
            ),
            (Box::new(|v| v["addons"][2]["status"] = "DELETED".into()), &["status", "DELETED"]),
            (Box::new(|v| v["addons"][0]["reason"] = "x".into()), &["reason", "AVAILABLE"]),
            (Box::new(|v| v["addons"][2]["reason"] = "a\nb".into()), &["reason", "one line"]),
            (Box::new(|v| v["addons"][2]["created_at"] = "yesterday".into()), &["created_at"]),
            (Box::new(|v| v["addons"][2]["paths"] = serde_json::json!([])), &["paths"]),
            (
                Box::new(|v| v["addons"][2]["paths"] = serde_json::json!(["opt/c"])),
                &["paths", "absolute"],
            ),
            // Enabling b next to a (both request /opt/a).
            (
                Box::new(|v| v["addons"][1]["status"] = "DEPRECATED".into()),
                &["addons[1] (custom-addon-b).paths", "custom-addon-a"],
            ),
            (
                Box::new(|v| v["addons"][2]["paths"] = serde_json::json!(["/opt"])),
                &["`/opt`", "custom-addon-a"],
            ),
            (
                Box::new(|v| v["addons"][2]["paths"] = serde_json::json!(["/opt/a/x"])),
                &["`/opt/a/x`", "custom-addon-a"],
            ),
            (
                Box::new(|v| v["addons"][2]["identifier"] = "custom-addon-a".into()),
                &["display_name"],
            ),
        ];
        for (edit, parts) in cases {
            let text = refused(edit);
            assert!(text.starts_with("catalog.json: "), "{text}");
            for part in parts {
                assert!(text.contains(part), "{part:?} not in {text}");
            }
        }
        for bytes in [&b""[..], b"[]", b"{", b"{\"format\": \"1\"}", b"\xff"] {
            let e = Catalog::parse(bytes).unwrap_err();
            assert!(e.to_string().starts_with("catalog.json: "), "{e}");
        }
        let big = vec![b' '; MAX_CATALOG_BYTES + 1];
        assert!(Catalog::parse(&big).unwrap_err().to_string().contains("limit"));
    }

    #[test]
    fn duplicate_identifiers_are_refused() {
        let mut c = sample();
        c.addons[2] = entry(4, "a", &["/opt/z"], Status::Disabled);
        let e = Catalog::parse(&c.to_bytes()).unwrap_err();
        assert!(e.to_string().contains("unique"), "{e}");
    }

    #[test]
    fn upload_ids_are_valid_keys_and_differ() {
        let a = new_upload_id();
        let b = new_upload_id();
        assert_ne!(a, b);
        let o = Objects::new("custom-addon-a", &a);
        assert_eq!(
            check_key("custom-addon-a", &o.tarball, TARBALL_FILE).unwrap(),
            format!("addons/custom-addon-a/{a}")
        );
    }
}
