//! The hooked transformer equals TransformerLens on the fixture models: every hook, logits,
//! per-token loss, processed weights and ablation goldens, raw and processed.

use crate::common::{assert_close, fixture, golden, load, max_abs_diff};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{Device, Tensor};
use lantern::model::outputs::loss_per_token;
use lantern::model::{Action, HookPoint, Intervention, Model, Processing};
use std::collections::HashMap;

const MODELS: &[&str] = &["gpt2-tiny", "pythia-tiny", "gpt2-crfm-tiny", "solu-tiny"];
const TOL: f32 = 1e-4;

fn processing(variant: &str) -> Processing {
    Processing::from_name(variant).unwrap()
}

fn check_variant(model: &Model, name: &str, variant: &str) {
    let g = golden(name, &format!("golden_{variant}.safetensors"));
    let opt = golden(name, &format!("golden_{variant}_opt.safetensors"));
    let tokens = &g["tokens"];
    let mut hooks = Vec::new();
    for k in g.keys().chain(opt.keys()) {
        if let Some(h) = HookPoint::parse(k) {
            assert_eq!(h.to_string(), *k, "hook name round trip");
            hooks.push(h);
        }
    }
    assert!(hooks.len() > 20, "{name}: too few hooks in golden");
    let (logits, cache) = model.run_with_cache(tokens, &hooks, &[]).unwrap();
    for h in &hooks {
        let want = g.get(&h.to_string()).or_else(|| opt.get(&h.to_string())).unwrap();
        let got = cache.get(h).unwrap_or_else(|| panic!("{name} {variant}: {h} not captured"));
        assert_close(&format!("{name} {variant} {h}"), got, want, TOL);
    }
    assert_close(&format!("{name} {variant} logits"), &logits, &g["logits"], TOL);
    let loss = loss_per_token(&logits, tokens).unwrap();
    assert_close(&format!("{name} {variant} loss"), &loss, &g["loss_per_token"], TOL);
}

#[test]
fn every_hook_logits_and_loss_match_transformer_lens() {
    for name in MODELS {
        for variant in ["raw", "processed"] {
            let model = load(name, processing(variant));
            check_variant(&model, name, variant);
        }
    }
}

#[test]
fn portable_tensor_ops_match_fused_kernels() {
    for name in MODELS {
        let mut model = load(name, processing("processed"));
        model.portable_ops = true;
        check_variant(&model, name, "processed");
    }
}

#[test]
fn processed_and_raw_weights_match_transformer_lens() {
    for name in MODELS {
        for variant in ["raw", "processed"] {
            let path = fixture(name).join(format!("weights_{variant}.safetensors"));
            let want: HashMap<String, Tensor> = if path.exists() {
                golden(name, &format!("weights_{variant}.safetensors"))
            } else {
                // SoLU: TL's raw parameters are exactly the checkpoint's (read lazily: candle
                // rejects the bool mask buffer when loading the whole file).
                let st = unsafe { MmapedSafetensors::new(fixture(name).join("model.safetensors")) }.unwrap();
                st.tensors()
                    .into_iter()
                    .filter(|(k, _)| !k.ends_with("attn.mask") && !k.ends_with("attn.IGNORE"))
                    .map(|(k, _)| (k.clone(), st.load(&k, &Device::Cpu).unwrap()))
                    .collect()
            };
            let model = load(name, processing(variant));
            let mut names = model.weights.param_names();
            for (k, w) in &want {
                let got = model.param(k).unwrap_or_else(|e| panic!("{name} {variant}: {e}"));
                assert_close(&format!("{name} {variant} {k}"), &got, w, TOL);
                names.retain(|n| n != k);
            }
            // The only parameter TL has that a checkpoint may lack is the zero unembedding bias.
            names.retain(|n| n != "unembed.b_U");
            assert!(names.is_empty(), "{name} {variant}: extra parameters {names:?}");
        }
    }
}

#[test]
fn zero_and_mean_ablation_match_transformer_lens() {
    for name in MODELS {
        let g = golden(name, "interventions.safetensors");
        let model = load(name, processing("processed"));
        let tokens = &g["tokens"];
        let hook = HookPoint::parse("blocks.1.mlp.hook_post").unwrap();
        let clean = model.logits(tokens).unwrap();
        assert_close(&format!("{name} clean"), &clean, &g["clean.logits"], TOL);
        let mean: f32 = g["mean_ablate.value"].to_vec1::<f32>().unwrap()[0];
        for (key, action) in [("zero_ablate", Action::Zero), ("mean_ablate", Action::Constant(mean))] {
            let iv = [Intervention::new(hook, action).neurons(vec![7])];
            let (logits, _) = model.run_with_cache(tokens, &[], &iv).unwrap();
            assert_close(&format!("{name} {key} logits"), &logits, &g[&format!("{key}.logits")], TOL);
            let loss = loss_per_token(&logits, tokens).unwrap();
            assert_close(&format!("{name} {key} loss"), &loss, &g[&format!("{key}.loss_per_token")], TOL);
        }
        // The mean itself is the clean activation's mean over every (row, position).
        let (_, cache) = model.run_with_cache(tokens, &[hook], &[]).unwrap();
        let m = cache[&hook].narrow(2, 7, 1).unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
        assert!((m - mean).abs() < 1e-5, "{name}: mean {m} vs {mean}");
    }
}

#[test]
fn a_forward_that_needs_layer_zero_stops_there() {
    let model = load("gpt2-tiny", processing("processed"));
    let g = golden("gpt2-tiny", "golden_processed.safetensors");
    let hook = HookPoint::parse("blocks.0.mlp.hook_post").unwrap();
    let mut seen = Vec::new();
    let req = lantern::model::Request::capture([hook, HookPoint::parse("blocks.0.hook_resid_post").unwrap()]);
    let logits = model
        .forward(lantern::model::Start::Tokens(&g["tokens"]), &req, &mut |h, _t: Tensor| {
            seen.push(h);
            Ok(())
        })
        .unwrap();
    assert!(logits.is_none());
    assert_eq!(seen.len(), 2);
}

#[test]
fn sequential_residual_neox_composes_attention_then_mlp() {
    // pythia-tiny with `use_parallel_residual = false`: the MLP reads resid_mid = resid_pre +
    // attn_out, and the fused kernels agree with the portable tensor ops.
    let dir = tempfile::tempdir().unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("pythia-tiny").join("config.json")).unwrap()).unwrap();
    config["use_parallel_residual"] = false.into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    std::fs::copy(fixture("pythia-tiny").join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
    let files = lantern::model::ModelFiles::from_folder(dir.path()).unwrap();
    let mut model = lantern::model::Model::load(&files, Processing::NONE, &Device::Cpu).unwrap();
    assert!(!model.cfg.parallel_attn_mlp);
    let tokens = &golden("pythia-tiny", "golden_raw.safetensors")["tokens"];
    let names =
        ["hook_resid_pre", "hook_attn_out", "hook_resid_mid", "ln2.hook_normalized", "hook_mlp_out", "hook_resid_post"];
    let hooks: Vec<HookPoint> = names.iter().map(|n| HookPoint::parse(&format!("blocks.1.{n}")).unwrap()).collect();
    let (logits, cache) = model.run_with_cache(tokens, &hooks, &[]).unwrap();
    let get = |n: &str| cache[&HookPoint::parse(&format!("blocks.1.{n}")).unwrap()].clone();
    let mid = (get("hook_resid_pre") + get("hook_attn_out")).unwrap();
    assert_close("resid_mid", &get("hook_resid_mid"), &mid, 1e-5);
    let centred = mid.broadcast_sub(&mid.mean_keepdim(2).unwrap()).unwrap();
    let scale = (centred.sqr().unwrap().mean_keepdim(2).unwrap() + model.cfg.eps).unwrap().sqrt().unwrap();
    // TL's LayerNorm fires hook_normalized after its weight and bias.
    let (w, b) = (model.param("blocks.1.ln2.w").unwrap(), model.param("blocks.1.ln2.b").unwrap());
    let normalized = centred.broadcast_div(&scale).unwrap().broadcast_mul(&w).unwrap().broadcast_add(&b).unwrap();
    assert_close("ln2 reads resid_mid", &get("ln2.hook_normalized"), &normalized, 1e-4);
    assert_close("resid_post", &get("hook_resid_post"), &(mid + get("hook_mlp_out")).unwrap(), 1e-5);
    model.portable_ops = true;
    let (portable, _) = model.run_with_cache(tokens, &hooks, &[]).unwrap();
    assert_close("fused vs portable", &logits, &portable, 1e-4);
    let parallel = load("pythia-tiny", Processing::NONE).logits(tokens).unwrap();
    assert!(max_abs_diff(&logits, &parallel) > 1e-3, "sequential and parallel residuals give the same logits");
}
