//! Trace a model: load a folder in Hugging Face layout, run a text through it and print the top
//! next tokens and how strongly the MLP neurons of the last layer fire at the last position.
//!
//! `cargo run --release --example trace -- MODEL_FOLDER "some text"`
//! (for example `tests/fixtures/gpt2-tiny "The cat sat on the"`)

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use lantern::model::{BlockSite, HookPoint, Model, ModelFiles, Processing};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let folder = args.next().context("usage: trace MODEL_FOLDER TEXT")?;
    let text = args.next().unwrap_or_else(|| "The cat sat on the".into());
    let model = Model::load(&ModelFiles::from_folder(folder.as_ref())?, Processing::DEFAULT, &Device::Cpu)?;
    let tok = model.tokenizer()?;
    let ids = tok.encode(&text, true)?;
    let n = ids.len();
    let tokens = Tensor::from_vec(ids, (1, n), &Device::Cpu)?;
    let post = HookPoint::Block(model.cfg.n_layers - 1, BlockSite::Post);
    let (logits, cache) = model.run_with_cache(&tokens, &[post], &[])?;
    let last: Vec<f32> = logits.get(0)?.get(n - 1)?.to_vec1()?;
    let mut order: Vec<usize> = (0..last.len()).collect();
    order.sort_by(|&a, &b| last[b].total_cmp(&last[a]));
    println!("{}: {text:?} ({n} tokens)", model.origin);
    for &t in order.iter().take(5) {
        println!("  next {:>12?}  logit {:.3}", tok.token_str(t as u32), last[t]);
    }
    let acts: Vec<f32> = cache[&post].get(0)?.get(n - 1)?.to_vec1()?;
    let mut top: Vec<usize> = (0..acts.len()).collect();
    top.sort_by(|&a, &b| acts[b].total_cmp(&acts[a]));
    for &i in top.iter().take(5) {
        println!("  {post} neuron {i:>4}: {:.3}", acts[i]);
    }
    Ok(())
}
