//! The upload route (`POST /api/v2/runtimeaddons/custom`): a multipart body with `metadata` and
//! `tarball`, streamed into the store's staging and indexed in the same pass.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{answer, internal, within_body_timeout, ApiError, App, Code};
use crate::addon::metadata::{self, Metadata, MAX_METADATA_BYTES};
use crate::addon::store::Staging;
use crate::addon::{Record, Store};
use crate::index::open::OpenError;
use crate::index::Index;

pub(super) async fn upload_route(State(app): State<Arc<App>>, req: Request) -> Response {
    let result = upload(&app, req).await;
    app.health.counters().upload(result.is_ok());
    answer(result.map(|r| Json(r).into_response()))
}

fn invalid_metadata(problems: &[metadata::MetadataError]) -> ApiError {
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    ApiError::new(Code::InvalidArgument, format!("invalid metadata: {}", text.join("; ")))
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::new(Code::InvalidArgument, format!("bad multipart body: {}", e.body_text()))
}

pub(crate) async fn upload(app: &App, req: Request) -> Result<Record, ApiError> {
    // Before the body is read: a refused client (curl waits for `100 Continue`) sends nothing.
    let Ok(_permit) = Arc::clone(&app.uploads).try_acquire_owned() else {
        return Err(ApiError::new(
            Code::TooManyUploads,
            format!(
                "too many uploads at once: {} are being indexed (the limit); retry later",
                app.limits.max_uploads
            ),
        ));
    };
    let mut multipart = Multipart::from_request(req, &()).await.map_err(|e| {
        ApiError::new(
            Code::InvalidArgument,
            format!("expected multipart/form-data: {}", e.body_text()),
        )
    })?;
    let result = upload_parts(app, &mut multipart).await;
    // The builder's many small allocations are freed by now: give the pages back.
    crate::process::trim_heap();
    if result.is_err() {
        // Refused early (not an archive, a broken rule): the staging is gone already. Read the
        // rest of what the client is still sending, within a budget, so that it gets the
        // error envelope instead of a connection reset in the middle of its upload.
        drain(&mut multipart, DRAIN_BUDGET.min(app.limits.max_upload)).await;
    }
    result
}

/// How much of a refused upload's remaining body is read and dropped before answering.
const DRAIN_BUDGET: u64 = 256 << 20;

/// Longest wait for the next bytes of a refused upload's body before answering anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads and drops the rest of a multipart body, at most `budget` bytes; stops at any error.
async fn drain(multipart: &mut Multipart, budget: u64) {
    let mut left = budget;
    let limit = DRAIN_TIMEOUT;
    while let Ok(Ok(Some(mut field))) = tokio::time::timeout(limit, multipart.next_field()).await {
        while let Ok(Ok(Some(chunk))) = tokio::time::timeout(limit, field.chunk()).await {
            left = left.saturating_sub(chunk.len() as u64);
            if left == 0 {
                return;
            }
        }
    }
}

/// The parts of an upload: `metadata` and `tarball`, in either order.
async fn upload_parts(app: &App, multipart: &mut Multipart) -> Result<Record, ApiError> {
    let staging = app.store.stage()?;
    let mut metadata_bytes: Option<Vec<u8>> = None;
    let mut index: Option<Index> = None;
    while let Some(field) =
        within_body_timeout(app, async { multipart.next_field().await.map_err(multipart_error) })
            .await?
    {
        match field.name() {
            Some("metadata") if metadata_bytes.is_none() => {
                let bytes = read_metadata_part(app, field).await?;
                // Check the rules now, before a large tarball streams in (or, when the tarball
                // came first, before it is committed).
                let metadata =
                    metadata::validate(&bytes, None).map_err(|p| invalid_metadata(&p))?;
                app.store.check_new(&metadata)?;
                metadata_bytes = Some(bytes);
            }
            Some("tarball") if index.is_none() => {
                index = Some(stream_and_index(app, &staging, field).await?);
            }
            Some(name @ ("metadata" | "tarball")) => {
                return Err(ApiError::new(
                    Code::InvalidArgument,
                    format!("the part `{name}` appears twice"),
                ))
            }
            other => {
                let part = match other {
                    Some(name) => format!("an unexpected part named `{name}`"),
                    None => "a part without a name".to_string(),
                };
                return Err(ApiError::new(
                    Code::InvalidArgument,
                    format!("the body has {part}; the parts are `metadata` and `tarball`"),
                ));
            }
        }
    }
    let Some(metadata_bytes) = metadata_bytes else {
        return Err(ApiError::new(
            Code::InvalidArgument,
            "the multipart part `metadata` is missing",
        ));
    };
    let Some(index) = index else {
        return Err(ApiError::new(
            Code::InvalidArgument,
            "the multipart part `tarball` is missing",
        ));
    };
    let store = Arc::clone(&app.store);
    tokio::task::spawn_blocking(move || check_and_commit(&store, staging, &metadata_bytes, &index))
        .await
        .map_err(|e| internal("the commit task failed", &e))?
}

/// Reads the `metadata` part (at most [`MAX_METADATA_BYTES`]).
async fn read_metadata_part(
    app: &App,
    mut field: axum::extract::multipart::Field<'_>,
) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) =
        within_body_timeout(app, async { field.chunk().await.map_err(multipart_error) }).await?
    {
        if bytes.len() + chunk.len() > MAX_METADATA_BYTES {
            return Err(ApiError::new(
                Code::InvalidArgument,
                format!("invalid metadata: the `metadata` part is larger than the limit of {MAX_METADATA_BYTES} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Body chunks in flight between the request and the indexing thread (a few hundred KiB at
/// most: multipart chunks are small).
const UPLOAD_CHANNEL: usize = 32;

/// What the request side sends the indexing thread.
enum Piece {
    /// The next bytes of the tarball.
    Data(axum::body::Bytes),
    /// The whole tarball was received.
    End,
}

/// Streams the `tarball` part into the staging directory and indexes it in the same pass (see
/// [`crate::index::open::build_streaming`]): chunks go through a bounded channel to a blocking
/// thread that writes, hashes and scans them. Refuses a part past the upload limit.
async fn stream_and_index(
    app: &App,
    staging: &Staging,
    mut field: axum::extract::multipart::Field<'_>,
) -> Result<Index, ApiError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Piece>(UPLOAD_CHANNEL);
    let path = staging.tarball();
    let scan = app.limits.scan;
    let task = tokio::task::spawn_blocking(move || {
        crate::index::open::build_streaming(&path, PieceReader::new(rx), &scan)
    });
    // Feeds the thread; `Ok(false)` if it stopped taking bytes (it failed: its error says why).
    let feed = async {
        let mut size: u64 = 0;
        while let Some(chunk) =
            within_body_timeout(app, async { field.chunk().await.map_err(multipart_error) }).await?
        {
            size += chunk.len() as u64;
            app.health.counters().upload_bytes(chunk.len() as u64);
            if size > app.limits.max_upload {
                return Err(ApiError::new(
                    Code::TooLarge,
                    format!(
                        "the `tarball` part is larger than the upload limit of {} bytes",
                        app.limits.max_upload
                    ),
                ));
            }
            if tx.send(Piece::Data(chunk)).await.is_err() {
                return Ok(false);
            }
        }
        Ok(tx.send(Piece::End).await.is_ok())
    };
    let fed = feed.await;
    // Without `End`, the thread sees the upload break off and stops.
    drop(tx);
    let built = task.await.map_err(|e| internal("the indexing task failed", &e))?;
    fed?;
    let not_an_archive = |source: &dyn std::fmt::Display| {
        ApiError::new(
            Code::InvalidArgument,
            format!("the tarball is not a valid archive: {source}"),
        )
    };
    built.map_err(|e| match e {
        OpenError::Scan { source, .. } => not_an_archive(&source),
        OpenError::Index { source, .. } => not_an_archive(&source),
        other => internal("cannot store the upload", &other),
    })
}

/// The indexing thread's view of the upload: a [`Read`](std::io::Read) over the chunks the
/// request side sends. The channel closing before [`Piece::End`] is an error (the upload broke
/// off), never a clean end of the archive.
struct PieceReader {
    rx: tokio::sync::mpsc::Receiver<Piece>,
    current: axum::body::Bytes,
    ended: bool,
}

impl PieceReader {
    fn new(rx: tokio::sync::mpsc::Receiver<Piece>) -> Self {
        PieceReader { rx, current: axum::body::Bytes::new(), ended: false }
    }
}

impl std::io::Read for PieceReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Piece::Data(bytes)) => self.current = bytes,
                Some(Piece::End) => self.ended = true,
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the upload broke off before the end of the tarball",
                    ))
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Checks the metadata against the streamed tarball's index, writes the index and commits
/// (blocking).
fn check_and_commit(
    store: &Store,
    staging: Staging,
    metadata_bytes: &[u8],
    index: &Index,
) -> Result<Record, ApiError> {
    let metadata: Metadata = Metadata::parse(metadata_bytes).map_err(|e| invalid_metadata(&[e]))?;
    let problems = metadata.check_against(index);
    if !problems.is_empty() {
        return Err(invalid_metadata(&problems));
    }
    let record = store.commit(staging, &metadata, metadata_bytes, index)?;
    tracing::info!(id = record.id, identifier = %record.identifier, "add-on registered");
    Ok(record)
}
