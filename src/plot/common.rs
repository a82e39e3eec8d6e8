//! Shared drawing pieces: titles and axis descriptions fitted to their room (measured with the
//! embedded font: shrunk, wrapped, cut), chart frames with readable ticks, log axes by transform,
//! padding, annotations, legends, error conversion.

use super::PlotSpec;
use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::ops::Range;

pub type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

pub fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e:?}")
}

/// `n` categorical segments (plotters' integer ranges include their end, so 0..n−1).
pub fn segments(n: usize) -> plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordi32> {
    (0..n.max(1) as i32 - 1).into_segmented()
}

/// A number as a short, readable tick label (rounding noise around zero shown as 0).
pub fn fmt_num(v: f64) -> String {
    if v.abs() < 1e-9 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// log10 for a log axis (non-positive values become NaN and are skipped).
pub fn axis_value(v: f64, log: bool) -> f64 {
    if !log {
        v
    } else if v > 0.0 {
        v.log10()
    } else {
        f64::NAN
    }
}

/// The range covering finite values, padded by 5% (a unit range around a single value).
pub fn padded(values: impl IntoIterator<Item = f64>) -> Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    if hi - lo < 1e-12 {
        return lo - 0.5..hi + 0.5;
    }
    let pad = (hi - lo) * 0.05;
    lo - pad..hi + pad
}

fn tick(v: f64, log: bool) -> String {
    if log {
        fmt_num(10f64.powf(v))
    } else {
        fmt_num(v)
    }
}

/// `s` cut to fit `room` pixels at `size`, ending in an ellipsis when something was cut.
pub fn cut_to(s: &str, room: f64, size: f64) -> String {
    if super::glyphs::width(s, size) <= room {
        return s.to_string();
    }
    let chars: Vec<char> = s.chars().collect();
    let mut keep = chars.len();
    while keep > 1 && super::glyphs::width(&format!("{}…", chars[..keep].iter().collect::<String>()), size) > room {
        keep -= 1;
    }
    format!("{}…", chars[..keep].iter().collect::<String>())
}

/// One line of text in `room` pixels: the largest size from `max` down to `min` that fits, else
/// cut at `min`.
pub fn fit_line(s: &str, room: f64, max: f64, min: f64) -> (String, f64) {
    let mut size = max;
    while size > min && super::glyphs::width(s, size) > room {
        size -= 1.0;
    }
    (cut_to(s, room, size), size)
}

/// Words greedily wrapped into lines of at most `room` pixels at `size`.
fn wrap_words(s: &str, room: f64, size: f64) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in s.split_whitespace() {
        match lines.last_mut() {
            Some(l) if super::glyphs::width(&format!("{l} {word}"), size) <= room => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// A title in `room` pixels: one line shrunk down to 18 px, else wrapped onto up to three lines
/// (from 22 px down to 14 px), else three lines at 14 px, the last cut.
pub fn fit_title(s: &str, room: f64) -> (Vec<String>, f64) {
    let (one, size) = fit_line(s, room, 22.0, 18.0);
    if one == s {
        return (vec![one], size);
    }
    for size in (14..=22).rev().map(f64::from) {
        let lines = wrap_words(s, room, size);
        if lines.len() <= 3 && lines.iter().all(|l| super::glyphs::width(l, size) <= room) {
            return (lines, size);
        }
    }
    let mut lines = wrap_words(s, room, 14.0);
    if lines.len() > 3 {
        let rest = lines[2..].join(" ");
        lines.truncate(2);
        lines.push(rest);
    }
    (lines.iter().map(|l| cut_to(l, room, 14.0)).collect(), 14.0)
}

/// Draw the title at the top of `root` (fitted to its width) and return the area below it.
pub fn titled<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: Option<&str>,
) -> Result<DrawingArea<DB, Shift>> {
    let Some(t) = title.filter(|t| !t.trim().is_empty()) else { return Ok(root.clone()) };
    let width = root.dim_in_pixel().0 as f64;
    let (lines, size) = fit_title(t, width - 36.0);
    let line_height = (size * 1.2).ceil() as i32;
    let style = ("sans-serif", size).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, l) in lines.iter().enumerate() {
        root.draw(&Text::new(l.clone(), (width as i32 / 2, 12 + i as i32 * line_height), style.clone()))
            .map_err(err)?;
    }
    Ok(root.split_vertically(12 + lines.len() as i32 * line_height).1)
}

/// Axis descriptions fitted to the axes' lengths (`x_room`, `y_room` pixels) at one size.
pub fn axis_descs(x: &str, y: &str, x_room: f64, y_room: f64) -> (String, String, f64) {
    let (_, xs) = fit_line(x, x_room, 16.0, 11.0);
    let (_, ys) = fit_line(y, y_room, 16.0, 11.0);
    let size = xs.min(ys);
    (cut_to(x, x_room, size), cut_to(y, y_room, size), size)
}

/// A chart with axis descriptions and a light mesh (the title is drawn by `titled`).
pub fn chart<'a, S, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    spec: &PlotSpec<S>,
    xr: Range<f64>,
    yr: Range<f64>,
    default_x: &str,
    default_y: &str,
) -> Result<Chart<'a, DB>> {
    let mut b = ChartBuilder::on(area);
    b.margin(18).x_label_area_size(48).y_label_area_size(72);
    let mut c = b.build_cartesian_2d(xr, yr).map_err(err)?;
    let (lx, ly) = (spec.log_x, spec.log_y);
    let xf = move |v: &f64| tick(*v, lx);
    let yf = move |v: &f64| tick(*v, ly);
    let (w, h) = c.plotting_area().dim_in_pixel();
    let (xd, yd, size) = axis_descs(
        &spec.x_label.clone().unwrap_or_else(|| default_x.to_string()),
        &spec.y_label.clone().unwrap_or_else(|| default_y.to_string()),
        w as f64,
        h as f64,
    );
    c.configure_mesh()
        .x_desc(xd)
        .y_desc(yd)
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", size))
        .light_line_style(RGBColor(248, 248, 248))
        .bold_line_style(RGBColor(222, 222, 222))
        .draw()
        .map_err(err)?;
    Ok(c)
}

/// Draw the spec's annotations: a small ring at the point and the text beside it.
pub fn annotate<'a, S, DB: DrawingBackend + 'a>(c: &mut Chart<'a, DB>, spec: &PlotSpec<S>) -> Result<()> {
    for a in &spec.annotations {
        let p = (axis_value(a.x, spec.log_x), axis_value(a.y, spec.log_y));
        let mark = EmptyElement::at(p)
            + Circle::new((0, 0), 7, BLACK.stroke_width(2))
            + Text::new(a.text.clone(), (10, -20), ("sans-serif", 15).into_font());
        c.draw_series([mark]).map_err(err)?;
    }
    Ok(())
}

/// The legend box, if any series were labelled.
pub fn legend<'a, DB: DrawingBackend + 'a>(c: &mut Chart<'a, DB>) -> Result<()> {
    c.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)
}
