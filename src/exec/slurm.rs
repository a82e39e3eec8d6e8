//! Slurm's command lines and answers: the `sbatch` arguments of a job, the job id `sbatch
//! --parsable` prints, job states from `squeue` and `sacct`; and the `Shell` that runs them (a
//! trait, so that everything here is tested without a cluster).

use crate::experiment::slurm::Resources;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Runs a program and returns its standard output (an error with its standard error when it fails).
pub trait Shell {
    fn run(&self, program: &str, args: &[String]) -> Result<String>;
}

/// The machine's programs.
pub struct System;

impl Shell for System {
    fn run(&self, program: &str, args: &[String]) -> Result<String> {
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .with_context(|| format!("cannot run `{program}` (is Slurm installed and on the PATH?)"))?;
        if !out.status.success() {
            bail!("`{program}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A job's command: `lantern run FILE --set … --out OUT` computing `only` (every node when empty);
/// `{task}` in a name is replaced by the array task's number (`$SLURM_ARRAY_TASK_ID`).
pub fn command(exe: &Path, file: &Path, out: &Path, sets: &[String], only: &[String]) -> String {
    let quote = |s: &str| shlex::try_quote(s).map(|q| q.into_owned()).unwrap_or_else(|_| s.replace('\0', ""));
    let mut cmd = format!(
        "exec {} run {} --out {}",
        quote(&exe.to_string_lossy()),
        quote(&file.to_string_lossy()),
        quote(&out.to_string_lossy())
    );
    for set in sets {
        cmd += &format!(" --set {}", quote(set));
    }
    for name in only {
        let quoted: Vec<String> = name.split("{task}").map(quote).collect();
        cmd += &format!(" --only {}", quoted.join("\"$SLURM_ARRAY_TASK_ID\""));
    }
    cmd
}

/// What one `sbatch` call submits.
pub struct Sbatch<'a> {
    pub name: &'a str,
    /// The log file (`%A`, `%a`, `%j` as sbatch expands them).
    pub log: &'a Path,
    /// Array task numbers, when the job is an array.
    pub array: Option<&'a [usize]>,
    /// Job ids (`123`, or `123_4` for a task of an array) to wait for.
    pub after: &'a [String],
    pub resources: &'a Resources,
    /// The shell command the job runs.
    pub command: &'a str,
}

impl Sbatch<'_> {
    /// The arguments of `sbatch`: the id printed alone (`--parsable`), a job whose dependency
    /// fails is cancelled rather than left pending for ever (`--kill-on-invalid-dep=yes`).
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--parsable".to_string(),
            format!("--job-name={}", self.name),
            format!("--output={}", self.log.display()),
            "--kill-on-invalid-dep=yes".to_string(),
        ];
        if let Some(tasks) = self.array {
            a.push(format!("--array={}", ranges(tasks)));
        }
        if !self.after.is_empty() {
            a.push(format!("--dependency=afterok:{}", self.after.join(":")));
        }
        let r = self.resources;
        let opts = [
            ("partition", r.partition.clone()),
            ("time", r.time.clone()),
            ("mem", r.mem.clone()),
            ("cpus-per-task", r.cpus_per_task.map(|c| c.to_string())),
            ("account", r.account.clone()),
        ];
        a.extend(opts.into_iter().filter_map(|(k, v)| Some(format!("--{k}={}", v?))));
        a.extend(r.sbatch_args.iter().cloned());
        a.push(format!("--wrap={}", self.command));
        a
    }
}

/// Task numbers as sbatch's `--array` list: `1-4,7,9-10`.
pub fn ranges(tasks: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < tasks.len() {
        let mut j = i;
        while j + 1 < tasks.len() && tasks[j + 1] == tasks[j] + 1 {
            j += 1;
        }
        parts.push(if j > i { format!("{}-{}", tasks[i], tasks[j]) } else { tasks[i].to_string() });
        i = j + 1;
    }
    parts.join(",")
}

/// The job id `sbatch --parsable` prints (`123`, or `123;cluster`).
pub fn parse_job_id(stdout: &str) -> Result<String> {
    let id = stdout.trim().split(';').next().unwrap_or("").trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch printed no job id: '{}'", stdout.trim());
    }
    Ok(id.to_string())
}

/// A job id (`123`, `123_4`) as numbers, to sort ids as Slurm numbers them.
pub fn id_order(id: &str) -> Vec<u64> {
    id.split('_').map(|n| n.parse().unwrap_or(u64::MAX)).collect()
}

/// Where a job is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Waiting (Slurm's reason: `Priority`, `Resources`, `Dependency`…).
    Queued(String),
    Running,
    Completed,
    /// Ended without success: Slurm's state (`FAILED`, `CANCELLED`, `TIMEOUT`, `OUT_OF_MEMORY`…)
    /// with its reason or exit code.
    Failed(String),
}

impl JobState {
    /// Still queued or running: its nodes are not submitted again.
    pub fn live(&self) -> bool {
        matches!(self, JobState::Queued(_) | JobState::Running)
    }

    /// A Slurm state name with its reason or exit code.
    fn from_slurm(state: &str, detail: &str) -> JobState {
        // sacct says `CANCELLED by 0`.
        let state = state.split_whitespace().next().unwrap_or("");
        let detail = detail.trim();
        match state {
            "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" | "SUSPENDED" => {
                JobState::Queued(detail.to_string())
            }
            "RUNNING" | "CONFIGURING" | "COMPLETING" | "RESIZING" | "SIGNALING" | "STAGE_OUT" => JobState::Running,
            "COMPLETED" => JobState::Completed,
            other if detail.is_empty() || detail == "None" => JobState::Failed(other.to_string()),
            other => JobState::Failed(format!("{other} {detail}")),
        }
    }
}

/// The arguments of `squeue` listing every job of the user, finished ones too while Slurm keeps
/// them, one array task per line: `ID|STATE|REASON`.
pub fn squeue_args() -> Vec<String> {
    ["--me", "--states=all", "--noheader", "--array", "--format=%i|%T|%r"].map(String::from).to_vec()
}

/// The arguments of `sacct` for the jobs `ids` (finished jobs Slurm no longer lists): `ID|STATE|EXITCODE`.
pub fn sacct_args(ids: &[String]) -> Vec<String> {
    let mut a: Vec<String> =
        ["--noheader", "--parsable2", "--allocations", "--format=JobID,State,ExitCode"].map(String::from).to_vec();
    a.push(format!("--jobs={}", ids.join(",")));
    a
}

/// Job states by id (`123`, `123_4`) from `squeue_args` or `sacct_args` output; a line that is not
/// `ID|STATE|DETAIL` is skipped, a pending array's `123_[1-4]` is given to each of its tasks.
pub fn parse_states(stdout: &str) -> BTreeMap<String, JobState> {
    let mut out = BTreeMap::new();
    for line in stdout.lines() {
        let f: Vec<&str> = line.trim().split('|').collect();
        let [id, state, detail] = f[..] else { continue };
        let js = JobState::from_slurm(state, detail);
        match id.split_once("_[") {
            Some((job, list)) => {
                for task in expand(list.trim_end_matches(']')) {
                    out.insert(format!("{job}_{task}"), js.clone());
                }
            }
            None => {
                out.insert(id.to_string(), js);
            }
        }
    }
    out
}

/// `1-3,7` (with an optional `%limit`) as 1, 2, 3, 7.
fn expand(list: &str) -> Vec<usize> {
    let list = list.split('%').next().unwrap_or("");
    let mut out = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<usize>().ok()),
        }
    }
    out
}

/// The states of jobs `ids`: what `squeue` lists, then `sacct` for the others (when the cluster
/// keeps accounting); an id neither knows is absent.
pub fn states(shell: &dyn Shell, ids: &[String]) -> Result<BTreeMap<String, JobState>> {
    let mut out = parse_states(&shell.run("squeue", &squeue_args())?);
    let missing: Vec<String> = ids.iter().filter(|id| !out.contains_key(*id)).cloned().collect();
    if !missing.is_empty() {
        // Without accounting storage sacct fails: those jobs stay unknown.
        if let Ok(text) = shell.run("sacct", &sacct_args(&missing)) {
            for (id, s) in parse_states(&text) {
                out.entry(id).or_insert(s);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_lists_are_ranges() {
        assert_eq!(ranges(&[1, 2, 3, 4, 7, 9, 10]), "1-4,7,9-10");
        assert_eq!(ranges(&[2]), "2");
        assert_eq!(expand("1-3,7%2"), vec![1, 2, 3, 7]);
    }

    #[test]
    fn sbatch_arguments() {
        let r = Resources {
            partition: Some("gpu".into()),
            time: Some("1:00:00".into()),
            cpus_per_task: Some(4),
            sbatch_args: vec!["--gres=gpu:1".into()],
            ..Default::default()
        };
        let (exe, file, out) = (Path::new("/opt/lantern"), Path::new("/w/exp 1.toml"), Path::new("/w/out"));
        let cmd = command(exe, file, out, &["a.n=2".into()], &["corr@shard-{task}-of-4".into()]);
        assert_eq!(
            cmd,
            "exec /opt/lantern run '/w/exp 1.toml' --out /w/out --set 'a.n=2' --only corr@shard-\"$SLURM_ARRAY_TASK_ID\"-of-4"
        );
        let s = Sbatch {
            name: "exp.corr",
            log: Path::new("/w/out/logs/corr-%A_%a.out"),
            array: Some(&[1, 2, 4]),
            after: &["12".into(), "13_2".into()],
            resources: &r,
            command: &cmd,
        };
        assert_eq!(
            s.args(),
            vec![
                "--parsable",
                "--job-name=exp.corr",
                "--output=/w/out/logs/corr-%A_%a.out",
                "--kill-on-invalid-dep=yes",
                "--array=1-2,4",
                "--dependency=afterok:12:13_2",
                "--partition=gpu",
                "--time=1:00:00",
                "--cpus-per-task=4",
                "--gres=gpu:1",
                &format!("--wrap={cmd}"),
            ]
        );
    }

    #[test]
    fn job_ids_and_states() {
        assert_eq!(parse_job_id("123\n").unwrap(), "123");
        assert_eq!(parse_job_id("77;big\n").unwrap(), "77");
        assert!(parse_job_id("sbatch: error: invalid partition\n").is_err());
        let squeue = "5_[2-3]|PENDING|Dependency\n5_1|RUNNING|None\n4|COMPLETED|None\n6|FAILED|NonZeroExitCode\n\
                      7|CANCELLED|DependencyNeverSatisfied\nnonsense\n";
        let s = parse_states(squeue);
        assert_eq!(s["5_2"], JobState::Queued("Dependency".into()));
        assert_eq!(s["5_3"], JobState::Queued("Dependency".into()));
        assert_eq!(s["5_1"], JobState::Running);
        assert_eq!(s["4"], JobState::Completed);
        assert_eq!(s["6"], JobState::Failed("FAILED NonZeroExitCode".into()));
        assert_eq!(s["7"], JobState::Failed("CANCELLED DependencyNeverSatisfied".into()));
        assert_eq!(s.len(), 6);
        let sacct = parse_states("8|CANCELLED by 0|0:0\n9|TIMEOUT|0:15\n10_3|OUT_OF_MEMORY|0:125\n");
        assert_eq!(sacct["8"], JobState::Failed("CANCELLED 0:0".into()));
        assert_eq!(sacct["10_3"], JobState::Failed("OUT_OF_MEMORY 0:125".into()));
        assert!(JobState::Queued(String::new()).live() && !JobState::Completed.live());
    }
}
