//! `addonfs bench startup`, run for real (as root with /dev/fuse, like CI) on one small add-on
//! built from a generated source tree: the add-on is packed and registered as documented, every
//! method reads the chosen file's first byte, the CSV has one well-formed row per method, the
//! SVG chart is drawn, a rerun reuses the packed add-on, and nothing stays mounted. No timing is
//! asserted (speed is shown in docs/benchmarks.md). When `CI` is set and root or FUSE is
//! missing, the tests fail instead of skipping.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use addonfs::bench::startup::{find_program, CSV_HEADER};

/// The files of the generated source: 16 × 64 KiB (exactly 1 MiB, so a 1M add-on packs them
/// all), one of them uniquely deepest.
const FILES: [&str; 16] = [
    "bin/tool",
    "bin/other",
    "lib/libx.so",
    "lib/liby.so",
    "lib/pkg/a.py",
    "lib/pkg/b.py",
    "lib/pkg/sub/c.py",
    "lib/pkg/sub/d.py",
    "lib/pkg/sub/deeper/e.py",
    "lib/pkg/sub/deeper/still/f.py",
    "lib/pkg/sub/deeper/still/deepest/chosen.bin",
    "share/doc/readme",
    "share/doc/license",
    "share/man/man1/tool.1",
    "share/man/man1/other.1",
    "include/x.h",
];
const DEEPEST: &str = "lib/pkg/sub/deeper/still/deepest/chosen.bin";

fn make_source(dir: &Path) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for name in FILES {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let bytes: Vec<u8> = (0..64 << 10)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 16) as u8 + b'a'
            })
            .collect();
        std::fs::write(path, bytes).unwrap();
    }
    // Neither a symlink nor an empty file is packed.
    std::os::unix::fs::symlink("tool", dir.join("bin/link")).unwrap();
    std::fs::write(dir.join("bin/empty"), b"").unwrap();
}

fn bench(source: &Path, work: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_addonfs"))
        .args(["bench", "startup", "--sizes", "1M", "--runs", "1", "--timeout", "120"])
        .arg("--source")
        .arg(source)
        .arg("--work-dir")
        .arg(work)
        .arg("--out")
        .arg(out)
        .arg("--attach-bin")
        .arg(env!("CARGO_BIN_EXE_addonfs-attach"))
        .args(extra)
        .output()
        .expect("run addonfs bench")
}

/// The CSV's rows as maps from column to value (no field here needs quoting).
fn rows(csv: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(CSV_HEADER));
    let columns: Vec<&str> = CSV_HEADER.split(',').collect();
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), columns.len(), "{line}");
            columns
                .iter()
                .map(|c| c.to_string())
                .zip(fields.iter().map(|f| f.to_string()))
                .collect()
        })
        .collect()
}

fn number(row: &std::collections::BTreeMap<String, String>, column: &str) -> f64 {
    row[column].parse().unwrap_or_else(|_| panic!("{column} = {:?} is not a number", row[column]))
}

#[test]
fn startup_bench_measures_every_method_and_writes_csv_and_svg() {
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::Builder::new().prefix("addonfs-bench-").tempdir().unwrap();
    let source = std::fs::canonicalize(tmp.path()).unwrap().join("src");
    make_source(&source);
    let work = tmp.path().join("work");
    let out = tmp.path().join("out");

    // The store methods (a lazy node, a whole-fetching node, download then tar -xzf, each
    // plain and with latency through the proxy) need Garage: required under CI.
    let store = common::require("garage");
    let run = bench(&source, &work, &out, if store { &["--walk"] } else { &[] });
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench failed: {}\n{stderr}", run.status);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("| add-on (content) |") && stdout.contains("| 1M (1.0 MiB) | 16 |"));

    let mut expected: BTreeSet<&str> =
        ["extract", "addonfs-attach", "addonfs-attach-lib", "addonfs-mount"].into();
    for peer in ["ratarmount", "archivemount"] {
        if find_program(peer).is_some() {
            expected.insert(peer);
        }
    }
    let store_methods = [
        "lazy",
        "lazy-latency",
        "download-serve",
        "download-serve-latency",
        "download-extract",
        "download-extract-latency",
    ];
    if store {
        expected.extend(store_methods);
        // The second table (what each store method fetched) and the tree walk's.
        assert!(stdout.contains("| 1M (") && stdout.contains("| lazy node |"), "{stdout}");
        assert!(stdout.contains("| cold lazy node |"), "{stdout}");
    }
    let source_rel = source.to_str().unwrap().trim_start_matches('/').to_string();
    let csv = std::fs::read_to_string(out.join("startup.csv")).unwrap();
    let rows = rows(&csv);
    let methods: BTreeSet<&str> = rows.iter().map(|r| r["method"].as_str()).collect();
    assert_eq!(methods, expected);
    assert_eq!(rows.len(), expected.len());
    for row in &rows {
        assert_eq!(row["size"], "1M");
        assert_eq!(row["target_bytes"], "1048576");
        assert_eq!(row["content_bytes"], "1048576");
        assert_eq!(row["files"], "16");
        assert_eq!(row["chosen_file"], format!("{source_rel}/{DEEPEST}"));
        assert_eq!(row["chosen_depth"], (source_rel.split('/').count() + 7).to_string());
        assert_eq!(row["runs"], "1");
        let (median, min, max) =
            (number(row, "median_ms"), number(row, "min_ms"), number(row, "max_ms"));
        assert!(median > 0.0 && min <= median && median <= max, "{row:?}");
        assert_eq!(number(row, "runs_ms"), median);
        assert!(number(row, "tarball_bytes") > 0.0);
        if store_methods.contains(&row["method"].as_str()) {
            // Every byte of the add-on came through the proxy from Garage: its count is at
            // least the node's (HTTP headers on top), and requests were seen.
            let fetched = number(row, "fetched_bytes");
            assert!(fetched > 0.0 && number(row, "proxy_bytes") >= fetched, "{row:?}");
            assert!(number(row, "proxy_requests") >= 1.0, "{row:?}");
            assert!(number(row, "fetched_pct") > 0.0, "{row:?}");
            if !row["method"].starts_with("download-extract") {
                assert!(number(row, "ready_ms") > 0.0 && number(row, "first_ms") > 0.0);
                assert!(number(row, "requests") >= 2.0, "catalog and add-on: {row:?}");
            }
        } else {
            assert_eq!(row["fetched_bytes"], "", "{row:?}");
        }
    }

    // The add-on: every file under its absolute path, its parents as directories, the source's
    // children as requested paths, registered in its store.
    let addon = work.join("1M");
    let listing = Command::new("tar").arg("-tzf").arg(addon.join("addon.tar.gz")).output().unwrap();
    assert!(listing.status.success());
    let names: BTreeSet<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    for file in FILES {
        assert!(names.contains(&format!("{source_rel}/{file}")), "{file} packed");
    }
    assert!(names.contains(&format!("{source_rel}/lib/pkg/sub")), "parent directories packed");
    assert!(!names.iter().any(|n| n.ends_with("bin/link") || n.ends_with("bin/empty")));
    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(addon.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(metadata["name"], "bench-1m");
    let paths: Vec<String> = ["bin", "include", "lib", "share"]
        .iter()
        .map(|p| format!("{}/{p}", source.display()))
        .collect();
    assert_eq!(metadata["spec"]["paths"], serde_json::json!(paths));
    let catalog = std::fs::read(addon.join("state/catalog.json")).unwrap();
    let catalog = addonfs::addon::catalog::Catalog::parse(&catalog).unwrap();
    assert!(catalog.find("custom-addon-bench-1m").is_some());

    // The chart: an SVG document with a legend entry per method.
    let svg = std::fs::read_to_string(out.join("startup.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for title in ["tar -xzf (extract)", "addonfs attach", "addonfs mount"] {
        assert!(svg.contains(title), "legend {title}");
    }
    assert_eq!(svg.matches("<circle").count(), expected.len(), "one point per method");

    // Nothing left mounted or extracted.
    let work_abs = std::fs::canonicalize(&work).unwrap();
    assert_eq!(addonfs::mount::mount_at(&work_abs.join("mnt")).unwrap(), None);
    assert!(!work.join("run").exists());

    // A rerun reuses the packed add-on; --no-peers and --no-store leave the peers and the
    // store methods out.
    let tarball = std::fs::metadata(addon.join("addon.tar.gz")).unwrap();
    let again = bench(&source, &work, &out, &["--no-peers", "--no-store"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let after = std::fs::metadata(addon.join("addon.tar.gz")).unwrap();
    assert_eq!((after.ino(), after.mtime_nsec()), (tarball.ino(), tarball.mtime_nsec()));
    assert!(!String::from_utf8_lossy(&again.stderr).contains("packing"));
    let csv = std::fs::read_to_string(out.join("startup.csv")).unwrap();
    let methods: BTreeSet<String> =
        self::rows(&csv).into_iter().map(|r| r["method"].clone()).collect();
    assert_eq!(
        methods,
        ["addonfs-attach", "addonfs-attach-lib", "addonfs-mount", "extract"]
            .map(String::from)
            .into()
    );
}

#[test]
fn startup_bench_refuses_to_run_without_root() {
    if !common::fuse_ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_addonfs"))
        .args(["bench", "startup", "--sizes", "1M", "--work-dir"])
        .arg(tmp.path().join("work"))
        .arg("--out")
        .arg(tmp.path().join("out"))
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("must run as root") && stderr.contains("uid 65534"), "{stderr}");
    assert!(!tmp.path().join("work").exists() && !tmp.path().join("out").exists());
}
