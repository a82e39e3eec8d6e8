//! Training throughput of the quickstart's model shape (2 layers, d_model 128, 4 heads, d_mlp 512,
//! vocab 2048, context 64, batch 16; 667k parameters), f32 on the CPU, against the f32 matmul peak
//! measured in the same run. FLOPs per token: 6 · parameters + 12 · layers · context · d_model
//! (attention products, forward and backward, counted as full squares). Run:
//! `cargo bench --bench train`.

mod common;

use lantern::model::Activation;
use lantern::train::{self, Schedule, Trainable};
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() {
    lantern::util::sys::tune_allocator();
    let (layers, d, ctx, vocab, batch) = (2usize, 128usize, 64usize, 2048usize, 16usize);
    let cfg = train::config(layers, d, 4, 4 * d, vocab, ctx, Activation::GeluNew);
    let mut t = Trainable::init(cfg, 1).unwrap();
    let params = t.n_params();
    let flops_per_token = 6.0 * params as f64 + 12.0 * (layers * ctx * d) as f64;
    // Random rows (the speed does not depend on the text).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let rows: Vec<u32> = (0..512 * ctx).map(|_| rng.random_range(0..vocab as u32)).collect();
    let steps = 30;
    let sched = Schedule { steps, batch, lr: 3e-3, warmup: 2, weight_decay: 0.1, grad_clip: 1.0, eval_every: 0 };
    println!("{params} parameters, {:.2} MFLOP per token, batch {batch} × {ctx} tokens", flops_per_token / 1e6);
    // Five rounds of (peak, training). The peak is the fastest of 10 calls of each shape, so the
    // step is also timed one by one (after the first, which sizes the buffers) and the fastest
    // kept: on a shared machine the least disturbed measurements are the ones compared.
    let (mut peak, mut best) = (0f64, f64::INFINITY);
    for round in 1..=5 {
        println!("round {round}:");
        peak = peak.max(common::matmul_peak(&[
            (batch * ctx, d, 3 * d),
            (batch * ctx, d, 4 * d),
            (batch * ctx, d, vocab),
            (vocab, batch * ctx, d),
            (2048, 2048, 2048),
        ]));
        let mut times = Vec::with_capacity(steps);
        let mut last = Instant::now();
        train::train(&mut t, &rows, &[], ctx, &sched, 1, |_| {
            times.push(last.elapsed().as_secs_f64());
            last = Instant::now();
            Ok(())
        })
        .unwrap();
        times.sort_by(f64::total_cmp);
        let fastest = times[1..].iter().copied().fold(f64::INFINITY, f64::min);
        println!("  step: fastest {:.1} ms, median {:.1} ms", fastest * 1e3, times[steps / 2] * 1e3);
        best = best.min(fastest);
    }
    let tps = (batch * ctx) as f64 / best;
    let gflops = tps * flops_per_token / 1e9;
    println!(
        "f32 matmul peak (candle/gemm, best of the rounds): {peak:.1} GFLOP/s on {} threads",
        rayon::current_num_threads()
    );
    println!("training (fastest step): {tps:.0} tokens/s, {gflops:.1} GFLOP/s, {:.1}% of peak", 100.0 * gflops / peak);
    println!("peak RSS: {:.0} MB", common::peak_rss_mb());
}
