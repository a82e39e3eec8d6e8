//! Tables on disk: Parquet (polars) and CSV exports, written atomically; reading Parquet back.

use anyhow::{Context, Result};
use polars::prelude::*;
use std::path::Path;

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
