//! Intervention and inspection stages end to end on a small model: their tables agree with the
//! analysis functions run by hand, and their plots and pages render.

use crate::common::Workspace;
use lantern::exec::Status;
use lantern::store::table::read;
use polars::prelude::*;

const EXP: &str = r#"
[experiment]
name = "stages"

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

[datasets.pairs]
pairs = [{ clean = "The cat sat on the mat", corrupted = "The dog sat on the mat", answer = " and", wrong = " the" }]

[stages.acts_en]
kind = "activations"
model = "tiny"
dataset = "en"
hooks = ["mlp.hook_post"]

[stages.acts_de]
kind = "activations"
model = "tiny"
dataset = "de"
hooks = ["mlp.hook_post"]

[stages.german]
kind = "contrast"
a = "acts_en"
b = "acts_de"

[stages.ablate]
kind = "ablation"
model = "tiny"
dataset = "de"
[stages.ablate.sets.mean_en]
interventions = [{ hook = "blocks.1.mlp.hook_post", neurons = [7], set = { mean_of = "acts_en" } }]
[stages.ablate.sets.zero]
interventions = [{ hook = "blocks.1.mlp.hook_post", neurons = [7], zero = true }]

[stages.patch]
kind = "patching"
model = "tiny"
dataset = "pairs"
sweeps = ["resid_pre", "attn_out", "mlp_out", "heads", "neurons"]
neuron_layer = 1
batch_size = 5

[stages.lens]
kind = "logit_lens"
model = "tiny"
dataset = "pairs"

[stages.effects]
kind = "direct_effect"
model = "tiny"
dataset = "de"
hook = "blocks.0.mlp.hook_post"
neuron = 5
active = { mean_of = "acts_de" }
inactive = { mean_of = "acts_en" }
frozen = ["blocks.1.hook_attn_out"]
patched = ["blocks.1.hook_mlp_out"]

[stages.weights]
kind = "vocab_projection"
model = "tiny"
neurons = ["L1.N7"]
tokens = [" the"]
monotokenic = 5

[stages.wstats]
kind = "weights"
model = "tiny"

[stages.table]
kind = "neuron_table"
weights = "wstats"
activations = "acts_pre"

[stages.acts_pre]
kind = "activations"
model = "tiny"
dataset = "de"

[stages.pages]
kind = "viewer"
model = "tiny"
activations = "acts_de"
top = { from = "german", table = "contrast", n = 3 }
texts = ["Der Hund bellt."]

[plots.resid]
input = "patch"
table = "positions"
kind = "heatmap"
filter = { sweep = "resid_pre" }
x = "position"
x_labels = "token"
y = "layer"
value = "score"

[plots.losses]
input = "ablate"
table = "losses"
kind = "bar"
x = "set"
y = "loss"
"#;

fn col_f64(df: &DataFrame, c: &str) -> Vec<f64> {
    df.column(c).unwrap().cast(&DataType::Float64).unwrap().f64().unwrap().into_no_null_iter().collect()
}

#[test]
fn intervention_stages_run_and_agree_with_the_analysis_functions() {
    let ws = Workspace::new();
    let f = ws.file("s.toml", EXP);
    let o = ws.run(&f);
    for n in &o.nodes {
        assert!(matches!(n.status, Status::Computed), "{}: {:?}", n.name, n.status);
    }
    let out = ws.out().join("stages");
    // Ablation: the clean row is the unintervened loss; zeroing changes it.
    let losses = read(&out.join("ablate/losses.parquet")).unwrap();
    let l = col_f64(&losses, "loss");
    assert_eq!(losses.column("set").unwrap().str().unwrap().get(0), Some("clean"));
    assert!(l.iter().all(|x| x.is_finite() && *x > 0.0));
    assert!((l[2] - l[0]).abs() > 0.0);
    // Patching: three components × two layers × every position; scores are normalised metrics.
    let pos = read(&out.join("patch/positions.parquet")).unwrap();
    let n_pos = col_f64(&pos, "position").iter().fold(0.0f64, |m, x| m.max(*x)) as usize + 1;
    assert_eq!(pos.height(), 3 * 2 * n_pos);
    let neurons = read(&out.join("patch/neurons.parquet")).unwrap();
    assert_eq!(neurons.height(), 256);
    let summary = read(&out.join("patch/summary.parquet")).unwrap();
    let (mc, mx) = (col_f64(&summary, "metric_clean")[0], col_f64(&summary, "metric_corrupted")[0]);
    for (m, s) in col_f64(&neurons, "metric").iter().zip(col_f64(&neurons, "score")) {
        assert!(((m - mx) / (mc - mx) - s).abs() < 1e-4);
    }
    // The lens's last point is the model's own logit difference at the last position.
    let lens = read(&out.join("lens/lens.parquet")).unwrap();
    let v = col_f64(&lens, "value");
    let model = lantern::model::Model::load(
        &lantern::model::ModelFiles::from_folder(&ws.path().join("model")).unwrap(),
        lantern::model::Processing::DEFAULT,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let tok = model.tokenizer().unwrap();
    let b_u: Vec<f32> = model.weights.b_u.to_vec1().unwrap();
    let bias =
        (b_u[tok.single_token(" and").unwrap() as usize] - b_u[tok.single_token(" the").unwrap() as usize]) as f64;
    assert!((v[v.len() - 1] + bias - mc).abs() < 1e-4, "lens {} + bias {bias} vs metric {mc}", v[v.len() - 1]);
    // Direct effect: four runs, the original first.
    let fx = read(&out.join("effects/effects.parquet")).unwrap();
    assert_eq!(fx.height(), 4);
    assert_eq!(col_f64(&fx, "delta")[0], 0.0);
    // Vocabulary projection and monotokenic neurons.
    assert_eq!(read(&out.join("weights/neuron_tokens.parquet")).unwrap().height(), 40);
    assert_eq!(
        read(&out.join("weights/monotokenic.parquet")).unwrap().height().min(5),
        read(&out.join("weights/monotokenic.parquet")).unwrap().height()
    );
    // The neuron table joins weights and pre-activation statistics for every neuron.
    let table = read(&out.join("table/neurons.parquet")).unwrap();
    assert_eq!(table.height(), 2 * 256);
    for c in [
        "w_in_norm",
        "w_out_norm",
        "input_bias",
        "in_out_sim",
        "l2_penalty",
        "mean",
        "var",
        "skew",
        "kurt",
        "sparsity",
        "vocab_mean",
        "vocab_var",
        "vocab_skew",
        "vocab_kurt",
    ] {
        assert!(col_f64(&table, c).iter().all(|x| x.is_finite()), "{c}");
    }
    assert!(out.join("table/neurons.csv").exists());
    let comps = read(&out.join("wstats/neuron_comps.parquet")).unwrap();
    assert_eq!(comps.height(), 512 * 4 * 2 * 10);
    // Viewer pages: one per chosen neuron (the contrast's top 3), each showing that neuron's top
    // example value and the tokens around it.
    let contrast = read(&out.join("german/contrast.parquet")).unwrap();
    let index = std::fs::read_to_string(out.join("pages/index.html")).unwrap();
    let examples = read(&out.join("acts_de/examples.parquet")).unwrap();
    for i in 0..3 {
        let (l, n) = (col_f64(&contrast, "layer")[i] as u32, col_f64(&contrast, "neuron")[i] as u32);
        let page = std::fs::read_to_string(out.join(format!("pages/L{l}.N{n}.html"))).unwrap();
        assert!(index.contains(&format!("href=\"L{l}.N{n}.html\"")), "index lacks L{l}.N{n}");
        let rows: Vec<usize> = (0..examples.height())
            .filter(|&r| {
                examples.column("hook").unwrap().str().unwrap().get(r) == Some("mlp.hook_post")
                    && examples.column("which").unwrap().str().unwrap().get(r) == Some("top")
                    && examples.column("layer").unwrap().u32().unwrap().get(r) == Some(l)
                    && examples.column("neuron").unwrap().u32().unwrap().get(r) == Some(n)
            })
            .collect();
        let top = rows
            .iter()
            .map(|&r| examples.column("value").unwrap().f64().unwrap().get(r).unwrap())
            .fold(f64::MIN, f64::max);
        assert!(page.contains(&format!("<span class=\"v\">{top:.3}")), "L{l}.N{n}: top value {top:.3} not shown");
        let max_token = rows
            .iter()
            .find(|&&r| examples.column("value").unwrap().f64().unwrap().get(r) == Some(top))
            .map(|&r| examples.column("token_str").unwrap().str().unwrap().get(r).unwrap().to_string())
            .unwrap();
        let shown = lantern::pages::tokens::render(max_token.as_bytes()).into_string();
        // (A byte token's stored string is U+FFFD; the page shows its bytes.)
        assert!(
            page.contains("max\" style=") && (page.contains(&shown) || max_token.contains('\u{FFFD}')),
            "L{l}.N{n}: max token {max_token:?} not shown"
        );
    }
    assert!(out.join("pages/texts.html").exists());
    // Plots exist; every link of the report resolves.
    assert!(out.join("resid/plot.png").exists() && out.join("losses/plot.svg").exists());
    let v = lantern::experiment::load(&f).unwrap();
    lantern::report::write_for(&v, &o, &lantern::store::OutDir::create(&ws.out()).unwrap()).unwrap();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let links = crate::report::check_links(&html, &out);
    assert!(links >= 5, "only {links} links");
    assert!(html.contains("[stages.ablate.sets.zero]"), "the report shows the experiment file");
}
