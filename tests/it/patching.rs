//! Activation patching equals TransformerLens's goldens (raw metric and normalised), and the
//! batched, prefix-reusing sweep equals one full forward pass per patch exactly.

use crate::common::{golden, load};
use lantern::analysis::patching::{layer_position_patches, neuron_patches, normalise, prompt, Metric, Prepared};
use lantern::model::hooks::BlockSite;
use lantern::model::Processing;

const MODELS: &[&str] = &["gpt2-tiny", "pythia-tiny", "gpt2-crfm-tiny", "solu-tiny"];

fn ids(t: &candle_core::Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_dtype(candle_core::DType::U32).unwrap().to_vec1().unwrap()
}

fn json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(crate::common::fixture(name).join("interventions.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn patching_sweeps_match_transformer_lens() {
    for name in MODELS {
        let g = golden(name, "interventions.safetensors");
        let j = &json(name)["patching"];
        let model = load(name, Processing::DEFAULT);
        let metric =
            Metric::LogitDiff { answer: j["A"].as_u64().unwrap() as u32, wrong: j["B"].as_u64().unwrap() as u32 };
        let clean = prompt(&model, &ids(&g["patch.clean_tokens"])).unwrap();
        let corrupt = prompt(&model, &ids(&g["patch.corrupted_tokens"])).unwrap();
        let n_pos = clean.dim(1).unwrap();
        let layers = model.cfg.n_layers;
        let mut all = Vec::new();
        for (key, site) in
            [("resid_pre", BlockSite::ResidPre), ("attn_out", BlockSite::AttnOut), ("mlp_out", BlockSite::MlpOut)]
        {
            all.push((format!("patch.{key}"), layer_position_patches(layers, n_pos, site)));
        }
        let neurons: Vec<usize> = (0..model.cfg.d_mlp).collect();
        all.push(("patch.neuron_L1_post".into(), neuron_patches(1, &neurons, None)));
        let every: Vec<_> = all.iter().flat_map(|(_, p)| p.clone()).collect();
        let prep = Prepared::new(&model, &clean, &corrupt, metric, &every).unwrap();
        assert!((prep.clean_metric - j["metric_clean"].as_f64().unwrap() as f32).abs() < 1e-4);
        assert!((prep.corrupt_metric - j["metric_corrupted"].as_f64().unwrap() as f32).abs() < 1e-4);
        for (key, patches) in &all {
            let raw = prep.run_batched(patches, 7, |_| Ok(())).unwrap();
            let want_raw: Vec<f32> = g[&format!("{key}.metric")].flatten_all().unwrap().to_vec1().unwrap();
            let want: Vec<f32> = g[key.as_str()].flatten_all().unwrap().to_vec1().unwrap();
            for (i, p) in patches.iter().enumerate() {
                assert!((raw[i] - want_raw[i]).abs() < 1e-4, "{name} {key} {p:?}: raw {} vs {}", raw[i], want_raw[i]);
                let score = normalise(raw[i], prep.clean_metric, prep.corrupt_metric);
                assert!((score - want[i]).abs() < 1e-4, "{name} {key} {p:?}: score {score} vs {}", want[i]);
            }
        }
    }
}

#[test]
fn batched_prefix_reusing_sweep_equals_one_pass_per_patch_exactly() {
    for name in MODELS {
        let g = golden(name, "interventions.safetensors");
        let model = load(name, Processing::DEFAULT);
        let metric = Metric::Loss { answer: 3 };
        let clean = prompt(&model, &ids(&g["patch.clean_tokens"])).unwrap();
        let corrupt = prompt(&model, &ids(&g["patch.corrupted_tokens"])).unwrap();
        let mut patches = layer_position_patches(model.cfg.n_layers, clean.dim(1).unwrap(), BlockSite::MlpOut);
        patches.extend(neuron_patches(0, &[1, 5, 9], Some(4)));
        patches.extend(lantern::analysis::patching::head_patches(model.cfg.n_layers, model.cfg.n_heads, None));
        let prep = Prepared::new(&model, &clean, &corrupt, metric, &patches).unwrap();
        let batched = prep.run_batched(&patches, 5, |_| Ok(())).unwrap();
        for (p, b) in patches.iter().zip(&batched) {
            let naive = prep.run_one(p).unwrap();
            assert_eq!(naive.to_bits(), b.to_bits(), "{name} {p:?}: naive {naive} vs batched {b}");
        }
    }
}
