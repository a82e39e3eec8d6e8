//! Training small GPT-2-architecture models on the CPU: seeded initialisation, a hand-written
//! forward and backward pass (`step`), AdamW with warm-up and cosine decay, weight decay on matrices
//! only, global gradient clipping, held-out evaluation; the same seed gives the same loss curve bit
//! for bit. The result is saved in Hugging Face layout.

pub mod baseline;
pub mod export;
mod kernels;
pub mod params;
mod step;

use crate::model::{Activation, Model, ModelConfig};
use anyhow::Result;
use params::Layout;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use step::Step;

/// Optimisation settings.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub eval_every: usize,
}

impl Schedule {
    /// Linear warm-up to `lr`, then cosine decay to lr/10.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let t = (step - self.warmup) as f64 / (self.steps - self.warmup).max(1) as f64;
        self.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos()))
    }
}

/// One logged point of the loss curve.
#[derive(Clone, Debug, PartialEq)]
pub struct LogPoint {
    pub step: usize,
    pub train_loss: f32,
    pub lr: f64,
    pub heldout_loss: Option<f32>,
}

/// A model being trained: its configuration and parameters in one flat buffer.
pub struct Trainable {
    pub cfg: ModelConfig,
    pub layout: Layout,
    pub params: Vec<f32>,
    seed: u64,
}

impl Trainable {
    /// A seeded GPT-2 initialisation with tied embeddings.
    pub fn init(cfg: ModelConfig, seed: u64) -> Result<Trainable> {
        anyhow::ensure!(cfg.act != Activation::SoluLn, "solu_ln is not trainable; use gelu_new, gelu or relu");
        let layout = Layout::new(&cfg);
        let params = layout.init(&cfg, seed)?;
        Ok(Trainable { cfg, layout, params, seed })
    }

    /// Number of trained parameters.
    pub fn n_params(&self) -> usize {
        self.layout.len
    }

    /// The model with the current parameters, runnable like a loaded one.
    pub fn model(&self) -> Result<Model> {
        self.layout.model(&self.cfg, &self.params, &format!("trained (seed {})", self.seed))
    }

    /// Mean next-token loss over token rows of `ctx`, `batch` rows per forward pass.
    pub fn heldout_loss(&self, rows: &[u32], ctx: usize, batch: usize) -> Result<f32> {
        let (mut sum, mut count) = (0f64, 0usize);
        let mut step = Step::default();
        for chunk in rows.chunks(batch * ctx) {
            let (s, c) = step.loss_sum(self, chunk, ctx)?;
            sum += s;
            count += c;
        }
        Ok((sum / count.max(1) as f64) as f32)
    }
}

/// Train on token rows [n, ctx]; `tick` is called with each step's log point (progress, the loss,
/// cancellation).
pub fn train(
    t: &mut Trainable,
    train_rows: &[u32],
    heldout: &[u32],
    ctx: usize,
    sched: &Schedule,
    seed: u64,
    mut tick: impl FnMut(&LogPoint) -> Result<()>,
) -> Result<Vec<LogPoint>> {
    let n = train_rows.len() / ctx;
    anyhow::ensure!(
        n >= sched.batch,
        "only {n} training rows for a batch of {}: add data or lower batch_size",
        sched.batch
    );
    let len = t.layout.len;
    let (mut grad, mut m, mut v) = (vec![0f32; len], vec![0f32; len], vec![0f32; len]);
    let (beta1, beta2) = (0.9f64, 0.95f64);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut order: Vec<usize> = Vec::new();
    let mut batch = Vec::with_capacity(sched.batch * ctx);
    let mut work = Step::default();
    let mut log = Vec::new();
    for step in 0..sched.steps {
        if order.len() < sched.batch {
            let mut epoch: Vec<usize> = (0..n).collect();
            epoch.shuffle(&mut rng);
            order.extend(epoch);
        }
        batch.clear();
        for i in order.drain(..sched.batch) {
            batch.extend_from_slice(&train_rows[i * ctx..(i + 1) * ctx]);
        }
        let loss = work.loss_and_grad(t, &batch, ctx, &mut grad)?;
        let norm = kernels::sum_squares(&grad).sqrt();
        let lr = sched.lr_at(step);
        let k = (step + 1) as i32;
        let adam = |weight_decay: f64| kernels::AdamStep {
            lr: lr as f32,
            weight_decay: weight_decay as f32,
            beta1: beta1 as f32,
            beta2: beta2 as f32,
            eps: 1e-8,
            scale_m: (1.0 / (1.0 - beta1.powi(k))) as f32,
            scale_v: (1.0 / (1.0 - beta2.powi(k))) as f32,
            grad_scale: if norm > sched.grad_clip { (sched.grad_clip / norm) as f32 } else { 1.0 },
        };
        let d = t.layout.decayed;
        kernels::adamw(&mut t.params[..d], &grad[..d], &mut m[..d], &mut v[..d], adam(sched.weight_decay));
        kernels::adamw(&mut t.params[d..], &grad[d..], &mut m[d..], &mut v[d..], adam(0.0));
        let last = step + 1 == sched.steps;
        let heldout_loss =
            if (!heldout.is_empty()) && (last || (sched.eval_every > 0 && (step + 1) % sched.eval_every == 0)) {
                Some(t.heldout_loss(heldout, ctx, sched.batch)?)
            } else {
                None
            };
        let point = LogPoint { step: step + 1, train_loss: loss, lr, heldout_loss };
        tick(&point)?;
        log.push(point);
    }
    Ok(log)
}

/// The GPT-2 configuration of a training run.
pub fn config(
    layers: usize,
    d_model: usize,
    heads: usize,
    d_mlp: usize,
    vocab: usize,
    ctx: usize,
    act: Activation,
) -> ModelConfig {
    let mut cfg = ModelConfig::gpt2(layers, d_model, heads, d_mlp, vocab, ctx);
    cfg.act = act;
    cfg
}
