//! What a model's forward pass costs: floating-point operations per token (matrix products and
//! attention), the bytes of its weights and of a batch's activations, and this machine's measured
//! rates — f32 matmul, logits read for token statistics, activations through the per-neuron
//! reducers — with which `lantern plan --cost` turns work into time.

use super::kernels::{matmul, Mat};
use super::ModelConfig;
use std::time::Instant;

/// Operations per token of the matrix products of one block (QKV, output, the two MLP layers).
pub fn block_flops(cfg: &ModelConfig) -> f64 {
    let (d, hd) = (cfg.d_model as f64, (cfg.n_heads * cfg.d_head) as f64);
    2.0 * (3.0 * d * hd + hd * d + 2.0 * d * cfg.d_mlp as f64)
}

/// Operations per token of one block's attention scores and weighted values over rows of `ctx`
/// tokens (causal: a token attends to (ctx + 1) / 2 positions on average).
pub fn attention_flops(cfg: &ModelConfig, ctx: usize) -> f64 {
    2.0 * 2.0 * (cfg.n_heads * cfg.d_head) as f64 * (ctx as f64 + 1.0) / 2.0
}

/// Operations per token of the unembedding.
pub fn unembed_flops(cfg: &ModelConfig) -> f64 {
    2.0 * cfg.d_model as f64 * cfg.d_vocab as f64
}

/// Operations per token of `layers` blocks (from wherever a pass starts) and, with `unembed`,
/// the logits.
pub fn forward_flops(cfg: &ModelConfig, ctx: usize, layers: usize, unembed: bool) -> f64 {
    layers as f64 * (block_flops(cfg) + attention_flops(cfg, ctx)) + if unembed { unembed_flops(cfg) } else { 0.0 }
}

/// Bytes of the weights in f32 (embeddings, blocks, unembedding).
pub fn weight_bytes(cfg: &ModelConfig) -> f64 {
    let (d, m, v) = (cfg.d_model as f64, cfg.d_mlp as f64, cfg.d_vocab as f64);
    let hd = (cfg.n_heads * cfg.d_head) as f64;
    let block = 4.0 * d * hd + 2.0 * d * m + 4.0 * d + m;
    4.0 * (2.0 * v * d + cfg.n_ctx as f64 * d + cfg.n_layers as f64 * block)
}

/// Bytes a forward pass over `rows` rows of `ctx` tokens holds at its peak: the residual stream
/// and a block's intermediates, one (batch, head) attention pattern at a time, the logits when
/// computed, and `captured` values per token kept for the caller (hooked activations).
pub fn activation_bytes(cfg: &ModelConfig, rows: usize, ctx: usize, unembed: bool, captured: usize) -> f64 {
    let tokens = (rows * ctx) as f64;
    let per_token = 6.0 * cfg.d_model as f64 + 2.0 * cfg.d_mlp as f64 + captured as f64;
    let logits = if unembed { cfg.d_vocab as f64 } else { 0.0 };
    4.0 * (tokens * (per_token + logits) + (ctx * ctx) as f64)
}

/// How fast this machine does the three kinds of work a stage's time is made of.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rates {
    /// f32 matrix-product operations per second.
    pub matmul: f64,
    /// Logits per second read into token statistics (loss, entropy, rank).
    pub logits: f64,
    /// Activation values per second through the per-neuron statistics (moments, histogram, top-k).
    pub values: f64,
}

impl Rates {
    pub fn measure() -> Rates {
        Rates { matmul: measure_matmul_rate(), logits: measure_logit_rate(), values: measure_value_rate() }
    }
}

/// The best of three timings of `f` after a warm-up, in seconds.
fn best_of_three(mut f: impl FnMut()) -> f64 {
    f();
    (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
        .max(1e-9)
}

/// Logits per second through `token_stats`, on [4, 64, 50257] logits.
pub fn measure_logit_rate() -> f64 {
    let (b, t, v) = (4, 64, 50257);
    let x: Vec<f32> = (0..b * t * v).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 100.0).collect();
    let logits = candle_core::Tensor::from_vec(x, (b, t, v), &candle_core::Device::Cpu).expect("logits");
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 31 % v) as u32).collect();
    let tokens = candle_core::Tensor::from_vec(ids, (b, t), &candle_core::Device::Cpu).expect("tokens");
    let secs = best_of_three(|| {
        let _ = super::outputs::token_stats(&logits, &tokens, super::outputs::Wanted::LOSS);
    });
    (b * t * v) as f64 / secs
}

/// Activation values per second through `NeuronStats::add` (GPT-2 small's 3,072 neurons, the
/// default histogram, top and bottom 20), on 256 positions.
pub fn measure_value_rate() -> f64 {
    use crate::stats::neuron::{NeuronStats, Position};
    let (n, rows) = (3072, 256);
    let x: Vec<f32> = (0..n * rows).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 200.0).collect();
    let edges = crate::stats::histogram::Histogram::linspace(-10.0, 15.0, 256);
    let positions: Vec<Position> =
        (0..rows).map(|row| Position { row, index: row as u64, token: (row * 13) as u32 }).collect();
    let mut stats = NeuronStats::new(n, &edges, 20, 20, None);
    let secs = best_of_three(|| stats.add(&x, &positions));
    (n * rows) as f64 / secs
}

/// This machine's f32 matmul rate in FLOP/s: the best of five timed products of GPT-2-small's MLP
/// shapes ([1024 × 768] · [768 × 3072] and back) after a warm-up, on every thread of the pool.
pub fn measure_matmul_rate() -> f64 {
    let mut best: f64 = 0.0;
    for (m, k, n) in [(1024, 768, 3072), (1024, 3072, 768)] {
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 97) as f32 - 48.0) / 97.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i % 89) as f32 - 44.0) / 89.0).collect();
        let mut c = vec![0f32; m * n];
        matmul(&mut c, Mat::n(&a), Mat::n(&b), m, n, k, false);
        for _ in 0..5 {
            let t = Instant::now();
            matmul(&mut c, Mat::n(&a), Mat::n(&b), m, n, k, false);
            best = best.max(2.0 * (m * k * n) as f64 / t.elapsed().as_secs_f64().max(1e-9));
        }
    }
    best
}
