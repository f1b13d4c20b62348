//! `addonfs validate`, `addonfs serve` and `addonfs addons ...`.

use std::path::{Path, PathBuf};

use super::args::{
    AddonsCmd, ApiOpts, HolderCmd, RegistryCmd, RemoteOpts, RestartCmd, ServeCmd, StateOpts,
    ValidateCmd,
};
use super::Error;
use crate::addon::metadata;
use crate::addon::register::{problems_text, read_metadata};
use crate::addon::{LockError, Record, Status, Store, StoreError};
use crate::api::{ApiClient, ApiKeys, ApiLimits, ClientError};
use crate::archive::ScanOptions;
use crate::daemon::{Config, KeySource, MountConfig, StoreConfig, DEFAULT_DRAIN};
use crate::limits::Limits;

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

/// `addonfs validate METADATA TARBALL`: every rule, every problem printed.
pub fn validate(cmd: &ValidateCmd) -> Result<(), Error> {
    let bytes = read_metadata(&cmd.metadata)?;
    let index = crate::index::open::build(&cmd.tarball, &ScanOptions::default(), None)?;
    match metadata::validate(&bytes, Some(&index)) {
        Ok(m) => outln!(
            "{}: valid add-on `{}` ({} path{})",
            cmd.metadata.display(),
            m.identifier(),
            m.spec.paths.len(),
            if m.spec.paths.len() == 1 { "" } else { "s" }
        ),
        Err(problems) => Err(Error::Invalid(problems_text(&cmd.metadata, &problems))),
    }
}

/// `addonfs serve`: the node daemon ([`crate::daemon::run`]) until SIGINT or SIGTERM.
pub fn serve(cmd: &ServeCmd) -> Result<(), Error> {
    let dir = state_dir(&cmd.state);
    let keys = match (&cmd.api_key, &cmd.api_key_file) {
        (Some(key), _) => KeySource::Key(key.clone()),
        (None, Some(path)) => KeySource::File(path.clone()),
        (None, None) => KeySource::StateDir,
    };
    let mount = (!cmd.no_mount).then(|| MountConfig {
        path: cmd.mount.clone().unwrap_or_else(|| dir.join("mnt")),
        cache_bytes: cmd.cache_size,
        allow_other: cmd.allow_other,
        restarts: cmd.restarts.restarts(),
    });
    let config = Config {
        limits: api_limits(&cmd.api),
        state_dir: dir,
        store: None,
        listen: cmd.listen,
        keys,
        mount,
        drain: DEFAULT_DRAIN,
        tls: cmd.api.tls.files(),
    };
    let upgrades = config.state_dir.clone();
    Ok(crate::daemon::run(&config, serve_signal(upgrades), |_| {})?)
}

/// The API's limits from the flags `serve` and `registry` share.
fn api_limits(api: &ApiOpts) -> ApiLimits {
    ApiLimits {
        max_upload: api.max_upload,
        scan: ScanOptions {
            limits: Limits { max_uncompressed: api.max_uncompressed, ..Limits::default() },
            ..ScanOptions::default()
        },
        max_uploads: api.max_uploads as usize,
        body_timeout: api.body_timeout,
        header_timeout: api.header_timeout,
        max_connections: api.max_connections as usize,
    }
}

/// `addonfs registry --store URL`: the API alone on a store ([`crate::daemon::run`] without a
/// mount) until SIGINT or SIGTERM.
pub fn registry(cmd: &RegistryCmd) -> Result<(), Error> {
    let backend = crate::addon::backend::open(&cmd.store).map_err(StoreError::from)?;
    let keys = match (&cmd.api_key, &cmd.api_key_file, backend.local_root()) {
        (Some(key), _, _) => KeySource::Key(key.clone()),
        (None, Some(path), _) => KeySource::File(path.clone()),
        (None, None, Some(_)) => KeySource::StateDir,
        (None, None, None) => {
            return Err(Error::Usage(format!(
                "the store {} is not a directory: give the API keys with --api-key-file or --api-key (ADDONFS_API_KEY)",
                cmd.store
            )))
        }
    };
    let config = Config {
        limits: api_limits(&cmd.api),
        // The keys file's directory for a directory store.
        state_dir: backend.local_root().map_or_else(PathBuf::new, Path::to_path_buf),
        store: Some(StoreConfig {
            backend,
            orphan_grace: cmd.orphan_grace,
            scratch: cmd.scratch_dir.clone(),
        }),
        listen: cmd.listen,
        keys,
        mount: None,
        drain: DEFAULT_DRAIN,
        tls: cmd.api.tls.files(),
    };
    Ok(crate::daemon::run(&config, shutdown_signal(), |_| {})?)
}

/// `addonfs holder`: keeps the mount's connection of a state directory ([`crate::holder`]).
pub fn holder(cmd: &HolderCmd) -> Result<(), Error> {
    let dir = state_dir(&cmd.state);
    let opts = crate::holder::HolderOptions { state_dir: dir.clone(), spawn: !cmd.no_spawn };
    crate::holder::run(&opts).map_err(|e| Error::io(&dir, e))
}

/// `addonfs restart`: upgrades the serving process (`serve` or `node`) in place ([`crate::holder::upgrade`]).
pub fn restart(cmd: &RestartCmd) -> Result<(), Error> {
    let dir = state_dir(&cmd.state);
    let pid = crate::holder::upgrade(&dir).map_err(|e| Error::Daemon(e.to_string()))?;
    println!("addonfs: pid {pid} serves the mount of {} now", dir.display());
    Ok(())
}

/// `serve`'s and `node`'s [`shutdown_signal`]; besides, SIGUSR2 upgrades in place: under
/// `--fd-store` by re-executing the binary in this process
/// ([`crate::holder::systemd::upgrade_in_place`]), else by asking the holder of `dir` (as
/// `addonfs restart` does), and this process retires once its successor serves.
pub(super) async fn serve_signal(dir: std::path::PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let upgrade = async {
        let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
            return std::future::pending::<()>().await;
        };
        while usr2.recv().await.is_some() {
            if crate::holder::systemd::can_upgrade() {
                tracing::info!("SIGUSR2: upgrading in place");
                let e = crate::holder::systemd::upgrade_in_place();
                tracing::warn!(error = %e, "SIGUSR2: no upgrade");
                continue;
            }
            tracing::info!("SIGUSR2: asking the holder for an upgrade in place");
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || match crate::holder::upgrade(&dir) {
                Ok(pid) => tracing::info!(pid, "SIGUSR2: the successor serves; retiring"),
                Err(e) => tracing::warn!(error = %e, "SIGUSR2: no upgrade"),
            });
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        () = shutdown_signal() => {}
        () = upgrade => {}
    }
}

/// Completes at SIGINT or SIGTERM.
pub(super) async fn shutdown_signal() {
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

/// An add-on named on the command line by id (`3`), identifier (`custom-addon-sample`) or the
/// name its metadata gave (`sample`, which always means `custom-addon-sample`).
fn select(addon: &str) -> (Vec<u64>, Vec<String>) {
    match addon.parse::<u64>() {
        Ok(id) => (vec![id], vec![]),
        Err(_) if addon.starts_with(metadata::IDENTIFIER_PREFIX) => {
            (vec![], vec![addon.to_string()])
        }
        Err(_) => (vec![], vec![format!("{}{addon}", metadata::IDENTIFIER_PREFIX)]),
    }
}

/// Where an admin command's change goes.
enum Target {
    /// The state directory, locked for the change.
    Local(Box<Store>),
    /// A running daemon's API.
    Remote(Box<ApiClient>),
}

/// The API key for `remote`: `--key-file` (its first key), else `ADDONFS_API_KEY`, else the
/// first key of `STATE_DIR/api-keys` if it can be read.
fn api_key(remote: &RemoteOpts, dir: &Path) -> Option<Result<String, Error>> {
    // The file's rules (blank lines and `#` comments skipped) are the daemon's own.
    let first_key = |path: &Path| ApiKeys::from_file(path).map(|keys| keys.first());
    if let Some(path) = &remote.key_file {
        return Some(match first_key(path) {
            Ok(Some(key)) => Ok(key),
            Ok(None) => Err(Error::Usage(format!("{}: no API key in the file", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(Error::Usage(e.to_string()))
            }
            Err(e) => Err(Error::io(path, e)),
        });
    }
    if let Some(key) = std::env::var("ADDONFS_API_KEY").ok().filter(|k| !k.trim().is_empty()) {
        return Some(Ok(key.trim().to_string()));
    }
    first_key(&dir.join(crate::api::KEYS_FILE)).ok().flatten().map(Ok)
}

fn client(url: &str, remote: &RemoteOpts, dir: &Path, why: &str) -> Result<ApiClient, Error> {
    let key = api_key(remote, dir).unwrap_or_else(|| {
        Err(Error::Usage(format!(
            "{why}, but no API key was found: give it with --key-file FILE or ADDONFS_API_KEY"
        )))
    })?;
    Ok(ApiClient::new(url, &key, remote.ca_file.as_deref())?)
}

/// Where a change by `command` goes: `--api`, else the state directory if no process holds
/// it, else the API of the daemon that holds it (the address it recorded in the lock file).
fn target(state: &StateOpts, remote: &RemoteOpts, command: &str) -> Result<Target, Error> {
    let dir = state_dir(state);
    if let Some(url) = &remote.api {
        return Ok(Target::Remote(Box::new(client(
            url,
            remote,
            &dir,
            &format!("the API is at {url}"),
        )?)));
    }
    match Store::open(&dir, command) {
        Ok(store) => Ok(Target::Local(Box::new(store))),
        Err(StoreError::Locked(LockError::Held { holder: Some(holder), .. }))
            if holder.command == "serve" && holder.api.is_some() =>
        {
            let url = holder.api.clone().unwrap_or_default();
            let why = format!("the daemon {holder} holds the state directory {}", dir.display());
            let client = client(&url, remote, &dir, &why)?;
            eprintln!("addonfs: {why}; going through its API");
            Ok(Target::Remote(Box::new(client)))
        }
        Err(e) => Err(Error::from(e)),
    }
}

fn client_error(e: ClientError) -> Error {
    match e {
        ClientError::Refused { status: 404, message, .. } => Error::NoSuchAddon(message),
        ClientError::Refused { status: 400 | 409 | 413, message, .. } => Error::Invalid(message),
        other => Error::Api(other),
    }
}

fn print_records(
    records: &[Record],
    paths: Option<&[Vec<String>]>,
    json: bool,
) -> Result<(), Error> {
    if json {
        return outln!("{}", serde_json::to_string_pretty(records).unwrap_or_default());
    }
    for (i, r) in records.iter().enumerate() {
        let paths = paths.and_then(|p| p.get(i)).map(|p| p.join(" ")).unwrap_or_default();
        outln!(
            "{:>4}  {:<10} {}  {}  {}",
            r.id,
            r.status.as_str(),
            r.created_at,
            r.identifier,
            paths
        )?;
    }
    Ok(())
}

/// `addonfs addons list|enable|disable|deprecate|register`.
pub fn addons(cmd: &AddonsCmd) -> Result<(), Error> {
    match cmd {
        AddonsCmd::List { state, remote, json } => {
            if let Some(url) = &remote.api {
                let dir = state_dir(state);
                let client = client(url, remote, &dir, &format!("the API is at {url}"))?;
                let records = client.list().map_err(client_error)?;
                return print_records(&records, None, *json);
            }
            // A snapshot of the state directory; a running daemon writes every change there
            // at once.
            let store = Store::open_read_only(&state_dir(state))?;
            let addons = store.list();
            let records: Vec<Record> = addons.iter().map(|a| a.record.clone()).collect();
            let paths: Vec<Vec<String>> = addons.iter().map(|a| a.paths.clone()).collect();
            print_records(&records, Some(&paths), *json)?;
            for problem in store.problems() {
                eprintln!("addonfs: warning: {problem}");
            }
            Ok(())
        }
        AddonsCmd::Enable { addon, state, remote }
        | AddonsCmd::Disable { addon, state, remote } => {
            let (status, command) = if matches!(cmd, AddonsCmd::Enable { .. }) {
                (Status::Available, "addons enable")
            } else {
                (Status::Disabled, "addons disable")
            };
            let (ids, identifiers) = select(addon);
            match target(state, remote, command)? {
                Target::Local(store) => {
                    store.set_status(status, &ids, &identifiers)?;
                }
                Target::Remote(client) => {
                    client.set_status(status, &ids, &identifiers).map_err(client_error)?;
                }
            }
            outln!("{addon}: {}", status.as_str())
        }
        AddonsCmd::Deprecate { addon, reason, state, remote } => {
            let (ids, identifiers) = select(addon);
            let status = Status::Deprecated;
            let reason = reason.as_deref();
            match target(state, remote, "addons deprecate")? {
                Target::Local(store) => {
                    store.set_status_with_reason(status, reason, &ids, &identifiers)?;
                }
                Target::Remote(client) => {
                    client
                        .set_status_with_reason(status, reason, &ids, &identifiers)
                        .map_err(client_error)?;
                }
            }
            println!("{addon}: {}", status.as_str());
            Ok(())
        }
        AddonsCmd::Register { metadata: meta_path, tarball, state, remote } => {
            let bytes = read_metadata(meta_path)?;
            // Every rule before anything is sent or staged (the local path checks them again).
            metadata::validate(&bytes, None)
                .map_err(|p| Error::Invalid(problems_text(meta_path, &p)))?;
            let store = match target(state, remote, "addons register")? {
                Target::Local(store) => store,
                Target::Remote(client) => {
                    let record = client.upload(&bytes, tarball).map_err(client_error)?;
                    return outln!("{}", serde_json::to_string_pretty(&record).unwrap_or_default());
                }
            };
            let record = crate::addon::register(&store, meta_path, &bytes, tarball)?;
            outln!("{}", serde_json::to_string_pretty(&record).unwrap_or_default())
        }
    }
}
