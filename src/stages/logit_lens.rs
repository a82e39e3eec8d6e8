//! `logit_lens` stage: for each prompt, the residual stream at every half-layer through the final
//! LayerNorm (the run's own cached scale) and the unembedding, along `answer − wrong` (by default a
//! pair's answer and wrong tokens) and as the top tokens of the full vocabulary.

use super::{TableDecl, CheckCx, Dep, Stage, StageEnv};
use crate::analysis::lens::{accumulated_resid, logit_direction, project, vocab_logits};
use crate::spec::{DatasetRef, Diagnostic, ModelRef};
use crate::store::table::Table;
use anyhow::Result;
use candle_core::{Device, Tensor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Implementation version: part of the fingerprint of every artifact this stage makes. Bump it
/// when a change of this file changes what it computes (CONTRIBUTING.md).
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub model: ModelRef,
    /// Prompts or pairs (their clean prompts).
    pub dataset: DatasetRef,
    /// Position read (negative from the end of each prompt).
    #[serde(default = "default_pos")]
    pub position: i64,
    /// Token of the direction (default: each pair's answer).
    #[serde(default)]
    pub answer: Option<String>,
    /// Subtracted token (default: each pair's wrong token; none for prompts).
    #[serde(default)]
    pub wrong: Option<String>,
    #[serde(default = "default_top")]
    pub top_k: usize,
}

fn default_pos() -> i64 {
    -1
}
fn default_top() -> usize {
    5
}

impl Stage for Spec {
    fn deps(&self) -> Vec<Dep<'_>> {
        vec![Dep::Model(&self.model), Dep::Tokens { dataset: &self.dataset, model: &self.model }]
    }

    fn tables(&self) -> Vec<TableDecl> {
        vec![
            TableDecl::new("lens").ints(["prompt", "index"]).texts(["point"]).floats(["value"]),
            TableDecl::new("top_tokens").ints(["prompt", "index"]).texts(["point"]).ints(["rank"]).texts(["token"]).floats(["logit"]),
        ]
    }

    fn check(&self, cx: &CheckCx, out: &mut Vec<Diagnostic>) {
        if let Some(ds) = cx.dataset(self.dataset.name()) {
            if ds.pairs.is_none() && self.answer.is_none() {
                out.push(Diagnostic::at(
                    self.dataset.span(),
                    "logit_lens on prompts needs `answer` (and optionally `wrong`)",
                ));
            }
        }
    }

    fn run(&self, cx: &mut dyn StageEnv) -> Result<()> {
        let model = cx.model(&self.model)?;
        let data = cx.tokens(&self.dataset, &self.model)?;
        let tok = model.tokenizer()?;
        let fixed = (
            self.answer.as_deref().map(|a| tok.single_token(a)).transpose()?,
            self.wrong.as_deref().map(|w| tok.single_token(w)).transpose()?,
        );
        let (mut lens, mut top): (Vec<(u32, u32, String, f32)>, Vec<(u32, u32, String, u32, String, f32)>) =
            Default::default();
        for r in 0..data.rows {
            let row: Vec<u32> = match &data.pairs {
                Some(p) => p[r].clean.clone(),
                None => real_tokens(&data, r, tok.pad),
            };
            let (a, w) = match (&data.pairs, fixed) {
                (_, (Some(a), w)) => (a, w),
                (Some(p), (None, _)) => (p[r].answer, Some(p[r].wrong)),
                (None, (None, _)) => anyhow::bail!("no answer token"),
            };
            let t = Tensor::from_vec(row.clone(), (1, row.len()), &Device::Cpu)?.to_device(&model.device)?;
            let (labels, stack) = accumulated_resid(&model, &t, self.position)?;
            let values: Vec<f32> = project(&stack, &logit_direction(&model, a, w)?)?.flatten_all()?.to_vec1()?;
            let logits = vocab_logits(&model, &stack)?.squeeze(1)?; // [points, vocab]
            for (i, label) in labels.iter().enumerate() {
                lens.push((r as u32, i as u32, label.clone(), values[i]));
                let l: Vec<f32> = logits.get(i)?.to_vec1()?;
                for (k, (id, v)) in crate::analysis::vocab::top_entries(&l, self.top_k, false).into_iter().enumerate() {
                    top.push((r as u32, i as u32, label.clone(), k as u32, tok.token_str(id as u32), v));
                }
            }
        }
        let mut df = Table::new().with("prompt", lens.iter().map(|x| x.0).collect::<Vec<_>>()).with("index", lens.iter().map(|x| x.1).collect::<Vec<_>>()).with("point", lens.iter().map(|x| x.2.clone()).collect::<Vec<_>>()).with("value", lens.iter().map(|x| x.3).collect::<Vec<_>>()).frame()?;
        cx.write_table("lens", &mut df)?;
        let mut df = Table::new().with("prompt", top.iter().map(|x| x.0).collect::<Vec<_>>()).with("index", top.iter().map(|x| x.1).collect::<Vec<_>>()).with("point", top.iter().map(|x| x.2.clone()).collect::<Vec<_>>()).with("rank", top.iter().map(|x| x.3).collect::<Vec<_>>()).with("token", top.iter().map(|x| x.4.clone()).collect::<Vec<_>>()).with("logit", top.iter().map(|x| x.5).collect::<Vec<_>>()).frame()?;
        cx.write_table("top_tokens", &mut df)
    }
}

/// A row's tokens without trailing padding.
pub fn real_tokens(data: &crate::data::Tokenized, r: usize, pad: u32) -> Vec<u32> {
    let row = &data.tokens[r * data.ctx..(r + 1) * data.ctx];
    let doc = &data.doc[r * data.ctx..(r + 1) * data.ctx];
    let mut n = row.len();
    while n > 1 && doc[n - 1] == u32::MAX && row[n - 1] == pad {
        n -= 1;
    }
    row[..n].to_vec()
}
