//! `shards = N` on every token-bound stage: the shards run as separate `--shard i/n` runs (as array
//! jobs would), the stage merges them, and the merged artifacts equal an unsharded run's: bit for
//! bit where the sums are exact, within the README's stated tolerance where they are f64.

use crate::common::Workspace;
use lantern::exec::{Options, Status};
use lantern::store::table::read;
use polars::prelude::*;

const STAGES: &str = r#"
[stages.acts]
kind = "activations"
model = "tiny"
dataset = "mix"
hooks = ["mlp.hook_pre", "mlp.hook_post"]
top_k = 7
batch_size = 3

[stages.explain]
kind = "explain"
model = "tiny"
dataset = "mix"
hooks = ["blocks.1.mlp.hook_post"]
unigram_count_above = 19
unigram_ids_above = 1
batch_size = 3

[stages.ablate]
kind = "ablation"
model = "tiny"
dataset = "mix"
batch_size = 3
[stages.ablate.sets.zero]
interventions = [{ hook = "blocks.1.mlp.hook_post", neurons = [7, 9], zero = true }]
[stages.ablate.sets.mean]
interventions = [{ hook = "blocks.0.mlp.hook_post", neurons = [3], set = { mean_of = "acts" } }]

[stages.direct]
kind = "direct_effect"
model = "tiny"
dataset = "mix"
hook = "blocks.0.mlp.hook_post"
neuron = 5
active = { value = 2.0 }
inactive = { mean_of = "acts" }
frozen = ["blocks.1.hook_attn_out"]
patched = ["blocks.1.hook_mlp_out"]
batch_size = 3

[stages.ent]
kind = "entropy"
model = "tiny"
dataset = "mix"
neurons = [[1, 3], [0, 200]]
values = [0.0, 2.0]
batch_size = 3
"#;

fn experiment(shards: usize) -> String {
    let stages = if shards > 1 {
        STAGES.replace("batch_size = 3\n", &format!("batch_size = 3\nshards = {shards}\n"))
    } else {
        STAGES.to_string()
    };
    format!(
        r#"
[experiment]
name = "x"

[models.tiny]
path = "model"

[datasets.en]
path = "data/english.jsonl"
context = 24
n_tokens = 600

[datasets.de]
path = "data/german.jsonl"
context = 24
n_tokens = 600

[datasets.mix]
mix = ["en", "de"]
context = 24
{stages}
"#
    )
}

fn table(dir: &std::path::Path, name: &str) -> DataFrame {
    read(&dir.join(format!("{name}.parquet"))).unwrap()
}

/// The f64 columns of two tables agree within `tol` (relative to max(1, |x|)); the others are equal.
fn assert_close(what: &str, a: &DataFrame, b: &DataFrame, tol: f64) {
    assert_eq!(a.get_column_names(), b.get_column_names(), "{what}: columns");
    assert_eq!(a.height(), b.height(), "{what}: rows");
    for c in a.columns() {
        let name = c.name().as_str();
        let d = b.column(name).unwrap();
        if c.dtype() == &DataType::Float64 {
            let (x, y) = (c.f64().unwrap(), d.f64().unwrap());
            for (i, (x, y)) in x.into_iter().zip(y).enumerate() {
                let (x, y) = (x.unwrap_or(f64::NAN), y.unwrap_or(f64::NAN));
                let ok = (x.is_nan() && y.is_nan()) || (x - y).abs() <= tol * x.abs().max(1.0);
                assert!(ok, "{what}.{name}[{i}]: {x} vs {y}");
            }
        } else {
            assert!(c.equals_missing(d), "{what}.{name} differs");
        }
    }
}

/// Two explain runs agree: the variance-reduction matrices within `tol`, and every explanation
/// of one run (best and top-k) has, in the other run's matrix, the variance reduction it states
/// (features whose scores tie may swap ranks).
fn assert_explained_alike(a: &std::path::Path, b: &std::path::Path, tol: f64) {
    let load = |d: &std::path::Path| {
        candle_core::safetensors::load(d.join("variance_reduction.safetensors"), &candle_core::Device::Cpu).unwrap()
    };
    let (ma, mb) = (load(a), load(b));
    let hook = "blocks.1.mlp.hook_post";
    let (va, vb) = (ma[hook].to_vec2::<f32>().unwrap(), mb[hook].to_vec2::<f32>().unwrap());
    for (ra, rb) in va.iter().zip(&vb) {
        for (x, y) in ra.iter().zip(rb) {
            assert!((x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-5, "variance reduction {x} vs {y}");
        }
    }
    let features: Vec<String> =
        table(a, "features").column("feature").unwrap().str().unwrap().into_no_null_iter().map(String::from).collect();
    for t in ["best", "explanations"] {
        let (ta, tb) = (table(a, t), table(b, t));
        assert_eq!(ta.height(), tb.height(), "explain.{t}: rows");
        let vr = |df: &DataFrame| {
            df.column("vr").unwrap().f64().unwrap().into_iter().map(|v| v.unwrap_or(f64::NAN)).collect::<Vec<_>>()
        };
        for (x, y) in vr(&ta).iter().zip(vr(&tb)) {
            assert!(
                (x.is_nan() && y.is_nan()) || (x - y).abs() <= tol * x.abs().max(1.0),
                "explain.{t}.vr: {x} vs {y}"
            );
        }
        let neuron = tb.column("neuron").unwrap().cast(&DataType::UInt32).unwrap();
        let feature = tb.column("feature").unwrap().str().unwrap().clone();
        for (i, (n, f)) in neuron.u32().unwrap().into_no_null_iter().zip(&feature).enumerate() {
            let Some(f) = f.filter(|f| !f.is_empty()) else { continue };
            let k = features.iter().position(|x| x == f).unwrap();
            let (stated, theirs) = (vr(&tb)[i], va[n as usize][k] as f64);
            assert!((stated - theirs).abs() <= 1e-5, "explain.{t}: neuron {n}, {f}: {stated} vs {theirs}");
        }
    }
}

#[test]
fn sharded_token_stages_merge_to_the_unsharded_results() {
    // One workspace (output folder) each: both experiments are named x.
    let (ws1, ws3) = (Workspace::new(), Workspace::new());
    let one = ws1.file("one.toml", &experiment(1));
    let o = ws1.run(&one);
    assert!(!o.failed(), "{:?}", o.nodes);
    let three = ws3.file("three.toml", &experiment(3));
    // The shards first, as array jobs would, each computing only its parts (and what they need:
    // the shards of ablate and direct read acts, so the first run merges acts).
    for i in 1..=3 {
        let o = ws3.run_with(&three, Options { shard: Some((i, 3)), ..Default::default() });
        assert!(!o.failed(), "{:?}", o.nodes);
        for s in ["explain", "ent", "ablate", "direct"] {
            assert_eq!(o.get(&format!("{s}@shard-{i}-of-3")).unwrap().status, Status::Computed, "{s}");
            assert!(o.get(s).is_none(), "{s} merged by a shard run");
        }
    }
    let o = ws3.run(&three);
    assert!(!o.failed(), "{:?}", o.nodes);
    for s in ["explain", "ablate", "direct", "ent"] {
        assert_eq!(o.get(&format!("{s}@shard-2-of-3")).unwrap().status, Status::Cached, "{s}");
        assert_eq!(o.get(s).unwrap().status, Status::Computed, "{s}");
    }
    let (u, s) = (ws1.out().join("x"), ws3.out().join("x"));
    // Exact sums: equal tables, the same bytes.
    for (stage, t) in [
        ("acts", "stats"),
        ("acts", "examples"),
        ("ablate", "losses"),
        ("ablate", "per_document"),
        ("direct", "effects"),
        ("ent", "entropy"),
        ("ent", "summary"),
    ] {
        let (x, y) = (table(&u.join(stage), t), table(&s.join(stage), t));
        assert!(x.equals_missing(&y), "{stage}.{t}: sharded differs from unsharded\n{x}\n{y}");
    }
    let bytes = |d: &std::path::Path| std::fs::read(d.join("acts/histograms.safetensors")).unwrap();
    assert!(bytes(&u) == bytes(&s), "activation histograms differ");
    // f64 sums added in another order: within the stated tolerance.
    assert_close("acts.tokens", &table(&u.join("acts"), "tokens"), &table(&s.join("acts"), "tokens"), 1e-6);
    assert_explained_alike(&u.join("explain"), &s.join("explain"), 1e-9);
    // The dataset mixes two labels: the label mixes of top examples are merged too.
    assert!(table(&s.join("acts"), "stats").column("label_entropy").is_ok());
}
