//! Tokenizer layer over the `tokenizers` crate: to_tokens (with or without BOS), to_str_tokens,
//! single-token lookup with a clear error when a string is several tokens.

use anyhow::{anyhow, bail, Result};
use std::path::Path;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
}

impl Tokenizer {
    /// Load `tokenizer.json`; BOS/EOS default to the model's ids.
    pub fn from_file(path: &Path, bos: u32, eos: u32) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow!("cannot load tokenizer {}: {e}", path.display()))?;
        Ok(Tokenizer::from_inner(inner, bos, eos))
    }

    pub fn from_inner(inner: tokenizers::Tokenizer, bos: u32, eos: u32) -> Tokenizer {
        let special = |name: &str| inner.token_to_id(name);
        let eos = special("<|endoftext|>").unwrap_or(eos);
        let bos = special("<|endoftext|>").unwrap_or(bos);
        let pad = inner.get_padding().map(|p| p.pad_id).unwrap_or(eos);
        Tokenizer { inner, bos, eos, pad }
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of a text, optionally with BOS prepended (TL's `to_tokens`).
    pub fn encode(&self, text: &str, bos: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| anyhow!("cannot tokenize text: {e}"))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if bos {
            ids.push(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// The string of one token, as TL's `to_str_tokens` shows it (spaces as spaces).
    pub fn token_str(&self, id: u32) -> String {
        self.inner.decode(&[id], false).unwrap_or_else(|_| format!("<{id}>"))
    }

    pub fn str_tokens(&self, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&i| self.token_str(i)).collect()
    }

    /// The id of a string that must be exactly one token (`" an"`).
    pub fn single_token(&self, s: &str) -> Result<u32> {
        let ids = self.encode(s, false)?;
        match ids.as_slice() {
            [id] => Ok(*id),
            [] => bail!("'{s}' is no token at all"),
            many => {
                let parts: Vec<String> = many.iter().map(|&i| format!("'{}'", self.token_str(i))).collect();
                bail!("'{s}' is {} tokens: {}", many.len(), parts.join(", "))
            }
        }
    }
}
