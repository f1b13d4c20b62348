//! `addonfs node`: flags into a [`NodeConfig`], then [`crate::daemon::node::run_node`]; and
//! `addonfs node cache status|clear`, the operator's view of a node cache.

use std::path::Path;

use super::args::{FetchMode, NodeAction, NodeCacheArgs, NodeCacheCmd, NodeCmd};
use super::format::human_bytes;
use super::Error;
use crate::daemon::lazy::{self, LazyConfig, LAZY_DIR};
use crate::daemon::node::{run_node, NodeConfig};

/// `addonfs node`.
pub fn node(cmd: &NodeCmd) -> Result<(), Error> {
    match &cmd.action {
        Some(NodeAction::Cache(NodeCacheCmd::Status(args))) => return status(args),
        Some(NodeAction::Cache(NodeCacheCmd::Clear(args))) => return clear(args),
        None => {}
    }
    let (Some(store), Some(cache_dir)) = (&cmd.store, &cmd.cache_dir) else {
        return Err(Error::Usage("`addonfs node` needs --store and --cache-dir".into()));
    };
    let config = NodeConfig {
        store: store.clone(),
        mount: cmd.mount.clone(),
        restarts: cmd.restarts.restarts(),
        cache_dir: cache_dir.clone(),
        cache_size: cmd.cache_size,
        chunk_cache: cmd.memory_cache,
        listen: cmd.listen,
        allow_other: cmd.allow_other,
        lazy: (cmd.fetch == FetchMode::Lazy).then_some(LazyConfig {
            min_request: cmd.min_request.max(1),
            store_timeout: cmd.store_timeout,
            prefetch: cmd.prefetch,
            prefetch_rate: cmd.prefetch_rate.max(1),
            prefetch_after: cmd.prefetch_after,
        }),
    };
    // SIGUSR2 upgrades in place through the holder of the cache directory, as for `serve`.
    let upgrades = config.cache_dir.clone();
    Ok(run_node(&config, super::registry::serve_signal(upgrades), |_| {})?)
}

/// One add-on in the node cache.
#[derive(Debug, serde::Serialize)]
struct Held {
    identifier: String,
    sha256: String,
    /// `ranges` (read lazily) or `whole`.
    kind: &'static str,
    /// The archive's size.
    size: u64,
    /// Bytes on disk.
    bytes: u64,
}

/// What the cache holds, read without changing anything (a node may be running on it).
fn scan(cache_dir: &Path) -> Vec<Held> {
    let mut out = Vec::new();
    let read = |path: &Path| -> Option<serde_json::Value> {
        let bytes = std::fs::read(path).ok()?;
        (bytes.len() < 64 << 10).then(|| serde_json::from_slice(&bytes).ok())?
    };
    for (dir, kind, meta) in
        [(LAZY_DIR, "ranges", "meta.json"), ("entries", "whole", "complete.json")]
    {
        let Ok(items) = std::fs::read_dir(cache_dir.join(dir)) else { continue };
        for item in items.flatten() {
            let path = item.path();
            let meta = read(&path.join(meta)).unwrap_or_default();
            out.push(Held {
                identifier: meta["identifier"].as_str().unwrap_or("?").to_string(),
                sha256: item.file_name().to_string_lossy().into_owned(),
                kind,
                size: meta["size"].as_u64().unwrap_or(0),
                bytes: lazy::du(&path),
            });
        }
    }
    out.sort_by(|a, b| (&a.identifier, a.kind).cmp(&(&b.identifier, b.kind)));
    out
}

fn status(args: &NodeCacheArgs) -> Result<(), Error> {
    let held = scan(&args.cache_dir);
    let total: u64 = held.iter().map(|h| h.bytes).sum();
    let node = crate::addon::lock::holder(&args.cache_dir)?;
    if args.json {
        let doc = serde_json::json!({
            "cache_dir": args.cache_dir,
            "bytes": total,
            "node": node.map(|h| h.to_string()),
            "addons": held,
        });
        return outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    }
    outln!(
        "{}: {} on disk{}",
        args.cache_dir.display(),
        human_bytes(total),
        node.map(|h| format!(", in use by {h}")).unwrap_or_default()
    )?;
    for h in &held {
        let share = if h.size > 0 { h.bytes as f64 * 100.0 / h.size as f64 } else { 0.0 };
        outln!(
            "  {:<40} {:<6} {:>10} of {:>10} ({share:.0}%)  {}",
            h.identifier,
            h.kind,
            human_bytes(h.bytes),
            human_bytes(h.size),
            &h.sha256[..h.sha256.len().min(12)]
        )?;
    }
    Ok(())
}

fn clear(args: &NodeCacheArgs) -> Result<(), Error> {
    if !args.cache_dir.is_dir() {
        return Err(Error::Usage(format!("{} is not a directory", args.cache_dir.display())));
    }
    // The node's own lock: a running node would keep serving from what is removed.
    let _lock = crate::addon::StateLock::acquire(&args.cache_dir, "node cache clear")?;
    let before = lazy::du(&args.cache_dir);
    lazy::clear(&args.cache_dir).map_err(|e| Error::io(args.cache_dir.join(LAZY_DIR), e))?;
    let entries = args.cache_dir.join("entries");
    match std::fs::remove_dir_all(&entries) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(entries, e)),
    }
    let freed = before.saturating_sub(lazy::du(&args.cache_dir));
    if args.json {
        return outln!("{}", serde_json::json!({ "freed_bytes": freed }));
    }
    outln!("{}: cleared, {} freed", args.cache_dir.display(), human_bytes(freed))
}
