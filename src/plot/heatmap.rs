//! Heatmaps from long tables (x, y, value): a diverging colormap centred at 0 (limits ±max|value|,
//! or `vmin`/`vmax`), tick labels from label columns (e.g. `5 ' apple'`), a colour bar; row 0 on top.

use super::colormap::diverging;
use super::common::{axis_descs, err, fmt_num, segments};
use super::data::{f64s, strs};
use super::PlotSpec;
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;

/// Categories of an axis in order (numeric order when the column is numeric), with labels.
fn axis(
    df: &polars::prelude::DataFrame,
    col: &str,
    labels: Option<&str>,
) -> Result<(Vec<String>, Vec<usize>, Vec<String>)> {
    let keys = strs(df, col)?;
    let mut order: Vec<String> = super::data::distinct(&keys);
    if let Ok(nums) = f64s(df, col) {
        if nums.iter().all(|v| v.is_finite()) {
            let value: BTreeMap<&String, f64> = keys.iter().zip(nums).collect();
            order.sort_by(|a, b| value[a].total_cmp(&value[b]));
        }
    }
    let index: Vec<usize> = keys.iter().map(|k| order.iter().position(|o| o == k).expect("key in order")).collect();
    let names = match labels {
        Some(l) => {
            let ls = strs(df, l)?;
            order.iter().map(|o| keys.iter().position(|k| k == o).map(|i| ls[i].clone()).unwrap_or_default()).collect()
        }
        None => order.clone(),
    };
    Ok((order, index, names))
}

/// The colour of a value: t = v / L with L = max|v| (or linear between vmin and vmax).
pub fn color_of(v: f64, lo: f64, hi: f64) -> RGBColor {
    if hi <= lo {
        return diverging(0.0);
    }
    diverging(-1.0 + 2.0 * (v - lo) / (hi - lo))
}

/// The colour limits for a set of values.
pub fn limits<S>(spec: &PlotSpec<S>, values: &[f64]) -> (f64, f64) {
    let m = values.iter().filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs()));
    let m = if m == 0.0 { 1.0 } else { m };
    (spec.vmin.unwrap_or(-m), spec.vmax.unwrap_or(m))
}

pub fn draw<S, DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    spec: &PlotSpec<S>,
    df: &polars::prelude::DataFrame,
) -> Result<()> {
    let (xs, xi, xl) = axis(df, spec.x.as_deref().unwrap_or_default(), spec.x_labels.as_deref())?;
    let yname = spec.y_one()?;
    let (ys, yi, yl) = axis(df, &yname, spec.y_labels.as_deref())?;
    let values = f64s(df, spec.value.as_deref().unwrap_or_default())?;
    let (nx, ny) = (xs.len(), ys.len());
    let mut grid = vec![f64::NAN; nx * ny];
    for ((x, y), v) in xi.iter().zip(&yi).zip(&values) {
        grid[y * nx + x] = *v;
    }
    let (lo, hi) = limits(spec, &values);
    let (main, bar) = root.split_horizontally(root.dim_in_pixel().0 as i32 - 110);
    // Horizontal tick labels: every `step`-th one, so that they never overlap.
    let width = main.dim_in_pixel().0 as usize;
    let chars = xl.iter().map(|s| s.chars().count().min(14)).max().unwrap_or(1);
    let step = (nx * (chars * 7 + 8)).div_ceil(width.saturating_sub(120).max(1)).max(1);
    let mut b = ChartBuilder::on(&main);
    b.margin(18)
        .x_label_area_size(48)
        .y_label_area_size(20 + 8 * yl.iter().map(|s| s.chars().count()).max().unwrap_or(1).min(16) as u32);
    let mut c = b.build_cartesian_2d(segments(nx), segments(ny)).map_err(err)?;
    let xfmt = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) if (*i as usize) < nx && (*i as usize) % step == 0 => {
            xl[*i as usize].chars().take(14).collect()
        }
        _ => String::new(),
    };
    let yfmt = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) if (*i as usize) < ny => yl[ny - 1 - *i as usize].chars().take(16).collect(),
        _ => String::new(),
    };
    let (w, h) = c.plotting_area().dim_in_pixel();
    let (xd, yd, size) = axis_descs(
        &spec.x_label.clone().unwrap_or_else(|| spec.x.clone().unwrap_or_default()),
        &spec.y_label.clone().unwrap_or(yname),
        w as f64,
        h as f64,
    );
    c.configure_mesh()
        .disable_mesh()
        .x_labels(nx.min(40))
        .y_labels(ny.min(40))
        .x_label_formatter(&xfmt)
        .y_label_formatter(&yfmt)
        .x_label_style(("sans-serif", 12))
        .y_label_style(("sans-serif", 12))
        .x_desc(xd)
        .y_desc(yd)
        .axis_desc_style(("sans-serif", size))
        .draw()
        .map_err(err)?;
    c.draw_series((0..ny).flat_map(|y| (0..nx).map(move |x| (x, y))).map(|(x, y)| {
        let row = (ny - 1 - y) as i32;
        let v = grid[y * nx + x];
        let col = if v.is_nan() { RGBColor(190, 190, 190) } else { color_of(v, lo, hi) };
        Rectangle::new(
            [
                (SegmentValue::Exact(x as i32), SegmentValue::Exact(row)),
                (SegmentValue::Exact(x as i32 + 1), SegmentValue::Exact(row + 1)),
            ],
            col.filled(),
        )
    }))
    .map_err(err)?;
    colour_bar(&bar, spec.value.as_deref().unwrap_or(""), lo, hi)
}

fn colour_bar<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, name: &str, lo: f64, hi: f64) -> Result<()> {
    let mut c = ChartBuilder::on(area)
        .margin_top(45)
        .margin_bottom(60)
        .margin_right(12)
        .y_label_area_size(58)
        .caption(super::common::cut_to(name, area.dim_in_pixel().0 as f64 - 8.0, 13.0), ("sans-serif", 13))
        .build_cartesian_2d(0.0..1.0, lo..hi)
        .map_err(err)?;
    c.configure_mesh()
        .disable_x_mesh()
        .disable_y_mesh()
        .disable_x_axis()
        .y_label_formatter(&|v| fmt_num(*v))
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(err)?;
    let steps = 120;
    let h = (hi - lo) / steps as f64;
    c.draw_series((0..steps).map(|i| {
        let a = lo + i as f64 * h;
        Rectangle::new([(0.0, a), (1.0, a + h)], color_of(a + h / 2.0, lo, hi).filled())
    }))
    .map_err(err)?;
    Ok(())
}
