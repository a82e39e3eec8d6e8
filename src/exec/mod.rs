//! The executor: runs a plan in order, taking a cache hit only when the fingerprint's artifacts
//! verify, writing each stage atomically, stopping cleanly on Ctrl-C, skipping what depends on a
//! failed stage. Also the states `lantern plan` / `status` show.

pub mod context;
pub mod models;
pub mod progress;

pub use context::{Interrupted, RunCx, RunEnv};

use crate::plan::fingerprint::{self, Fingerprints};
use crate::plan::{NodeKind, Plan};
use crate::spec::Validated;
use crate::store::digest::DigestCache;
use crate::store::lock::{FileLock, Mode};
use crate::store::{gc, views, Fingerprint, Lookup, Manifest, Store};
use anyhow::{anyhow, Result};
use petgraph::graph::NodeIndex;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// Options of `lantern run`.
#[derive(Default)]
pub struct Options {
    pub out: PathBuf,
    /// Recompute these even when cached.
    pub force: Vec<String>,
    /// Run only these (with what they need).
    pub only: Vec<String>,
    pub dry_run: bool,
    /// Run only shard `.0` (1-based) of `.1` of the stages split into `.1` shards (with what they
    /// need); a later run without it merges the shards.
    pub shard: Option<(usize, usize)>,
    /// Test hook: make stage `.0` fail after `.1` units of progress.
    pub fail_after: Option<(String, u64)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Cached,
    Computed,
    Failed(String),
    /// Not run because an input failed (which).
    Skipped(String),
    /// Would run (dry run) or was not reached (interrupted).
    Pending,
}

#[derive(Clone, Debug)]
pub struct NodeResult {
    pub name: String,
    pub kind: String,
    pub status: Status,
    pub seconds: f64,
    pub fingerprint: Option<Fingerprint>,
    pub manifest: Option<Manifest>,
}

#[derive(Debug)]
pub struct Outcome {
    pub nodes: Vec<NodeResult>,
    pub interrupted: bool,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        self.nodes.iter().any(|n| matches!(n.status, Status::Failed(_) | Status::Skipped(_)))
    }
    pub fn get(&self, name: &str) -> Option<&NodeResult> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// The state of a node before running: `cached`, `stale (why)` or `to run (why)`.
pub fn describe_state(v: &Validated, plan: &Plan, fps: &Fingerprints, store: &Store, ix: NodeIndex) -> String {
    let fp = match &fps.nodes[&ix] {
        Ok(fp) => fp,
        Err(e) => return format!("to run (fingerprint unknown: {e})"),
    };
    match store.lookup(fp) {
        Lookup::Hit(_) => return "cached".into(),
        Lookup::Corrupt(why) => return format!("stale (artifact corrupt: {why})"),
        Lookup::Missing => {}
    }
    let node = &plan.graph[ix];
    let Some(old) = views::manifest(&store.dirs, &v.exp.meta.name, &node.name) else {
        return "to run (never run)".into();
    };
    let changed_inputs: Vec<&String> =
        fps.inputs[&ix].iter().filter(|(k, fp)| old.inputs.get(*k) != Some(fp)).map(|(k, _)| k).collect();
    if !changed_inputs.is_empty() {
        return format!(
            "stale (input changed: {})",
            changed_inputs.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    let params = node_params(v, &node.kind);
    let changed = changed_fields(&old.params, &params);
    if changed.is_empty() {
        "stale (format or seed changed)".into()
    } else {
        format!("stale (changed: {})", changed.join(", "))
    }
}

/// Parameters of a node as recorded in manifests.
pub fn node_params(v: &Validated, kind: &NodeKind) -> serde_json::Value {
    match kind {
        NodeKind::Tokenize { dataset, model } => {
            serde_json::json!({ "dataset": v.exp.datasets[dataset].value, "model": model })
        }
        NodeKind::Stage(s) => serde_json::to_value(&v.exp.stages[s].value).unwrap_or_default(),
        NodeKind::Part { stage, part } => serde_json::json!({ "stage": v.exp.stages[stage].value, "part": part }),
        NodeKind::Plot(p) => serde_json::to_value(&v.exp.plots[p].value).unwrap_or_default(),
    }
}

fn changed_fields(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    match (old.as_object(), new.as_object()) {
        (Some(a), Some(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
        }
        _ if old != new => vec!["parameters".into()],
        _ => vec![],
    }
}

/// Which nodes a run touches: everything, or the `only` nodes (or one shard's nodes) with their
/// ancestors.
fn selected(plan: &Plan, only: &[String], shard: Option<(usize, usize)>) -> Result<BTreeSet<NodeIndex>> {
    if let Some((i, n)) = shard {
        anyhow::ensure!(i >= 1 && i <= n, "--shard {i}/{n}: the shard number must be between 1 and {n}");
        let want = crate::stages::Part::Shard { index: i - 1, count: n };
        let parts: Vec<NodeIndex> = plan
            .graph
            .node_indices()
            .filter(|&ix| matches!(&plan.graph[ix].kind, NodeKind::Part { part, .. } if *part == want))
            .collect();
        anyhow::ensure!(
            !parts.is_empty(),
            "--shard {i}/{n}: no stage is split into {n} shards (set shards = {n} in a correlation stage)"
        );
        return Ok(parts.into_iter().flat_map(|ix| plan.with_ancestors(ix)).collect());
    }
    if only.is_empty() {
        return Ok(plan.order.iter().copied().collect());
    }
    let mut out = BTreeSet::new();
    for name in only {
        let ix = plan.find(name).ok_or_else(|| {
            let names: Vec<&str> = plan.graph.node_weights().map(|n| n.name.as_str()).collect();
            anyhow!("--only: no stage '{name}'{}", crate::util::did_you_mean(name, names))
        })?;
        out.extend(plan.with_ancestors(ix));
    }
    Ok(out)
}

/// Run (or, with `dry_run`, only describe) an experiment.
pub fn run(v: &Validated, opts: &Options, cancel: &AtomicBool, device: candle_core::Device) -> Result<Outcome> {
    for name in &opts.force {
        if !v.exp.stages.contains_key(name) && !v.exp.plots.contains_key(name) {
            let names: Vec<&str> = v.exp.stages.keys().chain(v.exp.plots.keys()).map(|s| s.as_str()).collect();
            return Err(anyhow!("--force: no stage '{name}'{}", crate::util::did_you_mean(name, names)));
        }
    }
    let plan = Plan::build(v);
    let store = Store::open(&opts.out)?;
    // Refuse an experiment folder that leads out of the output folder before anything runs.
    store.dirs.experiment(&v.exp.meta.name)?;
    // Runs share the output folder; `gc` waits for them all (and they for it).
    let _running = if opts.dry_run { None } else { Some(hold_output_folder(&store)?) };
    if !opts.dry_run {
        let removed = gc::remove_abandoned(&store.dirs)?;
        if !removed.is_empty() {
            eprintln!("removed {} temporary folders left by interrupted runs", removed.len());
        }
    }
    let digests = DigestCache::open(&store.dirs)?;
    let mut fps = fingerprint::compute(v, &plan, &digests);
    digests.save();
    let sel = selected(&plan, &opts.only, opts.shard)?;
    let models = models::ModelCache::new(device);
    let exp_name = v.exp.meta.name.value.clone();
    let mut results: Vec<NodeResult> = Vec::new();
    let mut interrupted = false;
    for &ix in plan.order.iter().filter(|ix| sel.contains(ix)) {
        let node = plan.graph[ix].clone();
        let kind = node.kind_name(v).to_string();
        let mut res = NodeResult {
            name: node.name.clone(),
            kind,
            status: Status::Pending,
            seconds: 0.0,
            fingerprint: None,
            manifest: None,
        };
        if interrupted || opts.dry_run {
            if opts.dry_run {
                eprintln!("  {:<24} {}", node.name, describe_state(v, &plan, &fps, &store, ix));
            }
            results.push(res);
            continue;
        }
        let failed_input = plan.inputs(ix).into_iter().find_map(|p| {
            let r = results.iter().find(|r| r.name == plan.graph[p].name)?;
            matches!(r.status, Status::Failed(_) | Status::Skipped(_)).then(|| r.name.clone())
        });
        if let Some(f) = failed_input {
            eprintln!("  {:<24} skipped (input '{f}' failed)", node.name);
            res.status = Status::Skipped(f);
            results.push(res);
            continue;
        }
        // A trained model's fingerprint is known once its train stage has one.
        if fps.nodes[&ix].is_err() {
            fps = fingerprint::compute(v, &plan, &digests);
        }
        let fp = match &fps.nodes[&ix] {
            Ok(fp) => fp.clone(),
            Err(e) => {
                eprintln!("  {:<24} failed: {e}", node.name);
                res.status = Status::Failed(e.clone());
                results.push(res);
                continue;
            }
        };
        res.fingerprint = Some(fp.clone());
        let forced = opts.force.contains(&node.name);
        let first = store.lookup(&fp);
        // Another run may be computing this entry: wait for it, then take what it made.
        let (lock, waited) = match &first {
            Lookup::Hit(_) if !forced => (None, false),
            _ => {
                let (lock, waited) = store.lock(&fp, || {
                    eprintln!("  {:<24} waiting for another lantern run that is computing it", node.name)
                })?;
                (Some(lock), waited)
            }
        };
        let found = match first {
            Lookup::Missing if !forced && (waited || store.entry_dir(&fp)?.exists()) => store.lookup(&fp),
            Lookup::Corrupt(_) if !forced && waited => store.lookup(&fp),
            other => other,
        };
        match found {
            Lookup::Hit(m) if !forced => {
                drop(lock);
                link(&store, &exp_name, &node.name, &fp)?;
                eprintln!("  {:<24} cached", node.name);
                res.status = Status::Cached;
                res.seconds = m.seconds;
                res.manifest = Some(m);
                results.push(res);
                continue;
            }
            Lookup::Corrupt(why) => eprintln!("  {:<24} artifact corrupt ({why}): recomputing", node.name),
            _ => {}
        }
        let lock = lock.expect("taken unless cached");
        eprintln!("  {:<24} running ({})", node.name, res.kind);
        let started = Instant::now();
        let env = RunEnv {
            v,
            plan: &plan,
            fps: &fps,
            store: &store,
            models: &models,
            cancel,
            fail_after: opts.fail_after.clone(),
        };
        let outcome = run_node(&env, ix, &fp, &exp_name, &lock);
        drop(lock);
        res.seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(m) => {
                link(&store, &exp_name, &node.name, &fp)?;
                eprintln!("  {:<24} done in {:.1}s", node.name, res.seconds);
                res.status = Status::Computed;
                res.manifest = Some(m);
            }
            Err(e) if e.is::<Interrupted>() => {
                eprintln!("  {:<24} interrupted: its partial output was discarded", node.name);
                interrupted = true;
            }
            Err(e) => {
                eprintln!("  {:<24} failed: {e:#}", node.name);
                res.status = Status::Failed(format!("{e:#}"));
            }
        }
        results.push(res);
    }
    digests.save();
    Ok(Outcome { nodes: results, interrupted })
}

/// A shared hold on the output folder for the length of a run (`gc` takes it exclusively).
fn hold_output_folder(store: &Store) -> Result<FileLock> {
    let path = store.dirs.out_lock()?;
    if let Some(l) = FileLock::try_acquire(&path, Mode::Shared)? {
        return Ok(l);
    }
    eprintln!("waiting for `lantern gc` to finish with {}", store.dirs.root().display());
    FileLock::acquire(&path, Mode::Shared)
}

/// Link a node's view, saying where a file or folder found in its place went.
fn link(store: &Store, experiment: &str, node: &str, fp: &Fingerprint) -> Result<()> {
    if let Some(aside) = views::link(&store.dirs, experiment, node, fp)? {
        eprintln!("warning: {node}: what was in the place of its link was moved to {}", aside.display());
    }
    Ok(())
}

/// Compute one node into a fresh store entry (holding its lock).
fn run_node(
    env: &RunEnv,
    ix: NodeIndex,
    fp: &Fingerprint,
    exp_name: &str,
    lock: &crate::store::EntryLock,
) -> Result<Manifest> {
    let v = env.v;
    let node = &env.plan.graph[ix];
    let pending = env.store.begin(fp, lock)?;
    let started_unix =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let started = Instant::now();
    let mut cx = RunCx::new(env, &node.name, pending.dir.clone());
    match &node.kind {
        NodeKind::Tokenize { dataset, model } => crate::stages::tokenize::run(&mut cx, dataset, model)?,
        NodeKind::Stage(s) => v.exp.stages[s].value.stage().run(&mut cx)?,
        NodeKind::Part { stage, part } => v.exp.stages[stage].value.stage().run_part(&mut cx, *part)?,
        NodeKind::Plot(p) => crate::stages::Stage::run(&v.exp.plots[p].value, &mut cx)?,
    }
    let manifest = Manifest {
        format_version: crate::store::FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        fingerprint: fp.to_string(),
        kind: node.kind_name(v).to_string(),
        stage: node.name.clone(),
        experiment: exp_name.to_string(),
        params: node_params(v, &node.kind),
        inputs: env.fps.inputs[&ix].clone(),
        started_unix,
        seconds: started.elapsed().as_secs_f64(),
        files: vec![],
    };
    env.store.commit(pending, manifest)
}
