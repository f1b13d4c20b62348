//! The status route (`POST /api/v2/runtimeaddons:updatestatus`): enable, deprecate or disable
//! add-ons by id or identifier.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{answer, internal, within_body_timeout, ApiError, App, Code, MAX_JSON_BODY};
use crate::addon::{Status, Store};

pub(super) async fn status_route(State(app): State<Arc<App>>, body: Body) -> Response {
    answer(update_status(&app, body).await)
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
