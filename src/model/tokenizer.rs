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

    /// A digest of the vocabulary: every (id, token) entry in id order, BOS and EOS ids. Two
    /// tokenizers with the same digest turn text into the same ids.
    pub fn vocab_digest(&self) -> String {
        let mut entries: Vec<(u32, String)> = self.inner.get_vocab(true).into_iter().map(|(t, i)| (i, t)).collect();
        entries.sort();
        let mut h = blake3::Hasher::new();
        for (i, t) in &entries {
            h.update(&i.to_le_bytes());
            h.update(t.as_bytes());
            h.update(&[0]);
        }
        h.update(&self.bos.to_le_bytes());
        h.update(&self.eos.to_le_bytes());
        h.finalize().to_hex()[..16].to_string()
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

    /// The bytes of one token. A byte-level BPE token holding part of a UTF-8 character decodes
    /// to U+FFFD; its bytes come from the vocabulary entry instead (GPT-2's byte-to-character map,
    /// or SentencePiece's `<0xNN>`), so pages can show them as `\xNN`.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let s = self.token_str(id);
        if !s.contains('\u{FFFD}') {
            return s.into_bytes();
        }
        self.inner.id_to_token(id).and_then(|t| vocab_bytes(&t)).unwrap_or_else(|| s.into_bytes())
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

/// The bytes a vocabulary entry stands for: `<0xNN>` (SentencePiece byte fallback) or a byte-level
/// BPE string (GPT-2's `bytes_to_unicode`: printable Latin-1 bytes as themselves, the others
/// shifted to U+0100…); `None` for an entry in neither form.
fn vocab_bytes(entry: &str) -> Option<Vec<u8>> {
    if let Some(hex) = entry.strip_prefix("<0x").and_then(|h| h.strip_suffix('>')) {
        return u8::from_str_radix(hex, 16).ok().map(|b| vec![b]);
    }
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let shifted: Vec<u32> = (0..256).filter(|&b| !printable(b)).collect();
    entry
        .chars()
        .map(|c| {
            let c = c as u32;
            if c < 256 && printable(c) {
                Some(c as u8)
            } else {
                shifted.get(c.checked_sub(256)? as usize).map(|&b| b as u8)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn vocab_entries_give_their_bytes() {
        assert_eq!(super::vocab_bytes("Ġthe"), Some(b" the".to_vec()));
        assert_eq!(super::vocab_bytes("Ã¤"), Some(vec![0xc3, 0xa4]));
        assert_eq!(super::vocab_bytes("Ċ"), Some(b"\n".to_vec()));
        assert_eq!(super::vocab_bytes("<0xE2>"), Some(vec![0xe2]));
    }
}
