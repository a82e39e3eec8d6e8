//! `lantern plan`, `status` and `show`: the state of an experiment's stages, what the output folder
//! holds, and a table printed in the terminal.

use super::{open, Exit, Target};
use anyhow::Result;
use indicatif::HumanBytes;
use lantern::exec::slurm::JobState;
use lantern::store::{table, Manifest, OutDir};
use polars::prelude::{CsvWriter, SerWriter, SortMultipleOptions};
use std::path::Path;

pub fn plan(target: &Target, dot: bool, cost: bool) -> Result<Exit> {
    if cost {
        return super::cost::plan_cost(target);
    }
    let Some(session) = open(target)? else { return Ok(Exit::Invalid) };
    let plan = session.plan();
    if dot {
        print!("{}", plan.dot(|ix| session.state(ix)));
        return Ok(Exit::Ok);
    }
    for (name, why) in session.unavailable_models() {
        println!("model '{name}' is not available: {why}\n");
    }
    for ((_, base), names) in &session.v.exp.matrices.expanded {
        println!("{base}: matrix → {} ({})", names.len(), names.join(", "));
    }
    println!("{:<4} {:<24} {:<14} state", "#", "stage", "kind");
    for (i, &ix) in plan.order.iter().enumerate() {
        let n = &plan.graph[ix];
        println!("{:<4} {:<24} {:<14} {}", i + 1, n.name, n.kind_name, session.state(ix));
    }
    Ok(Exit::Ok)
}

/// How long ago a unix time was, briefly (`3 min ago`).
fn ago(unix: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let s = now.saturating_sub(unix);
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86400),
    }
}

/// Each stage's state, when its linked artifacts were made, how long that took and their size.
pub fn status(target: &Target) -> Result<Exit> {
    let Some(session) = open(target)? else { return Ok(Exit::Invalid) };
    let plan = session.plan();
    let name = &session.v.exp.meta.name.value;
    // Nodes not computed whose Slurm job (`run --executor slurm`) is known: its state instead.
    let (jobs, squeue_error) = session.jobs(&lantern::exec::slurm::System)?;
    if let Some(e) = squeue_error {
        eprintln!("warning: the states of the Slurm jobs are unknown: {e}");
    }
    println!("{:<4} {:<24} {:<14} {:<10} {:>9} {:>10}  state", "#", "stage", "kind", "ran", "took", "size");
    for (i, &ix) in plan.order.iter().enumerate() {
        let n = &plan.graph[ix];
        let linked = lantern::store::views::manifest(&session.store.dirs, name, &n.name);
        let (ran, took, size) = match &linked {
            Some(m) => (ago(m.started_unix), format!("{:.1}s", m.seconds), HumanBytes(m.bytes()).to_string()),
            None => ("never".into(), String::new(), String::new()),
        };
        let state = match jobs.get(&ix) {
            Some((job, state)) => job_state(job, state.as_ref()),
            None => session.state(ix),
        };
        println!("{:<4} {:<24} {:<14} {ran:<10} {took:>9} {size:>10}  {state}", i + 1, n.name, n.kind_name);
    }
    Ok(Exit::Ok)
}

/// A node's Slurm job in words: `queued (Dependency) · job 12_3`, `running · job 14`, `failed
/// (FAILED NonZeroExitCode) · job 15 · log …`; a job Slurm lists no more is `failed` too (its node
/// was not computed).
fn job_state(job: &lantern::exec::cluster::JobRef, state: Option<&JobState>) -> String {
    let log = || format!(" · log {}", job.log.display());
    match state {
        Some(JobState::Queued(why)) if why.is_empty() || why == "None" => format!("queued · job {}", job.id),
        Some(JobState::Queued(why)) => format!("queued ({why}) · job {}", job.id),
        Some(JobState::Running) => format!("running · job {}", job.id),
        Some(JobState::Completed) => format!("failed (job completed, nothing stored) · job {}{}", job.id, log()),
        Some(JobState::Failed(why)) => format!("failed ({why}) · job {}{}", job.id, log()),
        None => format!("failed (Slurm lists the job no more: cancelled, or ended) · job {}{}", job.id, log()),
    }
}

/// Every experiment under the output folder: its linked stages, how many of their artifacts are
/// present, their size and when they were last made.
pub fn status_all(out: &Path) -> Result<Exit> {
    let dirs = OutDir::create(out)?;
    let all = lantern::store::views::experiments(&dirs)?;
    if all.is_empty() {
        println!("no experiment has run in {}", dirs.root().display());
        return Ok(Exit::Ok);
    }
    println!("{:<28} {:>7} {:>7} {:>10} {:<12} report", "experiment", "stages", "broken", "size", "last run");
    for e in &all {
        let manifests: Vec<&Manifest> = e.nodes.iter().filter_map(|(_, m)| m.as_ref()).collect();
        let broken = e.nodes.len() - manifests.len();
        let bytes: u64 = manifests.iter().map(|m| m.bytes()).sum();
        let last = manifests.iter().map(|m| m.started_unix).max().map(ago).unwrap_or_default();
        println!(
            "{:<28} {:>7} {:>7} {:>10} {last:<12} {}",
            e.experiment,
            e.nodes.len(),
            broken,
            HumanBytes(bytes).to_string(),
            if e.report {
                dirs.root().join(&e.experiment).join("report.html").display().to_string()
            } else {
                "-".into()
            }
        );
    }
    Ok(Exit::Ok)
}

/// What `show` prints.
pub struct ShowOptions {
    pub sort: Option<String>,
    pub desc: bool,
    /// Rows to print (0: all).
    pub head: usize,
    pub columns: Vec<String>,
    pub csv: bool,
}

/// Print a table of a stage: `STAGE` (its only table) or `STAGE.TABLE`.
pub fn show(target: &Target, which: &str, opts: &ShowOptions) -> Result<Exit> {
    let Some(session) = open(target)? else { return Ok(Exit::Invalid) };
    let plan = session.plan();
    // A stage name may hold a '.', so the whole name is tried first.
    let (ix, table) = match plan.find(which) {
        Some(ix) => (ix, None),
        None => match which.rsplit_once('.').and_then(|(s, t)| plan.find(s).map(|ix| (ix, Some(t)))) {
            Some(found) => found,
            None => {
                let names: Vec<&str> = plan.graph.node_weights().map(|n| n.name.as_str()).collect();
                eprintln!("error: no stage '{which}'{}", lantern::util::did_you_mean(which, names));
                return Ok(Exit::Invalid);
            }
        },
    };
    let node = &plan.graph[ix].name;
    let state = session.state(ix);
    let fp = match (&session.fps.nodes[&ix], state.as_str()) {
        (Ok(fp), "cached") => fp,
        _ => {
            eprintln!("error: '{node}' is {state}: run `lantern run {} --only {node}` first", target.file.display());
            return Ok(Exit::Failed);
        }
    };
    let dir = session.store.entry_dir(fp)?;
    let tables = table::tables_in(&dir);
    let table = match table {
        Some(t) if tables.iter().any(|x| x == t) => t.to_string(),
        Some(t) => {
            eprintln!(
                "error: '{node}' has no table '{t}' (tables: {}){}",
                tables.join(", "),
                lantern::util::did_you_mean(t, tables.iter().map(|s| s.as_str()))
            );
            return Ok(Exit::Invalid);
        }
        None if tables.len() == 1 => tables[0].clone(),
        None => {
            eprintln!(
                "error: '{node}' has several tables: name one ({})",
                tables.iter().map(|t| format!("{node}.{t}")).collect::<Vec<_>>().join(", ")
            );
            return Ok(Exit::Invalid);
        }
    };
    let mut df = table::read(&dir.join(format!("{table}.parquet")))?;
    let names: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
    for c in opts.columns.iter().chain(&opts.sort) {
        if !names.contains(c) {
            eprintln!(
                "error: {node}.{table} has no column '{c}' (columns: {}){}",
                names.join(", "),
                lantern::util::did_you_mean(c, names.iter().map(|s| s.as_str()))
            );
            return Ok(Exit::Invalid);
        }
    }
    if let Some(by) = &opts.sort {
        df = df.sort([by.as_str()], SortMultipleOptions::default().with_order_descending(opts.desc))?;
    }
    if !opts.columns.is_empty() {
        df = df.select(opts.columns.iter().map(|c| c.as_str()))?;
    }
    let rows = df.height();
    if opts.head > 0 {
        df = df.head(Some(opts.head));
    }
    if opts.csv {
        CsvWriter::new(std::io::stdout().lock()).finish(&mut df)?;
        return Ok(Exit::Ok);
    }
    // Print every shown row and column in full (polars' formatting reads these at print time).
    for (k, v) in [("POLARS_FMT_MAX_ROWS", "-1"), ("POLARS_FMT_MAX_COLS", "-1"), ("POLARS_FMT_STR_LEN", "60")] {
        std::env::set_var(k, v);
    }
    println!(
        "{node}.{table}: {rows} rows × {} columns{}",
        names.len(),
        if df.height() < rows { format!(", first {}", df.height()) } else { String::new() }
    );
    println!("{df}");
    Ok(Exit::Ok)
}
