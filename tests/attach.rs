//! `addonfs attach` / `detach` on temporary workload roots, against a mount-shaped directory
//! (the manifest and one directory per add-on, exactly as the daemon's mount lays them out).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

fn addonfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_addonfs")).args(args).output().expect("run addonfs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A fake mount with two add-ons: the seed's sample and a nested one.
struct Fixture {
    _dir: tempfile::TempDir,
    mount: PathBuf,
    base: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_path_buf();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mount = base.join("mount");
    let a = mount.join("custom-addon-sample");
    std::fs::create_dir_all(a.join("usr/bin/custom_folder")).expect("mkdir");
    std::fs::write(a.join("usr/custom_file"), "custom file\n").expect("write");
    std::fs::write(a.join("usr/bin/custom_folder/tool"), "tool\n").expect("write");
    let b = mount.join("custom-addon-deep");
    std::fs::create_dir_all(b.join("opt/vendor/lib/deep")).expect("mkdir");
    std::fs::write(b.join("opt/vendor/lib/deep/driver.so"), "driver\n").expect("write");
    std::fs::write(
        mount.join(".addons.json"),
        r#"{"addons":[
            {"identifier":"custom-addon-sample","paths":["/usr/custom_file","/usr/bin/custom_folder"]},
            {"identifier":"custom-addon-deep","paths":["/opt/vendor/lib/deep/driver.so"]}
        ]}"#,
    )
    .expect("manifest");
    Fixture { _dir: dir, mount, base }
}

fn root(f: &Fixture, name: &str) -> PathBuf {
    let root = f.base.join(name);
    std::fs::create_dir_all(&root).expect("mkdir root");
    root
}

fn attach(f: &Fixture, root: &Path) -> Output {
    addonfs(&["attach", "--mount", f.mount.to_str().unwrap(), "--root", root.to_str().unwrap()])
}

#[test]
fn fresh_root_gets_every_path_and_reads_through_the_links() {
    let f = fixture();
    let r = root(&f, "fresh");
    let out = attach(&f, &r);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(r.join("usr/custom_file")).unwrap(), "custom file\n");
    assert_eq!(std::fs::read_to_string(r.join("usr/bin/custom_folder/tool")).unwrap(), "tool\n");
    // Nested parents were created for the deep path.
    assert_eq!(
        std::fs::read_to_string(r.join("opt/vendor/lib/deep/driver.so")).unwrap(),
        "driver\n"
    );
    let link = std::fs::read_link(r.join("usr/bin/custom_folder")).unwrap();
    assert_eq!(link, f.mount.join("custom-addon-sample/usr/bin/custom_folder"));
    assert!(text(&out).contains("3 linked"), "{}", text(&out));
}

#[test]
fn rerun_is_idempotent() {
    let f = fixture();
    let r = root(&f, "again");
    assert!(attach(&f, &r).status.success());
    let out = attach(&f, &r);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("3 already linked"), "{}", text(&out));
}

#[test]
fn what_is_in_the_way_fails_that_path_only() {
    let f = fixture();
    let r = root(&f, "busy");
    std::fs::create_dir_all(r.join("usr/bin/custom_folder")).unwrap(); // a directory
    std::fs::write(r.join("usr/custom_file"), "mine").unwrap(); // a file
    std::fs::create_dir_all(r.join("opt/vendor/lib/deep")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", r.join("opt/vendor/lib/deep/driver.so")).unwrap();
    let out = attach(&f, &r);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("add-on custom-addon-sample: path /usr/custom_file: a file is already there"),
        "{t}"
    );
    assert!(t.contains("path /usr/bin/custom_folder: a directory is already there"), "{t}");
    assert!(
        t.contains("add-on custom-addon-deep: path /opt/vendor/lib/deep/driver.so: a symlink to /etc/hostname"),
        "{t}"
    );
    // Nothing of the workload's was touched.
    assert_eq!(std::fs::read_to_string(r.join("usr/custom_file")).unwrap(), "mine");
}

#[test]
fn other_paths_still_attach_when_one_fails() {
    let f = fixture();
    let r = root(&f, "partial");
    std::fs::create_dir_all(r.join("usr")).unwrap();
    std::fs::write(r.join("usr/custom_file"), "mine").unwrap();
    let out = attach(&f, &r);
    assert_eq!(out.status.code(), Some(6));
    assert!(r.join("usr/bin/custom_folder/tool").exists());
    assert!(r.join("opt/vendor/lib/deep/driver.so").exists());
    let json = addonfs(&[
        "attach",
        "--json",
        "--mount",
        f.mount.to_str().unwrap(),
        "--root",
        r.to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json report");
    let outcomes: Vec<&str> = report["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failed", "already_linked", "already_linked"]);
}

#[test]
fn unwritable_parent_names_the_directory_as_a_normal_user() {
    // setpriv changes user, which needs root (CI runs as root; elsewhere: skipped, loudly).
    if !common::root_ready("setpriv --reuid") || !common::require("setpriv") {
        return;
    }
    let f = fixture();
    let r = root(&f, "locked");
    std::fs::set_permissions(&r, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Run as `nobody`: the root is root's, so nothing can be created in it.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_addonfs"))
        .args(["attach", "--mount", f.mount.to_str().unwrap(), "--root", r.to_str().unwrap()])
        .output()
        .expect("setpriv");
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains(&format!("no write access to {}", r.display())), "{t}");
}

#[test]
fn detach_removes_only_links_into_the_mount() {
    let f = fixture();
    let r = root(&f, "detach");
    assert!(attach(&f, &r).status.success());
    // Replace one of ours by a foreign symlink: detach must leave it.
    std::fs::remove_file(r.join("usr/custom_file")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", r.join("usr/custom_file")).unwrap();
    let out =
        addonfs(&["detach", "--mount", f.mount.to_str().unwrap(), "--root", r.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    for gone in ["usr/bin/custom_folder", "opt/vendor/lib/deep/driver.so"] {
        let err = std::fs::symlink_metadata(r.join(gone)).expect_err(gone);
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{gone}: {err}");
    }
    assert_eq!(
        std::fs::read_link(r.join("usr/custom_file")).unwrap(),
        PathBuf::from("/etc/hostname")
    );
    assert!(text(&out).contains("2 removed, 1 skipped"), "{}", text(&out));
}

#[test]
fn missing_manifest_is_a_clear_error() {
    let f = fixture();
    let r = root(&f, "nomount");
    let out = addonfs(&["attach", "--mount", r.to_str().unwrap(), "--root", r.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains(".addons.json"), "{}", text(&out));
}

/// The lean `addonfs-attach` binary does what `addonfs attach` and `addonfs detach` do, with
/// the same report and exit codes.
#[test]
fn lean_binary_attaches_and_detaches_like_the_full_one() {
    let f = fixture();
    let lean = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_addonfs-attach")).args(args).output().expect("run")
    };
    let mount = f.mount.to_str().unwrap();
    let (full_root, lean_root) = (root(&f, "full"), root(&f, "lean"));
    // Something in the way of one path, in both roots: exit 6 from both, the rest linked.
    for r in [&full_root, &lean_root] {
        std::fs::create_dir_all(r.join("usr")).unwrap();
        std::fs::write(r.join("usr/custom_file"), "mine\n").unwrap();
    }
    let full = attach(&f, &full_root);
    let out = lean(&["--mount", mount, "--root", lean_root.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert_eq!(out.status.code(), full.status.code());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["paths"].as_array().map(Vec::len), Some(3), "{report}");
    for r in [&full_root, &lean_root] {
        assert_eq!(std::fs::read_to_string(r.join("usr/custom_file")).unwrap(), "mine\n");
        assert_eq!(
            std::fs::read_to_string(r.join("usr/bin/custom_folder/tool")).unwrap(),
            "tool\n"
        );
    }
    let out = lean(&["detach", "--mount", mount, "--root", lean_root.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!lean_root.join("usr/bin/custom_folder").exists());
    assert!(!lean_root.join("opt/vendor/lib/deep/driver.so").exists());
    assert_eq!(std::fs::read_to_string(lean_root.join("usr/custom_file")).unwrap(), "mine\n");
}
