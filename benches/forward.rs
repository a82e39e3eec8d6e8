//! Forward-pass throughput of a GPT-2-small-shaped random model (12 layers, d_model 768, 12 heads,
//! d_mlp 3072, vocab 50257), batch 8×128, f32, against the f32 matmul peak measured in the same run.
//! Run: `cargo bench --bench forward`.

mod common;

use candle_core::{Device, Tensor};
use lantern::model::random::gpt2_config;
use lantern::model::{Action, HookPoint, Intervention, Model, Request, Start};
use std::time::Instant;

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    lantern::util::tune_allocator();
    let (batch, pos) = (8usize, 128usize);
    let cfg = gpt2_config(12, 768, 12, 3072, 50257, 1024);
    let (d, v, l) = (cfg.d_model as f64, cfg.d_vocab as f64, cfg.n_layers as f64);
    let flops_body = l * (24.0 * d * d + 4.0 * pos as f64 * d);
    let flops_full = flops_body + 2.0 * d * v;
    let model = Model::random(cfg, 0, &Device::Cpu).unwrap();
    let ids: Vec<u32> = (0..batch * pos).map(|i| (i * 7919 % 50257) as u32).collect();
    let tokens = Tensor::from_vec(ids, (batch, pos), &Device::Cpu).unwrap();
    let peak = common::matmul_peak(&[(1024, 768, 3072), (1024, 3072, 768), (1024, 768, 2304), (2048, 2048, 2048)]);
    println!("f32 matmul peak (candle/gemm, this run): {peak:.1} GFLOP/s on {} threads", rayon::current_num_threads());
    let ntok = (batch * pos) as f64;
    let report = |name: &str, secs: f64, flops: f64| {
        let tps = ntok / secs;
        let gf = tps * flops / 1e9;
        println!("{name:<40} {tps:>8.0} tokens/s  {gf:>6.1} GFLOP/s  {:>5.1}% of peak", 100.0 * gf / peak);
    };
    let reps = 5;
    let plain = time(reps, || {
        model.logits(&tokens).unwrap();
    });
    report("forward (logits)", plain, flops_full);
    let posts: Vec<HookPoint> = (0..12).map(|l| HookPoint::parse(&format!("blocks.{l}.mlp.hook_post")).unwrap()).collect();
    let capture = time(reps, || {
        let req = Request::capture(posts.iter().copied()).with_logits();
        let mut n = 0;
        model.forward(Start::Tokens(&tokens), &req, &mut |_, t| {
            n += t.elem_count();
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 12 * batch * pos * 3072);
    });
    report("forward + 12 mlp.hook_post captures", capture, flops_full);
    let last = HookPoint::parse("blocks.11.hook_resid_post").unwrap();
    let body = time(reps, || {
        let req = Request::capture([last]);
        model.forward(Start::Tokens(&tokens), &req, &mut |_, _| Ok(())).unwrap();
    });
    report("forward stopping before the unembedding", body, flops_body);
    let iv = [Intervention::new(posts[5], Action::Zero).neurons(vec![669])];
    let ablate = time(reps, || {
        let req = Request::logits().with_interventions(&iv);
        model.forward(Start::Tokens(&tokens), &req, &mut |_, _| Ok(())).unwrap();
    });
    report("forward, one neuron zero-ablated", ablate, flops_full);
    println!("peak RSS: {:.0} MB", common::peak_rss_mb());
}
