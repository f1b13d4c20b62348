//! What the library's unit tests share about their prerequisites (the integration tests have the
//! same rules in `tests/common`): an optional tool or root is required when `CI` is set (CI
//! installs the tools and runs as root), and elsewhere a test that lacks one skips loudly.

use std::process::{Command, Stdio};

/// Says that the running test skips, and why: a line `test skipped: NAME: REASON` on the real
/// standard error, past cargo's capture (`.ci/run` counts these apart from passed tests).
pub(crate) fn skip(reason: &str) {
    use std::io::Write;
    let name = std::thread::current().name().unwrap_or("?").to_string();
    let _ = std::io::stderr().write_all(format!("test skipped: {name}: {reason}\n").as_bytes());
}

/// True if `tool` runs. Under `CI` a missing tool fails the test; elsewhere the caller skips
/// (said by [`skip`]).
pub(crate) fn require(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if found {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{tool} is required in CI (.ci/run installs it)");
    skip(&format!("{tool} is not installed"));
    false
}

/// True if this process runs as root. Under `CI` (which runs as root) a missing root fails the
/// test; elsewhere the caller skips (said by [`skip`]). `what` names what needs root.
pub(crate) fn root_ready(what: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{what} needs root, and CI runs as root");
    skip(&format!("{what} needs root"));
    false
}
