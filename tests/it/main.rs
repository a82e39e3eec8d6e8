//! Integration tests (one binary, so the dependency tree links once).

mod common;
mod effects;
mod engine;
mod model_loading;
mod model_parity;
mod patching;
mod validation;
mod vocab;
mod weights;
