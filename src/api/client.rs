//! A small client of the registry's own API, for the admin commands (`addonfs addons ...
//! --api URL`): HTTP/1.1 over hyper, one connection a request, blocking callers.
//!
//! `https://HOST[:PORT]` URLs speak TLS (rustls) and verify the server's certificate against
//! the CAs of `--ca-file`, else the system's; `http://HOST[:PORT]` is plain HTTP, for loopback.

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
    /// The URL is not `https://HOST[:PORT]` or `http://HOST[:PORT]`.
    #[error("bad API URL `{0}`: expected https://HOST:PORT (or http://HOST:PORT on loopback)")]
    BadUrl(String),
    /// The CA file (or the system's CAs) could not be loaded.
    #[error("{}: {why}", path.display())]
    CaFile {
        /// The file (or the system's CA store).
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// The TLS handshake failed: the server's certificate was not trusted, or it does not
    /// speak TLS.
    #[error("TLS with {url} failed: {why}")]
    Tls {
        /// The API's URL.
        url: String,
        /// What failed, in words.
        why: String,
    },
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
    /// `HOST:PORT` to connect to (the authority with the scheme's default port).
    address: String,
    /// For `https://`: the verifying connector and the name the certificate must carry.
    tls: Option<Tls>,
    key: String,
    runtime: tokio::runtime::Runtime,
}

/// The client's TLS: a verifying connector and the server name the certificate must carry.
struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
    /// Where the trusted CAs came from, for messages.
    trust: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("name", &self.name).field("trust", &self.trust).finish()
    }
}

/// A connection's byte stream: TCP, or TLS over TCP.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

#[derive(Deserialize)]
struct Page {
    runtime_addons: Vec<Record>,
    next_page_token: String,
}

/// A request body: sent chunk by chunk from a task.
type Body = Channel<Bytes, Infallible>;

impl ApiClient {
    /// A client of the API at `url` (`https://HOST[:PORT]` or `http://HOST[:PORT]`, a
    /// trailing `/` allowed) with the API key `key`. For `https://`, the server's certificate
    /// must be signed by a CA of `ca_file` (PEM), else of the system's store.
    pub fn new(url: &str, key: &str, ca_file: Option<&Path>) -> Result<ApiClient, ClientError> {
        let bad = || ClientError::BadUrl(url.to_string());
        let (scheme, rest, port) = if let Some(rest) = url.strip_prefix("https://") {
            ("https", rest, 443)
        } else if let Some(rest) = url.strip_prefix("http://") {
            ("http", rest, 80)
        } else {
            return Err(bad());
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(bad());
        }
        let (host, has_port) = split_host(authority).ok_or_else(bad)?;
        let address = if has_port { authority.to_string() } else { format!("{authority}:{port}") };
        let tls = match scheme {
            "https" => {
                let name =
                    rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|_| bad())?;
                Some(tls_client(ca_file, name)?)
            }
            _ => None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ClientError::Connect { url: url.to_string(), source })?;
        Ok(ApiClient {
            base: format!("{scheme}://{authority}"),
            authority: authority.to_string(),
            address,
            tls,
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
            let stream = tokio::net::TcpStream::connect(&self.address)
                .await
                .map_err(|source| ClientError::Connect { url: self.base.clone(), source })?;
            let stream: Box<dyn Stream> = match &self.tls {
                None => Box::new(stream),
                Some(tls) => Box::new(
                    tls.connector
                        .connect(tls.name.clone(), stream)
                        .await
                        .map_err(|e| tls_error(&self.base, tls, &e))?,
                ),
            };
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

/// The host of `authority` (`HOST`, `HOST:PORT`, `[V6]`, `[V6]:PORT`; IPv6 only in brackets)
/// and whether it names a port.
fn split_host(authority: &str) -> Option<(&str, bool)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, false)),
            port => {
                port.strip_prefix(':').filter(|p| p.parse::<u16>().is_ok()).map(|_| (host, true))
            }
        };
    }
    match authority.rsplit_once(':') {
        None => Some((authority, false)),
        Some((host, port)) if port.parse::<u16>().is_ok() && !host.contains(':') => {
            Some((host, true))
        }
        Some(_) => None,
    }
}

/// The TLS client side: the CAs of `ca_file`, else the system's, to verify `name`.
fn tls_client(
    ca_file: Option<&Path>,
    name: rustls::pki_types::ServerName<'static>,
) -> Result<Tls, ClientError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let trust = match ca_file {
        Some(path) => {
            let bad = |why: String| ClientError::CaFile { path: path.to_path_buf(), why };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(pem_error(&e)))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(pem_error(&e)))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad(
                    "no usable CA certificate (PEM, -----BEGIN CERTIFICATE-----)".into()
                ));
            }
            format!("the CAs of --ca-file {}", path.display())
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(ClientError::CaFile {
                    path: PathBuf::from("<system CA store>"),
                    why: "no CA certificate found: give the API's CA with --ca-file".into(),
                });
            }
            "the system's CAs (give the API's own CA with --ca-file)".to_string()
        }
    };
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::CaFile { path: PathBuf::from("<TLS>"), why: e.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
        name,
        trust,
    })
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("not valid PEM: {other:?}"),
    }
}

/// A failed handshake in words: what the server's certificate lacked, or that it seems not
/// to speak TLS.
fn tls_error(url: &str, tls: &Tls, e: &std::io::Error) -> ClientError {
    use rustls::{CertificateError, Error as E};
    let rustls = e.get_ref().and_then(|inner| inner.downcast_ref::<E>());
    let why = match rustls {
        Some(E::InvalidCertificate(CertificateError::UnknownIssuer)) => format!(
            "the server's certificate is not signed by a trusted CA: it was checked against {}",
            tls.trust
        ),
        Some(E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => format!(
            "the server's certificate is not valid for the name {:?} of the URL",
            tls.name.to_str()
        ),
        Some(E::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => "the server's certificate has expired".to_string(),
        Some(E::InvalidCertificate(other)) => {
            format!("the server's certificate is invalid: {other:?}")
        }
        Some(E::InvalidMessage(_)) => format!(
            "the server does not seem to speak TLS (is it plain HTTP? then use an http:// URL, \
             on loopback only): {e}"
        ),
        _ => e.to_string(),
    };
    ClientError::Tls { url: url.to_string(), why }
}

/// A random number for the multipart boundary (from the hasher's random keys).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports_of_authorities() {
        assert_eq!(split_host("127.0.0.1:7474"), Some(("127.0.0.1", true)));
        assert_eq!(split_host("registry.example"), Some(("registry.example", false)));
        assert_eq!(split_host("[::1]:7474"), Some(("::1", true)));
        assert_eq!(split_host("[::1]"), Some(("::1", false)));
        assert_eq!(split_host("::1:7474"), None, "IPv6 without brackets is ambiguous");
        assert_eq!(split_host("host:port"), None);
        assert_eq!(split_host("[::1]x"), None);
    }

    #[test]
    fn urls_and_ca_files_are_checked_up_front() {
        let err =
            |url: &str, ca: Option<&Path>| ApiClient::new(url, "k", ca).unwrap_err().to_string();
        assert!(err("ftp://host", None).contains("expected https://HOST:PORT"));
        assert!(err("https://host:99999", None).contains("bad API URL"));
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ca.pem");
        let e = err("https://127.0.0.1:7474", Some(&missing));
        assert!(e.contains("ca.pem") && e.contains("No such file"), "{e}");
        std::fs::write(&missing, "not a certificate\n").unwrap();
        let e = err("https://127.0.0.1:7474", Some(&missing));
        assert!(e.contains("ca.pem: no usable CA certificate"), "{e}");
        // Plain HTTP needs no CA and reads none.
        let client = ApiClient::new("http://127.0.0.1:7474/", "k", Some(&missing)).unwrap();
        assert_eq!(client.url(), "http://127.0.0.1:7474");
        assert_eq!(client.address, "127.0.0.1:7474");
        assert_eq!(ApiClient::new("http://localhost", "k", None).unwrap().address, "localhost:80");
    }
}
