//! Cancellation: a flag that Ctrl-C sets and long work checks between units, and the error work
//! stops with when it is set.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// A cancellation token, cheap to clone; every clone sees the same flag.
#[derive(Clone, Debug, Default)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
    /// Test hook: fail once this many units of work have been counted.
    fail_after: Option<Arc<Budget>>,
}

#[derive(Debug)]
struct Budget {
    units: u64,
    done: AtomicU64,
}

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Ask the work to stop; returns whether it had been asked already.
    pub fn trigger(&self) -> bool {
        self.flag.swap(true, Ordering::SeqCst)
    }

    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// `Err(Interrupted)` once cancelled.
    pub fn check(&self) -> Result<(), Interrupted> {
        if self.is_cancelled() {
            Err(Interrupted)
        } else {
            Ok(())
        }
    }

    /// The same token, which also fails (as an injected error, not an interruption) once `units`
    /// units of work have been counted through it: how tests make a stage fail half-way.
    pub fn failing_after(&self, units: u64) -> Cancel {
        Cancel { flag: self.flag.clone(), fail_after: Some(Arc::new(Budget { units, done: AtomicU64::new(0) })) }
    }

    /// Count `n` units of finished work: an error when cancelled or when an injected failure is due.
    pub fn count(&self, n: u64) -> anyhow::Result<()> {
        self.check()?;
        if let Some(b) = &self.fail_after {
            let done = b.done.fetch_add(n, Ordering::SeqCst) + n;
            if done >= b.units {
                anyhow::bail!("injected failure after {done} units");
            }
        }
        Ok(())
    }
}

/// The error work returns when it was cancelled (Ctrl-C).
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;
