//! Shared test helpers: fixture paths, golden files, tolerant tensor comparison.

use candle_core::{Device, Tensor};
use lantern::model::{Model, ModelFiles, Processing};
use std::collections::HashMap;
use std::path::PathBuf;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn load(name: &str, processing: Processing) -> Model {
    let files = ModelFiles::from_folder(&fixture(name)).unwrap();
    Model::load(&files, processing, &Device::Cpu).unwrap()
}

pub fn golden(name: &str, file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join(file), &Device::Cpu).unwrap()
}

/// Max absolute difference; equal infinities count as equal.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a: Vec<f32> = a.to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    a.iter()
        .zip(&b)
        .map(|(x, y)| if x == y { 0.0 } else { (x - y).abs() })
        .fold(0.0f32, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) })
}

pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) {
    let d = max_abs_diff(a, b);
    assert!(d <= tol, "{what}: max abs diff {d} > {tol}");
}
