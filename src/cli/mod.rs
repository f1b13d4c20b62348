//! The command-line tool, over the library. `main.rs` parses arguments and calls [`run`].

/// `println!` for the commands' output, returning `Result<(), Error>` instead of panicking
/// when standard output cannot be written. A closed one (EPIPE: `addonfs ls | head -1`) is an
/// `Error::Io` that [`run`] turns into a quiet exit 0, as ripgrep does.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
            .map_err(|e| $crate::cli::Error::io("<stdout>", e))
    }};
}

pub mod args;
pub mod attach;
mod bench;
pub mod error;
mod format;
mod inspect;
mod mount;
mod node;
mod open;
mod registry;

use std::io::IsTerminal;

pub use args::Cli;
use args::{Command, LogFormat};
pub use error::Error;

use crate::archive::ScanError;
use crate::index::open::OpenError;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: a failure not covered below (I/O, index).
pub const EXIT_FAILURE: i32 = 1;
/// Exit code: bad usage (clap uses it too).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: the archive is not a valid or supported archive, or crossed a limit.
pub const EXIT_BAD_ARCHIVE: i32 = 3;
/// Exit code: the path asked for is not in the archive.
pub const EXIT_NOT_FOUND: i32 = 4;
/// Exit code: an add-on broke a registry rule (invalid metadata, conflict, duplicate).
pub const EXIT_INVALID: i32 = 5;
/// Exit code: `attach`/`detach` handled some paths but failed others (the report says which).
pub const EXIT_PARTIAL: i32 = 6;

/// Runs one command line; returns the process exit code. Errors are printed to standard
/// error, prefixed with `addonfs:`.
pub fn run(cli: Cli) -> i32 {
    init_logging(&cli.log_level, cli.log_format);
    // The long-running commands' process setup, before any thread starts: freed cache chunks
    // and upload buffers go back to the system instead of lingering in per-thread arenas.
    if matches!(
        cli.command,
        Command::Mount(_) | Command::Serve(_) | Command::Registry(_) | Command::Node(_)
    ) {
        crate::process::release_large_allocations();
    }
    let result = match cli.command {
        Command::Index(cmd) => inspect::index(&cmd),
        Command::Ls(cmd) => inspect::ls(&cmd),
        Command::Cat(cmd) => inspect::cat(&cmd),
        Command::Stat(cmd) => inspect::stat(&cmd),
        Command::Mount(cmd) => mount::mount(&cmd),
        Command::Attach(cmd) => return attach::attach(&cmd),
        Command::Detach(cmd) => return attach::detach(&cmd),
        Command::Validate(cmd) => registry::validate(&cmd),
        Command::Serve(cmd) => registry::serve(&cmd),
        Command::Node(cmd) => node::node(&cmd),
        Command::Registry(cmd) => registry::registry(&cmd),
        Command::Addons(cmd) => registry::addons(&cmd),
        Command::Holder(cmd) => registry::holder(&cmd),
        Command::Restart(cmd) => registry::restart(&cmd),
        Command::Bench(cmd) => return bench::bench(&cmd),
    };
    match result {
        Ok(()) => EXIT_OK,
        // The reader of our output went away: nothing left to say, to anyone.
        Err(e) if is_broken_pipe(&e) => EXIT_OK,
        Err(e) => {
            error_line(format_args!("addonfs: {e}"));
            exit_code(&e)
        }
    }
}

/// `eprintln!` without its panic when standard error is a closed pipe (`2>&1 | head -1`): the
/// message is lost, the exit code still says what happened.
pub fn error_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// Whether `e` is a write to a closed pipe (the reader of our output went away).
fn is_broken_pipe(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The exit code for an error.
pub fn exit_code(e: &Error) -> i32 {
    match e {
        Error::Open(OpenError::Scan { source: ScanError::Io(_), .. }) => EXIT_FAILURE,
        Error::Open(OpenError::Scan { .. }) => EXIT_BAD_ARCHIVE,
        Error::NotFound { .. } | Error::NoSuchAddon(_) => EXIT_NOT_FOUND,
        Error::Usage(_) => EXIT_USAGE,
        Error::Invalid(_) => EXIT_INVALID,
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe => EXIT_OK,
        _ => EXIT_FAILURE,
    }
}

/// Sends `tracing` events (and the `log` records of dependencies such as fuser) to standard
/// error, filtered by `level`.
pub fn init_logging(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
