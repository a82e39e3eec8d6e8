//! The implicit `tokenize` node: a dataset tokenized with a model's tokenizer, shared (by
//! fingerprint) by every stage and experiment that uses the same data, tokenizer and options; a
//! `mix` dataset concatenates the rows of the datasets it names.

use super::StageEnv;
use crate::data::{tokenize, DatasetSpec, Tokenized};
use crate::spec::ModelRef;
use anyhow::Result;

pub fn run(cx: &mut dyn StageEnv, dataset: &str, model: &str) -> Result<()> {
    let spec = cx.dataset(dataset)?;
    let m = cx.model(&ModelRef::from(model))?;
    let tok = m.tokenizer()?;
    let mut progress = cx.progress(0, "B");
    let mut one = |spec: &DatasetSpec| {
        tokenize(spec, cx.base_dir(), tok, m.cfg.n_ctx, &mut |done, total| progress.show(done, total), cx.cancel())
    };
    let data = match &spec.mix {
        Some(names) => {
            let parts = names.iter().map(|n| Ok((one(cx.dataset(n)?)?, n.clone()))).collect::<Result<Vec<_>>>()?;
            Tokenized::concat(parts, spec.shuffle_seed, spec.balance)?
        }
        None => one(spec)?,
    };
    data.save(cx.out(), tok)
}
