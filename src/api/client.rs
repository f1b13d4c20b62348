//! A small client of the registry's own API, for the admin commands (`addonfs addons ...
//! --api URL`): plain HTTP/1.1 over hyper, one connection a request, blocking callers.
//!
//! Only `http://HOST:PORT` URLs (the daemon listens on loopback by default).

use std::convert::Infallible;
use std::path::{Path, PathBuf};

use axum::body::Bytes;
use http_body_util::{BodyExt, Channel, Limited};
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::{LIST_PATH, MAX_PAGE_SIZE, STATUS_PATH, UPLOAD_PATH};
use crate::addon::{Record, Status};

/// Largest response body read.
const MAX_RESPONSE: usize = 64 << 20;
/// Size of the chunks of a tarball sent.
const SEND_CHUNK: usize = 256 << 10;

/// A failure talking to the API.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `http://HOST:PORT`.
    #[error("bad API URL `{0}`: expected http://HOST:PORT")]
    BadUrl(String),
    /// The daemon could not be reached.
    #[error("cannot reach the addonfs API at {url}: {source}")]
    Connect {
        /// The API's URL.
        url: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP request to {url} failed: {source}")]
    Http {
        /// The request's URL.
        url: String,
        /// What failed.
        #[source]
        source: hyper::Error,
    },
    /// The API refused the request (its error envelope's message).
    #[error("{url} refused the request (HTTP {status}): {message}")]
    Refused {
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The API's message.
        message: String,
    },
    /// The response was not what the API sends.
    #[error("unexpected response from {url}: {why}")]
    Response {
        /// The request's URL.
        url: String,
        /// What was wrong.
        why: String,
    },
    /// A local file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// A client of one daemon's API.
#[derive(Debug)]
pub struct ApiClient {
    base: String,
    authority: String,
    key: String,
    runtime: tokio::runtime::Runtime,
}

#[derive(Deserialize)]
struct Page {
    runtime_addons: Vec<Record>,
    next_page_token: String,
}

/// A request body: sent chunk by chunk from a task.
type Body = Channel<Bytes, Infallible>;

impl ApiClient {
    /// A client of the API at `url` (`http://HOST:PORT`, a trailing `/` allowed) with the API
    /// key `key`.
    pub fn new(url: &str, key: &str) -> Result<ApiClient, ClientError> {
        let bad = || ClientError::BadUrl(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(bad());
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ClientError::Connect { url: url.to_string(), source })?;
        Ok(ApiClient {
            base: format!("http://{authority}"),
            authority: authority.to_string(),
            key: key.to_string(),
            runtime,
        })
    }

    /// The API's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Every add-on, following `next_page_token` page by page.
    pub fn list(&self) -> Result<Vec<Record>, ClientError> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let path = format!("{LIST_PATH}?page_size={MAX_PAGE_SIZE}&page_token={token}");
            let page: Page = self.call(Method::GET, &path, None, |_| async {})?;
            all.extend(page.runtime_addons);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            token = page.next_page_token;
        }
    }

    /// Sets the status of the add-ons with these ids and identifiers; returns `rows_affected`.
    pub fn set_status(
        &self,
        status: Status,
        ids: &[u64],
        identifiers: &[String],
    ) -> Result<u64, ClientError> {
        self.set_status_with_reason(status, None, ids, identifiers)
    }

    /// [`ApiClient::set_status`] with a `reason` (for `DEPRECATED` and `DISABLED`).
    pub fn set_status_with_reason(
        &self,
        status: Status,
        reason: Option<&str>,
        ids: &[u64],
        identifiers: &[String],
    ) -> Result<u64, ClientError> {
        let mut body =
            serde_json::json!({"status": status.as_str(), "ids": ids, "identifiers": identifiers});
        if let Some(reason) = reason {
            body["reason"] = reason.into();
        }
        let body = body.to_string();
        let reply: serde_json::Value = self.call(
            Method::POST,
            STATUS_PATH,
            Some(("application/json".to_string(), body.len() as u64)),
            |mut tx| async move {
                let _ = tx.send_data(Bytes::from(body)).await;
            },
        )?;
        reply["rows_affected"].as_u64().ok_or_else(|| ClientError::Response {
            url: format!("{}{STATUS_PATH}", self.base),
            why: format!("no rows_affected in {reply}"),
        })
    }

    /// Uploads an add-on as `curl -F metadata=@.. -F tarball=@..` does, streaming the tarball
    /// from disk; returns the created record.
    pub fn upload(&self, metadata: &[u8], tarball: &Path) -> Result<Record, ClientError> {
        let io = |source| ClientError::Io { path: tarball.to_path_buf(), source };
        let size = std::fs::metadata(tarball).map_err(io)?.len();
        let file = std::fs::File::open(tarball).map_err(io)?;
        let boundary = format!("------addonfs-{:016x}", rand_u64());
        let head = {
            let mut h = Vec::new();
            h.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"; filename=\"metadata.json\"\r\nContent-Type: application/json\r\n\r\n").as_bytes());
            h.extend_from_slice(metadata);
            h.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"tarball\"; filename=\"addon.tar.gz\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
            Bytes::from(h)
        };
        let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        let length = head.len() as u64 + size + tail.len() as u64;
        let failure = std::sync::Arc::new(std::sync::Mutex::new(None));
        let failed = std::sync::Arc::clone(&failure);
        let result = self.call(
            Method::POST,
            UPLOAD_PATH,
            Some((format!("multipart/form-data; boundary={boundary}"), length)),
            |mut tx| async move {
                if tx.send_data(head).await.is_err() {
                    return;
                }
                let mut file = tokio::fs::File::from_std(file);
                let mut sent = 0u64;
                loop {
                    let mut buf = vec![0u8; SEND_CHUNK];
                    match file.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => {
                            sent += n as u64;
                            buf.truncate(n);
                            if tx.send_data(Bytes::from(buf)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            return; // dropping `tx` early ends the body short: the upload fails
                        }
                    }
                }
                if sent != size {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(
                        std::io::Error::other("the file changed size while it was being sent"),
                    );
                    return;
                }
                let _ = tx.send_data(tail).await;
            },
        );
        if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(io(e));
        }
        result
    }

    /// Sends one request whose body `fill` writes, and decodes the JSON reply.
    fn call<T, F, Fut>(
        &self,
        method: Method,
        path: &str,
        body: Option<(String, u64)>,
        fill: F,
    ) -> Result<T, ClientError>
    where
        T: serde::de::DeserializeOwned,
        F: FnOnce(http_body_util::channel::Sender<Bytes, Infallible>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let url = format!("{}{path}", self.base);
        let http = |source| ClientError::Http { url: url.clone(), source };
        self.runtime.block_on(async {
            let stream = tokio::net::TcpStream::connect(&self.authority)
                .await
                .map_err(|source| ClientError::Connect { url: self.base.clone(), source })?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Body>(
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .map_err(http)?;
            let connection = tokio::spawn(conn);
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, &self.authority)
                .header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.key));
            if let Some((content_type, length)) = &body {
                request = request
                    .header(hyper::header::CONTENT_TYPE, content_type)
                    .header(hyper::header::CONTENT_LENGTH, *length);
            }
            let (tx, channel) = Channel::<Bytes, Infallible>::new(4);
            let request = request.body(channel).map_err(|e| ClientError::Response {
                url: url.clone(),
                why: format!("cannot build the request: {e}"),
            })?;
            let feeder = tokio::spawn(fill(tx));
            let response = sender.send_request(request).await;
            feeder.abort();
            let response = response.map_err(http)?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| ClientError::Response { url: url.clone(), why: e.to_string() })?
                .to_bytes();
            connection.abort();
            if status != StatusCode::OK {
                let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
                return Err(ClientError::Refused {
                    url: url.clone(),
                    status: status.as_u16(),
                    message,
                });
            }
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Response {
                url: url.clone(),
                why: format!("not the expected JSON: {e}"),
            })
        })
    }
}

/// A random number for the multipart boundary (from the hasher's random keys).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish()
}
