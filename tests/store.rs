//! The store on its backends: a local directory and a real Garage S3 server (started by the
//! tests; under `CI` a missing `garage` is a failure). In process through [`Store`], and as
//! `addonfs registry --store URL` processes.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use addonfs::addon::backend::{self, Backend};
use addonfs::addon::catalog::{Catalog, CATALOG_KEY};
use addonfs::addon::metadata::Metadata;
use addonfs::addon::store::{OpenOptions, StoreError};
use addonfs::addon::{Status, Store};
use addonfs::archive::ScanOptions;
use common::garage::Garage;
use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use sha2::Digest;

const KEY: &str = "test-key-0123456789";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn get(b: &Backend, rel: &str) -> Option<Vec<u8>> {
    rt().block_on(async {
        match b.store().get(&b.key(rel)).await {
            Ok(r) => Some(r.bytes().await.unwrap().to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("{rel}: {e}"),
        }
    })
}

fn put(b: &Backend, rel: &str, bytes: Vec<u8>) {
    rt().block_on(b.store().put(&b.key(rel), bytes.into())).unwrap();
}

/// Every object under the store: relative key → e_tag (or modification time).
fn objects(b: &Backend) -> std::collections::BTreeMap<String, String> {
    rt().block_on(async {
        let mut out = std::collections::BTreeMap::new();
        let mut list = b.store().list(b.prefix_key().as_ref());
        while let Some(meta) = list.next().await {
            let meta = meta.unwrap();
            let rel = b.relative(&meta.location).unwrap().to_string();
            let tag = meta.e_tag.clone().unwrap_or_else(|| meta.last_modified.to_rfc3339());
            out.insert(rel, format!("{tag}/{}", meta.size));
        }
        out
    })
}

fn catalog(b: &Backend) -> Catalog {
    Catalog::parse(&get(b, CATALOG_KEY).expect("a catalog")).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A tarball (GNU tar, gzip) of `size` incompressible bytes at `/opt/NAME/data`, in `dir`.
fn tarball(dir: &Path, name: &str, size: usize) -> std::path::PathBuf {
    let src = dir.join(format!("src-{name}"));
    std::fs::create_dir_all(src.join("opt").join(name)).unwrap();
    common::sh(&format!(
        "head -c {size} /dev/urandom > '{}'",
        src.join("opt").join(name).join("data").display()
    ));
    let out = dir.join(format!("{name}.tar.gz"));
    common::run(Command::new("tar").arg("-C").arg(&src).arg("-czf").arg(&out).arg("opt"));
    out
}

fn metadata(name: &str) -> (Metadata, Vec<u8>) {
    let bytes = serde_json::json!({"name": name, "spec": {"paths": [format!("/opt/{name}")]}})
        .to_string()
        .into_bytes();
    (Metadata::parse(&bytes).unwrap(), bytes)
}

/// Uploads through the store as the API does: staged, indexed, committed.
fn add(store: &Store, tarball: &Path, name: &str) -> Result<addonfs::addon::Record, StoreError> {
    let staging = store.stage()?;
    std::fs::copy(tarball, staging.tarball()).unwrap();
    let index =
        addonfs::index::open::build(&staging.tarball(), &ScanOptions::default(), None).unwrap();
    let (m, bytes) = metadata(name);
    store.commit(staging, &m, &bytes, &index)
}

fn options(grace: Duration) -> OpenOptions {
    let mut o = OpenOptions::new("test");
    o.orphan_grace = grace;
    o
}

/// The scenarios every backend must pass, in process.
fn scenarios(open: &dyn Fn() -> Backend) {
    let tmp = tempfile::tempdir().unwrap();
    // Three parts of a multipart upload to S3.
    let big = tarball(tmp.path(), "big", 20 << 20);
    let b = open();
    let store = Store::open_backend(b.clone(), &options(Duration::from_secs(3600))).unwrap();
    // Upload: objects readable, digests right, catalog has it.
    let record = add(&store, &big, "big").unwrap();
    let c = catalog(&b);
    assert_eq!(c.revision, 1);
    let entry = c.find("custom-addon-big").unwrap();
    assert_eq!(entry.record, record);
    let tar = get(&b, &entry.objects.tarball).unwrap();
    assert_eq!(tar, std::fs::read(&big).unwrap());
    assert_eq!((tar.len() as u64, hex(&tar)), (record.size, record.sha256.clone()));
    let index = get(&b, &entry.objects.index).unwrap();
    assert_eq!((index.len() as u64, hex(&index)), (entry.index_size, entry.index_sha256.clone()));
    assert_eq!(get(&b, &entry.objects.metadata).unwrap(), metadata("big").1);
    // A status change is one catalog write: nothing else in the store changes.
    let before = objects(&b);
    assert_eq!(store.set_status(Status::Disabled, &[1], &[]).unwrap(), 1);
    let after = objects(&b);
    let changed: Vec<_> =
        after.iter().filter(|(k, v)| before.get(*k) != Some(v)).map(|(k, _)| k.clone()).collect();
    assert_eq!(changed, [CATALOG_KEY]);
    assert_eq!(before.len(), after.len());
    assert_eq!(catalog(&b).revision, 2);
    assert_eq!(catalog(&b).addons[0].record.status, Status::Disabled);
    // A second writer on the same store is refused, naming the first.
    store.set_api_url("http://192.0.2.7:7474").unwrap();
    let e = Store::open_backend(open(), &options(Duration::from_secs(3600))).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("192.0.2.7:7474"), "the message names the other's API: {text}");
    assert!(text.contains(&std::process::id().to_string()), "and its process: {text}");
    // Orphans (objects no record references: an upload cut between objects and catalog) go
    // once older than the grace period; referenced objects stay.
    let orphan = "addons/custom-addon-gone/1764532800000-00000000000000aa/addon.tar.gz";
    put(&b, orphan, b"half".to_vec());
    assert!(store.sweep_orphans(Duration::from_secs(3600)).unwrap().is_empty());
    drop(store);
    // Restarted elsewhere (another scratch directory, another process's view): carries on,
    // sweeps the orphan at its start.
    let store = Store::open_backend(open(), &options(Duration::ZERO)).unwrap();
    assert!(get(&b, orphan).is_none(), "the orphan is swept at start");
    assert_eq!(store.list()[0].record.status, Status::Disabled);
    assert_eq!(store.revision(), 2);
    let small = tarball(tmp.path(), "small", 1000);
    assert_eq!(add(&store, &small, "small").unwrap().id, 2);
    assert_eq!(catalog(&b).revision, 3);
    assert!(get(&b, &catalog(&b).find("custom-addon-big").unwrap().objects.tarball).is_some());
    drop(store);
    // A bad catalog: a clear error naming the key and the rule.
    let mut text = String::from_utf8(get(&b, CATALOG_KEY).unwrap()).unwrap();
    text = text.replacen("\"/opt/big\"", "\"/opt/../etc\"", 1);
    put(&b, CATALOG_KEY, text.into_bytes());
    let e = Store::open_backend(open(), &options(Duration::ZERO)).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("catalog.json: addons[0] (custom-addon-big).paths"), "{text}");
    assert!(text.contains("`..`") || text.contains("normalized"), "{text}");
}

#[test]
fn local_directory_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    scenarios(&|| backend::open(root.to_str().unwrap()).unwrap());
}

#[test]
fn garage_store() {
    let Some(garage) = Garage::start() else { return };
    let url = garage.url("cluster/a");
    scenarios(&|| backend::open_with(&url, &garage.options()).unwrap());
    // Nothing outside the prefix.
    let whole = backend::open_with(&garage.url(""), &garage.options()).unwrap();
    assert!(objects(&whole).keys().all(|k| k.starts_with("cluster/a/")), "{:?}", objects(&whole));
}

/// `addonfs registry --store URL --listen 127.0.0.1:0 --api-key KEY ARGS`, its address read.
fn registry(url: &str, env: &[(String, String)], args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_addonfs"))
        .args(["registry", "--store", url, "--listen", "127.0.0.1:0", "--api-key", KEY])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let address = common::http::serve_url(&mut child);
    (child, address)
}

fn upload(dir: &Path, url: &str, name: &str, tarball: &Path) -> (u16, serde_json::Value) {
    std::fs::write(dir.join("metadata.json"), metadata(name).1).unwrap();
    std::fs::copy(tarball, dir.join("addon.tar.gz")).unwrap();
    common::http::seed_upload(dir, url, KEY, "addon.tar.gz")
}

/// The registry role against a store: a second registry refused (non-zero, naming the first);
/// killed with -9 in the middle of putting an upload's objects → catalog unchanged, orphans
/// swept by the next registry; stopped and restarted elsewhere → carries on.
fn registry_role(url: &str, env: &[(String, String)], b: &Backend) {
    let tmp = tempfile::tempdir().unwrap();
    let (mut first, api) = registry(url, env, &[]);
    let small = tarball(tmp.path(), "small", 1000);
    let (s, r) = upload(tmp.path(), &api, "small", &small);
    assert_eq!(s, 200, "{r}");
    assert_eq!(catalog(b).revision, 1);
    // A second registry on the same store: refused, naming the first.
    let out = Command::new(env!("CARGO_BIN_EXE_addonfs"))
        .args(["registry", "--store", url, "--listen", "127.0.0.1:0", "--api-key", KEY])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    // Named: the first one's API URL and process id (a directory's lock file and a remote
    // store's lease both record them), and the store.
    assert!(err.contains(&api), "the message names the other's API:\n{err}");
    assert!(err.contains(&first.id().to_string()), "and its process:\n{err}");
    assert!(err.contains(url), "and the store:\n{err}");
    // Killed with -9 in the middle of an upload: the catalog never names it. A local store
    // stages the upload inside it and renames it into place at once, so it is killed while
    // staging; a remote store is killed while the objects go up (between objects and catalog).
    let before = get(b, CATALOG_KEY).unwrap();
    let big = tarball(tmp.path(), "big", 48 << 20);
    std::fs::write(tmp.path().join("metadata.json"), metadata("big").1).unwrap();
    std::fs::copy(&big, tmp.path().join("addon.tar.gz")).unwrap();
    let mut curl = Command::new("curl")
        .current_dir(tmp.path())
        .args(["-sS", "-o", "/dev/null", "-H", &format!("Authorization: Bearer {KEY}")])
        .args(["-F", "metadata=@metadata.json", "-F", "tarball=@addon.tar.gz"])
        .arg(format!("{api}/api/v2/runtimeaddons/custom"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut killed_in_time = false;
    let staging = b.local_path("staging");
    while started.elapsed() < Duration::from_secs(60) {
        let caught = match &staging {
            Some(dir) => {
                !common::sh(&format!("find '{}' -type f -size +1k | head -1", dir.display()))
                    .is_empty()
            }
            None => objects(b).keys().any(|k| k.starts_with("addons/custom-addon-big/")),
        };
        if caught {
            first.kill().unwrap();
            killed_in_time = get(b, CATALOG_KEY).unwrap() == before;
            break;
        }
        if get(b, CATALOG_KEY).unwrap() != before {
            break; // committed before it was caught: the timing failed, said below
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = first.kill();
    first.wait().unwrap();
    let _ = curl.wait();
    assert!(killed_in_time, "the registry was not killed in the middle of the upload");
    assert_eq!(get(b, CATALOG_KEY).unwrap(), before, "the catalog never names a cut upload");
    if staging.is_none() {
        assert!(objects(b).keys().any(|k| k.starts_with("addons/custom-addon-big/")));
    }
    // Restarted elsewhere (another scratch directory; the dead one's lease is taken over: it
    // ran on this host and is gone), orphans older than 0 s swept at its start.
    let scratch = tmp.path().join("elsewhere");
    let (mut second, api) =
        registry(url, env, &["--orphan-grace", "0", "--scratch-dir", scratch.to_str().unwrap()]);
    assert!(!objects(b).keys().any(|k| k.starts_with("addons/custom-addon-big/")));
    if let Some(dir) = &staging {
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0, "staging cleared at start");
    }
    let (s, list) = common::http::curl(
        tmp.path(),
        &[
            format!("{api}/api/v2/runtimeaddons"),
            "-H".into(),
            format!("Authorization: Bearer {KEY}"),
        ],
    );
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["runtime_addons"][0]["identifier"], "custom-addon-small");
    let (s, r) = upload(tmp.path(), &api, "big", &big);
    assert_eq!(s, 200, "{r}");
    assert_eq!(catalog(b).revision, 2);
    second.kill().unwrap();
    second.wait().unwrap();
}

#[test]
fn registry_on_a_local_directory_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let b = backend::open(root.to_str().unwrap()).unwrap();
    registry_role(root.to_str().unwrap(), &[], &b);
}

#[test]
fn registry_on_garage() {
    let Some(garage) = Garage::start() else { return };
    let url = garage.url("reg");
    let b = backend::open_with(&url, &garage.options()).unwrap();
    registry_role(&url, &garage.env(), &b);
}
