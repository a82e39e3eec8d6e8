//! lantern: mechanistic-interpretability experiments on transformer language models, driven by
//! TOML experiment files: spec → validate → plan → execute (cached, resumable) → plots and report.

pub mod analysis;
pub mod model;
pub mod stats;
pub mod util;
