//! Every class of validation error: its message, its line:col, its suggestion; exit code 2.

use crate::common::Workspace;

const BASE: &str = r#"[experiment]
name = "v"

[models.tiny]
path = "model"

[datasets.en]
path = "data/english.jsonl"
context = 16

[stages.acts]
kind = "activations"
model = "tiny"
dataset = "en"
hooks = ["blocks.1.mlp.hook_post"]
"#;

/// The one-line diagnostics (`FILE:LINE:COL: message`) of an invalid file.
fn errors(ws: &Workspace, text: &str) -> Vec<String> {
    let f = ws.file("bad.toml", text);
    match lantern::experiment::load(&f) {
        Ok(_) => vec![],
        Err(inv) => inv
            .diagnostics
            .iter()
            .map(|d| {
                format!(
                    "{} | {}",
                    inv.short(d).replace(&format!("{}/", ws.path().display()), ""),
                    d.help.clone().unwrap_or_default()
                )
            })
            .collect(),
    }
}

fn expect(ws: &Workspace, text: &str, want: &[&str]) {
    let got = errors(ws, text);
    for w in want {
        assert!(got.iter().any(|g| g.contains(w)), "expected '{w}' in {got:#?}");
    }
}

#[test]
fn the_base_file_is_valid() {
    let ws = Workspace::new();
    assert!(errors(&ws, BASE).is_empty(), "{:?}", errors(&ws, BASE));
}

#[test]
fn unknown_fields_suggest_the_nearest() {
    let ws = Workspace::new();
    let text = BASE.replace("hooks = [", "hoks = [");
    expect(&ws, &text, &["bad.toml:15:1: unknown field `hoks`", "did you mean 'hooks'?"]);
}

#[test]
fn wrong_types_point_at_the_value() {
    let ws = Workspace::new();
    expect(
        &ws,
        &BASE.replace("context = 16", "context = \"16\""),
        &["bad.toml:9:11: invalid type: string \"16\", expected usize"],
    );
}

#[test]
fn dangling_references_name_the_defined_ones() {
    let ws = Workspace::new();
    expect(
        &ws,
        &BASE.replace("dataset = \"en\"", "dataset = \"eng\""),
        &["bad.toml:14:11: unknown dataset 'eng'", "did you mean 'en'?"],
    );
    expect(
        &ws,
        &BASE.replace("model = \"tiny\"", "model = \"en\""),
        &["bad.toml:13:9: unknown model 'en'", "'en' is a dataset, not a model"],
    );
}

#[test]
fn missing_inputs_and_kinds() {
    let ws = Workspace::new();
    expect(&ws, &BASE.replace("dataset = \"en\"\n", ""), &["bad.toml:11:1: missing field `dataset`"]);
    expect(
        &ws,
        &BASE.replace("kind = \"activations\"", "kind = \"activation\""),
        &["bad.toml:12:8: unknown stage kind 'activation'", "did you mean 'activations'?"],
    );
    expect(&ws, &BASE.replace("kind = \"activations\"\n", ""), &["stage has no `kind`"]);
}

#[test]
fn bad_hooks_and_ranges_for_the_model() {
    let ws = Workspace::new();
    expect(
        &ws,
        &BASE.replace("blocks.1.mlp.hook_post", "blocks.1.mlp.hook_pots"),
        &["bad.toml:15:10: unknown hook 'blocks.1.mlp.hook_pots'", "did you mean 'blocks.1.mlp.hook_post'?"],
    );
    expect(
        &ws,
        &BASE.replace("blocks.1.mlp.hook_post", "blocks.7.mlp.hook_post"),
        &["bad.toml:15:10: layer 7 out of range in 'blocks.7.mlp.hook_post': the model has 2 layers (0..=1)"],
    );
    expect(
        &ws,
        &BASE.replace("blocks.1.mlp.hook_post", "blocks.1.attn.hook_rot_q"),
        &["does not exist in Gpt2 models"],
    );
}

#[test]
fn missing_model_folder_and_data_file_are_invalid_input() {
    let ws = Workspace::new();
    expect(
        &ws,
        &BASE.replace("path = \"model\"", "path = \"nomodel\""),
        &["bad.toml:5:8: model folder", "nomodel does not exist"],
    );
    expect(
        &ws,
        &BASE.replace("data/english.jsonl", "data/missing.jsonl"),
        &["bad.toml:8:8: dataset 'en': data file", "missing.jsonl does not exist"],
    );
}

#[test]
fn a_trained_model_must_name_a_train_stage() {
    let ws = Workspace::new();
    let text = format!("{BASE}\n[models.trained]\ntrain = \"acts\"\n");
    expect(&ws, &text, &["stage 'acts' is a activations stage: `train` must name a train stage"]);
}

#[test]
fn syntax_errors_and_unknown_sections_all_at_once() {
    let ws = Workspace::new();
    expect(&ws, "[experiment]\nname = \"x\"\nseed = \n", &["bad.toml:3:"]);
    let errs = errors(&ws, &format!("{BASE}\n[stage.x]\nkind = \"activations\"\n").replace("hooks = [", "hoks = ["));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs.iter().any(|e| e.contains("unknown section 'stage'") && e.contains("did you mean 'stages'")));
}

#[test]
fn the_cli_exits_2_on_invalid_input_and_0_on_valid() {
    let ws = Workspace::new();
    let bad = ws.file("bad.toml", &BASE.replace("hooks = [", "hoks = ["));
    let good = ws.file("good.toml", BASE);
    let run = |f: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lantern")).arg("validate").arg(f).output().unwrap()
    };
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:15:1") && err.contains("help: did you mean 'hooks'?"), "{err}");
    assert_eq!(run(&good).status.code(), Some(0));
}

#[test]
fn the_checked_in_schema_is_current() {
    let path = crate::common::repo().join("schemas/experiment.schema.json");
    let on_disk = std::fs::read_to_string(&path).unwrap();
    assert!(
        on_disk == lantern::experiment::schema_json(),
        "schemas/experiment.schema.json is stale: run `cargo run --release -- schema > schemas/experiment.schema.json`"
    );
}

#[test]
fn cycles_are_named() {
    let ws = Workspace::new();
    let text = format!("{BASE}\n[stages.c1]\nkind = \"contrast\"\na = \"c2\"\nb = \"acts\"\n\n[stages.c2]\nkind = \"contrast\"\na = \"c1\"\nb = \"acts\"\n");
    expect(&ws, &text, &["cycle between stages: c1 → c2 → c1"]);
}

#[test]
fn interventions_out_of_range_point_at_the_value() {
    let ws = Workspace::new();
    let abl = |iv: &str| {
        format!(
            "{BASE}\n[stages.abl]\nkind = \"ablation\"\nmodel = \"tiny\"\ndataset = \"en\"\ninterventions = [{iv}]\n"
        )
    };
    expect(
        &ws,
        &abl("{ hook = \"blocks.1.mlp.hook_post\", neurons = [300], zero = true }"),
        &["bad.toml:21:63: neuron 300 out of range: there are 256 (0..=255)"],
    );
    expect(
        &ws,
        &abl("{ hook = \"blocks.5.mlp.hook_post\", neurons = [3], zero = true }"),
        &["bad.toml:21:27: layer 5 out of range: the model has 2 layers (0..=1)"],
    );
    expect(
        &ws,
        &abl("{ hook = \"blocks.1.mlp.hook_post\", positions = [70], zero = true }"),
        &["bad.toml:21:65: position 70 out of range: the model's context is 64"],
    );
    expect(
        &ws,
        &abl("{ hook = \"blocks.1.attn.hook_z\", heads = [4], zero = true }"),
        &["head 4 out of range: there are 4 (0..=3)"],
    );
    expect(
        &ws,
        &abl("{ hook = \"blocks.1.mlp.hook_post\", neurons = [1], zero = true, scale = 2.0 }"),
        &["exactly one of zero, set, scale"],
    );
}

#[test]
fn neuron_family_stages_check_their_inputs() {
    let ws = Workspace::new();
    let bad = format!(
        r#"{BASE}
[stages.ex]
kind = "explain"
model = "tiny"
dataset = "en"
hooks = ["blocks.1.attn.hook_pattern"]
labels = [{{ path = "missing.parquet", column = "pos" }}]

[stages.pred]
kind = "prediction_neurons"
model = "tiny"
family = ["acts"]
classes = ["prediktion"]

[stages.ent]
kind = "entropy"
model = "tiny"
dataset = "en"
neurons = [[2, 0]]
baseline = {{ weights = "acts" }}

[stages.ent2]
kind = "entropy"
model = "tiny"
dataset = "en"

[stages.deact]
kind = "attention_deactivation"
model = "tiny"
dataset = "en"
head = [1, 9]
"#
    );
    expect(
        &ws,
        &bad,
        &[
            "bad.toml:21:10: 'blocks.1.attn.hook_pattern' is per pair of positions",
            "bad.toml:22:20: label file 'missing.parquet' not found",
            "bad.toml:27:11: family lists weights stages; 'acts' is of kind activations",
            "bad.toml:28:12: unknown class 'prediktion' (classes: prediction, suppression, partition, none); did you mean 'prediction'?",
            "bad.toml:34:11: neuron [2, 0] out of range: the model has 2 layers",
            "bad.toml:35:24: baseline.weights reads a weights stage; 'acts' is of kind activations",
            "bad.toml:39:9: entropy needs `neurons = [[layer, neuron], …]` or `candidates",
            "bad.toml:46:8: head [1, 9] out of range: the model has 2 layers of 4 heads",
            "bad.toml:46:8: after_position 64 leaves no positions in a context of 64",
        ],
    );
    let unknown = format!(
        "{BASE}\n[stages.ex]\nkind = \"explain\"\nmodel = \"tiny\"\ndataset = \"en\"\nfeatures = [\"tokens\"]\n"
    );
    expect(&ws, &unknown, &["unknown variant `tokens`"]);
}

const TRAIN: &str = r#"
[stages.lm]
kind = "train"
datasets = ["en"]
layers = 1
d_model = 32
heads = 2
context = 16
vocab_size = 300
steps = 10

[models.trained]
train = "lm"

[stages.acts_lm]
kind = "activations"
model = "trained"
dataset = "en"
"#;

/// BASE with a small train stage (lines 18–27), its model and an activations stage of it with
/// the default hooks; `from` replaced by `to`.
fn train(from: &str, to: &str) -> String {
    format!("{BASE}{TRAIN}").replacen(from, to, 1)
}

#[test]
fn sizes_are_bounded_before_anything_is_allocated() {
    let ws = Workspace::new();
    // A huge layer count is refused at its value, once, and expands no hooks (see also the
    // memory-capped run of the binary below).
    let errs = errors(&ws, &train("layers = 1", "layers = 9223372036854775807"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].contains("bad.toml:20:10: train: layers = 9223372036854775807 is not a model size"), "{errs:#?}");
    let errs = errors(&ws, &train("layers = 1", "layers = 100000"));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].starts_with("bad.toml:20:10:"), "{errs:#?}");
    // A model within the size limits that cannot fit in memory: how much, and the knobs.
    expect(
        &ws,
        &train("layers = 1", "layers = 60000"),
        &["bad.toml:17:1: training this model: about", "lower batch_size, context, d_model, d_mlp or layers"],
    );
    expect(&ws, &train("d_model = 32", "d_model = 0"), &["bad.toml:21:11: train: d_model must be at least 1"]);
    expect(&ws, &train("heads = 2", "heads = 2\nd_mlp = 0"), &["bad.toml:23:9: train: d_mlp must be at least 1"]);
    expect(&ws, &train("heads = 2", "heads = 3"), &["bad.toml:22:9: train: d_model 32 must be a multiple of heads 3"]);
    expect(
        &ws,
        &train("steps = 10", "steps = 10\nheldout_fraction = -0.5"),
        &["bad.toml:26:20: heldout_fraction must be in [0, 1), not -0.5"],
    );
    expect(
        &ws,
        &train("steps = 10", "steps = 10\nbatch_size = 0"),
        &["bad.toml:26:14: batch_size must be at least 1, not 0"],
    );
    expect(
        &ws,
        &BASE.replace("context = 16", "context = 16\nn_tokens = 64").replace("hooks = [", "top_k = 100000\nhooks = ["),
        &["bad.toml:16:9: top_k = 100000 is more than the dataset's positions (64)"],
    );
    expect(
        &ws,
        &BASE.replace("hooks = [", "batch_size = 0\nhooks = ["),
        &["bad.toml:15:14: batch_size must be at least 1, not 0"],
    );
}

#[test]
fn values_that_used_to_fail_at_run_time_fail_validation() {
    let ws = Workspace::new();
    expect(
        &ws,
        &BASE.replace("name = \"v\"", "name = \"v\"\ndevice = \"tpu\""),
        &["bad.toml:3:10: unknown device 'tpu'", "cpu, cuda or cuda:N"],
    );
    expect(
        &ws,
        &BASE.replace("name = \"v\"", "name = \"v\"\nhighlights = [\"act\"]"),
        &["bad.toml:3:15: highlights: no stage or plot 'act'", "did you mean 'acts'"],
    );
    expect(
        &ws,
        &BASE.replace("context = 16", "context = 128"),
        &["bad.toml:9:11: dataset 'en': context 128 is longer than model 'tiny''s context (64)"],
    );
    expect(
        &ws,
        &BASE.replace("context = 16", "context = 16\ncrop = [2, 20]"),
        &["bad.toml:10:8: dataset 'en': crop [2, 20] reaches past the context (16)"],
    );
    expect(
        &ws,
        &BASE.replace("context = 16", "context = 16\nn_tokens = 0"),
        &["bad.toml:10:12: dataset 'en': n_tokens must be at least 1"],
    );
    expect(
        &ws,
        &BASE.replace("hooks = [\"blocks.1.mlp.hook_post\"]", "hooks = []"),
        &["bad.toml:15:9: activations: list at least one hook"],
    );
    let viewer = format!("{BASE}\n[stages.view]\nkind = \"viewer\"\nmodel = \"tiny\"\nactivations = \"acts\"\ntop = {{ from = \"acts\", n = 0 }}\n");
    expect(&ws, &viewer, &["bad.toml:21:28: n must be at least 1, not 0"]);
}

#[test]
fn non_finite_numbers_are_refused_where_they_are_written() {
    let ws = Workspace::new();
    for (v, col) in [("nan", 6), ("inf", 6), ("-inf", 6), ("+inf", 6), ("-nan", 6)] {
        expect(
            &ws,
            &train("steps = 10", &format!("steps = 10\nlr = {v}")),
            &[&format!("bad.toml:26:{col}: '{v}' is not a finite number")],
        );
    }
}

#[test]
fn checks_without_a_field_point_at_their_table_never_at_1_1() {
    let ws = Workspace::new();
    // The default hooks of `acts_lm` on a model whose per-token statistics would not fit.
    let errs = errors(&ws, &train("vocab_size = 300", "vocab_size = 16000000"));
    assert!(!errs.is_empty());
    assert!(errs.iter().all(|e| !e.starts_with("bad.toml:1:1:")), "{errs:#?}");
    assert!(errs.iter().any(|e| e.starts_with("bad.toml:30:1:")), "{errs:#?}");
}

#[test]
fn files_that_are_not_utf8_get_a_position() {
    let ws = Workspace::new();
    let run = |bytes: &[u8]| {
        let f = ws.path().join("enc.toml");
        std::fs::write(&f, bytes).unwrap();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_lantern")).arg("validate").arg(&f).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    // Latin-1 "é" on line 2.
    let (code, err) = run(b"[experiment]\nname = \"caf\xe9\"\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("enc.toml:2:12") && err.contains("byte 0xe9 is not UTF-8"), "{err}");
    let utf16: Vec<u8> =
        [0xff, 0xfe].into_iter().chain("[experiment]\n".encode_utf16().flat_map(|u| u.to_le_bytes())).collect();
    let (code, err) = run(&utf16);
    assert_eq!(code, Some(2));
    assert!(err.contains("enc.toml:1:1") && err.contains("UTF-16"), "{err}");
}

const CONTRAST: &str = r#"
[stages.acts_b]
kind = "activations"
model = "tiny"
dataset = "en"
hooks = ["blocks.1.mlp.hook_post"]

[stages.german]
kind = "contrast"
a = "acts"
b = "acts_b"
"#;

#[test]
fn tables_and_columns_are_checked_against_the_stages_declarations() {
    let ws = Workspace::new();
    let base = format!("{BASE}{CONTRAST}");
    let plot = |fields: &str| format!("{base}\n[plots.p]\ninput = \"german\"\n{fields}\n");
    // A table of another name, and a column that is not there, each at its value with the nearest.
    expect(
        &ws,
        &plot("table = \"contrst\"\nkind = \"histogram\"\ncolumn = \"d\""),
        &["bad.toml:30:9: stage 'german' (contrast) has no table 'contrst'", "did you mean 'contrast'?"],
    );
    expect(
        &ws,
        &plot("table = \"contrast\"\nkind = \"scatter\"\nx = \"mean_acts\"\ny = \"mean_acts_de\""),
        &["bad.toml:33:5: german.contrast has no column 'mean_acts_de'", "did you mean 'mean_acts'?"],
    );
    // Columns named by the filter and by the title's placeholders; a text column where numbers go.
    expect(
        &ws,
        &plot(
            "table = \"contrast\"\nkind = \"line\"\nx = \"name\"\ny = \"d\"\nfilter = { layr = 1 }\ntitle = \"{nueron}\"",
        ),
        &[
            "bad.toml:32:5: `x` needs numbers, and column 'name' of german.contrast holds text",
            "bad.toml:34:19: german.contrast has no column 'layr'",
            "bad.toml:35:9: german.contrast has no column 'nueron'",
        ],
    );
    // Several tables and none chosen.
    expect(&ws, &plot("kind = \"histogram\"\ncolumn = \"d\""), &["writes several tables: set `table`"]);
    // A viewer's `top` selector: its table and its `by` column.
    let viewer = |top: &str| {
        format!("{base}\n[stages.view]\nkind = \"viewer\"\nmodel = \"tiny\"\nactivations = \"acts\"\ntop = {top}\n")
    };
    expect(
        &ws,
        &viewer("{ from = \"german\", table = \"contrst\", n = 3 }"),
        &["stage 'german' (contrast) has no table 'contrst'", "did you mean 'contrast'?"],
    );
    expect(
        &ws,
        &viewer("{ from = \"german\", table = \"contrast\", n = 3, by = \"dd\" }"),
        &["german.contrast has no column 'dd'", "did you mean 'd'?"],
    );
    assert!(errors(&ws, &viewer("{ from = \"german\", table = \"contrast\", n = 3, by = \"d\" }")).is_empty());
}

#[test]
fn decode_reference_hook_and_column_errors_come_in_one_round() {
    let ws = Workspace::new();
    let text = format!(
        "{}{CONTRAST}\n[stages.broken]\nkind = \"activations\"\nmodl = \"tiny\"\n\n[stages.lost]\nkind = \"contrast\"\na = \"acts\"\nb = \"acts_c\"\n\n[plots.p]\ninput = \"german\"\ntable = \"contrast\"\nkind = \"histogram\"\ncolumn = \"dd\"\n\n[plots.q]\ninput = \"broken\"\nkind = \"histogram\"\ncolumn = \"x\"\n",
        BASE.replace("blocks.1.mlp.hook_post\"]", "blocks.9.mlp.hook_post\"]")
    );
    let got = errors(&ws, &text);
    for want in ["unknown field `modl`", "unknown stage 'acts_c'", "blocks.9", "german.contrast has no column 'dd'"] {
        assert!(got.iter().any(|g| g.contains(want)), "expected '{want}' in {got:#?}");
    }
    // The plot of the stage that did not decode is not reported as a dangling reference.
    assert!(!got.iter().any(|g| g.contains("unknown stage 'broken'")), "{got:#?}");
}
