//! Every node, one registry (issue 12), from the node side: three `addonfs node` processes on
//! one machine, each with its own mount point and cache directory, follow one store.
//!
//! The store is written by a publisher that follows the catalog layout of
//! `docs/architecture.md` (objects first, catalog last) through `object_store`, so the same
//! tests run against a shared local directory and, where the harness has it, a real Garage.
//! The nodes are real processes, read through their real FUSE mounts, and killed with SIGKILL
//! where the test says so. FUSE is required under `CI`.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use addonfs::addon::backend::{self, Backend};
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

mod common;

use common::node::Node;

/// How long a change may take to reach every node in these tests: the issue's bound is 2 s
/// (measured in docs/benchmarks.md); this is only a liveness bound on a loaded machine.
const BOUND: Duration = Duration::from_secs(10);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes add-ons and the catalog into a store as the registry does: every object of an
/// upload under a fresh key, then the catalog (the only object that changes).
struct Publisher {
    store: Backend,
    rt: tokio::runtime::Runtime,
    revision: u64,
    addons: Vec<Value>,
    work: tempfile::TempDir,
}

impl Publisher {
    fn new(store: Backend) -> Publisher {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Publisher { store, rt, revision: 0, addons: vec![], work: tempfile::tempdir().unwrap() }
    }

    fn put(&self, key: &str, bytes: Vec<u8>) {
        self.rt
            .block_on(self.store.store().put(&self.store.key(key), PutPayload::from(bytes)))
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    /// Uploads an add-on `name` whose tree has `files` (relative path → content) and asks for
    /// `paths`; returns the new revision.
    fn upload(&mut self, name: &str, files: &[(&str, &[u8])], paths: &[&str]) -> u64 {
        let tree = self.work.path().join(format!("tree-{name}"));
        for (rel, content) in files {
            let path = tree.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, content).unwrap();
        }
        let tarball = self.work.path().join(format!("{name}.tar.gz"));
        common::run(Command::new("tar").arg("-czf").arg(&tarball).arg("-C").arg(&tree).arg("."));
        common::run(Command::new(env!("CARGO_BIN_EXE_addonfs")).arg("index").arg(&tarball));
        let tar = std::fs::read(&tarball).unwrap();
        let index = std::fs::read(format!("{}.addonfs-index", tarball.display())).unwrap();
        let identifier = format!("custom-addon-{name}");
        let dir = format!("addons/{identifier}/{}-{:x}", self.addons.len() + 1, rand_u32());
        let (tk, ik, mk) = (
            format!("{dir}/addon.tar.gz"),
            format!("{dir}/addon.tar.gz.addonfs-index"),
            format!("{dir}/metadata.json"),
        );
        self.put(&tk, tar.clone());
        self.put(&ik, index.clone());
        self.put(&mk, serde_json::to_vec(&json!({"name": name, "paths": paths})).unwrap());
        self.addons.push(json!({
            "id": self.addons.len() + 1, "identifier": identifier, "component": "Custom",
            "display_name": name, "status": "AVAILABLE", "manageable": true,
            "created_at": "2026-11-30T00:00:00Z", "reason": "",
            "size": tar.len(), "sha256": hex(&Sha256::digest(&tar)),
            "paths": paths,
            "objects": {"tarball": tk, "index": ik, "metadata": mk},
            "index_size": index.len(), "index_sha256": hex(&Sha256::digest(&index)),
        }));
        self.commit()
    }

    /// Sets an add-on's status; returns the new revision.
    fn set_status(&mut self, name: &str, status: &str) -> u64 {
        let identifier = format!("custom-addon-{name}");
        let addon = self.addons.iter_mut().find(|a| a["identifier"] == identifier).unwrap();
        addon["status"] = json!(status);
        self.commit()
    }

    fn commit(&mut self) -> u64 {
        self.revision += 1;
        self.write_catalog(self.revision);
        self.revision
    }

    fn write_catalog(&self, revision: u64) {
        let catalog = json!({"format": 1, "revision": revision, "addons": self.addons});
        self.put("catalog.json", serde_json::to_vec_pretty(&catalog).unwrap());
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut b).unwrap();
    u32::from_le_bytes(b)
}

/// What the cluster tests read of a node: its manifest, listing and attaches.
impl Node {
    fn manifest(&self) -> Option<Value> {
        let text = std::fs::read(self.mount.join(".addons.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn revision(&self) -> u64 {
        self.manifest().and_then(|m| m["revision"].as_u64()).unwrap_or(0)
    }

    fn listed(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.mount)
            .map(|d| {
                d.filter_map(|e| e.ok()).map(|e| e.file_name().into_string().unwrap()).collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// `addonfs attach --min-revision N --wait W` into a fresh root; (exit code, stderr).
    fn attach(&self, root: &Path, min: u64, wait: &str, lean: bool) -> (i32, String) {
        std::fs::create_dir_all(root).unwrap();
        let mut cmd = if lean {
            Command::new(env!("CARGO_BIN_EXE_addonfs-attach"))
        } else {
            let mut c = Command::new(env!("CARGO_BIN_EXE_addonfs"));
            c.arg("attach");
            c
        };
        let out = cmd
            .arg("--mount")
            .arg(&self.mount)
            .arg("--root")
            .arg(root)
            .args(["--min-revision", &min.to_string(), "--wait", wait])
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// Waits until `cond` holds, at most [`BOUND`]; panics naming `what` otherwise.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < BOUND, "not within {BOUND:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Every object of a store (its key under the store's prefix) with its ETag.
fn objects(b: &Backend) -> Vec<(String, Option<String>)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use futures_util::StreamExt;
        let mut out = vec![];
        let mut list = b.store().list(b.prefix_key().as_ref());
        while let Some(meta) = list.next().await {
            let meta = meta.unwrap();
            out.push((b.relative(&meta.location).unwrap().to_string(), meta.e_tag));
        }
        out.sort();
        out
    })
}

/// The node's log says the store went away (a warning) and, after that, that it answers again.
fn assert_logged_outage_and_recovery(node: &Node) {
    let log = node.log();
    let down = log
        .find("cannot read the catalog; serving what is cached")
        .unwrap_or_else(|| panic!("the log does not say the store is down:\n{log}"));
    assert!(log[..down].rsplit('\n').next().unwrap_or("").contains("WARN"), "{log}");
    assert!(
        log[down..].contains("the store answers"),
        "the log does not say the store is back:\n{log}"
    );
}

/// A local directory store: its URL and the publisher's handle on it.
fn local_store(dir: &Path) -> (String, Backend) {
    std::fs::create_dir_all(dir).unwrap();
    let url = dir.display().to_string();
    (url.clone(), backend::open(&url).unwrap())
}

/// A store in a real Garage, under its own prefix: its URL, the publisher's handle on it, and
/// the environment a node needs.
fn garage_store(
    garage: &common::garage::Garage,
    prefix: &str,
) -> (String, Backend, Vec<(String, String)>) {
    let url = garage.url(prefix);
    let store = backend::open_with(&url, &garage.options()).unwrap();
    (url, store, garage.env())
}

const BIG: usize = 3 << 20;

fn big_content() -> Vec<u8> {
    // Not compressible to nothing: a read in the middle needs a real span.
    let mut x = 0x1234_5678u32;
    (0..BIG)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 7) as u8 + b'a'
        })
        .collect()
}

/// Upload once → every node serves it and attach works on each; a node started later gets
/// it; disable → gone from new roots on all three; a revision going backwards is ignored.
fn three_nodes_follow(store_url: &str, store: Backend, env: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut publisher = Publisher::new(store);
    let nodes: Vec<Node> = (0..3)
        .map(|i| Node::start_logged(store_url, env, &dir.path().join(format!("n{i}"))))
        .collect();
    for node in &nodes {
        assert_eq!(node.get("/healthz").0, 200);
    }
    let rev = publisher.upload(
        "alpha",
        &[("usr/custom_file", b"alpha\n"), ("usr/custom_folder/deep", b"deep\n")],
        &["/usr/custom_file", "/usr/custom_folder"],
    );
    for (i, node) in nodes.iter().enumerate() {
        // attach waits until the node has caught up, then links.
        let root = dir.path().join(format!("root{i}"));
        let (code, err) = node.attach(&root, rev, "10s", i == 1);
        assert_eq!(code, 0, "node {i}: {err}");
        assert_eq!(std::fs::read(root.join("usr/custom_file")).unwrap(), b"alpha\n");
        assert_eq!(std::fs::read(root.join("usr/custom_folder/deep")).unwrap(), b"deep\n");
        assert_eq!(node.listed(), [".addons.json", "custom-addon-alpha"]);
        let (code, body) = node.get("/readyz");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains(r#""store":"up""#), "{body}");
        // A revision the node has not reached: a bounded wait, then a message and non-zero.
        let (code, err) =
            node.attach(&dir.path().join(format!("later{i}")), rev + 1, "300ms", i == 2);
        assert_ne!(code, 0);
        assert!(
            err.contains("--min-revision") && err.contains(&format!("revision {rev}")),
            "{err}"
        );
    }
    // Idle nodes ask the store only for the catalog, answered "not modified".
    // (The two counters are read one after the other: a request may fall between the reads,
    // so the two counts may differ by one.)
    let unchanged = nodes[0].metric("addonfs_node_catalog_not_modified_total");
    let before = nodes[0].metric("addonfs_node_catalog_requests_total");
    let fetches = nodes[0].metric("addonfs_node_fetches_total");
    std::thread::sleep(Duration::from_millis(2500));
    let answered = nodes[0].metric("addonfs_node_catalog_not_modified_total") - unchanged;
    let asked = nodes[0].metric("addonfs_node_catalog_requests_total") - before;
    assert!((1..=4).contains(&asked), "{asked} catalog requests in 2.5 s");
    assert!(asked.abs_diff(answered) <= 1, "{asked} catalog requests, {answered} not modified");
    assert_eq!(nodes[0].metric("addonfs_node_fetches_total"), fetches, "an idle node fetched");

    // A node started after the upload gets it.
    let late = Node::start_logged(store_url, env, &dir.path().join("late"));
    eventually("the late node serves alpha", || late.revision() >= rev);
    assert_eq!(
        std::fs::read(late.mount.join("custom-addon-alpha/usr/custom_file")).unwrap(),
        b"alpha\n"
    );

    // Disable: gone from the listing and the manifest of every node; the links of a running
    // workload keep reading.
    let rev = publisher.set_status("alpha", "DISABLED");
    for node in nodes.iter().chain([&late]) {
        eventually("disable reaches the node", || node.revision() >= rev);
        assert_eq!(node.listed(), [".addons.json"]);
        assert_eq!(node.manifest().unwrap()["addons"], json!([]));
    }
    assert_eq!(std::fs::read(dir.path().join("root0/usr/custom_file")).unwrap(), b"alpha\n");

    // A catalog whose revision goes backwards is ignored.
    publisher.write_catalog(1);
    eventually("the old catalog is seen and refused", || {
        nodes[0].metric("addonfs_node_catalog_regressions_total") >= 1
    });
    assert_eq!(nodes[0].revision(), rev);
    assert_eq!(nodes[0].listed(), [".addons.json"]);
}

/// kill -9 a node in the middle of a read, restart it: same bytes, same inode numbers, and
/// the cache is found intact (nothing fetched again).
fn killed_node_comes_back_the_same(store_url: &str, store: Backend, env: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut publisher = Publisher::new(store);
    let big = big_content();
    let rev = publisher.upload(
        "beta",
        &[("opt/beta/big", &big), ("opt/beta/small", b"s\n")],
        &["/opt/beta"],
    );
    let mut node = Node::start_logged(store_url, env, &dir.path().join("n"));
    eventually("the node serves beta", || node.revision() >= rev);
    let file = node.mount.join("custom-addon-beta/opt/beta/big");
    let inodes = |node: &Node| -> Vec<u64> {
        [
            "custom-addon-beta",
            "custom-addon-beta/opt/beta",
            "custom-addon-beta/opt/beta/big",
            "custom-addon-beta/opt/beta/small",
        ]
        .iter()
        .map(|p| std::fs::metadata(node.mount.join(p)).unwrap().ino())
        .collect()
    };
    let before = inodes(&node);
    assert_eq!(node.metric("addonfs_node_fetches_total"), 1);
    // Mid-read: a file open and half read when the node dies.
    let mut open = std::fs::File::open(&file).unwrap();
    let mut half = vec![0u8; BIG / 2];
    open.read_exact(&mut half).unwrap();
    node.kill9();
    drop(open);
    node.spawn();
    eventually("the restarted node serves beta", || node.revision() >= rev);
    assert_eq!(std::fs::read(&file).unwrap(), big, "same bytes");
    assert_eq!(inodes(&node), before, "same inode numbers");
    assert_eq!(node.metric("addonfs_node_fetches_total"), 0, "the cache survived the restart");
}

/// The size of the add-on a node is killed while fetching: large enough that the download
/// is caught half done, incompressible so that the tarball is that large.
const HUGE: usize = 64 << 20;

/// Every file and directory under `root`, with its inode number and (for files) SHA-256.
fn tree(root: &Path) -> Vec<(String, u64, String)> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for item in std::fs::read_dir(&dir).unwrap() {
            let path = item.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let digest = if meta.is_dir() {
                stack.push(path.clone());
                String::new()
            } else if meta.is_file() {
                hex(&Sha256::digest(std::fs::read(&path).unwrap()))
            } else {
                String::new()
            };
            out.push((rel, meta.ino(), digest));
        }
    }
    out.sort();
    out
}

/// A download in progress in a node's cache: a file under `tmp/` with some bytes but fewer
/// than `size`.
fn partial_download(cache: &Path, size: u64) -> Option<PathBuf> {
    for fetch in std::fs::read_dir(cache.join("tmp")).ok()?.flatten() {
        for file in std::fs::read_dir(fetch.path()).into_iter().flatten().flatten() {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            if len > 0 && len < size {
                return Some(file.path());
            }
        }
    }
    None
}

/// kill -9 a node in the middle of fetching a large add-on, restart it: the half-fetched
/// bytes were never exposed and are not kept (the download starts over, `tmp/` is cleared),
/// the cache holds only verified entries, and once fetched the add-on has the same tree and
/// inode numbers as on a node that was never interrupted (and the add-on it already served
/// keeps its inode numbers).
fn killed_mid_download(store_url: &str, store: Backend, env: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut publisher = Publisher::new(store);
    let rev = publisher.upload("first", &[("f/a", b"a\n"), ("f/d/b", b"b\n")], &["/f"]);
    let mut node = Node::start_logged(store_url, env, &dir.path().join("n"));
    eventually("the node serves first", || node.revision() >= rev);
    let first = tree(&node.mount.join("custom-addon-first"));
    let mut huge = vec![0u8; HUGE];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut huge).unwrap();
    let rev = publisher.upload("huge", &[("h/big", &huge), ("h/small", b"h\n")], &["/h"]);
    let size = publisher.addons[1]["size"].as_u64().unwrap();
    let sha = publisher.addons[1]["sha256"].as_str().unwrap().to_string();
    // Caught half fetched: not in the mount, not in the manifest.
    let start = Instant::now();
    let partial = loop {
        if let Some(p) = partial_download(&node.cache, size) {
            break p;
        }
        assert!(node.revision() < rev, "the download was not caught half done");
        assert!(start.elapsed() < Duration::from_secs(60), "no download started");
        std::thread::sleep(Duration::from_micros(200));
    };
    assert!(!node.listed().contains(&"custom-addon-huge".to_string()));
    assert!(node.revision() < rev);
    node.kill9();
    let left = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(left < size, "the download finished before the kill ({left} bytes)");
    assert!(!node.cache.join("entries").join(&sha).exists(), "a half download kept as an entry");
    // Restarted: the half download is thrown away, not resumed or trusted.
    node.spawn();
    assert!(!partial.parent().unwrap().exists(), "the half download is still in tmp/");
    let slow = Instant::now();
    while node.revision() < rev {
        assert!(slow.elapsed() < Duration::from_secs(120), "the restarted node never fetched huge");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read(node.mount.join("custom-addon-huge/h/big")).unwrap(), huge);
    assert_eq!(node.metric("addonfs_node_fetches_total"), 1, "fetched again, whole");
    let mut entries: Vec<String> = std::fs::read_dir(node.cache.join("entries"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    let mut want = vec![sha.clone(), publisher.addons[0]["sha256"].as_str().unwrap().to_string()];
    want.sort();
    assert_eq!(entries, want, "the cache holds exactly the two verified add-ons");
    assert_eq!(std::fs::read_dir(node.cache.join("tmp")).unwrap().count(), 0);
    assert_eq!(tree(&node.mount.join("custom-addon-first")), first, "first's tree and inodes");
    // The same tree and inode numbers as a node that fetched it in one go.
    let reference = Node::start_logged(store_url, env, &dir.path().join("reference"));
    let slow = Instant::now();
    while reference.revision() < rev {
        assert!(slow.elapsed() < Duration::from_secs(120), "the reference never fetched huge");
        std::thread::sleep(Duration::from_millis(50));
    }
    for name in ["custom-addon-first", "custom-addon-huge"] {
        assert_eq!(tree(&node.mount.join(name)), tree(&reference.mount.join(name)), "{name}");
    }
    assert_eq!(
        std::fs::metadata(node.mount.join("custom-addon-huge")).unwrap().ino(),
        std::fs::metadata(reference.mount.join("custom-addon-huge")).unwrap().ino()
    );
}

#[test]
fn a_node_killed_mid_download_on_a_directory_store() {
    if !common::fuse_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = local_store(&dir.path().join("store"));
    killed_mid_download(&url, store, &[]);
}

#[test]
fn a_node_killed_mid_download_on_garage() {
    if !common::fuse_ready() {
        return;
    }
    let Some(garage) = common::garage::Garage::start() else { return };
    let (url, store, env) = garage_store(&garage, "download");
    killed_mid_download(&url, store, &env);
}

#[test]
fn three_nodes_follow_a_shared_directory_store() {
    if !common::fuse_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = local_store(&dir.path().join("store"));
    three_nodes_follow(&url, store, &[]);
}

#[test]
fn a_node_killed_mid_read_comes_back_the_same_on_a_directory_store() {
    if !common::fuse_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = local_store(&dir.path().join("store"));
    killed_node_comes_back_the_same(&url, store, &[]);
}

/// Bytes in the store that do not match the catalog are never served: the add-on stays out
/// of the mount, the manifest keeps the old revision (attach --min-revision keeps waiting),
/// and the node says so in its metrics.
#[test]
fn a_tampered_object_is_never_served() {
    if !common::fuse_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = local_store(&dir.path().join("store"));
    let mut publisher = Publisher::new(store);
    let rev = publisher.upload("good", &[("a/f", b"good\n")], &["/a"]);
    let node = Node::start_logged(&url, &[], &dir.path().join("n"));
    eventually("the node serves good", || node.revision() >= rev);
    // The next upload's tarball is replaced behind the catalog's back (same size).
    let bad_rev = publisher.upload("bad", &[("b/f", b"good\n")], &["/b"]);
    let key = publisher.addons[1]["objects"]["tarball"].as_str().unwrap().to_string();
    let path = dir.path().join("store").join(&key);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    eventually("the fetch fails", || node.metric("addonfs_node_fetch_failures_total") >= 1);
    assert_eq!(node.metric("addonfs_node_missing_addons"), 1);
    assert_eq!(node.revision(), rev);
    assert_eq!(node.listed(), [".addons.json", "custom-addon-good"]);
    let (code, err) = node.attach(&dir.path().join("root"), bad_rev, "500ms", false);
    assert_ne!(code, 0, "{err}");
    assert_eq!(std::fs::read_dir(node.cache.join("entries")).unwrap().count(), 1);
}

/// The store gone for 10 s (here: its directory moved away): reads of cached add-ons never
/// fail, /readyz and the metrics say the store is down, and the node recovers by itself.
#[test]
fn a_directory_store_gone_for_ten_seconds_does_not_stop_reads() {
    if !common::fuse_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let (url, store) = local_store(&store_dir);
    let mut publisher = Publisher::new(store);
    let big = big_content();
    let rev = publisher.upload("gamma", &[("g/big", &big)], &["/g"]);
    let node = Node::start_logged(&url, &[], &dir.path().join("n"));
    eventually("the node serves gamma", || node.revision() >= rev);
    let away = dir.path().join("away");
    std::fs::rename(&store_dir, &away).unwrap();
    let file = node.mount.join("custom-addon-gamma/g/big");
    let outage = Instant::now();
    eventually("the node reports the store down", || node.metric("addonfs_node_store_up") == 0);
    while outage.elapsed() < Duration::from_secs(10) {
        assert_eq!(std::fs::read(&file).unwrap(), big);
        let (code, body) = node.get("/readyz");
        assert_eq!(code, 200, "still serving: {body}");
        assert!(body.contains(r#""store":"down""#), "{body}");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::fs::rename(&away, &store_dir).unwrap();
    eventually("the node reports the store up", || node.metric("addonfs_node_store_up") == 1);
    assert_logged_outage_and_recovery(&node);
    // And follows again.
    let rev = publisher.upload("delta", &[("d/f", b"d\n")], &["/d"]);
    eventually("the node serves delta", || node.revision() >= rev);
}

#[test]
fn three_nodes_follow_a_garage_store() {
    if !common::fuse_ready() {
        return;
    }
    let Some(garage) = common::garage::Garage::start() else { return };
    let (url, store, env) = garage_store(&garage, "follow");
    three_nodes_follow(&url, store, &env);
}

#[test]
fn a_node_killed_mid_read_comes_back_the_same_on_garage() {
    if !common::fuse_ready() {
        return;
    }
    let Some(garage) = common::garage::Garage::start() else { return };
    let (url, store, env) = garage_store(&garage, "kill");
    killed_node_comes_back_the_same(&url, store, &env);
}

/// Garage stopped for 10 s while three nodes serve cached add-ons: no read fails, every node
/// reports the store down (`/readyz` still ready, `addonfs_node_store_up` 0), and all of them
/// recover by themselves once it is back.
#[test]
fn garage_stopped_for_ten_seconds_does_not_stop_reads() {
    if !common::fuse_ready() {
        return;
    }
    let Some(mut garage) = common::garage::Garage::start() else { return };
    let (url, store, env) = garage_store(&garage, "outage");
    let dir = tempfile::tempdir().unwrap();
    let mut publisher = Publisher::new(store);
    let big = big_content();
    let rev = publisher.upload("gamma", &[("g/big", &big)], &["/g"]);
    let nodes: Vec<Node> =
        (0..3).map(|i| Node::start_logged(&url, &env, &dir.path().join(format!("n{i}")))).collect();
    for node in &nodes {
        eventually("the node serves gamma", || node.revision() >= rev);
    }
    garage.stop();
    let outage = Instant::now();
    for node in &nodes {
        eventually("the node reports the store down", || node.metric("addonfs_node_store_up") == 0);
    }
    let mut reads = 0;
    while outage.elapsed() < Duration::from_secs(10) {
        for node in &nodes {
            let file = node.mount.join("custom-addon-gamma/g/big");
            assert_eq!(std::fs::read(&file).unwrap(), big);
            reads += 1;
            let (code, body) = node.get("/readyz");
            assert_eq!(code, 200, "still serving: {body}");
            assert!(body.contains(r#""store":"down""#), "{body}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(reads >= 9);
    garage.resume();
    for node in &nodes {
        eventually("the node reports the store up", || node.metric("addonfs_node_store_up") == 1);
        assert!(node.metric("addonfs_node_store_errors_total") >= 1);
        assert_logged_outage_and_recovery(node);
    }
    let rev = publisher.upload("delta", &[("d/f", b"d\n")], &["/d"]);
    for node in &nodes {
        eventually("the node serves delta after the outage", || node.revision() >= rev);
    }
}

/// A node needs only read access: with a key that Garage allows `--read` on the bucket only,
/// the node follows the catalog (an upload after it started, too) and serves the add-ons,
/// writes nothing to the store; that key cannot write an object or the catalog; and a
/// registry given it fails at start, naming the store and the refusal.
#[test]
fn a_node_with_a_read_only_garage_key_serves_and_cannot_write() {
    if !common::fuse_ready() {
        return;
    }
    let Some(garage) = common::garage::Garage::start() else { return };
    let (url, store, _) = garage_store(&garage, "ro");
    let mut publisher = Publisher::new(store.clone());
    let rev = publisher.upload("ro", &[("r/f", b"read only\n")], &["/r"]);
    let key = garage.read_only_key("node-read-only");
    let ro_env = garage.env_for(&key);
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_logged(&url, &ro_env, &dir.path().join("n"));
    eventually("the read-only node serves the add-on", || node.revision() >= rev);
    assert_eq!(std::fs::read(node.mount.join("custom-addon-ro/r/f")).unwrap(), b"read only\n");
    // It follows: an upload and a disable after it started.
    let rev = publisher.upload("later", &[("l/f", b"later\n")], &["/l"]);
    eventually("the read-only node serves the later add-on", || node.revision() >= rev);
    assert_eq!(std::fs::read(node.mount.join("custom-addon-later/l/f")).unwrap(), b"later\n");
    let rev = publisher.set_status("ro", "DISABLED");
    eventually("the read-only node sees the disable", || node.revision() >= rev);
    assert_eq!(node.listed(), [".addons.json", "custom-addon-later"]);
    assert_eq!(node.metric("addonfs_node_store_up"), 1);
    let (code, body) = node.get("/readyz");
    assert_eq!(code, 200, "{body}");
    // The node wrote nothing: every object as the publisher left it.
    let stored = objects(&store);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(objects(&store), stored);
    // The same credential cannot change the catalog or an add-on's objects, nor add one.
    let ro = backend::open_with(&url, &garage.options_for(&key)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tarball = publisher.addons[0]["objects"]["tarball"].as_str().unwrap().to_string();
    for key in ["catalog.json", tarball.as_str(), "addons/custom-addon-evil/1-0/addon.tar.gz"] {
        let put = rt.block_on(ro.store().put(&ro.key(key), PutPayload::from(b"evil".to_vec())));
        let e = put.expect_err(&format!("a read-only key wrote {key}"));
        assert!(e.to_string().contains("403") || e.to_string().contains("AccessDenied"), "{e}");
        let del = rt.block_on(ro.store().delete(&ro.key(key)));
        assert!(del.is_err() || key.contains("evil"), "a read-only key deleted {key}");
    }
    assert_eq!(objects(&store), stored, "the read-only key changed the store");
    // A registry with the node's credential: refused at start, naming the store and why.
    let out = Command::new(env!("CARGO_BIN_EXE_addonfs"))
        .args(["registry", "--store", &url, "--listen", "127.0.0.1:0", "--api-key", KEY])
        .envs(ro_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a registry ran with a read-only key:\n{err}");
    assert!(err.contains(&url), "the message names the store:\n{err}");
    assert!(err.contains("403") || err.contains("AccessDenied"), "and the refusal:\n{err}");
    assert_eq!(objects(&store), stored, "the refused registry changed the store");
    assert_eq!(std::fs::read(node.mount.join("custom-addon-later/l/f")).unwrap(), b"later\n");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The figures of docs/benchmarks.md ("Cluster"): not a test (no timed assertion), run by
/// `cargo test --release --test cluster -- --ignored --nocapture cluster_figures`, against Garage
/// and a shared directory side by side. `ADDONFS_BENCH_CHANGES` changes (default 30),
/// `ADDONFS_BENCH_IDLE` seconds of idling (default 60), `ADDONFS_BENCH_MB` MB for the first
/// byte (default 100).
#[test]
#[ignore]
fn cluster_figures() {
    let env_num = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let changes = env_num("ADDONFS_BENCH_CHANGES", 30);
    let idle = env_num("ADDONFS_BENCH_IDLE", 60);
    let mb = env_num("ADDONFS_BENCH_MB", 100) as usize;
    let garage = common::garage::Garage::start().expect("garage");
    let dir = tempfile::tempdir().unwrap();
    let local = local_store(&dir.path().join("store"));
    let g = garage_store(&garage, "bench");
    for (name, url, store, env) in
        [("garage", g.0, g.1, g.2), ("directory", local.0, local.1, vec![])]
    {
        let mut publisher = Publisher::new(store);
        let nodes: Vec<Node> = (0..3)
            .map(|i| Node::start_logged(&url, &env, &dir.path().join(format!("{name}-n{i}"))))
            .collect();
        let rev = publisher.upload("p", &[("p/f", b"p\n")], &["/p"]);
        for node in &nodes {
            eventually("first", || node.revision() >= rev);
        }
        // Propagation: a status change, from the catalog's write answered to each node's
        // manifest showing it.
        let mut all = Vec::new();
        for i in 0..changes {
            let status = if i % 2 == 0 { "DISABLED" } else { "AVAILABLE" };
            // Changes arrive at random moments of the nodes' polling period, not in step with
            // it (right after the previous one was seen, every change would wait a full period).
            std::thread::sleep(Duration::from_millis(u64::from(rand_u32() % 1000)));
            let rev = publisher.set_status("p", status);
            let start = Instant::now();
            let mut pending: Vec<usize> = (0..nodes.len()).collect();
            while !pending.is_empty() {
                pending.retain(|&n| {
                    if nodes[n].revision() >= rev {
                        all.push(start.elapsed());
                        false
                    } else {
                        true
                    }
                });
                std::thread::sleep(Duration::from_millis(2));
                assert!(start.elapsed() < Duration::from_secs(30));
            }
        }
        let max = *all.iter().max().unwrap();
        println!(
            "{name}: propagation to 3 nodes over {changes} changes ({} samples): median {:.0} ms, max {:.0} ms",
            all.len(),
            median(all.clone()).as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
        // Upload answered → first byte of a file on a node that never saw the add-on.
        let mut content = big_content();
        while content.len() < mb << 20 {
            let shift = content.len() as u8;
            let more: Vec<u8> = content.iter().map(|b| b.wrapping_add(shift) % 26 + b'a').collect();
            content.extend(more);
        }
        content.truncate(mb << 20);
        let rev = publisher.upload(
            "big",
            &[("big/deep/dir/file", &content), ("big/small", b"s\n")],
            &["/big"],
        );
        let start = Instant::now();
        let small = nodes[0].mount.join("custom-addon-big/big/small");
        let first = loop {
            if let Ok(mut f) = std::fs::File::open(&small) {
                let mut b = [0u8; 1];
                if f.read(&mut b).unwrap_or(0) == 1 {
                    break start.elapsed();
                }
            }
            std::thread::sleep(Duration::from_millis(5));
            assert!(start.elapsed() < Duration::from_secs(300));
        };
        let tarball = publisher.addons.last().unwrap()["size"].as_u64().unwrap();
        println!(
            "{name}: upload answered → first byte on a node that never saw it: {:.0} ms ({} MB tarball, whole fetch), revision {rev}",
            first.as_secs_f64() * 1e3,
            tarball >> 20
        );
        // Idle: store requests per node per minute.
        let before: Vec<u64> =
            nodes.iter().map(|n| n.metric("addonfs_node_catalog_requests_total")).collect();
        let fetches: Vec<u64> =
            nodes.iter().map(|n| n.metric("addonfs_node_fetches_total")).collect();
        std::thread::sleep(Duration::from_secs(idle));
        for (i, node) in nodes.iter().enumerate() {
            let asked = node.metric("addonfs_node_catalog_requests_total") - before[i];
            let fetched = node.metric("addonfs_node_fetches_total") - fetches[i];
            let pid = node.child.as_ref().unwrap().id();
            println!(
                "{name}: node {i} idle: {:.1} store requests per minute ({asked} catalog reads in {idle} s, {fetched} fetches), RSS {} MiB",
                asked as f64 * 60.0 / idle as f64,
                rss_kib(pid) / 1024
            );
        }
    }
}

const KEY: &str = "cluster-test-key";

/// `curl` in `dir` with the API key; (status, JSON body, the X-Addonfs-Revision header).
fn api_call(dir: &Path, args: &[&str]) -> (u16, Value, Option<u64>) {
    let headers = dir.join("headers.txt");
    let out = Command::new("curl")
        .current_dir(dir)
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-D"])
        .arg(&headers)
        .args(["-H", &format!("Authorization: Bearer {KEY}")])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let revision = std::fs::read_to_string(&headers).ok().and_then(|h| {
        h.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-addonfs-revision").then(|| v.trim().parse().ok())?
        })
    });
    (code.trim().parse().unwrap_or(0), serde_json::from_str(body).unwrap_or(Value::Null), revision)
}

/// The registry role and three nodes: the seed's upload through the registry reaches every
/// node, and `attach --min-revision` with the revision the registry answered links it on
/// each; a disable through the API leaves every node's new roots; the registry killed → the
/// nodes keep serving.
fn registry_and_three_nodes(url: &str, env: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Command::new(env!("CARGO_BIN_EXE_addonfs"))
        .args(["registry", "--store", url, "--listen", "127.0.0.1:0", "--api-key", KEY])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let api = common::http::serve_url(&mut registry);
    let nodes: Vec<Node> =
        (0..3).map(|i| Node::start_logged(url, env, &dir.path().join(format!("n{i}")))).collect();
    let mut revision = 0;
    for name in ["one", "two"] {
        let up = dir.path().join(format!("up-{name}"));
        std::fs::create_dir_all(up.join(format!("tree/opt/{name}"))).unwrap();
        std::fs::write(up.join(format!("tree/opt/{name}/file")), format!("{name}\n")).unwrap();
        common::run(
            Command::new("tar")
                .arg("-czf")
                .arg(up.join("addon.tar.gz"))
                .arg("-C")
                .arg(up.join("tree"))
                .arg("opt"),
        );
        let meta = json!({"name": name, "spec": {"paths": [format!("/opt/{name}")]}});
        std::fs::write(up.join("metadata.json"), meta.to_string()).unwrap();
        let (code, body, rev) = api_call(
            &up,
            &[
                "-F",
                "metadata=@metadata.json",
                "-F",
                "tarball=@addon.tar.gz",
                &format!("{api}/api/v2/runtimeaddons/custom"),
            ],
        );
        assert_eq!(code, 200, "{body}");
        revision = rev.expect("the upload's answer carries the revision");
    }
    for (i, node) in nodes.iter().enumerate() {
        let root = dir.path().join(format!("root{i}"));
        let (code, err) = node.attach(&root, revision, "10s", i == 0);
        assert_eq!(code, 0, "node {i}: {err}");
        assert_eq!(std::fs::read_to_string(root.join("opt/one/file")).unwrap(), "one\n");
        assert_eq!(std::fs::read_to_string(root.join("opt/two/file")).unwrap(), "two\n");
    }
    let (code, body, _) = api_call(
        dir.path(),
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"status": "DISABLED", "identifiers": ["custom-addon-one"]}"#,
            &format!("{api}/api/v2/runtimeaddons:updatestatus"),
        ],
    );
    assert_eq!(code, 200, "{body}");
    let revision = body["revision"].as_u64().expect("the answer carries the revision");
    for (i, node) in nodes.iter().enumerate() {
        let root = dir.path().join(format!("after{i}"));
        let (code, err) = node.attach(&root, revision, "10s", false);
        assert_eq!(code, 0, "node {i}: {err}");
        assert!(!root.join("opt/one").exists(), "a disabled add-on in a new root");
        assert_eq!(node.listed(), [".addons.json", "custom-addon-two"]);
    }
    // The registry gone: the nodes keep serving.
    registry.kill().unwrap();
    registry.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    for node in &nodes {
        assert_eq!(
            std::fs::read_to_string(node.mount.join("custom-addon-two/opt/two/file")).unwrap(),
            "two\n"
        );
        assert_eq!(node.get("/readyz").0, 200);
    }
}

#[test]
fn a_registry_and_three_nodes_on_a_directory_store() {
    if !common::fuse_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (url, _) = local_store(&dir.path().join("store"));
    registry_and_three_nodes(&url, &[]);
}

#[test]
fn a_registry_and_three_nodes_on_garage() {
    if !common::fuse_ready() {
        return;
    }
    let Some(garage) = common::garage::Garage::start() else { return };
    let (url, _, env) = garage_store(&garage, "registry");
    registry_and_three_nodes(&url, &env);
}

/// A registry process, killed when dropped (also when a test fails half way).
struct Registry(Child);

impl Registry {
    fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }

    fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `addonfs registry --store URL` on loopback with `args`; the process and its API's URL.
fn start_registry(url: &str, env: &[(String, String)], args: &[&str]) -> (Registry, String) {
    let mut registry = Command::new(env!("CARGO_BIN_EXE_addonfs"))
        .args(["registry", "--store", url, "--listen", "127.0.0.1:0", "--api-key", KEY])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let api = common::http::serve_url(&mut registry);
    (Registry(registry), api)
}

/// Uploads `/opt/NAME/file` (plus `extra` bytes at `/opt/NAME/extra`) through the registry's
/// API from `dir`, in the background; the `curl` child.
fn upload_in_background(dir: &Path, api: &str, name: &str, extra: &[u8]) -> Child {
    let up = dir.join(format!("up-{name}"));
    std::fs::create_dir_all(up.join(format!("tree/opt/{name}"))).unwrap();
    std::fs::write(up.join(format!("tree/opt/{name}/file")), format!("{name}\n")).unwrap();
    std::fs::write(up.join(format!("tree/opt/{name}/extra")), extra).unwrap();
    common::run(
        Command::new("tar")
            .arg("-czf")
            .arg(up.join("addon.tar.gz"))
            .arg("-C")
            .arg(up.join("tree"))
            .arg("opt"),
    );
    let meta = json!({"name": name, "spec": {"paths": [format!("/opt/{name}")]}});
    std::fs::write(up.join("metadata.json"), meta.to_string()).unwrap();
    Command::new("curl")
        .current_dir(&up)
        .args(["-sS", "-o", "/dev/null", "-H", &format!("Authorization: Bearer {KEY}")])
        .args(["-F", "metadata=@metadata.json", "-F", "tarball=@addon.tar.gz"])
        .arg(format!("{api}/api/v2/runtimeaddons/custom"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Uploads through the registry and waits for its answer; the revision it answered.
fn upload_through(dir: &Path, api: &str, name: &str) -> u64 {
    let mut curl = upload_in_background(dir, api, name, b"");
    assert!(curl.wait().unwrap().success());
    let (_, list, revision) = api_call(dir, &[&format!("{api}/api/v2/runtimeaddons")]);
    assert!(list.to_string().contains(&format!("custom-addon-{name}")), "{list}");
    revision.expect("the registry's answers carry the revision")
}

/// A registry killed -9 in the middle of an upload while a node follows the store: the node
/// never shows the cut upload (no new revision, nothing in the mount) and keeps serving what
/// it has while no registry runs; the next registry, started elsewhere, deletes the orphaned
/// objects (`--orphan-grace 0`) and carries on, and the node gets its next upload.
fn registry_killed_mid_upload(url: &str, env: &[(String, String)], b: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (mut registry, api) = start_registry(url, env, &[]);
    let rev = upload_through(dir.path(), &api, "one");
    let node = Node::start_logged(url, env, &dir.path().join("n"));
    let (code, err) = node.attach(&dir.path().join("root"), rev, "10s", false);
    assert_eq!(code, 0, "{err}");
    let catalog_before = objects(b).into_iter().find(|(k, _)| k == "catalog.json").unwrap();
    // Cut: a local store stages inside itself (killed while staging); a remote store is
    // killed while the upload's objects go up, before the catalog.
    let mut big = vec![0u8; 48 << 20];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut big).unwrap();
    let mut curl = upload_in_background(dir.path(), &api, "big", &big);
    let staging = b.local_path("staging");
    let cut = |b: &Backend| match &staging {
        Some(dir) => {
            !common::sh(&format!("find '{}' -type f -size +1k | head -1", dir.display())).is_empty()
        }
        None => objects(b).iter().any(|(k, _)| k.starts_with("addons/custom-addon-big/")),
    };
    let start = Instant::now();
    while !cut(b) {
        assert!(start.elapsed() < Duration::from_secs(60), "the upload never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    registry.kill().unwrap();
    registry.wait().unwrap();
    let _ = curl.wait();
    let catalog_after = objects(b).into_iter().find(|(k, _)| k == "catalog.json").unwrap();
    assert_eq!(catalog_after, catalog_before, "killed too late: the upload was committed");
    if staging.is_none() {
        assert!(objects(b).iter().any(|(k, _)| k.starts_with("addons/custom-addon-big/")));
    }
    // No registry: the node keeps serving, and never shows the cut upload.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(3) {
        assert_eq!(node.listed(), [".addons.json", "custom-addon-one"]);
        assert_eq!(node.revision(), rev);
        assert_eq!(
            std::fs::read(node.mount.join("custom-addon-one/opt/one/file")).unwrap(),
            b"one\n"
        );
        assert_eq!(node.get("/readyz").0, 200);
        std::thread::sleep(Duration::from_millis(200));
    }
    // The next registry, elsewhere: the orphans go at its start, and it carries on.
    let scratch = dir.path().join("elsewhere");
    let (mut second, api) = start_registry(
        url,
        env,
        &["--orphan-grace", "0", "--scratch-dir", scratch.to_str().unwrap()],
    );
    let orphans: Vec<_> =
        objects(b).into_iter().filter(|(k, _)| k.contains("custom-addon-big")).collect();
    assert!(orphans.is_empty(), "orphans left: {orphans:?}");
    if let Some(staging) = &staging {
        assert_eq!(std::fs::read_dir(staging).unwrap().count(), 0, "staging left");
    }
    let rev = upload_through(dir.path(), &api, "two");
    let (code, err) = node.attach(&dir.path().join("root2"), rev, "10s", false);
    assert_eq!(code, 0, "{err}");
    assert_eq!(node.listed(), [".addons.json", "custom-addon-one", "custom-addon-two"]);
    second.kill().unwrap();
    second.wait().unwrap();
}

#[test]
fn a_registry_killed_mid_upload_on_a_directory_store() {
    if !common::fuse_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (url, b) = local_store(&dir.path().join("store"));
    registry_killed_mid_upload(&url, &[], &b);
}

#[test]
fn a_registry_killed_mid_upload_on_garage() {
    if !common::fuse_ready() {
        return;
    }
    let Some(garage) = common::garage::Garage::start() else { return };
    let (url, b, env) = garage_store(&garage, "cut");
    registry_killed_mid_upload(&url, &env, &b);
}
