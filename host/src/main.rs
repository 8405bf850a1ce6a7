//! The `ballast` binary: everything lives in the library's `cli` module.

fn main() {
    // Chunks and packs are buffers of 0.5-32 MiB. glibc raises its mmap threshold
    // after such buffers are freed and then keeps them in its heaps, where freed
    // memory is not returned to the system; a fixed threshold keeps them mmapped, so
    // the peak memory of a backup is what it holds, not what it once held.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
    // Like other command-line tools, end quietly when the reader of our output goes
    // away (`ballast ls ... | head`) instead of panicking on a broken pipe.
    // SAFETY: restoring the default disposition of SIGPIPE has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(ballast::cli::main());
}
