//! Forward-pass throughput of a GPT-2-small-shaped random model (12 layers, d_model 768, 12 heads,
//! d_mlp 3072, vocab 50257), batch 8×128, f32, against the f32 matmul peak measured in the same run.
//! Run: `cargo bench --bench forward`.

mod common;

use candle_core::{Device, Tensor};
use common::best_time as time;

use lantern::model::{Action, HookPoint, Intervention, Model, Request, Start};

fn main() {
    lantern::util::sys::tune_allocator();
    let (batch, pos) = (8usize, 128usize);
    let cfg = lantern::model::ModelConfig::gpt2(12, 768, 12, 3072, 50257, 1024);
    let (d, v, l) = (cfg.d_model as f64, cfg.d_vocab as f64, cfg.n_layers as f64);
    let flops_body = l * (24.0 * d * d + 4.0 * pos as f64 * d);
    let flops_full = flops_body + 2.0 * d * v;
    let model = Model::random(cfg, 0, &Device::Cpu).unwrap();
    let ids: Vec<u32> = (0..batch * pos).map(|i| (i * 7919 % 50257) as u32).collect();
    let tokens = Tensor::from_vec(ids, (batch, pos), &Device::Cpu).unwrap();
    let posts: Vec<HookPoint> =
        (0..12).map(|l| HookPoint::parse(&format!("blocks.{l}.mlp.hook_post")).unwrap()).collect();
    let last = HookPoint::parse("blocks.11.hook_resid_post").unwrap();
    let iv = [Intervention::new(posts[5], Action::Zero).neurons(vec![669])];
    let runs: Vec<(&str, f64, Box<dyn Fn()>)> = vec![
        ("forward (logits)", flops_full, Box::new(|| drop(model.logits(&tokens).unwrap()))),
        (
            "forward + 12 mlp.hook_post captures",
            flops_full,
            Box::new(|| {
                let req = Request::capture(posts.iter().copied()).with_logits();
                let mut n = 0;
                model
                    .forward(Start::Tokens(&tokens), &req, &mut |_, t| {
                        n += t.elem_count();
                        Ok(())
                    })
                    .unwrap();
                assert_eq!(n, 12 * batch * pos * 3072);
            }),
        ),
        (
            "forward stopping before the unembedding",
            flops_body,
            Box::new(|| {
                drop(model.forward(Start::Tokens(&tokens), &Request::capture([last]), &mut |_, _| Ok(())).unwrap())
            }),
        ),
        (
            "forward, one neuron zero-ablated",
            flops_full,
            Box::new(|| {
                drop(
                    model
                        .forward(Start::Tokens(&tokens), &Request::logits().with_interventions(&iv), &mut |_, _| Ok(()))
                        .unwrap(),
                )
            }),
        ),
    ];
    // Three rounds of (peak, every run), keeping each one's best: on a shared machine the least
    // disturbed measurement of the peak and of each run are the ones compared.
    let (mut peak, mut best) = (0f64, vec![f64::INFINITY; runs.len()]);
    for round in 1..=3 {
        println!("round {round}:");
        peak = peak.max(common::matmul_peak(&[
            (1024, 768, 3072),
            (1024, 3072, 768),
            (1024, 768, 2304),
            (1024, 768, 50257),
            (2048, 2048, 2048),
        ]));
        for (i, (_, _, f)) in runs.iter().enumerate() {
            best[i] = best[i].min(time(4, f));
        }
    }
    println!(
        "f32 matmul peak (candle/gemm, best of the rounds): {peak:.1} GFLOP/s on {} threads",
        rayon::current_num_threads()
    );
    let ntok = (batch * pos) as f64;
    for ((name, flops, _), secs) in runs.iter().zip(&best) {
        let tps = ntok / secs;
        let gf = tps * flops / 1e9;
        println!("{name:<40} {tps:>8.0} tokens/s  {gf:>6.1} GFLOP/s  {:>5.1}% of peak", 100.0 * gf / peak);
    }
    println!("peak RSS: {:.0} MB", common::peak_rss_mb());
}
