//! What a run tells its front end: an `Event` per stage (cached, running, done, failed…) with its
//! place in the run, through an `Observer` that also draws the stages' progress.

use crate::util::progress::{Reporter, Silent};

/// Which node an event is about: its place in the run (1-based), its name and kind.
pub struct At<'a> {
    pub index: usize,
    pub total: usize,
    pub name: &'a str,
    pub kind: &'a str,
}

/// What happened to a node.
pub enum Event<'a> {
    /// A dry run: the state it would start from (`cached`, `stale (…)`, `to run (…)`).
    Planned(&'a str),
    Cached,
    /// Its artifacts did not verify (why); it is recomputed.
    Corrupt(&'a str),
    /// Another lantern run is computing it: this one waits, then uses what it made.
    Waiting,
    Running,
    Done {
        seconds: f64,
    },
    Failed(&'a str),
    /// Failed on invalid input data (a dataset, labels or tokenizer file).
    Invalid(&'a str),
    Skipped {
        failed_input: &'a str,
    },
    /// Ctrl-C: its partial output was discarded.
    Interrupted,
}

/// A run's front end.
pub trait Observer {
    fn event(&self, at: &At, event: &Event);
    /// Where the stages' progress and warnings go.
    fn reporter(&self) -> &dyn Reporter;
}

/// An observer that shows nothing (tests, library use).
pub struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: &At, _: &Event) {}
    fn reporter(&self) -> &dyn Reporter {
        &Silent
    }
}
