//! Advisory locks on files (flock), released when the lock is dropped or its process dies: one per
//! store entry while it is computed, and one on the output folder (shared by runs, exclusive for
//! `gc`).

use anyhow::{Context, Result};
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// A held lock.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

#[derive(Clone, Copy)]
pub enum Mode {
    Shared,
    Exclusive,
}

impl FileLock {
    /// Wait for the lock.
    pub fn acquire(path: &Path, mode: Mode) -> Result<FileLock> {
        Ok(Self::take(path, mode, true)?.expect("a blocking lock is taken"))
    }

    /// The lock if nobody holds it in a conflicting mode, `None` otherwise.
    pub fn try_acquire(path: &Path, mode: Mode) -> Result<Option<FileLock>> {
        Self::take(path, mode, false)
    }

    fn take(path: &Path, mode: Mode, wait: bool) -> Result<Option<FileLock>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open the lock {}", path.display()))?;
        let op = match mode {
            Mode::Shared => libc::LOCK_SH,
            Mode::Exclusive => libc::LOCK_EX,
        } | if wait { 0 } else { libc::LOCK_NB };
        loop {
            // SAFETY: flock on a file descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(Some(FileLock { _file: file }));
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) if !wait => return Ok(None),
                _ => return Err(err).with_context(|| format!("cannot lock {}", path.display())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_and_shared_shares() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let a = FileLock::try_acquire(&p, Mode::Shared).unwrap().unwrap();
        let b = FileLock::try_acquire(&p, Mode::Shared).unwrap().unwrap();
        assert!(FileLock::try_acquire(&p, Mode::Exclusive).unwrap().is_none());
        drop((a, b));
        let x = FileLock::acquire(&p, Mode::Exclusive).unwrap();
        assert!(FileLock::try_acquire(&p, Mode::Shared).unwrap().is_none());
        drop(x);
        assert!(FileLock::try_acquire(&p, Mode::Exclusive).unwrap().is_some());
    }
}
