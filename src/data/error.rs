//! Errors in a dataset's contents (a file that is not what its format says, a field of the wrong
//! type, documents that cannot be tokenized as asked): invalid input, told apart from a failed
//! computation so that the command line exits 2 for them.

use super::spec::DatasetSpec;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub struct DataError {
    pub file: Option<PathBuf>,
    /// 1-based line of the file.
    pub line: Option<u64>,
    /// 1-based column (in bytes) of the line, where known.
    pub column: Option<u64>,
    pub message: String,
}

impl DataError {
    /// A problem at a line of a data file.
    pub fn at_line(file: &Path, line: u64, message: impl Into<String>) -> DataError {
        DataError { file: Some(file.to_path_buf()), line: Some(line), column: None, message: message.into() }
    }

    /// A problem at a line and column of a data file.
    pub fn at(file: &Path, line: u64, column: u64, message: impl Into<String>) -> DataError {
        DataError { column: Some(column), ..DataError::at_line(file, line, message) }
    }

    /// A problem with a whole data file.
    pub fn in_file(file: &Path, message: impl Into<String>) -> DataError {
        DataError { file: Some(file.to_path_buf()), line: None, column: None, message: message.into() }
    }

    /// A problem with the dataset's documents as a whole (named by its `path` when it has one).
    pub fn in_documents(spec: &DatasetSpec, base: &Path, message: impl Into<String>) -> DataError {
        DataError { file: spec.path.as_ref().map(|p| base.join(p)), line: None, column: None, message: message.into() }
    }

    /// Whether an error (or one of its causes) is bad input data.
    pub fn is_in(e: &anyhow::Error) -> bool {
        e.chain().any(|c| c.is::<DataError>())
    }
}

impl std::fmt::Display for DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, self.line, self.column) {
            (Some(file), Some(line), Some(column)) => write!(f, "{}:{line}:{column}: {}", file.display(), self.message),
            (Some(file), Some(line), None) => write!(f, "{}:{line}: {}", file.display(), self.message),
            (Some(file), _, _) => write!(f, "{}: {}", file.display(), self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// What a JSON value is, for messages ("'text' is a number").
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
