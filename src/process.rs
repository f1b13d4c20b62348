//! Process-wide setup of the long-running commands (`serve`, `mount`), done once before any
//! thread starts, and what the heap gives back. Its `libc` calls are allowed `unsafe` here (the crate denies it elsewhere,
//! outside the FFI of `gzip::ffi` and `mount::sys`).
#![allow(unsafe_code)]

/// Makes glibc serve allocations of 128 KiB and more straight from `mmap` and unmap them on
/// free, turning off its dynamic threshold. Without it, once a freed 1 MiB cache chunk has
/// raised the threshold, later chunks come from per-thread heaps that do not shrink, and a
/// daemon with a 32 MiB cache peaks at twice that. Call it early, before threads start.
pub fn release_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; it takes plain integers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Gives the free pages at the top of the heap and in every arena back to the system
/// (`malloc_trim`): after an upload, the index builder's many small allocations are free but
/// would otherwise stay in the daemon's resident memory.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it takes a plain integer.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The variable a process that re-executes itself ([`crate::holder::systemd`]'s upgrade in
/// place) names the descriptors it passes in: `PID;NAME=FD,NAME=FD`. Descriptor numbers are
/// given, not the `LISTEN_FDS` convention of consecutive numbers from 3: moving descriptors
/// into place before `exec` would need more `unsafe` than reading them where they are.
pub const PASSED_FDS_ENV: &str = "ADDONFS_PASSED_FDS";

static PASSED_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The descriptors passed to this process when it started, each with its name: by systemd
/// (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`, as `sd_listen_fds(3)` reads them: numbers
/// from 3 on) or by this program's own re-execution ([`PASSED_FDS_ENV`]). Only those meant for
/// this process (its pid is named) and open; each made close-on-exec. Taken once: later calls
/// return nothing, so no descriptor is ever owned twice.
pub fn take_passed_fds() -> Vec<(String, std::os::fd::OwnedFd)> {
    if PASSED_TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Vec::new();
    }
    let pid = std::process::id().to_string();
    let mut named: Vec<(String, i32)> = Vec::new();
    if std::env::var("LISTEN_PID").is_ok_and(|p| p == pid) {
        let count: i32 = std::env::var("LISTEN_FDS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
        let mut names = names.split(':');
        for fd in 3..3 + count.clamp(0, 64) {
            named.push((names.next().unwrap_or("unknown").to_string(), fd));
        }
    }
    let ours = std::env::var(PASSED_FDS_ENV).ok().and_then(|value| {
        let (of, list) = value.split_once(';')?;
        (of == pid).then(|| list.to_string())
    });
    for item in ours.iter().flat_map(|list| list.split(',')) {
        if let Some((name, Ok(fd))) = item.rsplit_once('=').map(|(n, fd)| (n, fd.parse::<i32>())) {
            named.push((name.to_string(), fd));
        }
    }
    let mut out: Vec<(String, std::os::fd::OwnedFd)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (name, fd) in named {
        // Standard input, output and error are never passed descriptors; none is owned twice.
        if fd < 3 || !seen.insert(fd) {
            continue;
        }
        // SAFETY: F_GETFD only reads the descriptor's flags; a number that is not open fails
        // with EBADF and is skipped.
        let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
        if !open {
            tracing::warn!(fd, name, "a passed descriptor is not open; ignored");
            continue;
        }
        // SAFETY: the descriptor is open (checked above) and was passed to this process for it
        // to own (the variables name this pid: systemd, or this program before its `exec`,
        // opened it for this process). Nothing else in the process knows its number, and the
        // flag above makes this the only place that ever takes it, once.
        let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let _ = rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC);
        out.push((name, owned));
    }
    out
}
