//! API keys: `Authorization: Bearer <key>`, compared in constant time.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use axum::http::HeaderMap;

use super::error::{ApiError, Code};

/// The keys file in the state directory (one key a line, mode 0600).
pub const KEYS_FILE: &str = "api-keys";

/// Largest API key file read: 1 MiB (thousands of keys).
pub const MAX_KEYS_FILE_BYTES: u64 = 1 << 20;

/// The accepted API keys.
#[derive(Clone)]
pub struct ApiKeys {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ApiKeys {
    /// Keys given directly (empty strings are dropped).
    pub fn new(keys: impl IntoIterator<Item = String>) -> ApiKeys {
        ApiKeys {
            keys: keys
                .into_iter()
                .map(|k| k.trim().as_bytes().to_vec())
                .filter(|k| !k.is_empty())
                .collect(),
        }
    }

    /// Reads keys from a file, one a line (blank lines and `#` comments skipped). A file over
    /// [`MAX_KEYS_FILE_BYTES`] is refused; at most that many bytes plus one are read, whatever
    /// the file is (`/dev/zero` or a FIFO cannot exhaust memory).
    pub fn from_file(path: &Path) -> std::io::Result<ApiKeys> {
        let bytes = crate::limits::read_at_most(path, MAX_KEYS_FILE_BYTES + 1)?;
        if bytes.len() as u64 > MAX_KEYS_FILE_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: the API key file is larger than the limit of {MAX_KEYS_FILE_BYTES} bytes",
                    path.display()
                ),
            ));
        }
        let text = String::from_utf8(bytes).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: the API key file is not UTF-8 text", path.display()),
            )
        })?;
        let keys = ApiKeys::new(
            text.lines().filter(|l| !l.trim_start().starts_with('#')).map(str::to_string),
        );
        if keys.keys.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: no API key in the file", path.display()),
            ));
        }
        Ok(keys)
    }

    /// The first key (the one a client presents when it reads the file).
    pub fn first(&self) -> Option<String> {
        self.keys.first().map(|k| String::from_utf8_lossy(k).into_owned())
    }

    /// Loads `<state_dir>/api-keys`, creating it with one fresh random key (32 bytes from
    /// `/dev/urandom`, hex) and mode 0600 if it does not exist. Returns the keys, the file, and
    /// whether it was created.
    pub fn load_or_create(state_dir: &Path) -> std::io::Result<(ApiKeys, PathBuf, bool)> {
        let path = state_dir.join(KEYS_FILE);
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(mut file) => {
                let mut raw = [0u8; 32];
                std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
                let key: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                file.write_all(format!("{key}\n").as_bytes())?;
                file.sync_all()?;
                Ok((ApiKeys::new([key]), path, true))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok((ApiKeys::from_file(&path)?, path, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether `presented` is one of the keys (constant time per key).
    pub fn check(&self, presented: &[u8]) -> bool {
        self.keys.iter().fold(false, |ok, k| ok | constant_time_eq(k, presented))
    }

    /// Checks the `Authorization: Bearer <key>` header.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(ApiError::new(
                Code::Unauthenticated,
                "missing `Authorization: Bearer <API key>` header",
            ));
        };
        let bytes = value.as_bytes();
        let key = bytes
            .strip_prefix(b"Bearer ")
            .or_else(|| bytes.strip_prefix(b"bearer "))
            .map(<[u8]>::trim_ascii);
        match key {
            Some(key) if self.check(key) => Ok(()),
            Some(_) => Err(ApiError::new(Code::Unauthenticated, "invalid API key")),
            None => Err(ApiError::new(
                Code::Unauthenticated,
                "the Authorization header is not `Bearer <API key>`",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        let keys = ApiKeys::new(["k1".to_string(), "k2".to_string()]);
        assert!(keys.check(b"k2") && !keys.check(b"k3") && !keys.check(b""));
    }

    #[test]
    fn keys_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, path, created) = ApiKeys::load_or_create(dir.path()).unwrap();
        assert!(created);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let key = std::fs::read_to_string(&path).unwrap();
        assert_eq!(key.trim().len(), 64);
        let (b, _, created) = ApiKeys::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert!(a.check(key.trim().as_bytes()) && b.check(key.trim().as_bytes()));
    }
}
