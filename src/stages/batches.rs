//! Token batches: a tokenized dataset walked in batches of rows, each batch's ids as a tensor on the
//! model's device beside the validity of every position, progress reported and cancellation checked
//! after every batch.

use super::StageEnv;
use crate::data::Tokenized;
use anyhow::Result;
use candle_core::{Device, Tensor};
use std::ops::Range;

/// One batch of whole rows.
pub struct Batch<'a> {
    /// First row of the batch in the dataset.
    pub start: usize,
    /// Rows in the batch.
    pub rows: usize,
    /// Row length.
    pub ctx: usize,
    /// Token ids, [rows × ctx].
    pub ids: &'a [u32],
    /// 1 where a position counts in statistics and losses, [rows × ctx].
    pub valid: &'a [u8],
    /// The ids as a [rows, ctx] tensor on the model's device.
    pub tokens: Tensor,
}

impl Batch<'_> {
    /// Positions in the batch.
    pub fn len(&self) -> usize {
        self.rows * self.ctx
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Index in the whole dataset of the batch's position `i`.
    pub fn index(&self, i: usize) -> usize {
        self.start * self.ctx + i
    }

    /// Whether the prediction made at position `i` (of the token at `i + 1`) counts: both
    /// positions are valid and `i` is not the last of its row.
    pub fn target_counts(&self, i: usize) -> bool {
        i % self.ctx + 1 < self.ctx && self.valid[i] != 0 && self.valid[i + 1] != 0
    }
}

/// Call `f` on every batch of `batch_size` rows of `rows` (all of `data`'s rows, or a shard's:
/// see `shards::rows`), tensors on `device`; progress in tokens under the stage's name, stopping
/// on Ctrl-C between batches.
pub fn for_each_batch(
    env: &dyn StageEnv,
    data: &Tokenized,
    rows: Range<usize>,
    batch_size: usize,
    device: &Device,
    mut f: impl FnMut(Batch) -> Result<()>,
) -> Result<()> {
    anyhow::ensure!(batch_size >= 1, "batch_size must be at least 1");
    anyhow::ensure!(rows.end <= data.rows, "rows {rows:?} beyond the dataset's {}", data.rows);
    let ctx = data.ctx;
    let mut progress = env.progress((rows.len() * ctx) as u64, "tok");
    for start in rows.clone().step_by(batch_size) {
        let n = batch_size.min(rows.end - start);
        let span = start * ctx..(start + n) * ctx;
        let ids = &data.tokens[span.clone()];
        let tokens = Tensor::from_slice(ids, (n, ctx), &Device::Cpu)?.to_device(device)?;
        f(Batch { start, rows: n, ctx, ids, valid: &data.valid[span], tokens })?;
        progress.tick((n * ctx) as u64)?;
    }
    Ok(())
}
