//! Datasets: sources (files, hub, inline prompts), tokenization exactly as TransformerLens does it,
//! masks, and the token rows artifact every stage reads.

pub mod artifact;
pub mod bpe;
pub mod chunk;
pub mod error;
pub mod source;
pub mod spec;

pub use chunk::{tokenize, PairTokens};
pub use error::DataError;
pub use source::input_files;
pub use spec::{DatasetSpec, MaskToken, Mode};

use std::path::Path;

/// Implementation version of reading and tokenizing datasets: part of the fingerprints of what it makes. Bump it
/// when a change here changes results (CONTRIBUTING.md).
pub const VERSION: u32 = 1;

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
    /// The rows of several datasets one after the other (same row length), documents relabelled
    /// by `labels` where a dataset has none, rows shuffled with `shuffle_seed`.
    /// With `balance`, each dataset keeps only as many rows (its first) as the smallest has.
    pub fn concat(
        parts: Vec<(Tokenized, String)>,
        shuffle_seed: Option<u64>,
        balance: bool,
    ) -> anyhow::Result<Tokenized> {
        let ctx = parts.first().map(|p| p.0.ctx).unwrap_or(0);
        let keep = if balance { parts.iter().map(|p| p.0.rows).min().unwrap_or(0) } else { usize::MAX };
        let mut out =
            Tokenized { rows: 0, ctx, tokens: vec![], valid: vec![], doc: vec![], doc_labels: vec![], pairs: None };
        for (mut t, name) in parts {
            if t.rows > keep {
                t.rows = keep;
                for v in [&mut t.tokens, &mut t.doc] {
                    v.truncate(keep * t.ctx);
                }
                t.valid.truncate(keep * t.ctx);
            }
            anyhow::ensure!(
                t.ctx == ctx,
                "mixed datasets must have one row length: {ctx} and {} (set the same `context`)",
                t.ctx
            );
            let offset = out.doc_labels.len() as u32;
            out.doc.extend(t.doc.iter().map(|&d| if d == u32::MAX { d } else { d + offset }));
            out.doc_labels.extend(t.doc_labels.into_iter().map(|l| if l.is_empty() { name.clone() } else { l }));
            out.tokens.extend(t.tokens);
            out.valid.extend(t.valid);
            out.rows += t.rows;
        }
        if let Some(seed) = shuffle_seed {
            use rand::{seq::SliceRandom, SeedableRng};
            let mut order: Vec<usize> = (0..out.rows).collect();
            order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            let pick = |v: &[u32]| -> Vec<u32> {
                order.iter().flat_map(|&r| v[r * ctx..(r + 1) * ctx].iter().copied()).collect()
            };
            let valid: Vec<u8> =
                order.iter().flat_map(|&r| out.valid[r * ctx..(r + 1) * ctx].iter().copied()).collect();
            (out.tokens, out.doc, out.valid) = (pick(&out.tokens), pick(&out.doc), valid);
        }
        Ok(out)
    }

    /// The label of the document a position belongs to; a separator or BOS takes the label of the
    /// document that follows it in its row (else the one before).
    pub fn label_at(&self, index: usize) -> &str {
        let row = index / self.ctx.max(1) * self.ctx;
        let doc = (index..(row + self.ctx).min(self.doc.len()))
            .chain((row..index).rev())
            .map(|i| self.doc[i])
            .find(|&d| d != u32::MAX);
        doc.and_then(|d| self.doc_labels.get(d as usize)).map(String::as_str).unwrap_or("")
    }

    /// Number of positions that count.
    pub fn n_valid(&self) -> usize {
        self.valid.iter().filter(|&&v| v != 0).count()
    }
}

/// Problems with a dataset spec found before anything runs: (field, message).
pub fn check(spec: &DatasetSpec, base: &Path) -> Vec<(Option<&'static str>, String)> {
    let mut out = Vec::new();
    let sources =
        [spec.path.is_some(), spec.hub.is_some(), spec.mix.is_some(), spec.prompts.is_some(), spec.pairs.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
    if sources != 1 {
        out.push((None, "needs exactly one of `path`, `hub`, `mix`, `prompts`, `pairs`".to_string()));
    }
    if spec.balance && spec.mix.is_none() {
        out.push((Some("balance"), "`balance` applies to `mix` datasets only".to_string()));
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
            out.push((
                Some("path"),
                format!("unknown file type of {p}: set format = \"jsonl\" | \"text\" | \"parquet\" | \"csv\""),
            ));
        }
    }
    if spec.context < 2 {
        out.push((Some("context"), "context must be at least 2".into()));
    }
    if let Some([a, b]) = spec.crop {
        if a >= b {
            out.push((Some("crop"), format!("crop [{a}, {b}] is empty: start must be below end")));
        } else if b > spec.context && spec.mix.is_none() {
            out.push((Some("crop"), format!("crop [{a}, {b}] reaches past the context ({})", spec.context)));
        }
    }
    if spec.n_tokens == Some(0) {
        out.push((Some("n_tokens"), "n_tokens must be at least 1 (leave it out to read every document)".into()));
    }
    if spec.max_docs == Some(0) {
        out.push((Some("max_docs"), "max_docs must be at least 1 (leave it out to read every document)".into()));
    }
    if matches!(&spec.prompts, Some(p) if p.is_empty()) || matches!(&spec.pairs, Some(p) if p.is_empty()) {
        out.push((None, "no prompts given".into()));
    }
    if spec.pairs.is_some() && spec.mode() != Mode::Prompt {
        out.push((Some("mode"), "pairs are tokenized one per row: mode must be \"prompt\"".into()));
    }
    out
}
