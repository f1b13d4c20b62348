//! The admin web UI, served by the API process: sign in with an API key, the add-ons table
//! (search, status filter, hide disabled, sorting, paging), enable / deprecate / disable, one
//! add-on's page with a browser of its tarball's tree (from the index, nothing extracted), and
//! upload.
//!
//! Server-rendered HTML (see `docs/architecture.md`): every page works without JavaScript; one
//! small embedded script only adds upload progress and loading a metadata file into the form.
//! The routes use a session cookie ([`session`]) instead of the API's Bearer key, and reuse the
//! API's own upload and status code, so their rules and messages are the API's.

pub mod html;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use serde::Deserialize;

use crate::addon::store::Addon;
use crate::addon::{Record, Status};
use crate::api::server::Transport;
use crate::api::{ApiError, App, Code};
use crate::archive::EntryKind;
use crate::index::{Index, Ino};
use html::{esc, esc_bytes, page, url};
use session::{Flash, Sessions};

/// The UI's stylesheet, embedded.
const STYLE: &str = include_str!("assets/style.css");
/// The UI's one script, embedded.
const SCRIPT: &str = include_str!("assets/ui.js");
/// Largest file shown as text on a file page.
pub const MAX_VIEW: u64 = 64 << 10;
/// Default and largest rows of a table page.
pub const DEFAULT_ROWS: usize = 50;
/// Largest rows of a table page.
pub const MAX_ROWS: usize = 1000;
/// Largest form body (sign-in, status change).
pub const MAX_FORM: usize = 16 << 10;
/// Entries of a directory shown at once in the tree browser.
pub const DIR_PAGE: usize = 500;
/// The `Content-Security-Policy` of every UI answer: only our own script and stylesheet, no
/// inline script, no framing. A second wall behind the escaping.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

struct Ui {
    app: Arc<App>,
    sessions: Sessions,
}

/// Whether the session cookie carries `Secure`: when the request came over TLS (the server's
/// [`Transport`] extension). Over plain HTTP (loopback only) a `Secure` cookie would never be
/// sent back.
fn secure(extensions: &axum::http::Extensions) -> bool {
    extensions.get::<Transport>().is_some_and(|t| t.tls)
}

/// The UI's routes over the API's shared state (merged into [`crate::api::router`]).
pub(crate) fn routes(app: Arc<App>) -> Router {
    let ui = Arc::new(Ui { app, sessions: Sessions::default() });
    // The pages need a live session (a layer: without one, a browser is sent to sign in);
    // state changes check theirs, and the request's origin, in `require_change`.
    let pages = Router::new()
        .route("/ui/", get(table))
        .route("/ui/addons/{identifier}", get(addon_page))
        .route("/ui/addons/{identifier}/file", get(file_page))
        .route("/ui/addons/{identifier}/status", get(confirm_status).post(change_status))
        // The upload is bounded by the API's `max_upload` as it streams; every other body is
        // a small form, read whole, so it gets a small limit (sign-in is public).
        .route(
            "/ui/upload",
            get(upload_page).post(upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&ui), signed_in));
    Router::new()
        .route("/", get(|| async { redirect("/ui/") }))
        .route("/ui", get(|| async { redirect("/ui/") }))
        .route("/ui/assets/style.css", get(|| async { asset("text/css", STYLE) }))
        .route("/ui/assets/ui.js", get(|| async { asset("text/javascript", SCRIPT) }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .merge(pages)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(ui)
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body)
        .into_response()
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// A page for a signed-in user.
fn signed_in_page(status: StatusCode, title: &str, body: &str) -> Response {
    html(status, page(title, true, body))
}

/// Only a path inside the UI is a place to go back to (never another site).
fn local_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/ui/",
    }
}

/// Sends a request without a live session to sign in, and back here after.
fn to_sign_in(here: &str) -> Response {
    redirect(&format!("/ui/login?next={}", url(here)))
}

/// The session of a signed-in page request (put there by [`signed_in`]).
#[derive(Clone)]
struct SessionId(String);

/// The layer of the UI's pages: a page request (`GET`) without a live session is sent to sign
/// in, and back after; one with a session carries its [`SessionId`]. Other methods pass on to
/// their handler, which checks the session and the origin together ([`require_change`]) and
/// answers a refusal in the API's envelope rather than with a redirect.
async fn signed_in(
    State(ui): State<Arc<Ui>>,
    mut req: Request,
    next: axum::middleware::Next,
) -> Response {
    if req.method() != axum::http::Method::GET {
        return next.run(req).await;
    }
    match ui.sessions.current(req.headers()) {
        Some(sid) => {
            req.extensions_mut().insert(SessionId(sid));
            next.run(req).await
        }
        None => to_sign_in(req.uri().path_and_query().map_or("/ui/", |p| p.as_str())),
    }
}

/// The add-on a page is about, or the API's `404`.
fn find_addon(ui: &Ui, identifier: &str) -> Result<Addon, ApiError> {
    ui.app.store.find(identifier).ok_or_else(|| {
        ApiError::new(Code::NotFound, format!("no add-on has identifier `{identifier}`"))
    })
}

/// The session and the cross-site check of a state-changing request.
fn require_change(ui: &Ui, headers: &HeaderMap) -> Result<String, ApiError> {
    session::same_origin(headers).map_err(|why| {
        ApiError::new(Code::Unauthenticated, format!("refused as a cross-site request: {why}"))
    })?;
    ui.sessions.current(headers).ok_or_else(|| {
        ApiError::new(
            Code::Unauthenticated,
            "not signed in (or the session expired): sign in again",
        )
    })
}

fn flash_html(flash: Option<Flash>) -> String {
    match flash {
        Some(f) => format!(
            r#"<p class="flash {}" role="status" id="flash">{}</p>"#,
            if f.error { "error" } else { "ok" },
            esc(&f.text)
        ),
        None => String::new(),
    }
}

/// The gRPC name of a code, as the envelope's number is shown beside it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::RequestTimeout => "DEADLINE_EXCEEDED",
        Code::TooLarge | Code::TooManyUploads => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::MethodNotAllowed => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// An API error as the UI shows it: the envelope's code and message, unchanged.
fn error_text(e: &ApiError) -> String {
    format!("Error (code {} {}): {}", e.code.number(), code_name(e.code), e.message)
}

fn error_page(e: &ApiError) -> Response {
    signed_in_page(
        e.code.http_status(),
        "Error",
        &format!(
            r#"<h1>Error</h1><p class="flash error" role="alert">{}</p><p><a href="/ui/">Back to the add-ons</a></p>"#,
            esc(&error_text(e))
        ),
    )
}

// ---- sign in / out --------------------------------------------------------------------------

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

fn login_form(next: &str, message: Option<&str>) -> String {
    let alert = message
        .map(|m| format!(r#"<p class="flash error" role="alert" id="login-error">{}</p>"#, esc(m)))
        .unwrap_or_default();
    page(
        "Sign in",
        false,
        &format!(
            r#"<h1>Sign in</h1>
{alert}<form method="post" action="/ui/login" class="card">
<input type="hidden" name="next" value="{next}">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
<button type="submit" id="sign-in">Sign in</button>
<p class="hint">Any key the API accepts (<code>--api-key</code>, <code>--api-key-file</code> or <code>STATE_DIR/api-keys</code>).</p>
</form>"#,
            next = esc(next)
        ),
    )
}

async fn login_page(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = local_next(q.next.as_deref());
    if ui.sessions.current(&headers).is_some() {
        return redirect(next);
    }
    html(StatusCode::OK, login_form(next, None))
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
    next: Option<String>,
}

async fn login(State(ui): State<Arc<Ui>>, req: Request) -> Response {
    // The peer's address when the server provides it; else every client shares one budget.
    let client = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let secure = secure(req.extensions());
    let headers = req.headers().clone();
    let form = match Form::<LoginForm>::from_request(req, &()).await {
        Ok(Form(f)) => f,
        Err(e) => {
            return html(
                StatusCode::BAD_REQUEST,
                login_form("/ui/", Some(&format!("bad sign-in form: {}", e.body_text()))),
            )
        }
    };
    let next = local_next(form.next.as_deref()).to_string();
    if let Err(why) = session::same_origin(&headers) {
        return html(
            StatusCode::FORBIDDEN,
            login_form(&next, Some(&format!("refused as a cross-site request: {why}"))),
        );
    }
    if let Some(left) = ui.sessions.blocked(client) {
        return html(
            StatusCode::TOO_MANY_REQUESTS,
            login_form(
                &next,
                Some(&format!(
                    "Too many wrong API keys from your address: try again in {} s.",
                    left.as_secs() + 1
                )),
            ),
        );
    }
    if !ui.app.keys.check(form.key.trim().as_bytes()) {
        ui.sessions.failed(client);
        tracing::info!(client = ?client, "UI sign-in with a wrong API key");
        // Held back so that guessing is slow; the limiter above caps parallel guessing.
        tokio::time::sleep(session::FAILURE_DELAY).await;
        return html(
            StatusCode::UNAUTHORIZED,
            login_form(&next, Some("Wrong API key: it is not one of the keys the API accepts.")),
        );
    }
    match ui.sessions.open() {
        Ok(id) => {
            let mut r = redirect(&next);
            if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&id, secure)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            login_form(&next, Some(&format!("cannot open a session: {e}"))),
        ),
    }
}

async fn logout(
    State(ui): State<Arc<Ui>>,
    transport: Option<Extension<Transport>>,
    headers: HeaderMap,
) -> Response {
    if let Err(why) = session::same_origin(&headers) {
        return html(
            StatusCode::FORBIDDEN,
            login_form("/ui/", Some(&format!("refused as a cross-site request: {why}"))),
        );
    }
    if let Some(id) = ui.sessions.current(&headers) {
        ui.sessions.close(&id);
    }
    let mut r = redirect("/ui/login");
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(transport.is_some_and(|t| t.tls))) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

// ---- the table ------------------------------------------------------------------------------

#[derive(Deserialize, Default, Clone)]
struct TableQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    hide_disabled: Option<String>,
    #[serde(default)]
    sort: String,
    page: Option<usize>,
    rows: Option<usize>,
}

impl TableQuery {
    fn hide(&self) -> bool {
        self.hide_disabled.as_deref().is_some_and(|v| !v.is_empty() && v != "0")
    }

    fn rows(&self) -> usize {
        self.rows.filter(|&n| n > 0).unwrap_or(DEFAULT_ROWS).min(MAX_ROWS)
    }

    /// The table's URL with these settings, `page` and `sort` replaced.
    fn link(&self, sort: &str, page: usize) -> String {
        let mut out = format!("/ui/?q={}&status={}", url(&self.q), url(&self.status));
        if self.hide() {
            out.push_str("&hide_disabled=1");
        }
        out.push_str(&format!("&sort={}&rows={}&page={page}", url(sort), self.rows()));
        out
    }
}

/// The add-ons a table query selects, sorted.
fn select(all: Vec<Addon>, q: &TableQuery) -> Result<Vec<Addon>, String> {
    let needle = q.q.trim().to_lowercase();
    let status = match q.status.as_str() {
        "" => None,
        s => Some(Status::parse(s).ok_or_else(|| format!("bad status {s:?}"))?),
    };
    let mut rows: Vec<Addon> = all
        .into_iter()
        .filter(|a| {
            let r = &a.record;
            (needle.is_empty()
                || r.identifier.to_lowercase().contains(&needle)
                || r.display_name.to_lowercase().contains(&needle)
                || a.paths.iter().any(|p| p.to_lowercase().contains(&needle)))
                && status.is_none_or(|s| r.status == s)
                && !(q.hide() && r.status == Status::Disabled)
        })
        .collect();
    let (desc, key) = match q.sort.strip_prefix('-') {
        Some(k) => (true, k),
        None => (false, q.sort.as_str()),
    };
    match key {
        "" | "id" => rows.sort_by_key(|a| a.record.id),
        "identifier" => rows.sort_by(|a, b| a.record.identifier.cmp(&b.record.identifier)),
        "display_name" => rows.sort_by(|a, b| a.record.display_name.cmp(&b.record.display_name)),
        "created_at" => rows.sort_by(|a, b| {
            (&a.record.created_at, a.record.id).cmp(&(&b.record.created_at, b.record.id))
        }),
        "status" => rows.sort_by(|a, b| {
            (a.record.status.as_str(), a.record.id).cmp(&(b.record.status.as_str(), b.record.id))
        }),
        "size" => rows.sort_by_key(|a| (a.record.size, a.record.id)),
        other => {
            return Err(format!(
                "bad sort {other:?}: use id, identifier, display_name, created_at, status or size"
            ))
        }
    }
    if desc {
        rows.reverse();
    }
    Ok(rows)
}

/// The status buttons of one add-on: enable is one click, deprecate and disable go through a
/// confirmation page.
fn actions(r: &Record, back: &str) -> String {
    let id = url(&r.identifier);
    let (back, next) = (esc(back), url(back));
    let mut out = String::new();
    if !r.status.is_enabled() || r.status == Status::Deprecated {
        out.push_str(&format!(
            r#"<form method="post" action="/ui/addons/{id}/status" class="inline"><input type="hidden" name="status" value="AVAILABLE"><input type="hidden" name="next" value="{back}"><button type="submit" class="enable" aria-label="{label} {name}">{label}</button></form>"#,
            name = esc(&r.identifier),
            // Deprecated is enabled already: the button takes the flag off.
            label = if r.status == Status::Deprecated { "Make available" } else { "Enable" },
        ));
    }
    if r.status == Status::Available {
        out.push_str(&format!(
            r#"<a class="button" href="/ui/addons/{id}/status?to=DEPRECATED&amp;next={next}" aria-label="Deprecate {name}">Deprecate</a>"#,
            name = esc(&r.identifier)
        ));
    }
    if r.status.is_enabled() {
        out.push_str(&format!(
            r#"<a class="button danger disable" href="/ui/addons/{id}/status?to=DISABLED&amp;next={next}" aria-label="Disable {name}">Disable</a>"#,
            name = esc(&r.identifier)
        ));
    }
    out
}

fn status_badge(r: &Record) -> String {
    let reason = if r.reason.is_empty() {
        String::new()
    } else {
        format!(r#"<br><small class="reason">{}</small>"#, esc(&r.reason))
    };
    format!(
        r#"<span class="badge {}">{}</span>{reason}"#,
        r.status.as_str().to_lowercase(),
        r.status.as_str()
    )
}

async fn table(
    State(ui): State<Arc<Ui>>,
    Extension(SessionId(sid)): Extension<SessionId>,
    uri: axum::http::Uri,
    Query(q): Query<TableQuery>,
) -> Response {
    let here = uri.path_and_query().map_or("/ui/", |p| p.as_str()).to_string();
    let flash = flash_html(ui.sessions.take_flash(&sid));
    let all = ui.app.store.list();
    let total_all = all.len();
    let rows = match select(all, &q) {
        Ok(rows) => rows,
        Err(m) => return error_page(&ApiError::new(Code::InvalidArgument, m)),
    };
    let per = q.rows();
    let pages = rows.len().div_ceil(per).max(1);
    let page_no = q.page.unwrap_or(1).clamp(1, pages);
    let shown = rows.iter().skip((page_no - 1) * per).take(per);
    let mut body = String::with_capacity(8192);
    body.push_str(&format!(
        r#"<h1>Runtime add-ons</h1>{flash}
<form method="get" action="/ui/" class="filters" role="search">
<div><label for="q">Search</label><input id="q" name="q" type="search" value="{qv}" placeholder="name, identifier or path"></div>
<div><label for="status">Status</label><select id="status" name="status">{opts}</select></div>
<div class="check"><input id="hide_disabled" name="hide_disabled" type="checkbox" value="1"{hide}><label for="hide_disabled">Hide disabled</label></div>
<div><label for="rows">Rows</label><select id="rows" name="rows">{rows_opts}</select></div>
<input type="hidden" name="sort" value="{sort}">
<div><button type="submit" id="apply">Apply</button></div>
</form>
<p id="count">{n} of {total_all} add-ons{page_info}</p>
"#,
        qv = esc(&q.q),
        opts = ["", "AVAILABLE", "DEPRECATED", "DISABLED"]
            .iter()
            .map(|s| format!(
                r#"<option value="{s}"{}>{}</option>"#,
                if *s == q.status { " selected" } else { "" },
                if s.is_empty() { "Any" } else { s }
            ))
            .collect::<String>(),
        hide = if q.hide() { " checked" } else { "" },
        rows_opts = [25, 50, 100, 500, 1000]
            .iter()
            .map(|n| format!(
                r#"<option value="{n}"{}>{n}</option>"#,
                if *n == per { " selected" } else { "" }
            ))
            .collect::<String>(),
        sort = esc(&q.sort),
        n = rows.len(),
        page_info = if pages > 1 { format!(", page {page_no} of {pages}") } else { String::new() },
    ));
    let th = |key: &str, label: &str| {
        let (next, aria) = if q.sort == key {
            (format!("-{key}"), r#" aria-sort="ascending""#)
        } else if q.sort == format!("-{key}") {
            (key.to_string(), r#" aria-sort="descending""#)
        } else {
            (key.to_string(), "")
        };
        let arrow = match aria {
            "" => "",
            a if a.contains("asc") => " ▲",
            _ => " ▼",
        };
        format!(
            r#"<th scope="col"{aria}><a href="{}" id="sort-{key}">{label}{arrow}</a></th>"#,
            esc(&q.link(&next, 1))
        )
    };
    body.push_str(r#"<div class="scroll"><table id="addons"><thead><tr>"#);
    for (k, l) in [
        ("display_name", "Name"),
        ("identifier", "Identifier"),
        ("status", "Status"),
        ("size", "Size"),
        ("created_at", "Created"),
    ] {
        body.push_str(&th(k, l));
    }
    body.push_str(r#"<th scope="col">Paths</th><th scope="col">Actions</th></tr></thead><tbody>"#);
    for a in shown {
        let r = &a.record;
        body.push_str(&format!(
            r#"<tr data-identifier="{ident}"><td><a href="/ui/addons/{id_url}">{name}</a></td><td><code>{ident}</code></td><td>{status}</td><td title="{bytes} bytes">{size}</td><td><time>{created}</time></td><td>{paths}</td><td class="actions">{actions}</td></tr>"#,
            ident = esc(&r.identifier),
            id_url = url(&r.identifier),
            name = esc(&r.display_name),
            status = status_badge(r),
            bytes = r.size,
            size = html::size(r.size),
            created = esc(&r.created_at),
            paths = a.paths.iter().map(|p| format!("<code>{}</code>", esc(p))).collect::<Vec<_>>().join("<br>"),
            actions = actions(r, &here),
        ));
    }
    body.push_str("</tbody></table></div>");
    if rows.is_empty() {
        body.push_str(r#"<p id="empty">No add-on matches.</p>"#);
    }
    if pages > 1 {
        body.push_str(r#"<nav aria-label="Pages" class="pager">"#);
        if page_no > 1 {
            body.push_str(&format!(
                r#"<a href="{}" rel="prev" id="prev">← Previous</a> "#,
                esc(&q.link(&q.sort, page_no - 1))
            ));
        }
        body.push_str(&format!("<span>Page {page_no} of {pages}</span>"));
        if page_no < pages {
            body.push_str(&format!(
                r#" <a href="{}" rel="next" id="next">Next →</a>"#,
                esc(&q.link(&q.sort, page_no + 1))
            ));
        }
        body.push_str("</nav>");
    }
    signed_in_page(StatusCode::OK, "Add-ons", &body)
}

// ---- status changes -------------------------------------------------------------------------

#[derive(Deserialize)]
struct ConfirmQuery {
    to: String,
    next: Option<String>,
}

async fn confirm_status(
    State(ui): State<Arc<Ui>>,
    Path(identifier): Path<String>,
    Query(q): Query<ConfirmQuery>,
) -> Response {
    let addon = match find_addon(&ui, &identifier) {
        Ok(addon) => addon,
        Err(e) => return error_page(&e),
    };
    let next = local_next(q.next.as_deref());
    let (title, what, button) = match q.to.as_str() {
        "DISABLED" => (
            "Disable",
            "New workloads stop getting it: it leaves the mount's listing and <code>.addons.json</code>, and <code>attach</code> no longer offers it. Workloads already using it keep reading it until they end. Its paths no longer count for conflicts. You can enable it again later.",
            "Disable",
        ),
        "DEPRECATED" => (
            "Deprecate",
            "It stays enabled: new workloads still get it, flagged as deprecated with your reason in <code>.addons.json</code>, and <code>attach</code> warns about it. Use it to warn users before disabling.",
            "Deprecate",
        ),
        other => {
            return error_page(&ApiError::new(
                Code::InvalidArgument,
                format!("bad status {other:?}: confirm DEPRECATED or DISABLED"),
            ))
        }
    };
    let body = format!(
        r#"<h1>{title} {ident}?</h1>
<div class="card">
<p><strong>{title} <code>{ident}</code></strong> ({name}, now {status}).</p>
<p id="what">{what}</p>
<form method="post" action="/ui/addons/{id_url}/status">
<input type="hidden" name="status" value="{to}">
<input type="hidden" name="next" value="{next}">
<label for="reason">Reason (optional, shown to users)</label>
<input id="reason" name="reason" type="text" maxlength="1024" value="{reason}">
<button type="submit" id="confirm" class="{cls}">{button}</button>
<a href="{next}" class="button" id="cancel">Cancel</a>
</form></div>"#,
        ident = esc(&addon.record.identifier),
        name = esc(&addon.record.display_name),
        status = addon.record.status.as_str(),
        id_url = url(&addon.record.identifier),
        to = esc(&q.to),
        next = esc(next),
        reason = if addon.record.status.as_str() == q.to {
            esc(&addon.record.reason)
        } else {
            String::new()
        },
        cls = if q.to == "DISABLED" { "danger" } else { "" },
    );
    signed_in_page(StatusCode::OK, title, &body)
}

#[derive(Deserialize)]
struct StatusForm {
    status: String,
    #[serde(default)]
    reason: String,
    next: Option<String>,
}

async fn change_status(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(identifier): Path<String>,
    Form(form): Form<StatusForm>,
) -> Response {
    let sid = match require_change(&ui, &headers) {
        Ok(s) => s,
        Err(e) => return error_page(&e),
    };
    let result = match Status::parse(&form.status) {
        None => Err(ApiError::new(
            Code::InvalidArgument,
            format!("bad status {:?}: use AVAILABLE, DEPRECATED or DISABLED", form.status),
        )),
        Some(status) => {
            let reason = Some(form.reason.trim().to_string()).filter(|r| !r.is_empty());
            crate::api::set_status(
                &ui.app.store,
                status,
                reason,
                Vec::new(),
                vec![identifier.clone()],
            )
            .await
        }
    };
    let flash = match result {
        Ok(rows) => Flash {
            error: false,
            text: format!(
                "{identifier} is now {} (rows_affected: {rows}).{}",
                form.status,
                if form.status == "DISABLED" {
                    " New workloads no longer get it; running ones keep it."
                } else {
                    ""
                }
            ),
        },
        Err(e) => Flash { error: true, text: error_text(&e) },
    };
    ui.sessions.set_flash(&sid, flash);
    redirect(local_next(form.next.as_deref()))
}

// ---- one add-on -----------------------------------------------------------------------------

#[derive(Deserialize)]
struct TreeQuery {
    #[serde(default)]
    path: String,
    #[serde(default)]
    skip: usize,
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Dir => "directory",
        EntryKind::Symlink => "symlink",
        EntryKind::Hardlink => "hard link",
        EntryKind::CharDev => "character device",
        EntryKind::BlockDev => "block device",
        EntryKind::Fifo => "fifo",
    }
}

/// Loads an add-on's index on a blocking thread.
async fn load_index(addon: &Addon) -> Result<Arc<Index>, ApiError> {
    let path = addon.index();
    tokio::task::spawn_blocking(move || Index::load(&path))
        .await
        .map_err(|e| ApiError::new(Code::Internal, format!("index task failed: {e}")))?
        .map(Arc::new)
        .map_err(|e| {
            ApiError::new(
                Code::Internal,
                format!("cannot load the index {}: {e}", addon.index().display()),
            )
        })
}

/// `a/b/c` normalized: no empty, `.` or `..` components, no leading slash.
fn clean_path(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
        .collect::<Vec<_>>()
        .join("/")
}

/// The add-on a page is about and its index (the add-on page and the file page).
async fn addon_with_index(ui: &Ui, identifier: &str) -> Result<(Addon, Arc<Index>), ApiError> {
    let addon = find_addon(ui, identifier)?;
    let index = load_index(&addon).await?;
    Ok((addon, index))
}

async fn addon_page(
    State(ui): State<Arc<Ui>>,
    Extension(SessionId(sid)): Extension<SessionId>,
    Path(identifier): Path<String>,
    Query(q): Query<TreeQuery>,
) -> Response {
    let (addon, index) = match addon_with_index(&ui, &identifier).await {
        Ok(found) => found,
        Err(e) => return error_page(&e),
    };
    let r = &addon.record;
    let id_url = url(&r.identifier);
    let flash = flash_html(ui.sessions.take_flash(&sid));
    let stats = index.stats();
    let mut body = format!(
        r#"<h1>{name} <small><code>{ident}</code></small></h1>{flash}
<div class="actions">{actions}</div>
<dl class="meta">
<dt>Identifier</dt><dd><code>{ident}</code></dd>
<dt>Name</dt><dd>{name}</dd>
<dt>Id</dt><dd>{id}</dd>
<dt>Component</dt><dd>{component}</dd>
<dt>Status</dt><dd id="status">{status}</dd>
<dt>Size</dt><dd>{size} ({bytes} bytes, {compression})</dd>
<dt>Created</dt><dd><time>{created}</time></dd>
<dt>SHA-256</dt><dd><code class="digest" id="sha256">{sha}</code></dd>
<dt>Entries</dt><dd>{inodes}</dd>
</dl>
<h2>Requested paths</h2>
<div class="scroll"><table id="paths"><thead><tr><th scope="col">Path</th><th scope="col">In the tarball</th></tr></thead><tbody>"#,
        name = esc(&r.display_name),
        ident = esc(&r.identifier),
        actions = actions(r, &format!("/ui/addons/{id_url}")),
        id = r.id,
        component = esc(&r.component),
        status = status_badge(r),
        size = html::size(r.size),
        bytes = r.size,
        compression = match index.compression() {
            crate::archive::Compression::None => "tar",
            crate::archive::Compression::Gzip => "gzip",
        },
        created = esc(&r.created_at),
        sha = esc(&r.sha256),
        inodes = stats.inodes,
    );
    for p in &addon.paths {
        let what = match index.resolve(p.as_bytes()).and_then(|ino| index.attr(ino)) {
            None => "missing".to_string(),
            Some(a) if a.kind == EntryKind::Symlink => format!(
                "symlink → <code>{}</code>",
                esc_bytes(index.symlink_target(a.ino).unwrap_or_default())
            ),
            Some(a) => kind_name(a.kind).to_string(),
        };
        body.push_str(&format!(
            r#"<tr><td><a href="/ui/addons/{id_url}?path={pu}#tree"><code>{pe}</code></a></td><td>{what}</td></tr>"#,
            pu = url(&clean_path(p)),
            pe = esc(p)
        ));
    }
    body.push_str("</tbody></table></div>");
    body.push_str(&tree_html(&index, &id_url, &clean_path(&q.path), q.skip));
    signed_in_page(StatusCode::OK, &r.display_name, &body)
}

/// The tree browser: one directory of the index, or the entry the path names.
fn tree_html(index: &Index, id_url: &str, path: &str, skip: usize) -> String {
    let mut out = String::from(
        r#"<section id="tree" aria-labelledby="tree-title"><h2 id="tree-title">Contents</h2>"#,
    );
    // Breadcrumbs: every ancestor links to its directory.
    out.push_str(
        r#"<nav aria-label="Directory" class="crumbs" id="crumbs"><a href="?path=#tree">/</a>"#,
    );
    let mut so_far = String::new();
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        if !so_far.is_empty() {
            so_far.push('/');
        }
        so_far.push_str(comp);
        out.push_str(&format!(
            r#"<a href="/ui/addons/{id_url}?path={}#tree">{}</a>/"#,
            url(&so_far),
            esc(comp)
        ));
    }
    out.push_str("</nav>");
    let Some(ino) = index.resolve(path.as_bytes()) else {
        out.push_str(&format!(
            r#"<p class="flash error">No entry <code>/{}</code> in the tarball.</p></section>"#,
            esc(path)
        ));
        return out;
    };
    let Some(attr) = index.attr(ino) else {
        out.push_str("</section>");
        return out;
    };
    if attr.kind != EntryKind::Dir {
        out.push_str(&format!(
            r#"<p><code>/{}</code> is a {}.</p>{}</section>"#,
            esc(path),
            kind_name(attr.kind),
            entry_link(index, id_url, path, ino)
        ));
        return out;
    }
    let count = index.child_count(ino);
    out.push_str(r#"<div class="scroll"><table id="entries"><thead><tr><th scope="col">Name</th><th scope="col">Kind</th><th scope="col">Size</th><th scope="col">Mode</th><th scope="col">Owner</th><th scope="col">Modified</th></tr></thead><tbody>"#);
    if !path.is_empty() {
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
        out.push_str(&format!(
            r#"<tr><td><a href="/ui/addons/{id_url}?path={}#tree">..</a></td><td>directory</td><td></td><td></td><td></td><td></td></tr>"#,
            url(parent)
        ));
    }
    for (name, child) in index.children(ino, skip).take(DIR_PAGE) {
        let Some(a) = index.attr(child) else { continue };
        let name_text = String::from_utf8_lossy(name);
        let child_path =
            if path.is_empty() { name_text.to_string() } else { format!("{path}/{name_text}") };
        let name_cell = match a.kind {
            EntryKind::Dir => format!(
                r#"<a href="/ui/addons/{id_url}?path={}#tree">{}/</a>"#,
                url(&child_path),
                esc_bytes(name)
            ),
            _ => format!("{}{}", esc_bytes(name), entry_link(index, id_url, &child_path, child)),
        };
        let modified = crate::addon::rfc3339_utc(a.mtime);
        out.push_str(&format!(
            r#"<tr><td class="name">{name_cell}</td><td>{kind}</td><td title="{bytes} bytes">{size}</td><td><code>{mode}</code></td><td>{uid}:{gid}</td><td><time>{modified}</time></td></tr>"#,
            kind = kind_name(a.kind),
            bytes = a.size,
            size = if a.kind == EntryKind::Dir { String::new() } else { html::size(a.size) },
            mode = html::mode(a.mode),
            uid = a.uid,
            gid = a.gid,
        ));
    }
    out.push_str("</tbody></table></div>");
    if count > DIR_PAGE {
        let mut pager = format!(
            r#"<nav aria-label="Entries" class="pager"><span>Entries {}–{} of {count}</span>"#,
            skip.min(count) + 1,
            (skip + DIR_PAGE).min(count)
        );
        if skip > 0 {
            pager.push_str(&format!(
                r#" <a href="/ui/addons/{id_url}?path={}&amp;skip={}#tree">← Previous</a>"#,
                url(path),
                skip.saturating_sub(DIR_PAGE)
            ));
        }
        if skip + DIR_PAGE < count {
            pager.push_str(&format!(
                r#" <a href="/ui/addons/{id_url}?path={}&amp;skip={}#tree">Next →</a>"#,
                url(path),
                skip + DIR_PAGE
            ));
        }
        pager.push_str("</nav>");
        out.push_str(&pager);
    }
    out.push_str("</section>");
    out
}

/// After a non-directory's name: its symlink target, or a "view" link for a small file.
fn entry_link(index: &Index, id_url: &str, path: &str, ino: Ino) -> String {
    let Some(a) = index.attr(ino) else { return String::new() };
    match a.kind {
        EntryKind::Symlink => format!(
            r#" <span class="link">→ <code>{}</code></span>"#,
            esc_bytes(index.symlink_target(ino).unwrap_or_default())
        ),
        EntryKind::File if a.size <= MAX_VIEW => format!(
            r#" <a class="view" href="/ui/addons/{id_url}/file?path={}">view</a>"#,
            url(path)
        ),
        _ => String::new(),
    }
}

async fn file_page(
    State(ui): State<Arc<Ui>>,
    Path(identifier): Path<String>,
    Query(q): Query<TreeQuery>,
) -> Response {
    let (addon, index) = match addon_with_index(&ui, &identifier).await {
        Ok(found) => found,
        Err(e) => return error_page(&e),
    };
    let path = clean_path(&q.path);
    let tarball = addon.tarball();
    let read = tokio::task::spawn_blocking({
        let index = Arc::clone(&index);
        let path = path.clone();
        move || read_small_file(&tarball, index, &path)
    })
    .await
    .unwrap_or_else(|e| Err(format!("read task failed: {e}")));
    let id_url = url(&addon.record.identifier);
    let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
    let content = match read {
        Ok(text) => format!(r#"<pre id="content" tabindex="0">{}</pre>"#, esc(&text)),
        Err(why) => format!(r#"<p class="flash error" id="content">{}</p>"#, esc(&why)),
    };
    let body = format!(
        r#"<h1><code>/{pe}</code></h1>
<p>In <a href="/ui/addons/{id_url}?path={pu}#tree">{ident}</a>.</p>
{content}"#,
        pe = esc(&path),
        pu = url(parent),
        ident = esc(&addon.record.identifier),
    );
    signed_in_page(StatusCode::OK, &path, &body)
}

/// Reads a file of the tarball through the index (nothing extracted) if it is small text.
fn read_small_file(
    tarball: &std::path::Path,
    index: Arc<Index>,
    path: &str,
) -> Result<String, String> {
    let ino =
        index.resolve(path.as_bytes()).ok_or_else(|| format!("no entry /{path} in the tarball"))?;
    let attr = index.attr(ino).ok_or_else(|| format!("no entry /{path} in the tarball"))?;
    if attr.kind != EntryKind::File {
        return Err(format!("/{path} is a {}, not a file", kind_name(attr.kind)));
    }
    if attr.size > MAX_VIEW {
        return Err(format!(
            "/{path} is {} bytes: only files up to {MAX_VIEW} bytes are shown",
            attr.size
        ));
    }
    let cache = Arc::new(crate::reader::cache::ChunkCache::new(4 << 20));
    let reader =
        crate::reader::ArchiveReader::open(tarball, index, cache).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; attr.size as usize];
    let mut at = 0usize;
    while at < buf.len() {
        let n = reader.read(ino, at as u64, &mut buf[at..]).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        at += n;
    }
    buf.truncate(at);
    String::from_utf8(buf).map_err(|_| format!("/{path} is not UTF-8 text: not shown"))
}

// ---- upload ---------------------------------------------------------------------------------

const METADATA_TEMPLATE: &str =
    "{\n  \"name\": \"my-addon\",\n  \"spec\": {\"paths\": [\"/opt/my-addon\"]}\n}\n";

async fn upload_page() -> Response {
    let body = format!(
        r#"<h1>Upload an add-on</h1>
<form method="post" action="/ui/upload" enctype="multipart/form-data" class="card" id="upload-form">
<label for="metafile">Metadata file (optional: fills the text below)</label>
<input id="metafile" type="file" accept=".json,application/json">
<label for="metadata">Metadata (JSON: <code>name</code> and <code>spec.paths</code>)</label>
<textarea id="metadata" name="metadata" rows="6" required spellcheck="false">{tpl}</textarea>
<label for="tarball">Tarball (tar or tar.gz)</label>
<input id="tarball" name="tarball" type="file" required>
<button type="submit" id="upload">Upload</button>
<label for="progress">Progress</label>
<progress id="progress" max="100" value="0"></progress>
<div id="result" role="status" aria-live="polite"></div>
</form>
<p class="hint">The same rules and messages as <code>POST /api/v2/runtimeaddons/custom</code> (docs/api.md).</p>"#,
        tpl = esc(METADATA_TEMPLATE)
    );
    signed_in_page(StatusCode::OK, "Upload", &body)
}

async fn upload(State(ui): State<Arc<Ui>>, req: Request) -> Response {
    // The script asks for the API's JSON answer; a plain form submission gets a page.
    let wants_json = req.headers().get("x-addonfs-ui").is_some();
    let result = match require_change(&ui, req.headers()) {
        Ok(_) => crate::api::upload(&ui.app, req).await,
        Err(e) => Err(e),
    };
    if wants_json {
        return match result {
            Ok(record) => Json(record).into_response(),
            Err(e) => e.into_response(),
        };
    }
    match result {
        Ok(record) => signed_in_page(
            StatusCode::OK,
            "Uploaded",
            &format!(
                r#"<h1>Uploaded</h1><p class="flash ok" role="status">Registered <a href="/ui/addons/{}">{}</a> ({}).</p>"#,
                url(&record.identifier),
                esc(&record.identifier),
                record.status.as_str()
            ),
        ),
        Err(e) => error_page(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_inside_the_ui() {
        assert_eq!(local_next(Some("/ui/addons/x")), "/ui/addons/x");
        assert_eq!(local_next(Some("https://evil.example/")), "/ui/");
        assert_eq!(local_next(Some("//evil.example/ui/")), "/ui/");
        assert_eq!(local_next(None), "/ui/");
    }

    /// A gzipped tarball built with the `tar` crate, indexed as the store does.
    fn indexed(dir: &std::path::Path) -> (std::path::PathBuf, Arc<Index>) {
        let path = dir.join("a.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::default(),
        );
        let mut b = tar::Builder::new(gz);
        let mut add = |name: &str, data: &[u8], mode: u32| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, data).unwrap();
        };
        add("top/<img src=x onerror=alert(1)>", b"<script>alert(2)</script>", 0o644);
        add("top/big", &vec![b'a'; MAX_VIEW as usize + 1], 0o644);
        add("top/binary", b"\xff\xfe\x00", 0o755);
        for i in 0..DIR_PAGE + 100 {
            add(&format!("top/many/f{i:04}"), b"", 0o600);
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "top/link", "<b>target</b>").unwrap();
        b.into_inner().unwrap().finish().unwrap();
        let index = crate::index::open::build(&path, &crate::archive::ScanOptions::default(), None)
            .unwrap();
        (path, Arc::new(index))
    }

    #[test]
    fn tree_and_files_escape_what_the_tarball_says() {
        let dir = tempfile::tempdir().unwrap();
        let (tarball, index) = indexed(dir.path());
        let html = tree_html(&index, "custom-addon-x", "top", 0);
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;b&gt;target&lt;/b&gt;") && !html.contains("<b>"), "{html}");
        assert!(html.contains("rwxr-xr-x") && html.contains("many/</a>"), "{html}");
        // The name goes into the link percent-encoded.
        assert!(html.contains("path=top/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E"), "{html}");
        // The small file is text (escaped by the page); the others say why they are not shown.
        let text =
            read_small_file(&tarball, Arc::clone(&index), "top/<img src=x onerror=alert(1)>");
        assert_eq!(text.as_deref(), Ok("<script>alert(2)</script>"));
        let big = read_small_file(&tarball, Arc::clone(&index), "top/big").unwrap_err();
        assert!(big.contains("only files up to 65536 bytes"), "{big}");
        let bin = read_small_file(&tarball, Arc::clone(&index), "top/binary").unwrap_err();
        assert!(bin.contains("not UTF-8"), "{bin}");
        let dir_err = read_small_file(&tarball, Arc::clone(&index), "top/many").unwrap_err();
        assert!(dir_err.contains("is a directory"), "{dir_err}");
        assert!(read_small_file(&tarball, Arc::clone(&index), "nope").is_err());
        // A large directory comes in pages.
        let many = tree_html(&index, "custom-addon-x", "top/many", 0);
        assert!(many.contains("Entries 1–500 of 600"), "{many}");
        assert!(many.contains("skip=500") && many.contains("f0499") && !many.contains("f0500"));
        let rest = tree_html(&index, "custom-addon-x", "top/many", 500);
        assert!(rest.contains("f0599") && !rest.contains("f0499<"));
        let missing = tree_html(&index, "custom-addon-x", "top/<x>", 0);
        assert!(missing.contains("No entry <code>/top/&lt;x&gt;</code>"), "{missing}");
    }

    #[test]
    fn paths_are_cleaned() {
        assert_eq!(clean_path("/a//b/./../c/"), "a/b/c");
        assert_eq!(clean_path(""), "");
    }
}
