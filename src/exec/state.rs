//! The state of a node before a run, in words: `cached`, `stale (why)` — every parameter that
//! changed, its own or upstream, by its dotted path, and code versions — or `to run (why)`.

use super::{node_params, Session};
use crate::fingerprint::Versions;
use crate::store::{views, Lookup, Manifest};
use petgraph::graph::NodeIndex;
use serde_json::Value;
use std::collections::BTreeSet;

impl Session {
    /// The state of a node before running: `cached`, `stale (why)` or `to run (why)`.
    pub fn state(&self, ix: NodeIndex) -> String {
        let fp = match &self.fps.nodes[&ix] {
            Ok(fp) => fp,
            Err(e) => return format!("to run ({})", self.unknown(e)),
        };
        match self.store.lookup(fp) {
            Lookup::Hit(_) => return "cached".into(),
            Lookup::Corrupt(why) => return format!("stale (artifact corrupt: {why})"),
            Lookup::Missing => {}
        }
        if self.linked(ix).is_none() {
            return "to run (never run)".into();
        }
        let reasons = self.why(ix, &mut BTreeSet::new());
        if reasons.is_empty() {
            "stale (format or seed changed)".into()
        } else {
            format!("stale ({})", reasons.join("; "))
        }
    }

    /// Why a fingerprint is unknown, briefly: a model that is not available is named, its full
    /// reason is `Session::unavailable_models`'s.
    fn unknown(&self, e: &str) -> String {
        match self.fps.models.iter().find(|(name, fp)| fp.is_err() && e.starts_with(&format!("{name}:"))) {
            Some((name, _)) => format!("model '{name}' is not available"),
            None => format!("fingerprint unknown: {e}"),
        }
    }

    /// The models whose files cannot be found, with why (each once).
    pub fn unavailable_models(&self) -> Vec<(&str, &str)> {
        self.fps.models.iter().filter_map(|(n, fp)| fp.as_ref().err().map(|e| (n.as_str(), e.as_str()))).collect()
    }

    /// The manifest the experiment's link of a node points at (its last run), if any.
    fn linked(&self, ix: NodeIndex) -> Option<Manifest> {
        views::manifest(&self.store.dirs, &self.v.exp.meta.name, &self.v.plan.graph[ix].name)
    }

    /// What changed since the node's linked run: its code, its parameters, and for an input whose
    /// fingerprint changed, what changed there (recursively, up to the first parameter change).
    fn why(&self, ix: NodeIndex, seen: &mut BTreeSet<NodeIndex>) -> Vec<String> {
        if !seen.insert(ix) {
            return vec![];
        }
        let node = &self.v.plan.graph[ix];
        let Some(old) = self.linked(ix) else { return vec![] };
        let mut out = Vec::new();
        let version = Versions::current().of(&node.kind, node.kind_name);
        if old.version != 0 && old.version != version {
            out.push(format!("code of {} changed: version {} → {version}", node.kind_name, old.version));
        }
        let changed = changed_paths(&old.params, &node_params(&self.v, &node.kind));
        if !changed.is_empty() {
            out.push(format!("changed: {}", changed.join(", ")));
        }
        // Inputs that are plan nodes (stages, tokenizations) say what changed there; a model or
        // dataset (its files) is named only when nothing else explains the change.
        let mut files = Vec::new();
        for name in self.fps.inputs[&ix].iter().filter(|(k, fp)| old.inputs.get(*k) != Some(fp)).map(|(k, _)| k) {
            match self.v.plan.find(name) {
                Some(up) => {
                    let upstream = self.why(up, seen);
                    out.push(if upstream.is_empty() {
                        format!("input {name} changed")
                    } else {
                        format!("upstream {name}: {}", upstream.join(", "))
                    });
                }
                None if self.v.exp.models.contains_key(name) => files.push(format!("model {name} changed")),
                None => files.push(format!("dataset {name} changed")),
            }
        }
        if out.is_empty() {
            out = files;
        }
        out
    }
}

/// The dotted paths at which two parameter values differ (`top_k`, `top.n`, `dataset.n_tokens`).
fn changed_paths(old: &Value, new: &Value) -> Vec<String> {
    fn walk(old: &Value, new: &Value, path: &str, out: &mut Vec<String>) {
        match (old, new) {
            (Value::Object(a), Value::Object(b)) => {
                let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for k in keys {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    match (a.get(k), b.get(k)) {
                        (Some(x), Some(y)) => walk(x, y, &p, out),
                        _ => out.push(p),
                    }
                }
            }
            (a, b) if a != b => out.push(if path.is_empty() { "parameters".into() } else { path.to_string() }),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(old, new, "", &mut out);
    out
}
