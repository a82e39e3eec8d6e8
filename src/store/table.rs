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
