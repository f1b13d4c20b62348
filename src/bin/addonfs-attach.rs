//! `addonfs-attach`: the workload-side step alone (`addonfs attach` / `addonfs detach`), in a
//! binary that links nothing else of addonfs. A workload runs it once at start, usually with a
//! cold page cache, where every page of a binary is a disk read: this one starts in a fraction
//! of the full `addonfs` binary's time (see docs/benchmarks.md, "Startup latency").
//!
//! Its few flags are parsed here, by hand, rather than with clap as everywhere else: clap was a
//! quarter of this binary (2.1 MB static, 1.5 MB without) and about 0.7 ms of its 5 ms cold
//! start. The flags, defaults and exit codes are those of `addonfs attach` and `addonfs detach`
//! (`tests/attach.rs` runs both binaries side by side).

#![deny(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use addonfs::cli::args::{AttachCmd, DetachCmd, DEFAULT_MOUNT, DEFAULT_ROOT};
use addonfs::cli::EXIT_USAGE;

const USAGE: &str = "\
Symlink the enabled add-ons' paths into a workload root (or remove those links).

Usage: addonfs-attach [--mount M] [--root R] [--json] [--min-revision N [--wait 5s]]
       addonfs-attach detach [--mount M] [--root R] [--path P]... [--json]

Options:
      --mount <M>   The addonfs daemon's mount point (it holds /.addons.json) [default: /runtime-addons]
      --root <R>    The workload root the requested paths are relative to [default: /]
      --json        Print a JSON report instead of text
      --min-revision <N>
                    Wait until the mount shows at least this catalog revision (the
                    registry's answers carry it); fail if it does not within --wait
      --wait <DURATION>
                    How long --min-revision waits (5s, 500ms) [default: 5s]
      --path <P>    detach only: also consider this absolute path (e.g. of an add-on disabled
                    since attach); repeatable
  -h, --help        Print help
  -V, --version     Print version
";

/// What the command line asks for.
#[derive(Debug)]
enum Request {
    Attach(AttachCmd),
    Detach(DetachCmd),
    Help,
    Version,
}

/// Parses the arguments after the program name; the error is the message for standard error.
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Request, String> {
    let mut args = args.into_iter().peekable();
    let detach = args.peek().is_some_and(|a| a == "detach");
    if detach {
        args.next();
    }
    let (mut mount, mut root) = (PathBuf::from(DEFAULT_MOUNT), PathBuf::from(DEFAULT_ROOT));
    let (mut json, mut paths) = (false, Vec::new());
    let (mut min_revision, mut wait) = (None, std::time::Duration::from_secs(5));
    while let Some(arg) = args.next() {
        // Values are kept as the bytes given (paths need not be UTF-8); `--flag=value` splits
        // at the first `=`.
        let bytes = arg.as_bytes();
        let (flag, inline) = match bytes.iter().position(|&b| b == b'=') {
            Some(i) if bytes.starts_with(b"--") => {
                (&bytes[..i], Some(OsStr::from_bytes(&bytes[i + 1..])))
            }
            _ => (bytes, None),
        };
        let mut value = |name: &str| -> Result<OsString, String> {
            match inline {
                Some(v) => Ok(v.to_os_string()),
                None => args.next().ok_or_else(|| format!("a value is required for '{name}'")),
            }
        };
        match flag {
            b"-h" | b"--help" => return Ok(Request::Help),
            b"-V" | b"--version" => return Ok(Request::Version),
            b"--mount" => mount = value("--mount <M>")?.into(),
            b"--root" => root = value("--root <R>")?.into(),
            b"--path" if detach => match value("--path <P>")?.into_string() {
                Ok(path) => paths.push(path),
                Err(bad) => return Err(format!("invalid UTF-8 in '--path {}'", bad.display())),
            },
            b"--min-revision" if !detach => {
                let v = value("--min-revision <N>")?;
                match v.to_str().and_then(|t| t.parse::<u64>().ok()) {
                    Some(n) => min_revision = Some(n),
                    None => {
                        return Err(format!(
                            "invalid value '{}' for '--min-revision <N>': not a revision number",
                            v.display()
                        ))
                    }
                }
            }
            b"--wait" if !detach => {
                let v = value("--wait <DURATION>")?;
                wait = addonfs::attach::parse_wait(&v.to_string_lossy())
                    .map_err(|e| format!("invalid value for '--wait <DURATION>': {e}"))?;
            }
            b"--json" if inline.is_none() => json = true,
            _ => return Err(format!("unexpected argument '{}'", arg.display())),
        }
    }
    Ok(if detach {
        Request::Detach(DetachCmd { mount, root, paths, json })
    } else {
        Request::Attach(AttachCmd { mount, root, json, min_revision, wait })
    })
}

/// Writes `text` to standard output; a closed one (the reader went away) is not an error.
fn say(text: &str) -> i32 {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    0
}

fn main() {
    let code = match parse(std::env::args_os().skip(1)) {
        Ok(Request::Attach(cmd)) => addonfs::cli::attach::attach(&cmd),
        Ok(Request::Detach(cmd)) => addonfs::cli::attach::detach(&cmd),
        Ok(Request::Help) => say(USAGE),
        Ok(Request::Version) => say(&format!("addonfs-attach {}\n", env!("CARGO_PKG_VERSION"))),
        Err(message) => {
            addonfs::cli::error_line(format_args!("error: {message}\n\n{USAGE}"));
            EXIT_USAGE
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Request, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn defaults_are_those_of_addonfs_attach() {
        let Ok(Request::Attach(cmd)) = parse_str(&[]) else { panic!("not an attach") };
        assert_eq!(
            (cmd.mount.to_str(), cmd.root.to_str(), cmd.json),
            (Some(DEFAULT_MOUNT), Some("/"), false)
        );
    }

    #[test]
    fn flags_take_a_separate_or_an_inline_value() {
        let Ok(Request::Attach(cmd)) = parse_str(&["--mount", "/m", "--root=/r", "--json"]) else {
            panic!("not an attach")
        };
        assert_eq!((cmd.mount, cmd.root, cmd.json), ("/m".into(), "/r".into(), true));
        let Ok(Request::Detach(cmd)) =
            parse_str(&["detach", "--path", "/a", "--path=/b", "--mount=/m"])
        else {
            panic!("not a detach")
        };
        assert_eq!(cmd.paths, ["/a", "/b"]);
        assert_eq!((cmd.mount, cmd.root, cmd.json), ("/m".into(), "/".into(), false));
    }

    #[test]
    fn bad_arguments_are_named() {
        for (args, want) in [
            (&["--bogus"][..], "unexpected argument '--bogus'"),
            (&["--mount"][..], "a value is required for '--mount <M>'"),
            (&["--path", "/a"][..], "unexpected argument '--path'"),
            (&["--json=yes"][..], "unexpected argument '--json=yes'"),
            (&["attach"][..], "unexpected argument 'attach'"),
        ] {
            assert_eq!(parse_str(args).unwrap_err(), want, "{args:?}");
        }
        assert!(matches!(parse_str(&["--root", "/r", "--help"]), Ok(Request::Help)));
        assert!(matches!(parse_str(&["detach", "-V"]), Ok(Request::Version)));
    }

    #[test]
    fn paths_need_not_be_utf8() {
        let odd = OsStr::from_bytes(b"/m\xff").to_os_string();
        let mut inline = OsString::from("--root=");
        inline.push(&odd);
        let Ok(Request::Attach(cmd)) = parse(vec!["--mount".into(), odd.clone(), inline]) else {
            panic!("not an attach")
        };
        assert_eq!(
            (cmd.mount.as_os_str(), cmd.root.as_os_str()),
            (odd.as_os_str(), odd.as_os_str())
        );
    }
}
