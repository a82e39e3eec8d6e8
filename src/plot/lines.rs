//! Line plots (several series, by column or by group) and scatter plots (coloured by a numeric
//! column with a colour bar, or by category with a legend; point labels kept for the SVG).

use super::colormap::{categorical, sequential};
use super::common::{annotate, axis_value, chart, err, fmt_num, legend, padded};
use super::data::{distinct, f64s, few_integers, is_numeric, strs};
use super::{PlotKind, PlotSpec};
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

/// One series in axis coordinates, with its band (x, low, high) when the plot has one.
struct Series {
    name: String,
    pts: Vec<(f64, f64)>,
    band: Vec<(f64, f64, f64)>,
}

fn series<S>(spec: &PlotSpec<S>, df: &polars::prelude::DataFrame) -> Result<Vec<Series>> {
    let x: Vec<f64> =
        f64s(df, spec.x.as_deref().unwrap_or_default())?.into_iter().map(|v| axis_value(v, spec.log_x)).collect();
    let band = match &spec.band {
        Some([lo, hi]) => Some((f64s(df, lo)?, f64s(df, hi)?)),
        None => None,
    };
    let ys = spec.y.as_ref().map(|y| y.list()).unwrap_or_default();
    // Row indices of each series.
    let mut rows: Vec<(String, String, Vec<usize>)> = Vec::new();
    for yname in &ys {
        match &spec.group {
            Some(g) => {
                let groups = strs(df, g)?;
                for name in distinct(&groups) {
                    let fallback = if ys.len() > 1 { format!("{yname} {g}={name}") } else { format!("{g}={name}") };
                    let label = spec.legend_label(&name, fallback);
                    rows.push((label, yname.clone(), (0..groups.len()).filter(|&i| groups[i] == name).collect()));
                }
            }
            None => rows.push((spec.legend_label(yname, yname.clone()), yname.clone(), (0..x.len()).collect())),
        }
    }
    let mut out = Vec::new();
    for (name, yname, idx) in rows {
        let y: Vec<f64> = f64s(df, &yname)?.into_iter().map(|v| axis_value(v, spec.log_y)).collect();
        let mut pts: Vec<(f64, f64)> =
            idx.iter().map(|&i| (x[i], y[i])).filter(|(a, b)| a.is_finite() && b.is_finite()).collect();
        let mut band: Vec<(f64, f64, f64)> = match &band {
            Some((lo, hi)) => idx
                .iter()
                .map(|&i| (x[i], axis_value(lo[i], spec.log_y), axis_value(hi[i], spec.log_y)))
                .filter(|p| p.0.is_finite() && p.1.is_finite() && p.2.is_finite())
                .collect(),
            None => vec![],
        };
        if spec.kind == PlotKind::Line {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            band.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        out.push(Series { name, pts, band });
    }
    Ok(out)
}

pub fn draw<S, DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    spec: &PlotSpec<S>,
    df: &polars::prelude::DataFrame,
) -> Result<Vec<(i32, i32, String)>> {
    let color_values = match &spec.color {
        // Integers with few values (a layer, a class id) are categories, drawn with a legend.
        Some(c) if spec.kind == PlotKind::Scatter && is_numeric(df, c)? && !few_integers(&f64s(df, c)?, 12) => {
            Some((c.clone(), f64s(df, c)?))
        }
        _ => None,
    };
    let (main, bar) = if color_values.is_some() {
        root.split_horizontally(root.dim_in_pixel().0 as i32 - 100)
    } else {
        (root.clone(), root.margin(0, 0, 0, 0))
    };
    let all = series(spec, df)?;
    let xr = padded(
        all.iter()
            .flat_map(|s| s.pts.iter().map(|p| p.0))
            .chain(spec.annotations.iter().map(|a| axis_value(a.x, spec.log_x))),
    );
    let band_ys = all.iter().flat_map(|s| s.band.iter().flat_map(|b| [b.1, b.2]));
    let yr = padded(
        all.iter()
            .flat_map(|s| s.pts.iter().map(|p| p.1))
            .chain(band_ys)
            .chain(spec.annotations.iter().map(|a| axis_value(a.y, spec.log_y))),
    );
    let ys = spec.y.as_ref().map(|y| y.list().join(", ")).unwrap_or_default();
    let mut c = chart(&main, spec, xr, yr, spec.x.as_deref().unwrap_or(""), &ys)?;
    let mut tips = Vec::new();
    match spec.kind {
        PlotKind::Line => {
            for (i, Series { name, pts, band }) in all.iter().enumerate() {
                let col = categorical(i);
                if !band.is_empty() {
                    let outline: Vec<(f64, f64)> =
                        band.iter().map(|b| (b.0, b.1)).chain(band.iter().rev().map(|b| (b.0, b.2))).collect();
                    c.draw_series(std::iter::once(Polygon::new(outline, col.mix(0.18).filled()))).map_err(err)?;
                }
                c.draw_series(LineSeries::new(pts.iter().copied(), col.stroke_width(2)))
                    .map_err(err)?
                    .label(name.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(2)));
            }
            if all.len() > 1 {
                legend(&mut c)?;
            }
        }
        _ => {
            let labels = match &spec.label {
                Some(l) => Some(strs(df, l)?),
                None => None,
            };
            if let Some((cname, vals)) = &color_values {
                let r = padded(vals.iter().copied());
                let norm = |v: f64| (v - r.start) / (r.end - r.start);
                let x = f64s(df, spec.x.as_deref().unwrap_or_default())?;
                let y = f64s(df, &spec.y_one()?)?;
                let pts: Vec<((f64, f64), f64)> = x
                    .iter()
                    .zip(&y)
                    .zip(vals)
                    .map(|((a, b), v)| ((axis_value(*a, spec.log_x), axis_value(*b, spec.log_y)), *v))
                    .filter(|(p, _)| p.0.is_finite() && p.1.is_finite())
                    .collect();
                let pts = one_per_pixel(&c, pts, |x| x.0);
                c.draw_series(pts.iter().map(|(p, v)| Circle::new(*p, 4, sequential(norm(*v)).filled())))
                    .map_err(err)?;
                colour_bar(&bar, cname, r)?;
            } else if let Some(cat) = &spec.color {
                let cats = strs(df, cat)?;
                let x = f64s(df, spec.x.as_deref().unwrap_or_default())?;
                let y = f64s(df, &spec.y_one()?)?;
                let mut names = distinct(&cats);
                if is_numeric(df, cat)? {
                    names.sort_by(|a, b| a.parse::<f64>().unwrap_or(0.0).total_cmp(&b.parse::<f64>().unwrap_or(0.0)));
                }
                for (i, name) in names.iter().enumerate() {
                    let col = categorical(i);
                    let pts: Vec<(f64, f64)> = x
                        .iter()
                        .zip(&y)
                        .zip(&cats)
                        .filter(|(_, c)| *c == name)
                        .map(|((a, b), _)| (axis_value(*a, spec.log_x), axis_value(*b, spec.log_y)))
                        .collect();
                    let pts = one_per_pixel(&c, pts, |p| *p);
                    c.draw_series(pts.iter().map(|p| Circle::new(*p, 4, col.filled())))
                        .map_err(err)?
                        .label(spec.legend_label(name, format!("{cat}={name}")))
                        .legend(move |(x, y)| Circle::new((x + 8, y), 4, col.filled()));
                }
                legend(&mut c)?;
            } else {
                for (i, Series { name, pts, .. }) in all.iter().enumerate() {
                    let col = categorical(i);
                    let pts = one_per_pixel(&c, pts.clone(), |p| *p);
                    c.draw_series(pts.iter().map(|p| Circle::new(*p, 3, col.mix(0.8).filled())))
                        .map_err(err)?
                        .label(name.clone())
                        .legend(move |(x, y)| Circle::new((x + 8, y), 4, col.filled()));
                }
                if all.len() > 1 {
                    legend(&mut c)?;
                }
            }
            if let Some(labels) = labels {
                let x = f64s(df, spec.x.as_deref().unwrap_or_default())?;
                let y = f64s(df, &spec.y_one()?)?;
                for ((a, b), l) in x.iter().zip(&y).zip(labels) {
                    let p = (axis_value(*a, spec.log_x), axis_value(*b, spec.log_y));
                    if p.0.is_finite() && p.1.is_finite() {
                        let (px, py) = c.backend_coord(&p);
                        tips.push((px, py, format!("{l} ({}, {})", fmt_num(*a), fmt_num(*b))));
                    }
                }
            }
        }
    }
    annotate(&mut c, spec)?;
    Ok(tips)
}

/// The points of a series that land on distinct pixels (later ones drawn at the same pixel would
/// hide the earlier: the picture is the same, the SVG far smaller).
fn one_per_pixel<'a, DB: DrawingBackend + 'a, T>(
    c: &super::common::Chart<'a, DB>,
    pts: Vec<T>,
    at: impl Fn(&T) -> (f64, f64),
) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<T> = pts.into_iter().rev().filter(|p| seen.insert(c.backend_coord(&at(p)))).collect();
    kept.reverse();
    kept
}

/// A vertical colour bar for a sequential colour scale.
pub fn colour_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    name: &str,
    r: std::ops::Range<f64>,
) -> Result<()> {
    let mut c = ChartBuilder::on(area)
        .margin_top(40)
        .margin_bottom(60)
        .margin_right(10)
        .y_label_area_size(55)
        .caption(super::common::cut_to(name, area.dim_in_pixel().0 as f64 - 8.0, 13.0), ("sans-serif", 13))
        .build_cartesian_2d(0.0..1.0, r.clone())
        .map_err(err)?;
    c.configure_mesh()
        .disable_x_mesh()
        .disable_y_mesh()
        .disable_x_axis()
        .y_label_formatter(&|v| fmt_num(*v))
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(err)?;
    let steps = 100;
    let h = (r.end - r.start) / steps as f64;
    c.draw_series((0..steps).map(|i| {
        let lo = r.start + i as f64 * h;
        Rectangle::new([(0.0, lo), (1.0, lo + h)], sequential((i as f64 + 0.5) / steps as f64).filled())
    }))
    .map_err(err)?;
    Ok(())
}
