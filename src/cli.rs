//! What each `lantern` command does, with its exit code: 0 success, 1 runtime failure,
//! 2 invalid input (experiment file, missing model or data), 130 interrupted.

use crate::exec::{self, Options, Status};
use crate::model::hooks::{all_hooks, select_hooks};
use crate::model::known::known_config;
use crate::model::outputs::loss_per_token;
use crate::model::source::resolve_alias;
use crate::model::{Model, ModelConfig, ModelFiles, Processing, Request, Start};
use crate::plan::{fingerprint, Plan};
use crate::spec::file::DeviceSpec;
use crate::spec::{parse::parse_file, validate as check_experiment, Validated};
use crate::store::digest::DigestCache;
use crate::store::{gc, views, OutDir, Store};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How a command ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Ok,
    Failed,
    Invalid,
    Interrupted,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(match e {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Invalid => 2,
            Exit::Interrupted => 130,
        })
    }
}

/// `--shard i/n`.
pub fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let err = || format!("'{s}': expected i/n, e.g. 3/8 (shard 3 of 8)");
    let (i, n) = s.split_once('/').ok_or_else(err)?;
    let (i, n) = (i.trim().parse().map_err(|_| err())?, n.trim().parse().map_err(|_| err())?);
    if i == 0 || i > n {
        return Err(format!("'{s}': the shard number must be between 1 and {n}"));
    }
    Ok((i, n))
}

/// Parse and validate, printing diagnostics; `None` means invalid input.
pub fn load(file: &Path) -> Option<Validated> {
    let checked = parse_file(file).and_then(check_experiment);
    match checked {
        Ok(v) => {
            for w in &v.warnings {
                eprintln!("warning: {w}");
            }
            Some(v)
        }
        Err(invalid) => {
            eprintln!("{invalid}");
            None
        }
    }
}

pub fn validate(file: &Path) -> Result<Exit> {
    Ok(match load(file) {
        Some(v) => {
            eprintln!(
                "{}: valid ({} models, {} datasets, {} stages, {} plots)",
                file.display(),
                v.exp.models.len(),
                v.exp.datasets.len(),
                v.exp.stages.len(),
                v.exp.plots.len()
            );
            Exit::Ok
        }
        None => Exit::Invalid,
    })
}

/// The device named in the experiment (`cpu` by default; validation checked the name).
fn device(v: &Validated) -> Result<Device> {
    match v.exp.meta.device() {
        Some(DeviceSpec::Cuda(ordinal)) => Device::new_cuda(ordinal)
            .context("CUDA is not available (build with --features cuda on a machine with a GPU)"),
        _ => Ok(Device::Cpu),
    }
}

pub fn run(
    file: &Path,
    out: &Path,
    force: Vec<String>,
    only: Vec<String>,
    shard: Option<(usize, usize)>,
    dry_run: bool,
) -> Result<Exit> {
    let Some(v) = load(file) else { return Ok(Exit::Invalid) };
    let cancel: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    // First Ctrl-C: stop after discarding the running stage; a second one exits at once.
    let _ = ctrlc::set_handler(move || {
        if cancel.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupting: finishing cleanly (Ctrl-C again to quit now)");
    });
    let opts = Options { out: out.to_path_buf(), force, only, shard, dry_run, fail_after: None };
    eprintln!("{}: {} ({})", v.exp.meta.name.value, file.display(), if dry_run { "dry run" } else { "running" });
    let outcome = exec::run(&v, &opts, cancel, device(&v)?)?;
    if !dry_run {
        crate::report::write_for(&v, &outcome, &OutDir::create(out)?)?;
    }
    let count = |f: fn(&Status) -> bool| outcome.nodes.iter().filter(|n| f(&n.status)).count();
    eprintln!(
        "{} computed, {} cached, {} failed, {} skipped → {}",
        count(|s| *s == Status::Computed),
        count(|s| *s == Status::Cached),
        count(|s| matches!(s, Status::Failed(_))),
        count(|s| matches!(s, Status::Skipped(_))),
        out.join(&v.exp.meta.name.value).display()
    );
    Ok(if outcome.interrupted {
        Exit::Interrupted
    } else if outcome.failed() {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

pub fn plan(file: &Path, out: &Path, dot: bool) -> Result<Exit> {
    let Some(v) = load(file) else { return Ok(Exit::Invalid) };
    let plan = Plan::build(&v);
    let store = Store::open(out)?;
    let digests = DigestCache::open(&store.dirs)?;
    let fps = fingerprint::compute(&v, &plan, &digests);
    digests.save();
    let state = |ix| exec::describe_state(&v, &plan, &fps, &store, ix);
    if dot {
        print!("{}", plan.dot(&v, state));
        return Ok(Exit::Ok);
    }
    println!("{:<4} {:<24} {:<14} state", "#", "stage", "kind");
    for (i, &ix) in plan.order.iter().enumerate() {
        let n = &plan.graph[ix];
        println!("{:<4} {:<24} {:<14} {}", i + 1, n.name, n.kind_name(&v), state(ix));
    }
    Ok(Exit::Ok)
}

/// Remove an experiment's links and report; the store entries stay for `gc`.
pub fn clean(file: &Path, out: &Path) -> Result<Exit> {
    let Some(v) = load(file) else { return Ok(Exit::Invalid) };
    let done = views::unlink(&OutDir::create(out)?, &v.exp.meta.name.value)?;
    let folder = done.folder.display();
    for l in &done.links {
        println!("unlinked {folder}/{l}");
    }
    if done.report {
        println!("deleted {folder}/report.html");
    }
    for k in &done.kept {
        println!("kept {folder}/{k} (not made by lantern)");
    }
    if done.folder_removed {
        println!("deleted {folder}/");
    }
    println!(
        "{} links removed; their artifacts stay in the store until `lantern gc --out {}` (which keeps what other \
         experiments link to)",
        done.links.len(),
        out.display()
    );
    Ok(Exit::Ok)
}

/// Delete the store entries no experiment links to (after confirmation), and leftover
/// temporary folders.
pub fn gc(out: &Path, dry_run: bool, yes: bool) -> Result<Exit> {
    use indicatif::HumanBytes;
    let garbage = gc::find(&OutDir::create(out)?)?;
    for u in &garbage.unknown {
        println!("left alone (not a store entry): {}", u.display());
    }
    if !garbage.unreadable.is_empty() {
        eprintln!(
            "error: cannot read the experiment folders {} under {}: nothing is deleted while their links are unknown",
            garbage.unreadable.join(", "),
            out.display()
        );
        return Ok(Exit::Failed);
    }
    for e in &garbage.entries {
        println!("{}  {:>10}  {}", &e.fingerprint.as_str()[..16], HumanBytes(e.bytes).to_string(), e.what);
    }
    println!(
        "{} unlinked entries ({}), {} temporary folders of interrupted runs; {} entries kept (linked by an experiment)",
        garbage.entries.len(),
        HumanBytes(garbage.bytes()),
        garbage.tmp.len(),
        garbage.kept
    );
    if garbage.entries.is_empty() && garbage.tmp.is_empty() {
        return Ok(Exit::Ok);
    }
    if dry_run {
        println!("dry run: nothing deleted");
        return Ok(Exit::Ok);
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!("error: not on a terminal: pass --yes to delete, or --dry-run to list only");
            return Ok(Exit::Invalid);
        }
        eprint!("delete them? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("nothing deleted");
            return Ok(Exit::Ok);
        }
    }
    let (n, bytes) = (garbage.entries.len(), garbage.bytes());
    garbage.delete()?;
    println!("deleted {n} entries ({})", HumanBytes(bytes));
    Ok(Exit::Ok)
}

/// The configuration of MODEL (folder, hub name or alias) without loading weights.
fn model_config(model: &str) -> Result<ModelConfig> {
    let dir = Path::new(model);
    if dir.is_dir() {
        return ModelConfig::from_file(&ModelFiles::from_folder(dir)?.config);
    }
    match ModelFiles::from_hub_offline(model, None) {
        Ok(f) => ModelConfig::from_file(&f.config),
        Err(e) => known_config(resolve_alias(model)).ok_or(e),
    }
}

pub fn hooks(model: &str) -> Result<Exit> {
    let cfg = match model_config(model) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Exit::Invalid);
        }
    };
    println!("{model}: {}", crate::model::forward::describe(&cfg));
    let (b, p) = (1_000_001, 1_000_002);
    for h in all_hooks(&cfg, true) {
        let dims: Vec<String> = h
            .shape(&cfg, b, p)
            .iter()
            .map(|&d| match d {
                1_000_001 => "batch".to_string(),
                1_000_002 => "pos".to_string(),
                d => d.to_string(),
            })
            .collect();
        let optional = h.site().is_some_and(|s| !crate::model::hooks::fired_by_default(s));
        println!("{:<36} [{}]{}", h.to_string(), dims.join(", "), if optional { "  (only when named)" } else { "" });
    }
    Ok(Exit::Ok)
}

/// What `trace` runs on.
pub enum TraceInput {
    /// Text, with BOS prepended or not.
    Text(String, bool),
    /// `1,2,3;4,5,6`
    Tokens(String),
}

fn parse_tokens(s: &str) -> Result<(Vec<u32>, usize, usize)> {
    let rows: Vec<Vec<u32>> = s
        .split(';')
        .map(|r| r.split(',').map(|t| t.trim().parse::<u32>().with_context(|| format!("bad token id '{t}'"))).collect())
        .collect::<Result<_>>()?;
    let len = rows[0].len();
    if rows.iter().any(|r| r.len() != len) || len == 0 {
        bail!("every row of --tokens must have the same, non-zero length");
    }
    Ok((rows.concat(), rows.len(), len))
}

pub fn trace(model: &str, input: &TraceInput, hook_globs: &[String], processing: &str, out: &Path) -> Result<Exit> {
    let Some(processing) = Processing::from_name(processing) else {
        bail!("unknown processing '{processing}' (none, default, default+refactor)")
    };
    let dir = Path::new(model);
    let files = if dir.is_dir() { ModelFiles::from_folder(dir) } else { ModelFiles::from_hub(model, None) };
    let files = match files {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Exit::Invalid);
        }
    };
    let m = Arc::new(Model::load(&files, processing, &Device::Cpu)?);
    let (ids, rows, len) = match input {
        TraceInput::Text(t, bos) => {
            let ids = m.tokenizer()?.encode(t, *bos)?;
            let n = ids.len();
            (ids, 1, n)
        }
        TraceInput::Tokens(s) => parse_tokens(s)?,
    };
    if let Some(bad) = ids.iter().find(|&&t| t as usize >= m.cfg.d_vocab) {
        bail!("token id {bad} is outside the vocabulary (size {})", m.cfg.d_vocab);
    }
    let tokens = Tensor::from_vec(ids, (rows, len), &Device::Cpu)?;
    let hooks = select_hooks(&m.cfg, hook_globs).map_err(anyhow::Error::msg)?;
    let mut saved: HashMap<String, Tensor> = HashMap::new();
    let req = Request::capture(hooks.iter().copied()).with_logits();
    let logits = m.forward(Start::Tokens(&tokens), &req, &mut |h, t| {
        saved.insert(h.to_string(), t);
        Ok(())
    })?;
    let logits = logits.context("no logits")?;
    saved.insert("loss_per_token".into(), loss_per_token(&logits, &tokens)?);
    saved.insert("logits".into(), logits);
    saved.insert("tokens".into(), tokens.to_dtype(candle_core::DType::I64)?);
    let n = saved.len();
    crate::store::atomic::save_tensors(out, &saved)?;
    eprintln!("wrote {} tensors ({} hooks) to {}", n, hooks.len(), out.display());
    Ok(Exit::Ok)
}
