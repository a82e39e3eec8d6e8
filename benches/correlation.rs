//! Cross-model correlation on GPT-2-small shapes. (1) The machine's f32 matmul peak (plain
//! products of several shapes) and the Σxy accumulation of one layer pair (3072 × 3072 neurons, products in
//! f32 per batch, added exactly into the fixed-point sums) as GFLOP/s and share of that peak.
//! (2) The `correlation` stage end to end between two random GPT-2-small-shaped models (all
//! 12 × 12 layer pairs of `mlp.hook_post`, 4 GB budget) over 512 and then 1,024 tokens: tokens/s and
//! peak RSS after each (flat: memory is set by the budget, not the data).
//! Run: `cargo bench --bench correlation`.

mod common;

use candle_core::{Device, Tensor};
use lantern::analysis::correlation::{Products, Shape, Sums};
use lantern::model::Model;
use std::collections::BTreeMap;
use std::time::Instant;

fn randn(rows: usize, cols: usize) -> Tensor {
    Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu).unwrap()
}

fn main() {
    lantern::util::sys::tune_allocator();
    // The peak: the best plain f32 matmul over the forward pass's shapes, a square one and a
    // plain product of the Σxy shape.
    let peak = common::matmul_peak(&[(1024, 768, 3072), (1024, 3072, 768), (2048, 2048, 2048), (3072, 1024, 3072)]);
    println!("f32 matmul peak (best of the forward's shapes, 2048³ and 3072×1024×3072): {peak:.0} GFLOP/s");
    let d = 3072;
    let shape = Shape { la: 1, da: d, lb: 1, db: d };
    for t in [1024usize, 4096] {
        let (x, y) = (BTreeMap::from([(0, randn(t, d))]), BTreeMap::from([(0, randn(t, d))]));
        let flop = 2.0 * (t * d * d) as f64;
        let gemm = flop / common::best_time(3, || drop(x[&0].t().unwrap().matmul(&y[&0]).unwrap())) / 1e9;
        let mut sums = Sums::new(shape, &[(0, 0)]);
        let acc = flop / common::best_time(3, || sums.add(&x, &y, Products::F32).unwrap()) / 1e9;
        println!("Σxy, {t} tokens per batch: products alone {gemm:.0} GFLOP/s ({:.0}% of peak); with exact accumulation {acc:.0} GFLOP/s ({:.0}% of peak)", 100.0 * gemm / peak, 100.0 * acc / peak);
    }
    end_to_end();
}

fn end_to_end() {
    let root = tempfile_dir();
    let tok_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tokenizer/tokenizer.json");
    let tok = tokenizers::Tokenizer::from_file(&tok_path).unwrap();
    for (name, seed) in [("model_a", 1), ("model_b", 2)] {
        let m = Model::random(lantern::model::ModelConfig::gpt2(12, 768, 12, 3072, 50257, 1024), seed, &Device::Cpu)
            .unwrap();
        std::fs::create_dir_all(root.join(name)).unwrap();
        lantern::train::export::save_hf(&m, &tok, &root.join(name)).unwrap();
    }
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/data/english.jsonl");
    for tokens in [512, 1024] {
        let file = root.join(format!("c{tokens}.toml"));
        std::fs::write(
            &file,
            format!(
                "[experiment]\nname = \"bench\"\n[models.a]\npath = \"model_a\"\n[models.b]\npath = \"model_b\"\n\
                 [datasets.en]\npath = \"{}\"\ncontext = 128\nn_tokens = {tokens}\n\
                 [stages.corr]\nkind = \"correlation\"\na = \"a\"\nb = \"b\"\ndataset = \"en\"\nmemory_gb = 4\n",
                data.display()
            ),
        )
        .unwrap();
        let mut session = lantern::exec::Session::open(&file, &root.join("out")).unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        let o = session
            .run(&lantern::exec::Options::default(), &lantern::util::Cancel::new(), Device::Cpu, &lantern::exec::Quiet)
            .unwrap();
        assert!(!o.failed(), "{:?}", o.nodes);
        let secs = t.elapsed().as_secs_f64();
        let flop = 2.0 * (36864.0 * 36864.0) * tokens as f64;
        println!(
            "end to end, {tokens} tokens (12×12 layer pairs, 6 passes): {secs:.1} s, {:.1} tokens/s, {:.0} GFLOP/s of Σxy; peak RSS {:.0} MB",
            tokens as f64 / secs,
            flop / secs / 1e9,
            common::peak_rss_mb()
        );
    }
    std::fs::remove_dir_all(&root).ok();
}

fn tempfile_dir() -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("lantern-corr-bench-{}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}
