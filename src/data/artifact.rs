//! The token rows artifact: `tokens.safetensors` (tokens, valid, doc), `tokens.json` (shape,
//! labels, pairs) and the token table `tokens.parquet` (row, position, token, token_str, doc,
//! valid, label) for viewers and explanations.

use super::{PairTokens, Tokenized};
use crate::model::Tokenizer;
use crate::store::atomic;
use crate::store::table::Table;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    rows: usize,
    ctx: usize,
    doc_labels: Vec<String>,
    pairs: Option<Vec<PairTokens>>,
}

impl Tokenized {
    pub fn save(&self, dir: &Path, tok: &Tokenizer) -> Result<()> {
        let mut t = HashMap::new();
        t.insert("tokens".to_string(), Tensor::from_slice(&self.tokens, (self.rows, self.ctx), &Device::Cpu)?);
        t.insert("valid".to_string(), Tensor::from_slice(&self.valid, (self.rows, self.ctx), &Device::Cpu)?);
        t.insert("doc".to_string(), Tensor::from_slice(&self.doc, (self.rows, self.ctx), &Device::Cpu)?);
        atomic::save_tensors(&dir.join("tokens.safetensors"), &t)?;
        let meta =
            Meta { rows: self.rows, ctx: self.ctx, doc_labels: self.doc_labels.clone(), pairs: self.pairs.clone() };
        atomic::write(&dir.join("tokens.json"), serde_json::to_string(&meta)?.as_bytes())?;
        let mut strs: HashMap<u32, String> = HashMap::new();
        let n = self.tokens.len();
        let label = |d: u32| self.doc_labels.get(d as usize).cloned().unwrap_or_default();
        let mut df = Table::new()
            .with("row", (0..n).map(|i| (i / self.ctx) as u32).collect::<Vec<_>>())
            .with("position", (0..n).map(|i| (i % self.ctx) as u32).collect::<Vec<_>>())
            .with("token", self.tokens.clone())
            .with(
                "token_str",
                self.tokens
                    .iter()
                    .map(|&t| strs.entry(t).or_insert_with(|| tok.token_str(t)).clone())
                    .collect::<Vec<_>>(),
            )
            .with("doc", self.doc.iter().map(|&d| (d != u32::MAX).then_some(d)).collect::<Vec<_>>())
            .with("valid", self.valid.iter().map(|&v| v != 0).collect::<Vec<_>>())
            .with("label", self.doc.iter().map(|&d| label(d)).collect::<Vec<_>>())
            .frame()?;
        crate::store::table::write(&dir.join("tokens.parquet"), &mut df)
    }

    /// (rows, context) of a saved artifact, without reading its tokens.
    pub fn shape(dir: &Path) -> Result<(usize, usize)> {
        let meta: Meta =
            serde_json::from_str(&std::fs::read_to_string(dir.join("tokens.json")).context("no tokens.json")?)?;
        Ok((meta.rows, meta.ctx))
    }

    pub fn load(dir: &Path) -> Result<Tokenized> {
        let meta: Meta =
            serde_json::from_str(&std::fs::read_to_string(dir.join("tokens.json")).context("no tokens.json")?)?;
        let t = candle_core::safetensors::load(dir.join("tokens.safetensors"), &Device::Cpu)?;
        let get = |k: &str| {
            t.get(k).with_context(|| format!("tokens.safetensors has no '{k}'")).and_then(|x| Ok(x.flatten_all()?))
        };
        Ok(Tokenized {
            rows: meta.rows,
            ctx: meta.ctx,
            tokens: get("tokens")?.to_vec1()?,
            valid: get("valid")?.to_vec1()?,
            doc: get("doc")?.to_vec1()?,
            doc_labels: meta.doc_labels,
            pairs: meta.pairs,
        })
    }
}
