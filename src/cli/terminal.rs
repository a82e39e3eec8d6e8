//! The terminal front end of a run: a line per stage event, and each stage's progress as an
//! indicatif bar with throughput on a terminal, plain lines every ten seconds otherwise.

use indicatif::{ProgressBar, ProgressStyle};
use lantern::exec::events::At;
use lantern::exec::{Event, Observer};
use lantern::util::progress::{Bar, Reporter};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Stage lines and progress bars on stderr.
pub struct Terminal {
    interactive: bool,
}

impl Terminal {
    pub fn new() -> Terminal {
        Terminal { interactive: std::io::stderr().is_terminal() }
    }
}

impl Observer for Terminal {
    fn event(&self, at: &At, event: &Event) {
        let what = match event {
            Event::Planned(state) => state.to_string(),
            Event::Cached => "cached".into(),
            Event::Corrupt(why) => format!("artifact corrupt ({why}): recomputing"),
            Event::Waiting => "waiting for another lantern run that is computing it".into(),
            Event::Running => format!("running ({})", at.kind),
            Event::Done { seconds } => format!("done in {seconds:.1}s"),
            Event::Failed(e) => format!("failed: {e}"),
            Event::Skipped { failed_input } => format!("skipped (input '{failed_input}' failed)"),
            Event::Interrupted => "interrupted: its partial output was discarded".into(),
        };
        eprintln!("  {:<24} {what}", at.name);
    }

    fn reporter(&self) -> &dyn Reporter {
        self
    }
}

impl Reporter for Terminal {
    fn bar(&self, label: &str, total: u64, unit: &str) -> Box<dyn Bar> {
        if self.interactive {
            let b = ProgressBar::new(total);
            let template =
                format!("{{msg:>20}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} {{per_sec}} eta {{eta}}");
            let style = ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            b.set_style(style);
            b.set_message(label.to_string());
            Box::new(Interactive(b))
        } else {
            Box::new(Lines {
                label: label.to_string(),
                unit: unit.to_string(),
                started: Instant::now(),
                last: Instant::now(),
            })
        }
    }

    fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }

    fn note(&self, message: &str) {
        eprintln!("{message}");
    }
}

struct Interactive(ProgressBar);

impl Bar for Interactive {
    fn update(&mut self, done: u64, total: u64) {
        self.0.set_length(total);
        self.0.set_position(done);
    }
    fn message(&mut self, text: &str) {
        self.0.set_message(text.to_string());
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Plain progress lines for logs (no terminal).
struct Lines {
    label: String,
    unit: String,
    started: Instant,
    last: Instant,
}

impl Bar for Lines {
    fn update(&mut self, done: u64, total: u64) {
        if self.last.elapsed() > Duration::from_secs(10) {
            self.last = Instant::now();
            let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            eprintln!("  {}: {done}/{total} {} ({rate:.0} {}/s)", self.label, self.unit, self.unit);
        }
    }
}
