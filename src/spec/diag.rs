//! Diagnostics for experiment files: FILE:LINE:COL, the offending line with a caret, and help,
//! rendered like rustc (annotate-snippets). All errors of a file are collected in one pass.

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use std::io::IsTerminal;
use std::ops::Range;
use std::path::Path;

#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub message: String,
    /// Byte span in the file; `None` when the problem is not at one place.
    pub span: Option<Range<usize>>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn at(span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic { message: message.into(), span: Some(span), help: None }
    }
    pub fn global(message: impl Into<String>) -> Diagnostic {
        Diagnostic { message: message.into(), span: None, help: None }
    }
    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        let h = help.into();
        if !h.is_empty() {
            self.help = Some(h);
        }
        self
    }

    /// The span inside `text`, on character boundaries.
    fn span_in(&self, text: &str) -> Option<std::ops::Range<usize>> {
        let span = self.span.as_ref()?;
        let floor = |mut i: usize| {
            i = i.min(text.len());
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            i
        };
        let ceil = |mut i: usize| {
            i = i.min(text.len());
            while !text.is_char_boundary(i) {
                i += 1;
            }
            i
        };
        let start = floor(span.start);
        Some(start..ceil(span.end.max(start)))
    }

    /// 1-based line and column of the span start.
    pub fn line_col(&self, text: &str) -> Option<(usize, usize)> {
        let start = self.span_in(text)?.start;
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map(|i| before[i + 1..].chars().count()).unwrap_or(before.chars().count()) + 1;
        Some((line, col))
    }

    /// `FILE:LINE:COL: message` (one line, for logs and tests).
    pub fn short(&self, file: &Path, text: &str) -> String {
        match self.line_col(text) {
            Some((l, c)) => format!("{}:{l}:{c}: {}", file.display(), self.message),
            None => format!("{}: {}", file.display(), self.message),
        }
    }

    /// The full rustc-style rendering.
    pub fn render(&self, file: &Path, text: &str) -> String {
        let path = file.display().to_string();
        let mut title = Level::ERROR.primary_title(self.message.as_str());
        let group = match self.span_in(text) {
            Some(span) => {
                title.element(Snippet::source(text).path(path.as_str()).annotation(AnnotationKind::Primary.span(span)))
            }
            None => {
                title = Level::ERROR.primary_title(format!("{path}: {}", self.message));
                Group::with_title(title)
            }
        };
        let mut report = vec![group];
        if let Some(h) = &self.help {
            report.push(Group::with_title(Level::HELP.secondary_title(h.as_str())));
        }
        let renderer = if std::io::stderr().is_terminal() { Renderer::styled() } else { Renderer::plain() };
        renderer.render(&report).to_string()
    }
}

/// All diagnostics of one experiment, each rendered against the source it points into.
#[derive(Debug)]
pub struct Invalid {
    /// The experiment file.
    pub file: std::path::PathBuf,
    pub sources: super::source::Sources,
    pub diagnostics: Vec<Diagnostic>,
}

impl Invalid {
    /// Diagnostics of a file read on its own.
    pub fn of_file(file: &Path, text: &str, diagnostics: Vec<Diagnostic>) -> Invalid {
        Invalid { file: file.to_path_buf(), sources: super::source::Sources::single(file, text), diagnostics }
    }

    /// A diagnostic with its span made local to the source it points into, and that source.
    fn localised<'a>(&'a self, d: &Diagnostic) -> (std::path::PathBuf, &'a str, Diagnostic) {
        match d.span.as_ref().and_then(|s| self.sources.local(s)) {
            Some((source, text, span)) => (source.name.clone(), text, Diagnostic { span: Some(span), ..d.clone() }),
            None => (self.file.clone(), self.sources.main_text(), d.clone()),
        }
    }

    /// `SOURCE:LINE:COL: message` of one of its diagnostics.
    pub fn short(&self, d: &Diagnostic) -> String {
        let (name, text, d) = self.localised(d);
        d.short(&name, text)
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for d in &self.diagnostics {
            let (name, text, d) = self.localised(d);
            writeln!(f, "{}", d.render(&name, text))?;
        }
        let n = self.diagnostics.len();
        write!(f, "{} is invalid: {n} error{}", self.file.display(), if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for Invalid {}
