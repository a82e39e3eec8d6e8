//! Progress of long work: the `Reporter` a front end implements (the binary draws bars), and the
//! `Progress` handle that work advances, which also checks for cancellation at every step.

use super::cancel::Cancel;

/// Where progress and warnings go. Library code never prints; it reports through this.
pub trait Reporter: Sync {
    /// A new progress display for `total` units (tokens, steps…) of work called `label`.
    fn bar(&self, label: &str, total: u64, unit: &str) -> Box<dyn Bar>;
    /// Something the user should know that is not an error.
    fn warn(&self, message: &str);
    /// Something the user may like to know (housekeeping, waiting).
    fn note(&self, message: &str);
}

/// One progress display; dropped when the work ends.
pub trait Bar: Send {
    fn update(&mut self, done: u64, total: u64);
    /// A short status shown beside the bar (a training loss…).
    fn message(&mut self, _text: &str) {}
}

/// A reporter that shows nothing (tests, library use).
pub struct Silent;

struct NoBar;

impl Bar for NoBar {
    fn update(&mut self, _: u64, _: u64) {}
}

impl Reporter for Silent {
    fn bar(&self, _: &str, _: u64, _: &str) -> Box<dyn Bar> {
        Box::new(NoBar)
    }
    fn warn(&self, _: &str) {}
    fn note(&self, _: &str) {}
}

/// The progress of one piece of work.
pub struct Progress {
    bar: Box<dyn Bar>,
    done: u64,
    total: u64,
    cancel: Cancel,
}

impl Progress {
    pub fn new(reporter: &dyn Reporter, label: &str, total: u64, unit: &str, cancel: Cancel) -> Progress {
        Progress { bar: reporter.bar(label, total, unit), done: 0, total, cancel }
    }

    /// Progress nobody watches, stopped by `cancel`.
    pub fn hidden(cancel: Cancel) -> Progress {
        Progress::new(&Silent, "", 0, "", cancel)
    }

    /// `n` more units done; an error when the work was cancelled (or an injected failure is due).
    pub fn tick(&mut self, n: u64) -> anyhow::Result<()> {
        self.done += n;
        self.bar.update(self.done, self.total);
        self.cancel.count(n)
    }

    /// Move the bar to `done` of `total` without checking for cancellation (for work that checks it
    /// itself, such as reading a file).
    pub fn show(&mut self, done: u64, total: u64) {
        (self.done, self.total) = (done, total);
        self.bar.update(done, total);
    }

    /// Change the total (when it becomes known while working).
    pub fn set_total(&mut self, total: u64) {
        self.total = total;
        self.bar.update(self.done, total);
    }

    /// Show a short status beside the bar.
    pub fn message(&mut self, text: &str) {
        self.bar.message(text);
    }

    pub fn done(&self) -> u64 {
        self.done
    }

    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }
}
