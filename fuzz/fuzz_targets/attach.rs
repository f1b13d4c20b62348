#![no_main]
//! Runs attach and detach on an arbitrary manifest, for real, in a workload root where the
//! workload planted symlinks meant to steer them out (`usr -> /…/outside`, `lib -> ../../..`,
//! `etc -> /`) next to a merged-`/usr` link (`bin -> usr/bin`). Must never panic; nothing is
//! ever created in the outside directory; whatever attach links, it links inside the root,
//! into an add-on of the mount, and detach takes it back. The pure pieces hold too: a planned
//! link is a relative path of plain names whose target detach recognizes as its own, and a
//! quoted name has no control character left.

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use addonfs::attach::{self, is_ours, parse_manifest, plan, quoted, Outcome};
use libfuzzer_sys::fuzz_target;

struct World {
    _dir: tempfile::TempDir,
    mount: PathBuf,
    root: PathBuf,
    outside: PathBuf,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mount = dir.path().join("mount");
        for file in ["usr/f", "usr/bin/t", "bin/t", "lib/x.so", "etc/conf", "outside/f"] {
            let path = mount.join("custom-addon-a").join(file);
            std::fs::create_dir_all(path.parent().unwrap()).expect("mkdir");
            std::fs::write(&path, "x").expect("write");
        }
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        World { mount, root: dir.path().join("root"), outside, _dir: dir }
    })
}

/// A fresh root with the workload's planted links.
fn plant(w: &World) {
    let _ = std::fs::remove_dir_all(&w.root);
    std::fs::create_dir_all(w.root.join("usr/bin")).expect("mkdir");
    let link = |to: &Path, name: &str| std::os::unix::fs::symlink(to, w.root.join(name));
    link(&w.outside, "usr/evil").expect("symlink");
    link(Path::new("../../../../../../../.."), "lib").expect("symlink");
    link(Path::new("/"), "etc").expect("symlink");
    link(Path::new("usr/bin"), "bin").expect("symlink");
    link(&w.outside, "outside").expect("symlink");
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    // The pure pieces, on the bytes as a link's text.
    let text = Path::new(std::str::from_utf8(data).unwrap_or(""));
    if is_ours(&w.mount, text) {
        assert!(text.is_absolute());
    }
    assert!(!quoted(text.as_os_str()).chars().any(char::is_control));
    let Ok(manifest) = parse_manifest(data) else { return };
    let total: usize = manifest.addons.iter().map(|a| a.paths.len()).sum();
    for addon in &manifest.addons {
        for path in &addon.paths {
            if let Some((rel, target)) = plan(&w.mount, &addon.identifier, path) {
                assert!(!rel.as_os_str().is_empty());
                assert!(rel.components().all(|c| matches!(c, Component::Normal(_))), "{rel:?}");
                assert!(target.starts_with(w.mount.join(&addon.identifier)));
                assert!(is_ours(&w.mount, &target), "{target:?}");
            }
        }
    }
    if total > 64 {
        return;
    }
    // For real.
    std::fs::write(w.mount.join(".addons.json"), data).expect("manifest");
    plant(w);
    let report = attach::attach(&w.mount, &w.root).expect("the root and the manifest are there");
    assert_eq!(report.paths.len(), total);
    assert_eq!(std::fs::read_dir(&w.outside).expect("outside").count(), 0, "wrote outside");
    let linked: Vec<_> = report.paths.iter().filter(|p| p.outcome == Outcome::Linked).collect();
    for p in &linked {
        assert!(is_ours(&w.mount, &p.target), "{p:?}");
    }
    let report = attach::detach(&w.mount, &w.root, &[]).expect("detach");
    let removed = report.paths.iter().filter(|p| p.outcome == Outcome::Removed).count();
    assert!(removed >= linked.len(), "attach linked {} but detach removed {removed}", linked.len());
    assert_eq!(std::fs::read_dir(&w.outside).expect("outside").count(), 0, "removed outside");
});
