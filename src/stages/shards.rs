//! `shards = N` on a stage whose cost grows with tokens: the dataset's batches cut into N
//! contiguous ranges, each computed by its own plan node (`stage@shard-i-of-n`, `lantern run
//! --shard i/n`) into a partial state (`state.safetensors`) that the stage's own node merges.
//! Shards cut along batch boundaries, so a shard sees exactly the batches a single run would.

use super::{CheckCx, Part, StageEnv};
use crate::spec::Diagnostic;
use crate::store::arrays::{Arrays, ArraysFile};
use anyhow::{Context, Result};
use std::ops::Range;

/// The file a shard's partial state is written to.
pub const STATE_FILE: &str = "state.safetensors";

/// The default of every stage's `shards`: not split.
pub fn one() -> usize {
    1
}

/// Whether `shards` is the default (left out of the stage's parameters, so that files written
/// before shards existed keep their fingerprints).
pub fn is_one(shards: &usize) -> bool {
    *shards == 1
}

/// The most shards a stage may be split into (each is a node of the plan and a job).
pub const MAX_SHARDS: usize = 1024;

/// The parts of a stage with `shards` shards (none when it is not split, or when `shards` is out
/// of bounds: `check` reports it, and the plan is not grown by a number nobody checked yet).
pub fn parts(shards: usize) -> Vec<Part> {
    if (2..=MAX_SHARDS).contains(&shards) {
        (0..shards).map(|index| Part::Shard { index, count: shards }).collect()
    } else {
        vec![]
    }
}

/// `shards` must be between 1 and `MAX_SHARDS`.
pub fn check(cx: &CheckCx, shards: usize, out: &mut Vec<Diagnostic>) {
    cx.at_least("shards", shards, 1, out);
    cx.at_most("shards", shards, MAX_SHARDS, "the most shards a stage may have", out);
}

/// The rows of a dataset of `rows` rows a run covers: all of them, or shard `index` of `count`
/// (whole batches of `batch_size` rows; a shard may be empty when there are fewer batches).
pub fn rows(rows: usize, batch_size: usize, shard: Option<(usize, usize)>) -> Range<usize> {
    let Some((index, count)) = shard else { return 0..rows };
    let batches = rows.div_ceil(batch_size.max(1));
    let (first, last) = (index * batches / count, (index + 1) * batches / count);
    (first * batch_size).min(rows)..(last * batch_size).min(rows)
}

/// The shard a part names, for `rows`.
pub fn of(part: Part) -> Result<(usize, usize)> {
    match part {
        Part::Shard { index, count } => Ok((index, count)),
        other => anyhow::bail!("a sharded stage has no part {other:?}"),
    }
}

/// A partial result of a stage over some rows: written by each shard, merged by the stage.
pub trait Partial: Sized {
    fn save(&self, out: &mut Arrays);
    fn load(file: &ArraysFile) -> Result<Self>;
    /// Add the partial result of other rows.
    fn merge(&mut self, other: Self) -> Result<()>;
}

/// A stage whose work is a sum over token rows, split by `shards = N`.
pub trait Sharded {
    type State: Partial;
    fn shards(&self) -> usize;
    /// The partial result over `rows` of the dataset (all rows, or a shard's: see `rows`).
    fn compute(&self, env: &mut dyn StageEnv, shard: Option<(usize, usize)>) -> Result<Self::State>;
    /// Write the artifacts from the result over every row.
    fn finish(&self, env: &mut dyn StageEnv, state: Self::State) -> Result<()>;
}

/// `Stage::run` of a sharded stage: compute every row, or merge the shards' partial results.
pub fn run<S: Sharded>(stage: &S, env: &mut dyn StageEnv) -> Result<()> {
    let state = if stage.shards() > 1 { gather(env, stage.shards())? } else { stage.compute(env, None)? };
    stage.finish(env, state)
}

/// `Stage::run_part` of a sharded stage: one shard's partial result, saved for the merge.
pub fn run_part<S: Sharded>(stage: &S, env: &mut dyn StageEnv, part: Part) -> Result<()> {
    let state = stage.compute(env, Some(of(part)?))?;
    let mut arrays = Arrays::new();
    state.save(&mut arrays);
    arrays.save(&env.out().join(STATE_FILE))
}

/// The merged partial states of a stage's `count` shards (read one at a time, in shard order).
fn gather<T: Partial>(env: &dyn StageEnv, count: usize) -> Result<T> {
    let mut merged: Option<T> = None;
    for index in 0..count {
        let path = env.part(Part::Shard { index, count })?.join(STATE_FILE);
        let file = ArraysFile::open(&path)?;
        let state = T::load(&file).with_context(|| format!("shard {} of {count}", index + 1))?;
        match &mut merged {
            None => merged = Some(state),
            Some(m) => m.merge(state)?,
        }
    }
    merged.context("a sharded stage has no shards")
}

/// Check that two partial results have the same length.
pub fn same_len(what: &str, a: usize, b: usize) -> Result<()> {
    anyhow::ensure!(a == b, "shards disagree on {what} ({a} and {b})");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn shards_cover_every_row_in_whole_batches() {
        for (rows, batch, count) in [(10, 3, 3), (7, 8, 2), (100, 8, 7), (5, 1, 5), (17, 4, 4)] {
            let mut next = 0;
            for index in 0..count {
                let r = super::rows(rows, batch, Some((index, count)));
                assert_eq!(r.start, next, "{rows} rows, batch {batch}, {count} shards");
                assert!(r.start % batch == 0);
                next = r.end;
            }
            assert_eq!(next, rows);
        }
        assert_eq!(super::rows(9, 4, None), 0..9);
    }
}
