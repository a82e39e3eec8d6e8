//! Experiment files: their sections as types (with the JSON Schema), parsing with positions, and
//! validation against references and model configurations, every error reported in one pass.

pub mod file;
pub mod parse;
pub mod validate;

pub use file::{Experiment, ExperimentMeta, ModelSpec, ProcessingSpec};
pub use parse::{parse_file, parse_str};
pub use validate::{validate, Validated};

use crate::spec::Invalid;
use std::path::Path;

/// Parse and validate an experiment file.
pub fn load(file: &Path) -> Result<Validated, Invalid> {
    parse_file(file).and_then(validate)
}

/// The JSON Schema of experiment files, pretty-printed (checked in as schemas/experiment.schema.json).
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(file::ExperimentFile);
    serde_json::to_string_pretty(&schema).expect("schema serialises") + "\n"
}
