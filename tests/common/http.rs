//! The registry's HTTP API through the real `curl` binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Runs `curl -sS -L -w '\n%{http_code}' ARGS` in `dir`; returns (HTTP status, body as JSON,
/// or as a JSON string when it is not JSON). Status 0 means curl got no response.
pub fn curl(dir: &Path, args: &[String]) -> (u16, Value) {
    let answer = curl_answer(dir, args);
    (answer.status, answer.body)
}

/// What [`curl_answer`] got back.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status (0: no response).
    pub status: u16,
    /// The response's `Content-Type` (empty if none).
    pub content_type: String,
    /// The body as JSON, or as a JSON string when it is not JSON.
    pub body: Value,
}

/// [`curl`] that also returns the response's `Content-Type`.
pub fn curl_answer(dir: &Path, args: &[String]) -> Answer {
    let out = Command::new("curl")
        .current_dir(dir)
        .args(["-sS", "-L", "-w", "\n%{content_type}\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.stderr.is_empty() {
        eprintln!("curl: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (rest, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (body, content_type) = rest.rsplit_once('\n').unwrap_or(("", rest));
    let status: u16 = code.trim().parse().unwrap_or(0);
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    Answer { status, content_type: content_type.trim().to_string(), body }
}

/// The seed's upload, run in `dir`: `curl -sS -L URL/api/v2/runtimeaddons/custom -F
/// metadata=@metadata.json -F tarball=@TARBALL -H 'Authorization: Bearer KEY'` against the
/// API at `url`; returns (HTTP status, JSON body).
pub fn seed_upload(dir: &Path, url: &str, key: &str, tarball: &str) -> (u16, Value) {
    curl(
        dir,
        &[
            format!("{url}/api/v2/runtimeaddons/custom"),
            "-F".into(),
            "metadata=@metadata.json".into(),
            "-F".into(),
            format!("tarball=@{tarball}"),
            "-H".into(),
            format!("Authorization: Bearer {key}"),
        ],
    )
}

/// Packs `tree/top` as an add-on tarball would be: `tar -czf DIR/addon.tar.gz -C TREE TOP`,
/// the file [`seed_upload`] sends by default.
pub fn pack_addon(dir: &Path, tree: &Path, top: &str) {
    super::run(
        Command::new("tar").arg("-czf").arg(dir.join("addon.tar.gz")).arg("-C").arg(tree).arg(top),
    );
}

/// A running `addonfs serve` on a free loopback port, its API key given by `ADDONFS_API_KEY`;
/// stopped on drop (SIGTERM so that it unmounts, SIGKILL after 10 s, then a lazy unmount).
pub struct Serve {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The state directory.
    pub state: PathBuf,
    /// The mount, unless started with `--no-mount`.
    pub mount: Option<PathBuf>,
}

impl Serve {
    /// Starts `addonfs serve --state-dir STATE --listen 127.0.0.1:0` with `--mount MOUNT`, or
    /// `--no-mount` without one, and waits for the address it prints.
    pub fn start(state: &Path, key: &str, mount: Option<&Path>) -> Serve {
        Self::start_with_env(state, key, mount, &[])
    }

    /// [`Serve::start`] with more environment variables.
    pub fn start_with_env(
        state: &Path,
        key: &str,
        mount: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_addonfs"));
        cmd.envs(env.iter().copied());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--state-dir"]).arg(state);
        match mount {
            Some(m) => cmd.arg("--mount").arg(m),
            None => cmd.arg("--no-mount"),
        };
        let mut child = cmd
            .env("ADDONFS_API_KEY", key)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start addonfs serve");
        let url = serve_url(&mut child);
        Serve { child, url, state: state.to_path_buf(), mount: mount.map(Path::to_path_buf) }
    }
}

/// The `http://ADDRESS` (or `https://`) a just-started `addonfs serve` (or `node`) prints on its
/// standard output (piped) once it listens, read from the first few lines.
pub fn serve_url(child: &mut Child) -> String {
    let mut reader = BufReader::new(child.stdout.take().expect("stdout is piped"));
    for _ in 0..4 {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read stdout") == 0 {
            break;
        }
        if let Some(u) =
            line.split_whitespace().find(|w| w.starts_with("http://") || w.starts_with("https://"))
        {
            return u.to_string();
        }
    }
    panic!("addonfs printed no address")
}

impl Drop for Serve {
    fn drop(&mut self) {
        super::terminate(&mut self.child, Duration::from_secs(10));
        if let Some(mount) = &self.mount {
            let _ = Command::new("umount").arg("-l").arg(mount).stderr(Stdio::null()).status();
        }
    }
}
