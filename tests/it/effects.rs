//! Logit lens and path-patching effects checked against hand-composed computations on fixture models.

use crate::common::{golden, load};
use candle_core::D;
use lantern::analysis::effects::{context_effect, direct_effect, Force};
use lantern::analysis::lens::{accumulated_resid, logit_direction, project};
use lantern::model::outputs::{token_stats, Wanted};
use lantern::model::{HookPoint, Processing};

#[test]
fn the_lens_at_the_final_point_equals_the_model_logits() {
    for name in ["gpt2-tiny", "pythia-tiny"] {
        let model = load(name, Processing::DEFAULT);
        let tokens = &golden(name, "golden_processed.safetensors")["tokens"];
        let (labels, stack) = accumulated_resid(&model, tokens, -1).unwrap();
        assert_eq!(labels.last().unwrap(), "final_post");
        assert_eq!(labels[0], "0_pre");
        let dir = logit_direction(&model, 3, Some(7)).unwrap();
        let lens = project(&stack, &dir).unwrap(); // [points, rows]
        let logits = model.logits(tokens).unwrap();
        let last = logits.narrow(1, 11, 1).unwrap().squeeze(1).unwrap(); // [rows, vocab]
        let b_u: Vec<f32> = model.weights.b_u.to_vec1().unwrap();
        for row in 0..2 {
            let l: Vec<f32> = last.get(row).unwrap().to_vec1().unwrap();
            let want = (l[3] - b_u[3]) - (l[7] - b_u[7]);
            let got = lens.get(labels.len() - 1).unwrap().get(row).unwrap().to_scalar::<f32>().unwrap();
            assert!((got - want).abs() < 1e-4, "{name}: {got} vs {want}");
        }
    }
}

#[test]
fn with_every_downstream_component_frozen_only_the_neurons_own_output_changes() {
    let model = load("gpt2-tiny", Processing::DEFAULT);
    let tokens = &golden("gpt2-tiny", "golden_processed.safetensors")["tokens"];
    let hook = HookPoint::parse("blocks.0.mlp.hook_post").unwrap();
    let force = Force { hook, neuron: 5, active: 2.5, inactive: -0.1 };
    let frozen =
        [HookPoint::parse("blocks.1.hook_attn_out").unwrap(), HookPoint::parse("blocks.1.hook_mlp_out").unwrap()];
    let fx = direct_effect(&model, tokens, force, &frozen, &[]).unwrap();
    // By hand: the ablated run's final residual plus (active − inactive)·w_out of the neuron.
    let last = HookPoint::parse("blocks.1.hook_resid_post").unwrap();
    let iv = [lantern::model::Intervention::new(hook, lantern::model::Action::Constant(-0.1)).neurons(vec![5])];
    let (_, cache) = model.run_with_cache(tokens, &[last], &iv).unwrap();
    let w_out = model.param("blocks.0.mlp.W_out").unwrap().get(5).unwrap();
    let resid = cache[&last].broadcast_add(&(w_out * 2.6f64).unwrap()).unwrap();
    let centred = resid.broadcast_sub(&resid.mean_keepdim(D::Minus1).unwrap()).unwrap();
    let scale = (centred.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + 1e-5).unwrap().sqrt().unwrap();
    let normed = centred.broadcast_div(&scale).unwrap();
    let logits = normed.broadcast_matmul(&model.weights.w_u).unwrap().broadcast_add(&model.weights.b_u).unwrap();
    let want = token_stats(&logits, tokens, Wanted::LOSS).unwrap().loss;
    for (a, b) in fx.direct.iter().zip(&want) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    // Nothing frozen or patched: the direct run is the original and the patched run the ablated.
    let plain = direct_effect(&model, tokens, force, &[], &[]).unwrap();
    assert_eq!(plain.direct, plain.original);
    assert_eq!(plain.only_patched, plain.ablated);
    let ctx = context_effect(&model, tokens, force, &frozen).unwrap();
    assert_eq!(ctx.direct, fx.direct);
}

/// Loss, entropy and rank by brute force in f64 from logits [b, t, v].
fn brute_stats(logits: &[f32], ids: &[u32], b: usize, t: usize, v: usize) -> Vec<(f64, f64, u32)> {
    let mut out = Vec::new();
    for bi in 0..b {
        for ti in 0..t - 1 {
            let row = &logits[(bi * t + ti) * v..(bi * t + ti + 1) * v];
            let m = row.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x as f64));
            let z: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
            let lse = m + z.ln();
            let target = ids[bi * t + ti + 1] as usize;
            let entropy: f64 = row.iter().map(|&x| -((x as f64 - lse).exp()) * (x as f64 - lse)).sum();
            let rank = row.iter().filter(|&&x| x > row[target]).count() as u32;
            out.push((lse - row[target] as f64, entropy, rank));
        }
    }
    out
}

#[test]
fn token_statistics_equal_brute_force_and_compute_only_what_is_asked() {
    // A vocabulary that is not a multiple of the 16 lanes, repeated logits (ties for the rank).
    let (b, t, v) = (3usize, 5usize, 1037usize);
    let logits: Vec<f32> = (0..b * t * v).map(|i| ((i * 7919 % 4001) as f32 / 400.0 - 5.0).round() / 2.0).collect();
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 389 % v) as u32).collect();
    let lt = candle_core::Tensor::from_vec(logits.clone(), (b, t, v), &candle_core::Device::Cpu).unwrap();
    let it = candle_core::Tensor::from_vec(ids.clone(), (b, t), &candle_core::Device::Cpu).unwrap();
    let all = token_stats(&lt, &it, Wanted::ALL).unwrap();
    let want = brute_stats(&logits, &ids, b, t, v);
    assert_eq!((all.batch, all.pos, all.loss.len()), (b, t - 1, want.len()));
    for (i, (loss, entropy, rank)) in want.iter().enumerate() {
        assert!((all.loss[i] as f64 - loss).abs() < 1e-4, "loss {i}: {} vs {loss}", all.loss[i]);
        assert!((all.entropy[i] as f64 - entropy).abs() < 1e-4, "entropy {i}: {} vs {entropy}", all.entropy[i]);
        assert_eq!(all.rank[i], *rank, "rank {i}");
    }
    let loss = token_stats(&lt, &it, Wanted::LOSS).unwrap();
    assert!(loss.entropy.is_empty() && loss.rank.is_empty());
    assert_eq!(loss.loss, all.loss);
    let bad = candle_core::Tensor::from_vec(vec![v as u32; b * t], (b, t), &candle_core::Device::Cpu).unwrap();
    assert!(token_stats(&lt, &bad, Wanted::LOSS).unwrap_err().to_string().contains("outside the vocabulary"));
}

#[test]
fn passes_resumed_from_the_first_pass_equal_full_passes() {
    use lantern::analysis::losses::Rerun;
    use lantern::model::{Action, Intervention};
    for name in ["gpt2-tiny", "pythia-tiny"] {
        let model = load(name, Processing::DEFAULT);
        let tokens = &golden(name, "golden_processed.safetensors")["tokens"];
        let hook = |s: &str| HookPoint::parse(s).unwrap();
        let full = |iv: &[Intervention]| {
            token_stats(&model.run_with_cache(tokens, &[], iv).unwrap().0, tokens, Wanted::LOSS).unwrap().loss
        };
        let close = |a: &[f32], b: &[f32], what: &str| {
            assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5), "{name} {what}: {a:?} vs {b:?}");
        };
        let later = [Intervention::new(hook("blocks.1.mlp.hook_post"), Action::Zero).neurons(vec![3])];
        // The first pass changes the residual stream entering layer 1: it must not be resumed from.
        let first = [Intervention::new(hook("blocks.1.hook_resid_pre"), Action::Scale(0.5))];
        let (p, loss, _) = Rerun::first(&model, tokens, &first, &[], &[1]).unwrap();
        close(&loss, &full(&first), "first pass");
        close(&p.run(&later, &[]).unwrap().0, &full(&later), "after an intervened first pass");
        // A clean first pass: resumed from layer 1, the same losses and captures.
        let (p, loss, _) = Rerun::first(&model, tokens, &[], &[], &[1]).unwrap();
        close(&loss, &full(&[]), "clean");
        let out = hook("blocks.1.hook_mlp_out");
        let (l, cache) = p.run(&later, &[out]).unwrap();
        close(&l, &full(&later), "resumed");
        let (_, want) = model.run_with_cache(tokens, &[out], &later).unwrap();
        let diff = (&cache[&out] - &want[&out]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{name}: capture differs by {diff}");
    }
}
