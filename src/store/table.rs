//! Tables: built column by column (`Table`) or row by row per neuron (`NeuronRows`), written as
//! Parquet (polars) and CSV atomically, read back, listed in a stage's folder.

use anyhow::{Context, Result};
use polars::prelude::*;
use std::path::Path;

/// A table built column by column: `Table::new().with("layer", layers).with("corr", corr).frame()`.
#[derive(Default)]
pub struct Table {
    columns: Vec<Column>,
}

impl Table {
    pub fn new() -> Table {
        Table::default()
    }

    /// Add a column (anything polars builds a column from: `Vec<f64>`, `Vec<String>`, `&[u32]`…).
    pub fn with<T, P: ?Sized>(mut self, name: &str, values: T) -> Table
    where
        Series: NamedFrom<T, P>,
    {
        self.push(name, values);
        self
    }

    /// Add a column in place.
    pub fn push<T, P: ?Sized>(&mut self, name: &str, values: T)
    where
        Series: NamedFrom<T, P>,
    {
        self.columns.push(Column::new(name.into(), values));
    }

    /// The data frame; an error when the columns differ in length.
    pub fn frame(self) -> Result<DataFrame> {
        Ok(DataFrame::new_infer_height(self.columns)?)
    }
}

/// A long table keyed by (hook, layer, neuron), built one neuron (row) at a time; columns appear
/// in the order first written.
#[derive(Default)]
pub struct NeuronRows {
    hook: Vec<String>,
    layer: Vec<u32>,
    neuron: Vec<u32>,
    cols: Vec<(&'static str, Values)>,
}

enum Values {
    F(Vec<f64>),
    I(Vec<i64>),
    S(Vec<String>),
}

impl NeuronRows {
    /// Start the row of a neuron.
    pub fn key(&mut self, hook: &str, layer: u32, neuron: u32) {
        self.hook.push(hook.to_string());
        self.layer.push(layer);
        self.neuron.push(neuron);
    }
    fn col(&mut self, k: &'static str, empty: impl FnOnce() -> Values) -> &mut Values {
        let i = match self.cols.iter().position(|c| c.0 == k) {
            Some(i) => i,
            None => {
                self.cols.push((k, empty()));
                self.cols.len() - 1
            }
        };
        &mut self.cols[i].1
    }
    pub fn f64s(&mut self, vals: &[(&'static str, f64)]) {
        for (k, v) in vals {
            if let Values::F(c) = self.col(k, || Values::F(vec![])) {
                c.push(*v);
            }
        }
    }
    pub fn ints(&mut self, vals: &[(&'static str, i64)]) {
        for (k, v) in vals {
            if let Values::I(c) = self.col(k, || Values::I(vec![])) {
                c.push(*v);
            }
        }
    }
    pub fn strs(&mut self, vals: &[(&'static str, String)]) {
        for (k, v) in vals {
            if let Values::S(c) = self.col(k, || Values::S(vec![])) {
                c.push(v.clone());
            }
        }
    }
    pub fn frame(self) -> Result<DataFrame> {
        let mut t = Table::new().with("hook", self.hook).with("layer", self.layer).with("neuron", self.neuron);
        for (k, c) in self.cols {
            match c {
                Values::F(v) => t.push(k, v),
                Values::I(v) => t.push(k, v),
                Values::S(v) => t.push(k, v),
            }
        }
        t.frame()
    }
}

pub fn write(path: &Path, df: &mut DataFrame) -> Result<()> {
    super::atomic::write_with(path, |f| {
        ParquetWriter::new(f).finish(df).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    })
}

pub fn write_csv(path: &Path, df: &mut DataFrame) -> Result<()> {
    super::atomic::write_with(path, |f| {
        CsvWriter::new(f).finish(df).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    })
}

/// A table as `dir/NAME.parquet` and `dir/NAME.csv`, each written atomically.
pub fn write_both(dir: &Path, name: &str, df: &mut DataFrame) -> Result<()> {
    write(&dir.join(format!("{name}.parquet")), df)?;
    write_csv(&dir.join(format!("{name}.csv")), df)
}

pub fn read(path: &Path) -> Result<DataFrame> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    ParquetReader::new(f).finish().with_context(|| format!("cannot read {}", path.display()))
}

/// Read only these top-level columns when the file has them all (the others, whatever their type,
/// are never decoded); else every column, so that the caller's error can list them.
pub fn read_columns(path: &Path, wanted: &[String]) -> Result<DataFrame> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = ParquetReader::new(f);
    let schema = reader.schema().with_context(|| format!("cannot read {}", path.display()))?;
    let columns = wanted.iter().all(|c| schema.contains(c)).then(|| wanted.to_vec());
    reader.with_columns(columns).finish().with_context(|| format!("cannot read {}", path.display()))
}

/// A column by name, where `a.b` is field `b` of struct column `a` (a Pile document's
/// `meta.pile_set_name`).
pub fn column(df: &DataFrame, name: &str) -> PolarsResult<Column> {
    match (df.column(name), name.split_once('.')) {
        (Ok(c), _) => Ok(c.clone()),
        (Err(_), Some((outer, field))) => Ok(df.column(outer)?.struct_()?.field_by_name(field)?.into_column()),
        (Err(e), None) => Err(e),
    }
}

/// The Parquet tables in a stage's artifact folder, sorted.
pub fn tables_in(dir: &std::path::Path) -> Vec<String> {
    let mut t: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".parquet")).map(str::to_string))
        .collect();
    t.sort();
    t
}
