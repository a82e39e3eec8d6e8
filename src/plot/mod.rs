//! Plots of tables (plotters), written as PNG and SVG with an embedded font (in the SVG, text is
//! also drawn as the font's glyph outlines): line, scatter, heatmap, histogram, bar and box plots,
//! with titles that wrap or shrink to fit, axis labels, legends and annotations.

mod bars;
pub mod colormap;
mod common;
mod data;
mod glyphs;
mod heatmap;
mod lines;
mod svg;

use anyhow::{anyhow, bail, Result};
use plotters::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub use data::{filtered as filter_rows, Filter};

/// Implementation version of rendering plots: part of the fingerprints of what it makes. Bump it
/// when a change here changes results (CONTRIBUTING.md).
pub const VERSION: u32 = 2;

/// The kinds of plot.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PlotKind {
    Line,
    Scatter,
    Heatmap,
    Histogram,
    Bar,
    Box,
}

/// One or several column names.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum Names {
    One(String),
    Many(Vec<String>),
}

impl Names {
    pub fn list(&self) -> Vec<String> {
        match self {
            Names::One(s) => vec![s.clone()],
            Names::Many(v) => v.clone(),
        }
    }
}

/// Text drawn at a point in data coordinates.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Annotation {
    pub x: f64,
    pub y: f64,
    pub text: String,
}

/// A vertical line across a histogram, named in the legend. `x` is a number or the name of a
/// column holding one value (a threshold a stage computed); `{column}` in the label is replaced
/// by that column's value.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct XLine {
    pub x: XAt,
    pub label: String,
}

/// Where an `XLine` stands.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum XAt {
    Value(f64),
    Column(String),
}

/// How to draw a table. Which fields a kind needs:
/// line: `x`, `y` (one or several), optional `group`, `band` (low and high columns shaded around
/// each series); scatter: `x`, `y`, optional `color`,
/// `label`; heatmap: `x`, `y`, `value`, optional `x_labels`, `y_labels`, `vmin`, `vmax`;
/// histogram: `column` (raw values, `bins`, `range`) or `left`, `right`, `count` (precomputed),
/// optional `group`, `x_lines`; bar: `x` (categories), `y` (values), optional `error`, `group`;
/// box: `y` (values) grouped by `x`, optionally split by `group`.
// `S` is where the table comes from (a stage reference in experiment files); the plot layer never
// reads it.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PlotSpec")]
pub struct PlotSpec<S = ()> {
    /// The stage whose table is plotted.
    pub input: S,
    /// Which table of that stage (default: its only table).
    #[serde(default)]
    pub table: Option<String>,
    pub kind: PlotKind,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<Names>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub column: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub color: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// Line plots: columns of a band's lower and upper edge, shaded around each series.
    #[serde(default)]
    pub band: Option<[String; 2]>,
    #[serde(default)]
    pub x_labels: Option<String>,
    #[serde(default)]
    pub y_labels: Option<String>,
    #[serde(default)]
    pub left: Option<String>,
    #[serde(default)]
    pub right: Option<String>,
    #[serde(default)]
    pub count: Option<String>,
    #[serde(default)]
    pub bins: Option<usize>,
    #[serde(default)]
    pub range: Option<[f64; 2]>,
    #[serde(default)]
    pub vmin: Option<f64>,
    #[serde(default)]
    pub vmax: Option<f64>,
    #[serde(default)]
    pub log_x: bool,
    #[serde(default)]
    pub log_y: bool,
    /// Keep only rows whose columns equal these values (`{ layer = 3, hook = "mlp.hook_post" }`).
    #[serde(default)]
    pub filter: Filter,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub x_label: Option<String>,
    #[serde(default)]
    pub y_label: Option<String>,
    #[serde(default = "default_width")]
    pub width: u32,
    #[serde(default = "default_height")]
    pub height: u32,
    #[serde(default)]
    pub annotations: Vec<Annotation>,
    /// Histograms: labelled vertical lines (thresholds): `[{ x = 0.5, label = "…" }]`.
    #[serde(default)]
    pub x_lines: Vec<XLine>,
    /// Legend labels for series, groups and categories: `{ acts_en = "English" }`.
    #[serde(default)]
    pub legend: std::collections::BTreeMap<String, String>,
}

fn default_width() -> u32 {
    800
}
fn default_height() -> u32 {
    500
}

impl<S> PlotSpec<S> {
    /// The fields this kind needs that are missing.
    pub fn missing(&self) -> Vec<&'static str> {
        let has = |o: bool, n: &'static str| (!o).then_some(n);
        let v = match self.kind {
            PlotKind::Line | PlotKind::Scatter | PlotKind::Bar | PlotKind::Box => {
                vec![has(self.x.is_some(), "x"), has(self.y.is_some(), "y")]
            }
            PlotKind::Heatmap => {
                vec![has(self.x.is_some(), "x"), has(self.y.is_some(), "y"), has(self.value.is_some(), "value")]
            }
            PlotKind::Histogram => {
                let raw = self.column.is_some();
                let pre = self.left.is_some() && self.right.is_some() && self.count.is_some();
                vec![has(raw || pre, "column (or left, right and count)")]
            }
        };
        v.into_iter().flatten().collect()
    }

    /// Every column the plot names, as (field, column, whether it must hold numbers): the data
    /// fields, the `filter` keys, the `{column}` placeholders of the title and the `x_lines`.
    pub fn columns(&self) -> Vec<(&'static str, &str, bool)> {
        let numeric_xy = matches!(self.kind, PlotKind::Line | PlotKind::Scatter);
        let numeric_y = !matches!(self.kind, PlotKind::Heatmap);
        let fields: [(&'static str, &Option<String>, bool); 12] = [
            ("x", &self.x, numeric_xy),
            ("value", &self.value, true),
            ("column", &self.column, true),
            ("group", &self.group, false),
            ("color", &self.color, false),
            ("label", &self.label, false),
            ("error", &self.error, true),
            ("x_labels", &self.x_labels, false),
            ("y_labels", &self.y_labels, false),
            ("left", &self.left, true),
            ("right", &self.right, true),
            ("count", &self.count, true),
        ];
        let mut out: Vec<(&'static str, &str, bool)> =
            fields.into_iter().filter_map(|(f, c, numeric)| c.as_deref().map(|c| (f, c, numeric))).collect();
        match &self.y {
            Some(Names::One(c)) => out.push(("y", c.as_str(), numeric_y)),
            Some(Names::Many(v)) => out.extend(v.iter().map(|c| ("y", c.as_str(), numeric_y))),
            None => {}
        }
        if let Some(band) = &self.band {
            out.extend(band.iter().map(|c| ("band", c.as_str(), true)));
        }
        out.extend(self.filter.keys().map(|k| ("filter", k.as_str(), false)));
        if let Some(t) = &self.title {
            out.extend(data::placeholders(t).into_iter().map(|c| ("title", c, false)));
        }
        for l in &self.x_lines {
            if let XAt::Column(c) = &l.x {
                out.push(("x_lines", c.as_str(), true));
            }
            out.extend(data::placeholders(&l.label).into_iter().map(|c| ("x_lines", c, false)));
        }
        out
    }

    /// What the spec asks that its kind does not draw.
    pub fn unsupported(&self) -> Option<String> {
        (!self.x_lines.is_empty() && self.kind != PlotKind::Histogram)
            .then(|| format!("a {:?} plot does not draw `x_lines` (histograms do)", self.kind))
    }

    /// The legend label of a series, group or category `value`: the `legend` map's, else
    /// `fallback`.
    pub fn legend_label(&self, value: &str, fallback: String) -> String {
        self.legend.get(value).cloned().unwrap_or(fallback)
    }

    pub fn y_one(&self) -> Result<String> {
        match &self.y {
            Some(Names::One(s)) => Ok(s.clone()),
            Some(Names::Many(v)) if v.len() == 1 => Ok(v[0].clone()),
            Some(_) => bail!("{:?} plots take one `y` column", self.kind),
            None => bail!("`y` is missing"),
        }
    }
}

pub(crate) static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Register the embedded font once (no system fonts needed).
fn fonts() -> Result<()> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE.get_or_init(|| {
        [FontStyle::Normal, FontStyle::Bold, FontStyle::Italic]
            .iter()
            .all(|s| plotters::style::register_font("sans-serif", *s, FONT).is_ok())
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the embedded font could not be loaded"))
    }
}

/// Render `df` as PNG and SVG (each written atomically).
pub fn render<S: Clone>(
    spec: &PlotSpec<S>,
    df: &polars::prelude::DataFrame,
    png: &Path,
    svg_path: &Path,
) -> Result<()> {
    fonts()?;
    let missing = spec.missing();
    if !missing.is_empty() {
        bail!("a {:?} plot needs {}", spec.kind, missing.join(", "));
    }
    if let Some(problem) = spec.unsupported() {
        bail!("{problem}");
    }
    let df = data::filtered(df, &spec.filter)?;
    if df.height() == 0 {
        bail!("no rows to plot{}", if spec.filter.is_empty() { "" } else { " after the filter" });
    }
    let filled;
    let spec = match &spec.title {
        Some(t) if t.contains('{') => {
            filled = PlotSpec { title: Some(data::fill_placeholders(t, &df)?), ..spec.clone() };
            &filled
        }
        _ => spec,
    };
    let size = (spec.width.max(200), spec.height.max(150));
    let png_tmp = png.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&png_tmp, size).into_drawing_area();
        draw(&root, spec, &df)?;
        root.present().map_err(|e| anyhow!("cannot write {}: {e:?}", png.display()))?;
    }
    std::fs::rename(&png_tmp, png)?;
    let mut text = String::new();
    let tips = {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        let tips = draw(&root, spec, &df)?;
        root.present().map_err(|e| anyhow!("cannot render SVG: {e:?}"))?;
        tips
    };
    let text = svg::add_tooltips(&glyphs::outline_texts(&text), &tips);
    crate::store::atomic::write(svg_path, text.as_bytes())
}

/// Draw on any backend; returns hover labels (pixel x, y, text) for the SVG.
fn draw<S, DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    spec: &PlotSpec<S>,
    df: &polars::prelude::DataFrame,
) -> Result<Vec<(i32, i32, String)>> {
    root.fill(&WHITE).map_err(common::err)?;
    let root = &common::titled(root, spec.title.as_deref())?;
    match spec.kind {
        PlotKind::Line | PlotKind::Scatter => lines::draw(root, spec, df),
        PlotKind::Heatmap => heatmap::draw(root, spec, df).map(|_| vec![]),
        PlotKind::Histogram => bars::histogram(root, spec, df).map(|_| vec![]),
        PlotKind::Bar => bars::bar(root, spec, df).map(|_| vec![]),
        PlotKind::Box => bars::boxes(root, spec, df).map(|_| vec![]),
    }
}
