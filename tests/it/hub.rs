//! A temporary Hugging Face cache laid out like the real one (`blobs/<hash>`, `refs/main`,
//! `snapshots/<commit>/` holding relative symlinks into `blobs/`), filled with random-weight models
//! of the real configurations (written tensor by tensor: safetensors, or PyTorch zip pickles as
//! `torch.save` writes them) and stand-in datasets with the real repositories' Parquet columns.

use crate::common::{fixture, repo};
use polars::prelude::*;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How a tensor's values are drawn.
#[derive(Clone, Copy)]
pub enum Init {
    /// Uniform with this standard deviation, mean 0.
    Random(f32),
    Const(f32),
    /// A lower-triangular boolean mask (a TransformerLens attention buffer).
    Causal,
}

/// One tensor of a checkpoint: name, shape, values.
pub struct Spec(pub String, pub Vec<usize>, pub Init);

fn spec(name: impl Into<String>, shape: &[usize], init: Init) -> Spec {
    Spec(name.into(), shape.to_vec(), init)
}

impl Spec {
    fn numel(&self) -> usize {
        self.1.iter().product()
    }

    /// The values, little-endian: f32, or one byte per value for a mask.
    fn bytes(&self, seed: u64) -> Vec<u8> {
        let n = self.numel();
        match self.2 {
            Init::Causal => {
                let cols = *self.1.last().unwrap_or(&1);
                (0..n).map(|i| u8::from(i % cols <= (i / cols) % cols)).collect()
            }
            Init::Const(v) => v.to_le_bytes().repeat(n),
            Init::Random(std) => {
                let key = blake3::hash(format!("{seed}/{}", self.0).as_bytes());
                let mut rng = rand_chacha::ChaCha8Rng::from_seed(*key.as_bytes());
                let a = std * 3f32.sqrt();
                let mut out = Vec::with_capacity(n * 4);
                for _ in 0..n {
                    out.extend_from_slice(&rng.random_range(-a..a).to_le_bytes());
                }
                out
            }
        }
    }

    fn is_mask(&self) -> bool {
        matches!(self.2, Init::Causal)
    }
}

/// A checkpoint's tensors as one safetensors file, written one tensor at a time.
pub fn write_safetensors(path: &Path, specs: &[Spec], seed: u64) {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0;
    for s in specs {
        let len = s.numel() * if s.is_mask() { 1 } else { 4 };
        let dtype = if s.is_mask() { "BOOL" } else { "F32" };
        header.insert(s.0.clone(), json!({"dtype": dtype, "shape": s.1, "data_offsets": [offset, offset + len]}));
        offset += len;
    }
    let mut text = serde_json::Value::Object(header).to_string();
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&(text.len() as u64).to_le_bytes()).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    for s in specs {
        f.write_all(&s.bytes(seed)).unwrap();
    }
    f.flush().unwrap();
}

/// A state dict as `torch.save` writes it (zip of `NAME/data.pkl` and one `NAME/data/K` entry
/// per tensor, stored uncompressed), one tensor at a time. Masks are `BoolStorage`.
pub fn write_pth(path: &Path, archive: &str, specs: &[Spec], seed: u64) {
    use ::zip::write::SimpleFileOptions;
    let opts = SimpleFileOptions::default().compression_method(::zip::CompressionMethod::Stored).large_file(true);
    let mut z = ::zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    z.start_file(format!("{archive}/data.pkl"), opts).unwrap();
    z.write_all(&state_dict_pickle(specs)).unwrap();
    for (name, body) in [("byteorder", "little"), ("version", "3\n"), (".format_version", "1")] {
        z.start_file(format!("{archive}/{name}"), opts).unwrap();
        z.write_all(body.as_bytes()).unwrap();
    }
    for (k, s) in specs.iter().enumerate() {
        z.start_file(format!("{archive}/data/{k}"), opts).unwrap();
        z.write_all(&s.bytes(seed)).unwrap();
    }
    z.finish().unwrap();
}

/// Pickle protocol 2 of an `OrderedDict` of `torch._utils._rebuild_tensor_v2` calls whose storages
/// are persistent ids `('storage', torch.<Kind>Storage, key, 'cpu', numel)`.
fn state_dict_pickle(specs: &[Spec]) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    let global = |p: &mut Vec<u8>, module: &str, name: &str| {
        p.push(b'c');
        p.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    };
    let unicode = |p: &mut Vec<u8>, s: &str| {
        p.push(b'X');
        p.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.extend_from_slice(s.as_bytes());
    };
    let int = |p: &mut Vec<u8>, v: usize| {
        p.push(b'J');
        p.extend_from_slice(&(v as i32).to_le_bytes());
    };
    let tuple = |p: &mut Vec<u8>, vs: &[usize]| {
        p.push(b'(');
        for &v in vs {
            p.push(b'J');
            p.extend_from_slice(&(v as i32).to_le_bytes());
        }
        p.push(b't');
    };
    global(&mut p, "collections", "OrderedDict");
    p.extend_from_slice(b")R(");
    for (k, s) in specs.iter().enumerate() {
        unicode(&mut p, &s.0);
        global(&mut p, "torch._utils", "_rebuild_tensor_v2");
        p.extend_from_slice(b"((");
        unicode(&mut p, "storage");
        global(&mut p, "torch", if s.is_mask() { "BoolStorage" } else { "FloatStorage" });
        unicode(&mut p, &k.to_string());
        unicode(&mut p, "cpu");
        int(&mut p, s.numel());
        p.extend_from_slice(b"tQ");
        int(&mut p, 0);
        tuple(&mut p, &s.1);
        let strides: Vec<usize> = (0..s.1.len()).map(|i| s.1[i + 1..].iter().product()).collect();
        tuple(&mut p, &strides);
        p.push(0x89); // False: requires_grad
        global(&mut p, "collections", "OrderedDict");
        p.extend_from_slice(b")Rt");
        p.push(b'R');
    }
    p.extend_from_slice(b"u.");
    p
}

/// A shape of a known model.
#[derive(Clone, Copy)]
pub struct Shape {
    pub layers: usize,
    pub d_model: usize,
    pub heads: usize,
    pub d_mlp: usize,
    pub vocab: usize,
    pub n_ctx: usize,
}

pub const PYTHIA_70M: Shape = Shape { layers: 6, d_model: 512, heads: 8, d_mlp: 2048, vocab: 50304, n_ctx: 2048 };
pub const GPT2_SMALL: Shape = Shape { layers: 12, d_model: 768, heads: 12, d_mlp: 3072, vocab: 50257, n_ctx: 1024 };
pub const GPT2_LARGE: Shape = Shape { layers: 36, d_model: 1280, heads: 20, d_mlp: 5120, vocab: 50257, n_ctx: 1024 };
pub const SOLU_2L: Shape = Shape { layers: 2, d_model: 512, heads: 8, d_mlp: 2048, vocab: 48262, n_ctx: 1024 };

/// GPT-2 initialisation scales: N(0, 0.02) matrices, output projections over sqrt(2 · layers).
fn scales(s: Shape) -> (Init, Init) {
    (Init::Random(0.02), Init::Random(0.02 / (2.0 * s.layers as f32).sqrt()))
}

/// HF `GPTNeoXForCausalLM` tensors.
pub fn neox_tensors(s: Shape) -> Vec<Spec> {
    let (w, proj) = scales(s);
    let (d, m) = (s.d_model, s.d_mlp);
    let mut t = vec![spec("gpt_neox.embed_in.weight", &[s.vocab, d], w)];
    for l in 0..s.layers {
        let b = format!("gpt_neox.layers.{l}.");
        for ln in ["input_layernorm", "post_attention_layernorm"] {
            t.push(spec(format!("{b}{ln}.weight"), &[d], Init::Const(1.0)));
            t.push(spec(format!("{b}{ln}.bias"), &[d], Init::Const(0.0)));
        }
        t.push(spec(format!("{b}attention.query_key_value.weight"), &[3 * d, d], w));
        t.push(spec(format!("{b}attention.query_key_value.bias"), &[3 * d], Init::Const(0.0)));
        t.push(spec(format!("{b}attention.dense.weight"), &[d, d], proj));
        t.push(spec(format!("{b}attention.dense.bias"), &[d], Init::Const(0.0)));
        t.push(spec(format!("{b}mlp.dense_h_to_4h.weight"), &[m, d], w));
        t.push(spec(format!("{b}mlp.dense_h_to_4h.bias"), &[m], Init::Const(0.0)));
        t.push(spec(format!("{b}mlp.dense_4h_to_h.weight"), &[d, m], proj));
        t.push(spec(format!("{b}mlp.dense_4h_to_h.bias"), &[d], Init::Const(0.0)));
    }
    t.push(spec("gpt_neox.final_layer_norm.weight", &[d], Init::Const(1.0)));
    t.push(spec("gpt_neox.final_layer_norm.bias", &[d], Init::Const(0.0)));
    t.push(spec("embed_out.weight", &[s.vocab, d], w));
    t
}

/// HF `GPT2LMHeadModel` tensors (Conv1D weights are [in, out]; the unembedding is tied), with the
/// attention-mask buffers older `transformers` versions saved.
pub fn gpt2_tensors(s: Shape, buffers: bool) -> Vec<Spec> {
    let (w, proj) = scales(s);
    let (d, m) = (s.d_model, s.d_mlp);
    let mut t = vec![spec("transformer.wte.weight", &[s.vocab, d], w)];
    t.push(spec("transformer.wpe.weight", &[s.n_ctx, d], Init::Random(0.01)));
    for l in 0..s.layers {
        let b = format!("transformer.h.{l}.");
        for ln in ["ln_1", "ln_2"] {
            t.push(spec(format!("{b}{ln}.weight"), &[d], Init::Const(1.0)));
            t.push(spec(format!("{b}{ln}.bias"), &[d], Init::Const(0.0)));
        }
        t.push(spec(format!("{b}attn.c_attn.weight"), &[d, 3 * d], w));
        t.push(spec(format!("{b}attn.c_attn.bias"), &[3 * d], Init::Const(0.0)));
        t.push(spec(format!("{b}attn.c_proj.weight"), &[d, d], proj));
        t.push(spec(format!("{b}attn.c_proj.bias"), &[d], Init::Const(0.0)));
        t.push(spec(format!("{b}mlp.c_fc.weight"), &[d, m], w));
        t.push(spec(format!("{b}mlp.c_fc.bias"), &[m], Init::Const(0.0)));
        t.push(spec(format!("{b}mlp.c_proj.weight"), &[m, d], proj));
        t.push(spec(format!("{b}mlp.c_proj.bias"), &[d], Init::Const(0.0)));
        if buffers {
            t.push(spec(format!("{b}attn.bias"), &[1, 1, s.n_ctx, s.n_ctx], Init::Causal));
            t.push(spec(format!("{b}attn.masked_bias"), &[], Init::Const(-1e4)));
        }
    }
    t.push(spec("transformer.ln_f.weight", &[d], Init::Const(1.0)));
    t.push(spec("transformer.ln_f.bias", &[d], Init::Const(0.0)));
    t
}

/// A TransformerLens state dict of a SoLU model (NeelNanda's `model_final.pth`), with the
/// `attn.mask` (bool) and `attn.IGNORE` buffers it carries.
pub fn solu_tensors(s: Shape) -> Vec<Spec> {
    let (w, proj) = scales(s);
    let (d, m, h) = (s.d_model, s.d_mlp, s.heads);
    let dh = d / h;
    let mut t = vec![spec("embed.W_E", &[s.vocab, d], Init::Random(0.1)), spec("pos_embed.W_pos", &[s.n_ctx, d], w)];
    t.push(spec("ln_final.w", &[d], Init::Const(1.0)));
    t.push(spec("ln_final.b", &[d], Init::Const(0.0)));
    for l in 0..s.layers {
        let b = format!("blocks.{l}.");
        t.push(spec(format!("{b}ln1.w"), &[d], Init::Const(1.0)));
        t.push(spec(format!("{b}ln1.b"), &[d], Init::Const(0.0)));
        for q in ["Q", "K", "V"] {
            t.push(spec(format!("{b}attn.W_{q}"), &[h, d, dh], w));
            t.push(spec(format!("{b}attn.b_{q}"), &[h, dh], Init::Const(0.0)));
        }
        t.push(spec(format!("{b}attn.W_O"), &[h, dh, d], proj));
        t.push(spec(format!("{b}attn.b_O"), &[d], Init::Const(0.0)));
        t.push(spec(format!("{b}attn.mask"), &[s.n_ctx, s.n_ctx], Init::Causal));
        t.push(spec(format!("{b}attn.IGNORE"), &[], Init::Const(-1e5)));
        t.push(spec(format!("{b}ln2.w"), &[d], Init::Const(1.0)));
        t.push(spec(format!("{b}ln2.b"), &[d], Init::Const(0.0)));
        t.push(spec(format!("{b}mlp.W_in"), &[d, m], w));
        t.push(spec(format!("{b}mlp.b_in"), &[m], Init::Const(0.0)));
        t.push(spec(format!("{b}mlp.W_out"), &[m, d], proj));
        t.push(spec(format!("{b}mlp.b_out"), &[d], Init::Const(0.0)));
        t.push(spec(format!("{b}mlp.ln.w"), &[m], Init::Const(1.0)));
        t.push(spec(format!("{b}mlp.ln.b"), &[m], Init::Const(0.0)));
    }
    t.push(spec("unembed.W_U", &[d, s.vocab], w));
    t
}

/// Model or dataset repository.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Model,
    Dataset,
}

/// A temporary hub cache (set `HF_HUB_CACHE` to `path()` for the processes that read it).
pub struct HubCache {
    pub dir: tempfile::TempDir,
}

impl HubCache {
    pub fn new() -> HubCache {
        HubCache { dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The repository's folder: `models--org--name` / `datasets--org--name`.
    pub fn repo_dir(&self, kind: Kind, repo: &str) -> PathBuf {
        let prefix = if kind == Kind::Model { "models" } else { "datasets" };
        self.path().join(format!("{prefix}--{}", repo.replace('/', "--")))
    }

    /// The commit `refs/main` names (fixed per repository, 40 hex digits).
    pub fn commit(repo: &str) -> String {
        blake3::hash(repo.as_bytes()).to_hex()[..40].to_string()
    }

    /// Add a file to a repository's `main` snapshot: `write` fills a temporary file, which moves to
    /// `blobs/<content hash>`, linked from `snapshots/<commit>/<name>` by a relative symlink.
    pub fn put(&self, kind: Kind, repo: &str, name: &str, write: impl FnOnce(&Path)) -> PathBuf {
        let root = self.repo_dir(kind, repo);
        let commit = Self::commit(repo);
        for d in ["blobs", "refs"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("refs/main"), &commit).unwrap();
        let tmp = root.join("blobs").join(format!(".incomplete-{}", name.replace('/', "_")));
        write(&tmp);
        let hash = blake3::Hasher::new().update_mmap(&tmp).unwrap().finalize().to_hex().to_string();
        std::fs::rename(&tmp, root.join("blobs").join(&hash)).unwrap();
        let link = root.join("snapshots").join(&commit).join(name);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let up = "../".repeat(name.matches('/').count() + 2);
        std::os::unix::fs::symlink(format!("{up}blobs/{hash}"), &link).unwrap();
        link
    }

    fn put_json(&self, kind: Kind, repo: &str, name: &str, v: &serde_json::Value) {
        self.put(kind, repo, name, |p| std::fs::write(p, serde_json::to_string_pretty(v).unwrap()).unwrap());
    }

    fn put_copy(&self, kind: Kind, repo: &str, name: &str, from: &Path) {
        self.put(kind, repo, name, |p| {
            std::fs::copy(from, p).unwrap();
        });
    }

    /// Pythia (HF GPT-NeoX config and safetensors) with the GPT-2 BPE as its tokenizer (its ids fit
    /// Pythia's padded vocabulary).
    pub fn pythia(&self, repo: &str, s: Shape, seed: u64) {
        self.put_json(
            Kind::Model,
            repo,
            "config.json",
            &json!({
                "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0,
                "hidden_act": "gelu", "hidden_size": s.d_model, "initializer_range": 0.02,
                "intermediate_size": s.d_mlp, "layer_norm_eps": 1e-5, "max_position_embeddings": s.n_ctx,
                "model_type": "gpt_neox", "num_attention_heads": s.heads, "num_hidden_layers": s.layers,
                "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": false,
                "torch_dtype": "float16", "use_cache": true, "use_parallel_residual": true, "vocab_size": s.vocab
            }),
        );
        self.put(Kind::Model, repo, "model.safetensors", |p| write_safetensors(p, &neox_tensors(s), seed));
        self.put_copy(Kind::Model, repo, "tokenizer.json", &fixture("gpt2-tokenizer/tokenizer.json"));
    }

    /// GPT-2 (HF config, the GPT-2 BPE): `crfm` = a Stanford CRFM seed (attention also scaled by
    /// 1 / (layer + 1); the checkpoint a `pytorch_model.bin` pickle with mask buffers, as those
    /// repositories hold), else `model.safetensors`.
    pub fn gpt2(&self, repo: &str, s: Shape, crfm: bool, seed: u64) {
        self.put_json(
            Kind::Model,
            repo,
            "config.json",
            &json!({
                "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
                "bos_token_id": 50256, "eos_token_id": 50256, "embd_pdrop": 0.1, "initializer_range": 0.02,
                "layer_norm_epsilon": 1e-5, "model_type": "gpt2", "n_ctx": s.n_ctx, "n_embd": s.d_model,
                "n_head": s.heads, "n_inner": null, "n_layer": s.layers, "n_positions": s.n_ctx,
                "reorder_and_upcast_attn": crfm, "resid_pdrop": 0.1, "scale_attn_by_inverse_layer_idx": crfm,
                "scale_attn_weights": true, "vocab_size": s.vocab
            }),
        );
        if crfm {
            self.put(Kind::Model, repo, "pytorch_model.bin", |p| write_pth(p, "archive", &gpt2_tensors(s, true), seed));
        } else {
            self.put(Kind::Model, repo, "model.safetensors", |p| write_safetensors(p, &gpt2_tensors(s, false), seed));
        }
        self.put_copy(Kind::Model, repo, "tokenizer.json", &fixture("gpt2-tokenizer/tokenizer.json"));
    }

    /// A NeelNanda TransformerLens checkpoint (`config.json` in TL's fields, `model_final.pth`) whose
    /// config names the tokenizer repository, placed too (a 512-token BPE: its ids fit any vocabulary).
    pub fn solu(&self, repo: &str, s: Shape, seed: u64) {
        let tokenizer = "NeelNanda/gpt-neox-tokenizer-digits";
        self.put_json(
            Kind::Model,
            repo,
            "config.json",
            &json!({
                "n_layers": s.layers, "d_model": s.d_model, "d_mlp": s.d_mlp, "d_head": s.d_model / s.heads,
                "n_heads": s.heads, "n_ctx": s.n_ctx, "d_vocab": s.vocab, "act_fn": "solu_ln",
                "normalization": "LN", "tokenizer_name": tokenizer, "shortformer_pos": false, "attn_only": false,
                "ln_eps": 1e-5, "dataset_name": "c4_code", "seed": seed
            }),
        );
        self.put(Kind::Model, repo, "model_final.pth", |p| write_pth(p, "model_final", &solu_tensors(s), seed));
        self.put_copy(Kind::Model, tokenizer, "tokenizer.json", &fixture("tiny-tokenizer/tokenizer.json"));
    }

    /// A dataset repository with one Parquet file `data/train-00000-of-00001.parquet`.
    pub fn dataset(&self, repo: &str, mut df: DataFrame) {
        self.put(Kind::Dataset, repo, "data/train-00000-of-00001.parquet", |p| {
            let f = std::fs::File::create(p).unwrap();
            ParquetWriter::new(f).finish(&mut df).unwrap();
        });
    }

    /// `NeelNanda/pile-10k`'s layout: `text`, and `meta` a struct with `pile_set_name`; documents from
    /// the shipped English text, subsets in turn.
    pub fn pile(&self, repo: &str, docs: usize) {
        let texts = shipped_texts("english.jsonl", docs);
        let subsets = ["Pile-CC", "Github", "ArXiv", "Wikipedia (en)", "StackExchange", "PubMed Abstracts"];
        let names: Vec<&str> = (0..texts.len()).map(|i| subsets[i % subsets.len()]).collect();
        let subset = Series::new("pile_set_name".into(), names);
        let meta = StructChunked::from_series("meta".into(), texts.len(), [subset].iter()).unwrap().into_series();
        let df = DataFrame::new_infer_height(vec![Column::new("text".into(), texts), meta.into_column()]).unwrap();
        self.dataset(repo, df);
    }

    /// `NeelNanda/c4-10k`'s layout: `text`, `timestamp`, `url`.
    pub fn c4(&self, repo: &str, docs: usize) {
        let texts = shipped_texts("english.jsonl", docs);
        let n = texts.len();
        let df = DataFrame::new_infer_height(vec![
            Column::new("text".into(), texts),
            Column::new("timestamp".into(), vec!["2019-04-25T12:57:54Z"; n]),
            Column::new("url".into(), (0..n).map(|i| format!("https://example.com/{i}")).collect::<Vec<_>>()),
        ])
        .unwrap();
        self.dataset(repo, df);
    }

    /// `NeelNanda/code-10k`'s layout: `text`, `meta` (a struct with the repository and path); the
    /// documents are this crate's Rust sources.
    pub fn code(&self, repo: &str, docs: usize) {
        let mut files: Vec<PathBuf> =
            glob::glob(&format!("{}/src/**/*.rs", repo_root())).unwrap().filter_map(|f| f.ok()).collect();
        files.sort();
        files.truncate(docs);
        let texts: Vec<String> = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
        let paths: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        let n = texts.len();
        let repo_name = Series::new("repo_name".into(), vec!["lantern"; n]);
        let path = Series::new("path".into(), paths);
        let meta = StructChunked::from_series("meta".into(), n, [repo_name, path].iter()).unwrap().into_series();
        let df = DataFrame::new_infer_height(vec![Column::new("text".into(), texts), meta.into_column()]).unwrap();
        self.dataset(repo, df);
    }
}

fn repo_root() -> String {
    repo().display().to_string()
}

/// The first `n` documents of a shipped JSONL file.
fn shipped_texts(file: &str, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("experiments/data").join(file)).unwrap();
    text.lines()
        .take(n)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .collect()
}
