//! A real Garage S3 server for tests: single node on loopback, its own directories and ports,
//! one bucket and one key, stopped (killed) when dropped.
//!
//! ```ignore
//! let Some(garage) = Garage::start() else { return };   // None = skipped (never under CI)
//! let url = garage.url("some/prefix");                   // s3://<bucket>/some/prefix
//! Command::new(bin).envs(garage.env())...                // AWS_* for a child process
//! let backend = addonfs::addon::backend::open_with(&url, &garage.options())?; // in process
//! ```
//!
//! A second key that may only read the bucket, as a node's credential:
//!
//! ```ignore
//! let ro = garage.read_only_key("node");                 // garage key create + bucket allow --read
//! Command::new(bin).envs(garage.env_for(&ro))...
//! ```
//!
//! Garage ignores conditional writes (`If-None-Match`, `If-Match`): a test that needs them
//! needs another store.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Garage gets to become ready (first start: database, layout, key, bucket).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Garage.
pub struct Garage {
    dir: tempfile::TempDir,
    child: Option<Child>,
    s3_port: u16,
    rpc_port: u16,
    /// The access key id (`GK…`).
    pub access_key: String,
    /// The secret key.
    pub secret_key: String,
    /// The bucket.
    pub bucket: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap()
}

fn hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    use std::io::Read;
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut buf).unwrap();
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// An access key of the bucket other than the owner's (see [`Garage::read_only_key`]).
#[derive(Debug, Clone)]
pub struct Key {
    /// Its name in Garage.
    pub name: String,
    /// The access key id (`GK…`).
    pub access_key: String,
    /// The secret key.
    pub secret_key: String,
}

impl Garage {
    /// Starts Garage and waits until the bucket takes a write. `None` (with a skip line) when
    /// `garage` is not installed; under `CI` that panics instead.
    pub fn start() -> Option<Garage> {
        if !super::require("garage") {
            return None;
        }
        let dir = tempfile::Builder::new().prefix("addonfs-garage-").tempdir().unwrap();
        let mut garage = Garage {
            s3_port: free_port(),
            rpc_port: free_port(),
            access_key: format!("GK{}", hex(12)),
            secret_key: hex(32),
            bucket: "addonfs-test".to_string(),
            dir,
            child: None,
        };
        garage.write_config();
        garage.resume();
        Some(garage)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("garage.toml")
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let config = format!(
            r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
"#,
            meta = d.join("meta").display(),
            data = d.join("data").display(),
            rpc = self.rpc_port,
            s3 = self.s3_port,
            secret = hex(32),
        );
        std::fs::write(self.config_path(), config).unwrap();
    }

    /// Starts (again, after [`Garage::stop`]) the server on the same directories and ports,
    /// and waits until it is ready.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "Garage is running already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("garage.log"))
            .unwrap();
        let child = Command::new("garage")
            .arg("-c")
            .arg(self.config_path())
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &self.access_key)
            .env("GARAGE_DEFAULT_SECRET_KEY", &self.secret_key)
            .env("GARAGE_DEFAULT_BUCKET", &self.bucket)
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start garage");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Kills the server (its data stays): a store that is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// A store URL in the bucket: `s3://bucket/prefix` (`prefix` may be empty).
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{}", self.bucket, prefix.trim_matches('/'))
    }

    /// The environment a child process needs to reach the bucket (`AWS_*`).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_REGION".into(), "garage".into()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
        ]
    }

    /// The same settings as object_store configuration keys, for a store opened in process
    /// (the environment is shared by every test thread).
    pub fn options(&self) -> Vec<(String, String)> {
        self.env().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect()
    }

    /// Creates a key `name` that Garage allows to read the bucket and nothing else
    /// (`garage key create NAME`, `garage bucket allow --read BUCKET --key NAME`): the
    /// credential a node needs.
    pub fn read_only_key(&self, name: &str) -> Key {
        let garage = || {
            let mut c = Command::new("garage");
            c.arg("-c").arg(self.config_path());
            c
        };
        let created = super::run(garage().args(["key", "create", name]));
        let field = |label: &str| -> String {
            created
                .lines()
                .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no `{label}` in garage's answer:\n{created}"))
        };
        let key = Key {
            name: name.to_string(),
            access_key: field("Key ID:"),
            secret_key: field("Secret key:"),
        };
        super::run(garage().args(["bucket", "allow", "--read", &self.bucket, "--key", name]));
        key
    }

    /// [`Garage::env`] with another key's credentials.
    pub fn env_for(&self, key: &Key) -> Vec<(String, String)> {
        self.env()
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "AWS_ACCESS_KEY_ID" => (k, key.access_key.clone()),
                "AWS_SECRET_ACCESS_KEY" => (k, key.secret_key.clone()),
                _ => (k, v),
            })
            .collect()
    }

    /// [`Garage::options`] with another key's credentials.
    pub fn options_for(&self, key: &Key) -> Vec<(String, String)> {
        self.env_for(key).into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect()
    }

    /// Garage's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    /// The data directory (to count stored blocks, say).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until a put and a get of a probe object succeed.
    fn wait_ready(&mut self) {
        use object_store::{ObjectStore, ObjectStoreExt};
        let mut builder = object_store::aws::AmazonS3Builder::new().with_bucket_name(&self.bucket);
        for (k, v) in self.options() {
            builder = builder.with_config(k.parse().unwrap(), v);
        }
        let s3 = builder.build().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let started = Instant::now();
        let probe = object_store::path::Path::from("ready-probe");
        let mut last = String::new();
        while started.elapsed() < READY_TIMEOUT {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("garage exited ({status}) while starting:\n{}", self.log());
            }
            let ok = rt.block_on(async {
                s3.put(&probe, "ready".into()).await?;
                s3.get(&probe).await?.bytes().await?;
                s3.delete(&probe).await
            });
            match ok {
                Ok(()) => return,
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _: &dyn ObjectStore = &s3;
        panic!("garage not ready after {READY_TIMEOUT:?}: {last}\n{}", self.log());
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
