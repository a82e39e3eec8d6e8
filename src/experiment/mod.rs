//! Experiment files: their sections as types (with the JSON Schema), parsing with positions, and
//! validation against references and model configurations, every error reported in one pass.

pub mod document;
pub mod file;
pub mod parse;
pub mod slurm;
pub mod validate;

pub use file::{Experiment, ExperimentMeta, ModelSpec, ProcessingSpec};
pub use parse::{parse_file, parse_with};
pub use validate::{validate, Validated};

use crate::spec::Invalid;
use std::path::Path;

/// Parse and validate an experiment file.
pub fn load(file: &Path) -> Result<Validated, Invalid> {
    load_with(file, &[])
}

/// Parse and validate an experiment file with `--set PATH=VALUE` overrides.
pub fn load_with(file: &Path, sets: &[String]) -> Result<Validated, Invalid> {
    parse_with(file, sets).and_then(validate)
}

/// The JSON Schema of experiment files, pretty-printed (checked in as schemas/experiment.schema.json).
/// Every model, dataset, stage and plot may also hold a `matrix` (expanded before decoding).
pub fn schema_json() -> String {
    let mut schema = serde_json::to_value(schemars::schema_for!(file::ExperimentFile)).expect("schema serialises");
    let matrix = serde_json::json!({
        "description": "Expand this entry into one per combination of values, named `name[v1,v2]`: a key that is a \
                        field sets it; `\"{key}\"` in a string is the value (a whole `\"{key}\"` keeps its type); \
                        `other[*]` in a list stands for every expansion of `other`.",
        "type": "object",
        "additionalProperties": { "type": "array", "items": { "type": ["string", "integer", "number", "boolean"] } }
    });
    let defs = schema["$defs"].as_object_mut().expect("schemars writes $defs");
    defs.insert("Matrix".into(), matrix);
    let mut entries: Vec<&mut serde_json::Value> = Vec::new();
    for (name, def) in defs.iter_mut() {
        match name.as_str() {
            "ModelSpec" | "DatasetSpec" | "PlotSpec" => entries.push(def),
            "StageSpec" => entries.extend(def["oneOf"].as_array_mut().into_iter().flatten()),
            _ => {}
        }
    }
    for e in entries {
        if let Some(props) = e.get_mut("properties").and_then(|p| p.as_object_mut()) {
            let expansion = serde_json::json!({ "$ref": "#/$defs/Matrix" });
            // A stage's own `matrix` field (correlation's) is a string: either is valid.
            let schema = match props.remove("matrix") {
                Some(own) => serde_json::json!({ "anyOf": [own, expansion] }),
                None => expansion,
            };
            props.insert("matrix".into(), schema);
        }
    }
    serde_json::to_string_pretty(&schema).expect("schema serialises") + "\n"
}
