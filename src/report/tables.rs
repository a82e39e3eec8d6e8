//! A table of a stage in the report: its first rows in the order of the stage's ranking (the sort
//! said above it), numbers rounded, tokens readable, neuron ids linked to their pages, inside a box
//! that scrolls sideways when the table is wide; links to its Parquet and CSV files.

use super::pages::{parse_id, NeuronPages};
use crate::pages::{thousands, tokens};
use crate::stages::Ranking;
use maud::{html, Markup};
use polars::prelude::*;
use std::path::Path;

/// Rows shown per table.
pub const ROWS: usize = 10;

/// A cell's value as text: floats with 4 significant digits, strings readable.
fn cell(v: &AnyValue) -> String {
    match v {
        AnyValue::Null => String::new(),
        AnyValue::Float64(x) => num(*x),
        AnyValue::Float32(x) => num(*x as f64),
        AnyValue::String(s) => tokens::plain(s.as_bytes()),
        AnyValue::StringOwned(s) => tokens::plain(s.as_bytes()),
        other => other.to_string().trim_matches('"').to_string(),
    }
}

/// A number with 4 significant digits (scientific when very large or small).
pub fn num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if !(1e-3..1e6).contains(&a) {
        return format!("{x:.3e}");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The table `file` of stage `stage` (anchor `id`): the first rows by `ranking`, with links to
/// the files; neuron ids of `model` link to their pages.
pub fn render(
    stage: &str,
    table: &str,
    file: &Path,
    ranking: Option<Ranking>,
    model: Option<&str>,
    pages: &NeuronPages,
) -> Markup {
    let csv = file.with_extension("csv");
    let links = html! {
        a href={(stage) "/" (table) ".parquet"} { "Parquet" }
        @if csv.exists() { " · " a href={(stage) "/" (table) ".csv"} { "CSV" } }
    };
    let df = match crate::store::table::read(file) {
        Ok(df) => df,
        Err(e) => return html! { p.muted { "(unreadable: " (e.to_string()) ") " (links) } },
    };
    let ranking = ranking.filter(|r| df.column(r.column).is_ok());
    let sorted = match ranking {
        Some(r) => df
            .sort([r.column], SortMultipleOptions::default().with_order_descending(r.descending).with_nulls_last(true))
            .unwrap_or(df.clone()),
        None => df.clone(),
    };
    let head = sorted.head(Some(ROWS));
    let names: Vec<String> = head.get_column_names().iter().map(|s| s.to_string()).collect();
    let numeric = |c: &str| head.column(c).map(|c| c.dtype().is_primitive_numeric()).unwrap_or(false);
    // Tables of neurons without a `L1.N23` column get one, so each row can link to its page.
    let has_id_column = names.iter().any(|c| {
        head.column(c)
            .ok()
            .and_then(|c| c.str().ok().and_then(|s| s.iter().next().flatten().map(|v| parse_id(v).is_some())))
            == Some(true)
    });
    let ids: Option<Vec<(usize, usize)>> = (!has_id_column && numeric("layer") && numeric("neuron"))
        .then(|| {
            let get = |c: &str| -> Option<Vec<usize>> {
                let c = head.column(c).ok()?.cast(&DataType::UInt64).ok()?;
                c.u64().ok()?.into_iter().map(|v| v.map(|v| v as usize)).collect()
            };
            Some(get("layer")?.into_iter().zip(get("neuron")?).collect())
        })
        .flatten();
    let neuron = |text: &str| -> Markup {
        match parse_id(text).and_then(|k| pages.get(model, k)) {
            Some(href) => html! { a href=(href) { (text) } },
            None => html! { (text) },
        }
    };
    let order = match ranking {
        Some(r) => format!("sorted by {}, {}", r.column, if r.descending { "largest first" } else { "smallest first" }),
        None => "in the stage's order".to_string(),
    };
    html! {
        p.meta {
            (links) " · " (thousands(df.height())) " rows × " (df.width()) " columns · "
            @if df.height() > ROWS { "the first " (ROWS) " " }
            (order)
        }
        div.scroll {
            table {
                thead { tr {
                    @if ids.is_some() { th { "id" } }
                    @for c in &names { th.sorted[ranking.is_some_and(|r| r.column == c)] { (c) } }
                } }
                tbody {
                    @for i in 0..head.height() {
                        tr {
                            @if let Some(ids) = &ids { td { (neuron(&format!("L{}.N{}", ids[i].0, ids[i].1))) } }
                            @for c in head.columns() {
                                @let v = c.get(i).map(|v| cell(&v)).unwrap_or_default();
                                @if c.dtype().is_primitive_numeric() { td.num { (v) } }
                                @else { td { (neuron(&v)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use polars::prelude::*;

    #[test]
    fn an_empty_table_renders_as_no_rows() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.parquet");
        let mut df = df!("token_str" => Vec::<String>::new(), "value" => Vec::<f64>::new()).unwrap();
        crate::store::table::write(&file, &mut df).unwrap();
        let pages = super::NeuronPages::default();
        let html = super::render("s", "t", &file, None, None, &pages).into_string();
        assert!(html.contains("0 rows × 2 columns"), "{html}");
    }

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(super::num(3.9215689), "3.922");
        assert_eq!(super::num(-0.1960783), "-0.1961");
        assert_eq!(super::num(12345.678), "12346");
        assert_eq!(super::num(0.00001234), "1.234e-5");
    }
}
