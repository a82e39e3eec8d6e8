//! Shared drawing pieces: chart frames with readable ticks, log axes by transform, padding,
//! annotations, error conversion.

use super::PlotSpec;
use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
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

/// A chart with title, axis descriptions and a light mesh.
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
    if let Some(t) = &spec.title {
        b.caption(t, ("sans-serif", 22));
    }
    let mut c = b.build_cartesian_2d(xr, yr).map_err(err)?;
    let (lx, ly) = (spec.log_x, spec.log_y);
    let xf = move |v: &f64| tick(*v, lx);
    let yf = move |v: &f64| tick(*v, ly);
    c.configure_mesh()
        .x_desc(spec.x_label.clone().unwrap_or_else(|| default_x.to_string()))
        .y_desc(spec.y_label.clone().unwrap_or_else(|| default_y.to_string()))
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
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
