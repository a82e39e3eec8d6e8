//! Tokenization modes: TransformerLens's `tokenize_and_concatenate` exactly, one row per document
//! (padded, padding masked), one row per prompt (pairs checked); then shuffling, limits, crop and
//! token masks.

use super::source::{Doc, Flow, Reader};
use super::spec::{DatasetSpec, MaskToken, Mode};
use super::DataError;
use super::Tokenized;
use crate::model::Tokenizer;
use crate::util::Cancel;
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::Path;

/// A pair tokenized: clean and corrupted rows of equal length, answer and wrong token ids.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct PairTokens {
    pub clean: Vec<u32>,
    pub corrupted: Vec<u32>,
    pub answer: u32,
    pub wrong: u32,
}

/// HF `datasets.map(batched=True)` hands `tokenize_and_concatenate` 1000 documents at a time.
const TL_MAP_BATCH: usize = 1000;
/// TL tokenizes each joined batch in 20 character chunks.
const TL_CHUNKS: usize = 20;

/// Rows of one TL map batch; `doc0` is the index of its first document.
fn concat_batch(docs: &[Doc], doc0: usize, tok: &Tokenizer, seq: usize, bos: bool) -> Result<(Vec<u32>, Vec<u32>)> {
    let eos = tok.token_str(tok.eos);
    let full: String = docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>().join(&eos);
    if full.trim().is_empty() {
        return Ok((vec![], vec![]));
    }
    // Byte offset where each document starts in the joined text.
    let mut starts = Vec::with_capacity(docs.len());
    let mut at = 0;
    for d in docs {
        starts.push(at);
        at += d.text.len() + eos.len();
    }
    let chars: Vec<usize> = full.char_indices().map(|(i, _)| i).chain([full.len()]).collect();
    let n_chars = chars.len() - 1;
    let chunk_len = (n_chars - 1) / TL_CHUNKS + 1;
    let (mut ids, mut doc) = (Vec::new(), Vec::new());
    for c in 0..TL_CHUNKS {
        let (a, b) = ((c * chunk_len).min(n_chars), ((c + 1) * chunk_len).min(n_chars));
        if a >= b {
            continue;
        }
        let (ba, bb) = (chars[a], chars[b]);
        let enc = tok.inner().encode(&full[ba..bb], false).map_err(|e| anyhow::anyhow!("cannot tokenize: {e}"))?;
        for (&id, &(s, _)) in enc.get_ids().iter().zip(enc.get_offsets()) {
            ids.push(id);
            let byte = ba + s;
            let d = starts.partition_point(|&st| st <= byte) - 1;
            let in_separator = byte >= starts[d] + docs[d].text.len();
            doc.push(if in_separator { u32::MAX } else { (doc0 + d) as u32 });
        }
    }
    let n_rows = ids.len() / seq;
    let (mut rows, mut rdoc) = (Vec::with_capacity(n_rows * (seq + 1)), Vec::with_capacity(n_rows * (seq + 1)));
    for r in 0..n_rows {
        if bos {
            rows.push(tok.bos);
            rdoc.push(u32::MAX);
        }
        rows.extend_from_slice(&ids[r * seq..(r + 1) * seq]);
        rdoc.extend_from_slice(&doc[r * seq..(r + 1) * seq]);
    }
    Ok((rows, rdoc))
}

/// Tokenize a dataset. `n_ctx` is the model's context (rows may not be longer).
pub fn tokenize(
    spec: &DatasetSpec,
    base: &Path,
    tok: &Tokenizer,
    n_ctx: usize,
    progress: &mut dyn FnMut(u64, u64),
    cancel: &Cancel,
) -> Result<Tokenized> {
    let mode = spec.mode();
    let invalid = |message: String| DataError::in_documents(spec, base, message);
    // Prompts are as long as they are: `context` only bounds them (by the model's context too).
    let ctx = if mode == Mode::Prompt { spec.context.min(n_ctx) } else { spec.context };
    if ctx > n_ctx {
        bail!("context {ctx} is longer than the model's context ({n_ctx}); lower `context`");
    }
    if ctx < 2 && mode == Mode::Concat {
        bail!("context must be at least 2 tokens");
    }
    let want_rows = spec.n_tokens.map(|n| n.div_ceil(ctx as u64) as usize);
    let early_stop = spec.shuffle_seed.is_none();
    let mut labels = Vec::new();
    let mut kept = 0usize;
    let (mut seen, mut too_short) = (0usize, 0usize);
    let mut pending: Vec<Doc> = Vec::new();
    let (mut rows, mut doc_of): (Vec<Vec<u32>>, Vec<Vec<u32>>) = (vec![], vec![]);
    let seq = if spec.bos { ctx - 1 } else { ctx };
    let mut reader = Reader { spec, cancel, progress };
    let flush =
        |pending: &mut Vec<Doc>, doc0: usize, rows: &mut Vec<Vec<u32>>, doc_of: &mut Vec<Vec<u32>>| -> Result<()> {
            if pending.is_empty() {
                return Ok(());
            }
            match mode {
                Mode::Concat => {
                    let (r, d) = concat_batch(pending, doc0, tok, seq, spec.bos)?;
                    rows.extend(r.chunks(ctx).map(|c| c.to_vec()));
                    doc_of.extend(d.chunks(ctx).map(|c| c.to_vec()));
                }
                Mode::Document | Mode::Prompt => {
                    for (i, d) in pending.iter().enumerate() {
                        let mut ids = tok.encode(&d.text, spec.bos)?;
                        if mode == Mode::Prompt && ids.len() > ctx {
                            let (n, at) = (ids.len(), doc0 + i);
                            bail!(invalid(format!("prompt {at} is {n} tokens, longer than context {ctx}")));
                        }
                        ids.truncate(ctx);
                        let docs = (0..ids.len())
                            .map(|p| if spec.bos && p == 0 { u32::MAX } else { (doc0 + i) as u32 })
                            .collect();
                        rows.push(ids);
                        doc_of.push(docs);
                    }
                }
            }
            pending.clear();
            Ok(())
        };
    let mut doc0 = 0;
    reader.read(base, &mut |d: Doc| {
        seen += 1;
        if d.text.chars().count() <= spec.min_chars {
            too_short += 1;
            return Ok(Flow::Continue);
        }
        labels.push(d.label.clone());
        pending.push(d);
        kept += 1;
        let batch_full = mode != Mode::Concat || pending.len() == TL_MAP_BATCH;
        if batch_full {
            flush(&mut pending, doc0, &mut rows, &mut doc_of)?;
            doc0 = kept;
        }
        let enough_docs = spec.max_docs.is_some_and(|m| kept >= m);
        let enough_rows = early_stop && mode == Mode::Concat && want_rows.is_some_and(|w| rows.len() >= w);
        let enough_tokens = early_stop
            && mode == Mode::Document
            && spec.n_tokens.is_some_and(|n| rows.iter().map(|r| r.len() as u64).sum::<u64>() >= n);
        Ok(if enough_docs || enough_rows || enough_tokens { Flow::Stop } else { Flow::Continue })
    })?;
    flush(&mut pending, doc0, &mut rows, &mut doc_of)?;
    if seen == 0 {
        bail!(invalid("the dataset has no documents".into()));
    }
    if kept == 0 {
        let min = spec.min_chars;
        bail!(invalid(format!("all {seen} documents have at most {min} characters: lower `min_chars`")));
    }
    if rows.is_empty() {
        bail!(invalid(format!(
            "{kept} documents give fewer than {seq} tokens: no full row of context {ctx}; lower `context` or add text"
        )));
    }
    if let Some(seed) = spec.shuffle_seed {
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        rows = order.iter().map(|&i| rows[i].clone()).collect();
        doc_of = order.iter().map(|&i| doc_of[i].clone()).collect();
    }
    match mode {
        Mode::Concat => {
            if let Some(w) = want_rows {
                rows.truncate(w);
                doc_of.truncate(w);
            }
        }
        _ => {
            if let Some(n) = spec.n_tokens {
                let mut total = 0u64;
                let keep = rows.iter().take_while(|r| {
                    let k = total < n;
                    total += r.len() as u64;
                    k
                });
                let k = keep.count();
                rows.truncate(k);
                doc_of.truncate(k);
            }
        }
    }
    let pairs = match &spec.pairs {
        Some(pairs) => Some(tokenize_pairs(spec, base, pairs, tok)?),
        None => None,
    };
    Ok(assemble(rows, doc_of, labels, pairs, spec, tok))
}

fn tokenize_pairs(
    spec: &DatasetSpec,
    base: &Path,
    pairs: &[super::spec::PromptPair],
    tok: &Tokenizer,
) -> Result<Vec<PairTokens>> {
    let bos = spec.bos;
    let invalid = |message: String| DataError::in_documents(spec, base, message);
    pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let clean = tok.encode(&p.clean, bos)?;
            let corrupted = tok.encode(&p.corrupted, bos)?;
            if clean.len() != corrupted.len() {
                bail!(invalid(format!(
                    "pair {i}: clean and corrupted prompts tokenize to different lengths ({} vs {} tokens): \
                     clean {:?}, corrupted {:?}; reword them so they align token by token",
                    clean.len(),
                    corrupted.len(),
                    tok.str_tokens(&clean),
                    tok.str_tokens(&corrupted)
                )));
            }
            let answer = tok.single_token(&p.answer).map_err(|e| invalid(format!("pair {i}: answer {e}")))?;
            let wrong = tok.single_token(&p.wrong).map_err(|e| invalid(format!("pair {i}: wrong {e}")))?;
            Ok(PairTokens { clean, corrupted, answer, wrong })
        })
        .collect()
}

/// Pad rows to one length and compute the validity mask (padding, crop, masked tokens).
fn assemble(
    rows: Vec<Vec<u32>>,
    doc_of: Vec<Vec<u32>>,
    labels: Vec<String>,
    pairs: Option<Vec<PairTokens>>,
    spec: &DatasetSpec,
    tok: &Tokenizer,
) -> Tokenized {
    let ctx = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let newline = tok.single_token("\n").ok();
    let n = rows.len();
    let (mut tokens, mut valid, mut doc) =
        (Vec::with_capacity(n * ctx), Vec::with_capacity(n * ctx), Vec::with_capacity(n * ctx));
    for (r, d) in rows.iter().zip(&doc_of) {
        for p in 0..ctx {
            let (t, real) = match r.get(p) {
                Some(&t) => (t, true),
                None => (tok.pad, false),
            };
            let masked = spec.mask.iter().any(|m| match m {
                MaskToken::Pad => !real,
                MaskToken::Bos => t == tok.bos,
                MaskToken::Eos => t == tok.eos,
                MaskToken::Newline => Some(t) == newline,
            });
            let cropped = spec.crop.is_some_and(|[a, b]| p < a || p >= b);
            tokens.push(t);
            valid.push(u8::from(real && !masked && !cropped));
            doc.push(if real { d[p] } else { u32::MAX });
        }
    }
    Tokenized { rows: n, ctx, tokens, valid, doc, doc_labels: labels, pairs }
}
