//! The terminal front end of a run: a line per stage event (`[3/22] acts  done in 1.2s`), and each
//! stage's progress as an indicatif bar with its rate in human units on a terminal (a spinner
//! until the total is known), plain lines every ten seconds otherwise.

use indicatif::{HumanCount, ProgressBar, ProgressState, ProgressStyle};
use lantern::exec::events::At;
use lantern::exec::{Event, Observer};
use lantern::util::progress::{Bar, Reporter};
use std::fmt::Write;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Stage lines and progress bars on stderr.
pub struct Terminal {
    interactive: bool,
    started: Instant,
}

impl Terminal {
    pub fn new() -> Terminal {
        Terminal { interactive: std::io::stderr().is_terminal(), started: Instant::now() }
    }
}

/// `1.2s`, `3m05s`, `1h02m`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    match s as u64 {
        0..60 => format!("{s:.1}s"),
        60..3600 => format!("{}m{:02}s", s as u64 / 60, s as u64 % 60),
        h => format!("{}h{:02}m", h / 3600, h % 3600 / 60),
    }
}

/// A rate in human units: `850/s`, `12.3k/s`, `35.9M/s`.
fn rate(per_sec: f64) -> String {
    match per_sec {
        r if r >= 1e9 => format!("{:.1}G", r / 1e9),
        r if r >= 1e6 => format!("{:.1}M", r / 1e6),
        r if r >= 1e4 => format!("{:.1}k", r / 1e3),
        r if r >= 10.0 => format!("{r:.0}"),
        r => format!("{r:.2}"),
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
            Event::Done { seconds } => format!(
                "done in {} (elapsed {})",
                duration(Duration::from_secs_f64(*seconds)),
                duration(self.started.elapsed())
            ),
            Event::Failed(e) => format!("failed: {e}"),
            Event::Invalid(e) => format!("failed: invalid input data: {e}"),
            Event::Skipped { failed_input } => format!("skipped (input '{failed_input}' failed)"),
            Event::Interrupted => "interrupted: its partial output was discarded".into(),
        };
        let k = format!("[{}/{}]", at.index, at.total);
        eprintln!("{k:>9} {:<24} {what}", at.name);
    }

    fn reporter(&self) -> &dyn Reporter {
        self
    }
}

impl Reporter for Terminal {
    fn bar(&self, label: &str, total: u64, unit: &str) -> Box<dyn Bar> {
        if self.interactive {
            let b = ProgressBar::new(total);
            b.set_message(label.to_string());
            let mut bar = Interactive { bar: b, label: label.to_string(), unit: unit.to_string(), known: None };
            bar.restyle(total);
            Box::new(bar)
        } else {
            Box::new(Lines {
                label: label.to_string(),
                unit: unit.to_string(),
                started: Instant::now(),
                last: Instant::now(),
                message: String::new(),
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

struct Interactive {
    bar: ProgressBar,
    label: String,
    unit: String,
    /// Whether the bar shows a total (until it is known, a spinner); `None` before the first style.
    known: Option<bool>,
}

impl Interactive {
    fn restyle(&mut self, total: u64) {
        let known = total > 0;
        if self.known == Some(known) {
            return;
        }
        self.known = Some(known);
        let unit = &self.unit;
        let template = if known {
            format!("{{msg:>20}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} {{rate}} eta {{eta}}")
        } else {
            format!("{{msg:>20}} {{spinner}} {{human_pos}} {unit} {{rate}} {{elapsed}}")
        };
        let unit = unit.clone();
        let style = ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("rate", move |s: &ProgressState, w: &mut dyn Write| {
                let _ = write!(w, "{} {unit}/s", rate(s.per_sec()));
            })
            .progress_chars("=> ");
        self.bar.set_style(style);
    }
}

impl Bar for Interactive {
    fn update(&mut self, done: u64, total: u64) {
        self.restyle(total);
        self.bar.set_length(total);
        self.bar.set_position(done);
    }
    fn message(&mut self, text: &str) {
        self.bar.set_message(format!("{}: {text}", self.label));
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Plain progress lines for logs (no terminal).
struct Lines {
    label: String,
    unit: String,
    started: Instant,
    last: Instant,
    /// The latest status (a training loss), shown at the end of each line.
    message: String,
}

impl Bar for Lines {
    fn update(&mut self, done: u64, total: u64) {
        if self.last.elapsed() > Duration::from_secs(10) {
            self.last = Instant::now();
            let per_sec = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            let total = if total > 0 { format!("/{}", HumanCount(total)) } else { String::new() };
            let message = if self.message.is_empty() { String::new() } else { format!(", {}", self.message) };
            eprintln!(
                "  {}: {}{total} {} ({} {}/s{message})",
                self.label,
                HumanCount(done),
                self.unit,
                rate(per_sec),
                self.unit
            );
        }
    }
    fn message(&mut self, text: &str) {
        self.message = text.to_string();
    }
}
