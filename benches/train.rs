//! Training throughput of the quickstart's model shape (2 layers, d_model 128, 4 heads, d_mlp 512,
//! vocab 2048, context 64, batch 16; 667k parameters), f32 on the CPU, against the f32 matmul peak
//! measured in the same run. FLOPs per token: 6 · parameters + 12 · layers · context · d_model
//! (attention products, forward and backward, counted as full squares). Run:
//! `cargo bench --bench train`.

mod common;

use lantern::model::Activation;
use lantern::train::{self, Schedule, Trainable};
use rand::{Rng, SeedableRng};

fn main() {
    lantern::util::tune_allocator();
    let (layers, d, ctx, vocab, batch) = (2usize, 128usize, 64usize, 2048usize, 16usize);
    let cfg = train::config(layers, d, 4, 4 * d, vocab, ctx, Activation::GeluNew);
    let mut t = Trainable::init(cfg, 1).unwrap();
    let params = t.n_params();
    let flops_per_token = 6.0 * params as f64 + 12.0 * (layers * ctx * d) as f64;
    // Random rows (the speed does not depend on the text).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let rows: Vec<u32> = (0..512 * ctx).map(|_| rng.random_range(0..vocab as u32)).collect();
    let steps = 20;
    let sched = Schedule { steps, batch, lr: 3e-3, warmup: 2, weight_decay: 0.1, grad_clip: 1.0, eval_every: 0 };
    println!("{params} parameters, {:.2} MFLOP per token, batch {batch} × {ctx} tokens", flops_per_token / 1e6);
    // Three rounds of (peak, training), keeping each one's best: on a shared machine the least
    // disturbed measurements are the ones compared.
    let (mut peak, mut best) = (0f64, f64::INFINITY);
    for round in 1..=3 {
        println!("round {round}:");
        peak = peak.max(common::matmul_peak(&[
            (batch * ctx, d, 3 * d),
            (batch * ctx, d, 4 * d),
            (batch * ctx, d, vocab),
            (vocab, batch * ctx, d),
            (2048, 2048, 2048),
        ]));
        let secs = common::best_time(3, || {
            train::train(&mut t, &rows, &[], ctx, &sched, 1, |_| Ok(())).unwrap();
        });
        println!("  {steps} steps: {secs:.3} s");
        best = best.min(secs);
    }
    let tps = (steps * batch * ctx) as f64 / best;
    let gflops = tps * flops_per_token / 1e9;
    println!(
        "f32 matmul peak (candle/gemm, best of the rounds): {peak:.1} GFLOP/s on {} threads",
        rayon::current_num_threads()
    );
    println!("training: {tps:.0} tokens/s, {gflops:.1} GFLOP/s, {:.1}% of peak", 100.0 * gflops / peak);
    println!("peak RSS: {:.0} MB", common::peak_rss_mb());
}
