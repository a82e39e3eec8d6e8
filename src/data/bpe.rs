//! Byte-level BPE tokenizers (GPT-2 style) trained on text with the `tokenizers` crate, for models
//! trained from scratch; `<|endoftext|>` is id 0 and serves as BOS, EOS and padding.

use anyhow::{anyhow, Result};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

pub const EOS: &str = "<|endoftext|>";

/// Train a byte-level BPE of `vocab_size` entries (256 bytes + merges + the special token).
pub fn train<I, S>(texts: I, vocab_size: usize) -> Result<Tokenizer>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(EOS, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tok.train(&mut trainer, texts).map_err(|e| anyhow!("cannot train the tokenizer: {e}"))?;
    Ok(tok)
}
