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
mod list;
pub mod node;
pub mod server;
mod status;
pub mod tls;
mod upload;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::Uri;
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

pub use auth::{constant_time_eq, ApiKeys, KEYS_FILE};
pub use client::{ApiClient, ClientError};
pub use error::{ApiError, Code};
pub use health::Observed;
// The admin UI ([`crate::ui`]) uploads and changes status through the same code as the routes.
pub(crate) use status::set_status;
pub(crate) use upload::upload;

use crate::addon::{Store, StoreError};
use crate::archive::ScanOptions;

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
        .route(UPLOAD_PATH, post(upload::upload_route))
        .route(LIST_PATH, get(list::list_route))
        .route(STATUS_PATH, post(status::status_route))
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
    serve_on(listener, store, keys, limits, Observed::default(), None, shutdown).await
}

/// Serves the API on a bound `listener` (over TLS with `tls`) until `shutdown` completes.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    store: Arc<Store>,
    keys: ApiKeys,
    limits: ApiLimits,
    observed: Observed,
    tls: Option<Arc<tls::ServerTls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, router(store, keys, limits, observed), &limits, tls, shutdown).await
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

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::Io { .. }
            | StoreError::Locked(_)
            | StoreError::ReadOnly(_)
            | StoreError::Backend { .. }
            | StoreError::Open(_)
            | StoreError::Catalog { .. }
            | StoreError::WriterHeld { .. }
            | StoreError::Fenced { .. } => Code::Internal,
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
