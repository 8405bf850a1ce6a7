//! The `ballast` binary: everything lives in the library's `cli` module.

fn main() {
    // Chunks are 0.5-4 MiB, chunking windows and packs 8-33 MiB. glibc raises its
    // mmap threshold after large buffers are freed and then keeps even 32 MiB packs
    // in its heaps, which never shrink: peak memory grew with time. A fixed threshold
    // above the usual chunk keeps chunks in reusable heap memory (no page faults per
    // chunk) and windows and packs mmapped, returned to the system when freed.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 * 1024 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
    // Like other command-line tools, end quietly when the reader of our output goes
    // away (`ballast ls ... | head`) instead of panicking on a broken pipe.
    // SAFETY: restoring the default disposition of SIGPIPE has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(ballast::cli::main());
}
