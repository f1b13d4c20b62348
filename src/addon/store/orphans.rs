//! Orphaned objects: those of an upload whose catalog write never happened (the registry died
//! or was refused between the objects and the catalog). They are invisible (nothing references
//! them) and are deleted once older than a grace period, at the writer's start and every
//! [`INTERVAL`].
//!
//! Only keys of the form `addons/<identifier>/<upload-id>/<file>` are candidates: the files of
//! an old state directory (`addons/<identifier>/<file>`), the lease, the catalog and anything
//! else are never touched. The grace period must exceed the longest commit (objects are put
//! before the catalog names them); without a catalog nothing is deleted.

use std::time::Duration;

use futures_util::StreamExt;

use super::io::Io;
use super::{objects, read_catalog, StoreError};
use crate::addon::backend::Backend;

/// How old an unreferenced object must be before it is deleted.
pub const GRACE: Duration = Duration::from_secs(3600);
/// How often the writer looks for orphans (besides at its start).
pub const INTERVAL: Duration = Duration::from_secs(600);

/// Whether `rel` has the form of an upload's object key.
fn is_upload_object(rel: &str) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    parts.len() == 4 && parts[0] == "addons" && parts.iter().all(|p| !p.is_empty())
}

/// Deletes the orphaned objects older than `grace`; returns their keys.
pub(crate) fn sweep(
    io: &Io,
    backend: &Backend,
    grace: Duration,
) -> Result<Vec<String>, StoreError> {
    let Some(catalog) = read_catalog(io, backend)? else { return Ok(Vec::new()) };
    let referenced = catalog.referenced();
    let now = chrono_now();
    io.block(async {
        let prefix = backend.key("addons");
        let mut listing = backend.store().list(Some(&prefix));
        let mut deleted = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| objects::backend_error(backend, "addons/", e))?;
            let Some(rel) = backend.relative(&meta.location) else { continue };
            if !is_upload_object(rel) || referenced.contains(rel) {
                continue;
            }
            let age = (now - meta.last_modified.timestamp_millis()).max(0) as u64;
            if Duration::from_millis(age) < grace {
                continue;
            }
            tracing::info!(key = rel, "deleting an orphaned object");
            objects::delete(backend, rel).await?;
            if let Some(path) = backend.local_path(rel) {
                // Empty upload and add-on directories go too.
                let mut dir = path.parent();
                for _ in 0..2 {
                    let Some(d) = dir else { break };
                    if std::fs::remove_dir(d).is_err() {
                        break;
                    }
                    dir = d.parent();
                }
            }
            deleted.push(rel.to_string());
        }
        Ok(deleted)
    })
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
