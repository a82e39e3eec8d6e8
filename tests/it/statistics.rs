//! Streaming neuron statistics equal a brute-force computation over captured activations; top-k
//! equals a full sort; histograms count every value; label mixes of top examples on mixed datasets.

use crate::common::Workspace;
use crate::common::{golden, load};
use lantern::model::{HookPoint, Processing};
use lantern::stats::{NeuronStats, Position};
use lantern::store::table::read;

#[test]
fn streaming_statistics_equal_brute_force() {
    let model = load("gpt2-tiny", Processing::DEFAULT);
    let tokens = &golden("gpt2-tiny", "golden_processed.safetensors")["tokens"];
    let hook = HookPoint::parse("blocks.1.mlp.hook_pre").unwrap();
    let (_, cache) = model.run_with_cache(tokens, &[hook], &[]).unwrap();
    let acts: Vec<f32> = cache[&hook].flatten_all().unwrap().to_vec1().unwrap();
    let ids: Vec<u32> = tokens.flatten_all().unwrap().to_dtype(candle_core::DType::U32).unwrap().to_vec1().unwrap();
    let n = 256;
    let rows = acts.len() / n;
    let edges: Vec<f32> = (0..21).map(|i| -2.0 + 0.2 * i as f32).collect();
    let mut s = NeuronStats::new(n, &edges, 5, 3, Some(512));
    // Two batches, as the stage streams them.
    let positions: Vec<Position> = (0..rows).map(|r| Position { row: r, index: r as u64, token: ids[r] }).collect();
    let half = rows / 2;
    s.add(&acts[..half * n], &positions[..half]);
    let rest: Vec<Position> = positions[half..].iter().map(|p| Position { row: p.row - half, ..*p }).collect();
    s.add(&acts[half * n..], &rest);
    assert_eq!(s.count(), rows as u64);
    for neuron in [0usize, 17, 255] {
        let col: Vec<f64> = (0..rows).map(|r| acts[r * n + neuron] as f64).collect();
        let m = col.iter().sum::<f64>() / rows as f64;
        let c = |k: i32| col.iter().map(|x| (x - m).powi(k)).sum::<f64>() / rows as f64;
        let (var, m3, m4) = (c(2), c(3), c(4));
        let got = s.summary(neuron);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1e-6);
        assert!(close(got.mean, m) && close(got.var, var), "neuron {neuron}");
        assert!(
            close(got.skew, m3 / var.powf(1.5)) && close(got.kurt, m4 / (var * var)),
            "neuron {neuron}: {} vs {}",
            got.kurt,
            m4 / (var * var)
        );
        assert!(close(got.freq, col.iter().filter(|x| **x > 0.0).count() as f64 / rows as f64));
        // Top-5 and bottom-3 equal a full sort.
        let mut order: Vec<usize> = (0..rows).collect();
        order.sort_by(|&a, &b| col[b].total_cmp(&col[a]).then(a.cmp(&b)));
        let top: Vec<u64> = s.top(neuron).iter().map(|t| t.1).collect();
        assert_eq!(top, order[..5].iter().map(|&i| i as u64).collect::<Vec<_>>());
        let bottom: Vec<u64> = s.bottom(neuron).iter().map(|t| t.1).collect();
        let mut low = order.clone();
        low.reverse();
        assert_eq!(bottom, low[..3].iter().map(|&i| i as u64).collect::<Vec<_>>());
        // Histogram: every value counted once, in the searchsorted bin.
        let h = s.histogram(neuron);
        assert_eq!(h.iter().map(|&x| x as usize).sum::<usize>(), rows);
        for x in &col {
            let k = edges.partition_point(|&e| e < *x as f32);
            assert!(h[k] > 0);
        }
        // Per-token means: the mean over the positions holding that token.
        for (tok, mean, count) in s.top_tokens(neuron, 3, false).unwrap() {
            let vals: Vec<f64> = (0..rows).filter(|&r| ids[r] == tok).map(|r| col[r]).collect();
            assert_eq!(vals.len(), count as usize);
            assert!((vals.iter().sum::<f64>() / vals.len() as f64 - mean as f64).abs() < 1e-5);
        }
    }
}

#[test]
fn mixed_and_globbed_datasets_give_label_mixes_of_top_examples() {
    let ws = Workspace::new();
    let f = ws.file(
        "mix.toml",
        r#"
[experiment]
name = "mix"

[models.tiny]
path = "model"

[datasets.en]
path = "data/english.jsonl"
context = 32
n_tokens = 1024

[datasets.de]
path = "data/german.jsonl"
context = 32
n_tokens = 1024
label = "deutsch"

[datasets.both]
mix = ["en", "de"]
shuffle_seed = 3

[datasets.de_long]
path = "data/german.jsonl"
context = 32
n_tokens = 2048
label = "deutsch"

[datasets.balanced]
mix = ["en", "de_long"]
balance = true

[datasets.files]
path = "data/*.jsonl"
context = 32
shuffle_seed = 3
n_tokens = 2048

[stages.acts]
kind = "activations"
model = "tiny"
dataset = "both"
hooks = ["mlp.hook_post"]
top_k = 10
token_stats = false

[stages.acts_balanced]
kind = "activations"
model = "tiny"
dataset = "balanced"
hooks = ["blocks.0.mlp.hook_post"]
top_k = 2
token_stats = false

[stages.acts_files]
kind = "activations"
model = "tiny"
dataset = "files"
hooks = ["mlp.hook_post"]
top_k = 10
token_stats = false
"#,
    );
    let o = ws.run(&f);
    assert!(!o.failed(), "{:?}", o.nodes);
    let both = lantern::data::Tokenized::load(&ws.out().join("mix/both@tiny")).unwrap();
    // 1,024 tokens of each in rows of 32.
    assert_eq!(both.rows, 64);
    let labels: std::collections::BTreeSet<&str> = (0..both.rows * both.ctx).map(|i| both.label_at(i)).collect();
    assert_eq!(labels, ["deutsch", "en"].into_iter().collect());
    // Balanced: as many rows of the 2,048-token German set as the 1,024-token English one has.
    let balanced = lantern::data::Tokenized::load(&ws.out().join("mix/balanced@tiny")).unwrap();
    assert_eq!(balanced.rows, 64);
    let german = (0..balanced.rows).filter(|r| balanced.label_at(r * balanced.ctx) == "deutsch").count();
    assert_eq!(german, 32);
    let files = lantern::data::Tokenized::load(&ws.out().join("mix/files@tiny")).unwrap();
    let labels: std::collections::BTreeSet<&str> = (0..files.rows * files.ctx).map(|i| files.label_at(i)).collect();
    assert_eq!(labels, ["english", "german"].into_iter().collect());
    // The stats' label mix equals the mix of the labels listed with the top examples.
    let stats = read(&ws.out().join("mix/acts/stats.parquet")).unwrap();
    let ex = read(&ws.out().join("mix/acts/examples.parquet")).unwrap();
    let (ex_layer, ex_neuron, which, label, index) = (
        ex.column("layer").unwrap().u32().unwrap(),
        ex.column("neuron").unwrap().u32().unwrap(),
        ex.column("which").unwrap().str().unwrap(),
        ex.column("label").unwrap().str().unwrap(),
        ex.column("index").unwrap().i64().unwrap(),
    );
    let (layer, neuron, entropy, raw, share) = (
        stats.column("layer").unwrap().u32().unwrap(),
        stats.column("neuron").unwrap().u32().unwrap(),
        stats.column("label_entropy").unwrap().f64().unwrap(),
        stats.column("label_entropy_raw").unwrap().f64().unwrap(),
        stats.column("top_label_share").unwrap().f64().unwrap(),
    );
    let base = lantern::stats::labels::base_rates(
        (0..both.tokens.len()).filter(|&i| both.valid[i] != 0).map(|i| both.label_at(i)),
    );
    let (mut mixed, mut repeated) = (0, 0);
    for i in (0..stats.height()).step_by(7) {
        // The top examples in rank order, each document's label once.
        let mut seen = std::collections::HashSet::new();
        let rows: Vec<usize> = (0..ex.height())
            .filter(|&j| {
                ex_layer.get(j) == layer.get(i) && ex_neuron.get(j) == neuron.get(i) && which.get(j) == Some("top")
            })
            .collect();
        let top: Vec<&str> = rows
            .iter()
            .filter(|&&j| {
                let d = both.doc[index.get(j).unwrap() as usize];
                d == u32::MAX || seen.insert(d)
            })
            .map(|&j| label.get(j).unwrap())
            .collect();
        repeated += (top.len() < rows.len()) as usize;
        let mix = lantern::stats::labels::LabelMix::of(top).unwrap();
        assert!((mix.entropy - raw.get(i).unwrap()).abs() < 1e-12);
        assert!((mix.normalised_entropy(&base) - entropy.get(i).unwrap()).abs() < 1e-12);
        assert!((mix.top_share - share.get(i).unwrap()).abs() < 1e-12);
        mixed += (mix.distinct > 1) as usize;
    }
    assert!(mixed > 0, "no neuron's top examples mix the two languages");
    assert!(repeated > 0, "no neuron has two top examples in one document");
}
