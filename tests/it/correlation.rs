//! Cross-model neuron correlation and universality: the streaming sums against a dense brute
//! force, tiling and shards changing nothing, deterministic baselines, a model against itself,
//! and the universal classes of a hand-built table.

use crate::common::{fixture, Workspace};
use candle_core::{DType, Device, Tensor};
use lantern::analysis::baseline;
use lantern::analysis::correlation::{Products, Shape, Similarity, Sums};
use lantern::data::Tokenized;
use lantern::exec::{Options, Status};
use lantern::model::hooks::{BlockSite, HookPoint};
use lantern::model::{Model, ModelFiles, Processing, Request, Start};
use lantern::stages::universal::classify;
use lantern::store::table::read;
use polars::prelude::*;
use std::collections::BTreeMap;

/// A second model of gpt2-tiny's shape (random weights, same tokenizer) as `model_b/`.
fn add_model_b(ws: &Workspace) {
    let cfg = lantern::model::ModelConfig::gpt2(2, 64, 4, 256, 512, 64);
    let m = Model::random(cfg, 7, &Device::Cpu).unwrap();
    let tok = tokenizers::Tokenizer::from_file(fixture("tiny-tokenizer/tokenizer.json")).unwrap();
    std::fs::create_dir_all(ws.path().join("model_b")).unwrap();
    lantern::train::export::save_hf(&m, &tok, &ws.path().join("model_b")).unwrap();
}

#[test]
fn correlation_refuses_two_tokenizers_of_one_size() {
    let ws = Workspace::new();
    // Model B's shape and vocabulary size, with two vocabulary entries swapped.
    let cfg = lantern::model::ModelConfig::gpt2(2, 64, 4, 256, 512, 64);
    let m = Model::random(cfg, 7, &Device::Cpu).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("tiny-tokenizer/tokenizer.json")).unwrap()).unwrap();
    let vocab = json["model"]["vocab"].as_object_mut().unwrap();
    let (x, y) = ("e".to_string(), "t".to_string());
    let (ix, iy) = (vocab[&x].clone(), vocab[&y].clone());
    vocab.insert(x, iy);
    vocab.insert(y, ix);
    let path = ws.path().join("swapped.json");
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let tok = tokenizers::Tokenizer::from_file(&path).unwrap();
    std::fs::create_dir_all(ws.path().join("model_b")).unwrap();
    lantern::train::export::save_hf(&m, &tok, &ws.path().join("model_b")).unwrap();
    let f =
        ws.file("c.toml", &experiment("[stages.ab]\nkind = \"correlation\"\na = \"a\"\nb = \"b\"\ndataset = \"en\"\n"));
    let o = ws.run(&f);
    let st: std::collections::BTreeMap<_, _> = o.nodes.iter().map(|n| (n.name.clone(), n.status.clone())).collect();
    assert!(matches!(&st["ab"], lantern::exec::Status::Failed(e) if e.contains("different tokenizers")), "{st:?}");
}

fn experiment(stages: &str) -> String {
    format!(
        r#"
[experiment]
name = "corr"

[models.a]
path = "model"

[models.b]
path = "model_b"

[datasets.en]
path = "data/english.jsonl"
context = 32
n_tokens = 2048

{stages}
"#
    )
}

fn load(ws: &Workspace, dir: &str) -> Model {
    Model::load(&ModelFiles::from_folder(&ws.path().join(dir)).unwrap(), Processing::DEFAULT, &Device::Cpu).unwrap()
}

/// `mlp.hook_post` of every layer at the kept positions (valid, not BOS / pad / newline), [tokens, d].
fn activations(m: &Model, data: &Tokenized, exclude: &[u32]) -> Vec<Vec<Vec<f64>>> {
    let tokens = Tensor::from_slice(&data.tokens, (data.rows, data.ctx), &Device::Cpu).unwrap();
    let hooks: Vec<HookPoint> = (0..m.cfg.n_layers).map(|l| HookPoint::Block(l, BlockSite::Post)).collect();
    let mut out = vec![vec![]; hooks.len()];
    m.forward(Start::Tokens(&tokens), &Request::capture(hooks.iter().copied()), &mut |h, t| {
        let rows: Vec<Vec<f32>> = t.reshape((data.rows * data.ctx, ())).unwrap().to_vec2().unwrap();
        out[h.layer().unwrap()] = rows
            .into_iter()
            .enumerate()
            .filter(|(i, _)| data.valid[*i] != 0 && !exclude.contains(&data.tokens[*i]))
            .map(|(_, r)| r.into_iter().map(|x| x as f64).collect())
            .collect();
        Ok(())
    })
    .unwrap();
    out
}

/// Two-pass Pearson correlation of column i of x with column j of y.
fn pearson(x: &[Vec<f64>], y: &[Vec<f64>], i: usize, j: usize) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().map(|r| r[i]).sum::<f64>() / n, y.iter().map(|r| r[j]).sum::<f64>() / n);
    let (mut c, mut vx, mut vy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a[i] - mx, b[j] - my);
        c += dx * dy;
        vx += dx * dx;
        vy += dy * dy;
    }
    if vx == 0.0 || vy == 0.0 {
        0.0
    } else {
        c / (vx.sqrt() * vy.sqrt())
    }
}

fn to_tensors(acts: &[Vec<Vec<f64>>], rows: std::ops::Range<usize>) -> BTreeMap<usize, Tensor> {
    acts.iter()
        .enumerate()
        .map(|(l, a)| {
            let flat: Vec<f32> = a[rows.clone()].iter().flatten().map(|&x| x as f32).collect();
            (l, Tensor::from_vec(flat, (rows.len(), a[0].len()), &Device::Cpu).unwrap())
        })
        .collect()
}

#[test]
fn streaming_pearson_equals_dense_and_shards_merge_exactly() {
    let ws = Workspace::new();
    add_model_b(&ws);
    let f =
        ws.file("c.toml", &experiment("[stages.ab]\nkind = \"correlation\"\na = \"a\"\nb = \"b\"\ndataset = \"en\"\n"));
    let o = ws.run_with(&f, Options { only: vec!["en@a".into()], ..Default::default() });
    assert!(!o.failed());
    let data = Tokenized::load(&ws.out().join("corr/en@a")).unwrap();
    let (a, b) = (load(&ws, "model"), load(&ws, "model_b"));
    let tok = a.tokenizer().unwrap();
    let exclude = [tok.bos, tok.pad, tok.single_token("\n").unwrap()];
    let (xa, xb) = (activations(&a, &data, &exclude), activations(&b, &data, &exclude));
    let n = xa[0].len();
    assert!(n > 1000 && n < data.rows * data.ctx, "{n} kept tokens");
    let shape = Shape { la: 2, da: 256, lb: 2, db: 256 };
    let pairs = [(0, 0), (0, 1), (1, 0), (1, 1)];
    // One pass in batches of 100 tokens, f64 products.
    let mut whole = Sums::new(shape, &pairs);
    let cuts: Vec<usize> = (0..n).step_by(100).chain([n]).collect();
    for w in cuts.windows(2) {
        whole.add(&to_tensors(&xa, w[0]..w[1]), &to_tensors(&xb, w[0]..w[1]), Products::F64).unwrap();
    }
    let mut worst: f64 = 0.0;
    for &(la, lb) in &pairs {
        let r = whole.finish(la, lb, Similarity::Pearson);
        for i in (0..256).step_by(5) {
            for j in (0..256).step_by(3) {
                let d = pearson(&xa[la], &xb[lb], i, j);
                worst = worst.max((r[i * 256 + j] - d).abs() / d.abs().max(1e-3));
            }
        }
    }
    assert!(worst < 1e-9, "streaming vs dense: relative error {worst:e}");
    // Three shards of unequal size, merged in a different order: the same sums, bit for bit.
    let mut parts: Vec<Sums> = [0..5, 5..12, 12..cuts.len() - 1]
        .into_iter()
        .map(|r| {
            let mut s = Sums::new(shape, &pairs);
            for w in cuts[r.start..=r.end].windows(2) {
                s.add(&to_tensors(&xa, w[0]..w[1]), &to_tensors(&xb, w[0]..w[1]), Products::F64).unwrap();
            }
            s
        })
        .collect();
    let mut merged = parts.pop().unwrap();
    for p in parts.iter().rev() {
        merged.merge(p).unwrap();
    }
    assert!(merged == whole, "merged shard sums differ from the single pass");
    // f32 products agree to f32 accuracy.
    let mut f32s = Sums::new(shape, &pairs);
    f32s.add(&to_tensors(&xa, 0..n), &to_tensors(&xb, 0..n), Products::F32).unwrap();
    let (r64, r32) = (whole.finish(1, 0, Similarity::Pearson), f32s.finish(1, 0, Similarity::Pearson));
    let diff = r64.iter().zip(&r32).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(diff < 1e-4, "f32 products: {diff}");
}

const CORR_STAGES: &str = r#"
[stages.one_tile]
kind = "correlation"
a = "a"
b = "b"
dataset = "en"
matrix = "f32"
top_k = 5

[stages.pair_tiles]
kind = "correlation"
a = "a"
b = "b"
dataset = "en"
matrix = "f32"
top_k = 5
memory_gb = 0.0011

[stages.sharded]
kind = "correlation"
a = "a"
b = "b"
dataset = "en"
matrix = "f32"
top_k = 5
shards = 3
memory_gb = 0.0022

[stages.itself]
kind = "correlation"
a = "a"
b = "a"
dataset = "en"
"#;

fn table(ws: &Workspace, stage: &str, name: &str) -> DataFrame {
    read(&ws.out().join("corr").join(stage).join(format!("{name}.parquet"))).unwrap()
}

#[test]
fn tiles_and_shards_change_nothing_and_self_matches_are_one() {
    let ws = Workspace::new();
    add_model_b(&ws);
    let f = ws.file("c.toml", &experiment(CORR_STAGES));
    // The shards first, as array jobs would, then the merge.
    for i in 1..=3 {
        let o = ws.run_with(&f, Options { shard: Some((i, 3)), ..Default::default() });
        assert!(!o.failed(), "{:?}", o.nodes);
        assert_eq!(o.get(&format!("sharded@shard-{i}-of-3")).unwrap().status, Status::Computed);
        assert!(o.get("sharded").is_none() && o.get("one_tile").is_none());
    }
    let o = ws.run(&f);
    assert!(!o.failed(), "{:?}", o.nodes);
    assert_eq!(o.get("sharded@shard-2-of-3").unwrap().status, Status::Cached);
    let matrix = |s: &str| std::fs::read(ws.out().join("corr").join(s).join("correlation.safetensors")).unwrap();
    for s in ["pair_tiles", "sharded"] {
        for t in ["matches", "top", "histogram"] {
            assert!(table(&ws, s, t).equals_missing(&table(&ws, "one_tile", t)), "{s}: {t} differs");
        }
        assert!(matrix(s) == matrix("one_tile"), "{s}: matrix differs");
    }
    let m = table(&ws, "one_tile", "matches");
    assert_eq!(m.height(), 512);
    let best: Vec<f64> = m.column("max_corr").unwrap().f64().unwrap().into_no_null_iter().collect();
    let top = best.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let low = best.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(low >= -1.0 && top <= 1.0 + 1e-6 && top > 0.1, "max_corr in [{low}, {top}]");
    // Against itself every neuron that varies matches itself with correlation 1.
    let m = table(&ws, "itself", "matches");
    let col = |c: &str| {
        m.column(c).unwrap().cast(&DataType::Float64).unwrap().f64().unwrap().into_no_null_iter().collect::<Vec<f64>>()
    };
    let (layer, neuron, best, ml, mn, std) =
        (col("layer"), col("neuron"), col("max_corr"), col("match_layer"), col("match_neuron"), col("std"));
    let mut live = 0;
    for i in 0..m.height() {
        if std[i] > 1e-6 {
            live += 1;
            assert!((best[i] - 1.0).abs() < 1e-5, "neuron {i}: {}", best[i]);
            assert_eq!((ml[i], mn[i]), (layer[i], neuron[i]));
        }
    }
    assert!(live > 500, "{live} live neurons");
    let h = table(&ws, "itself", "histogram");
    let count: u64 = h.column("count").unwrap().u64().unwrap().into_no_null_iter().sum();
    assert_eq!(count, 512 * 512);
}

#[test]
fn baselines_are_seeded_and_deterministic() {
    let ws = Workspace::new();
    add_model_b(&ws);
    let mut stages = String::new();
    for b in ["rotation", "haar", "gaussian", "permutation"] {
        for copy in ["", "_again"] {
            stages += &format!("[stages.{b}{copy}]\nkind = \"correlation\"\na = \"a\"\nb = \"b\"\ndataset = \"en\"\nbaseline = \"{b}\"\nseed = 3\nmemory_gb = {}\n\n", if copy.is_empty() { 4.0 } else { 0.0011 });
        }
    }
    stages += "[stages.plain]\nkind = \"correlation\"\na = \"a\"\nb = \"b\"\ndataset = \"en\"\n\n";
    // No seed: each stage draws from the experiment's seed mixed with its own name.
    for name in ["rot_one", "rot_two"] {
        stages += &format!("[stages.{name}]\nkind = \"correlation\"\na = \"a\"\nb = \"b\"\ndataset = \"en\"\nbaseline = \"rotation\"\n\n");
    }
    let f = ws.file("c.toml", &experiment(&stages));
    let o = ws.run(&f);
    assert!(!o.failed(), "{:?}", o.nodes);
    let plain = table(&ws, "plain", "matches");
    for b in ["rotation", "haar"] {
        // Drawn again by a stage with other tiles: the same matrices.
        let (x, y) = (table(&ws, b, "matches"), table(&ws, &format!("{b}_again"), "matches"));
        assert!(x.equals_missing(&y), "{b} differs between runs");
        assert!(!x.equals_missing(&plain), "{b} equals no baseline");
    }
    for b in ["gaussian", "permutation"] {
        assert!(!table(&ws, b, "matches").equals_missing(&plain), "{b} equals no baseline");
    }
    assert!(
        !table(&ws, "rot_one", "matches").equals_missing(&table(&ws, "rot_two", "matches")),
        "two comparisons share one rotation"
    );
    // The baseline's best matches are weaker than the real model's on average.
    let mean = |df: &DataFrame| df.column("max_corr").unwrap().f64().unwrap().mean().unwrap();
    assert!(mean(&table(&ws, "gaussian", "matches")) < mean(&plain));
    // Same seed, same matrices; Haar is orthogonal.
    assert_eq!(
        baseline::haar(64, 3, 1).unwrap().to_vec2::<f32>().unwrap(),
        baseline::haar(64, 3, 1).unwrap().to_vec2::<f32>().unwrap()
    );
    let q = baseline::haar(200, 3, 0).unwrap();
    let qtq = q.t().unwrap().matmul(&q).unwrap();
    let eye = Tensor::eye(200, DType::F32, &Device::Cpu).unwrap();
    let err: f32 = (qtq - eye).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    assert!(err < 1e-5, "Q^T Q - I: {err}");
    let g = baseline::gaussian_mixing(50, 3, 0).unwrap();
    let norms: Vec<f32> = g.sqr().unwrap().sum(0).unwrap().to_vec1().unwrap();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5));
    assert_eq!(baseline::permutation(10, 3, 5), baseline::permutation(10, 3, 5));
    assert_ne!(baseline::permutation(10, 3, 5), baseline::permutation(10, 3, 6));
}

fn matches(rows: &[(u32, u32, f64)]) -> DataFrame {
    df!(
        "layer" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        "neuron" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        "max_corr" => rows.iter().map(|r| r.2).collect::<Vec<_>>()
    )
    .unwrap()
}

#[test]
fn universal_classes_of_a_hand_built_table() {
    // Neuron (0,0): 0.9 and 0.7 against seeds, 0.2 and 0.3 in the baselines → excess 0.55: universal.
    // Neuron (0,1): 0.9 and 0.5 vs 0.2, 0.3 → excess 0.45: not. Neuron (1,0): 1.0, 0.8 vs 0.1, 0.1 → 0.8.
    let corr = [matches(&[(0, 0, 0.9), (0, 1, 0.9), (1, 0, 1.0)]), matches(&[(0, 0, 0.7), (0, 1, 0.5), (1, 0, 0.8)])];
    let base = [matches(&[(0, 0, 0.2), (0, 1, 0.2), (1, 0, 0.1)]), matches(&[(0, 0, 0.3), (0, 1, 0.3), (1, 0, 0.1)])];
    let df = classify(&corr, &base, 0.5).unwrap();
    let col = |c: &str| df.column(c).unwrap().f64().unwrap().into_no_null_iter().collect::<Vec<f64>>();
    let close = |a: Vec<f64>, b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
    assert!(close(col("mean_corr"), &[0.8, 0.7, 0.9]));
    assert!(close(col("min_corr"), &[0.7, 0.5, 0.8]));
    assert!(close(col("max_baseline"), &[0.3, 0.3, 0.1]));
    assert!(close(col("excess_corr"), &[0.55, 0.45, 0.8]));
    let u: Vec<bool> = df.column("is_universal").unwrap().bool().unwrap().into_no_null_iter().collect();
    assert_eq!(u, [true, false, true]);
    assert!(classify(&corr, &base[..1], 0.5).is_ok());
    assert!(classify(&corr, &[matches(&[(0, 0, 0.2)])], 0.5).is_err());
    let p = lantern::stages::universal::percentiles(&[0, 0, 0, 1], &[3.0, 1.0, 3.0, 5.0]);
    assert_eq!(p, [100.0 * 2.5 / 3.0, 100.0 / 3.0, 100.0 * 2.5 / 3.0, 100.0]);
    // The null: a second baseline draw minus the first, averaged over seeds.
    let again = [matches(&[(0, 0, 0.3), (0, 1, 0.1), (1, 0, 0.1)]), matches(&[(0, 0, 0.3), (0, 1, 0.2), (1, 0, 0.2)])];
    let null = lantern::stages::universal::null_excess(&base, &again).unwrap();
    assert!(close(null, &[0.05, -0.1, 0.05]));
    use lantern::stages::universal::nearest_rank;
    let thousand: Vec<f64> = (1..=1000).map(f64::from).collect();
    assert_eq!(nearest_rank(&thousand, 99.9), 999.0);
    assert_eq!(nearest_rank(&thousand, 100.0), 1000.0);
    assert_eq!(nearest_rank(&[4.0, 1.0, 3.0, 2.0], 50.0), 2.0);
}

/// A against B, against B rotated, and against B rotated again (`seed_line`: its seed, if any).
fn pair_stages(seed_line: &str) -> String {
    format!(
        r#"
[stages.ab]
kind = "correlation"
a = "a"
b = "b"
dataset = "en"

[stages.ab_rot]
kind = "correlation"
a = "a"
b = "b"
dataset = "en"
baseline = "rotation"

[stages.ab_rot_again]
kind = "correlation"
a = "a"
b = "b"
dataset = "en"
baseline = "rotation"
{seed_line}
"#
    )
}

#[test]
fn universal_stage_joins_the_neuron_table() {
    let ws = Workspace::new();
    add_model_b(&ws);
    let stages = pair_stages("seed = 77")
        + r#"
[stages.weights_a]
kind = "weights"
model = "a"

[stages.acts_a]
kind = "activations"
model = "a"
dataset = "en"
hooks = ["mlp.hook_pre"]
token_stats = false

[stages.neurons_a]
kind = "neuron_table"
weights = "weights_a"
activations = "acts_a"

[stages.universal]
kind = "universal"
correlations = ["ab"]
baselines = ["ab_rot"]
null_baselines = ["ab_rot_again"]
neurons = "neurons_a"
threshold = 0.1

[plots.excess]
input = "universal"
table = "excess"
kind = "histogram"
column = "excess_corr"
group = "series"
x_lines = [{ x = "threshold", label = "study ({threshold})" }, { x = "null_threshold", label = "null ({null_threshold})" }]

[plots.universal_by_layer]
input = "universal"
table = "layers"
kind = "bar"
x = "layer"
y = "fraction"

[plots.properties]
input = "universal"
table = "properties"
kind = "box"
x = "property"
y = "percentile"
group = "class"
"#;
    let f = ws.file("c.toml", &experiment(&stages));
    let o = ws.run(&f);
    assert!(!o.failed(), "{:?}", o.nodes);
    let u = table(&ws, "universal", "universal");
    assert_eq!(u.height(), 512);
    for c in ["excess_corr", "is_universal", "l2_penalty", "l2_penalty_pct", "kurt_pct", "vocab_kurt"] {
        assert!(u.column(c).is_ok(), "no column {c}");
    }
    let layers = table(&ws, "universal", "layers");
    let n: u32 = layers.column("universal").unwrap().u32().unwrap().into_no_null_iter().sum();
    let flagged = u.column("is_universal").unwrap().bool().unwrap().into_no_null_iter().filter(|b| *b).count();
    assert_eq!(n as usize, flagged);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.out().join("corr/universal/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["universal"].as_u64().unwrap() as usize, flagged);
    // The derived threshold is the null's 99.9th percentile; `beats_null` is excess above it.
    let f64s = |c: &str| u.column(c).unwrap().f64().unwrap().into_no_null_iter().collect::<Vec<f64>>();
    let t = lantern::stages::universal::nearest_rank(&f64s("null_excess"), 99.9);
    assert_eq!(summary["null_threshold"].as_f64().unwrap(), t);
    let beats: Vec<bool> = u.column("beats_null").unwrap().bool().unwrap().into_no_null_iter().collect();
    assert_eq!(beats, f64s("excess_corr").iter().map(|e| *e > t).collect::<Vec<_>>());
    assert_eq!(summary["beats_null"].as_u64().unwrap() as usize, beats.iter().filter(|b| **b).count());
    let excess = table(&ws, "universal", "excess");
    assert_eq!(excess.height(), 2 * 512);
    let props = table(&ws, "universal", "properties");
    let rules: Vec<&str> = props.column("rule").unwrap().str().unwrap().into_no_null_iter().collect();
    assert!(rules.contains(&"threshold") && rules.contains(&"null"));
    assert!(ws.out().join("corr/excess/plot.png").is_file());
    assert!(
        ws.out().join("corr/properties/plot.png").is_file()
            || ws.out().join("corr/properties").read_dir().unwrap().count() > 0
    );
}

#[test]
fn a_null_baseline_must_be_another_draw_of_its_baseline() {
    let ws = Workspace::new();
    add_model_b(&ws);
    let stages = |seed: &str| {
        pair_stages(seed)
            + r#"
[stages.universal]
kind = "universal"
correlations = ["ab"]
baselines = ["ab_rot"]
null_baselines = ["ab_rot_again"]
"#
    };
    let f = ws.file("same.toml", &experiment(&stages("")));
    let e = lantern::experiment::load(&f).err().expect("invalid").to_string();
    assert!(e.contains("'ab_rot_again' draws the same baseline as 'ab_rot'"), "{e}");
    let f = ws.file("other.toml", &experiment(&stages("seed = 3")));
    assert!(lantern::experiment::load(&f).is_ok());
    let f = ws.file(
        "two.toml",
        &experiment(&stages("seed = 3"))
            .replace("null_baselines = [\"ab_rot_again\"]", "null_baselines = [\"ab_rot_again\", \"ab_rot\"]"),
    );
    let e = lantern::experiment::load(&f).err().expect("invalid").to_string();
    assert!(e.contains("one null baseline per baseline"), "{e}");
}
