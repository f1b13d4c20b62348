//! TLS for the API's server side (rustls with the ring provider; no OpenSSL): the certificate
//! and key files given with `--tls-cert` and `--tls-key`, reloaded without a restart.
//!
//! The certificate in use sits behind a resolver that rustls asks at every handshake, so a
//! reload swaps it for new connections while open ones carry on with theirs (nothing is
//! dropped). A reload happens:
//!
//! * on SIGHUP ([`ServerTls::reload_on_sighup`]);
//! * when the files changed: the accept loop calls [`ServerTls::check_files`] before each
//!   handshake, which compares the files' identity (device, inode, size, modification time, as
//!   `stat` sees them through symlinks) with the last look — two `stat` calls per connection,
//!   no polling while idle. Files replaced by a rename (cert-manager, Kubernetes' Secret
//!   volumes that swap a `..data` symlink) always show as changed; a file rewritten in place
//!   with the same size within the file system's timestamp granularity may not, and SIGHUP is
//!   the way to force it.
//!
//! A reload that fails (a missing file, a key that does not match the certificate, half of a
//! pair written) keeps the certificate in use and logs why; the next change or SIGHUP tries
//! again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificate chain and private key files (PEM) of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain: the server's certificate first, then intermediates.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds nothing usable.
    #[error("{}: {why}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// The certificate and key do not go together (or the key type is unsupported).
    #[error("{} with {}: {source}", cert.display(), key.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
}

/// What identifies a file's content cheaply: device, inode, size, modification time (ns).
type FileStamp = Option<(u64, u64, u64, i64, i64)>;

fn stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// A TLS listener's configuration with its reloadable certificate.
pub struct ServerTls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
    /// The files' stamps at the last look.
    seen: Mutex<(FileStamp, FileStamp)>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("files", &self.files).finish_non_exhaustive()
    }
}

/// The certificate new handshakes get.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner())))
    }
}

impl ServerTls {
    /// Loads `files`; fails (naming the file and the problem) if they are unusable.
    pub fn load(files: &TlsFiles) -> Result<Arc<ServerTls>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let seen = (stamp(&files.cert), stamp(&files.key));
        let key = certified_key(files, &provider)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(key))));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Pair {
                cert: files.cert.clone(),
                key: files.key.clone(),
                source,
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        // The server speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(ServerTls {
            files: files.clone(),
            provider,
            current,
            seen: Mutex::new(seen),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        }))
    }

    /// The files this listener serves.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The acceptor for the next connection (it uses the certificate current at its handshake).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.clone()
    }

    /// Reloads the certificate if its files changed since the last look (two `stat` calls).
    pub fn check_files(&self) {
        let now = (stamp(&self.files.cert), stamp(&self.files.key));
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == now {
                return;
            }
            // Remembered even if the reload fails: the next change tries again, not every
            // connection.
            *seen = now;
        }
        self.reload("the certificate or key file changed");
    }

    /// Loads the files again and, if they are usable, serves them to new connections; else
    /// keeps the certificate in use. `why` goes to the log. Returns whether it reloaded.
    pub fn reload(&self, why: &str) -> bool {
        match certified_key(&self.files, &self.provider) {
            Ok(key) => {
                *self.current.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
                tracing::info!(cert = %self.files.cert.display(), "reloaded the TLS certificate: {why}");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot reload the TLS certificate ({why}); keeping the one in use");
                false
            }
        }
    }

    /// Reloads the certificate on every SIGHUP, from a task of the current tokio runtime, for
    /// as long as the runtime runs. Installing the handler also keeps SIGHUP from ending the
    /// process (its default action).
    pub fn reload_on_sighup(self: &Arc<Self>) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup())?;
        let tls = Arc::clone(self);
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tls.reload("SIGHUP");
            }
        });
        Ok(())
    }
}

/// The warning for an API served in clear on an address other than loopback (`None` with TLS
/// or on loopback): API keys, session cookies and uploads would cross the network readable by
/// anyone on the path. Plain HTTP is for loopback only (`docs/operations.md`, "TLS"). Every
/// role that serves the API prints it at start.
pub fn plain_http_warning(listen: std::net::SocketAddr, tls: bool) -> Option<String> {
    (!tls && !listen.ip().is_loopback()).then(|| {
        format!(
            "serving plain HTTP on {listen}, which is not a loopback address: API keys and \
             uploads cross the network unencrypted; give --tls-cert and --tls-key (plain HTTP \
             is for loopback only)"
        )
    })
}

/// The chain and key of `files`, checked to go together.
fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let bad = |path: &Path, why: String| TlsError::File { path: path.to_path_buf(), why };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad(&files.cert, pem_error(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&files.cert, pem_error(&e)))?;
    if chain.is_empty() {
        return Err(bad(&files.cert, "no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        bad(
            &files.key,
            match e {
                rustls::pki_types::pem::Error::NoItemsFound => {
                    "no PEM private key (PKCS#8, PKCS#1 or SEC1)".to_string()
                }
                other => pem_error(&other),
            },
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    })
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("not valid PEM: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_warned_about_beyond_loopback_only() {
        let at = |a: &str| a.parse::<std::net::SocketAddr>().unwrap();
        assert!(plain_http_warning(at("0.0.0.0:7474"), false).unwrap().contains("0.0.0.0:7474"));
        assert!(plain_http_warning(at("10.1.2.3:7474"), false).is_some());
        assert!(plain_http_warning(at("[::]:7474"), false).is_some());
        assert_eq!(plain_http_warning(at("0.0.0.0:7474"), true), None);
        assert_eq!(plain_http_warning(at("127.0.0.1:7474"), false), None);
        assert_eq!(plain_http_warning(at("[::1]:7474"), false), None);
    }

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let files = TlsFiles { cert: cert.clone(), key: key.clone() };
        let err = ServerTls::load(&files).unwrap_err().to_string();
        assert!(err.contains("cert.pem") && err.contains("No such file"), "{err}");
        std::fs::write(&cert, "hello\n").unwrap();
        let err = ServerTls::load(&files).unwrap_err().to_string();
        assert!(err.contains("cert.pem: no PEM certificate"), "{err}");
    }
}
