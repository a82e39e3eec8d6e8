//! `lantern run --executor slurm`: the experiment submitted as Slurm jobs (see
//! `lantern::exec::cluster`); prints one line per job and returns.

use super::{open, Exit, Target};
use anyhow::Result;
use lantern::exec::cluster::SubmitOptions;
use lantern::exec::slurm::{ranges, System};

pub fn submit(target: &Target, opts: SubmitOptions) -> Result<Exit> {
    let Some(session) = open(target)? else { return Ok(Exit::Invalid) };
    let name = &session.v.exp.meta.name.value;
    let sub = session.submit(&opts, &System)?;
    let verb = if opts.dry_run { "would submit" } else { "submitted" };
    for (node, id) in &sub.queued {
        eprintln!("{node}: left to job {id} (queued or running)");
    }
    if sub.jobs.is_empty() {
        eprintln!(
            "{name}: nothing to submit ({} computed, {} queued or running); `lantern run {}` writes the report",
            sub.done,
            sub.queued.len(),
            target.file.display()
        );
        return Ok(Exit::Ok);
    }
    for job in &sub.jobs {
        let what = match &job.array {
            Some((tasks, count)) => format!("shards {} of {count}", ranges(tasks)),
            None if job.nodes.is_empty() => "(the report)".to_string(),
            None => format!("({})", job.nodes.join(", ")),
        };
        let after = if job.after.is_empty() { String::new() } else { format!(" after {}", job.after.join(",")) };
        println!("job {} {} {what}{after}", job.id, job.label);
        if opts.dry_run {
            let args = job.args.iter().map(|a| a.as_str());
            println!("    sbatch {}", shlex::try_join(args).unwrap_or_else(|_| job.args.join(" ")));
        }
    }
    let nodes: usize = sub.jobs.iter().map(|j| j.nodes.len()).sum();
    eprintln!(
        "{name}: {verb} {} jobs for {nodes} nodes ({} computed, {} queued or running); logs in {}",
        sub.jobs.len(),
        sub.done,
        sub.queued.len(),
        sub.dir.display()
    );
    eprintln!("watch: lantern status {} --out {}", target.file.display(), target.out.display());
    Ok(Exit::Ok)
}
