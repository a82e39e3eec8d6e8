//! The texts an experiment is read from: its file, the files it includes and `--set` arguments,
//! joined into one text so that every position in the experiment is one byte range; a range is
//! traced back to its source for diagnostics.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// One source: a file, or a `--set` argument.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// The file, or the argument as written (`--set stages.acts.top_k=5`).
    pub name: PathBuf,
    /// Where its text starts in the joined text.
    pub base: usize,
    pub len: usize,
}

/// Every source of an experiment, joined.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sources {
    /// The sources' texts one after the other, each followed by a newline.
    pub text: String,
    pub parts: Vec<Source>,
}

impl Sources {
    /// One source.
    pub fn single(name: &Path, text: &str) -> Sources {
        let mut s = Sources::default();
        s.push(name, text);
        s
    }

    /// Add a source; returns where its text starts.
    pub fn push(&mut self, name: &Path, text: &str) -> usize {
        let base = self.text.len();
        self.text.push_str(text);
        self.text.push('\n');
        self.parts.push(Source { name: name.to_path_buf(), base, len: text.len() });
        base
    }

    /// The text of a source.
    pub fn text_of(&self, source: &Source) -> &str {
        &self.text[source.base..source.base + source.len]
    }

    /// The first source's text (the experiment file itself).
    pub fn main_text(&self) -> &str {
        self.parts.first().map(|s| self.text_of(s)).unwrap_or("")
    }

    /// The source a position lies in (the first when none does).
    pub fn source_at(&self, at: usize) -> Option<&Source> {
        self.parts.iter().rev().find(|s| s.base <= at).or(self.parts.first())
    }

    /// A range of the joined text as (its source, that source's text, the range inside it).
    pub fn local(&self, span: &Range<usize>) -> Option<(&Source, &str, Range<usize>)> {
        let s = self.source_at(span.start)?;
        let end = span.end.min(s.base + s.len).max(span.start);
        Some((s, self.text_of(s), span.start.saturating_sub(s.base)..end.saturating_sub(s.base)))
    }
}
