//! `addonfs node`: flags into a [`NodeConfig`], then [`crate::daemon::node::run_node`].

use super::args::NodeCmd;
use super::Error;
use crate::daemon::node::{run_node, NodeConfig};

/// `addonfs node`.
pub fn node(cmd: &NodeCmd) -> Result<(), Error> {
    let config = NodeConfig {
        store: cmd.store.clone(),
        mount: cmd.mount.clone(),
        cache_dir: cmd.cache_dir.clone(),
        cache_size: cmd.cache_size,
        chunk_cache: cmd.memory_cache,
        listen: cmd.listen,
        allow_other: cmd.allow_other,
        lazy: None,
    };
    Ok(run_node(&config, super::registry::shutdown_signal(), |_| {})?)
}
