//! A real Garage S3 server on loopback (single node, its own directories and ports, one bucket
//! and one key), stopped (killed) when dropped: the store the lazy benchmark's nodes follow,
//! and (through `tests/common/garage.rs`) the tests' store.
//!
//! ```ignore
//! let garage = Garage::start(Path::new("garage"), None)?;  // program, parent of its directory
//! let url = garage.url("some/prefix");                      // s3://<bucket>/some/prefix
//! Command::new(bin).envs(garage.env())...                   // AWS_* for a child process
//! let backend = addonfs::addon::backend::open_with(&url, &garage.options())?; // in process
//! ```
//!
//! Garage ignores conditional writes (`If-None-Match`, `If-Match`): what needs them needs
//! another store.
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::BenchError;
use std::time::{Duration, Instant};

/// How long Garage gets to become ready (first start: database, layout, key, bucket).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Garage.
pub struct Garage {
    program: PathBuf,
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
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_or(0, |a| a.port())
}

/// `bytes` random bytes in hex (keys and secrets of a throwaway server).
fn hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom_fill(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn getrandom_fill(buf: &mut [u8]) {
    use std::io::Read;
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        if f.read_exact(buf).is_ok() {
            return;
        }
    }
    // No /dev/urandom: the clock is random enough for a server that lives minutes on loopback.
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (t.as_nanos() >> (i % 16 * 8)) as u8 ^ i as u8;
    }
}

impl Garage {
    /// Starts `program` (`garage`, or a path to it) in a fresh directory (in `parent`, else
    /// the system's temporary directory) and waits until the bucket takes a write.
    pub fn start(program: &Path, parent: Option<&Path>) -> Result<Garage, BenchError> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("addonfs-garage-");
        let dir = match parent {
            Some(p) => builder.tempdir_in(p).map_err(|e| BenchError::io(p, e))?,
            None => builder.tempdir().map_err(|e| BenchError::io(std::env::temp_dir(), e))?,
        };
        let mut garage = Garage {
            program: program.to_path_buf(),
            s3_port: free_port(),
            rpc_port: free_port(),
            access_key: format!("GK{}", hex(12)),
            secret_key: hex(32),
            bucket: "addonfs-test".to_string(),
            dir,
            child: None,
        };
        garage.write_config()?;
        garage.resume()?;
        Ok(garage)
    }

    /// Its configuration file (for `garage -c FILE ...` admin commands).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("garage.toml")
    }

    /// The `garage` program it runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    fn write_config(&self) -> Result<(), BenchError> {
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
        std::fs::write(self.config_path(), config)
            .map_err(|e| BenchError::io(self.config_path(), e))
    }

    /// Starts (again, after [`Garage::stop`]) the server on the same directories and ports,
    /// and waits until it is ready.
    pub fn resume(&mut self) -> Result<(), BenchError> {
        if self.child.is_some() {
            return Ok(());
        }
        let log_path = self.dir.path().join("garage.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| BenchError::io(&log_path, e))?;
        let log2 = log.try_clone().map_err(|e| BenchError::io(&log_path, e))?;
        let child = Command::new(&self.program)
            .arg("-c")
            .arg(self.config_path())
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", &self.access_key)
            .env("GARAGE_DEFAULT_SECRET_KEY", &self.secret_key)
            .env("GARAGE_DEFAULT_BUCKET", &self.bucket)
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| BenchError::Command {
                command: format!("{} server", self.program.display()),
                status: "cannot start".to_string(),
                stderr: e.to_string(),
            })?;
        self.child = Some(child);
        self.wait_ready()
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

    /// The S3 endpoint's socket address (to put a proxy in front of it).
    pub fn s3_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.s3_port))
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

    /// Garage's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    /// The data directory (to count stored blocks, say).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until a put and a get of a probe object succeed.
    fn wait_ready(&mut self) -> Result<(), BenchError> {
        use object_store::ObjectStoreExt;
        let command = format!("{} server", self.program.display());
        let failed = |what: String| BenchError::Command {
            command: command.clone(),
            status: "not ready".to_string(),
            stderr: what,
        };
        let mut builder = object_store::aws::AmazonS3Builder::new().with_bucket_name(&self.bucket);
        for (k, v) in self.options() {
            let key = k.parse().map_err(|e| failed(format!("option {k}: {e}")))?;
            builder = builder.with_config(key, v);
        }
        let s3 = builder.build().map_err(|e| failed(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| failed(e.to_string()))?;
        let started = Instant::now();
        let probe = object_store::path::Path::from("ready-probe");
        let mut last = String::new();
        while started.elapsed() < READY_TIMEOUT {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(failed(format!("exited ({status}) while starting:\n{}", self.log())));
            }
            let ok = rt.block_on(async {
                s3.put(&probe, "ready".into()).await?;
                s3.get(&probe).await?.bytes().await?;
                s3.delete(&probe).await
            });
            match ok {
                Ok(()) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.stop();
        Err(failed(format!("not ready after {READY_TIMEOUT:?}: {last}\n{}", self.log())))
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
