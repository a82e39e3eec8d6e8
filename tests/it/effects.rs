//! Logit lens and path-patching effects checked against hand-composed computations on fixture models.

use crate::common::{golden, load};
use candle_core::D;
use lantern::analysis::effects::{context_effect, direct_effect, Force};
use lantern::analysis::lens::{accumulated_resid, logit_direction, project};
use lantern::model::outputs::token_stats;
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
    let want = token_stats(&logits, tokens).unwrap().loss;
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
