//! lantern: mechanistic-interpretability experiments on transformer language models, driven by
//! TOML experiment files: spec → validate → plan → execute (cached, resumable) → plots and report.

pub mod analysis;
pub mod cli;
pub mod data;
pub mod exec;
pub mod model;
pub mod plan;
pub mod plot;
pub mod report;
pub mod spec;
pub mod stages;
pub mod stats;
pub mod store;
pub mod train;
pub mod util;
