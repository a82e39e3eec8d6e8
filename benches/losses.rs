//! The loss-reading stages' work on a Pythia-70M-shaped random model (6 layers, d_model 512,
//! 8 heads, d_mlp 2048, vocab 50,304, rotary on 16 of 64 head dims, parallel attention and MLP),
//! rows of 400 tokens: the forward pass alone, then what `ablation`, `direct_effect` (context and
//! direct modes, the german-neuron study's) and `entropy` compute per batch, in tokens/s. The same
//! passes in TransformerLens: `scripts/tl_losses.py` (run both in one session and compare).
//! Run: `cargo bench --bench losses`.

mod common;

use candle_core::{Device, Tensor};
use common::best_time as time;
use lantern::analysis::effects::{context_effect, direct_effect, Force};
use lantern::analysis::losses::Rerun;
use lantern::model::outputs::{token_stats, Wanted};
use lantern::model::{Action, Activation, Family, HookPoint, Intervention, Model, ModelConfig};
use lantern::stages::entropy::{add_batch, Metrics};

fn pythia_70m() -> ModelConfig {
    let mut cfg = ModelConfig::gpt2(6, 512, 8, 2048, 50304, 2048);
    cfg.family = Family::NeoX;
    cfg.act = Activation::Gelu;
    cfg.rotary_dim = 16;
    cfg.parallel_attn_mlp = true;
    (cfg.bos_token_id, cfg.eos_token_id) = (0, 0);
    cfg
}

fn main() {
    lantern::util::sys::tune_allocator();
    let rows: usize = std::env::var("ROWS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    let ctx = 400;
    let model = Model::random(pythia_70m(), 0, &Device::Cpu).unwrap();
    let ids: Vec<u32> = (0..rows * ctx).map(|i| 1 + (i * 7919 % 50000) as u32).collect();
    let tokens = Tensor::from_vec(ids, (rows, ctx), &Device::Cpu).unwrap();
    let hook = |s: &str| HookPoint::parse(s).unwrap();
    let neuron = hook("blocks.3.mlp.hook_post");
    let ablate = [Intervention::new(neuron, Action::Constant(-0.07)).neurons(vec![669])];
    let force = Force { hook: neuron, neuron: 669, active: 3.82, inactive: -0.07 };
    let downstream: Vec<HookPoint> =
        ["blocks.4.hook_attn_out", "blocks.4.hook_mlp_out", "blocks.5.hook_attn_out", "blocks.5.hook_mlp_out"]
            .map(hook)
            .to_vec();
    let frozen = &downstream[..3];
    let patched = [hook("blocks.5.hook_mlp_out")];
    let (neurons, values) = ([[5usize, 1070], [5, 205]], [-0.17f32, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let keep = vec![true; rows * ctx];
    println!("Pythia-70M shape, {rows} rows × {ctx} tokens per batch, {} threads", rayon::current_num_threads());
    let peak = common::matmul_peak(&[(rows * ctx, 512, 50304), (2048, 2048, 2048)]);
    let logits = model.logits(&tokens).unwrap();
    let runs: Vec<(&str, usize, Box<dyn Fn()>)> = vec![
        ("forward (logits)", 1, Box::new(|| drop(model.logits(&tokens).unwrap()))),
        ("token statistics alone: loss", 1, Box::new(|| drop(token_stats(&logits, &tokens, Wanted::LOSS).unwrap()))),
        (
            "token statistics alone: loss, entropy, rank",
            1,
            Box::new(|| drop(token_stats(&logits, &tokens, Wanted::ALL).unwrap())),
        ),
        (
            "ablation: clean + ablated loss",
            2,
            Box::new(|| {
                let (p, _, _) = Rerun::first(&model, &tokens, &[], &[], &[3]).unwrap();
                drop(p.run(&ablate, &[]).unwrap());
            }),
        ),
        (
            "direct_effect, mode = context (5 losses)",
            5,
            Box::new(|| drop(context_effect(&model, &tokens, force, &downstream).unwrap())),
        ),
        (
            "direct_effect, mode = direct (4 losses)",
            4,
            Box::new(|| drop(direct_effect(&model, &tokens, force, frozen, &patched).unwrap())),
        ),
        (
            "entropy: 2 neurons × 8 values + clean (loss, entropy, rank)",
            17,
            Box::new(|| {
                let mut clean = Metrics::default();
                let mut runs = vec![vec![Metrics::default(); values.len()]; neurons.len()];
                add_batch(&model, &tokens, &keep, &neurons, &values, &mut clean, &mut runs).unwrap();
            }),
        ),
    ];
    println!("{:<62} {:>10} {:>14}", "work per batch", "tokens/s", "passes/s × tok");
    for (name, passes, f) in &runs {
        let secs = time(2, f);
        let tps = (rows * ctx) as f64 / secs;
        println!("{name:<62} {tps:>10.0} {:>14.0}", tps * *passes as f64);
    }
    println!("matmul peak this run: {peak:.1} GFLOP/s; peak RSS {:.0} MB", common::peak_rss_mb());
}
