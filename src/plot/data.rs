//! Reading plot columns from a table: numbers, labels, row filters; errors name the column and
//! the nearest existing one.

use anyhow::{anyhow, Result};
use polars::prelude::*;
use std::collections::BTreeMap;

/// Equality filters on columns (`{ layer = 3, hook = "mlp.hook_post" }`).
pub type Filter = BTreeMap<String, serde_json::Value>;

fn column<'a>(df: &'a DataFrame, name: &str) -> Result<&'a Column> {
    df.column(name).map_err(|_| {
        let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
        anyhow!(
            "the table has no column '{name}'{} (columns: {})",
            crate::util::did_you_mean(name, names.iter().map(|s| s.as_str())),
            names.join(", ")
        )
    })
}

/// A column as numbers (NaN for nulls); booleans are 0/1.
pub fn f64s(df: &DataFrame, name: &str) -> Result<Vec<f64>> {
    let c = column(df, name)?;
    let c = if c.dtype() == &DataType::Boolean { c.cast(&DataType::UInt8)? } else { c.clone() };
    let c = c.cast(&DataType::Float64).map_err(|_| anyhow!("column '{name}' is not numeric ({})", c.dtype()))?;
    Ok(c.f64()?.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

/// A column as text labels.
pub fn strs(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    let c = column(df, name)?.cast(&DataType::String)?;
    Ok(c.str()?.into_iter().map(|v| v.unwrap_or("").to_string()).collect())
}

/// A column as text for reading: floats rounded as tick labels are, anything else as `strs`.
fn labels(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    if column(df, name)?.dtype().is_float() {
        return Ok(f64s(df, name)?.into_iter().map(super::common::fmt_num).collect());
    }
    strs(df, name)
}

/// Whether a column is numeric.
pub fn is_numeric(df: &DataFrame, name: &str) -> Result<bool> {
    Ok(column(df, name)?.dtype().is_primitive_numeric())
}

/// Rows whose columns equal the filter's values.
pub fn filtered(df: &DataFrame, filter: &Filter) -> Result<DataFrame> {
    let mut keep = vec![true; df.height()];
    for (col, want) in filter {
        let matches: Vec<bool> = match want {
            serde_json::Value::Number(n) => f64s(df, col)?.iter().map(|v| Some(*v) == n.as_f64()).collect(),
            serde_json::Value::Bool(b) => f64s(df, col)?.iter().map(|v| (*v != 0.0) == *b).collect(),
            serde_json::Value::String(s) => strs(df, col)?.iter().map(|v| v == s).collect(),
            other => return Err(anyhow!("filter on '{col}': use a number, a string or a boolean, not {other}")),
        };
        for (k, m) in keep.iter_mut().zip(matches) {
            *k &= m;
        }
    }
    let mask = BooleanChunked::from_slice("keep".into(), &keep);
    Ok(df.filter(&mask)?)
}

/// Distinct values in first-appearance order.
pub fn distinct(v: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in v {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

/// A title split at its `{column}` placeholders: (text before, column) pairs and the text after
/// the last one.
fn placeholder_parts(title: &str) -> (Vec<(&str, &str)>, &str) {
    let mut parts = Vec::new();
    let mut rest = title;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else { break };
        parts.push((&rest[..open], &rest[open + 1..open + close]));
        rest = &rest[open + close + 1..];
    }
    (parts, rest)
}

/// The columns a title names in braces.
pub fn placeholders(title: &str) -> Vec<&str> {
    placeholder_parts(title).0.into_iter().map(|(_, name)| name).collect()
}

/// `{column}` in a title replaced by the column's value (its distinct values joined with ", ",
/// the first three then "…", when it has several; fractional numbers rounded for reading).
pub fn fill_placeholders(title: &str, df: &DataFrame) -> Result<String> {
    let (parts, last) = placeholder_parts(title);
    let mut out = String::new();
    for (before, name) in parts {
        out.push_str(before);
        let values = distinct(&labels(df, name)?);
        out.push_str(&values.iter().take(3).cloned().collect::<Vec<_>>().join(", "));
        if values.len() > 3 {
            out.push_str(", …");
        }
    }
    out.push_str(last);
    Ok(out)
}

/// Whether numbers are integers with at most `max` distinct values (drawn as categories).
pub fn few_integers(values: &[f64], max: usize) -> bool {
    let mut seen: Vec<f64> = Vec::new();
    for v in values.iter().filter(|v| v.is_finite()) {
        if v.fract() != 0.0 {
            return false;
        }
        if !seen.contains(v) {
            if seen.len() == max {
                return false;
            }
            seen.push(*v);
        }
    }
    !seen.is_empty()
}
