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

/// Runs `args` (`attach ...` or `detach ...`) with the full binary (`which` is "full") or the
/// lean one (`addonfs-attach [detach] ...`).
fn run_as(which: &str, args: &[&std::ffi::OsStr]) -> Output {
    if which == "full" {
        return Command::new(env!("CARGO_BIN_EXE_addonfs")).args(args).output().expect("run");
    }
    let args = if args[0] == "attach" { &args[1..] } else { args };
    Command::new(env!("CARGO_BIN_EXE_addonfs-attach")).args(args).output().expect("run")
}

/// A fake mount at `dir/mount` with one add-on, `custom-addon-x`, holding `files` (path,
/// contents) and asking for `paths`.
fn fake_mount(dir: &Path, files: &[(&str, &str)], paths: &[&str]) -> PathBuf {
    let mount = dir.join("mount");
    for (path, contents) in files {
        let file = mount.join("custom-addon-x").join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).expect("mkdir");
        std::fs::write(&file, contents).expect("write");
    }
    let manifest = serde_json::json!({
        "addons": [{"identifier": "custom-addon-x", "paths": paths}]
    });
    std::fs::write(mount.join(".addons.json"), manifest.to_string()).expect("manifest");
    mount
}

/// Every name under `dir`, recursively (not following symlinks).
fn names(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("readdir") {
            let p = e.expect("entry").path();
            if std::fs::symlink_metadata(&p).expect("lstat").is_dir() {
                todo.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

/// A workload that owns its root plants symlinks to steer attach (run by root) outside it:
/// an absolute `usr -> /…/outside` and a relative `opt -> ../../…/outside`. Every parent is
/// resolved as if the root were `/`: absolute links land inside the root, `..` stops at it,
/// and the outside directory is never written to. Detach does not follow them either.
#[test]
fn symlinks_in_the_root_cannot_steer_links_outside_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path();
    let mount = fake_mount(
        base,
        &[("/usr/custom_file", "custom\n"), ("/opt/lib/driver.so", "driver\n")],
        &["/usr/custom_file", "/opt/lib/driver.so", "/etc2/conf/x"],
    );
    let outside = base.join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    std::fs::write(outside.join("keep"), "mine").expect("write");
    // A link into the mount already outside, as if attach had made it there: detach must not
    // reach it through the planted links.
    let planted = mount.join("custom-addon-x/opt/lib/driver.so");
    std::os::unix::fs::symlink(&planted, outside.join("lib")).expect("symlink");
    for which in ["full", "lean"] {
        let root = base.join(format!("root-{which}"));
        std::fs::create_dir(&root).expect("mkdir");
        std::os::unix::fs::symlink(&outside, root.join("usr")).expect("symlink");
        let up = "../".repeat(outside.components().count() + 3);
        std::os::unix::fs::symlink(format!("{up}outside"), root.join("opt")).expect("symlink");
        std::os::unix::fs::symlink(&outside, root.join("etc2")).expect("symlink");
        // Inside the root, `usr` resolves to ROOT/…/outside (absolute, taken from the root)
        // and `opt` to ROOT/outside (`..` stops at the root): make them there.
        let inner_usr = root.join(outside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inner_usr).expect("mkdir");
        std::fs::create_dir(root.join("outside")).expect("mkdir");
        let root_arg = root.as_os_str();
        let out = &run_as(
            which,
            &[
                "attach".as_ref(),
                "--mount".as_ref(),
                mount.as_os_str(),
                "--root".as_ref(),
                root_arg,
            ],
        );
        // `/etc2/conf/x` is not in the add-on: that path fails, nothing is created for it.
        assert_eq!(out.status.code(), Some(6), "{which}: {}", text(out));
        assert_eq!(
            std::fs::read_to_string(inner_usr.join("custom_file")).expect(which),
            "custom\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("outside/lib/driver.so")).expect(which),
            "driver\n"
        );
        assert_eq!(names(&outside), [PathBuf::from("keep"), PathBuf::from("lib")], "{which}");
        let out = &run_as(
            which,
            &[
                "detach".as_ref(),
                "--mount".as_ref(),
                mount.as_os_str(),
                "--root".as_ref(),
                root_arg,
            ],
        );
        assert!(out.status.success(), "{which}: {}", text(out));
        assert!(!inner_usr.join("custom_file").exists(), "{which}: detached inside the root");
        assert!(!root.join("outside/lib/driver.so").exists(), "{which}");
        assert_eq!(std::fs::read_link(outside.join("lib")).expect(which), planted, "{which}");
        assert_eq!(std::fs::read_to_string(outside.join("keep")).expect(which), "mine");
    }
}

/// Merged-`/usr` images (`bin -> usr/bin`, `lib64 -> usr/lib64`) keep
/// working: the requested paths are linked through them, inside the root.
#[test]
fn merged_usr_roots_attach_through_their_links() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path();
    let mount = fake_mount(
        base,
        &[("/bin/tool", "tool\n"), ("/lib64/libx.so", "libx\n"), ("/sbin/admin", "admin\n")],
        &["/bin/tool", "/lib64/libx.so", "/sbin/admin"],
    );
    for which in ["full", "lean"] {
        let root = base.join(format!("root-{which}"));
        for dir in ["usr/bin", "usr/lib64", "usr/sbin"] {
            std::fs::create_dir_all(root.join(dir)).expect("mkdir");
        }
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).expect("symlink");
        std::os::unix::fs::symlink("usr/lib64", root.join("lib64")).expect("symlink");
        // (An absolute `sbin -> /usr/sbin` means the root's own too, but run against an old
        // attach it would write into the host's /usr/sbin: the steering test covers absolute
        // links with a directory of its own.)
        std::os::unix::fs::symlink("./usr/sbin", root.join("sbin")).expect("symlink");
        let out = &run_as(
            which,
            &[
                "attach".as_ref(),
                "--mount".as_ref(),
                mount.as_os_str(),
                "--root".as_ref(),
                root.as_os_str(),
            ],
        );
        assert!(out.status.success(), "{which}: {}", text(out));
        assert!(text(out).contains("3 linked"), "{which}: {}", text(out));
        assert_eq!(std::fs::read_to_string(root.join("bin/tool")).expect(which), "tool\n");
        assert_eq!(std::fs::read_to_string(root.join("usr/lib64/libx.so")).expect(which), "libx\n");
        assert_eq!(
            std::fs::read_link(root.join("usr/sbin/admin")).expect(which),
            mount.join("custom-addon-x/sbin/admin")
        );
        let out = &run_as(
            which,
            &[
                "detach".as_ref(),
                "--mount".as_ref(),
                mount.as_os_str(),
                "--root".as_ref(),
                root.as_os_str(),
            ],
        );
        assert!(text(out).contains("3 removed"), "{which}: {}", text(out));
        let gone = std::fs::symlink_metadata(root.join("usr/bin/tool")).expect_err(which);
        assert_eq!(gone.kind(), std::io::ErrorKind::NotFound, "{which}: {gone}");
    }
}

/// `--root ''` is refused (it meant the current directory); a root that does not exist is
/// refused too, and not created.
#[test]
fn an_empty_or_missing_root_is_refused() {
    let f = fixture();
    let cwd = f.base.join("cwd");
    std::fs::create_dir(&cwd).expect("mkdir");
    let missing = f.base.join("no/such/root");
    for cmd in ["attach", "detach"] {
        for (root, code, says) in
            [("", 2, "--root"), (missing.to_str().unwrap(), 1, "the workload root")]
        {
            let args = [cmd, "--mount", f.mount.to_str().unwrap(), "--root", root];
            let full = Command::new(env!("CARGO_BIN_EXE_addonfs"))
                .args(args)
                .current_dir(&cwd)
                .output()
                .expect("run");
            let lean_args = if cmd == "attach" { &args[1..] } else { &args[..] };
            let lean = Command::new(env!("CARGO_BIN_EXE_addonfs-attach"))
                .args(lean_args)
                .current_dir(&cwd)
                .output()
                .expect("run");
            for out in [full, lean] {
                assert_eq!(out.status.code(), Some(code), "{cmd} {root:?}: {}", text(&out));
                assert!(text(&out).contains(says), "{cmd} {root:?}: {}", text(&out));
            }
        }
    }
    assert!(names(&cwd).is_empty(), "nothing linked into the current directory");
    assert!(!f.base.join("no").exists(), "the missing root was not created");
    let out = addonfs(&["attach", "--mount", "", "--root", f.base.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--mount"), "{}", text(&out));
    let out = Command::new(env!("CARGO_BIN_EXE_addonfs-attach"))
        .args(["--mount", "", "--root", f.base.to_str().unwrap()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--mount is empty"), "{}", text(&out));
}

/// Detach judges a link by where it points once `..` is applied, not by how its text starts:
/// only links into an add-on's directory of the mount are its own.
#[test]
fn detach_removes_only_links_into_an_addon_of_the_mount() {
    let f = fixture();
    let r = root(&f, "judge");
    let m = f.mount.to_str().unwrap();
    std::fs::create_dir_all(r.join("usr")).unwrap();
    let links = [
        ("usr/ok", format!("{m}/../../../etc/hostname"), false),
        ("priv", m.to_string(), false),
        ("manifest", format!("{m}/.addons.json"), false),
        ("addon-dir", format!("{m}/custom-addon-sample"), false),
        ("escape", format!("{m}/custom-addon-sample/../../x/y"), false),
        ("relative", "mount/custom-addon-sample/usr/custom_file".to_string(), false),
        ("ours", format!("{m}/custom-addon-sample/usr/custom_file"), true),
        ("ours-dotted", format!("{m}/./custom-addon-deep//opt/../opt/vendor"), true),
    ];
    let mut args = vec!["detach", "--mount", m, "--root", r.to_str().unwrap()];
    let paths: Vec<String> = links.iter().map(|(l, ..)| format!("/{l}")).collect();
    for (link, to, _) in &links {
        std::os::unix::fs::symlink(to, r.join(link)).unwrap();
    }
    for p in &paths {
        args.extend(["--path", p]);
    }
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    for which in ["full", "lean"] {
        let out = run_as(which, &args);
        assert!(out.status.success(), "{}", text(&out));
        for (link, to, ours) in &links {
            let there = std::fs::read_link(r.join(link)).ok();
            if *ours {
                assert_eq!(there, None, "{link} -> {to} is attach's: removed");
            } else {
                assert_eq!(there, Some(PathBuf::from(to)), "{link} -> {to} is not attach's");
            }
        }
        // Back for the other binary.
        for (link, to, _) in links.iter().filter(|l| l.2) {
            std::os::unix::fs::symlink(to, r.join(link)).unwrap();
        }
    }
}

/// A reader that goes away (`addonfs-attach --json | (exec 0<&-; ...)`) does not make attach or
/// detach panic: the report stops quietly, the links are made (or removed) all the same, and
/// the exit code is the run's own.
#[test]
fn a_closed_stdout_stops_the_report_quietly() {
    let f = fixture();
    let m = f.mount.as_os_str();
    for which in ["full", "lean"] {
        let r = root(&f, &format!("pipe-{which}"));
        for (cmd, json) in
            [("attach", true), ("attach", false), ("detach", true), ("detach", false)]
        {
            let mut args: Vec<&std::ffi::OsStr> =
                vec![cmd.as_ref(), "--mount".as_ref(), m, "--root".as_ref(), r.as_os_str()];
            if json {
                args.push("--json".as_ref());
            }
            let args = if which == "lean" && cmd == "attach" { &args[1..] } else { &args[..] };
            let bin = if which == "full" {
                env!("CARGO_BIN_EXE_addonfs")
            } else {
                env!("CARGO_BIN_EXE_addonfs-attach")
            };
            let (reader, writer) = std::io::pipe().expect("pipe");
            drop(reader);
            let out = Command::new(bin).args(args).stdout(writer).output().expect("run");
            let what = format!("{which} {cmd} json={json}");
            assert_eq!(out.status.code(), Some(0), "{what}: {}", text(&out));
            assert!(out.stderr.is_empty(), "{what}: {}", text(&out));
            assert_eq!(r.join("usr/custom_file").exists(), cmd == "attach", "{what}");
        }
    }
    // Standard error closed too, with a path that fails: the code is still 6; a bad flag 2.
    let r = root(&f, "pipe-both");
    std::fs::create_dir_all(r.join("usr")).unwrap();
    std::fs::write(r.join("usr/custom_file"), "mine").unwrap();
    for (args, code) in [
        (&["--mount", f.mount.to_str().unwrap(), "--root", r.to_str().unwrap()][..], 6),
        (&["--bogus"][..], 2),
    ] {
        for bin in [env!("CARGO_BIN_EXE_addonfs-attach"), env!("CARGO_BIN_EXE_addonfs")] {
            let (reader, writer) = std::io::pipe().expect("pipe");
            drop(reader);
            let mut cmd = Command::new(bin);
            if bin.ends_with("/addonfs") {
                cmd.arg("attach");
            }
            let status = cmd
                .args(args)
                .stdout(writer.try_clone().expect("dup"))
                .stderr(writer)
                .status()
                .expect("run");
            assert_eq!(status.code(), Some(code), "{bin} {args:?}");
        }
    }
    for flag in ["--help", "--version"] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_addonfs-attach"))
            .arg(flag)
            .stdout(writer)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", text(&out));
        assert!(out.stderr.is_empty(), "{flag}: {}", text(&out));
    }
}

/// A requested path with a newline (or another control character) is quoted in the text
/// report, so each path keeps to one line.
#[test]
fn unprintable_names_are_quoted_in_the_report() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mount = fake_mount(
        tmp.path(),
        &[("/usr/a\nlinked   /etc/passwd", "odd\n"), ("/usr/tab\there", "tab\n")],
        &["/usr/a\nlinked   /etc/passwd", "/usr/tab\there", "/usr/missing\nfile"],
    );
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    let out =
        addonfs(&["attach", "--mount", mount.to_str().unwrap(), "--root", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout.clone()).expect("utf8");
    let stderr = String::from_utf8(out.stderr.clone()).expect("utf8");
    // Two linked lines and the summary; one failure line.
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stdout.lines().all(|l| l.starts_with("linked ") || l.starts_with("3 paths")),
        "{stdout}"
    );
    assert!(stdout.contains(r#"/usr/a\nlinked   /etc/passwd""#), "{stdout}");
    assert!(stdout.contains(r#"/usr/tab\there""#), "{stdout}");
    assert!(stderr.contains(r#"path "/usr/missing\nfile": "#), "{stderr}");
    assert_eq!(std::fs::read_to_string(root.join("usr/tab\there")).expect("read"), "tab\n");
}

/// The manifest is read from the mount, but attach does not trust it: identifiers and paths
/// that are not plain names (`..`, `/`, NUL, hidden) fail without creating anything, and a
/// manifest too large to be the daemon's is refused.
#[test]
fn a_hostile_manifest_cannot_steer_attach() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path();
    let mount = base.join("mount");
    std::fs::create_dir_all(mount.join("custom-addon-x/usr")).expect("mkdir");
    std::fs::write(mount.join("custom-addon-x/usr/f"), "f\n").expect("write");
    std::fs::create_dir_all(base.join("etc")).expect("mkdir");
    let manifest = serde_json::json!({"addons": [
        {"identifier": "custom-addon-x", "paths": [
            "/usr/../../etc/evil", "usr/relative", "/usr/f\u{0}x", "/", "//", "/./usr/./f2",
            "/../etc/evil"
        ]},
        {"identifier": "../custom-addon-x", "paths": ["/usr/f"]},
        {"identifier": "/abs", "paths": ["/usr/f"]},
        {"identifier": ".addons.json", "paths": ["/usr/f"]},
        {"identifier": "", "paths": ["/usr/f"]},
        {"identifier": "a\u{0}b", "paths": ["/usr/f"]},
        {"identifier": "custom-addon-x", "paths": ["/usr/f"]},
    ]});
    std::fs::write(mount.join(".addons.json"), manifest.to_string()).expect("manifest");
    let root = base.join("root");
    std::fs::create_dir(&root).expect("mkdir");
    for which in ["full", "lean"] {
        let out = run_as(
            which,
            &[
                "attach".as_ref(),
                "--mount".as_ref(),
                mount.as_os_str(),
                "--root".as_ref(),
                root.as_os_str(),
                "--json".as_ref(),
            ],
        );
        assert_eq!(out.status.code(), Some(6), "{which}: {}", text(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let outcomes: Vec<&str> = report["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["outcome"].as_str().unwrap())
            .collect();
        let last = if which == "full" { "linked" } else { "already_linked" };
        // `/./usr/./f2` is clean but not in the add-on.
        let mut want = vec!["failed"; 12];
        want.push(last);
        assert_eq!(outcomes, want, "{which}: {report}");
        assert_eq!(names(&root), [PathBuf::from("usr"), PathBuf::from("usr/f")], "{which}");
        assert!(names(&base.join("etc")).is_empty(), "{which}");
    }
    // Larger than 16 MiB: refused before parsing.
    let big = format!(r#"{{"addons":[],"pad":"{}"}}"#, "x".repeat(16 << 20));
    std::fs::write(mount.join(".addons.json"), big).expect("manifest");
    for which in ["full", "lean"] {
        let out = run_as(
            which,
            &[
                "attach".as_ref(),
                "--mount".as_ref(),
                mount.as_os_str(),
                "--root".as_ref(),
                root.as_os_str(),
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{which}: {}", text(&out));
        assert!(text(&out).contains("is larger than 16 MiB"), "{which}: {}", text(&out));
    }
}
