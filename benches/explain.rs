//! The `explain` stage's work on a GPT-2-small-shaped random model: forward passes capturing the
//! 12 `mlp.hook_post` layers, each streamed into variance-reduction sums over 1,000 features (30
//! holding at each position, about what the built-in token and previous-token features, unigrams
//! and a position bucket give), against the same forward passes alone, measured in the same run.
//! Run: `cargo bench --bench explain`.

mod common;

use candle_core::{Device, Tensor};
use lantern::model::hooks::{BlockSite, HookPoint};
use lantern::model::{Model, Request, Start};
use lantern::stats::separation::Separation;
use std::collections::BTreeMap;

fn main() {
    lantern::util::sys::tune_allocator();
    let model =
        Model::random(lantern::model::ModelConfig::gpt2(12, 768, 12, 3072, 50257, 1024), 0, &Device::Cpu).unwrap();
    let hooks: Vec<HookPoint> = (0..12).map(|l| HookPoint::Block(l, BlockSite::Post)).collect();
    let (batch, ctx, features, on) = (8usize, 128usize, 1000usize, 30usize);
    let ids: Vec<u32> = (0..batch * ctx).map(|i| (i * 7919 % 50257) as u32).collect();
    let tokens = Tensor::from_vec(ids, (batch, ctx), &Device::Cpu).unwrap();
    let rows: Vec<Vec<u32>> = (0..batch * ctx)
        .map(|i| {
            (0..on)
                .map(|k| ((i * 31 + k * 97) % features) as u32)
                .collect::<std::collections::BTreeSet<u32>>()
                .into_iter()
                .collect()
        })
        .collect();
    let mut sums: BTreeMap<HookPoint, Separation> =
        hooks.iter().map(|&h| (h, Separation::new(features, 3072))).collect();
    let req = Request::capture(hooks.iter().copied());
    let (mut plain, mut with) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        plain = plain.min(common::best_time(2, || {
            drop(model.forward(Start::Tokens(&tokens), &req, &mut |_, _| Ok(())).unwrap())
        }));
        with = with.min(common::best_time(2, || {
            model
                .forward(Start::Tokens(&tokens), &req, &mut |h, t| {
                    let s = sums.get_mut(&h).unwrap();
                    lantern::model::forward::with_f32(&t, |x| s.add(x, &rows))
                })
                .unwrap();
        }));
    }
    let ntok = (batch * ctx) as f64;
    println!("forward capturing 12 mlp.hook_post        {:>7.0} tokens/s", ntok / plain);
    println!("  + variance-reduction sums ({features} features, {on} per position) {:>7.0} tokens/s  ({:.2}× the forward's time)", ntok / with, with / plain);
    println!(
        "sums: {:.0} MB; peak RSS: {:.0} MB",
        12.0 * Separation::bytes(features, 3072) as f64 / 1e6,
        common::peak_rss_mb()
    );
}
