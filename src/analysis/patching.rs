//! Activation patching between a clean and a corrupted prompt: the metric (logit difference,
//! probability, loss), its normalisation, and sweeps over (layer, position), heads and neurons.
//! Sweeps run many patched copies per forward batch and start each from the corrupted residual
//! stream of the patched layer, so the unchanged prefix of the network is never recomputed.

use crate::model::hooks::{BlockSite, HookPoint};
use crate::model::{Action, Intervention, Model, Request, Start};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use std::collections::BTreeMap;

/// What is read off the final position's logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Metric {
    /// logit[answer] − logit[wrong]
    LogitDiff { answer: u32, wrong: u32 },
    /// softmax probability of `answer`
    Prob { answer: u32 },
    /// cross-entropy of `answer`
    Loss { answer: u32 },
}

impl Metric {
    pub fn eval(&self, logits: &[f32]) -> f32 {
        let lse = || {
            let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            m + logits.iter().map(|x| ((x - m) as f64).exp()).sum::<f64>().ln() as f32
        };
        match *self {
            Metric::LogitDiff { answer, wrong } => logits[answer as usize] - logits[wrong as usize],
            Metric::Prob { answer } => (logits[answer as usize] - lse()).exp(),
            Metric::Loss { answer } => lse() - logits[answer as usize],
        }
    }

    /// The metric of every row of logits [rows, 1 or pos, vocab] at the last position.
    pub fn rows(&self, logits: &Tensor) -> Result<Vec<f32>> {
        let (b, t, v) = logits.dims3()?;
        let last =
            logits.narrow(1, t - 1, 1)?.reshape((b, v))?.to_device(&candle_core::Device::Cpu)?.to_vec2::<f32>()?;
        Ok(last.iter().map(|r| self.eval(r)).collect())
    }
}

/// `(m_patched − m_corrupt) / (m_clean − m_corrupt)`: 0 = no recovery, 1 = full.
pub fn normalise(raw: f32, clean: f32, corrupt: f32) -> f32 {
    (raw - corrupt) / (clean - corrupt)
}

/// One patch: clean values of `site` at `layer`, restricted to a position, a head and/or an index
/// of the last axis (a neuron); `None` = all.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Patch {
    pub layer: usize,
    pub site: BlockSite,
    pub position: Option<usize>,
    pub head: Option<usize>,
    pub index: Option<usize>,
}

impl Patch {
    fn hook(&self) -> HookPoint {
        HookPoint::Block(self.layer, self.site)
    }
    fn intervention(&self, source: Tensor) -> Intervention {
        Intervention {
            hook: self.hook(),
            rows: None,
            positions: self.position.map(|p| vec![p as i64]),
            heads: self.head.map(|h| vec![h]),
            index: self.index.map(|i| vec![i]),
            action: Action::Patch(source),
        }
    }
}

/// Clean and corrupted runs with what the sweeps need from them.
pub struct Prepared<'m> {
    model: &'m Model,
    metric: Metric,
    corrupted: Tensor,
    clean_acts: BTreeMap<HookPoint, Tensor>,
    corrupt_acts: BTreeMap<HookPoint, Tensor>,
    pub clean_metric: f32,
    pub corrupt_metric: f32,
}

impl<'m> Prepared<'m> {
    /// Run both prompts ([1, pos] each, same length), caching the hooks the patches touch and the
    /// residual stream entering each of their layers.
    pub fn new(
        model: &'m Model,
        clean: &Tensor,
        corrupted: &Tensor,
        metric: Metric,
        patches: &[Patch],
    ) -> Result<Prepared<'m>> {
        if clean.dims() != corrupted.dims() {
            bail!("clean {:?} and corrupted {:?} prompts differ in length", clean.dims(), corrupted.dims());
        }
        let mut hooks: Vec<HookPoint> = patches.iter().map(|p| p.hook()).collect();
        hooks.extend(patches.iter().map(|p| HookPoint::Block(p.layer, BlockSite::ResidPre)));
        hooks.sort();
        hooks.dedup();
        let (clean_logits, clean_acts) = model.run_with_cache(clean, &hooks, &[])?;
        let (corrupt_logits, corrupt_acts) = model.run_with_cache(corrupted, &hooks, &[])?;
        let clean_metric = metric.rows(&clean_logits)?[0];
        let corrupt_metric = metric.rows(&corrupt_logits)?[0];
        Ok(Prepared {
            model,
            metric,
            corrupted: corrupted.clone(),
            clean_acts,
            corrupt_acts,
            clean_metric,
            corrupt_metric,
        })
    }

    /// The metric with one patch, by a full forward pass from the corrupted tokens (the reference
    /// the batched sweep must equal).
    pub fn run_one(&self, p: &Patch) -> Result<f32> {
        let iv = [p.intervention(self.clean_acts[&p.hook()].clone())];
        let req = Request::logits().last_position_only().with_interventions(&iv);
        let logits =
            self.model.forward(Start::Tokens(&self.corrupted), &req, &mut |_, _| Ok(()))?.context("no logits")?;
        Ok(self.metric.rows(&logits)?[0])
    }

    /// The metric for every patch, `batch` patched copies per forward pass, each pass starting
    /// from the corrupted residual stream entering the patched layer.
    pub fn run_batched(
        &self,
        patches: &[Patch],
        batch: usize,
        mut tick: impl FnMut(usize) -> Result<()>,
    ) -> Result<Vec<f32>> {
        let mut out = vec![0f32; patches.len()];
        // Group by hook so that one pass patches one hook (each row its own entries).
        let mut groups: BTreeMap<HookPoint, Vec<usize>> = BTreeMap::new();
        for (i, p) in patches.iter().enumerate() {
            groups.entry(p.hook()).or_default().push(i);
        }
        for (hook, idx) in groups {
            let layer = hook.layer().expect("block hook");
            let resid = &self.corrupt_acts[&HookPoint::Block(layer, BlockSite::ResidPre)];
            let (clean, corrupt) = (&self.clean_acts[&hook], &self.corrupt_acts[&hook]);
            for chunk in idx.chunks(batch.max(1)) {
                let n = chunk.len();
                let mut rows = Vec::with_capacity(n);
                for &i in chunk {
                    // This row's activation: corrupted, with the patched entries taken from clean.
                    let sel = patches[i].intervention(clean.clone());
                    rows.push(sel.apply(corrupt)?);
                }
                let source = Tensor::cat(&rows, 0)?;
                let start = resid.repeat((n, 1, 1))?;
                let iv = [Intervention::new(hook, Action::Patch(source))];
                let req = Request::logits().last_position_only().with_interventions(&iv);
                let logits = self
                    .model
                    .forward(Start::Resid { layer, resid: start }, &req, &mut |_, _| Ok(()))?
                    .context("no logits")?;
                for (&i, m) in chunk.iter().zip(self.metric.rows(&logits)?) {
                    out[i] = m;
                }
                tick(n)?;
            }
        }
        Ok(out)
    }
}

/// Every (layer, position) patch of a residual component.
pub fn layer_position_patches(n_layers: usize, n_pos: usize, site: BlockSite) -> Vec<Patch> {
    (0..n_layers)
        .flat_map(|layer| (0..n_pos).map(move |p| Patch { layer, site, position: Some(p), head: None, index: None }))
        .collect()
}

/// Every neuron of `layer`'s `mlp.hook_post`, patched at all positions (or one).
pub fn neuron_patches(layer: usize, neurons: &[usize], position: Option<usize>) -> Vec<Patch> {
    neurons.iter().map(|&n| Patch { layer, site: BlockSite::Post, position, head: None, index: Some(n) }).collect()
}

/// Every head's `attn.hook_z` at every layer, all positions (or one).
pub fn head_patches(n_layers: usize, n_heads: usize, position: Option<usize>) -> Vec<Patch> {
    (0..n_layers)
        .flat_map(|layer| {
            (0..n_heads).map(move |h| Patch { layer, site: BlockSite::Z, position, head: Some(h), index: None })
        })
        .collect()
}

/// Token ids as a [1, pos] tensor on the model's device.
pub fn prompt(model: &Model, ids: &[u32]) -> Result<Tensor> {
    Ok(Tensor::from_slice(ids, (1, ids.len()), &candle_core::Device::Cpu)?
        .to_dtype(DType::U32)?
        .to_device(&model.device)?)
}
