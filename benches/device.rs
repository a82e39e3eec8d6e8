//! The GPU path on GPT-2-small shapes (scripts/gpu-check.sh runs it): the device's f32 matmul peak
//! (TF32 off), forward throughput against it, and the `correlation` stage between two random
//! GPT-2-small-shaped models on the device: its tables against the same stage on the CPU (exit
//! code 1 when a best correlation differs by more than 1e-4), then its throughput.
//! Run: `cargo bench --features cuda --bench device`. Environment: LANTERN_BENCH_DEVICE (`cuda`,
//! `cuda:N`, or `cpu` to try the bench itself), LANTERN_BENCH_BATCH (8 rows of 1,024 tokens per
//! forward), LANTERN_BENCH_CHECK_TOKENS (4,096: the CPU comparison), LANTERN_BENCH_TOKENS (65,536:
//! the throughput runs), LANTERN_BENCH_MEMORY_GB (24: the sums' budget, one tile at 21.7 GB).

mod common;

use candle_core::{Device, Tensor};
use lantern::model::{HookPoint, Model, ModelConfig, Request, Start};
use lantern::store::table::read;
use polars::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

const CTX: usize = 1024;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v}: not a number")))
        .unwrap_or(default)
}

/// The repository (for the tokenizer and the text): `CARGO_MANIFEST_DIR` at run time (cargo and
/// scripts/gpu-check.sh set it), else the build's.
fn repo() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

fn main() {
    lantern::util::sys::tune_allocator();
    let name = std::env::var("LANTERN_BENCH_DEVICE").unwrap_or_else(|_| "cuda".into());
    let dev = match name.as_str() {
        "cpu" => Device::Cpu,
        d => {
            let ordinal = d.strip_prefix("cuda").map(|n| n.trim_start_matches(':').parse::<usize>().unwrap_or(0));
            let ordinal = ordinal.unwrap_or_else(|| panic!("LANTERN_BENCH_DEVICE={d}: cpu, cuda or cuda:N"));
            Device::new_cuda(ordinal).unwrap_or_else(|e| panic!("no CUDA device {ordinal}: {e}"))
        }
    };
    println!("device: {name}; host: {} threads", rayon::current_num_threads());
    let rows = env("LANTERN_BENCH_BATCH", 8usize);
    let m = rows * CTX;
    println!("f32 matmul (TF32 off):");
    let peak =
        common::matmul_peak_on(&dev, &[(m, 768, 3072), (m, 3072, 768), (m, 768, 50257), (3072, m, 3072), (m, m, m)]);
    println!("f32 matmul peak: {peak:.0} GFLOP/s");
    forward(&dev, rows, peak);
    let ok = correlation(&dev, peak);
    println!("peak host RSS: {:.0} MB", common::peak_rss_mb());
    if !ok {
        std::process::exit(1);
    }
}

/// Tokens/s and share of the peak of a GPT-2-small forward over `rows` × 1,024 tokens.
fn forward(dev: &Device, rows: usize, peak: f64) {
    let cfg = ModelConfig::gpt2(12, 768, 12, 3072, 50257, CTX);
    let (d, v, l) = (cfg.d_model as f64, cfg.d_vocab as f64, cfg.n_layers as f64);
    let body = l * (24.0 * d * d + 4.0 * CTX as f64 * d);
    let model = Model::random(cfg, 0, dev).unwrap();
    let ids: Vec<u32> = (0..rows * CTX).map(|i| (i * 7919 % 50257) as u32).collect();
    let tokens = Tensor::from_vec(ids, (rows, CTX), dev).unwrap();
    let posts: Vec<HookPoint> =
        (0..12).map(|l| HookPoint::parse(&format!("blocks.{l}.mlp.hook_post")).unwrap()).collect();
    let sync = || dev.synchronize().unwrap();
    let runs: Vec<(&str, f64, Box<dyn Fn()>)> = vec![
        ("forward (logits)", body + 2.0 * d * v, Box::new(|| drop(model.logits(&tokens).unwrap()))),
        (
            "forward + 12 mlp.hook_post on the host",
            body + 2.0 * d * v,
            Box::new(|| {
                let req = Request::capture(posts.iter().copied()).with_logits();
                model
                    .forward(Start::Tokens(&tokens), &req, &mut |_, t| {
                        drop(t.to_device(&Device::Cpu)?);
                        Ok(())
                    })
                    .unwrap();
            }),
        ),
        (
            "forward to blocks.11.mlp.hook_post",
            body,
            Box::new(|| {
                drop(model.forward(Start::Tokens(&tokens), &Request::capture([posts[11]]), &mut |_, _| Ok(())).unwrap())
            }),
        ),
    ];
    let ntok = (rows * CTX) as f64;
    for (name, flop, f) in &runs {
        let secs = common::best_time(4, || {
            f();
            sync();
        });
        let gf = ntok / secs * flop / 1e9;
        println!("{name:<42} {:>9.0} tokens/s {gf:>8.0} GFLOP/s {:>5.1}% of peak", ntok / secs, 100.0 * gf / peak);
    }
}

/// The correlation stage on the device against the CPU, then its throughput. False when they disagree.
fn correlation(dev: &Device, peak: f64) -> bool {
    let root = std::env::temp_dir().join(format!("lantern-device-bench-{}", std::process::id()));
    let tok = tokenizers::Tokenizer::from_file(repo().join("tests/fixtures/gpt2-tokenizer/tokenizer.json")).unwrap();
    for (name, seed) in [("model_a", 1), ("model_b", 2)] {
        let m = Model::random(ModelConfig::gpt2(12, 768, 12, 3072, 50257, CTX), seed, &Device::Cpu).unwrap();
        std::fs::create_dir_all(root.join(name)).unwrap();
        lantern::train::export::save_hf(&m, &tok, &root.join(name)).unwrap();
    }
    let memory: f64 = env("LANTERN_BENCH_MEMORY_GB", 24.0);
    let check = env("LANTERN_BENCH_CHECK_TOKENS", 4096usize);
    // Two batches in the comparison, so that the exact accumulation across batches is part of it.
    let batch = (check / CTX / 2).max(1);
    println!("correlation, 12×12 layer pairs of mlp.hook_post, {check} tokens in batches of {batch} rows:");
    let run = |dev: &Device, tokens: usize, batch: usize, products: &str, tag: &str| {
        let out = root.join(tag);
        let secs = run_stage(&root, &out, dev, tokens, batch, products, memory);
        let flop = 2.0 * (36864.0 * 36864.0) * tokens as f64;
        println!(
            "  {tag:<26} {secs:>7.1} s {:>9.0} tokens/s {:>8.0} GFLOP/s of Σxy ({:.1}% of the f32 peak)",
            tokens as f64 / secs,
            flop / secs / 1e9,
            100.0 * flop / secs / 1e9 / peak
        );
        out.join("corr/corr/matches.parquet")
    };
    let cpu = run(&Device::Cpu, check, batch, "f32", "cpu f32");
    let on_dev = run(dev, check, batch, "f32", "device f32");
    let tf32 = run(dev, check, batch, "tf32", "device tf32");
    let ok = compare("device f32 vs cpu f32", &cpu, &on_dev, 1e-4);
    compare("device tf32 vs cpu f32 (no bound)", &cpu, &tf32, f64::INFINITY);
    let tokens = env("LANTERN_BENCH_TOKENS", 65536usize);
    println!("correlation throughput, {tokens} tokens:");
    for rows in [8, 32] {
        run(dev, tokens, rows, "f32", &format!("device f32, batch {rows}"));
    }
    std::fs::remove_dir_all(&root).ok();
    ok
}

/// Run the stage between the two models over `tokens` of the shipped English text; seconds.
fn run_stage(root: &Path, out: &Path, dev: &Device, tokens: usize, batch: usize, products: &str, memory: f64) -> f64 {
    let file = root.join("corr.toml");
    let data = repo().join("experiments/data/english.jsonl");
    std::fs::write(
        &file,
        format!(
            "[experiment]\nname = \"corr\"\n[models.a]\npath = \"model_a\"\n[models.b]\npath = \"model_b\"\n\
             [datasets.en]\npath = \"{}\"\ncontext = {CTX}\nn_tokens = {tokens}\n\
             [stages.corr]\nkind = \"correlation\"\na = \"a\"\nb = \"b\"\ndataset = \"en\"\n\
             products = \"{products}\"\nbatch_size = {batch}\nmemory_gb = {memory}\n",
            data.display()
        ),
    )
    .unwrap();
    let mut session = lantern::exec::Session::open(&file, out).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let o = session
        .run(&lantern::exec::Options::default(), &lantern::util::Cancel::new(), dev.clone(), &lantern::exec::Quiet)
        .unwrap();
    assert!(!o.failed(), "{:?}", o.nodes);
    t.elapsed().as_secs_f64()
}

/// Best correlation per neuron of A and its match in two runs; true when within `tol`.
fn compare(what: &str, a: &Path, b: &Path, tol: f64) -> bool {
    let (a, b) = (read(a).unwrap(), read(b).unwrap());
    let col = |df: &DataFrame, c: &str| -> Vec<f64> {
        df.column(c).unwrap().cast(&DataType::Float64).unwrap().f64().unwrap().into_no_null_iter().collect()
    };
    let (ca, cb) = (col(&a, "max_corr"), col(&b, "max_corr"));
    let worst = ca.iter().zip(&cb).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    let matches = |df: &DataFrame| -> Vec<(f64, f64)> {
        col(df, "match_layer").into_iter().zip(col(df, "match_neuron")).collect()
    };
    let same = matches(&a).iter().zip(&matches(&b)).filter(|(x, y)| x == y).count();
    let ok = worst <= tol;
    println!(
        "  {what}: max |Δ max_corr| {worst:.2e}; same best match for {same} of {} neurons (mean max_corr {:.4}){}",
        a.height(),
        ca.iter().sum::<f64>() / ca.len() as f64,
        if ok { "" } else { " — FAILED" }
    );
    ok
}
