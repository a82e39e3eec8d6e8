//! Neuron families: variance-reduction explanations against a brute-force (pandas-style) group
//! computation, unigram grouping on a hand-made vocabulary, output-neuron feature separation, and
//! the entropy and attention-deactivation stages against hand-composed interventions on the GPT-2
//! and NeoX fixture models.

use crate::common::Workspace;
use candle_core::{Device, Tensor};
use lantern::analysis::features::unigram_groups;
use lantern::data::Tokenized;
use lantern::model::hooks::{BlockSite, HookPoint};
use lantern::model::{Model, ModelFiles, Processing, Request, Start};
use lantern::store::table::read;
use polars::prelude::*;

fn load(ws: &Workspace) -> Model {
    Model::load(&ModelFiles::from_folder(&ws.path().join("model")).unwrap(), Processing::DEFAULT, &Device::Cpu).unwrap()
}

/// Sample variance (ddof = 1), two passes, as pandas computes it.
fn var(x: &[f64]) -> f64 {
    let m = x.iter().sum::<f64>() / x.len() as f64;
    x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64
}

/// 1 − [p₀·Var(a|f=0) + p₁·Var(a|f=1)] / Var(a), by grouping the values.
fn brute_vr(a: &[f64], f: &[bool]) -> f64 {
    let side = |holds: bool| -> Vec<f64> { a.iter().zip(f).filter(|(_, &h)| h == holds).map(|(x, _)| *x).collect() };
    let (yes, no) = (side(true), side(false));
    let n = a.len() as f64;
    1.0 - (no.len() as f64 / n * var(&no) + yes.len() as f64 / n * var(&yes)) / var(a)
}

const TINY: &str = r#"
[experiment]
name = "fam"

[models.tiny]
path = "model"

[datasets.en]
path = "data/english.jsonl"
context = 32
n_tokens = 2048
"#;

/// Run the tiny model's experiment with these stages; the test fails if any node fails.
fn run(ws: &Workspace, stages: &str) {
    let f = ws.file("e.toml", &format!("{TINY}\n{stages}"));
    let o = ws.run(&f);
    assert!(!o.failed(), "{:?}", o.nodes.iter().map(|r| (&r.name, &r.status)).collect::<Vec<_>>());
}

#[test]
fn unigram_groups_join_case_and_space_variants_over_thresholds() {
    let strings: Vec<String> = ["the", " the", "The", " THE", " cat", "Cat", "dog", " dog", "\u{fffd}", " ", "a"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    //             0      1       2      3       4       5      6       7        8     9    10
    let counts = [10, 20, 5, 1, 3, 3, 100, 0, 50, 9, 1];
    let g = unigram_groups(&strings, &counts, 5, 1);
    // Strictly more than 5 occurrences and 1 id (the study's > 3000, > 3): "the" spans 4 ids and
    // 36 occurrences; "dog" 2 ids and 100; "cat" 2 ids and 6; "a" one id; the replacement
    // character and pure whitespace form no group.
    assert_eq!(
        g,
        vec![("cat".to_string(), vec![4, 5]), ("dog".to_string(), vec![6, 7]), ("the".to_string(), vec![0, 1, 2, 3])]
    );
    assert_eq!(unigram_groups(&strings, &counts, 6, 1).len(), 2, "cat has 6 occurrences, not more");
    assert_eq!(unigram_groups(&strings, &counts, 1, 2), vec![("the".to_string(), vec![0, 1, 2, 3])]);
    assert_eq!(unigram_groups(&strings, &counts, 1, 4), vec![], "the spans 4 ids, not more");
}

#[test]
fn variance_reduction_equals_grouped_sample_variances() {
    let ws = Workspace::new();
    // Per-position labels: "tag=even" on even positions of the first 20 rows, "tag=odd" on odd ones.
    let (mut r, mut p, mut t) = (vec![], vec![], vec![]);
    for row in 0..20i64 {
        for pos in 0..32i64 {
            r.push(row);
            p.push(pos);
            t.push(if pos % 2 == 0 { "even" } else { "odd" });
        }
    }
    let mut df = df!("row" => r, "position" => p, "tag" => t).unwrap();
    lantern::store::table::write(&ws.path().join("tags.parquet"), &mut df).unwrap();
    run(
        &ws,
        r#"
[stages.explain]
kind = "explain"
model = "tiny"
dataset = "en"
hooks = ["blocks.1.mlp.hook_post"]
unigram_count_above = 19
unigram_ids_above = 1
token_sets = { articles = [" the", " a"] }
labels = [{ path = "tags.parquet", column = "tag" }]
batch_size = 5
"#,
    );
    let dir = ws.out().join("fam/explain");
    let features = read(&dir.join("features.parquet")).unwrap();
    let names: Vec<String> =
        features.column("feature").unwrap().str().unwrap().into_iter().map(|s| s.unwrap().to_string()).collect();
    let vr = candle_core::safetensors::load(dir.join("variance_reduction.safetensors"), &Device::Cpu).unwrap();
    let vr: Vec<Vec<f32>> = vr["blocks.1.mlp.hook_post"].to_vec2().unwrap();
    // Activations at every valid position, by brute force.
    let data = Tokenized::load(&ws.out().join("fam/en@tiny")).unwrap();
    let model = load(&ws);
    let tok = model.tokenizer().unwrap();
    let tokens = Tensor::from_slice(&data.tokens, (data.rows, data.ctx), &Device::Cpu).unwrap();
    let hook = HookPoint::Block(1, BlockSite::Post);
    let mut acts: Vec<Vec<f32>> = vec![];
    model
        .forward(Start::Tokens(&tokens), &Request::capture([hook]), &mut |_, t| {
            acts = t.flatten_to(1).unwrap().to_vec2().unwrap();
            Ok(())
        })
        .unwrap();
    // Valid positions, BOS left out (skip_bos is on by default): the rows start with BOS.
    assert!((0..data.rows).all(|r| data.tokens[r * data.ctx] == tok.bos));
    let keep: Vec<usize> =
        (0..data.tokens.len()).filter(|&i| data.valid[i] != 0 && data.tokens[i] != tok.bos).collect();
    let s = |i: usize| tok.token_str(data.tokens[i]);
    let pos = |i: usize| i % data.ctx;
    let cases: Vec<(&str, Box<dyn Fn(usize) -> bool>)> = vec![
        ("token: starts_with_space", Box::new(|i| s(i).starts_with(' '))),
        (
            "prev_token: is_punctuation",
            Box::new(|i| {
                pos(i) > 0 && {
                    let p = s(i - 1);
                    !p.trim().is_empty() && p.trim().chars().all(|c| c.is_ascii_punctuation())
                }
            }),
        ),
        ("token: unigram \"the\"", Box::new(|i| s(i).trim().to_lowercase() == "the")),
        ("token: articles", Box::new(|i| s(i) == " the" || s(i) == " a")),
        ("position: 2", Box::new(|i| pos(i) == 2)),
        ("position: 16–31", Box::new(|i| pos(i) >= 16)),
        ("label: tag=even", Box::new(|i| i / data.ctx < 20 && pos(i) % 2 == 0)),
        ("prev_label: tag=odd", Box::new(|i| i / data.ctx < 20 && pos(i) > 0 && (pos(i) - 1) % 2 == 1)),
    ];
    for (name, holds) in &cases {
        let col = names.iter().position(|n| n == name).unwrap_or_else(|| panic!("no feature {name}: {names:?}"));
        let f: Vec<bool> = keep.iter().map(|&i| holds(i)).collect();
        assert!(f.iter().any(|x| *x) && !f.iter().all(|x| *x), "{name} is constant");
        for neuron in (0..256).step_by(15) {
            let a: Vec<f64> = keep.iter().map(|&i| acts[i][neuron] as f64).collect();
            let want = brute_vr(&a, &f);
            let got = vr[neuron][col] as f64;
            assert!((got - want).abs() < 1e-5, "{name}, neuron {neuron}: {got} vs {want}");
        }
    }
    // Each neuron's best explanation is the row maximum of its variance reductions.
    let best = read(&dir.join("best.parquet")).unwrap();
    let best_vr = best.column("vr").unwrap().f64().unwrap();
    for neuron in [0usize, 100, 255] {
        let max = vr[neuron].iter().filter(|v| v.is_finite()).fold(f32::MIN, |a, &b| a.max(b));
        assert!((best_vr.get(neuron).unwrap() - max as f64).abs() < 1e-6);
    }
    let families = read(&dir.join("families.parquet")).unwrap();
    assert_eq!(families.column("neurons").unwrap().u32().unwrap().sum(), Some(256));
    let positions = features.column("positions").unwrap().u64().unwrap();
    let at = |name: &str| positions.get(names.iter().position(|n| n == name).unwrap()).unwrap();
    assert_eq!(at("position: 0"), 0, "BOS positions are left out");
    // Mutual information between firing (> 0) and position, by brute force over the kept positions.
    let mi = read(&dir.join("position_mi.parquet")).unwrap();
    let bits = mi.column("mi_bits").unwrap().f64().unwrap();
    for neuron in [0usize, 37, 255] {
        let n = keep.len() as f64;
        let mut joint = std::collections::HashMap::new();
        for &i in &keep {
            *joint.entry((pos(i), acts[i][neuron] > 0.0)).or_insert(0f64) += 1.0;
        }
        let p_pos = |p: usize| (joint.get(&(p, true)).unwrap_or(&0.0) + joint.get(&(p, false)).unwrap_or(&0.0)) / n;
        let on = joint.iter().filter(|(k, _)| k.1).map(|(_, v)| v).sum::<f64>() / n;
        let want: f64 = joint
            .iter()
            .map(|(&(p, f), &c)| c / n * ((c / n) / (p_pos(p) * if f { on } else { 1.0 - on })).log2())
            .sum();
        let got = bits.get(neuron).unwrap();
        assert!((got - want).abs() < 1e-9, "neuron {neuron}: MI {got} vs {want}");
    }
}

#[test]
fn output_neuron_features_equal_a_direct_computation_over_the_vocabulary() {
    let ws = Workspace::new();
    run(
        &ws,
        r#"
[stages.w]
kind = "weights"
model = "tiny"

[stages.w_again]
kind = "weights"
model = "tiny"
vocab_k = 3

[stages.pred]
kind = "prediction_neurons"
model = "tiny"
family = ["w", "w_again"]
classes = ["prediction", "suppression", "partition", "none"]
top_k = 2
show = [[1, 7]]
show_top = 1
"#,
    );
    let dir = ws.out().join("fam/pred");
    let model = load(&ws);
    let tok = model.tokenizer().unwrap();
    // Neuron 1.7's logit effect on every token, and its best feature's statistics by hand.
    let w_out = model.param("blocks.1.mlp.W_out").unwrap().get(7).unwrap();
    let effect: Vec<f32> =
        w_out.unsqueeze(0).unwrap().matmul(&model.weights.w_u).unwrap().squeeze(0).unwrap().to_vec1().unwrap();
    let feats = read(&dir.join("features.parquet")).unwrap();
    let mask = feats.column("layer").unwrap().u32().unwrap().equal(1)
        & feats.column("neuron").unwrap().u32().unwrap().equal(7);
    let mine = feats.filter(&mask).unwrap();
    assert_eq!(mine.height(), 2);
    let name = mine.column("feature").unwrap().str().unwrap().get(0).unwrap().to_string();
    let t_reported = mine.column("welch_t").unwrap().f64().unwrap().get(0).unwrap();
    let vr_reported = mine.column("vr").unwrap().f64().unwrap().get(0).unwrap();
    // The `show` neuron first, then the explained neuron whose best feature has the largest |t|.
    let all_effects = read(&dir.join("effects.parquet")).unwrap();
    assert_eq!(all_effects.height(), 2 * model.cfg.d_vocab);
    let effects = all_effects.filter(&all_effects.column("shown").unwrap().i64().unwrap().equal(0)).unwrap();
    assert_eq!(effects.column("neuron_name").unwrap().str().unwrap().get(0), Some("L1.7"));
    let top_t = feats
        .filter(&feats.column("rank").unwrap().i64().unwrap().equal(0))
        .unwrap()
        .column("welch_t")
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .map(f64::abs)
        .fold(0.0, f64::max);
    let second = all_effects.filter(&all_effects.column("shown").unwrap().i64().unwrap().equal(1)).unwrap();
    let second_name = second.column("neuron_name").unwrap().str().unwrap().get(0).unwrap().to_string();
    let (l2, n2) =
        second_name[1..].split_once('.').map(|(a, b)| (a.parse::<u32>().unwrap(), b.parse::<u32>().unwrap())).unwrap();
    let m2 = feats.column("layer").unwrap().u32().unwrap().equal(l2)
        & feats.column("neuron").unwrap().u32().unwrap().equal(n2)
        & feats.column("rank").unwrap().i64().unwrap().equal(0);
    assert_eq!(feats.filter(&m2).unwrap().column("welch_t").unwrap().f64().unwrap().get(0).unwrap().abs(), top_t);
    let in_f: Vec<bool> =
        effects.column("in_feature").unwrap().str().unwrap().into_iter().map(|s| s == Some("yes")).collect();
    let got: Vec<f64> = effects.column("effect").unwrap().f64().unwrap().into_no_null_iter().collect();
    for (a, b) in got.iter().zip(&effect) {
        assert!((a - *b as f64).abs() < 1e-5);
    }
    let a: Vec<f64> = effect.iter().map(|&x| x as f64).collect();
    let side =
        |holds: bool| -> Vec<f64> { a.iter().zip(&in_f).filter(|(_, &h)| h == holds).map(|(x, _)| *x).collect() };
    let (yes, no) = (side(true), side(false));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let t = (mean(&yes) - mean(&no)) / (var(&yes) / yes.len() as f64 + var(&no) / no.len() as f64).sqrt();
    assert!((t - t_reported).abs() < 1e-6 * t.abs().max(1.0), "{name}: t {t} vs {t_reported}");
    assert!((brute_vr(&a, &in_f) - vr_reported).abs() < 1e-6);
    // The membership the stage used is the feature's definition on the token strings.
    if name == "starts_with_space" {
        for (v, flag) in in_f.iter().enumerate() {
            assert_eq!(*flag, tok.token_str(v as u32).starts_with(' '));
        }
    }
    // Two identical family members: a zero-width band at numpy's linear percentile.
    let pct = read(&dir.join("percentiles.parquet")).unwrap();
    let (lo, hi, val) = (
        pct.column("low").unwrap().f64().unwrap(),
        pct.column("high").unwrap().f64().unwrap(),
        pct.column("value").unwrap().f64().unwrap(),
    );
    for i in 0..pct.height() {
        assert!(
            (lo.get(i).unwrap() - hi.get(i).unwrap()).abs() < 1e-12
                && (val.get(i).unwrap() - lo.get(i).unwrap()).abs() < 1e-9
        );
    }
    let weights = read(&ws.out().join("fam/w/weights.parquet")).unwrap();
    let l0 = weights.filter(&weights.column("layer").unwrap().u32().unwrap().equal(0)).unwrap();
    let mut kurt: Vec<f64> = l0.column("vocab_kurt").unwrap().f64().unwrap().into_no_null_iter().collect();
    kurt.sort_by(f64::total_cmp);
    let median = (kurt[127] + kurt[128]) / 2.0;
    let row = (0..pct.height())
        .find(|&i| {
            pct.column("stat").unwrap().str().unwrap().get(i) == Some("vocab_kurt")
                && pct.column("layer").unwrap().u32().unwrap().get(i) == Some(0)
                && pct.column("percentile").unwrap().str().unwrap().get(i) == Some("p50")
        })
        .unwrap();
    assert!((val.get(row).unwrap() - median).abs() < 1e-9);
    let classes = read(&dir.join("classes.parquet")).unwrap();
    assert_eq!(classes.column("neurons").unwrap().u32().unwrap().sum(), Some(2 * 2 * 256));
}

/// Mean loss, entropy, reciprocal rank and ln_final scale of a full run with `iv`, over the
/// positions the entropy stage averages (valid, a valid next token, not BOS / EOS).
fn hand_metrics(model: &Model, data: &Tokenized, iv: &[lantern::model::Intervention]) -> [f64; 4] {
    let tokens = Tensor::from_slice(&data.tokens, (data.rows, data.ctx), &Device::Cpu).unwrap();
    let (logits, cache) = model.run_with_cache(&tokens, &[HookPoint::LnFinalScale], iv).unwrap();
    let s = lantern::model::outputs::token_stats(&logits, &tokens, lantern::model::outputs::Wanted::ALL).unwrap();
    let scale: Vec<f32> = cache[&HookPoint::LnFinalScale].flatten_all().unwrap().to_vec1().unwrap();
    let (mut sum, mut n) = ([0f64; 4], 0f64);
    for r in 0..data.rows {
        for t in 0..data.ctx - 1 {
            let g = r * data.ctx + t;
            let tok = data.tokens[g];
            if data.valid[g] == 0
                || data.valid[g + 1] == 0
                || tok == model.cfg.bos_token_id
                || tok == model.cfg.eos_token_id
            {
                continue;
            }
            let i = r * (data.ctx - 1) + t;
            for (k, x) in [s.loss[i] as f64, s.entropy[i] as f64, 1.0 / (s.rank[i] as f64 + 1.0), scale[g] as f64]
                .into_iter()
                .enumerate()
            {
                sum[k] += x;
            }
            n += 1.0;
        }
    }
    sum.map(|x| x / n)
}

/// The tiny GPT-2 model's files replaced by pythia-tiny's (rotary, parallel residual).
fn use_pythia(ws: &Workspace) {
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(crate::common::fixture("pythia-tiny").join(f), ws.path().join("model").join(f)).unwrap();
    }
}

#[test]
fn entropy_interventions_equal_hand_composed_runs() {
    let ws = Workspace::new();
    entropy_matches(&ws);
    let ws = Workspace::new();
    use_pythia(&ws);
    entropy_matches(&ws);
}

fn entropy_matches(ws: &Workspace) {
    run(
        ws,
        r#"
[stages.w]
kind = "weights"
model = "tiny"

[stages.ent]
kind = "entropy"
model = "tiny"
dataset = "en"
neurons = [[1, 3], [0, 200]]
values = [0.0, 2.0]
baseline = { weights = "w", n = 4 }
batch_size = 7
"#,
    );
    let dir = ws.out().join("fam/ent");
    let data = Tokenized::load(&ws.out().join("fam/en@tiny")).unwrap();
    let model = load(ws);
    let table = read(&dir.join("entropy.parquet")).unwrap();
    let get = |name: &str, value: f32, col: &str| -> f64 {
        let m = table.column("neuron_name").unwrap().str().unwrap().equal(name)
            & table.column("value").unwrap().f32().unwrap().equal(value);
        table.filter(&m).unwrap().column(col).unwrap().f64().unwrap().get(0).unwrap()
    };
    for (name, [l, n]) in [("L1.3", [1usize, 3usize]), ("L0.200", [0, 200])] {
        for value in [0.0f32, 2.0] {
            let iv = [lantern::model::Intervention::new(
                HookPoint::Block(l, BlockSite::Post),
                lantern::model::Action::Constant(value),
            )
            .neurons(vec![n])];
            let want = hand_metrics(&model, &data, &iv);
            for (k, col) in ["loss", "entropy", "reciprocal_rank", "ln_scale"].iter().enumerate() {
                let got = get(name, value, col);
                assert!(
                    (got - want[k]).abs() < 1e-4 * want[k].abs().max(1.0),
                    "{name} = {value}: {col} {got} vs {}",
                    want[k]
                );
            }
        }
    }
    let summary = read(&dir.join("summary.parquet")).unwrap();
    let clean = summary.filter(&summary.column("series").unwrap().str().unwrap().equal("unintervened")).unwrap();
    let want = hand_metrics(&model, &data, &[]);
    assert!((clean.column("entropy").unwrap().f64().unwrap().get(0).unwrap() - want[1]).abs() < 1e-4);
    // Baseline neurons follow the study's rule and exclude the studied ones.
    let weights = read(&ws.out().join("fam/w/weights.parquet")).unwrap();
    let mut l2: Vec<f64> = weights.column("l2_penalty").unwrap().f64().unwrap().into_no_null_iter().collect();
    let mut vv: Vec<f64> = weights.column("vocab_var").unwrap().f64().unwrap().into_no_null_iter().collect();
    let (l2_all, vv_all) = (l2.clone(), vv.clone());
    l2.sort_by(f64::total_cmp);
    vv.sort_by(f64::total_cmp);
    let base = table.filter(&table.column("kind").unwrap().str().unwrap().equal("baseline")).unwrap();
    assert_eq!(base.height(), 4 * 2);
    for i in 0..base.height() {
        let (l, n) = (
            base.column("layer").unwrap().u32().unwrap().get(i).unwrap() as usize,
            base.column("neuron").unwrap().u32().unwrap().get(i).unwrap() as usize,
        );
        assert!(![(1, 3), (0, 200)].contains(&(l, n)));
        let row = l * 256 + n;
        assert!(
            l2_all[row] <= lantern::stages::prediction_neurons::percentile(&l2, 90.0)
                && vv_all[row] >= lantern::stages::prediction_neurons::percentile(&vv, 10.0)
        );
    }
}

#[test]
fn attention_deactivation_equals_a_hand_composed_query_path_ablation() {
    let ws = Workspace::new();
    query_path_ablation_matches(&ws);
    let ws = Workspace::new();
    use_pythia(&ws);
    query_path_ablation_matches(&ws);
}

fn query_path_ablation_matches(ws: &Workspace) {
    run(
        ws,
        r#"
[stages.deact]
kind = "attention_deactivation"
model = "tiny"
dataset = "en"
head = [1, 2]
top = 2
after_position = 8
random_directions = 200
batch_size = 6
"#,
    );
    let dir = ws.out().join("fam/deact");
    let data = Tokenized::load(&ws.out().join("fam/en@tiny")).unwrap();
    let model = load(ws);
    let (hl, hh, dh) = (1usize, 2usize, model.cfg.d_head);
    // Heuristic: (ŵ_out · W_Q) · k_BOS / sqrt(d_head), by hand for a few neurons.
    let bos = Tensor::new(&[[model.cfg.bos_token_id]], &Device::Cpu).unwrap();
    let k_hook = HookPoint::Block(hl, BlockSite::K);
    let (_, c) = model.run_with_cache(&bos, &[k_hook], &[]).unwrap();
    let k_bos: Vec<f32> = c[&k_hook].flatten_to(1).unwrap().get(0).unwrap().get(hh).unwrap().to_vec1().unwrap();
    let w_q: Vec<Vec<f32>> = model.param("blocks.1.attn.W_Q").unwrap().get(hh).unwrap().to_vec2().unwrap();
    let w_out: Vec<Vec<f32>> = model.param("blocks.0.mlp.W_out").unwrap().to_vec2().unwrap();
    let scores = read(&dir.join("scores.parquet")).unwrap();
    let got = scores.column("score").unwrap().f32().unwrap();
    for n in [0usize, 77, 255] {
        let norm = w_out[n].iter().map(|x| x * x).sum::<f32>().sqrt();
        let q: Vec<f32> = (0..dh).map(|j| (0..w_q.len()).map(|i| w_out[n][i] / norm * w_q[i][j]).sum()).collect();
        let want = q.iter().zip(&k_bos).map(|(a, b)| a * b).sum::<f32>() / (dh as f32).sqrt();
        assert!((got.get(n).unwrap() - want).abs() < 1e-4, "neuron {n}: {} vs {want}", got.get(n).unwrap());
    }
    // Path ablation of the top neuron by hand: patch the head's residual input with a_n · w_out
    // removed from position 8 on, keys and values patched back to the clean run's.
    let ablation = read(&dir.join("ablation.parquet")).unwrap();
    let top = ablation.column("neuron").unwrap().u32().unwrap().get(0).unwrap() as usize;
    let mut by_abs: Vec<(usize, f32)> = (0..256).map(|n| (n, got.get(n).unwrap())).collect();
    by_abs.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    assert_eq!(top, by_abs[0].0, "the most negative or positive score is ablated first");
    let tokens = Tensor::from_slice(&data.tokens, (data.rows, data.ctx), &Device::Cpu).unwrap();
    let at = |s| HookPoint::Block(hl, s);
    let (post, resid, k, v, z, pat) = (
        HookPoint::Block(0, BlockSite::Post),
        at(BlockSite::ResidPre),
        at(BlockSite::K),
        at(BlockSite::V),
        at(BlockSite::Z),
        at(BlockSite::Pattern),
    );
    let (_, clean) = model.run_with_cache(&tokens, &[post, resid, k, v, z, pat], &[]).unwrap();
    let acts: Vec<Vec<Vec<f32>>> = clean[&post].to_vec3().unwrap();
    let mut r3: Vec<Vec<Vec<f32>>> = clean[&resid].to_vec3().unwrap();
    for (r, row) in r3.iter_mut().enumerate() {
        for (p, x) in row.iter_mut().enumerate().skip(8) {
            for (d, xd) in x.iter_mut().enumerate() {
                *xd -= acts[r][p][top] * w_out[top][d];
            }
        }
    }
    let patched = Tensor::new(r3, &Device::Cpu).unwrap();
    use lantern::model::{Action, Intervention};
    let iv = [
        Intervention::new(resid, Action::Patch(patched)),
        Intervention::new(k, Action::Patch(clean[&k].clone())),
        Intervention::new(v, Action::Patch(clean[&v].clone())),
    ];
    let (_, abl) = model.run_with_cache(&tokens, &[z, pat], &iv).unwrap();
    let norm = |t: &Tensor| -> Vec<Vec<f32>> {
        t.get_on_dim(2, hh).unwrap().sqr().unwrap().sum(2).unwrap().sqrt().unwrap().to_vec2().unwrap()
    };
    let bos_p =
        |t: &Tensor| -> Vec<Vec<f32>> { t.get_on_dim(1, hh).unwrap().get_on_dim(2, 0).unwrap().to_vec2().unwrap() };
    let (n0, n1, b0, b1) = (norm(&clean[&z]), norm(&abl[&z]), bos_p(&clean[&pat]), bos_p(&abl[&pat]));
    let points = read(&dir.join("points.parquet")).unwrap();
    let mine = points
        .filter(&points.column("neuron_name").unwrap().str().unwrap().equal(format!("L0.{top}").as_str()))
        .unwrap();
    let (act, dn, db) = (
        mine.column("activation").unwrap().f64().unwrap(),
        mine.column("d_norm").unwrap().f64().unwrap(),
        mine.column("d_bos").unwrap().f64().unwrap(),
    );
    let mut i = 0;
    let mut moved = 0.0f64;
    for r in 0..data.rows {
        for p in 8..data.ctx {
            if data.valid[r * data.ctx + p] == 0 {
                continue;
            }
            assert!((act.get(i).unwrap() - acts[r][p][top] as f64).abs() < 1e-5);
            assert!((dn.get(i).unwrap() - (n1[r][p] - n0[r][p]) as f64).abs() < 1e-4, "Δnorm at {r},{p}");
            assert!((db.get(i).unwrap() - (b1[r][p] - b0[r][p]) as f64).abs() < 1e-5, "Δp(BOS) at {r},{p}");
            moved += db.get(i).unwrap().abs();
            i += 1;
        }
    }
    assert_eq!(i, mine.height(), "one point per valid position from 8 on");
    assert!(moved > 0.0, "removing the neuron changes the head's attention");
}

#[test]
fn neuron_prediction_buckets_and_points_equal_a_direct_computation() {
    let ws = Workspace::new();
    run(
        &ws,
        r#"
[stages.pred]
kind = "neuron_prediction"
model = "tiny"
dataset = "en"
hook = "blocks.1.mlp.hook_post"
neuron = 7
token = " the"
other = " a"
bucket_width = 0.05

[plots.buckets]
input = "pred"
table = "buckets"
kind = "line"
x = "activation"
y = "share"

[plots.scatter]
input = "pred"
table = "points"
kind = "scatter"
x = "activation"
y = "logit_diff"
"#,
    );
    let dir = ws.out().join("fam/pred");
    let data = Tokenized::load(&ws.out().join("fam/en@tiny")).unwrap();
    let model = load(&ws);
    let tok = model.tokenizer().unwrap();
    let (the, a) = (tok.single_token(" the").unwrap() as usize, tok.single_token(" a").unwrap() as usize);
    let tokens = Tensor::from_slice(&data.tokens, (data.rows, data.ctx), &Device::Cpu).unwrap();
    let hook = HookPoint::Block(1, BlockSite::Post);
    let (logits, cache) = model.run_with_cache(&tokens, &[hook], &[]).unwrap();
    let logits: Vec<Vec<f32>> = logits.flatten_to(1).unwrap().to_vec2().unwrap();
    let acts: Vec<Vec<f32>> = cache[&hook].flatten_to(1).unwrap().to_vec2().unwrap();
    let keep: Vec<usize> = (0..data.tokens.len()).filter(|&i| data.valid[i] != 0).collect();
    let points = read(&dir.join("points.parquet")).unwrap();
    assert_eq!(points.height(), keep.len());
    let (act, diff, top) = (
        points.column("activation").unwrap().f32().unwrap(),
        points.column("logit_diff").unwrap().f32().unwrap(),
        points.column("top_is_token").unwrap().bool().unwrap(),
    );
    let mut want_buckets: std::collections::BTreeMap<i64, (u64, u64)> = Default::default();
    for (k, &i) in keep.iter().enumerate() {
        let l = &logits[i];
        let best = (0..l.len()).fold(0, |b, j| if l[j] > l[b] { j } else { b });
        assert!((act.get(k).unwrap() - acts[i][7]).abs() < 1e-5);
        assert!((diff.get(k).unwrap() - (l[the] - l[a])).abs() < 1e-4);
        assert_eq!(top.get(k).unwrap(), best == the);
        let e = want_buckets.entry((acts[i][7] as f64 / 0.05).round() as i64).or_default();
        e.0 += 1;
        e.1 += (best == the) as u64;
    }
    let buckets = read(&dir.join("buckets.parquet")).unwrap();
    let n: Vec<u64> = buckets.column("positions").unwrap().u64().unwrap().into_no_null_iter().collect();
    assert_eq!(n, want_buckets.values().map(|v| v.0).collect::<Vec<_>>());
    assert!(want_buckets.len() > 3, "activations spread over several buckets");
}
