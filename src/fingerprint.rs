//! Fingerprints of a plan's nodes: blake3 of a node's resolved parameters (references replaced by
//! what they point at), the fingerprints of its inputs, the content digests of the files it reads
//! (weights, tokenizer, dataset files), the artifact format version and the implementation version
//! of the code that computes it.

use crate::experiment::Validated;
use crate::model::ModelSource;
use crate::plan::{NodeKind, Plan};
use crate::spec::{DatasetRef, ModelRef, StageRef};
use crate::stages::Part;
use crate::store::digest::DigestCache;
use crate::store::{Fingerprint, FORMAT_VERSION};
use petgraph::graph::NodeIndex;
use serde_json::Value;
use std::collections::BTreeMap;

type Fp = Result<String, String>;

/// A node's fingerprint (its store entry), or why it is unknown.
pub type NodeFp = Result<Fingerprint, String>;

/// Fingerprints of every node, model and dataset of a plan (an `Err` says why one is unknown).
pub struct Fingerprints {
    pub nodes: BTreeMap<NodeIndex, NodeFp>,
    pub models: BTreeMap<String, Fp>,
    pub datasets: BTreeMap<String, Fp>,
    /// Fingerprints of each node's inputs by reference name (for manifests).
    pub inputs: BTreeMap<NodeIndex, BTreeMap<String, String>>,
}

/// The implementation versions that enter fingerprints: a bump makes what that code computed
/// stale, and everything computed from it.
#[derive(Clone, Debug, PartialEq)]
pub struct Versions {
    /// Per stage kind (each stage file's `VERSION`).
    pub kinds: BTreeMap<&'static str, u32>,
    /// Reading and tokenizing datasets (`data::VERSION`).
    pub tokenize: u32,
    /// Loading models and processing their weights (`model::VERSION`).
    pub model: u32,
    /// Rendering plots (`plot::VERSION`).
    pub plot: u32,
}

impl Versions {
    /// The versions of this build.
    pub fn current() -> Versions {
        Versions {
            kinds: crate::stages::KIND_VERSIONS.iter().copied().collect(),
            tokenize: crate::data::VERSION,
            model: crate::model::VERSION,
            plot: crate::plot::VERSION,
        }
    }

    /// The version of the code that computes a node.
    pub fn of(&self, kind: &NodeKind, kind_name: &str) -> u32 {
        match kind {
            NodeKind::Tokenize { .. } => self.tokenize,
            NodeKind::Plot(_) => self.plot,
            NodeKind::Stage(_) | NodeKind::Part { .. } => self.kinds.get(kind_name).copied().unwrap_or(0),
        }
    }
}

fn hash_parts(parts: &[&str]) -> Fingerprint {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

struct Builder<'a> {
    v: &'a Validated,
    versions: &'a Versions,
    plan: &'a Plan,
    digests: &'a DigestCache,
    fps: Fingerprints,
}

impl Builder<'_> {
    fn digest(&self, p: &std::path::Path) -> Fp {
        self.digests.digest(p).map_err(|e| format!("{e:#}"))
    }

    fn model(&mut self, name: &str) -> Fp {
        if let Some(fp) = self.fps.models.get(name) {
            return fp.clone();
        }
        let fp = self.compute_model(name);
        self.fps.models.insert(name.to_string(), fp.clone());
        fp
    }

    fn compute_model(&mut self, name: &str) -> Fp {
        let m = self.v.models.get(name).ok_or_else(|| format!("unknown model '{name}'"))?;
        // Loading and processing code is part of every model's identity.
        let processing =
            format!("{}@{}", serde_json::to_string(&m.processing).unwrap_or_default(), self.versions.model);
        if let ModelSource::Trained { stage, seed } = &m.source {
            let node = Part::Seed(*seed).node_name(stage);
            let ix = self.plan.find(&node).ok_or_else(|| format!("unknown stage '{node}'"))?;
            let stage_fp = self
                .fps
                .nodes
                .get(&ix)
                .cloned()
                .unwrap_or_else(|| Err(format!("stage '{stage}' has no fingerprint yet")))?;
            return Ok(hash_parts(&["trained-model", stage_fp.as_str(), &format!("{seed:?}"), &processing]).into());
        }
        let files = m.files_offline(|_, _| unreachable!("not a trained model")).map_err(|e| format!("{e:#}"))?;
        let mut parts = vec!["model".to_string(), processing, self.digest(&files.config)?];
        for w in &files.weights {
            parts.push(self.digest(w)?);
        }
        if let Some(t) = &files.tokenizer {
            parts.push(self.digest(t)?);
        }
        Ok(hash_parts(&parts.iter().map(|s| s.as_str()).collect::<Vec<_>>()).into())
    }

    fn dataset(&mut self, name: &str) -> Fp {
        if let Some(fp) = self.fps.datasets.get(name) {
            return fp.clone();
        }
        let fp = (|| {
            let ds = self.v.exp.datasets.get(name).ok_or_else(|| format!("unknown dataset '{name}'"))?;
            let mut parts = vec!["dataset".to_string(), serde_json::to_string(&ds.value).unwrap_or_default()];
            for f in crate::data::input_files(&ds.value, &self.v.exp.base_dir()).map_err(|e| format!("{e:#}"))? {
                parts.push(self.digest(&f)?);
            }
            for part in ds.value.mix.iter().flatten() {
                parts.push(self.dataset(part)?);
            }
            Ok(hash_parts(&parts.iter().map(|s| s.as_str()).collect::<Vec<_>>()).into())
        })();
        self.fps.datasets.insert(name.to_string(), fp.clone());
        fp
    }

    /// Replace `{"$model": n}` / `{"$dataset": n}` / `{"$stage": n}` by fingerprints, recording inputs.
    fn resolve(&mut self, v: &mut Value, inputs: &mut BTreeMap<String, String>) -> Result<(), String> {
        match v {
            Value::Object(map) if map.len() == 1 => {
                let (k, name) = map
                    .iter()
                    .next()
                    .map(|(k, n)| (k.clone(), n.as_str().unwrap_or("").to_string()))
                    .expect("one entry");
                let fp = match k.as_str() {
                    ModelRef::TAG => {
                        self.trained_input(&name, inputs);
                        self.model(&name)
                    }
                    DatasetRef::TAG => self.dataset(&name),
                    StageRef::TAG => self.stage(&name).map(String::from),
                    _ => {
                        for x in map.values_mut() {
                            self.resolve(x, inputs)?;
                        }
                        return Ok(());
                    }
                };
                let fp = fp.map_err(|e| format!("{name}: {e}"))?;
                inputs.insert(name, fp.clone());
                *v = Value::String(fp);
                Ok(())
            }
            Value::Object(map) => map.values_mut().try_for_each(|x| self.resolve(x, inputs)),
            Value::Array(a) => a.iter_mut().try_for_each(|x| self.resolve(x, inputs)),
            _ => Ok(()),
        }
    }

    fn stage(&self, name: &str) -> NodeFp {
        let ix = self.plan.find(name).ok_or_else(|| format!("unknown stage '{name}'"))?;
        self.fps.nodes.get(&ix).cloned().unwrap_or_else(|| Err(format!("'{name}' not fingerprinted")))
    }

    /// A trained model is read from its train node's entry: record that entry among the inputs
    /// (so that `gc` keeps it with what reads the model).
    fn trained_input(&self, model: &str, inputs: &mut BTreeMap<String, String>) {
        if let Some(ModelSource::Trained { stage, seed }) = self.v.models.get(model).map(|m| &m.source) {
            let node = Part::Seed(*seed).node_name(stage);
            if let Ok(fp) = self.stage(&node) {
                inputs.insert(node, fp.into());
            }
        }
    }

    fn node(&mut self, ix: NodeIndex) -> (NodeFp, BTreeMap<String, String>) {
        let mut inputs = BTreeMap::new();
        let v = self.v;
        let node = &self.plan.graph[ix];
        let code = self.versions.of(&node.kind, node.kind_name).to_string();
        let code = code.as_str();
        let fp = match &node.kind {
            NodeKind::Tokenize { dataset, model } => (|| {
                let d = self.dataset(dataset)?;
                let m = self.model(model)?;
                self.trained_input(model, &mut inputs);
                inputs.insert(dataset.clone(), d.clone());
                inputs.insert(model.clone(), m.clone());
                Ok(hash_parts(&["tokenize", &FORMAT_VERSION.to_string(), code, &d, &self.tokenizer_id(model, &m)]))
            })(),
            NodeKind::Stage(name) => {
                let st = &v.exp.stages[name].value;
                let seed = if st.stage().uses_seed() { format!("{}/{name}", v.exp.meta.seed) } else { String::new() };
                let mut parts = vec![self.params(serde_json::to_value(st), &mut inputs), Ok(seed)];
                parts.extend(self.token_inputs(ix, &mut inputs));
                // Files a stage reads itself (label tables) count by their contents.
                parts.extend(st.stage().files().iter().map(|f| self.digest(&v.exp.base_dir().join(f))));
                parts.into_iter().collect::<Result<Vec<String>, String>>().map(|p| {
                    let mut all = vec!["stage".to_string(), FORMAT_VERSION.to_string(), code.to_string()];
                    all.extend(p);
                    hash_parts(&all.iter().map(|s| s.as_str()).collect::<Vec<_>>())
                })
            }
            NodeKind::Part { stage, part } => {
                let st = &v.exp.stages[stage].value;
                let seed = if st.stage().uses_seed() { format!("{}/{stage}", v.exp.meta.seed) } else { String::new() };
                let mut params = serde_json::to_value(st);
                // One seed's model does not depend on which other seeds are trained beside it.
                if let (Part::Seed(_), Ok(Value::Object(m))) = (part, &mut params) {
                    m.remove("seeds");
                }
                let part = serde_json::to_string(part).unwrap_or_default();
                let tokens: Result<Vec<String>, String> = self.token_inputs(ix, &mut inputs).into_iter().collect();
                self.params(params, &mut inputs).and_then(|p| {
                    let mut all = vec![
                        "part".to_string(),
                        FORMAT_VERSION.to_string(),
                        code.to_string(),
                        p,
                        part.clone(),
                        seed.clone(),
                    ];
                    all.extend(tokens?);
                    Ok(hash_parts(&all.iter().map(|s| s.as_str()).collect::<Vec<_>>()))
                })
            }
            NodeKind::Plot(name) => self
                .params(serde_json::to_value(&v.exp.plots[name].value), &mut inputs)
                .map(|p| hash_parts(&["plot", &FORMAT_VERSION.to_string(), code, &p])),
        };
        (fp, inputs)
    }

    /// The fingerprints of the tokenizations a node reads (recorded among its inputs), so that what
    /// changes the token rows (the tokenizer's code, the model's tokenizer) reaches the node.
    fn token_inputs(&self, ix: NodeIndex, inputs: &mut BTreeMap<String, String>) -> Vec<Fp> {
        let mut out = Vec::new();
        for p in self.plan.inputs(ix) {
            let node = &self.plan.graph[p];
            if let NodeKind::Tokenize { .. } = node.kind {
                let fp = self
                    .fps
                    .nodes
                    .get(&p)
                    .cloned()
                    .unwrap_or_else(|| Err(format!("'{}' not fingerprinted", node.name)));
                if let Ok(fp) = &fp {
                    inputs.insert(node.name.clone(), fp.as_str().to_string());
                }
                out.push(fp.map(|f| f.as_str().to_string()));
            }
        }
        out.sort();
        out
    }

    fn params(&mut self, value: serde_json::Result<Value>, inputs: &mut BTreeMap<String, String>) -> Fp {
        let mut value = value.map_err(|e| e.to_string())?;
        self.resolve(&mut value, inputs)?;
        Ok(value.to_string())
    }

    /// What identifies a model's tokenizer: the digest of its tokenizer.json (else the model).
    fn tokenizer_id(&self, model: &str, model_fp: &str) -> String {
        (self.v.models.get(model))
            .and_then(|m| m.files_offline(|_, _| anyhow::bail!("trained")).ok())
            .and_then(|f| f.tokenizer)
            .and_then(|t| self.digest(&t).ok())
            .unwrap_or_else(|| model_fp.to_string())
    }
}

/// Fingerprint every node in run order, with this build's implementation versions.
pub fn compute(v: &Validated, digests: &DigestCache) -> Fingerprints {
    compute_with(v, digests, &Versions::current())
}

/// Fingerprint every node in run order with the given implementation versions.
pub fn compute_with(v: &Validated, digests: &DigestCache, versions: &Versions) -> Fingerprints {
    let plan = &v.plan;
    let mut b = Builder {
        v,
        versions,
        plan,
        digests,
        fps: Fingerprints {
            nodes: BTreeMap::new(),
            models: BTreeMap::new(),
            datasets: BTreeMap::new(),
            inputs: BTreeMap::new(),
        },
    };
    for &ix in &plan.order {
        let (fp, inputs) = b.node(ix);
        b.fps.nodes.insert(ix, fp);
        b.fps.inputs.insert(ix, inputs);
    }
    b.fps
}
