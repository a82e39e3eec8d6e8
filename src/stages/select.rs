//! Choosing neurons: a list (`["L1.N23", "0.5"]`) or the top rows of another stage's table
//! (`{ from = "german", n = 10, by = "d", filter = { layer = 1 } }`).

use super::CheckCx;
use crate::model::hooks::parse_neuron;
use crate::plot::Filter;
use crate::spec::{Diagnostic, StageRef};
use anyhow::{bail, Context, Result};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The top rows of a table with `layer` and `neuron` columns.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopNeurons {
    pub from: StageRef,
    /// Which table of that stage (default: its only table).
    #[serde(default)]
    pub table: Option<String>,
    pub n: usize,
    /// Sort by this column, largest first (default: the table's order).
    #[serde(default)]
    pub by: Option<String>,
    /// Smallest first instead.
    #[serde(default)]
    pub lowest: bool,
    #[serde(default)]
    pub filter: Filter,
}

impl TopNeurons {
    /// Check the table and columns it names against the source stage's declarations.
    pub fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        let Some(decl) = cx.table_of(&self.from, self.table.as_deref(), "table", out) else { return };
        let stage = self.from.name();
        for c in ["layer", "neuron"] {
            if decl.column(c).is_none() && !decl.open {
                out.push(Diagnostic::at(
                    self.from.span(),
                    format!("{stage}.{} has no `{c}` column; `top` reads neurons from a table with layer and neuron columns", decl.name),
                ));
            }
        }
        if let Some(by) = &self.by {
            cx.column(stage, &decl, "by", by, true, out);
        }
        for k in self.filter.keys() {
            cx.column(stage, &decl, k, k, false, out);
        }
    }

    /// The table it reads from the source stage's artifact folder `dir`.
    pub fn table_in(&self, dir: &Path) -> Result<String> {
        let tables = crate::store::table::tables_in(dir);
        self.table.clone().or_else(|| tables.first().cloned()).context("the source stage wrote no table")
    }

    /// `column` of each neuron of the table it reads (for showing the score that selected them).
    pub fn scores(&self, dir: &Path, column: &str) -> Result<std::collections::HashMap<(usize, usize), f64>> {
        let df = crate::store::table::read(&dir.join(format!("{}.parquet", self.table_in(dir)?)))?;
        let get = |c: &str| -> Result<Vec<Option<f64>>> {
            let col = df.column(c).with_context(|| format!("the table has no `{c}` column"))?;
            Ok(col.cast(&DataType::Float64)?.f64()?.into_iter().collect())
        };
        let (layer, neuron, score) = (get("layer")?, get("neuron")?, get(column)?);
        Ok((0..df.height()).filter_map(|i| Some(((layer[i]? as usize, neuron[i]? as usize), score[i]?))).collect())
    }
}

/// Neurons given by name or chosen from a table (exactly one of the two).
#[derive(Clone, Debug)]
pub enum Neurons<'a> {
    /// `"L1.N23"` or `"1.23"` (layer.neuron).
    List(&'a [String]),
    Top(&'a TopNeurons),
}

impl<'a> Neurons<'a> {
    /// From a stage's `neurons` and `top` fields; `None` unless exactly one is given.
    pub fn of(list: &'a Option<Vec<String>>, top: &'a Option<TopNeurons>) -> Option<Neurons<'a>> {
        match (list, top) {
            (Some(l), None) => Some(Neurons::List(l)),
            (None, Some(t)) => Some(Neurons::Top(t)),
            _ => None,
        }
    }

    /// The stage a selection reads, if any.
    pub fn source(&self) -> Option<&'a StageRef> {
        match self {
            Neurons::Top(t) => Some(&t.from),
            Neurons::List(_) => None,
        }
    }

    /// Resolve to (layer, neuron) pairs; `dir` is the source stage's artifact folder.
    pub fn resolve(&self, dir: Option<&Path>) -> Result<Vec<(usize, usize)>> {
        match self {
            Neurons::List(v) => v
                .iter()
                .map(|s| parse_neuron(s).with_context(|| format!("'{s}' is not a neuron (write L1.N23 or 1.23)")))
                .collect(),
            Neurons::Top(t) => {
                let dir = dir.context("no source stage")?;
                let df = crate::store::table::read(&dir.join(format!("{}.parquet", t.table_in(dir)?)))?;
                let mut df = crate::plot::filter_rows(&df, &t.filter)?;
                if let Some(by) = &t.by {
                    df = df.sort([by.as_str()], SortMultipleOptions::default().with_order_descending(!t.lowest))?;
                }
                let layer = df.column("layer").context("the table has no `layer` column")?.cast(&DataType::UInt64)?;
                let neuron =
                    df.column("neuron").context("the table has no `neuron` column")?.cast(&DataType::UInt64)?;
                let (layer, neuron) = (layer.u64()?, neuron.u64()?);
                let out: Vec<(usize, usize)> = (0..df.height().min(t.n))
                    .filter_map(|i| Some((layer.get(i)? as usize, neuron.get(i)? as usize)))
                    .collect();
                if out.is_empty() {
                    bail!("no neurons selected from '{}'", t.from.name());
                }
                Ok(out)
            }
        }
    }
}
