//! `[datasets.NAME]`: where the text comes from and how it becomes token rows.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A clean / corrupted prompt pair for activation patching.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PromptPair {
    pub clean: String,
    pub corrupted: String,
    /// The token the clean prompt should predict (must be one token, e.g. " an").
    pub answer: String,
    /// The competing token (e.g. " a").
    pub wrong: String,
}

/// File formats of `path` sources.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Jsonl,
    Text,
    Parquet,
    Csv,
}

/// How documents become rows.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// TransformerLens's `tokenize_and_concatenate`: documents joined with EOS, cut into rows of
    /// `context − 1` tokens, BOS prepended to every row.
    Concat,
    /// One row per document, truncated to `context`, padding masked.
    Document,
    /// One row per prompt (or prompt pair).
    Prompt,
}

/// Positions excluded from statistics and losses, by their input token.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum MaskToken {
    Bos,
    Eos,
    Pad,
    Newline,
}

/// `[datasets.NAME]`: exactly one source (`path`, `hub`, `mix`, `prompts`, `pairs`) and options.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// A file: .jsonl/.json (one JSON object per line), .txt, .parquet or .csv; relative to the
    /// experiment file. A glob (`data/*.jsonl`) reads every match in name order, each document
    /// labelled by its file name (without extension) unless `label` / `label_field` say otherwise.
    #[serde(default)]
    pub path: Option<String>,
    /// A Hugging Face dataset repository (e.g. `NeelNanda/pile-10k`), read from the standard cache.
    #[serde(default)]
    pub hub: Option<String>,
    #[serde(default)]
    pub revision: Option<String>,
    /// Glob of repository files to read (default: the parquet / jsonl files of `split`).
    #[serde(default)]
    pub files: Option<String>,
    #[serde(default = "default_split")]
    pub split: String,
    /// Other datasets of this file whose rows are concatenated (each tokenized with its own
    /// options; a document keeps its dataset's `label`, else the dataset's name).
    #[serde(default)]
    pub mix: Option<Vec<String>>,
    /// `mix` only: keep as many rows of each dataset as the smallest one has (its first rows),
    /// so that each contributes equally.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub balance: bool,
    /// Inline prompts, one row each.
    #[serde(default)]
    pub prompts: Option<Vec<String>>,
    /// Inline clean / corrupted pairs.
    #[serde(default)]
    pub pairs: Option<Vec<PromptPair>>,
    /// Overrides the format the extension implies.
    #[serde(default)]
    pub format: Option<Format>,
    /// JSON field or table column holding the text.
    #[serde(default = "default_field")]
    pub field: String,
    /// Column with a per-document label (a Pile subset, a language…).
    #[serde(default)]
    pub label_field: Option<String>,
    /// A label given to every document of this dataset.
    #[serde(default)]
    pub label: Option<String>,
    /// Text files: one document per non-empty line instead of the whole file.
    #[serde(default)]
    pub lines: bool,
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Row length in tokens, BOS included.
    #[serde(default = "default_context")]
    pub context: usize,
    #[serde(default = "yes")]
    pub bos: bool,
    /// Keep ceil(n_tokens / context) rows.
    #[serde(default)]
    pub n_tokens: Option<u64>,
    #[serde(default)]
    pub max_docs: Option<usize>,
    /// Keep documents with more than this many characters.
    #[serde(default)]
    pub min_chars: usize,
    /// Shuffle rows (concat) or documents (document mode) with this seed; none = file order.
    #[serde(default)]
    pub shuffle_seed: Option<u64>,
    /// Only positions in [start, end) count in statistics.
    #[serde(default)]
    pub crop: Option<[usize; 2]>,
    /// Positions whose input token is one of these are excluded from statistics.
    #[serde(default = "default_mask")]
    pub mask: Vec<MaskToken>,
}

fn default_split() -> String {
    "train".into()
}
fn default_field() -> String {
    "text".into()
}
fn default_context() -> usize {
    128
}
fn yes() -> bool {
    true
}
fn default_mask() -> Vec<MaskToken> {
    vec![MaskToken::Pad]
}

impl DatasetSpec {
    /// The tokenization mode (explicit, else by source).
    pub fn mode(&self) -> Mode {
        self.mode.unwrap_or(if self.prompts.is_some() || self.pairs.is_some() { Mode::Prompt } else { Mode::Concat })
    }

    /// The format of a `path` source.
    pub fn format(&self, path: &std::path::Path) -> Option<Format> {
        self.format.or_else(|| match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "jsonl" | "json" | "ndjson" => Some(Format::Jsonl),
            "txt" | "text" | "md" => Some(Format::Text),
            "parquet" => Some(Format::Parquet),
            "csv" => Some(Format::Csv),
            _ => None,
        })
    }
}
