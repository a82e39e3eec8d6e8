//! Process tuning and facts: allocator thresholds, huge pages for large buffers, the default
//! SIGPIPE action, the machine's memory.

/// Keep freed large buffers in the process (glibc returns them to the OS by default, and every
/// forward pass then pays page faults to zero fresh pages).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called once at start-up.
    unsafe {
        // 32 MiB is the largest threshold glibc accepts on 64-bit systems.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Ask for transparent huge pages under a fresh allocation of at least 32 MiB, before anything
/// touches it: such buffers come straight from mmap, and a 200 MB logits buffer otherwise costs
/// ~50,000 page faults on every forward pass (the unembedding ran ~20% slower into a fresh buffer
/// than into a reused one). Harmless where the kernel refuses.
pub fn advise_huge_pages<T>(buf: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let (ptr, bytes) = (buf.as_ptr() as usize, buf.capacity() * std::mem::size_of::<T>());
        let (start, end) = (ptr.next_multiple_of(HUGE), (ptr + bytes) / HUGE * HUGE);
        if bytes >= 32 << 20 && end > start {
            // SAFETY: an advice on pages this Vec owns; it changes no contents.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
}

/// Die quietly on a closed pipe (`lantern hooks gpt2 | head`) like other command-line tools.
pub fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: restoring the default action of a signal.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Bytes of physical memory of this machine (0 when unknown).
pub fn physical_memory() -> u64 {
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads system constants.
        let (pages, size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
        if pages > 0 && size > 0 {
            return pages as u64 * size as u64;
        }
    }
    0
}
