//! The HTTP API (axum + tokio), shaped like the Cloudera AI API v2 runtime add-on routes (see
//! `docs/api.md`):
//!
//! * `POST /api/v2/runtimeaddons/custom`: multipart upload (`metadata`, `tarball`);
//! * `GET /api/v2/runtimeaddons`: list with `search_filter`, `page_size`, `page_token`, `sort`;
//! * `POST /api/v2/runtimeaddons:updatestatus`: enable, deprecate or disable.
//!
//! Every path under `/api/v2` needs `Authorization: Bearer <key>` (a layer on those routes
//! only); `GET /healthz`, `GET /readyz` and `GET /metrics` are public and never reach store
//! data ([`health`]). Every error, unknown routes (404) and wrong methods (405) included, is a
//! `{"error", "code", "message", "details"}` envelope. The admin UI's routes (`/`, `/ui/...`,
//! [`crate::ui`]) are merged in and use a session cookie instead.

mod auth;
pub mod client;
mod error;
pub mod health;
pub mod server;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::Uri;
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Json;
use serde::Deserialize;

pub use auth::{constant_time_eq, ApiKeys, KEYS_FILE};
pub use client::{ApiClient, ClientError};
pub use error::{ApiError, Code};
pub use health::Observed;

use crate::addon::metadata::{self, Metadata, MAX_METADATA_BYTES};
use crate::addon::store::Staging;
use crate::addon::{Record, Status, Store, StoreError};
use crate::archive::ScanOptions;
use crate::index::Index;

/// The upload route.
pub const UPLOAD_PATH: &str = "/api/v2/runtimeaddons/custom";
/// The list route.
pub const LIST_PATH: &str = "/api/v2/runtimeaddons";
/// The status route.
pub const STATUS_PATH: &str = "/api/v2/runtimeaddons:updatestatus";
/// Default page size of the list route.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page size of the list route.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Largest JSON body accepted by the status route.
pub const MAX_JSON_BODY: usize = 1 << 20;

/// Limits of the API (see `docs/api.md`, "Limits and options of `addonfs serve`").
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// Largest tarball accepted by an upload, in bytes.
    pub max_upload: u64,
    /// Options (span, archive limits) for indexing uploads.
    pub scan: ScanOptions,
    /// Uploads indexed at once; more are refused with 429 (each one's index is built in
    /// memory, so this bounds the daemon's memory).
    pub max_uploads: usize,
    /// Longest wait for the next bytes of a request body; a stalled upload is refused and its
    /// staging removed.
    pub body_timeout: Duration,
    /// Longest wait for a complete request head, from when a connection is accepted or its
    /// previous response was sent (so also the keep-alive idle timeout).
    pub header_timeout: Duration,
    /// Connections open at once; more wait in the kernel's listen backlog.
    pub max_connections: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_upload: 2 << 30,
            scan: ScanOptions::default(),
            max_uploads: 2,
            body_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// What every route shares (the admin UI in [`crate::ui`] reuses it behind its session).
pub(crate) struct App {
    pub(crate) store: Arc<Store>,
    pub(crate) keys: ApiKeys,
    pub(crate) limits: ApiLimits,
    /// One permit per upload being received and indexed.
    uploads: Arc<tokio::sync::Semaphore>,
    health: health::Health,
}

/// The router of the API over `store`; `observed` is what the public endpoints report
/// besides the store (the daemon's mount and its counters; nothing with `--no-mount`).
pub fn router(
    store: Arc<Store>,
    keys: ApiKeys,
    limits: ApiLimits,
    observed: Observed,
) -> axum::Router {
    let health = health::Health::new(Arc::clone(&store), observed);
    let uploads = Arc::new(tokio::sync::Semaphore::new(limits.max_uploads.max(1)));
    let app = Arc::new(App { store, keys, limits, uploads, health });
    // The authenticated routes: the layer runs only for these paths (unknown ones under
    // `/api/v2` too, so probing them needs a key), and wraps their 405 answers.
    let api = axum::Router::new()
        .route(UPLOAD_PATH, post(upload_route))
        .route(LIST_PATH, get(list_route))
        .route(STATUS_PATH, post(status_route))
        .route("/api/v2", any(not_found))
        .route("/api/v2/{*rest}", any(not_found))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(from_fn_with_state(Arc::clone(&app), authenticate));
    let public = axum::Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .method_not_allowed_fallback(method_not_allowed);
    api.merge(public)
        .fallback(not_found)
        .layer(from_fn_with_state(Arc::clone(&app), health::track))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(Arc::clone(&app))
        // The admin UI's routes carry their own state, limits and session check.
        .merge(crate::ui::routes(app))
}

/// Binds `listen` and serves the API until `shutdown` completes.
pub async fn serve(
    store: Arc<Store>,
    listen: SocketAddr,
    keys: ApiKeys,
    limits: ApiLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    serve_on(listener, store, keys, limits, Observed::default(), shutdown).await
}

/// Serves the API on a bound `listener` until `shutdown` completes.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    store: Arc<Store>,
    keys: ApiKeys,
    limits: ApiLimits,
    observed: Observed,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, router(store, keys, limits, observed), &limits, shutdown).await
}

/// The header of every authenticated API answer that carries the catalog's revision after
/// the request.
pub const REVISION_HEADER: &str = "x-addonfs-revision";

/// The authentication layer of the `/api/v2` routes: a request without a valid key gets `401`
/// before its handler runs (an upload's body is not read). An authenticated answer carries the
/// catalog's revision, read after the request's change (if any) and its sync: a client that
/// sees revision N there finds the mount at N or later.
async fn authenticate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Err(e) = app.keys.authorize(req.headers()) {
        return refused(e);
    }
    let mut response = next.run(req).await;
    response.headers_mut().insert(REVISION_HEADER, app.store.revision().into());
    response
}

/// The answer to a refused request: the error envelope, logged.
fn refused(e: ApiError) -> Response {
    tracing::info!(code = e.code.number(), message = %e.message, "request refused");
    e.into_response()
}

/// A handler's result as an answer.
fn answer(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(refused)
}

async fn not_found(uri: Uri) -> Response {
    refused(ApiError::new(Code::NotFound, format!("no route {}", uri.path())))
}

async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> Response {
    refused(ApiError::new(
        Code::MethodNotAllowed,
        format!("method {method} is not allowed on {}", uri.path()),
    ))
}

async fn upload_route(State(app): State<Arc<App>>, req: Request) -> Response {
    let result = upload(&app, req).await;
    app.health.counters().upload(result.is_ok());
    answer(result.map(|r| Json(r).into_response()))
}

async fn list_route(State(app): State<Arc<App>>, uri: Uri) -> Response {
    answer(list(&app, &uri).map(IntoResponse::into_response))
}

async fn status_route(State(app): State<Arc<App>>, body: Body) -> Response {
    answer(update_status(&app, body).await)
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::Io { .. } | StoreError::Locked(_) | StoreError::ReadOnly(_) => {
                Code::Internal
            }
            StoreError::AlreadyExists { .. } => Code::AlreadyExists,
            StoreError::Conflict { .. } | StoreError::NotDeletable => Code::FailedPrecondition,
            StoreError::NotFound(_) => Code::NotFound,
            StoreError::BadStatus(_) | StoreError::BadReason(_) => Code::InvalidArgument,
        };
        if code == Code::Internal {
            // The details name paths inside the state directory: for the log, not the client.
            return internal("the store failed", &e);
        }
        ApiError::new(code, e.to_string())
    }
}

/// A 500 answer: `what` failed; the details (`error`, which may name internal paths) go to the
/// log only.
fn internal(what: &str, error: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %error, "{what}");
    ApiError::new(
        Code::Internal,
        format!("{what} (an internal error: the daemon's log has the details)"),
    )
}

/// `step` of the request body within the body timeout; an upload that sends nothing for that
/// long is refused.
async fn within_body_timeout<T>(
    app: &App,
    step: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let limit = app.limits.body_timeout;
    tokio::time::timeout(limit, step).await.map_err(|_| {
        ApiError::new(
            Code::RequestTimeout,
            format!(
                "the request body stalled: nothing arrived for {} s (the body timeout)",
                limit.as_secs_f64()
            ),
        )
    })?
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
        crate::Error::Scan { source, .. } => not_an_archive(&source),
        crate::Error::Index { source, .. } => not_an_archive(&source),
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

#[derive(Debug, Deserialize)]
struct ListQuery {
    search_filter: Option<String>,
    page_size: Option<String>,
    page_token: Option<String>,
    sort: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchFilter {
    identifier: Option<String>,
    component: Option<String>,
    display_name: Option<String>,
    status: Option<String>,
}

#[derive(Debug, serde::Serialize)]
struct ListResponse {
    runtime_addons: Vec<Record>,
    next_page_token: String,
    /// The catalog's revision the page was read at (an addonfs extension).
    revision: u64,
}

fn list(app: &App, uri: &Uri) -> Result<Json<ListResponse>, ApiError> {
    let bad = |m: String| ApiError::new(Code::InvalidArgument, m);
    let q = Query::<ListQuery>::try_from_uri(uri)
        .map_err(|e| bad(format!("bad query string: {}", e.body_text())))?
        .0;
    let filter: SearchFilter = match q.search_filter.as_deref().map(str::trim) {
        None | Some("") => SearchFilter::default(),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            bad(format!("bad search_filter {text:?}: {e} (a JSON object with keys identifier, component, display_name, status)"))
        })?,
    };
    let page_size = match q.page_size.as_deref() {
        None | Some("") | Some("0") => DEFAULT_PAGE_SIZE,
        Some(text) => match text.parse::<usize>() {
            Ok(n) => n.min(MAX_PAGE_SIZE),
            Err(_) => {
                return Err(bad(format!("bad page_size {text:?}: not a non-negative integer")))
            }
        },
    };
    let offset = match q.page_token.as_deref() {
        None | Some("") => 0,
        Some(text) => text.parse::<usize>().map_err(|_| bad(format!("bad page_token {text:?}")))?,
    };
    let (revision, addons) = app.store.snapshot();
    let mut rows: Vec<Record> = addons
        .into_iter()
        .map(|a| a.record)
        .filter(|r| {
            filter.identifier.as_ref().is_none_or(|v| *v == r.identifier)
                && filter.component.as_ref().is_none_or(|v| *v == r.component)
                && filter.display_name.as_ref().is_none_or(|v| *v == r.display_name)
                && filter.status.as_ref().is_none_or(|v| v == r.status.as_str())
        })
        .collect();
    let sort = q.sort.as_deref().unwrap_or("").trim();
    let (desc, key) = match sort.strip_prefix('-') {
        Some(k) => (true, k),
        None => (false, sort),
    };
    match key {
        "" | "id" => rows.sort_by_key(|r| r.id),
        "identifier" => rows.sort_by(|a, b| a.identifier.cmp(&b.identifier)),
        "display_name" => rows.sort_by(|a, b| a.display_name.cmp(&b.display_name)),
        "created_at" => rows.sort_by(|a, b| (&a.created_at, a.id).cmp(&(&b.created_at, b.id))),
        "status" => rows.sort_by(|a, b| (a.status.as_str(), a.id).cmp(&(b.status.as_str(), b.id))),
        _ => {
            return Err(bad(format!(
                "bad sort {sort:?}: use id, identifier, display_name, created_at or status, with `-` for descending"
            )))
        }
    }
    if desc {
        rows.reverse();
    }
    let total = rows.len();
    let page: Vec<Record> = rows.into_iter().skip(offset).take(page_size).collect();
    let end = offset.saturating_add(page.len());
    let next_page_token = if end < total { end.to_string() } else { String::new() };
    Ok(Json(ListResponse { runtime_addons: page, next_page_token, revision }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusRequest {
    status: String,
    #[serde(default)]
    ids: Vec<u64>,
    #[serde(default)]
    identifiers: Vec<String>,
    /// addonfs's addition: why the add-on is deprecated or disabled (else a default text).
    #[serde(default)]
    reason: Option<String>,
}

async fn update_status(app: &App, body: Body) -> Result<Response, ApiError> {
    let bad = |m: String| ApiError::new(Code::InvalidArgument, m);
    let bytes = within_body_timeout(app, async {
        axum::body::to_bytes(body, MAX_JSON_BODY)
            .await
            .map_err(|e| bad(format!("cannot read the body (at most {MAX_JSON_BODY} bytes): {e}")))
    })
    .await?;
    let req: StatusRequest = serde_json::from_slice(&bytes).map_err(|e| {
        bad(format!("bad body: {e} (expected {{\"status\": \"AVAILABLE\"|\"DEPRECATED\"|\"DISABLED\", \"ids\": [int], \"identifiers\": [string], \"reason\": string}})"))
    })?;
    // `DELETED` parses, and the store refuses it as a precondition (custom add-ons are never
    // removed); `UNKNOWN` and `FAILED` are refused there as bad arguments.
    let Some(status) = Status::parse(&req.status) else {
        return Err(bad(format!(
            "bad status {:?}: use AVAILABLE, DEPRECATED or DISABLED",
            req.status
        )));
    };
    if req.ids.is_empty() && req.identifiers.is_empty() {
        return Err(bad("give `ids` or `identifiers`".to_string()));
    }
    let rows = set_status(&app.store, status, req.reason, req.ids, req.identifiers).await?;
    // Read after the change and its sync: the mount already shows this revision.
    let revision = app.store.revision();
    Ok(Json(serde_json::json!({ "rows_affected": rows, "revision": revision })).into_response())
}

/// Applies a status change on a blocking thread (the status route and the admin UI).
pub(crate) async fn set_status(
    store: &Arc<Store>,
    status: Status,
    reason: Option<String>,
    ids: Vec<u64>,
    identifiers: Vec<String>,
) -> Result<usize, ApiError> {
    let store = Arc::clone(store);
    let rows = tokio::task::spawn_blocking(move || {
        store.set_status_with_reason(status, reason.as_deref(), &ids, &identifiers)
    })
    .await
    .map_err(|e| internal("the status task failed", &e))??;
    Ok(rows)
}
