//! The engine: a second run recomputes nothing, a changed parameter reruns only its stage and what
//! depends on it, reverting is a cache hit, an interrupted run resumes, corrupt artifacts are redone.

use crate::common::Workspace;
use lantern::exec::{Options, Outcome, Status};

const EXP: &str = r#"
[experiment]
name = "engine"

[models.tiny]
path = "model"

[datasets.en]
path = "data/english.jsonl"
context = 32
n_tokens = 2048

[stages.acts]
kind = "activations"
model = "tiny"
dataset = "en"
hooks = ["mlp.hook_post"]
top_k = TOPK

[stages.acts_pre]
kind = "activations"
model = "tiny"
dataset = "en"
hooks = ["blocks.1.mlp.hook_pre"]

[plots.kurt]
input = "acts"
table = "stats"
kind = "histogram"
column = "kurt"
title = "TITLE"
"#;

fn exp(top_k: usize, title: &str) -> String {
    EXP.replace("TOPK", &top_k.to_string()).replace("TITLE", title)
}

fn statuses(o: &Outcome) -> Vec<(String, Status)> {
    o.nodes.iter().map(|n| (n.name.clone(), n.status.clone())).collect()
}

fn computed(o: &Outcome) -> Vec<String> {
    o.nodes.iter().filter(|n| n.status == Status::Computed).map(|n| n.name.clone()).collect()
}

#[test]
fn second_run_recomputes_nothing_and_changes_rerun_only_dependents() {
    let ws = Workspace::new();
    let f = ws.file("e.toml", &exp(5, "a"));
    let first = ws.run(&f);
    assert_eq!(
        computed(&first),
        ["en@tiny", "acts", "acts_pre", "kurt"].iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "{:?}",
        statuses(&first)
    );
    let second = ws.run(&f);
    assert!(computed(&second).is_empty(), "{:?}", statuses(&second));
    // The manifests of the second run are the first run's (same fingerprints, same start times).
    for (a, b) in first.nodes.iter().zip(&second.nodes) {
        assert_eq!(a.manifest.as_ref().unwrap().fingerprint, b.manifest.as_ref().unwrap().fingerprint);
        assert_eq!(a.manifest.as_ref().unwrap().started_unix, b.manifest.as_ref().unwrap().started_unix);
    }
    // A parameter of `acts`: it and its plot rerun; the tokens and the other stage are cached.
    ws.file("e.toml", &exp(7, "a"));
    assert_eq!(computed(&ws.run(&f)), vec!["acts", "kurt"]);
    // Reverting is a cache hit.
    ws.file("e.toml", &exp(5, "a"));
    assert!(computed(&ws.run(&f)).is_empty());
    // Only the plot's title: only the plot re-renders.
    ws.file("e.toml", &exp(5, "b"));
    assert_eq!(computed(&ws.run(&f)), vec!["kurt"]);
}

#[test]
fn identical_stages_of_two_experiments_share_artifacts() {
    let ws = Workspace::new();
    let a = ws.file("a.toml", &exp(5, "a"));
    ws.run(&a);
    let b = ws.file(
        "b.toml",
        &exp(5, "a")
            .replace("name = \"engine\"", "name = \"other\"")
            .replace("[models.tiny]", "[models.small]")
            .replace("model = \"tiny\"", "model = \"small\""),
    );
    let o = ws.run(&b);
    assert!(computed(&o).is_empty(), "{:?}", statuses(&o));
    assert!(ws.out().join("other/acts/stats.parquet").exists());
}

#[test]
fn a_stage_failing_half_way_keeps_finished_stages_and_the_rerun_resumes() {
    let ws = Workspace::new();
    let f = ws.file("e.toml", &exp(5, "a"));
    let o = ws.run_with(&f, Options { fail_after: Some(("acts".into(), 100)), ..Default::default() });
    let st: std::collections::BTreeMap<_, _> = statuses(&o).into_iter().collect();
    assert_eq!(st["en@tiny"], Status::Computed);
    assert!(matches!(&st["acts"], Status::Failed(e) if e.contains("injected")), "{st:?}");
    assert_eq!(st["kurt"], Status::Skipped("acts".into()));
    assert_eq!(st["acts_pre"], Status::Computed);
    // Nothing half-written is left in the store's temporary folder.
    let tmp = ws.out().join(".lantern/tmp");
    assert_eq!(std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0), 0);
    let again = ws.run(&f);
    assert_eq!(computed(&again), vec!["acts", "kurt"]);
}

#[test]
fn a_truncated_artifact_is_detected_and_recomputed() {
    let ws = Workspace::new();
    let f = ws.file("e.toml", &exp(5, "a"));
    ws.run(&f);
    let stats = ws.out().join("engine/acts/stats.parquet");
    let len = std::fs::metadata(&stats).unwrap().len();
    let bytes = std::fs::read(&stats).unwrap();
    std::fs::write(&stats, &bytes[..(len / 2) as usize]).unwrap();
    let o = ws.run(&f);
    assert_eq!(computed(&o), vec!["acts"]);
    assert_eq!(std::fs::metadata(&stats).unwrap().len(), len);
    // Same size, different content: also caught (by hash).
    let mut bytes = std::fs::read(&stats).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&stats, &bytes).unwrap();
    assert_eq!(computed(&ws.run(&f)), vec!["acts"]);
}

#[test]
fn only_runs_a_stage_with_what_it_needs_and_force_recomputes() {
    let ws = Workspace::new();
    let f = ws.file("e.toml", &exp(5, "a"));
    let o = ws.run_with(&f, Options { only: vec!["acts_pre".into()], ..Default::default() });
    assert_eq!(computed(&o), vec!["en@tiny", "acts_pre"]);
    let o = ws.run_with(&f, Options { force: vec!["acts_pre".into()], ..Default::default() });
    assert_eq!(computed(&o), vec!["acts", "acts_pre", "kurt"]);
    let o = ws.run_with(&f, Options { dry_run: true, ..Default::default() });
    assert!(computed(&o).is_empty());
}

#[test]
fn plan_dot_and_clean_describe_and_delete_what_they_say() {
    let ws = Workspace::new();
    let f = ws.file("e.toml", &exp(5, "a"));
    ws.run(&f);
    let session = lantern::exec::Session::open(&f, &ws.out()).unwrap();
    let states: Vec<String> = session.plan().order.iter().map(|&ix| session.state(ix)).collect();
    assert!(states.iter().all(|s| s == "cached"), "{states:?}");
    let dot = session.plan().dot(|_| "cached".into());
    assert!(dot.starts_with("digraph lantern") && dot.contains("acts\\nactivations") && dot.contains("->"), "{dot}");
    // A changed parameter makes the stage stale and says which field changed.
    ws.file("e.toml", &exp(9, "a"));
    let session = lantern::exec::Session::open(&f, &ws.out()).unwrap();
    let acts = session.plan().find("acts").unwrap();
    assert_eq!(session.state(acts), "stale (changed: top_k)");
    assert!(session.clean().is_ok());
    assert!(!ws.out().join("engine").exists());
    // clean removes links only: the artifacts stay in the store until gc, and only the changed
    // stage (top_k 5 → 9) and its plot run.
    assert_eq!(computed(&ws.run(&f)), vec!["acts", "kurt"], "the rest still cached after clean");
}

#[test]
fn a_bumped_code_version_makes_exactly_that_kind_and_its_dependants_stale() {
    use lantern::fingerprint::{compute_with, Versions};
    let ws = Workspace::new();
    let f = ws.file("e.toml", &exp(5, "a"));
    let v = lantern::experiment::load(&f).unwrap();
    let digests =
        lantern::store::digest::DigestCache::open(&lantern::store::OutDir::create(&ws.out()).unwrap()).unwrap();
    let now = Versions::current();
    let before = compute_with(&v, &digests, &now);
    let changed = |versions: &Versions| -> Vec<String> {
        let after = compute_with(&v, &digests, versions);
        v.plan
            .order
            .iter()
            .filter(|ix| before.nodes[ix].as_ref().ok() != after.nodes[ix].as_ref().ok())
            .map(|ix| v.plan.graph[*ix].name.clone())
            .collect()
    };
    let mut bumped = now.clone();
    *bumped.kinds.get_mut("activations").unwrap() += 1;
    assert_eq!(changed(&bumped), ["acts", "acts_pre", "kurt"], "both activations stages and the plot reading one");
    let mut bumped = now.clone();
    bumped.plot += 1;
    assert_eq!(changed(&bumped), ["kurt"]);
    let mut bumped = now.clone();
    bumped.tokenize += 1;
    assert_eq!(changed(&bumped), ["en@tiny", "acts", "acts_pre", "kurt"]);
    let mut bumped = now.clone();
    bumped.model += 1;
    assert_eq!(changed(&bumped), ["acts", "acts_pre", "kurt"], "the model's identity changes, not its tokenizer's");
    // A run records the version; `plan` names a code change as the reason.
    ws.run(&f);
    let session = lantern::exec::Session::open(&f, &ws.out()).unwrap();
    assert!(session.plan().order.iter().all(|&ix| session.state(ix) == "cached"));
}

#[test]
fn stale_reasons_name_every_changed_parameter_own_or_upstream() {
    let ws = Workspace::new();
    let f = ws.file("e.toml", &exp(5, "a"));
    ws.run(&f);
    ws.file("e.toml", &exp(5, "a").replace("n_tokens = 2048", "n_tokens = 1024"));
    let session = lantern::exec::Session::open(&f, &ws.out()).unwrap();
    let state = |name: &str| session.state(session.plan().find(name).unwrap());
    assert_eq!(state("en@tiny"), "stale (changed: dataset.n_tokens)");
    assert_eq!(state("acts"), "stale (upstream en@tiny: changed: dataset.n_tokens)");
    assert_eq!(state("kurt"), "stale (upstream acts: upstream en@tiny: changed: dataset.n_tokens)");
}
