//! The embedded font's metrics and outlines: text widths for fitting titles and labels, and the
//! SVG's text drawn as glyph outlines, so an SVG looks like its PNG without the font installed.
//! Each `<text>` plotters writes stays (transparent: search and copy still work) and gets the same
//! text beside it as `<use>` of glyph paths defined once, placed as plotters places it in the PNG.

use ab_glyph::{Font, FontRef, GlyphId, OutlineCurve, ScaleFont};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The font plots use.
pub fn font() -> FontRef<'static> {
    FontRef::try_from_slice(super::FONT).expect("the embedded font parses")
}

/// Width in pixels of `text` at plotters' font size `size` (as plotters lays it out).
pub fn width(text: &str, size: f64) -> f64 {
    let font = font();
    let scaled = font.as_scaled(size as f32);
    let mut w = 0.0f32;
    let mut prev: Option<GlyphId> = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            w += scaled.kern(p, id);
        }
        w += scaled.h_advance(id);
        prev = Some(id);
    }
    w as f64
}

/// A glyph's outline as SVG path data in font units (y up).
fn path_data(font: &FontRef, id: GlyphId) -> String {
    let Some(outline) = font.outline(id) else { return String::new() };
    let mut d = String::new();
    let mut end: Option<ab_glyph::Point> = None;
    for c in &outline.curves {
        let (start, last) = match c {
            OutlineCurve::Line(a, b) => (*a, *b),
            OutlineCurve::Quad(a, _, c) => (*a, *c),
            OutlineCurve::Cubic(a, _, _, d) => (*a, *d),
        };
        if end != Some(start) {
            if end.is_some() {
                d.push('Z');
            }
            let _ = write!(d, "M{} {}", start.x, start.y);
        }
        let _ = match c {
            OutlineCurve::Line(_, b) => write!(d, "L{} {}", b.x, b.y),
            OutlineCurve::Quad(_, b, c) => write!(d, "Q{} {} {} {}", b.x, b.y, c.x, c.y),
            OutlineCurve::Cubic(_, b, c, e) => write!(d, "C{} {} {} {} {} {}", b.x, b.y, c.x, c.y, e.x, e.y),
        };
        end = Some(last);
    }
    if end.is_some() {
        d.push('Z');
    }
    d
}

/// `name="value"` pairs of a start tag's inside.
fn attributes(tag: &str) -> BTreeMap<&str, &str> {
    let mut out = BTreeMap::new();
    let mut rest = tag;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim();
        let after = &rest[eq + 2..];
        let Some(close) = after.find('"') else { break };
        out.insert(name, &after[..close]);
        rest = &after[close + 1..];
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The SVG with every `<text>` also drawn as glyph outlines.
pub fn outline_texts(svg: &str) -> String {
    let font = font();
    let mut used: BTreeMap<u16, String> = BTreeMap::new();
    let mut out = String::with_capacity(svg.len() * 2);
    let mut rest = svg;
    while let Some(at) = rest.find("<text ") {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (Some(gt), Some(close)) = (tail.find('>'), tail.find("</text>")) else {
            out.push_str(tail);
            rest = "";
            break;
        };
        let element = &tail[..close + "</text>".len()];
        rest = &tail[close + "</text>".len()..];
        let attrs = attributes(&tail["<text ".len()..gt]);
        let text = unescape(tail[gt + 1..close].trim_matches('\n'));
        let num = |k: &str| attrs.get(k).and_then(|v| v.parse::<f64>().ok());
        let (Some(x), Some(y), Some(font_size)) = (num("x"), num("y"), num("font-size")) else {
            out.push_str(element);
            continue;
        };
        // plotters' size S is font-size × 1.24; its layout box is S / 1.24 high and the baseline
        // S / 2 below the box's top.
        let size = font_size * 1.24;
        let scaled = font.as_scaled(size as f32);
        let k = scaled.h_scale_factor() as f64;
        let w = width(&text, size);
        let x0 = match attrs.get("text-anchor").copied() {
            Some("middle") => x - w / 2.0,
            Some("end") => x - w,
            _ => x,
        };
        let top = match attrs.get("dy").copied() {
            Some("0.5ex") => y - font_size / 2.0,
            Some("-0.5ex") => y - font_size,
            _ => y,
        };
        let baseline = top + size / 2.0;
        let fill = attrs.get("fill").copied().unwrap_or("#000000");
        let opacity = attrs.get("opacity").copied().unwrap_or("1");
        out.push_str(&element.replacen(&format!("opacity=\"{opacity}\""), "opacity=\"0\"", 1));
        let _ = write!(out, "<g fill=\"{fill}\" opacity=\"{opacity}\"");
        if let Some(t) = attrs.get("transform") {
            let _ = write!(out, " transform=\"{t}\"");
        }
        out.push('>');
        let mut pen = x0;
        let mut prev: Option<GlyphId> = None;
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = prev {
                pen += scaled.kern(p, id) as f64;
            }
            if !c.is_whitespace() {
                used.entry(id.0).or_insert_with(|| path_data(&font, id));
                let _ = write!(
                    out,
                    "<use href=\"#g{}\" transform=\"translate({pen:.2} {baseline:.2}) scale({k:.5} -{k:.5})\"/>",
                    id.0
                );
            }
            pen += scaled.h_advance(id) as f64;
            prev = Some(id);
        }
        out.push_str("</g>");
    }
    out.push_str(rest);
    if used.is_empty() {
        return out;
    }
    let mut defs = String::from("<defs>");
    for (id, d) in &used {
        let _ = write!(defs, "<path id=\"g{id}\" d=\"{d}\"/>");
    }
    defs.push_str("</defs>");
    match out.find("<svg").and_then(|s| out[s..].find('>').map(|e| s + e + 1)) {
        Some(i) => format!("{}\n{defs}{}", &out[..i], &out[i..]),
        None => out,
    }
}
