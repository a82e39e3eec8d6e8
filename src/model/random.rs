//! Models with seeded random weights (GPT-2 initialisation), for benchmarks, tests and training.

use super::checkpoint::Params;
use super::config::ModelConfig;
use super::{weights::Weights, Model, Processing};
use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// TL-layout parameters drawn like GPT-2's initialisation: N(0, 0.02) matrices (output
/// projections scaled by 1/sqrt(2·layers)), LayerNorm weights 1, biases 0.
pub fn gpt2_params(cfg: &ModelConfig, seed: u64, dev: &Device) -> Result<Params> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (d, h, dh, m) = (cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp);
    let mut normal = |shape: &[usize], std: f64| -> Result<Tensor> {
        let dist = Normal::new(0.0, std).expect("valid std");
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| dist.sample(&mut rng) as f32).collect();
        Ok(Tensor::from_vec(v, shape, dev)?)
    };
    let proj_std = 0.02 / (2.0 * cfg.n_layers as f64).sqrt();
    let mut p = Params::new();
    p.insert("embed.W_E".into(), normal(&[cfg.d_vocab, d], 0.02)?);
    if cfg.rotary_dim == 0 {
        p.insert("pos_embed.W_pos".into(), normal(&[cfg.n_ctx, d], 0.01)?);
    }
    for l in 0..cfg.n_layers {
        let t = format!("blocks.{l}.");
        for n in ["Q", "K", "V"] {
            p.insert(format!("{t}attn.W_{n}"), normal(&[h, d, dh], 0.02)?);
            p.insert(format!("{t}attn.b_{n}"), Tensor::zeros((h, dh), candle_core::DType::F32, dev)?);
        }
        p.insert(format!("{t}attn.W_O"), normal(&[h, dh, d], proj_std)?);
        p.insert(format!("{t}mlp.W_in"), normal(&[d, m], 0.02)?);
        p.insert(format!("{t}mlp.W_out"), normal(&[m, d], proj_std)?);
        for (k, n) in [("attn.b_O", d), ("mlp.b_in", m), ("mlp.b_out", d), ("ln1.b", d), ("ln2.b", d)] {
            p.insert(format!("{t}{k}"), Tensor::zeros(n, candle_core::DType::F32, dev)?);
        }
        for k in ["ln1.w", "ln2.w"] {
            p.insert(format!("{t}{k}"), Tensor::ones(d, candle_core::DType::F32, dev)?);
        }
    }
    p.insert("ln_final.w".into(), Tensor::ones(d, candle_core::DType::F32, dev)?);
    p.insert("ln_final.b".into(), Tensor::zeros(d, candle_core::DType::F32, dev)?);
    let w_u = p["embed.W_E"].t()?.contiguous()?;
    p.insert("unembed.W_U".into(), w_u);
    p.insert("unembed.b_U".into(), Tensor::zeros(cfg.d_vocab, candle_core::DType::F32, dev)?);
    Ok(p)
}

impl Model {
    /// A model with seeded random GPT-2-style weights and no tokenizer.
    pub fn random(cfg: ModelConfig, seed: u64, dev: &Device) -> Result<Model> {
        let params = gpt2_params(&cfg, seed, dev)?;
        let weights = Weights::from_params(params, &cfg)?;
        Ok(Model::from_weights(cfg, weights, Processing::NONE, dev, &format!("random (seed {seed})")))
    }
}
