//! What a stage's tables hold, declared before anything runs: `validate` checks the tables and
//! columns that plots, filters and `top` selectors name against the declarations, and every table
//! a stage writes is checked against its declaration (so the declarations cannot drift).

use anyhow::{bail, Result};
use polars::prelude::{DataFrame, DataType};
use std::fmt;

/// The kind of values a column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Int,
    Float,
    Text,
    Bool,
    List,
}

impl Ty {
    /// The kind of a polars column type (`None` for types no stage writes).
    pub fn of(dtype: &DataType) -> Option<Ty> {
        match dtype {
            d if d.is_integer() => Some(Ty::Int),
            d if d.is_float() => Some(Ty::Float),
            DataType::String => Some(Ty::Text),
            DataType::Boolean => Some(Ty::Bool),
            DataType::List(_) => Some(Ty::List),
            _ => None,
        }
    }

    /// Whether values of this kind can be drawn on an axis.
    pub fn is_numeric(self) -> bool {
        matches!(self, Ty::Int | Ty::Float | Ty::Bool)
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ty::Int => "integer",
            Ty::Float => "number",
            Ty::Text => "text",
            Ty::Bool => "boolean",
            Ty::List => "list",
        })
    }
}

/// One declared column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: Ty,
    /// Written only in some runs (when the dataset has labels, …).
    pub optional: bool,
}

/// The declaration of one table a stage writes (`NAME.parquet` and `NAME.csv`).
#[derive(Clone, Debug)]
pub struct TableDecl {
    pub name: &'static str,
    pub columns: Vec<Column>,
    /// Further columns whose names come from the data (one per label, …).
    pub open: bool,
}

impl TableDecl {
    pub fn new(name: &'static str) -> TableDecl {
        TableDecl { name, columns: Vec::new(), open: false }
    }

    /// Columns of one kind, in order.
    pub fn cols<S: Into<String>>(mut self, ty: Ty, names: impl IntoIterator<Item = S>) -> TableDecl {
        self.columns.extend(names.into_iter().map(|n| Column { name: n.into(), ty, optional: false }));
        self
    }

    /// Integer columns.
    pub fn ints<S: Into<String>>(self, names: impl IntoIterator<Item = S>) -> TableDecl {
        self.cols(Ty::Int, names)
    }

    /// Floating-point columns.
    pub fn floats<S: Into<String>>(self, names: impl IntoIterator<Item = S>) -> TableDecl {
        self.cols(Ty::Float, names)
    }

    /// Text columns.
    pub fn texts<S: Into<String>>(self, names: impl IntoIterator<Item = S>) -> TableDecl {
        self.cols(Ty::Text, names)
    }

    /// Columns written only in some runs (when the dataset has labels, …).
    pub fn optional<S: Into<String>>(mut self, ty: Ty, names: impl IntoIterator<Item = S>) -> TableDecl {
        self.columns.extend(names.into_iter().map(|n| Column { name: n.into(), ty, optional: true }));
        self
    }

    /// Allow further columns named by the data.
    pub fn open(mut self) -> TableDecl {
        self.open = true;
        self
    }

    /// A declared column by name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The declared column names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.name.as_str())
    }

    /// Give a table without rows the declared columns it lacks (empty, of their kind): tables
    /// built row by row have no columns when nothing qualified, and readers expect them.
    pub fn complete(&self, df: &mut DataFrame) -> Result<()> {
        if df.height() > 0 {
            return Ok(());
        }
        let missing: Vec<&Column> =
            self.columns.iter().filter(|c| !c.optional && df.column(&c.name).is_err()).collect();
        for c in missing {
            let dtype = match c.ty {
                Ty::Int => DataType::Int64,
                Ty::Float => DataType::Float64,
                Ty::Text => DataType::String,
                Ty::Bool => DataType::Boolean,
                Ty::List => DataType::List(Box::new(DataType::Float64)),
            };
            df.with_column(polars::prelude::Column::new_empty(c.name.as_str().into(), &dtype))?;
        }
        Ok(())
    }

    /// Check a table about to be written: every declared column (optional ones where present) with
    /// its kind, and no other column unless the table is open.
    pub fn check(&self, df: &DataFrame) -> Result<()> {
        let mut problems = Vec::new();
        for c in &self.columns {
            match df.column(&c.name) {
                Ok(col) => match Ty::of(col.dtype()) {
                    Some(ty) if ty == c.ty => {}
                    _ => problems.push(format!("`{}` is {}, declared {}", c.name, col.dtype(), c.ty)),
                },
                Err(_) if c.optional => {}
                Err(_) => problems.push(format!("`{}` is declared but missing", c.name)),
            }
        }
        if !self.open {
            for name in df.get_column_names() {
                if self.column(name).is_none() {
                    problems.push(format!("`{name}` is not declared"));
                }
            }
        }
        if !problems.is_empty() {
            bail!("table '{}' does not match its declaration: {}", self.name, problems.join("; "));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    #[test]
    fn a_written_table_must_match_its_declaration() {
        let decl = TableDecl::new("t").ints(["layer"]).floats(["d"]).optional(Ty::Text, ["label"]);
        let ok = df!("layer" => [1u32, 2], "d" => [0.5f64, 1.0]).unwrap();
        assert!(decl.check(&ok).is_ok());
        let labelled = df!("layer" => [1u32], "d" => [0.5f64], "label" => ["de"]).unwrap();
        assert!(decl.check(&labelled).is_ok());
        let missing = df!("layer" => [1u32]).unwrap();
        assert!(decl.check(&missing).unwrap_err().to_string().contains("`d` is declared but missing"));
        let extra = df!("layer" => [1u32], "d" => [0.5f64], "e" => [1.0f64]).unwrap();
        assert!(decl.check(&extra).unwrap_err().to_string().contains("`e` is not declared"));
        assert!(decl.clone().open().check(&extra).is_ok());
        let typed = df!("layer" => ["1"], "d" => [0.5f64]).unwrap();
        assert!(decl.check(&typed).unwrap_err().to_string().contains("`layer` is str, declared integer"));
    }

    #[test]
    fn a_table_without_rows_gets_its_declared_columns() {
        let decl = TableDecl::new("t").ints(["layer"]).floats(["d"]).texts(["class"]).optional(Ty::Text, ["label"]);
        let mut empty = df!("layer" => Vec::<u32>::new()).unwrap();
        decl.complete(&mut empty).unwrap();
        assert!(decl.check(&empty).is_ok());
        assert_eq!(empty.get_column_names(), ["layer", "d", "class"]);
        // A table with rows is left as it is: a missing column there is a fault.
        let mut rows = df!("layer" => [1u32]).unwrap();
        decl.complete(&mut rows).unwrap();
        assert!(decl.check(&rows).is_err());
    }
}
