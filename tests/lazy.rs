//! Lazy nodes (issue 13), from the node side: an `addonfs node` process mounts add-ons from
//! their index heads and reads their bytes by range requests, on a directory store and on a
//! real Garage. Every file of the corpus add-on (gzip and plain tar) read through the node's
//! FUSE mount must equal what the local reader gives for the same archive; a small cache evicts
//! while reads run and stays bounded; a damaged cached range is detected and fetched again; a
//! restarted node keeps its cache (it serves everything with the store gone).
//!
//! The store is written as the registry writes it (objects first, the catalog last, with the
//! index head's size and SHA-256). FUSE and Garage are required under `CI`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use addonfs::addon::backend::{self, Backend};
use addonfs::archive::EntryKind;
use addonfs::index::Index;
use addonfs::reader::{ArchiveReader, ChunkCache};
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

mod common;

use common::node::Node;

const BOUND: Duration = Duration::from_secs(30);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The corpus add-on: GNU tar of the standard source tree, gzipped (`gz`) or plain (`tar`),
/// with its index; and the local reader the node's bytes are compared with.
struct Corpus {
    _dir: tempfile::TempDir,
    archive: PathBuf,
    index: PathBuf,
    reader: ArchiveReader,
}

fn corpus(gzip: bool) -> Corpus {
    let dir = tempfile::tempdir().unwrap();
    let src = common::corpus::source_tree(&dir.path().join("src"));
    let tar = dir.path().join("corpus.tar");
    common::corpus::tar_create(&src, &tar, "gnu", &[]);
    let archive =
        if gzip { common::corpus::compress(&tar, common::corpus::Gz::Level(6)) } else { tar };
    common::run(Command::new(env!("CARGO_BIN_EXE_addonfs")).arg("index").arg(&archive));
    let index = PathBuf::from(format!("{}.addonfs-index", archive.display()));
    let loaded = Arc::new(Index::load(&index).unwrap());
    let reader =
        ArchiveReader::open(&archive, loaded, Arc::new(ChunkCache::new(64 << 20))).unwrap();
    Corpus { _dir: dir, archive, index, reader }
}

/// Writes add-ons and the catalog into a store as the registry does.
struct Publisher {
    store: Backend,
    rt: tokio::runtime::Runtime,
    addons: Vec<Value>,
}

impl Publisher {
    fn new(store: Backend) -> Publisher {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Publisher { store, rt, addons: vec![] }
    }

    fn put(&self, key: &str, bytes: Vec<u8>) {
        self.rt
            .block_on(self.store.store().put(&self.store.key(key), PutPayload::from(bytes)))
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    /// Publishes `corpus` as add-on `name` (with its index head in the catalog); returns the
    /// archive's SHA-256 (the node cache's directory name).
    fn upload(&mut self, name: &str, corpus: &Corpus) -> String {
        let tar = std::fs::read(&corpus.archive).unwrap();
        let index = std::fs::read(&corpus.index).unwrap();
        let head_len =
            Index::load(&corpus.index).unwrap().head_len().expect("a v2 index has a head");
        let head = &index[..head_len as usize];
        let identifier = format!("custom-addon-{name}");
        let dir = format!("addons/{identifier}/u{}", self.addons.len() + 1);
        let (tk, ik, mk) = (
            format!("{dir}/addon.tar.gz"),
            format!("{dir}/addon.tar.gz.addonfs-index"),
            format!("{dir}/metadata.json"),
        );
        self.put(&tk, tar.clone());
        self.put(&ik, index.clone());
        self.put(
            &mk,
            serde_json::to_vec(&json!({"name": name, "paths": [format!("/opt/{name}")]})).unwrap(),
        );
        let sha = hex(&Sha256::digest(&tar));
        self.addons.push(json!({
            "id": self.addons.len() + 1, "identifier": identifier, "component": "Custom",
            "display_name": name, "status": "AVAILABLE", "manageable": true,
            "created_at": "2026-11-30T00:00:00Z", "reason": "",
            "size": tar.len(), "sha256": sha,
            "paths": [format!("/opt/{name}")],
            "objects": {"tarball": tk, "index": ik, "metadata": mk},
            "index_size": index.len(), "index_sha256": hex(&Sha256::digest(&index)),
            "index_head_size": head_len, "index_head_sha256": hex(&Sha256::digest(head)),
        }));
        let catalog = json!({"format": 1, "revision": self.addons.len(), "addons": self.addons});
        self.put("catalog.json", serde_json::to_vec_pretty(&catalog).unwrap());
        sha
    }
}

impl Node {
    /// Waits until the add-on `name` is mounted.
    fn wait_for(&self, name: &str) -> PathBuf {
        self.wait_for_addon(name, "usr", BOUND)
    }
}

/// Every regular file of the corpus: (path, size).
fn files(corpus: &Corpus) -> Vec<(String, u64)> {
    let tree = common::walk_index(corpus.reader.index());
    tree.into_iter().filter(|(_, n)| n.kind == EntryKind::File).map(|(p, n)| (p, n.size)).collect()
}

/// Reads `path` of the mounted add-on at `root` whole and compares it with the local reader.
fn same_as_local(corpus: &Corpus, root: &Path, path: &str, size: u64) {
    let got = std::fs::read(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let want = common::read_entry(&corpus.reader, path, 0, size);
    assert!(got == want, "{path}: the node's bytes differ from the local reader's");
}

/// Reads a few ranges of every file too (the kernel asks for pieces, not whole files).
fn ranges_same_as_local(corpus: &Corpus, root: &Path, path: &str, size: u64) {
    for (offset, len) in [(size / 3, 4096u64), (size.saturating_sub(1), 1), (size / 2, 70_000)] {
        if offset >= size {
            continue;
        }
        let len = len.min(size - offset);
        let got = common::read_file_range(&root.join(path), offset, len);
        let want = common::read_entry(&corpus.reader, path, offset, len);
        assert!(got == want, "{path} bytes {offset}+{len} differ");
    }
}

fn lazy_dir_bytes(cache: &Path) -> u64 {
    addonfs::daemon::lazy::du(&cache.join("lazy"))
}

/// Every file of the corpus add-on, gzip and plain, through a lazy node on `store_url`; a
/// first small file needs far less than the tarball.
fn every_file_equals_the_local_reader(store_url: &str, store: Backend, env: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut publisher = Publisher::new(store);
    let gz = corpus(true);
    let plain = corpus(false);
    publisher.upload("gz", &gz);
    publisher.upload("plain", &plain);
    let node = Node::start(store_url, env, dir.path(), &["--prefetch", "none"]);
    let gz_root = node.wait_for("gz");
    let plain_root = node.wait_for("plain");
    // A first small file: the head and a few ranges, not the tarball.
    same_as_local(&gz, &gz_root, "usr/custom_file", 12);
    let size = std::fs::metadata(&gz.archive).unwrap().len();
    let fetched = node.metric("addonfs_node_range_bytes_total");
    let requests = node.metric("addonfs_node_range_requests_total");
    eprintln!(
        "first small file: {fetched} bytes in {requests} range requests of a {size}-byte tarball"
    );
    assert!(
        fetched < size / 2,
        "{fetched} bytes fetched of a {size}-byte tarball for one small file"
    );
    for (corpus, root) in [(&gz, &gz_root), (&plain, &plain_root)] {
        for (path, size) in files(corpus) {
            same_as_local(corpus, root, &path, size);
            ranges_same_as_local(corpus, root, &path, size);
        }
    }
    assert!(node.metric("addonfs_node_range_requests_total") > 2);
    assert_eq!(node.metric("addonfs_node_read_eio_total"), 0);
    assert_eq!(node.metric("addonfs_node_fetches_total"), 0, "nothing was fetched whole");
}

#[test]
fn every_file_equals_the_local_reader_on_a_directory_store() {
    if !common::fuse_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("store").display().to_string();
    let store = backend::open(&url).unwrap();
    every_file_equals_the_local_reader(&url, store, &[]);
}

#[test]
fn every_file_equals_the_local_reader_on_garage() {
    if !common::fuse_ready() {
        return;
    }
    let Some(garage) = common::garage::Garage::start() else { return };
    let url = garage.url("lazy");
    let store = backend::open_with(&url, &garage.options()).unwrap();
    every_file_equals_the_local_reader(&url, store, &garage.env());
}

#[test]
fn a_small_cache_evicts_while_reads_run_and_stays_bounded() {
    if !common::fuse_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("store").display().to_string();
    let mut publisher = Publisher::new(backend::open(&url).unwrap());
    let gz = corpus(true);
    publisher.upload("gz", &gz);
    let size = std::fs::metadata(&gz.archive).unwrap().len();
    let head = Index::load(&gz.index).unwrap().head_len().unwrap();
    // Room for the head and about a third of the tarball.
    let limit = head + size / 3;
    let node = Node::start(
        &url,
        &[],
        dir.path(),
        &[
            "--prefetch",
            "none",
            "--min-request",
            "64K",
            "--memory-cache",
            "1M",
            "--cache-size",
            &limit.to_string(),
        ],
    );
    let root = node.wait_for("gz");
    let files = files(&gz);
    std::thread::scope(|s| {
        for t in 0..3 {
            let (files, gz, root) = (&files, &gz, &root);
            s.spawn(move || {
                // Each thread in its own order, twice over.
                for round in 0..2 {
                    for i in 0..files.len() {
                        let (path, size) = &files[(i * (t + 1) + round * 7) % files.len()];
                        same_as_local(gz, root, path, *size);
                    }
                }
            });
        }
    });
    assert!(node.metric("addonfs_node_range_evictions_total") > 0, "the small cache evicted");
    let held = node.metric("addonfs_node_range_cache_bytes");
    assert!(held <= limit, "{held} bytes held over the limit of {limit}");
    let on_disk = lazy_dir_bytes(&node.cache);
    assert!(on_disk <= limit + (1 << 20), "{on_disk} bytes on disk for a limit of {limit}");
    assert_eq!(node.metric("addonfs_node_read_eio_total"), 0);
}

#[test]
fn a_restarted_node_keeps_its_cache_and_refetches_a_damaged_range() {
    if !common::fuse_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let url = store_dir.display().to_string();
    let mut publisher = Publisher::new(backend::open(&url).unwrap());
    let gz = corpus(true);
    let sha = publisher.upload("gz", &gz);
    let files = files(&gz);
    let mut node = Node::start(&url, &[], dir.path(), &["--prefetch", "none"]);
    let root = node.wait_for("gz");
    for (path, size) in &files {
        same_as_local(&gz, &root, path, *size);
    }
    let requests = node.metric("addonfs_node_range_requests_total");
    assert!(requests > 0);
    node.stop();

    // The store gone: the restarted node mounts from its cached catalog and head, and every
    // byte comes from the range cache.
    let away = dir.path().join("store-away");
    std::fs::rename(&store_dir, &away).unwrap();
    node.spawn();
    let root = node.wait_for("gz");
    for (path, size) in &files {
        same_as_local(&gz, &root, path, *size);
    }
    assert_eq!(
        node.metric("addonfs_node_range_bytes_total"),
        0,
        "nothing fetched after the restart"
    );
    assert_eq!(node.metric("addonfs_node_read_eio_total"), 0);
    node.stop();

    // A byte of a cached range damaged on disk while the node was down: detected at the
    // first read after the restart and fetched again; the bytes served are right.
    std::fs::rename(&away, &store_dir).unwrap();
    let data = node.cache.join("lazy").join(&sha).join("archive.data");
    let at = std::fs::metadata(&gz.archive).unwrap().len() / 2;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::options().read(true).write(true).open(&data).unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[!b[0]], at).unwrap();
    }
    node.spawn();
    let root = node.wait_for("gz");
    for (path, size) in &files {
        same_as_local(&gz, &root, path, *size);
    }
    assert_eq!(node.metric("addonfs_node_range_corrupt_total"), 1);
    assert!(
        node.metric("addonfs_node_range_requests_total") >= 1,
        "the damaged range was fetched again"
    );
    assert_eq!(node.metric("addonfs_node_read_eio_total"), 0);

    // The operator's view and clear.
    node.stop();
    let out = common::run(
        Command::new(env!("CARGO_BIN_EXE_addonfs"))
            .args(["node", "cache", "status", "--json", "--cache-dir"])
            .arg(&node.cache),
    );
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["addons"][0]["identifier"], "custom-addon-gz", "{out}");
    assert_eq!(status["addons"][0]["kind"], "ranges", "{out}");
    assert!(status["bytes"].as_u64().unwrap() > 0);
    common::run(
        Command::new(env!("CARGO_BIN_EXE_addonfs"))
            .args(["node", "cache", "clear", "--cache-dir"])
            .arg(&node.cache),
    );
    assert_eq!(lazy_dir_bytes(&node.cache), 0);
}
