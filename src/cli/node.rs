//! `addonfs node`: flags into a [`NodeConfig`], then [`crate::daemon::node::run_node`].

use super::args::NodeCmd;
use super::Error;
use crate::daemon::node::{run_node, NodeConfig};

/// `addonfs node`.
pub fn node(cmd: &NodeCmd) -> Result<(), Error> {
    let config = NodeConfig {
        store: cmd.store.clone(),
        mount: cmd.mount.clone(),
        restarts: cmd.restarts.restarts(),
        cache_dir: cmd.cache_dir.clone(),
        cache_size: cmd.cache_size,
        chunk_cache: cmd.memory_cache,
        listen: cmd.listen,
        allow_other: cmd.allow_other,
    };
    // SIGUSR2 upgrades in place through the holder of the cache directory, as for `serve`.
    let upgrades = config.cache_dir.clone();
    Ok(run_node(&config, super::registry::serve_signal(upgrades), |_| {})?)
}
