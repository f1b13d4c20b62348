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
