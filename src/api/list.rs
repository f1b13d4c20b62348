//! The list route (`GET /api/v2/runtimeaddons`): `search_filter`, paging (`page_size`,
//! `page_token`) and `sort` over a snapshot of the catalog.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{answer, ApiError, App, Code, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::addon::Record;

pub(super) async fn list_route(State(app): State<Arc<App>>, uri: Uri) -> Response {
    answer(list(&app, &uri).map(IntoResponse::into_response))
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
