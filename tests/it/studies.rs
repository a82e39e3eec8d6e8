//! The shipped study files run end to end at the real models' shapes: random-weight models of the
//! real configurations and stand-in datasets in a temporary Hugging Face cache (`hub.rs`), each
//! file run as shipped with its token counts cut down by `--set`. Pythia-70M and solu-2l run by
//! default; the GPT-2 small (five Stanford CRFM seeds) and GPT-2 Large studies are `#[ignore]`d
//! (`cargo test --release --test it -- --ignored studies::`), and print their wall time and peak
//! memory for docs/benchmarks.md.

use crate::common::repo;
use crate::hub::{HubCache, GPT2_LARGE, GPT2_SMALL, PYTHIA_70M, SOLU_2L};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A finished `lantern` command: its output and exit code, how long it took, its peak RSS.
struct Ran {
    code: Option<i32>,
    text: String,
    seconds: f64,
    peak_mb: f64,
}

// The child is waited for with wait4 (for its resource usage), which clippy does not see.
#[allow(clippy::zombie_processes)]
fn lantern(hub: &HubCache, args: &[&str]) -> Ran {
    let logs = tempfile::tempdir().unwrap();
    let (out, err) = (logs.path().join("out"), logs.path().join("err"));
    let start = Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_lantern"))
        .args(args)
        .env("HF_HUB_CACHE", hub.path())
        .env("HF_HUB_OFFLINE", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let (code, peak_mb) = wait_with_peak(child.id());
    let seconds = start.elapsed().as_secs_f64();
    let text = format!("{}{}", std::fs::read_to_string(out).unwrap(), std::fs::read_to_string(err).unwrap());
    Ran { code, text, seconds, peak_mb }
}

/// Wait for a child: its exit code and its peak RSS (ru_maxrss, KiB on Linux) in MB.
fn wait_with_peak(pid: u32) -> (Option<i32>, f64) {
    let (mut status, mut usage): (libc::c_int, libc::rusage) = (0, unsafe { std::mem::zeroed() });
    // SAFETY: wait4 writes only the status and usage it is given, for a child of this process.
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(r, pid as libc::pid_t, "wait4 failed");
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, usage.ru_maxrss as f64 / 1024.0)
}

fn study(name: &str) -> String {
    repo().join("experiments").join(format!("{name}.toml")).display().to_string()
}

/// Run a shipped study with overrides: every stage and plot computed, nothing printed but the
/// progress summary (no warning, no third-party noise); a second run is all cache hits.
fn run_study(hub: &HubCache, name: &str, sets: &[&str]) -> PathBuf {
    let out = hub.path().join("out");
    let mut args = vec!["run".to_string(), study(name), "--out".into(), out.display().to_string()];
    for s in sets {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ran = lantern(hub, &args);
    eprintln!("{name}: {:.1} s, peak RSS {:.0} MB (lantern {})", ran.seconds, ran.peak_mb, args[3..].join(" "));
    assert_eq!(ran.code, Some(0), "{}", ran.text);
    for noise in ["skipping", "warning", "Storage", "panicked"] {
        assert!(!ran.text.contains(noise), "{noise}: {}", ran.text);
    }
    assert!(ran.text.contains(" computed, 0 cached, 0 failed, 0 skipped"), "{}", ran.text);
    let again = lantern(hub, &args);
    assert!(again.text.contains("0 computed, ") && again.text.contains(" 0 failed"), "{}", again.text);
    let folder = out.join(name);
    assert!(folder.join("report.html").is_file());
    // What each stage took beside what `plan --cost` estimates (shown with --nocapture).
    let mut cost_args = args.clone();
    cost_args[0] = "plan";
    cost_args.push("--cost");
    let cost = lantern(hub, &cost_args);
    assert_eq!(cost.code, Some(0), "{}", cost.text);
    let mut status_args = args.clone();
    status_args[0] = "status";
    let status = lantern(hub, &status_args);
    eprintln!("{name} estimated:\n{}\n{name} measured:\n{}", cost.text, status.text);
    folder
}

fn rows(path: &Path) -> usize {
    lantern::store::table::read(path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display())).height()
}

#[test]
fn german_neuron_runs_on_the_pythia_70m_shape() {
    let hub = HubCache::new();
    hub.pythia("EleutherAI/pythia-70m", PYTHIA_70M, 70);
    let out = run_study(&hub, "german-neuron", &["datasets.german.max_docs=2", "datasets.english.max_docs=2"]);
    // Clean and ablated loss on each language, the four runs of each path decomposition.
    assert_eq!(rows(&out.join("ablate_german/losses.parquet")), 2);
    assert_eq!(rows(&out.join("ablate_english/losses.parquet")), 2);
    assert_eq!(rows(&out.join("effects/effects.parquet")), 4);
    // The cost of the same run, its tokens now counted from the cached tokenizations.
    let plan = lantern(
        &hub,
        &[
            "plan",
            "--cost",
            &study("german-neuron"),
            "--out",
            &out.parent().unwrap().display().to_string(),
            "--set",
            "datasets.german.max_docs=2",
            "--set",
            "datasets.english.max_docs=2",
        ],
    );
    assert_eq!(plan.code, Some(0), "{}", plan.text);
    assert!(plan.text.contains("measured before, in .lantern/machine.json") || plan.text.contains("measured now"));
    let line = plan.text.lines().find(|l| l.contains(" ablate_german ")).unwrap_or_else(|| panic!("{}", plan.text));
    assert!(line.contains("GFLOP") && !line.contains('~') && line.contains("cached"), "{line}");
    assert!(plan.text.contains("total: "), "{}", plan.text);
}

#[test]
fn plan_cost_says_how_to_shard_a_stage_longer_than_a_day() {
    // Offline, from the known shapes: no model or dataset needed to estimate.
    let hub = HubCache::new();
    let out = hub.path().join("out").display().to_string();
    let args = ["plan", "--cost", &study("universal-neurons"), "--out", &out];
    let plan = lantern(&hub, &[&args[..], &["--set", "datasets.pile.n_tokens=10_000_000_000"]].concat());
    assert_eq!(plan.code, Some(0), "{}", plan.text);
    assert!(plan.text.contains("measured now"), "{}", plan.text);
    let corr = plan.text.lines().find(|l| l.contains(" corr[b] ")).unwrap();
    assert!(corr.contains("~") && corr.contains("4 × ") && corr.contains("EFLOP"), "{corr}");
    assert!(
        plan.text.contains("baseline[b]: ") && plan.text.contains("--set stages.baseline.shards="),
        "{}",
        plan.text
    );
    assert!(plan.text.contains("weights_a ") && plan.text.contains("total: "), "{}", plan.text);
    // The rate is measured once per output folder.
    let again = lantern(&hub, &args);
    assert!(again.text.contains("measured before"), "{}", again.text);
}

#[test]
fn polysemantic_runs_on_solu_2l_from_its_tl_checkpoint() {
    let hub = HubCache::new();
    hub.solu("NeelNanda/SoLU_2L512W_C4_Code", SOLU_2L, 2);
    hub.c4("NeelNanda/c4-10k", 40);
    hub.code("NeelNanda/code-10k", 40);
    let out = run_study(&hub, "polysemantic", &["datasets.c4.n_tokens=2048", "datasets.code.n_tokens=2048"]);
    // Both hooks of both layers, every neuron, with the label mix of its top examples.
    assert_eq!(rows(&out.join("acts/stats.parquet")), 2 * 2 * 2048);
    assert!(out.join("most_mixed/index.html").is_file());
}

/// The five CRFM seeds of GPT-2 small (`pytorch_model.bin` pickles, as their repositories hold).
fn crfm_small(hub: &HubCache) {
    for (i, s) in ["alias-gpt2-small-x21", "battlestar-gpt2-small-x49", "caprica-gpt2-small-x81"]
        .into_iter()
        .chain(["darkmatter-gpt2-small-x343", "expanse-gpt2-small-x777"])
        .enumerate()
    {
        hub.gpt2(&format!("stanford-crfm/{s}"), GPT2_SMALL, true, i as u64);
    }
}

#[test]
#[ignore = "five GPT-2 small models (2.5 GB of weights), minutes: cargo test --release --test it -- --ignored studies::"]
fn universal_neurons_runs_on_five_gpt2_small_seeds() {
    let hub = HubCache::new();
    crfm_small(&hub);
    hub.pile("NeelNanda/pile-10k", 200);
    // One row of 512 tokens; each correlation in one node, its sums in tiles of 6 GB.
    let sets = [
        "datasets.pile.n_tokens=511",
        "stages.corr.shards=1",
        "stages.corr.memory_gb=6",
        "stages.baseline.shards=1",
        "stages.baseline.memory_gb=6",
    ];
    let out = run_study(&hub, "universal-neurons", &sets);
    assert_eq!(rows(&out.join("universal/universal.parquet")), 12 * 3072);
}

#[test]
#[ignore = "five GPT-2 small models (2.5 GB of weights), minutes: cargo test --release --test it -- --ignored studies::"]
fn neuron_families_runs_on_five_gpt2_small_seeds() {
    let hub = HubCache::new();
    crfm_small(&hub);
    hub.pile("NeelNanda/pile-10k", 200);
    let sets = ["datasets.pile.n_tokens=2048", "datasets.pile_small.n_tokens=511", "datasets.pile_256.n_tokens=510"];
    let out = run_study(&hub, "neuron-families", &sets);
    assert!(rows(&out.join("explain/best.parquet")) > 0);
    assert!(rows(&out.join("entropy/summary.parquet")) > 0);
}

#[test]
#[ignore = "GPT-2 Large (3.1 GB of weights), minutes: cargo test --release --test it -- --ignored studies::"]
fn an_neuron_runs_on_the_gpt2_large_shape() {
    let hub = HubCache::new();
    hub.gpt2("gpt2-large", GPT2_LARGE, false, 36);
    hub.pile("NeelNanda/pile-10k", 10);
    let out = run_study(&hub, "an-neuron", &["datasets.pile10.max_docs=2"]);
    assert_eq!(rows(&out.join("patch_neurons/neurons.parquet")), 5120);
    // The study's step 4: activation buckets against the top prediction, one point per position.
    assert!(rows(&out.join("an_predictions/buckets.parquet")) > 0);
    assert!(rows(&out.join("an_predictions/points.parquet")) > 0);
}
