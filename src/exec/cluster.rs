//! `lantern run --executor slurm` on a `Session`: the nodes left to compute cut into jobs (see
//! `jobs`), submitted with `sbatch` and chained with `afterok`, each running `lantern run FILE
//! --only …` on the shared output folder; the jobs recorded in `OUT/.lantern/slurm/<experiment>/
//! jobs.json`, so that a later submission skips what is queued or running and `lantern status`
//! shows each node's job.

use super::jobs::{self, shard, Job};
use super::slurm::{self, JobState, Sbatch, Shell};
use super::{selected, Session};
use crate::experiment::slurm::Resources;
use crate::stages::shard_node_name;
use crate::store::Lookup;
use anyhow::{Context, Result};
use petgraph::graph::NodeIndex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The job of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    /// `123`, or `123_4` for task 4 of an array.
    pub id: String,
    pub log: PathBuf,
}

/// `jobs.json`: the latest job of each node.
#[derive(Default, Serialize, Deserialize)]
struct Record {
    nodes: BTreeMap<String, JobRef>,
}

/// What `submit` is asked.
pub struct SubmitOptions {
    /// Only these (with what they need), as `--only`.
    pub only: Vec<String>,
    /// The command line's resources (over `[slurm]`, under `[slurm.stages.NAME]`).
    pub resources: Resources,
    /// The `lantern` the jobs run (it must be reachable at this path on the cluster's nodes).
    pub exe: PathBuf,
    /// `--set` overrides, passed on to every job.
    pub sets: Vec<String>,
    /// Build the sbatch command lines, submit nothing (job ids are then `job1`, `job2`…).
    pub dry_run: bool,
}

/// A job submitted.
#[derive(Clone, Debug)]
pub struct Submitted {
    pub id: String,
    pub label: String,
    /// The nodes it computes.
    pub nodes: Vec<String>,
    /// An array's task numbers (shard numbers) and shard count.
    pub array: Option<(Vec<usize>, usize)>,
    /// The job ids it waits for.
    pub after: Vec<String>,
    /// `sbatch`'s arguments.
    pub args: Vec<String>,
    /// Its log (an array's with `%a` for the task).
    pub log: PathBuf,
}

/// What a submission did.
#[derive(Debug, Default)]
pub struct Submission {
    pub jobs: Vec<Submitted>,
    /// Nodes left to jobs submitted before, still queued or running: (node, job id).
    pub queued: Vec<(String, String)>,
    /// Nodes already computed.
    pub done: usize,
    /// Where the record and the logs are.
    pub dir: PathBuf,
}

impl Session {
    /// Whether a node's artifacts are in the store.
    fn done(&self, ix: NodeIndex) -> bool {
        matches!(&self.fps.nodes[&ix], Ok(fp) if matches!(self.store.lookup(fp), Lookup::Hit(_)))
    }

    fn slurm_dir(&self) -> Result<PathBuf> {
        self.store.dirs.slurm(&self.v.exp.meta.name.value)
    }

    fn record(&self) -> Result<Record> {
        let path = self.slurm_dir()?.join("jobs.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("cannot read {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The recorded job of each node not computed yet, with its state (`None`: Slurm knows it no
    /// more, or `squeue` cannot run: the error).
    pub fn jobs(&self, shell: &dyn Shell) -> Result<(BTreeMap<NodeIndex, (JobRef, Option<JobState>)>, Option<String>)> {
        let record = self.record()?;
        let mut pending: BTreeMap<NodeIndex, JobRef> = BTreeMap::new();
        for (name, job) in record.nodes {
            if let Some(ix) = self.plan().find(&name).filter(|&ix| !self.done(ix)) {
                pending.insert(ix, job);
            }
        }
        if pending.is_empty() {
            return Ok((BTreeMap::new(), None));
        }
        let ids: Vec<String> = pending.values().map(|j| j.id.clone()).collect();
        let (states, error) = match slurm::states(shell, &ids) {
            Ok(s) => (s, None),
            Err(e) => (BTreeMap::new(), Some(format!("{e:#}"))),
        };
        let out = pending
            .into_iter()
            .map(|(ix, job)| {
                let state = states.get(&job.id).cloned();
                (ix, (job, state))
            })
            .collect();
        Ok((out, error))
    }

    /// Submit the nodes not computed and not queued as Slurm jobs (see the module's comment);
    /// nothing when everything is computed.
    pub fn submit(&self, opts: &SubmitOptions, shell: &dyn Shell) -> Result<Submission> {
        let plan = self.plan();
        let sel = selected(plan, &opts.only, None)?;
        let dir = self.slurm_dir()?;
        let (known, error) = self.jobs(shell)?;
        if let Some(e) = error {
            anyhow::bail!("cannot read the states of the jobs submitted before: {e}");
        }
        let mut sub = Submission { dir: dir.clone(), ..Default::default() };
        let (mut todo, mut queued) = (BTreeSet::new(), BTreeMap::new());
        for &ix in plan.order.iter().filter(|ix| sel.contains(ix)) {
            match known.get(&ix) {
                _ if self.done(ix) => sub.done += 1,
                Some((job, Some(state))) if state.live() => {
                    queued.insert(ix, job.id.clone());
                    sub.queued.push((plan.graph[ix].name.clone(), job.id.clone()));
                }
                _ => {
                    todo.insert(ix);
                }
            }
        }
        if todo.is_empty() {
            return Ok(sub);
        }
        let slurm = &self.v.exp.slurm;
        let queued_nodes: BTreeSet<NodeIndex> = queued.keys().copied().collect();
        let matrices = &self.v.exp.matrices;
        let mut list = jobs::jobs(plan, &todo, &queued_nodes, |s| slurm.of(s, matrices).is_some());
        // The last job writes the report: it runs the whole selection after every other job
        // (a job of its own when the last one is an array or has resources of its own).
        let last_common = list.last().is_some_and(|j| j.array.is_none() && j.own.is_none());
        if !last_common {
            list.push(Job {
                label: "report".into(),
                nodes: vec![],
                array: None,
                own: None,
                after: vec![],
                after_queued: vec![],
            });
        }
        let n = list.len();
        let last = list.last_mut().expect("a job");
        last.after = (0..n - 1).collect();
        last.after_queued = queued_nodes.iter().copied().collect();
        if !opts.dry_run {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = std::path::absolute(&self.v.exp.file)?;
        let exp = &self.v.exp.meta.name.value;
        let mut record = self.record()?;
        for (k, job) in list.iter().enumerate() {
            let mut after: Vec<String> = job.after.iter().map(|&a| sub.jobs[a].id.clone()).collect();
            after.extend(job.after_queued.iter().map(|ix| queued[ix].clone()));
            after.sort_by_key(|id| slurm::id_order(id));
            after.dedup();
            let tasks: Vec<usize> = job.nodes.iter().filter_map(|&ix| shard(plan, ix)).map(|s| s.0).collect();
            let first_shard = job.nodes.first().and_then(|&ix| shard(plan, ix));
            let only: Vec<String> = match (&job.array, first_shard) {
                (Some(stage), Some((_, count))) => vec![shard_node_name(stage, "{task}", count)],
                _ if k + 1 == n => opts.only.clone(),
                _ => job.nodes.iter().map(|&ix| plan.graph[ix].name.clone()).collect(),
            };
            let resources = match job.own.as_ref().and_then(|s| slurm.of(s, matrices)) {
                Some(own) => slurm.defaults.then(&opts.resources).then(own),
                None => slurm.defaults.then(&opts.resources),
            };
            let log = dir.join(format!("{}-{}.out", job.label, if job.array.is_some() { "%A_%a" } else { "%j" }));
            let command = slurm::command(&opts.exe, &file, self.out(), &opts.sets, &only);
            let args = Sbatch {
                name: &format!("{exp}.{}", job.label),
                log: &log,
                array: job.array.as_ref().map(|_| tasks.as_slice()),
                after: &after,
                resources: &resources,
                command: &command,
            }
            .args();
            let id =
                if opts.dry_run { format!("job{}", k + 1) } else { slurm::parse_job_id(&shell.run("sbatch", &args)?)? };
            for &ix in &job.nodes {
                let (node_id, node_log) = match shard(plan, ix) {
                    Some((t, _)) => (format!("{id}_{t}"), format!("{}-{id}_{t}.out", job.label)),
                    None => (id.clone(), format!("{}-{id}.out", job.label)),
                };
                record.nodes.insert(plan.graph[ix].name.clone(), JobRef { id: node_id, log: dir.join(node_log) });
            }
            if !opts.dry_run {
                // Saved after each job, so that a failure half-way keeps what was submitted.
                let json = serde_json::to_vec_pretty(&record)?;
                crate::store::atomic::write(&dir.join("jobs.json"), &json)?;
            }
            let nodes = job.nodes.iter().map(|&ix| plan.graph[ix].name.clone()).collect();
            let array = first_shard.filter(|_| job.array.is_some()).map(|(_, count)| (tasks, count));
            sub.jobs.push(Submitted { id, label: job.label.clone(), nodes, array, after, args, log });
        }
        Ok(sub)
    }
}
