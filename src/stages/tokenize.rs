//! The implicit `tokenize` node: a dataset tokenized with a model's tokenizer, shared (by
//! fingerprint) by every stage and experiment that uses the same data, tokenizer and options; a
//! `mix` dataset concatenates the rows of the datasets it names.

use crate::data::{tokenize, Tokenized};
use crate::exec::RunCx;
use anyhow::Result;

pub fn run(cx: &mut RunCx, dataset: &str, model: &str) -> Result<()> {
    let spec = &cx.env.v.exp.datasets[dataset].value;
    let m = cx.env.model(model)?;
    let tok = m.tokenizer()?;
    let mut progress = cx.progress(0, "B");
    let mut last = 0;
    let mut one = |spec: &crate::data::spec::DatasetSpec| {
        tokenize(
            spec,
            &cx.base_dir(),
            tok,
            m.cfg.n_ctx,
            &mut |done, total| {
                progress.set_total(total);
                progress.inc(done.saturating_sub(last));
                last = done;
            },
            cx.env.cancel,
        )
    };
    let data = match &spec.mix {
        Some(names) => {
            let parts = names
                .iter()
                .map(|n| Ok((one(&cx.env.v.exp.datasets[n].value)?, n.clone())))
                .collect::<Result<Vec<_>>>()?;
            Tokenized::concat(parts, spec.shuffle_seed)?
        }
        None => one(spec)?,
    };
    data.save(cx.out(), tok)
}
