//! Activation-patching sweep on a GPT-2-small-shaped random model: 12 layers × 64 positions × 3
//! components (resid_pre, attn_out, mlp_out). Runs per second of the batched, prefix-reusing sweep
//! against one full forward pass per patch (timed on a sample of patches), in the same run.
//! Run: `cargo bench --bench patching`.

use candle_core::{Device, Tensor};
use lantern::analysis::patching::{layer_position_patches, Metric, Prepared};
use lantern::model::hooks::BlockSite;
use lantern::model::Model;
use std::time::Instant;

fn main() {
    lantern::util::sys::tune_allocator();
    let model =
        Model::random(lantern::model::ModelConfig::gpt2(12, 768, 12, 3072, 50257, 1024), 0, &Device::Cpu).unwrap();
    let pos = 64;
    let clean: Vec<u32> = (0..pos).map(|i| (i * 7919 % 50257) as u32).collect();
    let mut corrupt = clean.clone();
    corrupt[pos / 2] = 1234;
    let (c, x) = (
        Tensor::from_vec(clean, (1, pos), &Device::Cpu).unwrap(),
        Tensor::from_vec(corrupt, (1, pos), &Device::Cpu).unwrap(),
    );
    let mut patches = Vec::new();
    for site in [BlockSite::ResidPre, BlockSite::AttnOut, BlockSite::MlpOut] {
        patches.extend(layer_position_patches(12, pos, site));
    }
    let metric = Metric::LogitDiff { answer: 10, wrong: 20 };
    let prep = Prepared::new(&model, &c, &x, metric, &patches).unwrap();
    let t = Instant::now();
    let batched = prep.run_batched(&patches, 32, |_| Ok(())).unwrap();
    let b_secs = t.elapsed().as_secs_f64();
    // The naive loop on an evenly spread sample (every layer and component represented).
    let sample: Vec<usize> = (0..patches.len()).step_by(patches.len() / 48).collect();
    let t = Instant::now();
    for &i in &sample {
        let m = prep.run_one(&patches[i]).unwrap();
        assert_eq!(m.to_bits(), batched[i].to_bits(), "batched and naive differ at {:?}", patches[i]);
    }
    let n_secs = t.elapsed().as_secs_f64();
    let (b_rate, n_rate) = (patches.len() as f64 / b_secs, sample.len() as f64 / n_secs);
    println!("{} patches (12 layers × {pos} positions × 3 components)", patches.len());
    println!("batched, prefix-reusing sweep: {b_rate:.1} runs/s ({b_secs:.1} s for all)");
    println!("one forward pass per patch:    {n_rate:.1} runs/s ({} sampled, identical results)", sample.len());
    println!("speed-up: {:.1}×", b_rate / n_rate);
}
