//! Direct and indirect effects of a neuron by path patching (the German-neuron study): the neuron
//! forced to an "active" or "inactive" value while chosen downstream components are frozen to
//! their values from another run, and per-token losses of each combination.

use super::losses::{first_layer, Cache, Rerun};
use crate::model::{Action, HookPoint, Intervention, Model};
use anyhow::Result;
use candle_core::Tensor;

/// A neuron and the two values it is forced to.
#[derive(Clone, Copy, Debug)]
pub struct Force {
    pub hook: HookPoint,
    pub neuron: usize,
    pub active: f32,
    pub inactive: f32,
}

impl Force {
    fn set(&self, value: f32) -> Intervention {
        Intervention::new(self.hook, Action::Constant(value)).neurons(vec![self.neuron])
    }
}

fn patch_from(cache: &Cache, hooks: &[HookPoint]) -> Vec<Intervention> {
    hooks.iter().map(|h| Intervention::new(*h, Action::Patch(cache[h].clone()))).collect()
}

/// Per-token losses of the four runs of `get_direct_effect` (each [rows × (pos − 1)]).
#[derive(Clone, Debug)]
pub struct DirectEffect {
    /// Neuron forced active.
    pub original: Vec<f32>,
    /// Neuron forced inactive.
    pub ablated: Vec<f32>,
    /// Neuron active, `frozen` components from the ablated run: the neuron reaches the logits
    /// directly and through `patched` only ("context and activated").
    pub direct: Vec<f32>,
    /// Neuron inactive, `frozen` from the ablated run, `patched` from the direct run: its effect
    /// flows only through `patched` ("only activated", MLP path patched).
    pub only_patched: Vec<f32>,
}

pub fn direct_effect(
    model: &Model,
    tokens: &Tensor,
    force: Force,
    frozen: &[HookPoint],
    patched: &[HookPoint],
) -> Result<DirectEffect> {
    let both: Vec<HookPoint> = frozen.iter().chain(patched).copied().collect();
    let starts = Vec::from_iter(first_layer(both.iter().copied().chain([force.hook])));
    let (p, original, _) = Rerun::first(model, tokens, &[force.set(force.active)], &[], &starts)?;
    let (ablated, cache_a) = p.run(&[force.set(force.inactive)], &both)?;
    let mut iv = vec![force.set(force.active)];
    iv.extend(patch_from(&cache_a, frozen));
    let (direct, cache_d) = p.run(&iv, patched)?;
    let mut iv = vec![force.set(force.inactive)];
    iv.extend(patch_from(&cache_a, frozen));
    iv.extend(patch_from(&cache_d, patched));
    let (only_patched, _) = p.run(&iv, &[])?;
    Ok(DirectEffect { original, ablated, direct, only_patched })
}

/// Per-token losses of `get_context_effect`'s whole-text decomposition.
#[derive(Clone, Debug)]
pub struct ContextEffect {
    /// No intervention.
    pub original: Vec<f32>,
    /// Neuron forced inactive.
    pub ablated: Vec<f32>,
    /// Neuron forced active, downstream components from the ablated run: the study's "direct"
    /// bar, in mediation terms the natural *indirect* effect (through downstream components).
    pub direct: Vec<f32>,
    /// Neuron forced inactive, downstream from the activated run: the study's "indirect" bar,
    /// in mediation terms the natural *direct* effect.
    pub indirect: Vec<f32>,
}

pub fn context_effect(model: &Model, tokens: &Tensor, force: Force, downstream: &[HookPoint]) -> Result<ContextEffect> {
    let starts = Vec::from_iter(first_layer(downstream.iter().copied().chain([force.hook])));
    let (p, original, _) = Rerun::first(model, tokens, &[], &[], &starts)?;
    let (ablated, cache_a) = p.run(&[force.set(force.inactive)], downstream)?;
    let (_, cache_b) = p.run(&[force.set(force.active)], downstream)?;
    let mut iv = vec![force.set(force.active)];
    iv.extend(patch_from(&cache_a, downstream));
    let (direct, _) = p.run(&iv, &[])?;
    let mut iv = vec![force.set(force.inactive)];
    iv.extend(patch_from(&cache_b, downstream));
    let (indirect, _) = p.run(&iv, &[])?;
    Ok(ContextEffect { original, ablated, direct, indirect })
}
