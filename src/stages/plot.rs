//! `[plots.NAME]`: a table of a stage rendered as PNG and SVG; its own cached node, so changing only
//! its title re-renders it and nothing else.

use super::{CheckCx, Dep, Stage, StageEnv};
use crate::plot::PlotSpec;
use crate::spec::{Diagnostic, StageRef};
use crate::util::did_you_mean;
use anyhow::{bail, Result};

/// A plot of a table of the stage `input` names.
pub type PlotStage = PlotSpec<StageRef>;

impl Stage for PlotStage {
    fn deps(&self) -> Vec<Dep<'_>> {
        vec![Dep::Stage(&self.input)]
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        let span = self.input.span();
        let missing = self.missing();
        if !missing.is_empty() {
            out.push(Diagnostic::at(span.clone(), format!("a {:?} plot needs {}", self.kind, missing.join(", "))));
        }
        if let Some(problem) = self.unsupported() {
            out.push(cx.error("x_lines", problem));
        }
        let Some(decl) = cx.table_of(&self.input, self.table.as_deref(), "table", out) else { return };
        for (field, column, numeric) in self.columns() {
            // A filter key is found where it is written inside `filter = { … }`.
            let at = if field == "filter" { column } else { field };
            cx.column(self.input.name(), &decl, at, column, numeric, out);
        }
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        let dir = cx.input(&self.input)?;
        let tables = crate::store::table::tables_in(&dir);
        let table = match &self.table {
            Some(t) => t.clone(),
            None if tables.len() == 1 => tables[0].clone(),
            None => bail!("stage '{}' writes several tables ({}): set `table`", self.input.name(), tables.join(", ")),
        };
        if !tables.contains(&table) {
            bail!(
                "stage '{}' has no table '{table}' (tables: {}){}",
                self.input.name(),
                tables.join(", "),
                did_you_mean(&table, tables.iter().map(|s| s.as_str()))
            );
        }
        let df = crate::store::table::read(&dir.join(format!("{table}.parquet")))?;
        let mut spec = self.clone();
        if spec.title.is_none() {
            spec.title = Some(cx.name().to_string());
        }
        crate::plot::render(&spec, &df, &cx.out().join("plot.png"), &cx.out().join("plot.svg"))
    }
}
