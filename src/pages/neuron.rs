//! Self-contained HTML neuron pages (no network): max-activating examples with every token coloured
//! by the neuron's activation (white → red, value on hover), the activation histogram, the tokens
//! the neuron promotes and suppresses, an index page, and pages colouring given texts.

use super::esc;
use std::fmt::Write;

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

pub const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d232a}main{max-width:1100px;margin:0 auto;padding:20px}
.tok{border:1px solid #ddd;border-radius:2px;padding:0 1px;margin:0 1px;white-space:pre;font-family:ui-monospace,monospace;font-size:13px}
.max{outline:2px solid #222}.ex{background:#fff;border:1px solid #dde;padding:6px 8px;margin:4px 0;line-height:1.9}.v{color:#667;font-size:12px;margin-right:8px}
table{border-collapse:collapse;font-size:13px;background:#fff}td,th{border:1px solid #dde;padding:2px 8px}th{background:#eef1f5}
.cols{display:flex;gap:24px;flex-wrap:wrap}h2{margin-top:28px}.muted{color:#667}";

/// One token span with its activation.
pub fn token(text: &str, v: f32, scale: Scale, is_max: bool) -> String {
    let shown = text.replace('\n', "⏎");
    format!(
        "<span class=\"tok{}\" style=\"background:{}\" title=\"{:.4}\">{}</span>",
        if is_max { " max" } else { "" },
        scale.color(v),
        v,
        esc(&shown)
    )
}

/// A histogram as inline SVG bars: (left, right, count).
pub fn histogram_svg(bins: &[(f32, f32, u64)], width: u32, height: u32) -> String {
    let Some(max) = bins.iter().map(|b| b.2).max().filter(|&m| m > 0) else {
        return "<p class=muted>(no values in range)</p>".into();
    };
    // Show the occupied range only.
    let first = bins.iter().position(|b| b.2 > 0).unwrap_or(0);
    let last = bins.iter().rposition(|b| b.2 > 0).unwrap_or(0);
    let bins = &bins[first..=last];
    let (lo, hi) = (bins.first().map(|b| b.0).unwrap_or(0.0), bins.last().map(|b| b.1).unwrap_or(1.0));
    let x = |v: f32| 30.0 + (v - lo) / (hi - lo).max(1e-9) * (width as f32 - 40.0);
    let y = |c: u64| (height as f32 - 20.0) * (1.0 - (c as f32 + 1.0).ln() / (max as f32 + 1.0).ln());
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\"><title>activation histogram (log counts)</title>");
    for b in bins.iter().filter(|b| b.2 > 0) {
        let _ = write!(s, "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#1f77b4\"><title>({}, {}]: {}</title></rect>", x(b.0), y(b.2), (x(b.1) - x(b.0)).max(1.0), height as f32 - 20.0 - y(b.2), b.0, b.1, b.2);
    }
    let _ = write!(s, "<text x=\"30\" y=\"{}\" font-size=\"11\">{lo}</text><text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{hi}</text></svg>", height - 4, width - 10, height - 4);
    s
}

/// One example: a window of (token text, activation) with the max position marked.
pub struct Example {
    pub value: f32,
    pub tokens: Vec<(String, f32)>,
    pub max_at: usize,
    pub label: String,
}

/// Everything shown on one neuron's page.
pub struct NeuronPage {
    pub title: String,
    pub summary: Vec<(String, String)>,
    pub examples: Vec<Example>,
    pub histogram: Vec<(f32, f32, u64)>,
    pub promoted: Vec<(String, f32)>,
    pub suppressed: Vec<(String, f32)>,
    pub scale: Scale,
}

fn token_table(title: &str, rows: &[(String, f32)]) -> String {
    let mut s = format!("<div><h3>{}</h3><table><tr><th>token</th><th>logit effect</th></tr>", esc(title));
    for (t, v) in rows {
        let _ = write!(s, "<tr><td><span class=tok>{}</span></td><td>{v:.3}</td></tr>", esc(t));
    }
    s + "</table></div>"
}

pub fn neuron_page(p: &NeuronPage) -> String {
    let mut s = format!("<!doctype html><html><head><meta charset=utf-8><title>{0}</title><style>{STYLE}</style></head><body><main><p><a href=\"index.html\">← all neurons</a></p><h1>{0}</h1><table>", esc(&p.title));
    for (k, v) in &p.summary {
        let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    s += "</table><h2>Activation histogram</h2>";
    s += &histogram_svg(&p.histogram, 640, 160);
    let _ = write!(s, "<h2>Top activating examples</h2><p class=muted>colour scale {:.3} (white) → {:.3} (red); the max token is outlined; hover for values</p>", p.scale.lo, p.scale.hi);
    let mix =
        crate::stats::labels::LabelMix::of(p.examples.iter().map(|e| e.label.as_str())).filter(|m| m.distinct > 1);
    // Several labels: one group per label, the most common first.
    let groups: Vec<Option<&str>> = match &mix {
        Some(m) => {
            let parts: Vec<String> = m.counts.iter().map(|(l, c)| format!("{} {c}", esc(l))).collect();
            let _ = write!(s, "<p>Labels of these examples: {} (entropy {:.2} bits)</p>", parts.join(" · "), m.entropy);
            m.counts.iter().map(|(l, _)| Some(l.as_str())).collect()
        }
        None => vec![None],
    };
    for g in groups {
        if let Some(l) = g {
            let _ = write!(s, "<h3>{}</h3>", esc(l));
        }
        for e in p.examples.iter().filter(|e| g.is_none_or(|l| e.label == l)) {
            let _ = write!(
                s,
                "<div class=ex><span class=v>{:.3}{}</span>",
                e.value,
                if e.label.is_empty() || g.is_some() { String::new() } else { format!(" · {}", esc(&e.label)) }
            );
            for (i, (t, v)) in e.tokens.iter().enumerate() {
                s += &token(t, *v, p.scale, i == e.max_at);
            }
            s += "</div>";
        }
    }
    if !p.promoted.is_empty() {
        s += "<h2>Output weights through the unembedding</h2><div class=cols>";
        s += &token_table("most promoted", &p.promoted);
        s += &token_table("most suppressed", &p.suppressed);
        s += "</div>";
    }
    s + "</main></body></html>\n"
}

/// The index: one row per neuron page.
pub fn index_page(title: &str, rows: &[(String, String, Vec<String>)], headers: &[&str], extra: &str) -> String {
    let mut s = format!("<!doctype html><html><head><meta charset=utf-8><title>{0}</title><style>{STYLE}</style></head><body><main><h1>{0}</h1>{extra}<table><tr><th>neuron</th>", esc(title));
    for h in headers {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s += "</tr>";
    for (name, href, cells) in rows {
        let _ = write!(s, "<tr><td><a href=\"{}\">{}</a></td>", esc(href), esc(name));
        for c in cells {
            let _ = write!(s, "<td>{}</td>", esc(c));
        }
        s += "</tr>";
    }
    s + "</table></main></body></html>\n"
}

/// Texts coloured token by token, one section per (text, neuron).
pub fn texts_page(title: &str, sections: &[(String, Vec<(String, f32)>)], scale: Scale) -> String {
    let mut s = format!("<!doctype html><html><head><meta charset=utf-8><title>{0}</title><style>{STYLE}</style></head><body><main><p><a href=\"index.html\">← all neurons</a></p><h1>{0}</h1>", esc(title));
    let _ =
        write!(s, "<p class=muted>colour scale {:.3} (white) → {:.3} (red); hover for values</p>", scale.lo, scale.hi);
    for (heading, toks) in sections {
        let _ = write!(s, "<h3>{}</h3><div class=ex>", esc(heading));
        for (t, v) in toks {
            s += &token(t, *v, scale, false);
        }
        s += "</div>";
    }
    s + "</main></body></html>\n"
}
