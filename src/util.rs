//! Small helpers shared across modules: "did you mean" suggestions, the machine's memory, allocator
//! tuning.

/// ", did you mean 'x'?" for the nearest candidate, or "" when none is close.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    nearest(word, candidates).map(|c| format!("; did you mean '{c}'?")).unwrap_or_default()
}

/// The candidate nearest to `word` by Jaro-Winkler similarity, if any is reasonably close.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(s, _)| *s > 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Keep freed large buffers in the process (glibc returns them to the OS by default, and every
/// forward pass then pays page faults to zero fresh pages).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
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
