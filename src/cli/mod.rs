//! What each `lantern` command does, with its exit code: 0 success, 1 runtime failure,
//! 2 invalid input (experiment file, missing model or data), 130 interrupted. The only code of the
//! crate that prints.

pub mod terminal;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use lantern::exec::{Options, Session, Status};
use lantern::experiment::file::DeviceSpec;
use lantern::experiment::Validated;
use lantern::model::hooks::{all_hooks, fired_by_default};
use lantern::model::known::config_of;
use lantern::model::selector::select_all;
use lantern::model::{Model, ModelFiles, Processing};
use lantern::spec::Invalid;
use lantern::store::gc;
use lantern::util::Cancel;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use terminal::Terminal;

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

/// Print a validation result: the warnings of a valid file, or every diagnostic of an invalid one.
fn report<T>(checked: Result<T, Invalid>, warnings: impl Fn(&T) -> &[String]) -> Option<T> {
    match checked {
        Ok(v) => {
            for w in warnings(&v) {
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

/// Open an experiment against an output folder, printing diagnostics; `None` means invalid input.
fn open(file: &Path, out: &Path) -> Result<Option<Session>> {
    match Session::open(file, out) {
        Ok(s) => Ok(report(Ok(s), |s| &s.v.warnings)),
        Err(e) => match e.downcast::<Invalid>() {
            Ok(invalid) => Ok(report(Err::<Session, _>(invalid), |s| &s.v.warnings)),
            Err(e) => Err(e),
        },
    }
}

pub fn validate(file: &Path) -> Result<Exit> {
    Ok(match report(lantern::experiment::load(file), |v| &v.warnings) {
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

pub fn run(file: &Path, out: &Path, opts: Options) -> Result<Exit> {
    let Some(mut session) = open(file, out)? else { return Ok(Exit::Invalid) };
    let cancel = Cancel::new();
    let on_ctrl_c = cancel.clone();
    // First Ctrl-C: stop after discarding the running stage; a second one exits at once.
    let _ = ctrlc::set_handler(move || {
        if on_ctrl_c.trigger() {
            std::process::exit(130);
        }
        eprintln!("\ninterrupting: finishing cleanly (Ctrl-C again to quit now)");
    });
    let name = session.v.exp.meta.name.value.clone();
    eprintln!("{name}: {} ({})", file.display(), if opts.dry_run { "dry run" } else { "running" });
    let device = device(&session.v)?;
    let outcome = session.run(&opts, &cancel, device, &Terminal::new())?;
    if !opts.dry_run {
        lantern::report::write_for(&session.v, &outcome, &session.store.dirs)?;
    }
    let count = |f: fn(&Status) -> bool| outcome.nodes.iter().filter(|n| f(&n.status)).count();
    eprintln!(
        "{} computed, {} cached, {} failed, {} skipped → {}",
        count(|s| *s == Status::Computed),
        count(|s| *s == Status::Cached),
        count(|s| matches!(s, Status::Failed(_))),
        count(|s| matches!(s, Status::Skipped(_))),
        out.join(&name).display()
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
    let Some(session) = open(file, out)? else { return Ok(Exit::Invalid) };
    let plan = session.plan();
    if dot {
        print!("{}", plan.dot(|ix| session.state(ix)));
        return Ok(Exit::Ok);
    }
    println!("{:<4} {:<24} {:<14} state", "#", "stage", "kind");
    for (i, &ix) in plan.order.iter().enumerate() {
        let n = &plan.graph[ix];
        println!("{:<4} {:<24} {:<14} {}", i + 1, n.name, n.kind_name, session.state(ix));
    }
    Ok(Exit::Ok)
}

/// Remove an experiment's links and report; the store entries stay for `gc`.
pub fn clean(file: &Path, out: &Path) -> Result<Exit> {
    let Some(session) = open(file, out)? else { return Ok(Exit::Invalid) };
    let done = session.clean()?;
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
    let garbage = gc::find(&lantern::store::OutDir::create(out)?)?;
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

pub fn hooks(model: &str) -> Result<Exit> {
    let cfg = match config_of(model) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Exit::Invalid);
        }
    };
    println!("{model}: {}", lantern::model::forward::describe(&cfg));
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
        let optional = h.site().is_some_and(|s| !fired_by_default(s));
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
    let files = match ModelFiles::from_name(model, true) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Exit::Invalid);
        }
    };
    let m = Model::load(&files, processing, &Device::Cpu)?;
    let (ids, rows, len) = match input {
        TraceInput::Text(t, bos) => {
            let ids = m.tokenizer()?.encode(t, *bos)?;
            let n = ids.len();
            (ids, 1, n)
        }
        TraceInput::Tokens(s) => parse_tokens(s)?,
    };
    let tokens = Tensor::from_vec(ids, (rows, len), &Device::Cpu)?;
    let hooks = select_all(&m.cfg, hook_globs)?;
    let saved = m.trace(&tokens, &hooks)?;
    lantern::store::atomic::save_tensors(out, &saved)?;
    eprintln!("wrote {} tensors ({} hooks) to {}", saved.len(), hooks.len(), out.display());
    Ok(Exit::Ok)
}
