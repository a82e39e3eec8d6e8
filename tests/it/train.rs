//! Training: a few steps lower the loss, the same seed gives the same curve bit for bit, a short run
//! beats the unigram baseline on held-out text (in the library and in the `train` stage's tables),
//! and the written Hugging Face folder reloads to the same logits.

use candle_core::{Device, Tensor};
use lantern::model::{Activation, Model, ModelFiles, Processing};
use lantern::train::{self, export::save_hf, Schedule, Trainable};

fn corpus() -> (tokenizers::Tokenizer, Vec<u32>) {
    let text = std::fs::read_to_string(crate::common::repo().join("experiments/data/english.jsonl")).unwrap();
    let docs: Vec<String> = text
        .lines()
        .take(300)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .collect();
    let tok = lantern::data::bpe::train(docs.iter(), 300).unwrap();
    let mut ids = Vec::new();
    for d in &docs {
        ids.extend(tok.encode(d.as_str(), false).unwrap().get_ids());
    }
    let ctx = 16;
    ids.truncate(ids.len() / ctx * ctx);
    (tok, ids)
}

fn schedule(steps: usize) -> Schedule {
    Schedule { steps, batch: 4, lr: 3e-3, warmup: 2, weight_decay: 0.1, grad_clip: 1.0, eval_every: 0 }
}

fn small(vocab: usize) -> lantern::model::ModelConfig {
    train::config(1, 32, 2, 64, vocab, 16, Activation::GeluNew)
}

#[test]
fn a_few_steps_lower_the_loss_deterministically() {
    let (tok, ids) = corpus();
    let cfg = small(tok.get_vocab_size(true));
    let run = || {
        let mut t = Trainable::init(cfg.clone(), 3).unwrap();
        train::train(&mut t, &ids, &[], 16, &schedule(30), 3, |_| Ok(())).unwrap()
    };
    let a = run();
    let first: f32 = a[..3].iter().map(|p| p.train_loss).sum::<f32>() / 3.0;
    let last: f32 = a[a.len() - 3..].iter().map(|p| p.train_loss).sum::<f32>() / 3.0;
    assert!(last < first - 0.3, "loss {first} -> {last}");
    let b = run();
    let bits = |v: &[train::LogPoint]| v.iter().map(|p| p.train_loss.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b), "same seed, different curve");
    let mut t = Trainable::init(cfg, 4).unwrap();
    let c = train::train(&mut t, &ids, &[], 16, &schedule(30), 4, |_| Ok(())).unwrap();
    assert_ne!(bits(&a), bits(&c), "different seeds, same curve");
}

#[test]
fn the_saved_folder_reloads_to_the_same_logits() {
    let (tok, ids) = corpus();
    let mut t = Trainable::init(small(tok.get_vocab_size(true)), 5).unwrap();
    train::train(&mut t, &ids, &[], 16, &schedule(5), 5, |_| Ok(())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = t.model().unwrap();
    save_hf(&model, &tok, dir.path()).unwrap();
    let loaded = Model::load(&ModelFiles::from_folder(dir.path()).unwrap(), Processing::NONE, &Device::Cpu).unwrap();
    let rows = Tensor::from_slice(&ids[..32], (2, 16), &Device::Cpu).unwrap();
    let a = model.logits(&rows).unwrap();
    let b = loaded.logits(&rows).unwrap();
    crate::common::assert_close("reloaded logits", &a, &b, 1e-4);
    assert_eq!(
        loaded.tokenizer().unwrap().encode("hello", false).unwrap(),
        tok.encode("hello", false).unwrap().get_ids()
    );
}

#[test]
fn a_short_run_beats_the_unigram_baseline_on_heldout_text() {
    let (tok, ids) = corpus();
    let split = ids.len() / 16 * 9 / 10 * 16;
    let (train_ids, heldout) = ids.split_at(split);
    let vocab = tok.get_vocab_size(true);
    let mut t = Trainable::init(small(vocab), 6).unwrap();
    let sched = Schedule { batch: 8, ..schedule(400) };
    let log = train::train(&mut t, train_ids, heldout, 16, &sched, 6, |_| Ok(())).unwrap();
    let loss = log.last().unwrap().heldout_loss.unwrap() as f64;
    let unigram = lantern::train::baseline::unigram_loss(train_ids, heldout, 16, vocab);
    assert!(loss < unigram - 0.2, "held-out loss {loss} vs unigram {unigram}");
    // The logged held-out loss is the loss of the model a later stage loads.
    let model = t.model().unwrap();
    let rows = Tensor::from_slice(heldout, (heldout.len() / 16, 16), &Device::Cpu).unwrap();
    let stats = lantern::model::outputs::token_stats(
        &model.logits(&rows).unwrap(),
        &rows,
        lantern::model::outputs::Wanted::LOSS,
    )
    .unwrap();
    let mean = stats.loss.iter().map(|&l| l as f64).sum::<f64>() / stats.loss.len() as f64;
    assert!((mean - loss).abs() < 1e-4, "model loss {mean} vs logged {loss}");
}

#[test]
fn the_schedule_warms_up_then_decays() {
    let s = Schedule { steps: 100, batch: 1, lr: 1.0, warmup: 10, weight_decay: 0.0, grad_clip: 1.0, eval_every: 0 };
    assert!((s.lr_at(0) - 0.1).abs() < 1e-12);
    assert!((s.lr_at(9) - 1.0).abs() < 1e-12);
    assert!(s.lr_at(50) < 1.0 && s.lr_at(50) > s.lr_at(99));
    assert!((s.lr_at(99) - 0.1).abs() < 0.01);
}

#[test]
fn the_train_stage_reports_heldout_loss_beside_its_baselines() {
    let ws = crate::common::Workspace::new();
    let f = ws.file(
        "t.toml",
        r#"[experiment]
name = "t"

[datasets.en]
path = "data/english.jsonl"
context = 32
max_docs = 400

[stages.lm]
kind = "train"
datasets = ["en"]
layers = 1
d_model = 32
heads = 2
context = 32
vocab_size = 300
seeds = [1, 2]
steps = 300
batch_size = 8
eval_every = 100
heldout_fraction = 0.1

[plots.heldout]
input = "lm"
table = "heldout"
kind = "bar"
x = "seed"
y = "loss"
group = "model"
"#,
    );
    let o = ws.run(&f);
    assert!(!o.failed(), "{:?}", o.nodes);
    let read = |t: &str| lantern::store::table::read(&ws.out().join(format!("t/lm/{t}.parquet"))).unwrap();
    let metrics = read("metrics");
    let col = |c: &str| metrics.column(c).unwrap().f32().unwrap().into_no_null_iter().collect::<Vec<f32>>();
    let (trained, unigram, bigram) = (col("heldout_loss"), col("unigram_loss"), col("bigram_loss"));
    for s in 0..2 {
        assert!(trained[s] < unigram[s] - 0.2, "seed {s}: held-out {} vs unigram {}", trained[s], unigram[s]);
        assert!(bigram[s] < unigram[s], "seed {s}: bigram {} vs unigram {}", bigram[s], unigram[s]);
    }
    let heldout = read("heldout");
    assert_eq!(heldout.height(), 6);
    let models: Vec<&str> = heldout.column("model").unwrap().str().unwrap().into_no_null_iter().collect();
    assert_eq!(models, ["trained", "bigram", "unigram", "trained", "bigram", "unigram"]);
    let losses: Vec<f32> = heldout.column("loss").unwrap().f32().unwrap().into_no_null_iter().collect();
    assert_eq!(losses[..3], [trained[0], bigram[0], unigram[0]]);
    assert!(ws.out().join("t/heldout/plot.png").is_file());
}
