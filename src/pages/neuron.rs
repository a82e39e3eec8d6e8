//! Self-contained HTML neuron pages (no network), after Neuroscope and sae_vis: the neuron's
//! statistics, a labelled activation histogram with the sampled ranges marked, examples at several
//! activation levels with every token coloured by the activation (value on hover), the tokens the
//! neuron promotes and suppresses, related neurons; an index page sortable by the selection score,
//! and a page colouring given texts.

use super::histogram::{self, Histogram};
use super::tokens;
use super::{document, SORT_SCRIPT};
use maud::{html, Markup, PreEscaped};

/// The colour scale of token backgrounds.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub lo: f32,
    pub hi: f32,
}

impl Scale {
    /// Background of a value: white at `lo` (and below), red at `hi`.
    pub fn color(&self, v: f32) -> String {
        let t = if self.hi > self.lo { ((v - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0) } else { 0.0 };
        let c = (255.0 * (1.0 - t)).round() as u8;
        format!("rgb(255,{c},{c})")
    }
}

pub const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f6f7f9;color:#1d232a}
main{max-width:1280px;margin:0 auto;padding:20px}a{color:#1a5fb4}h1{margin:4px 0}h2{margin:22px 0 8px;font-size:19px}h3{margin:14px 0 6px;font-size:15px}
.tok{border:1px solid #e2e2e2;border-radius:2px;padding:0 1px;margin:0 1px;white-space:pre;font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:13px}
.sym{color:#8a8f98}.max{outline:2px solid #222}.ex{background:#fff;border:1px solid #dde;padding:5px 8px;margin:3px 0;line-height:1.9}
.v{display:inline-block;min-width:52px;color:#556;font-size:12px;margin-right:6px;font-variant-numeric:tabular-nums}.lab{color:#556;font-size:12px;margin-right:6px}
table{border-collapse:collapse;font-size:13px;background:#fff}td,th{border:1px solid #dde;padding:2px 8px;text-align:left}th{background:#eef1f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#667}.grid{display:grid;grid-template-columns:minmax(260px,330px) 1fr;gap:24px}
.side table{width:100%;margin-bottom:10px}@media(max-width:900px){.grid{grid-template-columns:1fr}}
.hist .log{display:none}.hist input:checked~.lin{display:none}.hist input:checked~.log{display:inline}.hist label{font-size:13px;color:#445}
table.sortable th{cursor:pointer}table.sortable th:hover{background:#e2e7ef}";

/// One token span: its text readable, its background the activation's colour, the value on hover.
pub fn token(bytes: &[u8], v: f32, scale: Scale, is_max: bool) -> Markup {
    html! {
        span.tok.max[is_max] style={"background:" (scale.color(v))} title=(format!("{v:.4}")) { (tokens::render(bytes)) }
    }
}

/// One example: a window of (token bytes, activation) with the max position marked.
pub struct Example {
    pub value: f32,
    pub tokens: Vec<(Vec<u8>, f32)>,
    pub max_at: usize,
    pub label: String,
}

/// Examples from one activation level: the top ones, or a sample from a range of values.
pub struct Section {
    pub title: String,
    pub note: String,
    pub examples: Vec<Example>,
}

/// Neurons related to this one (by weights or by correlation), linked when they have a page.
pub struct Related {
    pub title: String,
    pub value: String,
    /// (name, page, value)
    pub rows: Vec<(String, Option<String>, f64)>,
}

/// Everything shown on one neuron's page.
pub struct NeuronPage {
    /// `L1.N23`
    pub name: String,
    /// What was run: hook, model, dataset.
    pub subtitle: String,
    pub summary: Vec<(String, String)>,
    pub histogram: Histogram,
    pub sections: Vec<Section>,
    pub promoted: Vec<(Vec<u8>, f32)>,
    pub suppressed: Vec<(Vec<u8>, f32)>,
    pub related: Vec<Related>,
    pub scale: Scale,
}

fn token_table(title: &str, rows: &[(Vec<u8>, f32)]) -> Markup {
    html! {
        table {
            thead { tr { th { (title) } th { "logit effect" } } }
            tbody {
                @for (t, v) in rows {
                    tr { td { span.tok { (tokens::render(t)) } } td.num { (format!("{v:.3}")) } }
                }
            }
        }
    }
}

fn related_table(r: &Related) -> Markup {
    html! {
        table {
            thead { tr { th { (r.title) } th { (r.value) } } }
            tbody {
                @for (name, href, v) in &r.rows {
                    tr {
                        td { @if let Some(h) = href { a href=(h) { (name) } } @else { (name) } }
                        td.num { (format!("{v:.3}")) }
                    }
                }
            }
        }
    }
}

/// Examples, grouped by label (most common first) when they carry several.
fn examples(list: &[Example], scale: Scale) -> Markup {
    let mix = crate::stats::labels::LabelMix::of(list.iter().map(|e| e.label.as_str())).filter(|m| m.distinct > 1);
    let groups: Vec<Option<&str>> = match &mix {
        Some(m) => m.counts.iter().map(|(l, _)| Some(l.as_str())).collect(),
        None => vec![None],
    };
    html! {
        @if let Some(m) = &mix {
            p.muted {
                "labels: "
                @for (i, (l, c)) in m.counts.iter().enumerate() { @if i > 0 { " · " } (l) " " (c) }
                " (entropy " (format!("{:.2}", m.entropy)) " bits)"
            }
        }
        @for g in groups {
            @if let Some(l) = g { h3 { (l) } }
            @for e in list.iter().filter(|e| g.is_none_or(|l| e.label == l)) {
                div.ex {
                    span.v { (format!("{:.3}", e.value)) }
                    @if g.is_none() && !e.label.is_empty() { span.lab { (e.label) } }
                    @for (i, (t, v)) in e.tokens.iter().enumerate() { (token(t, *v, scale, i == e.max_at)) }
                }
            }
        }
    }
}

pub fn neuron_page(p: &NeuronPage) -> String {
    let body = html! {
        main {
            p { a href="index.html" { "← all neurons" } }
            h1 { (p.name) }
            p.muted { (p.subtitle) }
            div.grid {
                div.side {
                    table { tbody { @for (k, v) in &p.summary { tr { th { (k) } td.num { (v) } } } } }
                    @if !p.promoted.is_empty() {
                        h2 { "Output weights through the unembedding" }
                        (token_table("most promoted", &p.promoted))
                        (token_table("most suppressed", &p.suppressed))
                    }
                    @if !p.related.is_empty() {
                        h2 { "Related neurons" }
                        @for r in &p.related { (related_table(r)) }
                    }
                }
                div {
                    h2 { "Activation histogram" }
                    (histogram::render(&p.histogram, "log-counts"))
                    p.muted {
                        "Token colour: " (format!("{:.3}", p.scale.lo)) " (white) → " (format!("{:.3}", p.scale.hi))
                        " (red); the example's token is outlined; hover a token for its value."
                    }
                    @for s in &p.sections {
                        h2 { (s.title) }
                        @if !s.note.is_empty() { p.muted { (s.note) } }
                        (examples(&s.examples, p.scale))
                    }
                }
            }
        }
    };
    document(&p.name, STYLE, body).into_string()
}

/// One row of the index: a neuron, its page, the score that selected it and its statistics.
pub struct IndexRow {
    pub name: String,
    pub href: String,
    pub score: Option<f64>,
    pub cells: Vec<String>,
}

/// The index of a viewer's pages.
pub struct Index {
    pub title: String,
    pub subtitle: String,
    /// The column the neurons were selected by (`d`, largest first …), when they were.
    pub score: Option<String>,
    pub headers: Vec<String>,
    pub rows: Vec<IndexRow>,
    pub texts: Option<String>,
}

pub fn index_page(ix: &Index) -> String {
    let body = html! {
        main {
            h1 { (ix.title) }
            p.muted { (ix.subtitle) }
            @if let Some(t) = &ix.texts { p { a href=(t) { "Texts coloured by these neurons" } } }
            p.muted { "Click a column to sort by it." }
            table.sortable {
                thead {
                    tr {
                        th { "neuron" }
                        @if let Some(s) = &ix.score { th { (s) } }
                        @for h in &ix.headers { th { (h) } }
                    }
                }
                tbody {
                    @for r in &ix.rows {
                        tr {
                            td data-v=(r.name) { a href=(r.href) { (r.name) } }
                            @if ix.score.is_some() { td.num { (r.score.map(|s| format!("{s:.4}")).unwrap_or_default()) } }
                            @for c in &r.cells { td.num { (c) } }
                        }
                    }
                }
            }
            script { (PreEscaped(SORT_SCRIPT)) }
        }
    };
    document(&ix.title, STYLE, body).into_string()
}

/// Texts coloured token by token, one section per (text, neuron).
pub fn texts_page(title: &str, sections: &[(String, Vec<(Vec<u8>, f32)>)], scale: Scale) -> String {
    let body = html! {
        main {
            p { a href="index.html" { "← all neurons" } }
            h1 { (title) }
            p.muted { "Colour scale " (format!("{:.3}", scale.lo)) " (white) → " (format!("{:.3}", scale.hi)) " (red); hover a token for its value." }
            @for (heading, toks) in sections {
                h3 { (heading) }
                div.ex { @for (t, v) in toks { (token(t, *v, scale, false)) } }
            }
        }
    };
    document(title, STYLE, body).into_string()
}
