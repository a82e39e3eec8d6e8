//! Histograms (raw values or precomputed bins, optionally overlaid by group, log counts), bar
//! charts (grouped, error bars) and box plots (a value grouped by a category, split by another).

use super::colormap::categorical;
use super::common::{annotate, axis_descs, chart, err, fmt_num, legend, padded};
use super::data::{distinct, f64s, fill_placeholders, strs};
use super::{PlotSpec, XAt};
use anyhow::{bail, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// (group name, bins as (left, right, count)).
type Hist = Vec<(String, Vec<(f64, f64, f64)>)>;

fn bins_of<S>(spec: &PlotSpec<S>, df: &polars::prelude::DataFrame) -> Result<Hist> {
    let groups = match &spec.group {
        Some(g) => strs(df, g)?,
        None => vec![String::new(); df.height()],
    };
    let names = distinct(&groups);
    if let Some(col) = &spec.column {
        let v = f64s(df, col)?;
        let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        if finite.is_empty() {
            bail!("column '{col}' has no finite values");
        }
        let [lo, hi] = spec.range.unwrap_or([
            finite.iter().copied().fold(f64::INFINITY, f64::min),
            finite.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        ]);
        let n = spec.bins.unwrap_or(50).max(1);
        let w = if hi > lo { (hi - lo) / n as f64 } else { 1.0 };
        return Ok(names
            .iter()
            .map(|name| {
                let mut counts = vec![0.0; n];
                for (x, g) in v.iter().zip(&groups) {
                    if g == name && x.is_finite() && *x >= lo && *x <= hi {
                        counts[(((x - lo) / w) as usize).min(n - 1)] += 1.0;
                    }
                }
                (
                    name.clone(),
                    counts.iter().enumerate().map(|(i, c)| (lo + i as f64 * w, lo + (i + 1) as f64 * w, *c)).collect(),
                )
            })
            .collect());
    }
    let (l, r, c) = (
        f64s(df, spec.left.as_deref().unwrap_or_default())?,
        f64s(df, spec.right.as_deref().unwrap_or_default())?,
        f64s(df, spec.count.as_deref().unwrap_or_default())?,
    );
    Ok(names
        .iter()
        .map(|name| {
            let bins = (0..l.len())
                .filter(|&i| &groups[i] == name && l[i].is_finite() && r[i].is_finite())
                .map(|i| (l[i], r[i], c[i]))
                .collect();
            (name.clone(), bins)
        })
        .collect())
}

/// The spec's vertical lines: (x, label).
fn x_lines<S>(spec: &PlotSpec<S>, df: &polars::prelude::DataFrame) -> Result<Vec<(f64, String)>> {
    spec.x_lines
        .iter()
        .map(|l| {
            let x = match &l.x {
                XAt::Value(v) => *v,
                XAt::Column(c) => {
                    let values: Vec<f64> = f64s(df, c)?.into_iter().filter(|v| v.is_finite()).collect();
                    match values.first() {
                        Some(v) if values.iter().all(|w| w == v) => *v,
                        Some(_) => bail!("x_lines: column '{c}' holds several values; a line needs one"),
                        None => bail!("x_lines: column '{c}' has no finite value"),
                    }
                }
            };
            Ok((x, fill_placeholders(&l.label, df)?))
        })
        .collect()
}

pub fn histogram<S, DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    spec: &PlotSpec<S>,
    df: &polars::prelude::DataFrame,
) -> Result<()> {
    let hist = bins_of(spec, df)?;
    let lines = x_lines(spec, df)?;
    let y = |c: f64| {
        if spec.log_y {
            if c > 0.0 {
                c.log10()
            } else {
                f64::NAN
            }
        } else {
            c
        }
    };
    let xr = padded(hist.iter().flat_map(|h| h.1.iter().flat_map(|b| [b.0, b.1])).chain(lines.iter().map(|l| l.0)));
    let ys: Vec<f64> = hist.iter().flat_map(|h| h.1.iter().map(|b| y(b.2))).collect();
    let floor = if spec.log_y {
        ys.iter().copied().filter(|v| v.is_finite()).fold(f64::INFINITY, f64::min).min(0.0) - 0.2
    } else {
        0.0
    };
    let top = ys.iter().copied().filter(|v| v.is_finite()).fold(f64::NEG_INFINITY, f64::max);
    let top = if top > floor { top } else { floor + 1.0 };
    let yr = floor..top + (top - floor) * 0.05;
    let y_end = yr.end;
    let xname = spec.column.clone().or(spec.left.clone()).unwrap_or_default();
    let mut c = chart(root, spec, xr, yr, &xname, spec.count.as_deref().unwrap_or("count"))?;
    let overlay = hist.len() > 1;
    for (i, (name, bins)) in hist.iter().enumerate() {
        let col = categorical(i);
        let style = if overlay { col.mix(0.45).filled() } else { col.mix(0.85).filled() };
        c.draw_series(
            bins.iter().filter(|b| y(b.2).is_finite()).map(|b| Rectangle::new([(b.0, floor), (b.1, y(b.2))], style)),
        )
        .map_err(err)?
        .label(spec.legend_label(name, name.clone()))
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], col.filled()));
    }
    let inks = [BLACK, RGBColor(200, 30, 45), RGBColor(25, 95, 200), RGBColor(110, 110, 110)];
    for (i, (x, label)) in lines.iter().enumerate() {
        let ink = inks[i % inks.len()];
        c.draw_series(DashedLineSeries::new([(*x, floor), (*x, y_end)], 9, 5, ink.stroke_width(2)))
            .map_err(err)?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], ink.stroke_width(2)));
    }
    if overlay || !lines.is_empty() {
        legend(&mut c)?;
    }
    annotate(&mut c, spec)
}

/// Category slots: `groups` bars per category and one empty slot between categories.
fn slot(cat: usize, group: usize, groups: usize) -> i32 {
    (cat * (groups + 1) + group) as i32
}

/// `s` cut to `keep` characters, the last one an ellipsis when something was cut.
fn shorten(s: &str, keep: usize) -> String {
    if s.chars().count() <= keep {
        return s.to_string();
    }
    s.chars().take(keep.saturating_sub(1)).chain(['…']).collect()
}

/// How the category labels of a bar or box plot fit: horizontal when they fit the room each
/// category has (cut to it), else vertical (up to 48 characters, in at most 40% of the height).
struct CategoryLabels {
    vertical: bool,
    keep: usize,
    /// Height of the label area below the axis, in pixels.
    area: u32,
}

impl CategoryLabels {
    fn new(dim: (u32, u32), cats: &[String]) -> CategoryLabels {
        let room = (dim.0 as usize).saturating_sub(110) / cats.len().max(1) / 7;
        let longest = cats.iter().map(|c| c.chars().count()).max().unwrap_or(0);
        let vertical = longest > room.max(3);
        let area = if vertical { (longest.min(48) as u32 * 7 + 24).min(dim.1 * 2 / 5) } else { 48 };
        let keep = if vertical { ((area - 24) / 7) as usize } else { room.clamp(3, 24) };
        CategoryLabels { vertical, keep, area }
    }

    /// Each category's label centred under its group: horizontal, or reading downwards.
    /// `span(k)` gives the pixel x range of category k's group and the axis' pixel y.
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        cats: &[String],
        span: impl Fn(usize) -> (i32, i32, i32),
    ) -> Result<()> {
        let font = ("sans-serif", 13).into_font();
        let style = if self.vertical {
            font.transform(FontTransform::Rotate90).color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center))
        } else {
            font.color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top))
        };
        for (k, cat) in cats.iter().enumerate() {
            let (x0, x1, y) = span(k);
            root.draw(&Text::new(shorten(cat, self.keep), ((x0 + x1) / 2, y + 8), style.clone())).map_err(err)?;
        }
        Ok(())
    }
}

pub fn bar<S, DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    spec: &PlotSpec<S>,
    df: &polars::prelude::DataFrame,
) -> Result<()> {
    let xname = spec.x.clone().unwrap_or_default();
    let cats_col = strs(df, &xname)?;
    let vals = f64s(df, &spec.y_one()?)?;
    let errs = match &spec.error {
        Some(e) => f64s(df, e)?,
        None => vec![0.0; vals.len()],
    };
    let groups_col = match &spec.group {
        Some(g) => strs(df, g)?,
        None => vec![String::new(); vals.len()],
    };
    let (cats, groups) = (distinct(&cats_col), distinct(&groups_col));
    let g = groups.len();
    let lo = vals.iter().zip(&errs).map(|(v, e)| v - e.abs()).fold(0.0f64, f64::min);
    let hi = vals.iter().zip(&errs).map(|(v, e)| v + e.abs()).fold(0.0f64, f64::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    // Grouped bars get room above the tallest bar for the legend (about 6% of the height a group).
    let room = if g > 1 { 0.08 + 0.06 * g as f64 } else { 0.08 };
    let yr = (lo - if lo < 0.0 { 0.05 * span } else { 0.0 })..(hi + room * span);
    let yr_start = yr.start;
    let labels = CategoryLabels::new(root.dim_in_pixel(), &cats);
    let mut b = ChartBuilder::on(root);
    b.margin(18).x_label_area_size(labels.area).y_label_area_size(72);
    let slots = (cats.len() * (g + 1)) as i32;
    let mut c = b.build_cartesian_2d(super::common::segments(slots as usize), yr).map_err(err)?;
    let (w, h) = c.plotting_area().dim_in_pixel();
    let (xd, yd, size) = axis_descs(
        &if labels.vertical { String::new() } else { spec.x_label.clone().unwrap_or(xname.clone()) },
        &spec.y_label.clone().unwrap_or_else(|| spec.y_one().unwrap_or_default()),
        w as f64,
        h as f64,
    );
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(slots as usize)
        .x_label_formatter(&|_| String::new())
        .y_label_formatter(&|v| fmt_num(*v))
        .x_label_style(("sans-serif", 13))
        .y_label_style(("sans-serif", 14))
        .x_desc(xd)
        .y_desc(yd)
        .axis_desc_style(("sans-serif", size))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    labels.draw(root, &cats, |k| {
        let (a, y) = c.backend_coord(&(SegmentValue::Exact(slot(k, 0, g)), yr_start));
        (a, c.backend_coord(&(SegmentValue::Exact(slot(k, g, g)), yr_start)).0, y)
    })?;
    for (gi, gname) in groups.iter().enumerate() {
        let col = categorical(gi);
        let rows: Vec<usize> = (0..vals.len()).filter(|&i| &groups_col[i] == gname).collect();
        let rect = |i: usize| {
            let s = slot(cats.iter().position(|c| *c == cats_col[i]).expect("category"), gi, g);
            Rectangle::new([(SegmentValue::Exact(s), 0.0), (SegmentValue::Exact(s + 1), vals[i])], col.filled())
        };
        let series = c.draw_series(rows.iter().map(|&i| rect(i))).map_err(err)?;
        if g > 1 {
            series
                .label(spec.legend_label(gname, gname.clone()))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], col.filled()));
        }
        if spec.error.is_some() {
            c.draw_series(rows.iter().map(|&i| {
                let s = slot(cats.iter().position(|c| *c == cats_col[i]).expect("category"), gi, g);
                ErrorBar::new_vertical(
                    SegmentValue::CenterOf(s),
                    vals[i] - errs[i].abs(),
                    vals[i],
                    vals[i] + errs[i].abs(),
                    BLACK.stroke_width(1),
                    8,
                )
            }))
            .map_err(err)?;
        }
    }
    if g > 1 {
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

pub fn boxes<S, DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    spec: &PlotSpec<S>,
    df: &polars::prelude::DataFrame,
) -> Result<()> {
    let xname = spec.x.clone().unwrap_or_default();
    let cats_col = strs(df, &xname)?;
    let yname = spec.y_one()?;
    let vals = f64s(df, &yname)?;
    let groups_col = match &spec.group {
        Some(gc) => strs(df, gc)?,
        None => vec![String::new(); vals.len()],
    };
    let (mut cats, groups) = (distinct(&cats_col), distinct(&groups_col));
    if let Ok(nums) = f64s(df, &xname) {
        if nums.iter().all(|v| v.is_finite()) {
            cats.sort_by(|a, b| a.parse::<f64>().unwrap_or(0.0).total_cmp(&b.parse::<f64>().unwrap_or(0.0)));
        }
    }
    let g = groups.len();
    let r = padded(vals.iter().copied());
    let yr = r.start as f32..r.end as f32;
    let y0 = yr.start;
    let labels = CategoryLabels::new(root.dim_in_pixel(), &cats);
    let mut b = ChartBuilder::on(root);
    b.margin(18).x_label_area_size(labels.area).y_label_area_size(72);
    let slots = (cats.len() * (g + 1)) as i32;
    let mut c = b.build_cartesian_2d(super::common::segments(slots as usize), yr).map_err(err)?;
    let (w, h) = c.plotting_area().dim_in_pixel();
    let (xd, yd, size) = axis_descs(
        &if labels.vertical { String::new() } else { spec.x_label.clone().unwrap_or(xname.clone()) },
        &spec.y_label.clone().unwrap_or(yname),
        w as f64,
        h as f64,
    );
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(slots as usize)
        .x_label_formatter(&|_| String::new())
        .y_label_formatter(&|v| fmt_num(*v as f64))
        .label_style(("sans-serif", 13))
        .x_desc(xd)
        .y_desc(yd)
        .axis_desc_style(("sans-serif", size))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    labels.draw(root, &cats, |k| {
        let (a, y) = c.backend_coord(&(SegmentValue::Exact(slot(k, 0, g)), y0));
        (a, c.backend_coord(&(SegmentValue::Exact(slot(k, g, g)), y0)).0, y)
    })?;
    let px = root.dim_in_pixel().0 as f64 / slots.max(1) as f64;
    for (gi, gname) in groups.iter().enumerate() {
        let col = categorical(gi);
        let mut boxes = Vec::new();
        for (ci, cat) in cats.iter().enumerate() {
            let v: Vec<f64> = (0..vals.len())
                .filter(|&i| &cats_col[i] == cat && &groups_col[i] == gname && vals[i].is_finite())
                .map(|i| vals[i])
                .collect();
            if v.is_empty() {
                continue;
            }
            let q = Quartiles::new(&v);
            boxes.push(
                Boxplot::new_vertical(SegmentValue::CenterOf(slot(ci, gi, g)), &q)
                    .width((px * 0.7).clamp(4.0, 60.0) as u32)
                    .style(col.stroke_width(2)),
            );
        }
        let series = c.draw_series(boxes).map_err(err)?;
        if g > 1 {
            series
                .label(spec.legend_label(gname, gname.clone()))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], col.filled()));
        }
    }
    if g > 1 {
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}
