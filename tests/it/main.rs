//! Integration tests (one binary, so the dependency tree links once).

mod common;
mod correlation;
mod data;
mod effects;
mod engine;
mod experiments;
mod families;
mod files;
mod fuzz;
mod hub;
mod layers;
mod model_loading;
mod model_parity;
mod patching;
mod plots;
mod report;
mod safety;
mod selector;
mod shards;
mod stages;
mod statistics;
mod studies;
mod train;
mod validation;
mod vocab;
mod weights;
