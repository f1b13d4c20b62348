//! Reading and writing a store's objects (see [`crate::addon::backend`]): whole small objects,
//! and files streamed up in parts (multipart for large ones: never the whole file in memory).

use std::io::Read;
use std::path::Path;

use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};

use super::StoreError;
use crate::addon::backend::Backend;

/// Part size of a multipart upload (S3's minimum is 5 MiB).
pub const PART_BYTES: usize = 8 << 20;
/// Parts in flight at once: with [`PART_BYTES`], what an upload to the store holds in memory.
pub const PARTS_IN_FLIGHT: usize = 2;

pub(crate) fn backend_error(
    backend: &Backend,
    rel: &str,
    source: object_store::Error,
) -> StoreError {
    StoreError::Backend { key: format!("{}: {rel}", backend.url()), source: Box::new(source) }
}

/// The object `rel`, or `None` if there is none.
pub(crate) async fn get(backend: &Backend, rel: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let fetched = async { backend.store().get(&backend.key(rel)).await?.bytes().await }.await;
    match fetched {
        Ok(bytes) => Ok(Some(bytes.to_vec())),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(backend_error(backend, rel, e)),
    }
}

/// Writes the object `rel` whole (replacing any).
pub(crate) async fn put(backend: &Backend, rel: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
    backend
        .store()
        .put(&backend.key(rel), PutPayload::from(bytes))
        .await
        .map(drop)
        .map_err(|e| backend_error(backend, rel, e))
}

/// Deletes the object `rel` (none is fine).
pub(crate) async fn delete(backend: &Backend, rel: &str) -> Result<(), StoreError> {
    match backend.store().delete(&backend.key(rel)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(backend_error(backend, rel, e)),
    }
}

/// Streams the file at `path` into the object `rel`: one put when it fits in a part, else a
/// multipart upload of [`PART_BYTES`] parts, [`PARTS_IN_FLIGHT`] at a time (aborted on error,
/// so that no parts are left behind where the store keeps them).
pub(crate) async fn put_file(backend: &Backend, rel: &str, path: &Path) -> Result<(), StoreError> {
    let file_error = |source| StoreError::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::File::open(path).map_err(file_error)?;
    let size = file.metadata().map_err(file_error)?.len();
    if size <= PART_BYTES as u64 {
        let mut bytes = Vec::with_capacity(size as usize);
        file.read_to_end(&mut bytes).map_err(file_error)?;
        return put(backend, rel, bytes).await;
    }
    let upload = backend
        .store()
        .put_multipart(&backend.key(rel))
        .await
        .map_err(|e| backend_error(backend, rel, e))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
            let _ = writer.abort().await;
            return Err(backend_error(backend, rel, e));
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(file_error(e));
            }
        };
        writer.write(&buf[..n]);
    }
    writer.finish().await.map(drop).map_err(|e| backend_error(backend, rel, e))
}

/// Whether the object `rel` can be looked up (it need not exist).
pub(crate) async fn head(backend: &Backend, rel: &str) -> Result<(), StoreError> {
    match backend.store().head(&backend.key(rel)).await {
        Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(backend_error(backend, rel, e)),
    }
}
