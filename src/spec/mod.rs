//! Experiment files: types (with their JSON Schema), parsing with positions, validation against
//! references and model configurations, and rustc-style diagnostics.

pub mod diag;
pub mod file;
pub mod locate;
pub mod parse;
pub mod span;
pub mod validate;

pub use diag::{Diagnostic, Invalid};
pub use file::{Experiment, ExperimentMeta, ModelSpec, ProcessingSpec};
pub use span::{DatasetRef, ModelRef, Sp, StageRef};
pub use validate::{validate, CheckCx, Validated};

/// The JSON Schema of experiment files, pretty-printed (checked in as schemas/experiment.schema.json).
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(file::ExperimentFile);
    serde_json::to_string_pretty(&schema).expect("schema serialises") + "\n"
}
