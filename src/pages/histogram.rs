//! A histogram as inline SVG for HTML pages: labelled axes, tidy ticks, counts on a linear or a
//! logarithmic scale (a checkbox switches, no script), and shaded bands marking value ranges.

use maud::{html, Markup};

/// Bins (left, right, count), an x-axis label and bands to shade.
pub struct Histogram {
    pub bins: Vec<(f64, f64, u64)>,
    pub x_label: String,
    pub y_label: String,
    pub bands: Vec<Band>,
}

/// A value range shaded behind the bars, labelled at the top.
pub struct Band {
    pub lo: f64,
    pub hi: f64,
    pub label: String,
}

const W: f64 = 680.0;
const H: f64 = 250.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 46.0;

/// Round tick values covering [lo, hi], about `n` of them, and the decimals they need.
pub fn ticks(lo: f64, hi: f64, n: usize) -> (Vec<f64>, usize) {
    if hi <= lo || !lo.is_finite() || !hi.is_finite() {
        return (vec![lo], 0);
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    let values = (first..=last).map(|k| k as f64 * step).collect();
    // The fewest decimals that write the step exactly.
    let decimals =
        (0..10).find(|&d| ((step * 10f64.powi(d)).round() - step * 10f64.powi(d)).abs() < 1e-6).unwrap_or(10);
    (values, decimals as usize)
}

/// A tick label with `decimals` decimals (no `-0`).
pub fn tick_label(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
        "0".into()
    } else {
        s
    }
}

/// A count as a short label: 950, 12k, 3.4M.
fn count_label(c: f64) -> String {
    match c {
        c if c >= 1e6 => format!("{}M", tick_label(c / 1e6, usize::from(c < 1e7))),
        c if c >= 1e4 => format!("{}k", tick_label(c / 1e3, 0)),
        c => tick_label(c, 0),
    }
}

/// The histogram, linear counts shown and log counts a checkbox away; `id` must be unique on the
/// page.
pub fn render(h: &Histogram, id: &str) -> Markup {
    let bins: Vec<&(f64, f64, u64)> = h.bins.iter().filter(|b| b.0.is_finite() && b.1.is_finite()).collect();
    if bins.iter().all(|b| b.2 == 0) {
        return html! { p.muted { "(no values)" } };
    }
    html! {
        div.hist {
            input type="checkbox" id=(id);
            label for=(id) { " log counts" }
            br;
            (svg(h, &bins, false))
            (svg(h, &bins, true))
        }
    }
}

fn svg(h: &Histogram, bins: &[&(f64, f64, u64)], log: bool) -> Markup {
    let lo = bins.first().map(|b| b.0).unwrap_or(0.0);
    let hi = bins.last().map(|b| b.1).unwrap_or(1.0);
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 0.5, hi + 0.5) };
    let max = bins.iter().map(|b| b.2).max().unwrap_or(1).max(1) as f64;
    // Log axis: log10(count), its floor at 0.5 so a single count still shows.
    let (y_lo, y_hi) = if log { (0.5f64.log10(), (max * 1.3).log10()) } else { (0.0, max * 1.05) };
    let yv = |c: f64| if log { c.max(0.5).log10() } else { c };
    let x = |v: f64| LEFT + (v - lo) / (hi - lo) * (W - LEFT - RIGHT);
    let y = |c: f64| H - BOTTOM - (yv(c) - y_lo) / (y_hi - y_lo) * (H - TOP - BOTTOM);
    let (xt, xd) = ticks(lo, hi, 10);
    let yt: Vec<f64> =
        if log { (0..=max.log10().floor() as i32).map(|e| 10f64.powi(e)).collect() } else { ticks(0.0, max, 5).0 };
    let base = H - BOTTOM;
    html! {
        svg class=(if log { "log" } else { "lin" }) xmlns="http://www.w3.org/2000/svg" width=(W) height=(H) viewBox={"0 0 " (W) " " (H)} role="img" {
            title { (h.x_label) " histogram, " (if log { "log counts" } else { "counts" }) }
            @for (i, b) in h.bands.iter().enumerate() {
                @let (a, z) = (x(b.lo.max(lo)), x(b.hi.min(hi)));
                @if z > a {
                    rect x=(f(a)) y=(TOP) width=(f(z - a)) height=(f(base - TOP)) fill=(if i % 2 == 0 { "#fdf0dc" } else { "#e6f0fa" }) { title { (b.label) } }
                    text x=(f((a + z) / 2.0)) y=(TOP - 6.0) font-size="11" text-anchor="middle" fill="#556" { (b.label) }
                }
            }
            @for t in &yt {
                line x1=(LEFT) x2=(W - RIGHT) y1=(f(y(*t))) y2=(f(y(*t))) stroke="#e4e7ec" {}
                text x=(LEFT - 6.0) y=(f(y(*t) + 4.0)) font-size="11" text-anchor="end" fill="#333" { (count_label(*t)) }
            }
            @for b in bins.iter().filter(|b| b.2 > 0) {
                rect x=(f(x(b.0))) y=(f(y(b.2 as f64))) width=(f((x(b.1) - x(b.0) - 0.5).max(0.8))) height=(f(base - y(b.2 as f64))) fill="#1f77b4" {
                    title { "(" (tick_label(b.0, xd + 2)) ", " (tick_label(b.1, xd + 2)) "]: " (b.2) }
                }
            }
            line x1=(LEFT) x2=(W - RIGHT) y1=(base) y2=(base) stroke="#333" {}
            line x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(base) stroke="#333" {}
            @for t in &xt {
                line x1=(f(x(*t))) x2=(f(x(*t))) y1=(base) y2=(base + 5.0) stroke="#333" {}
                text x=(f(x(*t))) y=(base + 18.0) font-size="11" text-anchor="middle" fill="#333" { (tick_label(*t, xd)) }
            }
            text x=(f((LEFT + W - RIGHT) / 2.0)) y=(H - 8.0) font-size="12" text-anchor="middle" fill="#222" { (h.x_label) }
            text x="14" y=(f((TOP + base) / 2.0)) font-size="12" text-anchor="middle" fill="#222" transform={"rotate(-90 14 " (f((TOP + base) / 2.0)) ")"} {
                (h.y_label) @if log { " (log scale)" }
            }
        }
    }
}

/// A coordinate with one decimal.
fn f(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(-0.19607, 3.92157, 10), (vec![-0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5], 1));
        assert_eq!(ticks(0.0, 930.0, 5).0, vec![0.0, 200.0, 400.0, 600.0, 800.0]);
        assert_eq!(tick_label(-0.0, 1), "0");
        assert_eq!(count_label(12_500.0), "12k");
    }
}
