//! Datasets: sources (files, hub, inline prompts), tokenization exactly as TransformerLens does it,
//! masks, and the token rows artifact every stage reads.

pub mod artifact;
pub mod bpe;
pub mod chunk;
pub mod source;
pub mod spec;

pub use chunk::{tokenize, PairTokens};
pub use source::input_files;
pub use spec::{DatasetSpec, MaskToken, Mode};

use std::path::Path;

/// Token rows of a dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Tokenized {
    pub rows: usize,
    /// Row length (rows are padded to it).
    pub ctx: usize,
    /// [rows × ctx]
    pub tokens: Vec<u32>,
    /// 1 where a position counts in statistics and losses.
    pub valid: Vec<u8>,
    /// Document of each position (u32::MAX for BOS, separators and padding).
    pub doc: Vec<u32>,
    /// Label of each document.
    pub doc_labels: Vec<String>,
    /// Clean / corrupted pairs, for patching.
    pub pairs: Option<Vec<PairTokens>>,
}

impl Tokenized {
    /// Number of positions that count.
    pub fn n_valid(&self) -> usize {
        self.valid.iter().filter(|&&v| v != 0).count()
    }
}

/// Problems with a dataset spec found before anything runs: (field, message).
pub fn check(spec: &DatasetSpec, base: &Path) -> Vec<(Option<&'static str>, String)> {
    let mut out = Vec::new();
    let sources = [spec.path.is_some(), spec.hub.is_some(), spec.prompts.is_some(), spec.pairs.is_some()].iter().filter(|b| **b).count();
    if sources != 1 {
        out.push((None, "needs exactly one of `path`, `hub`, `prompts`, `pairs`".to_string()));
    }
    if spec.path.as_ref().is_some_and(|p| source::is_glob(p)) {
        if let Err(e) = source::input_files(spec, base) {
            out.push((Some("path"), format!("{e:#}")));
        }
    } else if let Some(p) = &spec.path {
        let full = base.join(p);
        if !full.is_file() {
            out.push((Some("path"), format!("data file {} does not exist", full.display())));
        } else if spec.format(&full).is_none() {
            out.push((Some("path"), format!("unknown file type of {p}: set format = \"jsonl\" | \"text\" | \"parquet\" | \"csv\"")));
        }
    }
    if spec.context < 2 {
        out.push((Some("context"), "context must be at least 2".into()));
    }
    if let Some([a, b]) = spec.crop {
        if a >= b {
            out.push((Some("crop"), format!("crop [{a}, {b}] is empty: start must be below end")));
        }
    }
    if matches!(&spec.prompts, Some(p) if p.is_empty()) || matches!(&spec.pairs, Some(p) if p.is_empty()) {
        out.push((None, "no prompts given".into()));
    }
    if spec.pairs.is_some() && spec.mode() != Mode::Prompt {
        out.push((Some("mode"), "pairs are tokenized one per row: mode must be \"prompt\"".into()));
    }
    out
}
