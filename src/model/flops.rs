//! What a model's forward pass costs: floating-point operations per token (matrix products and
//! attention), the bytes of its weights and of a batch's activations, and this machine's measured
//! f32 matmul rate, the unit in which `lantern plan --cost` turns operations into time.

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
