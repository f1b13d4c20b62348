//! Where a store's objects live: one [`object_store::ObjectStore`] behind every role.
//!
//! `--store URL`:
//! - a plain path or `file:///abs/path`: [`LocalFileSystem`] rooted at that directory (created
//!   if missing). The embedded default (`serve --state-dir`), and a shared directory such as
//!   NFS. Objects are plain files there, so a node on the same machine reads a tarball in
//!   place ([`Backend::local_path`]).
//! - `s3://bucket/prefix`: any S3-compatible service through
//!   [`AmazonS3Builder::from_env`] (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP` for a plain-HTTP endpoint); every
//!   key lives under `prefix/`.
//!
//! Keys given to a [`Backend`] are relative to the store (`catalog.json`,
//! `addons/<identifier>/<upload-id>/addon.tar.gz`); [`Backend::key`] puts the prefix in front.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;

/// A store's objects.
#[derive(Debug, Clone)]
pub struct Backend {
    store: Arc<dyn ObjectStore>,
    /// Put in front of every key (empty for a local directory).
    prefix: String,
    /// The directory of a local store.
    local: Option<PathBuf>,
    /// The URL it was opened from, for messages.
    url: String,
}

/// A store URL that cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the store `{url}`: {why}")]
pub struct BackendError {
    /// The URL as given.
    pub url: String,
    /// Why.
    pub why: String,
}

/// Opens the store at `url` (see the module for the forms).
pub fn open(url: &str) -> Result<Backend, BackendError> {
    open_with(url, &[])
}

/// Opens the store at `url` with S3 settings `options` (object_store configuration keys such
/// as `aws_endpoint_url`, `aws_access_key_id`) over those of the environment; a test runs
/// stores of several servers in one process this way.
pub fn open_with(url: &str, options: &[(String, String)]) -> Result<Backend, BackendError> {
    let fail = |why: String| BackendError { url: url.to_string(), why };
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(fail("no bucket: the form is s3://bucket/prefix".to_string()));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
            return Err(fail(format!("the prefix `{prefix}` has an empty, `.` or `..` part")));
        }
        let mut builder = AmazonS3Builder::from_env();
        for (key, value) in options {
            let key = key.parse().map_err(|e| fail(format!("S3 setting `{key}`: {e}")))?;
            builder = builder.with_config(key, value);
        }
        let s3 = builder
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| fail(format!("{e} (S3 settings come from the AWS_* environment)")))?;
        return Ok(Backend {
            store: Arc::new(s3),
            prefix: if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
            local: None,
            url: url.to_string(),
        });
    }
    let dir = match url.strip_prefix("file://") {
        Some(path) if path.starts_with('/') => PathBuf::from(path),
        Some(_) => return Err(fail("a file URL needs an absolute path: file:///dir".to_string())),
        None if url.contains("://") => {
            return Err(fail(
                "unknown scheme; use a directory, file:///dir or s3://bucket/prefix".to_string(),
            ))
        }
        None => PathBuf::from(url),
    };
    open_local(&dir).map_err(|e| fail(e.to_string()))
}

/// Opens a local directory store at `dir` (created if missing).
pub fn open_local(dir: &Path) -> Result<Backend, std::io::Error> {
    std::fs::create_dir_all(dir)?;
    let root = std::fs::canonicalize(dir)?;
    let fs = LocalFileSystem::new_with_prefix(&root).map_err(std::io::Error::other)?;
    Ok(Backend {
        store: Arc::new(fs),
        prefix: String::new(),
        local: Some(root),
        url: dir.display().to_string(),
    })
}

impl Backend {
    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The full key of `rel` (a key relative to the store).
    pub fn key(&self, rel: &str) -> object_store::path::Path {
        object_store::path::Path::from(format!("{}{rel}", self.prefix))
    }

    /// The key relative to the store of a full key (`None` outside the prefix).
    pub fn relative<'a>(&self, full: &'a object_store::path::Path) -> Option<&'a str> {
        full.as_ref().strip_prefix(self.prefix.as_str())
    }

    /// The prefix as a key, for listing (`None` when there is none).
    pub fn prefix_key(&self) -> Option<object_store::path::Path> {
        let p = self.prefix.trim_end_matches('/');
        (!p.is_empty()).then(|| object_store::path::Path::from(p))
    }

    /// The directory of a local store.
    pub fn local_root(&self) -> Option<&Path> {
        self.local.as_deref()
    }

    /// Where the object `rel` is on disk, for a local store: a node on the same machine reads
    /// it in place.
    pub fn local_path(&self, rel: &str) -> Option<PathBuf> {
        self.local.as_ref().map(|root| root.join(rel))
    }

    /// The URL it was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether conditional writes (`PutMode::Create`, `PutMode::Update`) can be trusted: not
    /// for S3, whose compatible servers differ (Garage ignores `If-None-Match` and `If-Match`
    /// and overwrites); a local directory honours `Create` only.
    pub fn honours_create(&self) -> bool {
        self.local.is_some()
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("s");
        let b = open(sub.to_str().unwrap()).unwrap();
        assert!(sub.is_dir());
        assert_eq!(
            b.local_path("catalog.json").unwrap(),
            sub.canonicalize().unwrap().join("catalog.json")
        );
        assert_eq!(b.key("a/b").as_ref(), "a/b");
        let b = open(&format!("file://{}", sub.display())).unwrap();
        assert!(b.local_root().is_some());
        for bad in ["file://rel/x", "ftp://x/y", "s3:///x", "s3://b/a/../c"] {
            let e = open(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn s3_prefix() {
        // Building an S3 client makes no request.
        let b = open("s3://bucket/some/prefix/").unwrap();
        assert_eq!(b.key("catalog.json").as_ref(), "some/prefix/catalog.json");
        assert_eq!(b.relative(&b.key("x/y")), Some("x/y"));
        assert_eq!(b.prefix_key().unwrap().as_ref(), "some/prefix");
        assert!(b.local_path("x").is_none());
        let b = open("s3://bucket").unwrap();
        assert_eq!(b.key("catalog.json").as_ref(), "catalog.json");
        assert!(b.prefix_key().is_none());
    }
}
