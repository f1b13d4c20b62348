//! The registry's HTTP API through the real `curl` binary.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `curl -sS -L -w '\n%{http_code}' ARGS` in `dir`; returns (HTTP status, body as JSON,
/// or as a JSON string when it is not JSON). Status 0 means curl got no response.
pub fn curl(dir: &Path, args: &[String]) -> (u16, Value) {
    let out = Command::new("curl")
        .current_dir(dir)
        .args(["-sS", "-L", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.stderr.is_empty() {
        eprintln!("curl: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code: u16 = code.trim().parse().unwrap_or(0);
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    (code, body)
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
