//! The command-line grammar (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::archive::ScanOptions;
use crate::limits::Limits;

/// Serve add-on tarballs read-only, without extracting them.
#[derive(Debug, Parser)]
#[command(name = "addonfs", version, about, propagate_version = true)]
pub struct Cli {
    /// Log level filter (error, warn, info, debug, trace, or a tracing filter directive).
    #[arg(long, global = true, default_value = "warn", env = "ADDONFS_LOG")]
    pub log_level: String,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written (to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build (or refresh) the index of an archive and print what it holds.
    Index(IndexCmd),
    /// List a directory of an archive (or one entry).
    Ls(LsCmd),
    /// Print a file of an archive to standard output.
    Cat(CatCmd),
    /// Show the metadata of one entry of an archive.
    Stat(StatCmd),
    /// Mount archives read-only over FUSE, in the foreground (SIGINT/SIGTERM unmount).
    Mount(MountCmd),
    /// Symlink every path of every enabled add-on into a workload root (run in the workload).
    Attach(AttachCmd),
    /// Remove the symlinks that `attach` made (only those pointing into the mount).
    Detach(DetachCmd),
    /// Check an add-on's metadata and tarball against every registry rule, locally.
    Validate(ValidateCmd),
    /// The node daemon: mount every add-on of a state directory and serve the registry's API.
    Serve(ServeCmd),
    /// A node follower: mount every enabled add-on of a shared store's catalog, read-only.
    Node(NodeCmd),
    /// The registry alone (API: upload, list, status; no mount) on a store shared by nodes.
    Registry(RegistryCmd),
    /// Administer the add-ons of a local state directory.
    #[command(subcommand)]
    Addons(AddonsCmd),
    /// Keep the mount's FUSE connection of a state directory (a node's: its --cache-dir) alive
    /// across restarts of `serve` or `node` (started by them; run on its own under Kubernetes,
    /// with --no-spawn).
    Holder(HolderCmd),
    /// Upgrade `serve` or `node` in place (`--state-dir`: a node's --cache-dir): the holder
    /// starts the same command again (the binary now at its path), which takes the mount over;
    /// the old process then exits. The mount answers throughout.
    Restart(RestartCmd),
    /// Benchmarks (as root: they drop the page cache and mount).
    #[command(subcommand)]
    Bench(BenchCmd),
}

/// `addonfs bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Workload start to first byte of a file, for add-ons of several sizes: extraction,
    /// addonfs attach, addonfs mount, and ratarmount/archivemount when installed.
    Startup(StartupCmd),
}

/// `addonfs bench startup`.
#[derive(Debug, Args)]
pub struct StartupCmd {
    /// Sizes of content of the add-ons, comma-separated (suffixes K, M, G).
    #[arg(long, value_delimiter = ',', default_value = "1M,10M,100M,500M,1G", value_parser = parse_size)]
    pub sizes: Vec<u64>,
    /// Runs per size and method (the median is reported, min and max in the CSV).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Where the add-ons' files are picked from.
    #[arg(long, default_value = "/usr", value_name = "DIR")]
    pub source: PathBuf,
    /// Where add-ons are built and cached (reruns skip packing), and runs take place.
    #[arg(long, default_value = "/var/tmp/addonfs-bench/startup", value_name = "DIR")]
    pub work_dir: PathBuf,
    /// Where `startup.csv` and `startup.svg` are written.
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub out: PathBuf,
    /// The workload-side binary the "addonfs attach" method spawns [default: `addonfs-attach`
    /// beside this binary, or `addonfs attach` when it is missing]. The static build
    /// (`cargo build-attach`) is at target/x86_64-unknown-linux-gnu/release/addonfs-attach.
    #[arg(long, value_name = "PATH")]
    pub attach_bin: Option<PathBuf>,
    /// Leave out ratarmount and archivemount even if installed.
    #[arg(long)]
    pub no_peers: bool,
    /// Longest one run may take, in seconds, before the benchmark fails.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// The Garage server the store methods (lazy, download-serve, download-extract) read
    /// from, started on loopback [default: `garage` on PATH; without it they are skipped].
    #[arg(long, value_name = "PATH")]
    pub garage: Option<PathBuf>,
    /// Leave out the store methods.
    #[arg(long)]
    pub no_store: bool,
    /// Latency added to every store request for the `*-latency` methods, in milliseconds
    /// (0: those methods are left out).
    #[arg(long, default_value_t = 20)]
    pub store_latency_ms: u64,
    /// Only these methods, comma-separated by their CSV names (extract, addonfs-attach, lazy,
    /// download-serve-latency...); default: every one available.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub methods: Vec<String>,
    /// Also time the tree walk (`tar -cf - .` of the add-on through the mount) on a cold lazy
    /// node against a node holding the whole add-on (needs garage).
    #[arg(long)]
    pub walk: bool,
}

/// Where `attach` and `detach` look for the daemon's mount unless told.
pub const DEFAULT_MOUNT: &str = "/runtime-addons";
/// The workload root `attach` and `detach` work in unless told.
pub const DEFAULT_ROOT: &str = "/";

/// `addonfs node`.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct NodeCmd {
    /// The node cache's administration (instead of running a node).
    #[command(subcommand)]
    pub action: Option<NodeAction>,
    /// The store: a directory (`/var/lib/addonfs`, `file:///...`, e.g. a shared NFS
    /// directory) or `s3://bucket/prefix` (configured from the AWS_* environment). The node
    /// only reads it.
    #[arg(long, value_name = "URL", required = true)]
    pub store: Option<String>,
    /// Where every enabled add-on is mounted (one directory per add-on, plus `/.addons.json`).
    #[arg(long, default_value = DEFAULT_MOUNT, value_name = "DIR")]
    pub mount: PathBuf,
    /// The node cache: the verified ranges and copies of the add-ons served, kept across
    /// restarts.
    #[arg(long, value_name = "DIR", required = true)]
    pub cache_dir: Option<PathBuf>,
    /// Bytes the node cache may hold on disk (fetched ranges and whole add-ons together; least
    /// recently used ones not in use are evicted; suffixes K, M, G).
    #[arg(long, default_value = "10G", value_parser = parse_size)]
    pub cache_size: u64,
    /// Bytes of decompressed gzip spans kept in memory, shared by all add-ons.
    #[arg(long, default_value = "32M", value_parser = parse_size)]
    pub memory_cache: u64,
    /// Serve `/healthz`, `/readyz` and `/metrics` on this address (none by default).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Let every user read the mount (workloads run as other users than the node).
    #[arg(long)]
    pub allow_other: bool,
    /// How add-ons come from the store: `lazy` mounts one once its index's head is fetched and
    /// reads its bytes by range requests as reads need them (add-ons uploaded before index
    /// heads existed are fetched whole anyway); `whole` downloads every add-on before
    /// mounting it.
    #[arg(long, value_enum, default_value = "lazy")]
    pub fetch: FetchMode,
    /// The smallest range request (neighbouring missing ranges are added up to it): an S3
    /// request costs tens of milliseconds whatever its size, so fewer, larger ones win
    /// (suffixes K, M).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub min_request: u64,
    /// How long a read may wait for the store, retries included, before it fails with EIO
    /// (`10s`, `500ms`); the mount stays up and the next read asks again.
    #[arg(long, default_value = "10s", value_parser = crate::attach::parse_wait, value_name = "DURATION")]
    pub store_timeout: std::time::Duration,
    /// Fill in the rest of each enabled add-on in the background once reads are quiet
    /// (`background`), or fetch only what reads ask for (`none`).
    #[arg(long, value_enum, default_value = "background")]
    pub prefetch: crate::daemon::lazy::Prefetch,
    /// Bytes per second the background fill may fetch (suffixes K, M, G).
    #[arg(long, default_value = "20M", value_parser = parse_size)]
    pub prefetch_rate: u64,
    /// How long reads must have left the store alone before the background fill starts.
    #[arg(long, default_value = "5s", value_parser = crate::attach::parse_wait, value_name = "DURATION")]
    pub prefetch_after: std::time::Duration,
    /// The mount across restarts (the holder's state directory is --cache-dir).
    #[command(flatten)]
    pub restarts: RestartOpts,
}

/// How a node gets add-ons from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FetchMode {
    /// By ranges, as reads need them.
    Lazy,
    /// Whole, before mounting.
    Whole,
}

/// `addonfs node <action>`.
#[derive(Debug, Clone, Subcommand)]
pub enum NodeAction {
    /// The node cache on this machine.
    #[command(subcommand)]
    Cache(NodeCacheCmd),
}

/// `addonfs node cache ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum NodeCacheCmd {
    /// What the node cache holds: each add-on, cached ranges or a whole copy, bytes on disk.
    Status(NodeCacheArgs),
    /// Remove everything the node cache holds (refused while a node runs on it).
    Clear(NodeCacheArgs),
}

/// The node cache a `node cache` command works on.
#[derive(Debug, Clone, Args)]
pub struct NodeCacheArgs {
    /// The node's `--cache-dir`.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `addonfs attach`.
#[derive(Debug, Args)]
pub struct AttachCmd {
    /// The addonfs daemon's mount point (it holds `/.addons.json`).
    #[arg(long, default_value = DEFAULT_MOUNT)]
    pub mount: PathBuf,
    /// The workload root the requested paths are relative to.
    #[arg(long, default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Print a JSON report instead of text.
    #[arg(long)]
    pub json: bool,
    /// Wait until the mount shows at least this catalog revision (the registry's answers
    /// carry it) before attaching; fail if it does not within `--wait`.
    #[arg(long, value_name = "N")]
    pub min_revision: Option<u64>,
    /// How long `--min-revision` waits (`5s`, `500ms`, seconds without a unit).
    #[arg(long, default_value = "5s", value_parser = crate::attach::parse_wait, value_name = "DURATION")]
    pub wait: std::time::Duration,
}

/// `addonfs detach`.
#[derive(Debug, Args)]
pub struct DetachCmd {
    /// The addonfs daemon's mount point.
    #[arg(long, default_value = DEFAULT_MOUNT)]
    pub mount: PathBuf,
    /// The workload root.
    #[arg(long, default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Also consider these absolute paths (e.g. of add-ons disabled since attach).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
    /// Print a JSON report instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The state directory option.
#[derive(Debug, Clone, Args)]
pub struct StateOpts {
    /// The registry's state directory [default: /var/lib/addonfs for root, else
    /// $XDG_STATE_HOME/addonfs or ~/.local/state/addonfs].
    #[arg(long, env = "ADDONFS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `addonfs holder`.
#[derive(Debug, Args)]
pub struct HolderCmd {
    /// The state directory.
    #[command(flatten)]
    pub state: StateOpts,
    /// Do not start `serve` (or `node`) again when it dies (something else restarts it:
    /// Kubernetes).
    #[arg(long)]
    pub no_spawn: bool,
}

/// `addonfs restart`.
#[derive(Debug, Args)]
pub struct RestartCmd {
    /// The state directory.
    #[command(flatten)]
    pub state: StateOpts,
}

/// `addonfs validate`.
#[derive(Debug, Args)]
pub struct ValidateCmd {
    /// The metadata file (JSON).
    pub metadata: PathBuf,
    /// The tarball (tar or tar.gz).
    pub tarball: PathBuf,
}

/// `addonfs serve`.
#[derive(Debug, Args)]
pub struct ServeCmd {
    /// The state directory.
    #[command(flatten)]
    pub state: StateOpts,
    /// Address to listen on (loopback by default; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7474")]
    pub listen: std::net::SocketAddr,
    /// File of accepted API keys, one a line [default: STATE_DIR/api-keys, created with a
    /// random key at first start].
    #[arg(long, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,
    /// An accepted API key (instead of a keys file).
    #[arg(long, env = "ADDONFS_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// The API's limits.
    #[command(flatten)]
    pub api: ApiOpts,
    /// Where every add-on is mounted (one directory per add-on, plus `/.addons.json`)
    /// [default: STATE_DIR/mnt].
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,
    /// Serve the API only, without mounting.
    #[arg(long, conflicts_with_all = ["mount", "keep_mount"])]
    pub no_mount: bool,
    /// Let every user read the mount (workloads run as other users than the daemon).
    #[arg(long)]
    pub allow_other: bool,
    /// The mount across restarts.
    #[command(flatten)]
    pub restarts: RestartOpts,
    /// Bytes of decompressed gzip spans kept in memory, shared by all add-ons.
    #[arg(long, default_value = "32M", value_parser = parse_size)]
    pub cache_size: u64,
}

/// The mount across restarts, as `serve` and `node` take it: flatten it into the command.
#[derive(Debug, Clone, Args)]
pub struct RestartOpts {
    /// Serve the mount without a holder: when this process dies, its mount dies with it
    /// (open files fail until the next start mounts anew).
    #[arg(long, env = "ADDONFS_NO_HOLDER")]
    pub no_holder: bool,
    /// Keep the mount's connection in systemd's file-descriptor store instead of a holder
    /// process: for a systemd service with Type=notify, FileDescriptorStoreMax=2 (or more) and
    /// Restart=always (deploy/systemd/). SIGUSR2 (`systemctl kill -s USR2 --kill-who=main
    /// UNIT`) then upgrades in place by re-executing the binary.
    #[arg(long, env = "ADDONFS_FD_STORE", conflicts_with = "no_holder")]
    pub fd_store: bool,
    /// On SIGTERM, leave the mount with the holder (or systemd's store) instead of unmounting
    /// it: the next start of the same command takes it over (a Kubernetes rolling update, a
    /// `systemctl restart`).
    #[arg(long, conflicts_with = "no_holder")]
    pub keep_mount: bool,
}

impl RestartOpts {
    /// As the daemon takes them.
    pub fn restarts(&self) -> crate::daemon::restart::Restarts {
        use crate::daemon::restart::{Keeper, Restarts};
        let keeper = match (self.no_holder, self.fd_store) {
            (true, _) => Keeper::None,
            (false, true) => Keeper::FdStore,
            (false, false) => Keeper::Holder,
        };
        Restarts { keeper, keep_on_stop: self.keep_mount }
    }
}

/// The API's limits, as `serve` and `registry` take them.
#[derive(Debug, Args)]
pub struct ApiOpts {
    /// Largest tarball an upload may send (suffixes K, M, G allowed).
    #[arg(long, default_value = "2G", value_parser = parse_size)]
    pub max_upload: u64,
    /// Refuse uploads whose uncompressed tar is larger than this.
    #[arg(long, default_value = "64G", value_parser = parse_size)]
    pub max_uncompressed: u64,
    /// Uploads indexed at once; further uploads are refused with 429 until one ends.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_uploads: u32,
    /// Connections open at once (lowered to fit the open-files limit); further connections
    /// wait in the kernel's listen backlog.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Seconds a connection has to send a complete request head, from when it is accepted or
    /// its previous response was sent (so also the idle keep-alive timeout).
    #[arg(long, default_value = "30", value_name = "SECONDS", value_parser = parse_seconds)]
    pub header_timeout: std::time::Duration,
    /// Seconds a request body may send nothing; a stalled upload is refused and its staging
    /// removed.
    #[arg(long, default_value = "60", value_name = "SECONDS", value_parser = parse_seconds)]
    pub body_timeout: std::time::Duration,
    /// TLS for the API.
    #[command(flatten)]
    pub tls: TlsOpts,
}

/// TLS for a role that serves the API (`serve`, `registry`): flatten it into the command.
#[derive(Debug, Clone, Args)]
pub struct TlsOpts {
    /// Serve the API over HTTPS with this certificate chain (PEM, the server's certificate
    /// first). Reloaded on SIGHUP and when the file changes. Without it the API is plain HTTP,
    /// which is for loopback only.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsOpts {
    /// The files, when TLS is asked for.
    pub fn files(&self) -> Option<crate::api::tls::TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                Some(crate::api::tls::TlsFiles { cert: cert.clone(), key: key.clone() })
            }
            _ => None,
        }
    }
}

/// `addonfs registry`.
#[derive(Debug, Args)]
pub struct RegistryCmd {
    /// The store: a directory (or `file:///dir`, also a shared one such as NFS) or
    /// `s3://bucket/prefix` (any S3-compatible service; settings from the standard `AWS_*`
    /// environment: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
    /// AWS_ALLOW_HTTP).
    #[arg(long, env = "ADDONFS_STORE", value_name = "URL")]
    pub store: String,
    /// Address to listen on (loopback by default; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7474")]
    pub listen: std::net::SocketAddr,
    /// File of accepted API keys, one a line [default for a directory store: DIR/api-keys,
    /// created with a random key at first start; an S3 store needs this or --api-key].
    #[arg(long, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,
    /// An accepted API key (instead of a keys file).
    #[arg(long, env = "ADDONFS_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,
    /// The API's limits.
    #[command(flatten)]
    pub api: ApiOpts,
    /// Where uploads to a remote store are staged while they are indexed [default: a fresh
    /// directory under the system's temporary directory].
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// Seconds after which objects that no catalog record references (an upload interrupted
    /// between its objects and the catalog) are deleted.
    #[arg(long, default_value = "3600", value_name = "SECONDS", value_parser = parse_seconds_or_zero)]
    pub orphan_grace: std::time::Duration,
}

/// A number of seconds, 0 allowed.
pub fn parse_seconds_or_zero(text: &str) -> Result<std::time::Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if (0.0..=86_400.0 * 365.0).contains(&s) => Ok(std::time::Duration::from_secs_f64(s)),
        _ => Err(format!("{text:?} is not a number of seconds (0 or more)")),
    }
}

/// A positive number of seconds (fractions allowed: `0.5`).
pub fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(std::time::Duration::from_secs_f64(s)),
        _ => Err(format!("{text:?} is not a number of seconds between 0 and 86400 (0 excluded)")),
    }
}

/// How an admin command reaches the registry: a running daemon's API, or the state directory.
#[derive(Debug, Clone, Args)]
pub struct RemoteOpts {
    /// Talk to a running daemon's API at this URL (`https://HOST:PORT`, or `http://` on
    /// loopback) instead of the state directory. Without it, a daemon holding the state
    /// directory is reached through the API address it recorded there.
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// For `https://` APIs: trust the CA certificates in this PEM file (instead of the
    /// system's) to verify the server's certificate.
    #[arg(long, env = "ADDONFS_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// File holding the API key (its first key is used) [default: ADDONFS_API_KEY, else
    /// STATE_DIR/api-keys].
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
}

/// `addonfs addons ...`.
#[derive(Debug, Subcommand)]
pub enum AddonsCmd {
    /// List the add-ons.
    List {
        /// The state directory.
        #[command(flatten)]
        state: StateOpts,
        /// A running daemon's API.
        #[command(flatten)]
        remote: RemoteOpts,
        /// Print JSON records instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Enable an add-on (by id, identifier or name).
    Enable {
        /// The id (`3`), identifier (`custom-addon-sample`) or name (`sample`).
        addon: String,
        /// The state directory.
        #[command(flatten)]
        state: StateOpts,
        /// A running daemon's API.
        #[command(flatten)]
        remote: RemoteOpts,
    },
    /// Disable an add-on (by id, identifier or name).
    Disable {
        /// The id (`3`), identifier (`custom-addon-sample`) or name (`sample`).
        addon: String,
        /// The state directory.
        #[command(flatten)]
        state: StateOpts,
        /// A running daemon's API.
        #[command(flatten)]
        remote: RemoteOpts,
    },
    /// Deprecate an add-on (by id, identifier or name): new workloads still get it, flagged as
    /// deprecated with a reason in the API and the mount's manifest.
    Deprecate {
        /// The id (`3`), identifier (`custom-addon-sample`) or name (`sample`).
        addon: String,
        /// Why (one line), e.g. what replaces it and when it will be disabled [default:
        /// "deprecated by an administrator"].
        #[arg(long)]
        reason: Option<String>,
        /// The state directory.
        #[command(flatten)]
        state: StateOpts,
        /// A running daemon's API.
        #[command(flatten)]
        remote: RemoteOpts,
    },
    /// Register an add-on from a metadata file and a tarball (enabled at once).
    Register {
        /// The metadata file (JSON).
        metadata: PathBuf,
        /// The tarball (tar or tar.gz).
        tarball: PathBuf,
        /// The state directory.
        #[command(flatten)]
        state: StateOpts,
        /// A running daemon's API.
        #[command(flatten)]
        remote: RemoteOpts,
    },
}

/// Options shared by every command that opens an archive.
#[derive(Debug, Clone, Args)]
pub struct ArchiveOpts {
    /// The archive: a tar file, or a gzip-compressed tar (detected by content, not name).
    pub archive: PathBuf,
    /// Where the index is kept [default: beside the archive, as ARCHIVE.addonfs-index].
    #[arg(long, value_name = "PATH")]
    pub index: Option<PathBuf>,
    /// How an index is built when one is needed.
    #[command(flatten)]
    pub scan: ScanFlags,
}

/// How an archive is indexed: the span between gzip access points and the limits.
#[derive(Debug, Clone, Args)]
pub struct ScanFlags {
    /// Distance between gzip access points, in bytes (suffixes K, M, G allowed).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub span: u64,
    /// Refuse archives whose uncompressed tar is larger than this (decompression bombs).
    #[arg(long, default_value = "64G", value_parser = parse_size)]
    pub max_uncompressed: u64,
    /// Refuse archives with more entries than this.
    #[arg(long, default_value_t = Limits::DEFAULT_MAX_ENTRIES)]
    pub max_entries: u64,
}

impl ScanFlags {
    /// The scan options these flags describe.
    pub fn scan_options(&self) -> ScanOptions {
        ScanOptions {
            span: self.span,
            limits: Limits {
                max_uncompressed: self.max_uncompressed,
                max_entries: self.max_entries,
                ..Limits::default()
            },
        }
    }
}

/// `addonfs index`.
#[derive(Debug, Args)]
pub struct IndexCmd {
    /// The archive and index options.
    #[command(flatten)]
    pub archive: ArchiveOpts,
    /// Rebuild even if a valid index exists.
    #[arg(long)]
    pub rebuild: bool,
    /// Print a JSON report instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `addonfs ls`.
#[derive(Debug, Args)]
pub struct LsCmd {
    /// The archive and index options.
    #[command(flatten)]
    pub archive: ArchiveOpts,
    /// The directory (or entry) inside the archive [default: the root].
    #[arg(default_value = "")]
    pub path: String,
    /// Long listing: mode, links, owner, group, size, mtime, name and link target.
    #[arg(short, long)]
    pub long: bool,
    /// List subdirectories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

/// `addonfs cat`.
#[derive(Debug, Args)]
pub struct CatCmd {
    /// The archive and index options.
    #[command(flatten)]
    pub archive: ArchiveOpts,
    /// Files inside the archive (symlinks inside the archive are followed).
    #[arg(required = true)]
    pub paths: Vec<String>,
}

/// `addonfs stat`.
#[derive(Debug, Args)]
pub struct StatCmd {
    /// The archive and index options.
    #[command(flatten)]
    pub archive: ArchiveOpts,
    /// The entry inside the archive.
    pub path: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `addonfs mount`.
#[derive(Debug, Args)]
pub struct MountCmd {
    /// The archives, then the mount point. One archive is served at the root; several get one
    /// directory each, named after the archive file (without .tar.gz, .tgz, .tar, .gz).
    #[arg(required = true, num_args = 2.., value_name = "ARCHIVE... MOUNTPOINT")]
    pub paths: Vec<PathBuf>,
    /// Merge several archives into one tree: later archives win, directories merge.
    #[arg(long)]
    pub merge: bool,
    /// Let every user read the mount (permissions are still checked against the served modes).
    #[arg(long)]
    pub allow_other: bool,
    /// Show every file as owned by this user id (default: the archive's owners).
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,
    /// Show every file as owned by this group id (default: the archive's groups).
    #[arg(long, value_name = "GID")]
    pub gid: Option<u32>,
    /// Memory for decompressed gzip spans, shared by all archives (suffixes K, M, G allowed).
    #[arg(long, default_value = "32M", value_parser = parse_size)]
    pub cache_size: u64,
    /// Threads answering kernel requests.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
    /// How an index is built when one is needed.
    #[command(flatten)]
    pub scan: ScanFlags,
}

/// Parses a byte size such as `4096`, `64K`, `1M`, `1.5G` (binary units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit.to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("unknown size unit {unit:?} (use K, M, G or T)")),
    };
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a size"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !(0.0..1.8e19).contains(&bytes) || bytes.fract() != 0.0 && shift == 0 {
        return Err(format!("{text:?} is not a whole number of bytes"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        let err = |text: &str| parse_size(text).expect_err(text);
        assert!(err("12Q").contains("unknown size unit \"Q\""), "{}", err("12Q"));
        assert!(err("-1").contains("\"-1\" is not a whole number of bytes"), "{}", err("-1"));
        assert!(err("abc").contains("unknown size unit \"abc\""), "{}", err("abc"));
        assert!(err("1.2.3K").contains("\"1.2.3K\" is not a size"), "{}", err("1.2.3K"));
    }
}
