//! Training small GPT-2-architecture models with candle's autograd: seeded initialisation, AdamW
//! with warm-up and cosine decay, weight decay on matrices only, global gradient clipping, held-out
//! evaluation; deterministic on the CPU for a seed. The result is saved in Hugging Face layout.

pub mod export;

use crate::model::random::gpt2_params;
use crate::model::weights::{Ln, Weights};
use crate::model::{Activation, Model, ModelConfig, Processing, Request, Start};
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;

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

/// Trainable weights: the model's tensors are the variables' own (updated in place).
pub struct Trainable {
    pub model: Model,
    decay: Vec<Var>,
    no_decay: Vec<Var>,
}

fn var(t: &Tensor, list: &mut Vec<Var>) -> Result<Tensor> {
    let v = Var::from_tensor(t)?;
    let t = v.as_tensor().clone();
    list.push(v);
    Ok(t)
}

impl Trainable {
    /// A seeded GPT-2 initialisation with tied embeddings.
    pub fn init(cfg: ModelConfig, seed: u64) -> Result<Trainable> {
        let dev = Device::Cpu;
        let base = Weights::from_params(gpt2_params(&cfg, seed, &dev)?, &cfg)?;
        let (mut d, mut nd) = (Vec::new(), Vec::new());
        let ln = |l: &Ln, nd: &mut Vec<Var>| -> Result<Ln> {
            Ok(Ln {
                w: l.w.as_ref().map(|t| var(t, nd)).transpose()?,
                b: l.b.as_ref().map(|t| var(t, nd)).transpose()?,
            })
        };
        let w_e = var(&base.w_e, &mut d)?;
        let mut blocks = Vec::new();
        for b in &base.blocks {
            let mut nb = b.clone();
            nb.ln1 = ln(&b.ln1, &mut nd)?;
            nb.ln2 = ln(&b.ln2, &mut nd)?;
            nb.w_qkv = var(&b.w_qkv, &mut d)?;
            nb.b_qkv = var(&b.b_qkv, &mut nd)?;
            nb.w_o = var(&b.w_o, &mut d)?;
            nb.b_o = var(&b.b_o, &mut nd)?;
            nb.w_in = var(&b.w_in, &mut d)?;
            nb.b_in = var(&b.b_in, &mut nd)?;
            nb.w_out = var(&b.w_out, &mut d)?;
            nb.b_out = var(&b.b_out, &mut nd)?;
            blocks.push(nb);
        }
        let weights = Weights {
            w_u: w_e.t()?,
            w_pos: base.w_pos.as_ref().map(|t| var(t, &mut d)).transpose()?,
            w_e,
            blocks,
            ln_final: ln(&base.ln_final, &mut nd)?,
            b_u: base.b_u.clone(),
        };
        let mut model = Model::from_weights(cfg, weights, Processing::NONE, &dev, &format!("trained (seed {seed})"));
        model.portable_ops = true;
        Ok(Trainable { model, decay: d, no_decay: nd })
    }

    /// Number of trained parameters.
    pub fn n_params(&self) -> usize {
        self.decay.iter().chain(&self.no_decay).map(|v| v.elem_count()).sum()
    }

    /// Mean next-token cross-entropy of rows [n, ctx] (differentiable through the portable ops).
    pub fn loss(&self, rows: &Tensor) -> Result<Tensor> {
        let logits =
            self.model.forward(Start::Tokens(rows), &Request::logits(), &mut |_, _| Ok(()))?.context("no logits")?;
        let (b, t, v) = logits.dims3()?;
        let inputs = logits.narrow(1, 0, t - 1)?.reshape((b * (t - 1), v))?;
        let targets = rows.narrow(1, 1, t - 1)?.reshape(b * (t - 1))?;
        Ok(candle_nn::loss::cross_entropy(&inputs, &targets)?)
    }
}

/// Rescale gradients so their global norm is at most `max`.
fn clip(grads: &mut candle_core::backprop::GradStore, vars: &[&Var], max: f64) -> Result<()> {
    let mut total = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            total += g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        }
    }
    let norm = total.sqrt();
    if norm > max {
        for v in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * (max / norm))?);
            }
        }
    }
    Ok(())
}

/// Mean loss of held-out rows, with the fast (non-differentiable) kernels.
pub fn eval_loss(model: &Model, rows: &[u32], ctx: usize, batch: usize) -> Result<f32> {
    let fast = Model::from_weights(model.cfg.clone(), model.weights.clone(), Processing::NONE, &Device::Cpu, "");
    let n = rows.len() / ctx;
    let (mut sum, mut count) = (0f64, 0usize);
    for start in (0..n).step_by(batch) {
        let b = batch.min(n - start);
        let t = Tensor::from_slice(&rows[start * ctx..(start + b) * ctx], (b, ctx), &Device::Cpu)?;
        let logits = fast.logits(&t)?;
        let s = crate::model::outputs::token_stats(&logits, &t)?;
        sum += s.loss.iter().map(|&x| x as f64).sum::<f64>();
        count += s.loss.len();
    }
    Ok((sum / count.max(1) as f64) as f32)
}

/// Train on token rows [n, ctx]; `tick` is called after every step (progress, cancellation).
pub fn train(
    t: &Trainable,
    train_rows: &[u32],
    heldout: &[u32],
    ctx: usize,
    sched: &Schedule,
    seed: u64,
    mut tick: impl FnMut(usize) -> Result<()>,
) -> Result<Vec<LogPoint>> {
    let n = train_rows.len() / ctx;
    anyhow::ensure!(
        n >= sched.batch,
        "only {n} training rows for a batch of {}: add data or lower batch_size",
        sched.batch
    );
    let params = |wd: f64| ParamsAdamW { lr: sched.lr, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: wd };
    let mut opt_d = AdamW::new(t.decay.clone(), params(sched.weight_decay))?;
    let mut opt_nd = AdamW::new(t.no_decay.clone(), params(0.0))?;
    let all: Vec<&Var> = t.decay.iter().chain(&t.no_decay).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut order: Vec<usize> = Vec::new();
    let mut log = Vec::new();
    for step in 0..sched.steps {
        if order.len() < sched.batch {
            let mut epoch: Vec<usize> = (0..n).collect();
            epoch.shuffle(&mut rng);
            order.extend(epoch);
        }
        let idx: Vec<usize> = order.drain(..sched.batch).collect();
        let mut batch = Vec::with_capacity(sched.batch * ctx);
        for i in &idx {
            batch.extend_from_slice(&train_rows[i * ctx..(i + 1) * ctx]);
        }
        let rows = Tensor::from_vec(batch, (sched.batch, ctx), &Device::Cpu)?;
        let loss = t.loss(&rows)?;
        let mut grads = loss.backward()?;
        clip(&mut grads, &all, sched.grad_clip)?;
        let lr = sched.lr_at(step);
        opt_d.set_learning_rate(lr);
        opt_nd.set_learning_rate(lr);
        opt_d.step(&grads)?;
        opt_nd.step(&grads)?;
        let last = step + 1 == sched.steps;
        let heldout_loss =
            if (!heldout.is_empty()) && (last || (sched.eval_every > 0 && (step + 1) % sched.eval_every == 0)) {
                Some(eval_loss(&t.model, heldout, ctx, sched.batch)?)
            } else {
                None
            };
        log.push(LogPoint { step: step + 1, train_loss: loss.to_scalar::<f32>()?, lr, heldout_loss });
        tick(step + 1)?;
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

/// Cross-entropy of a unigram model fitted on `train` and evaluated on `heldout` (add-one smoothing).
pub fn unigram_loss(train: &[u32], heldout: &[u32], vocab: usize) -> f64 {
    let mut counts = vec![1f64; vocab];
    for &t in train {
        counts[t as usize] += 1.0;
    }
    let total: f64 = counts.iter().sum();
    let n = heldout.len().max(1) as f64;
    heldout.iter().map(|&t| -(counts[t as usize] / total).ln()).sum::<f64>() / n
}
