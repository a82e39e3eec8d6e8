//! Neurons related to the viewer's neurons, from stages the experiment computed: a `weights`
//! stage's `neuron_comps` (cosines of input and output weights) and a `correlation` stage's `top`
//! (the most correlated neurons of its model B), linked to their pages when the viewer has them.

use crate::pages::neuron::Related;
use crate::store::table::read;
use anyhow::{Context, Result};
use polars::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Rows shown per relation.
const SHOWN: usize = 6;

/// One relation: its title, value name, and per neuron (other layer, other neuron, value) by rank.
struct Relation {
    title: String,
    value: &'static str,
    /// Whether the other neurons are of the viewer's model (then they may have pages).
    same_model: bool,
    rows: BTreeMap<(usize, usize), Vec<(u32, usize, usize, f64)>>,
}

/// The relations read from the related stages, for the chosen neurons.
pub struct Relations(Vec<Relation>);

fn col(df: &DataFrame, name: &str) -> Result<Vec<f64>> {
    let c = df.column(name).with_context(|| format!("no column `{name}`"))?;
    Ok(c.cast(&DataType::Float64)?.f64()?.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

fn strs(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    let c = df.column(name).with_context(|| format!("no column `{name}`"))?.cast(&DataType::String)?;
    Ok(c.str()?.into_iter().map(|v| v.unwrap_or("").to_string()).collect())
}

impl Relations {
    pub fn new() -> Relations {
        Relations(Vec::new())
    }

    /// A `weights` stage's neuron compositions (its `neuron_comps` table in `dir`).
    pub fn add_weights(&mut self, stage: &str, dir: &Path, neurons: &BTreeSet<(usize, usize)>) -> Result<()> {
        let df = read(&dir.join("neuron_comps.parquet"))?;
        let (layer, neuron, rank) = (col(&df, "layer")?, col(&df, "neuron")?, col(&df, "rank")?);
        let (ol, on, cos) = (col(&df, "other_layer")?, col(&df, "other_neuron")?, col(&df, "cos")?);
        let (kind, which) = (strs(&df, "kind")?, strs(&df, "which")?);
        for (k, title) in [
            ("out_out", "similar output weights"),
            ("out_in", "its output read by"),
            ("in_out", "reads the output of"),
        ] {
            let mut rows: BTreeMap<(usize, usize), Vec<_>> = BTreeMap::new();
            for i in 0..df.height() {
                let key = (layer[i] as usize, neuron[i] as usize);
                if kind[i] == k && which[i] == "top" && neurons.contains(&key) {
                    rows.entry(key).or_default().push((rank[i] as u32, ol[i] as usize, on[i] as usize, cos[i]));
                }
            }
            let title = format!("{title} ({stage})");
            self.0.push(Relation { title, value: "cos", same_model: true, rows });
        }
        Ok(())
    }

    /// A `correlation` stage's top matches (its `top` table in `dir`); `same_model` when its model
    /// B is the viewer's model.
    pub fn add_correlation(
        &mut self,
        stage: &str,
        model_b: &str,
        same_model: bool,
        dir: &Path,
        neurons: &BTreeSet<(usize, usize)>,
    ) -> Result<()> {
        let df = read(&dir.join("top.parquet"))?;
        let (layer, neuron, rank) = (col(&df, "layer")?, col(&df, "neuron")?, col(&df, "rank")?);
        let (ml, mn, corr) = (col(&df, "match_layer")?, col(&df, "match_neuron")?, col(&df, "corr")?);
        let mut rows: BTreeMap<(usize, usize), Vec<_>> = BTreeMap::new();
        for i in 0..df.height() {
            let key = (layer[i] as usize, neuron[i] as usize);
            if neurons.contains(&key) {
                rows.entry(key).or_default().push((rank[i] as u32, ml[i] as usize, mn[i] as usize, corr[i]));
            }
        }
        let title = format!("most correlated in {model_b} ({stage})");
        self.0.push(Relation { title, value: "corr", same_model, rows });
        Ok(())
    }

    /// The related neurons of (l, n); a neuron of the viewer's model links to its page when it is
    /// one of `pages`.
    pub fn of(&self, key: (usize, usize), pages: &BTreeSet<(usize, usize)>) -> Vec<Related> {
        self.0
            .iter()
            .filter_map(|r| {
                let mut rows = r.rows.get(&key)?.clone();
                rows.sort_by_key(|x| x.0);
                let rows = rows
                    .into_iter()
                    .take(SHOWN)
                    .map(|(_, l, n, v)| {
                        let name = format!("L{l}.N{n}");
                        let href = (r.same_model && pages.contains(&(l, n))).then(|| format!("{name}.html"));
                        (name, href, v)
                    })
                    .collect();
                Some(Related { title: r.title.clone(), value: r.value.to_string(), rows })
            })
            .collect()
    }
}
