//! Shared test helpers: fixture paths, golden files, tolerant tensor comparison, the device the
//! fixture models and workspace runs use.

use candle_core::{Device, Tensor};
use lantern::model::{Model, ModelFiles, Processing};
use std::collections::HashMap;
use std::path::PathBuf;

/// The repository: `CARGO_MANIFEST_DIR` of the running process (cargo sets it; so does
/// scripts/gpu-check.sh for a prebuilt test binary in a copied checkout), else the build's.
pub fn repo() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// `LANTERN_TEST_DEVICE`: `cpu` (default) or `cuda` / `cuda:N` (a `--features cuda` build): the
/// device of `load` and of `Workspace` runs.
pub fn device() -> Device {
    match std::env::var("LANTERN_TEST_DEVICE").as_deref() {
        Err(_) | Ok("cpu") => Device::Cpu,
        Ok(d) => {
            let ordinal = d.strip_prefix("cuda").map(|n| n.trim_start_matches(':').parse().unwrap_or(0));
            Device::new_cuda(ordinal.unwrap_or_else(|| panic!("LANTERN_TEST_DEVICE={d}: cpu, cuda or cuda:N")))
                .unwrap_or_else(|e| panic!("LANTERN_TEST_DEVICE={d}: {e}"))
        }
    }
}

pub fn load(name: &str, processing: Processing) -> Model {
    let files = ModelFiles::from_folder(&fixture(name)).unwrap();
    Model::load(&files, processing, &device()).unwrap()
}

pub fn golden(name: &str, file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join(file), &Device::Cpu).unwrap()
}

/// Max absolute difference; equal infinities count as equal.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a: Vec<f32> = a.to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.to_dtype(candle_core::DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    a.iter().zip(&b).map(|(x, y)| if x == y { 0.0 } else { (x - y).abs() }).fold(0.0f32, |m, d| {
        if d.is_nan() {
            f32::INFINITY
        } else {
            m.max(d)
        }
    })
}

pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) {
    let d = max_abs_diff(a, b);
    assert!(d <= tol, "{what}: max abs diff {d} > {tol}");
}

/// A temporary folder holding a small language model (gpt2-tiny's weights with a 512-token BPE
/// trained on the shipped text) as `model/`, and the shipped corpora as `data/`.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("model");
        std::fs::create_dir_all(&m).unwrap();
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(fixture("gpt2-tiny").join(f), m.join(f)).unwrap();
        }
        std::fs::copy(fixture("tiny-tokenizer/tokenizer.json"), m.join("tokenizer.json")).unwrap();
        let data = repo().join("experiments/data");
        std::os::unix::fs::symlink(data, dir.path().join("data")).unwrap();
        Workspace { dir }
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Write an experiment file and return its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn out(&self) -> PathBuf {
        self.path().join("out")
    }

    /// Parse, validate and run an experiment file with options.
    pub fn run_with(&self, file: &std::path::Path, opts: lantern::exec::Options) -> lantern::exec::Outcome {
        let mut session = lantern::exec::Session::open(file, &self.out()).unwrap_or_else(|e| panic!("{e}"));
        session.run(&opts, &lantern::util::Cancel::new(), device(), &lantern::exec::Quiet).unwrap()
    }

    pub fn run(&self, file: &std::path::Path) -> lantern::exec::Outcome {
        self.run_with(file, lantern::exec::Options::default())
    }
}

/// What a command of the binary printed (stdout then stderr) and its exit code.
pub struct Ran {
    pub code: Option<i32>,
    pub text: String,
}

impl Workspace {
    /// Run `lantern ARGS…` in the workspace (no terminal, no input).
    pub fn lantern(&self, args: &[&str]) -> Ran {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_lantern"))
            .args(args)
            .current_dir(self.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        Ran { code: o.status.code(), text }
    }
}
