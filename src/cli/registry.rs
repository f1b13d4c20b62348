//! `addonfs validate`, `addonfs serve` and `addonfs addons ...`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::args::{AddonsCmd, ServeCmd, StateOpts, ValidateCmd};
use crate::addon::metadata::{self, Metadata, MAX_METADATA_BYTES};
use crate::addon::{Status, Store, StoreError};
use crate::api::{ApiKeys, ApiLimits};
use crate::archive::ScanOptions;
use crate::daemon::{DaemonMount, SYNC_INTERVAL};
use crate::error::Error;
use crate::limits::Limits;
use crate::mount::MountOptions;

/// The state directory: the flag (or `ADDONFS_STATE_DIR`), else `/var/lib/addonfs` for root,
/// else `$XDG_STATE_HOME/addonfs` or `~/.local/state/addonfs`.
pub fn state_dir(opts: &StateOpts) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    if let Some(dir) = &opts.state_dir {
        return dir.clone();
    }
    // `/proc/self` is owned by the process's effective user.
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        return PathBuf::from("/var/lib/addonfs");
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("addonfs");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/state/addonfs")
}

fn read_metadata(path: &Path) -> Result<Vec<u8>, Error> {
    let size = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    if size > MAX_METADATA_BYTES as u64 {
        return Err(Error::Invalid(format!(
            "{}: metadata is {size} bytes, larger than the limit of {MAX_METADATA_BYTES} bytes",
            path.display()
        )));
    }
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn problems_text(path: &Path, problems: &[metadata::MetadataError]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| format!("{}: {p}", path.display())).collect();
    lines.join("\naddonfs: ")
}

/// `addonfs validate METADATA TARBALL`: every rule, every problem printed.
pub fn validate(cmd: &ValidateCmd) -> Result<(), Error> {
    let bytes = read_metadata(&cmd.metadata)?;
    let index = crate::index::open::build(&cmd.tarball, &ScanOptions::default(), None)?;
    match metadata::validate(&bytes, Some(&index)) {
        Ok(m) => {
            println!(
                "{}: valid add-on `{}` ({} path{})",
                cmd.metadata.display(),
                m.identifier(),
                m.spec.paths.len(),
                if m.spec.paths.len() == 1 { "" } else { "s" }
            );
            Ok(())
        }
        Err(problems) => Err(Error::Invalid(problems_text(&cmd.metadata, &problems))),
    }
}

fn open_store(opts: &StateOpts) -> Result<Store, Error> {
    let dir = state_dir(opts);
    Store::open(&dir).map_err(store_error)
}

fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::Io { path, source } => Error::Io { path, source },
        other => Error::Invalid(other.to_string()),
    }
}

/// `addonfs serve`: the HTTP API until SIGINT or SIGTERM.
pub fn serve(cmd: &ServeCmd) -> Result<(), Error> {
    let dir = state_dir(&cmd.state);
    let store = Arc::new(Store::open(&dir).map_err(store_error)?);
    for problem in store.problems() {
        eprintln!("addonfs: warning: {problem}");
    }
    let keys = if let Some(key) = &cmd.api_key {
        ApiKeys::new([key.clone()])
    } else if let Some(path) = &cmd.api_key_file {
        ApiKeys::from_file(path).map_err(|e| Error::io(path, e))?
    } else {
        let (keys, path, created) =
            ApiKeys::load_or_create(&dir).map_err(|e| Error::io(dir.join("api-keys"), e))?;
        if created {
            eprintln!("addonfs: created the API key file {} (mode 0600)", path.display());
        }
        keys
    };
    let limits = ApiLimits {
        max_upload: cmd.max_upload,
        scan: ScanOptions {
            limits: Limits { max_uncompressed: cmd.max_uncompressed, ..Limits::default() },
            ..ScanOptions::default()
        },
    };
    let daemon = if cmd.no_mount {
        None
    } else {
        let mountpoint = cmd.mount.clone().unwrap_or_else(|| dir.join("mnt"));
        std::fs::create_dir_all(&mountpoint).map_err(|e| Error::io(&mountpoint, e))?;
        let opts = MountOptions { allow_other: cmd.allow_other, ..MountOptions::default() };
        let daemon = DaemonMount::start(Arc::clone(&store), &mountpoint, cmd.cache_size, &opts)?;
        println!("addonfs: mounted the add-ons at {}", daemon.path().display());
        Some(Arc::new(daemon))
    };
    let stop = Arc::new(AtomicBool::new(false));
    let syncer = daemon.clone().map(|daemon| {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(SYNC_INTERVAL);
                daemon.sync();
            }
        })
    });
    let result = serve_api(cmd, &dir, store, keys, limits);
    stop.store(true, Ordering::Relaxed);
    if let Some(syncer) = syncer {
        let _ = syncer.join();
    }
    if let Some(daemon) = daemon.and_then(Arc::into_inner) {
        daemon.unmount(Duration::from_secs(5));
    }
    result
}

/// Runs the HTTP API until SIGINT or SIGTERM.
fn serve_api(
    cmd: &ServeCmd,
    dir: &Path,
    store: Arc<Store>,
    keys: ApiKeys,
    limits: ApiLimits,
) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(cmd.listen)
            .await
            .map_err(|e| Error::Usage(format!("cannot listen on {}: {e}", cmd.listen)))?;
        let addr = listener.local_addr().map_err(|e| Error::Usage(e.to_string()))?;
        println!("addonfs: listening on http://{addr} (state {})", dir.display());
        use std::io::Write;
        let _ = std::io::stdout().flush();
        crate::api::serve_on(listener, store, keys, limits, shutdown_signal())
            .await
            .map_err(|e| Error::Usage(format!("server failed: {e}")))
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

fn select(addon: &str) -> (Vec<u64>, Vec<String>) {
    match addon.parse::<u64>() {
        Ok(id) => (vec![id], vec![]),
        Err(_) => (vec![], vec![addon.to_string()]),
    }
}

/// `addonfs addons list|enable|disable|register`.
pub fn addons(cmd: &AddonsCmd) -> Result<(), Error> {
    match cmd {
        AddonsCmd::List { state, json } => {
            let store = open_store(state)?;
            let addons = store.list();
            if *json {
                let records: Vec<_> = addons.iter().map(|a| &a.record).collect();
                println!("{}", serde_json::to_string_pretty(&records).unwrap_or_default());
            } else {
                for a in &addons {
                    let r = &a.record;
                    println!(
                        "{:>4}  {:<10} {}  {}  {}",
                        r.id,
                        r.status.as_str(),
                        r.created_at,
                        r.identifier,
                        a.paths.join(" ")
                    );
                }
            }
            for problem in store.problems() {
                eprintln!("addonfs: warning: {problem}");
            }
            Ok(())
        }
        AddonsCmd::Enable { addon, state } | AddonsCmd::Disable { addon, state } => {
            let status = if matches!(cmd, AddonsCmd::Enable { .. }) {
                Status::Available
            } else {
                Status::Disabled
            };
            let store = open_store(state)?;
            let (ids, identifiers) = select(addon);
            store.set_status(status, &ids, &identifiers).map_err(store_error)?;
            println!("{addon}: {}", status.as_str());
            Ok(())
        }
        AddonsCmd::Register { metadata: meta_path, tarball, state } => {
            let bytes = read_metadata(meta_path)?;
            let meta: Metadata = metadata::validate(&bytes, None)
                .map_err(|p| Error::Invalid(problems_text(meta_path, &p)))?;
            let store = open_store(state)?;
            store.check_new(&meta).map_err(store_error)?;
            let staging = store.stage().map_err(store_error)?;
            // Copied into the store and indexed in one pass.
            let source = std::fs::File::open(tarball).map_err(|e| Error::io(tarball, e))?;
            let index = crate::index::open::build_streaming(
                &staging.tarball(),
                source,
                &ScanOptions::default(),
            )
            .map_err(|e| match e {
                Error::Scan { source, .. } => Error::Scan { archive: tarball.clone(), source },
                other => other,
            })?;
            let problems = meta.check_against(&index);
            if !problems.is_empty() {
                return Err(Error::Invalid(problems_text(meta_path, &problems)));
            }
            index
                .write(&staging.index())
                .map_err(|source| Error::Index { path: staging.index(), source })?;
            let record = store.commit(staging, &meta, &bytes, &index).map_err(store_error)?;
            println!("{}", serde_json::to_string_pretty(&record).unwrap_or_default());
            Ok(())
        }
    }
}
