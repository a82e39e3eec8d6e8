//! `lantern hooks` and `lantern trace`: a model's hook points, and one traced forward pass.

use super::Exit;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use lantern::model::hooks::{all_hooks, fired_by_default};
use lantern::model::known::config_of;
use lantern::model::selector::select_all;
use lantern::model::{Model, ModelFiles, Processing};
use std::path::Path;

pub fn hooks(model: &str) -> Result<Exit> {
    let cfg = match config_of(model) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Exit::Invalid);
        }
    };
    println!("{model}: {}", lantern::model::forward::describe(&cfg));
    let (b, p) = (1_000_001, 1_000_002);
    for h in all_hooks(&cfg, true) {
        let dims: Vec<String> = h
            .shape(&cfg, b, p)
            .iter()
            .map(|&d| match d {
                1_000_001 => "batch".to_string(),
                1_000_002 => "pos".to_string(),
                d => d.to_string(),
            })
            .collect();
        let optional = h.site().is_some_and(|s| !fired_by_default(s));
        println!("{:<36} [{}]{}", h.to_string(), dims.join(", "), if optional { "  (only when named)" } else { "" });
    }
    Ok(Exit::Ok)
}

/// What `trace` runs on.
pub enum TraceInput {
    /// Text, with BOS prepended or not.
    Text(String, bool),
    /// `1,2,3;4,5,6`
    Tokens(String),
}

fn parse_tokens(s: &str) -> Result<(Vec<u32>, usize, usize)> {
    let rows: Vec<Vec<u32>> = s
        .split(';')
        .map(|r| r.split(',').map(|t| t.trim().parse::<u32>().with_context(|| format!("bad token id '{t}'"))).collect())
        .collect::<Result<_>>()?;
    let len = rows[0].len();
    if rows.iter().any(|r| r.len() != len) || len == 0 {
        bail!("every row of --tokens must have the same, non-zero length");
    }
    Ok((rows.concat(), rows.len(), len))
}

pub fn trace(model: &str, input: &TraceInput, hook_globs: &[String], processing: &str, out: &Path) -> Result<Exit> {
    let Some(processing) = Processing::from_name(processing) else {
        bail!("unknown processing '{processing}' (none, default, default+refactor)")
    };
    let files = match ModelFiles::from_name(model, true) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Exit::Invalid);
        }
    };
    let m = Model::load(&files, processing, &Device::Cpu)?;
    let (ids, rows, len) = match input {
        TraceInput::Text(t, bos) => {
            let ids = m.tokenizer()?.encode(t, *bos)?;
            let n = ids.len();
            (ids, 1, n)
        }
        TraceInput::Tokens(s) => parse_tokens(s)?,
    };
    let tokens = Tensor::from_vec(ids, (rows, len), &Device::Cpu)?;
    let hooks = select_all(&m.cfg, hook_globs)?;
    let saved = m.trace(&tokens, &hooks)?;
    lantern::store::atomic::save_tensors(out, &saved)?;
    eprintln!("wrote {} tensors ({} hooks) to {}", saved.len(), hooks.len(), out.display());
    Ok(Exit::Ok)
}
