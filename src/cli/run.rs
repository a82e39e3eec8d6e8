//! `lantern run`: an experiment run in this process, with Ctrl-C handling, progress on the
//! terminal, the report written at the end.

use super::terminal::Terminal;
use super::{device, open, Exit, Target};
use anyhow::Result;
use lantern::exec::{Options, Status};
use lantern::util::Cancel;

pub fn run(target: &Target, opts: Options) -> Result<Exit> {
    let Some(mut session) = open(target)? else { return Ok(Exit::Invalid) };
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
    eprintln!("{name}: {} ({})", target.file.display(), if opts.dry_run { "dry run" } else { "running" });
    let device = device(&session.v)?;
    let started = std::time::Instant::now();
    let outcome = session.run(&opts, &cancel, device, &Terminal::new())?;
    let count = |f: &dyn Fn(&Status) -> bool| outcome.nodes.iter().filter(|n| f(&n.status)).count();
    if opts.dry_run {
        let planned =
            |prefix: &'static str| move |s: &Status| matches!(s, Status::Planned(state) if state.starts_with(prefix));
        eprintln!(
            "dry run, nothing ran: {} cached, {} stale, {} to run",
            count(&planned("cached")),
            count(&planned("stale")),
            count(&planned("to run"))
        );
        return Ok(Exit::Ok);
    }
    let report = session.store.dirs.report(&name)?;
    lantern::report::write_for(&session.v, &outcome, &session.store.dirs)?;
    if outcome.interrupted {
        let missed: Vec<&str> =
            outcome.nodes.iter().filter(|n| n.status == Status::Pending).map(|n| n.name.as_str()).collect();
        if !missed.is_empty() {
            eprintln!("not reached ({}): {}", missed.len(), missed.join(", "));
        }
    }
    eprintln!(
        "{} computed, {} cached, {} failed, {} skipped in {}; report: {}",
        count(&|s| *s == Status::Computed),
        count(&|s| *s == Status::Cached),
        count(&|s| matches!(s, Status::Failed(_) | Status::Invalid(_))),
        count(&|s| matches!(s, Status::Skipped(_))),
        super::terminal::duration(started.elapsed()),
        report.display()
    );
    Ok(if outcome.interrupted {
        Exit::Interrupted
    } else if outcome.invalid_input() {
        Exit::Invalid
    } else if outcome.failed() {
        Exit::Failed
    } else {
        Exit::Ok
    })
}
