//! Which neurons have viewer pages, per model, and which model a stage's neuron tables are about
//! (found through its references), so that report tables link `L1.N23` to its page.

use crate::experiment::Validated;
use crate::stages::{Dep, StageSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Viewer pages by model: (layer, neuron) → the page's path relative to the report.
#[derive(Default)]
pub struct NeuronPages(BTreeMap<String, BTreeMap<(usize, usize), String>>);

/// `L1.N23` → (1, 23).
pub fn parse_id(s: &str) -> Option<(usize, usize)> {
    let (l, n) = s.strip_prefix('L')?.split_once(".N")?;
    Some((l.parse().ok()?, n.parse().ok()?))
}

impl NeuronPages {
    /// The pages every viewer stage of the experiment wrote into `dir/<stage>/`.
    pub fn find(v: &Validated, dir: &Path) -> NeuronPages {
        let mut pages = NeuronPages::default();
        for (name, st) in &v.exp.stages {
            let StageSpec::Viewer(viewer) = &st.value else { continue };
            let Ok(files) = std::fs::read_dir(dir.join(name)) else { continue };
            let mut found: Vec<(usize, usize)> =
                files.filter_map(|f| f.ok()?.file_name().to_str()?.strip_suffix(".html").and_then(parse_id)).collect();
            found.sort();
            let of_model = pages.0.entry(viewer.model.name().to_string()).or_default();
            for key in found {
                of_model.entry(key).or_insert_with(|| format!("{name}/L{}.N{}.html", key.0, key.1));
            }
        }
        pages
    }

    /// The page of a neuron of `model`, if one exists.
    pub fn get(&self, model: Option<&str>, key: (usize, usize)) -> Option<&str> {
        self.0.get(model?)?.get(&key).map(|s| s.as_str())
    }
}

/// The model whose neurons a stage's tables describe: the first model it names, else that of the
/// first stage it reads that has one.
pub fn model_of(v: &Validated, stage: &str) -> Option<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![stage.to_string()];
    while let Some(s) = todo.pop() {
        if !seen.insert(s.clone()) {
            continue;
        }
        let Some(st) = v.exp.stages.get(&s) else { continue };
        let mut next = Vec::new();
        for d in st.value.stage().deps() {
            match d {
                Dep::Model(m) | Dep::Tokens { model: m, .. } => return Some(m.name().to_string()),
                Dep::Stage(r) => next.push(r.name().to_string()),
                Dep::Dataset(_) => {}
            }
        }
        todo.extend(next.into_iter().rev());
    }
    None
}
