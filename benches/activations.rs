//! The `activations` stage's work on a GPT-2-small-shaped random model: forward passes capturing
//! `mlp.hook_pre` and `mlp.hook_post` of all 12 layers streamed into the per-neuron reducers
//! (moments, 257-bin histograms, top-50 / bottom-10). Tokens/s, and peak RSS after 20k and after
//! 200k tokens (memory must not grow with the number of tokens).
//! Run: `cargo bench --bench activations`.

mod common;

use candle_core::{Device, Tensor};
use lantern::model::hooks::{BlockSite, HookPoint};
use lantern::model::{Model, Request, Start};
use lantern::stats::{Histogram, NeuronStats, Position};
use std::collections::BTreeMap;
use std::time::Instant;

fn main() {
    lantern::util::sys::tune_allocator();
    let model =
        Model::random(lantern::model::ModelConfig::gpt2(12, 768, 12, 3072, 50257, 1024), 0, &Device::Cpu).unwrap();
    let hooks: Vec<HookPoint> =
        (0..12).flat_map(|l| [HookPoint::Block(l, BlockSite::Pre), HookPoint::Block(l, BlockSite::Post)]).collect();
    let edges = Histogram::linspace(-10.0, 15.0, 256);
    let mut stats: BTreeMap<HookPoint, NeuronStats> =
        hooks.iter().map(|&h| (h, NeuronStats::new(3072, &edges, 50, 10, None))).collect();
    let (batch, ctx) = (8usize, 128usize);
    let mut done = 0usize;
    let started = Instant::now();
    for target in [20_000usize, 200_000] {
        while done < target {
            let ids: Vec<u32> = (0..batch * ctx).map(|i| ((done + i) * 7919 % 50257) as u32).collect();
            let tokens = Tensor::from_vec(ids.clone(), (batch, ctx), &Device::Cpu).unwrap();
            let positions: Vec<Position> =
                (0..batch * ctx).map(|i| Position { row: i, index: (done + i) as u64, token: ids[i] }).collect();
            let req = Request::capture(hooks.iter().copied());
            model
                .forward(Start::Tokens(&tokens), &req, &mut |h, t| {
                    let s = stats.get_mut(&h).unwrap();
                    lantern::model::forward::with_f32(&t, |x| s.add(x, &positions))
                })
                .unwrap();
            done += batch * ctx;
        }
        let secs = started.elapsed().as_secs_f64();
        println!("{done:>7} tokens: {:.0} tokens/s, peak RSS {:.0} MB", done as f64 / secs, common::peak_rss_mb());
    }
}
