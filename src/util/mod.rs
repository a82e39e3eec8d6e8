//! The lowest layer, shared by every other: "did you mean" suggestions, cancellation, progress
//! reporting and process tuning.

pub mod cancel;
pub mod progress;
pub mod sys;

pub use cancel::{Cancel, Interrupted};
pub use progress::{Progress, Reporter};

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
