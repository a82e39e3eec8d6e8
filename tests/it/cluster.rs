//! `lantern run --executor slurm` without a cluster: a fake `Shell` answers `sbatch` and `squeue`;
//! the jobs (arrays of shards, groups, the report job), their `afterok` chains, resources from the
//! command line, `[slurm]` and `[slurm.stages.NAME]`, and what a second submission leaves out.
//! tests/slurm/run.sh runs the same against a live Slurm.

use crate::common::Workspace;
use lantern::exec::cluster::{SubmitOptions, Submitted};
use lantern::exec::slurm::Shell;
use lantern::exec::{Options, Session};
use lantern::experiment::slurm::Resources;
use std::cell::RefCell;

const EXPERIMENT: &str = r#"
[experiment]
name = "cl"

[models.tiny]
path = "model"

[datasets.en]
path = "data/english.jsonl"
context = 24
n_tokens = 600

[stages.acts]
kind = "activations"
model = "tiny"
dataset = "en"
batch_size = 4
shards = 2

[stages.ablate]
kind = "ablation"
model = "tiny"
dataset = "en"
batch_size = 4
shards = 3
interventions = [{ hook = "blocks.1.mlp.hook_post", neurons = [1], zero = true }]

[stages.contrast]
kind = "contrast"
a = "acts"
b = "acts"

[slurm]
time = "30"
mem = "2G"

[slurm.stages.ablate]
time = "90"
sbatch_args = ["--qos=long"]
"#;

/// Answers `sbatch` with ids from 100 up and `squeue` with what `queue` holds; records the calls.
#[derive(Default)]
struct FakeSlurm {
    calls: RefCell<Vec<(String, Vec<String>)>>,
    queue: RefCell<String>,
}

impl Shell for FakeSlurm {
    fn run(&self, program: &str, args: &[String]) -> anyhow::Result<String> {
        self.calls.borrow_mut().push((program.to_string(), args.to_vec()));
        match program {
            "sbatch" => Ok(format!("{}\n", 100 + self.calls.borrow().iter().filter(|c| c.0 == "sbatch").count() - 1)),
            "squeue" => Ok(self.queue.borrow().clone()),
            _ => anyhow::bail!("no {program} here"),
        }
    }
}

fn options(ws: &Workspace) -> SubmitOptions {
    SubmitOptions {
        only: vec![],
        resources: Resources { partition: Some("cpu".into()), time: Some("45".into()), ..Default::default() },
        exe: ws.path().join("bin/lantern"),
        sets: vec!["datasets.en.n_tokens=600".into()],
        dry_run: false,
    }
}

fn arg<'a>(job: &'a Submitted, key: &str) -> Option<&'a str> {
    job.args.iter().find_map(|a| a.strip_prefix(key))
}

#[test]
fn jobs_are_arrays_of_shards_then_merges_then_the_report() {
    let ws = Workspace::new();
    let file = ws.file("cl.toml", EXPERIMENT);
    let session = Session::open(&file, &ws.out()).unwrap();
    let slurm = FakeSlurm::default();
    let sub = session.submit(&options(&ws), &slurm).unwrap();
    let line = |j: &Submitted| format!("{} {} {:?} after {:?}", j.id, j.label, j.nodes, j.after);
    let lines: Vec<String> = sub.jobs.iter().map(line).collect();
    assert_eq!(
        lines,
        vec![
            r#"100 en@tiny ["en@tiny"] after []"#,
            r#"101 ablate ["ablate@shard-1-of-3", "ablate@shard-2-of-3", "ablate@shard-3-of-3"] after ["100"]"#,
            r#"102 acts ["acts@shard-1-of-2", "acts@shard-2-of-2"] after ["100"]"#,
            r#"103 acts+1 ["acts", "contrast"] after ["100", "102"]"#,
            r#"104 ablate ["ablate"] after ["100", "101"]"#,
            r#"105 report [] after ["100", "101", "102", "103", "104"]"#,
        ]
    );
    let (ablate_shards, acts_merge, report) = (&sub.jobs[1], &sub.jobs[3], &sub.jobs[5]);
    assert_eq!(arg(ablate_shards, "--array="), Some("1-3"));
    assert_eq!(arg(&sub.jobs[2], "--dependency="), Some("afterok:100"));
    assert_eq!(arg(report, "--dependency="), Some("afterok:100:101:102:103:104"));
    // Resources: the file's [slurm], then the command line, then [slurm.stages.ablate].
    assert_eq!(
        (arg(acts_merge, "--time="), arg(acts_merge, "--mem="), arg(acts_merge, "--partition=")),
        (Some("45"), Some("2G"), Some("cpu"))
    );
    assert_eq!(arg(ablate_shards, "--time="), Some("90"));
    assert!(ablate_shards.args.contains(&"--qos=long".to_string()) && !acts_merge.args.contains(&"--qos=long".into()));
    assert!(sub.jobs.iter().all(|j| j.args.contains(&"--kill-on-invalid-dep=yes".to_string())));
    // Each job runs the same file, overrides and output folder, on its nodes.
    let wrap = |j: &Submitted| arg(j, "--wrap=").unwrap().to_string();
    let out = ws.out().canonicalize().unwrap();
    assert!(
        wrap(acts_merge).ends_with(&format!(
            "cl.toml --out {} --set 'datasets.en.n_tokens=600' --only acts --only contrast",
            out.display()
        )),
        "{}",
        wrap(acts_merge)
    );
    assert!(
        wrap(ablate_shards).ends_with("--only ablate@shard-\"$SLURM_ARRAY_TASK_ID\"-of-3"),
        "{}",
        wrap(ablate_shards)
    );
    assert!(wrap(report).ends_with("--set 'datasets.en.n_tokens=600'"), "{}", wrap(report));
    assert!(wrap(report).starts_with(&format!("exec {}", ws.path().join("bin/lantern").display())));
    assert_eq!(arg(ablate_shards, "--output="), Some(sub.dir.join("ablate-%A_%a.out").to_str().unwrap()));

    // While every job is queued a second submission sends nothing.
    let queued: String = ["100", "101_1", "101_2", "101_3", "102_1", "102_2", "103", "104", "105"]
        .map(|id| format!("{id}|PENDING|Dependency\n"))
        .concat();
    *slurm.queue.borrow_mut() = queued;
    let again = session.submit(&options(&ws), &slurm).unwrap();
    assert!(again.jobs.is_empty() && again.queued.len() == 9, "{:?}", again.jobs);

    // Shard 2 of ablate failed and its merge was cancelled: only they (and a report) go again,
    // after the jobs still queued that they read.
    *slurm.queue.borrow_mut() = "100|RUNNING|None\n101_1|PENDING|Dependency\n101_2|FAILED|NonZeroExitCode\n\
        101_3|PENDING|Dependency\n102_[1-2]|PENDING|Dependency\n103|PENDING|Dependency\n\
        104|CANCELLED|DependencyNeverSatisfied\n"
        .into();
    let (states, error) = session.jobs(&slurm).unwrap();
    assert!(error.is_none());
    let failed = states.values().filter(|(_, s)| s.as_ref().is_some_and(|s| !s.live())).count();
    assert_eq!(failed, 2);
    let third = session.submit(&options(&ws), &slurm).unwrap();
    let lines: Vec<String> = third.jobs.iter().map(line).collect();
    assert_eq!(
        lines,
        vec![
            r#"106 ablate ["ablate@shard-2-of-3"] after ["100"]"#,
            r#"107 ablate ["ablate"] after ["100", "101_1", "101_3", "106"]"#,
            r#"108 report [] after ["100", "101_1", "101_3", "102_1", "102_2", "103", "106", "107"]"#,
        ]
    );
    assert_eq!(arg(&third.jobs[0], "--array="), Some("2"));
}

#[test]
fn what_is_computed_is_not_submitted_and_a_dry_run_submits_nothing() {
    let ws = Workspace::new();
    let file = ws.file("cl.toml", EXPERIMENT);
    assert!(!ws.run_with(&file, Options { only: vec!["acts".into()], ..Default::default() }).failed());
    let session = Session::open(&file, &ws.out()).unwrap();
    let slurm = FakeSlurm::default();
    let dry = session.submit(&SubmitOptions { dry_run: true, ..options(&ws) }, &slurm).unwrap();
    assert!(slurm.calls.borrow().is_empty(), "a dry run called {:?}", slurm.calls.borrow());
    assert_eq!(dry.done, 4, "en@tiny, two shards of acts, acts");
    let labels: Vec<(&str, &str)> = dry.jobs.iter().map(|j| (j.id.as_str(), j.label.as_str())).collect();
    assert_eq!(labels, vec![("job1", "contrast"), ("job2", "ablate"), ("job3", "ablate"), ("job4", "report")]);
    assert!(!session.out().join(".lantern/slurm/cl/jobs.json").exists());

    // `--only contrast`: the last job is a plain one, so it runs the selection itself.
    let only = SubmitOptions { only: vec!["contrast".into()], ..options(&ws) };
    let sub = session.submit(&only, &slurm).unwrap();
    assert_eq!(sub.jobs.len(), 1);
    assert!(arg(&sub.jobs[0], "--wrap=").unwrap().ends_with("--only contrast"));
    assert!(arg(&sub.jobs[0], "--dependency=").is_none());
    let record = std::fs::read_to_string(session.out().join(".lantern/slurm/cl/jobs.json")).unwrap();
    assert!(record.contains("\"contrast\"") && record.contains("\"id\": \"100\""), "{record}");
}

#[test]
fn slurm_tables_are_checked_and_the_cli_refuses_mixed_options() {
    let ws = Workspace::new();
    let misnamed = ws.file("bad1.toml", &EXPERIMENT.replace("[slurm.stages.ablate]", "[slurm.stages.ablat]"));
    let ran = ws.lantern(&["validate", misnamed.to_str().unwrap()]);
    assert_eq!(ran.code, Some(2), "{}", ran.text);
    assert!(ran.text.contains("no stage or plot 'ablat'") && ran.text.contains("'ablate'"), "{}", ran.text);
    let unknown = ws.file("bad2.toml", &EXPERIMENT.replace("mem = \"2G\"", "memory = 2"));
    let ran = ws.lantern(&["validate", unknown.to_str().unwrap()]);
    assert_eq!(ran.code, Some(2), "{}", ran.text);
    assert!(ran.text.contains("unknown field `memory`") && ran.text.contains("'mem'"), "{}", ran.text);
    let file = ws.file("cl.toml", EXPERIMENT);
    let ran = ws.lantern(&["run", file.to_str().unwrap(), "--time", "10"]);
    assert_eq!(ran.code, Some(2), "{}", ran.text);
    assert!(ran.text.contains("need --executor slurm"), "{}", ran.text);
    let ran = ws.lantern(&["run", file.to_str().unwrap(), "--executor", "slurm", "--force", "acts"]);
    assert_eq!(ran.code, Some(2), "{}", ran.text);
    let ran = ws.lantern(&["run", file.to_str().unwrap(), "--executor", "slurm", "--dry-run", "--sbatch-arg=--hold"]);
    assert_eq!(ran.code, Some(0), "{}", ran.text);
    assert!(ran.text.contains("job job2 ablate shards 1-3 of 3 after job1"), "{}", ran.text);
    assert!(ran.text.contains("'--hold'") || ran.text.contains(" --hold "), "{}", ran.text);
}
