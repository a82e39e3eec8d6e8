//! The executor: a `Session` (an experiment validated, planned and fingerprinted against an output
//! folder) runs its plan in order, taking a cache hit only when the fingerprint's artifacts verify,
//! writing each stage atomically, stopping cleanly on Ctrl-C, skipping what depends on a failed
//! stage, and telling a front end what happens through an `Observer`. Also the states `lantern
//! plan` / `status` show.

pub mod cluster;
pub mod cost;
pub mod env;
pub mod events;
pub mod jobs;
pub mod models;
pub mod slurm;
mod state;

pub use events::{Event, Observer, Quiet};

use crate::experiment::Validated;
use crate::fingerprint::{self, Fingerprints};
use crate::plan::{NodeKind, Plan};
use crate::stages::{Part, Stage};
use crate::store::digest::DigestCache;
use crate::store::lock::{FileLock, Mode};
use crate::store::{gc, views, EntryLock, Fingerprint, Lookup, Manifest, Store};
use crate::util::Cancel;
use anyhow::{anyhow, Result};
use env::{NodeEnv, RunEnv};
use petgraph::graph::NodeIndex;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

/// Options of `lantern run`.
#[derive(Default)]
pub struct Options {
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
    /// Failed on invalid input data (a dataset, labels or tokenizer file; `data::DataError`): the
    /// command line exits 2.
    Invalid(String),
    /// Not run because an input failed (which).
    Skipped(String),
    /// Not reached (the run was interrupted first).
    Pending,
    /// A dry run: the state it would start from (`cached`, `stale (…)`, `to run (…)`).
    Planned(String),
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

impl Status {
    /// Failed, on invalid input data or not, or skipped because an input failed.
    pub fn failed(&self) -> bool {
        matches!(self, Status::Failed(_) | Status::Invalid(_) | Status::Skipped(_))
    }
}

impl Outcome {
    pub fn failed(&self) -> bool {
        self.nodes.iter().any(|n| n.status.failed())
    }

    /// Whether a node failed on invalid input data.
    pub fn invalid_input(&self) -> bool {
        self.nodes.iter().any(|n| matches!(n.status, Status::Invalid(_)))
    }

    pub fn get(&self, name: &str) -> Option<&NodeResult> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// An experiment opened against an output folder: validated, planned, fingerprinted.
pub struct Session {
    pub v: Validated,
    pub store: Store,
    pub fps: Fingerprints,
    digests: DigestCache,
}

impl Session {
    /// Parse, validate and plan an experiment file for the output folder `out` (created if
    /// missing). An invalid file is an `Invalid` error (downcast to print its diagnostics).
    pub fn open(file: &Path, out: &Path) -> Result<Session> {
        Session::new(crate::experiment::load(file)?, out)
    }

    /// A validated experiment against the output folder `out` (created if missing); refuses an
    /// experiment folder that leads out of it.
    pub fn new(v: Validated, out: &Path) -> Result<Session> {
        let store = Store::open(out)?;
        store.dirs.experiment(&v.exp.meta.name)?;
        let digests = DigestCache::open(&store.dirs)?;
        let fps = fingerprint::compute(&v, &digests);
        digests.save();
        Ok(Session { v, store, fps, digests })
    }

    /// The experiment's plan.
    pub fn plan(&self) -> &Plan {
        &self.v.plan
    }

    /// The output folder.
    pub fn out(&self) -> &Path {
        self.store.dirs.root()
    }

    /// Remove the experiment's links and report; its artifacts stay in the store for `gc`.
    pub fn clean(&self) -> Result<views::Cleaned> {
        views::unlink(&self.store.dirs, &self.v.exp.meta.name.value)
    }

    /// Run (or, with `dry_run`, only describe) the experiment on `device`; Ctrl-C sets `cancel`.
    pub fn run(
        &mut self,
        opts: &Options,
        cancel: &Cancel,
        device: candle_core::Device,
        observer: &dyn Observer,
    ) -> Result<Outcome> {
        let v = &self.v;
        for name in &opts.force {
            if !v.exp.stages.contains_key(name) && !v.exp.plots.contains_key(name) {
                let names: Vec<&str> = v.exp.stages.keys().chain(v.exp.plots.keys()).map(|s| s.as_str()).collect();
                return Err(anyhow!("--force: no stage '{name}'{}", crate::util::did_you_mean(name, names)));
            }
        }
        let sel = selected(&self.v.plan, &opts.only, opts.shard)?;
        let reporter = observer.reporter();
        // Runs share the output folder; `gc` waits for them all (and they for it).
        let _running = if opts.dry_run { None } else { Some(hold_output_folder(&self.store, reporter)?) };
        if !opts.dry_run {
            let removed = gc::remove_abandoned(&self.store.dirs)?;
            if !removed.is_empty() {
                reporter.note(&format!("removed {} temporary folders left by interrupted runs", removed.len()));
            }
        }
        let models = models::ModelCache::new(device);
        let exp_name = v.exp.meta.name.value.clone();
        let order: Vec<NodeIndex> = self.v.plan.order.iter().copied().filter(|ix| sel.contains(ix)).collect();
        let mut results: Vec<NodeResult> = Vec::new();
        let mut interrupted = false;
        for (k, &ix) in order.iter().enumerate() {
            let node = self.v.plan.graph[ix].clone();
            let kind = node.kind_name.to_string();
            let at = events::At { index: k + 1, total: order.len(), name: &node.name, kind: &kind };
            let mut res = NodeResult {
                name: node.name.clone(),
                kind: kind.clone(),
                status: Status::Pending,
                seconds: 0.0,
                fingerprint: None,
                manifest: None,
            };
            if interrupted || opts.dry_run {
                if opts.dry_run {
                    let state = self.state(ix);
                    observer.event(&at, &Event::Planned(&state));
                    res.status = Status::Planned(state);
                }
                results.push(res);
                continue;
            }
            let failed_input = self.v.plan.inputs(ix).into_iter().find_map(|p| {
                let r = results.iter().find(|r| r.name == self.v.plan.graph[p].name)?;
                r.status.failed().then(|| r.name.clone())
            });
            if let Some(f) = failed_input {
                observer.event(&at, &Event::Skipped { failed_input: &f });
                res.status = Status::Skipped(f);
                results.push(res);
                continue;
            }
            // A trained model's fingerprint is known once its train stage has one.
            if self.fps.nodes[&ix].is_err() {
                self.fps = fingerprint::compute(&self.v, &self.digests);
            }
            let v = &self.v;
            let fp = match &self.fps.nodes[&ix] {
                Ok(fp) => fp.clone(),
                Err(e) => {
                    observer.event(&at, &Event::Failed(e));
                    res.status = Status::Failed(e.clone());
                    results.push(res);
                    continue;
                }
            };
            res.fingerprint = Some(fp.clone());
            let forced = opts.force.contains(&node.name);
            let first = self.store.lookup(&fp);
            // Another run may be computing this entry: wait for it, then take what it made.
            let (lock, waited) = match &first {
                Lookup::Hit(_) if !forced => (None, false),
                _ => {
                    let (lock, waited) = self.store.lock(&fp, || observer.event(&at, &Event::Waiting))?;
                    (Some(lock), waited)
                }
            };
            let found = match first {
                Lookup::Missing if !forced && (waited || self.store.entry_dir(&fp)?.exists()) => self.store.lookup(&fp),
                Lookup::Corrupt(_) if !forced && waited => self.store.lookup(&fp),
                other => other,
            };
            let lock = match (found, lock) {
                (Lookup::Hit(m), lock) if !forced => {
                    drop(lock);
                    link(&self.store, reporter, &exp_name, &node.name, &fp)?;
                    observer.event(&at, &Event::Cached);
                    res.status = Status::Cached;
                    res.seconds = m.seconds;
                    res.manifest = Some(m);
                    results.push(res);
                    continue;
                }
                (found, Some(lock)) => {
                    if let Lookup::Corrupt(why) = found {
                        observer.event(&at, &Event::Corrupt(&why));
                    }
                    lock
                }
                // A hit that is forced was looked up without its lock: take it now.
                (_, None) => self.store.lock(&fp, || observer.event(&at, &Event::Waiting))?.0,
            };
            observer.event(&at, &Event::Running);
            let started = Instant::now();
            let node_cancel = match &opts.fail_after {
                Some((stage, units)) if *stage == node.name => cancel.failing_after(*units),
                _ => cancel.clone(),
            };
            let run = RunEnv {
                v,
                fps: &self.fps,
                store: &self.store,
                models: &models,
                cancel: &node_cancel,
                reporter: observer.reporter(),
            };
            let outcome = run_node(&run, ix, &fp, &exp_name, &lock);
            drop(lock);
            res.seconds = started.elapsed().as_secs_f64();
            match outcome {
                Ok(m) => {
                    link(&self.store, reporter, &exp_name, &node.name, &fp)?;
                    observer.event(&at, &Event::Done { seconds: res.seconds });
                    res.status = Status::Computed;
                    res.manifest = Some(m);
                }
                Err(e) if e.is::<crate::util::Interrupted>() => {
                    observer.event(&at, &Event::Interrupted);
                    interrupted = true;
                }
                Err(e) if crate::data::DataError::is_in(&e) => {
                    let msg = format!("{e:#}");
                    observer.event(&at, &Event::Invalid(&msg));
                    res.status = Status::Invalid(msg);
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    observer.event(&at, &Event::Failed(&msg));
                    res.status = Status::Failed(msg);
                }
            }
            results.push(res);
        }
        self.digests.save();
        Ok(Outcome { nodes: results, interrupted })
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

/// Which nodes a run touches: everything, or the `only` nodes (or one shard's nodes) with their
/// ancestors.
fn selected(plan: &Plan, only: &[String], shard: Option<(usize, usize)>) -> Result<BTreeSet<NodeIndex>> {
    if let Some((i, n)) = shard {
        anyhow::ensure!(i >= 1 && i <= n, "--shard {i}/{n}: the shard number must be between 1 and {n}");
        let want = Part::Shard { index: i - 1, count: n };
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

/// A shared hold on the output folder for the length of a run (`gc` takes it exclusively).
fn hold_output_folder(store: &Store, reporter: &dyn crate::util::Reporter) -> Result<FileLock> {
    let path = store.dirs.out_lock()?;
    if let Some(l) = FileLock::try_acquire(&path, Mode::Shared)? {
        return Ok(l);
    }
    reporter.note(&format!("waiting for `lantern gc` to finish with {}", store.dirs.root().display()));
    FileLock::acquire(&path, Mode::Shared)
}

/// Link a node's view, saying where a file or folder found in its place went.
fn link(
    store: &Store,
    reporter: &dyn crate::util::Reporter,
    experiment: &str,
    node: &str,
    fp: &Fingerprint,
) -> Result<()> {
    if let Some(aside) = views::link(&store.dirs, experiment, node, fp)? {
        reporter.warn(&format!("{node}: what was in the place of its link was moved to {}", aside.display()));
    }
    Ok(())
}

/// Compute one node into a fresh store entry (holding its lock).
fn run_node(run: &RunEnv, ix: NodeIndex, fp: &Fingerprint, exp_name: &str, lock: &EntryLock) -> Result<Manifest> {
    let v = run.v;
    let node = &run.v.plan.graph[ix];
    let pending = run.store.begin(fp, lock)?;
    let started_unix =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let started = Instant::now();
    let stage = match &node.kind {
        NodeKind::Part { stage, .. } => Some(stage.clone()),
        _ => None,
    };
    let mut env = NodeEnv {
        run,
        name: node.name.clone(),
        out: pending.dir.clone(),
        stage,
        cancel: run.cancel.clone(),
        base_dir: v.exp.base_dir(),
    };
    match &node.kind {
        NodeKind::Tokenize { dataset, model } => crate::stages::tokenize::run(&mut env, dataset, model)?,
        NodeKind::Stage(s) => v.exp.stages[s].value.stage().run(&mut env)?,
        NodeKind::Part { stage, part } => v.exp.stages[stage].value.stage().run_part(&mut env, *part)?,
        NodeKind::Plot(p) => v.exp.plots[p].value.run(&mut env)?,
    }
    let manifest = Manifest {
        version: fingerprint::Versions::current().of(&node.kind, node.kind_name),
        format_version: crate::store::FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        fingerprint: fp.to_string(),
        kind: node.kind_name.to_string(),
        stage: node.name.clone(),
        experiment: exp_name.to_string(),
        params: node_params(v, &node.kind),
        inputs: run.fps.inputs[&ix].clone(),
        started_unix,
        seconds: started.elapsed().as_secs_f64(),
        files: vec![],
    };
    run.store.commit(pending, manifest)
}
