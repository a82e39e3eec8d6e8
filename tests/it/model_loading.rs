//! Loading models: through the hub code path from a cache laid out like Hugging Face's, errors for
//! missing and unsupported models, the tokenizer's single-token lookup.

use crate::common::{assert_close, fixture, golden, load};
use candle_core::Device;
use lantern::model::{Model, ModelFiles, Processing, Tokenizer};

/// Place files into a HF cache folder as repository `repo` at a commit, as symlinks to blobs like
/// the real cache.
fn place(cache: &std::path::Path, repo: &str, files: &[(&str, std::path::PathBuf)]) {
    let repo = cache.join(format!("models--{}", repo.replace('/', "--")));
    let commit = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    for (name, from) in files {
        let blob = repo.join("blobs").join(format!("blob-{name}"));
        std::fs::copy(from, &blob).unwrap();
        std::os::unix::fs::symlink(&blob, snap.join(name)).unwrap();
    }
}

/// A temporary HF cache holding `org/tiny` (config and safetensors of a fixture).
fn fake_cache(from: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    place(
        dir.path(),
        "org/tiny",
        &[
            ("config.json", fixture(from).join("config.json")),
            ("model.safetensors", fixture(from).join("model.safetensors")),
        ],
    );
    dir
}

#[test]
fn a_model_in_the_hub_cache_loads_offline_and_matches_the_folder() {
    let cache_dir = fake_cache("pythia-tiny");
    let cache = hf_hub::Cache::new(cache_dir.path().to_path_buf());
    let files = ModelFiles::from_cache(&cache, "org/tiny", None, false).unwrap();
    let from_hub = Model::load(&files, Processing::DEFAULT, &Device::Cpu).unwrap();
    let from_folder = load("pythia-tiny", Processing::DEFAULT);
    let g = golden("pythia-tiny", "golden_processed.safetensors");
    assert_close(
        "hub vs folder",
        &from_hub.logits(&g["tokens"]).unwrap(),
        &from_folder.logits(&g["tokens"]).unwrap(),
        0.0,
    );
}

#[test]
fn a_missing_hub_model_says_how_to_place_it() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = hf_hub::Cache::new(cache_dir.path().to_path_buf());
    let err = ModelFiles::from_cache(&cache, "pythia-70m", None, false).unwrap_err().to_string();
    assert!(err.contains("EleutherAI/pythia-70m"), "{err}");
    assert!(err.contains("config.json"), "{err}");
    assert!(err.contains("models--EleutherAI--pythia-70m/snapshots"), "{err}");
}

#[test]
fn an_unsupported_architecture_names_the_supported_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}"#)
        .unwrap();
    std::fs::write(dir.path().join("model.safetensors"), b"").unwrap();
    let files = ModelFiles::from_folder(dir.path()).unwrap();
    let err = format!("{:#}", Model::load(&files, Processing::NONE, &Device::Cpu).err().unwrap());
    assert!(
        err.contains("LlamaForCausalLM") && err.contains("GPT2LMHeadModel") && err.contains("GPTNeoXForCausalLM"),
        "{err}"
    );
}

#[test]
fn a_missing_folder_is_a_clear_error() {
    let err = ModelFiles::from_folder(std::path::Path::new("/nonexistent/model")).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/model") && err.contains("does not exist"), "{err}");
}

#[test]
fn single_token_lookup_explains_multi_token_strings() {
    let tok = Tokenizer::from_file(&fixture("gpt2-tokenizer/tokenizer.json"), 50256, 50256).unwrap();
    assert_eq!(tok.single_token(" an").unwrap(), 281);
    let err = tok.single_token(" apple tree").unwrap_err().to_string();
    assert_eq!(err, "' apple tree' is 2 tokens: ' apple', ' tree'");
    assert_eq!(tok.encode("Hello", true).unwrap(), vec![50256, 15496]);
    assert_eq!(tok.str_tokens(&[15496, 995]), vec!["Hello", " world"]);
}

#[test]
fn trace_writes_tokens_logits_loss_and_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trace.safetensors");
    let tokens = "435,87,71,192,251,350,348,257,445,128,345,45;40,361,348,219,292,188,493,495,298,314,425,228";
    let model = fixture("gpt2-tiny").display().to_string();
    trace(&model, tokens, &["blocks.1.mlp.*", "blocks.0.attn.hook_result"], "default", &out);
    let t = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    let g = golden("gpt2-tiny", "golden_processed.safetensors");
    let opt = golden("gpt2-tiny", "golden_processed_opt.safetensors");
    assert_close("logits", &t["logits"], &g["logits"], 1e-4);
    assert_close("loss", &t["loss_per_token"], &g["loss_per_token"], 1e-4);
    assert_close("post", &t["blocks.1.mlp.hook_post"], &g["blocks.1.mlp.hook_post"], 1e-4);
    assert_close("result", &t["blocks.0.attn.hook_result"], &opt["blocks.0.attn.hook_result"], 1e-4);
    assert!(t.contains_key("blocks.1.mlp.hook_pre") && !t.contains_key("blocks.0.mlp.hook_pre"));
    assert_eq!(t["tokens"].dims(), &[2, 12]);
}

#[test]
fn a_solu_checkpoint_loads_by_alias_with_the_tokenizer_its_config_names() {
    // `solu-2l` resolves to NeelNanda/SoLU_2L512W_C4_Code; its repository holds a TL config and a
    // PyTorch pickle, and its config names the repository of its tokenizer.
    let dir = tempfile::tempdir().unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("solu-tiny").join("config.json")).unwrap()).unwrap();
    config["tokenizer_name"] = "org/solu-tokenizer".into();
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let cache_dir = dir.path().join("hub");
    place(
        &cache_dir,
        "NeelNanda/SoLU_2L512W_C4_Code",
        &[("config.json", config_path), ("model_final.pth", fixture("solu-tiny").join("model_final.pth"))],
    );
    place(&cache_dir, "org/solu-tokenizer", &[("tokenizer.json", fixture("tiny-tokenizer/tokenizer.json"))]);
    let cache = hf_hub::Cache::new(cache_dir);
    let files = ModelFiles::from_cache(&cache, "solu-2l", None, false).unwrap();
    assert!(files.weights[0].ends_with("model_final.pth"), "{:?}", files.weights);
    assert!(
        files.tokenizer.as_ref().is_some_and(|t| t.to_string_lossy().contains("models--org--solu-tokenizer")),
        "{:?}",
        files.tokenizer
    );
    for processing in [Processing::NONE, Processing::DEFAULT] {
        let pickle = Model::load(&files, processing, &Device::Cpu).unwrap();
        let safetensors = load("solu-tiny", processing);
        // The pickle and the safetensors file hold the same weights: every parameter is equal.
        for name in pickle.weights.param_names() {
            assert_close(&name, &pickle.param(&name).unwrap(), &safetensors.param(&name).unwrap(), 0.0);
        }
        let g = golden(
            "solu-tiny",
            if processing == Processing::NONE { "golden_raw.safetensors" } else { "golden_processed.safetensors" },
        );
        assert_close("solu logits", &pickle.logits(&g["tokens"]).unwrap(), &g["logits"], 1e-4);
    }
    let tok = Model::load(&files, Processing::NONE, &Device::Cpu).unwrap();
    assert!(tok.tokenizer().is_ok());
}

#[test]
fn trace_works_on_a_solu_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trace.safetensors");
    let g = golden("solu-tiny", "golden_raw.safetensors");
    let rows: Vec<Vec<u32>> = g["tokens"].to_dtype(candle_core::DType::U32).unwrap().to_vec2().unwrap();
    let text = rows
        .iter()
        .map(|r| r.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(","))
        .collect::<Vec<_>>()
        .join(";");
    let model = fixture("solu-tiny").display().to_string();
    trace(&model, &text, &["blocks.0.mlp.*"], "none", &out);
    let t = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    assert_close("logits", &t["logits"], &g["logits"], 1e-4);
    for h in ["hook_pre", "hook_mid", "ln.hook_scale", "ln.hook_normalized", "hook_post"] {
        let name = format!("blocks.0.mlp.{h}");
        assert_close(&name, &t[&name], &g[&name], 1e-4);
    }
}

/// `lantern trace MODEL --tokens … --hooks … --processing … --out F`, which must succeed.
fn trace(model: &str, tokens: &str, hooks: &[&str], processing: &str, out: &std::path::Path) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lantern"))
        .args(["trace", model, "--tokens", tokens, "--processing", processing, "--hooks"])
        .args(hooks)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_tl_checkpoint_with_a_bool_mask_buffer_loads_quietly() {
    // NeelNanda's `model_final.pth` holds `attn.mask` as a BoolStorage buffer, which lantern does
    // not read: loading it prints nothing, and the model runs from the hub cache offline.
    use crate::hub::{HubCache, Shape};
    let hub = HubCache::new();
    let shape = Shape { layers: 1, d_model: 64, heads: 4, d_mlp: 256, vocab: 512, n_ctx: 64 };
    hub.solu("NeelNanda/SoLU_1L512W_C4_Code", shape, 3);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trace.safetensors");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lantern"))
        .args(["trace", "solu-1l", "--text", "Hello world", "--hooks", "blocks.0.mlp.hook_post", "--out"])
        .arg(&out)
        .env("HF_HUB_CACHE", hub.path())
        .env("HF_HUB_OFFLINE", "1")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(!stderr.contains("skipping") && !stderr.contains("BoolStorage"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "only the summary line: {stderr}");
    let t = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    assert_eq!(t["blocks.0.mlp.hook_post"].dims()[2], 256);
    // The mask is known to be there, and asking for it says why it cannot be read.
    let files = ModelFiles::from_cache(&hf_hub::Cache::new(hub.path().to_path_buf()), "solu-1l", None, false).unwrap();
    let pth = lantern::model::pickle::PthFile::open(&files.weights[0]).unwrap();
    let err = pth.get("blocks.0.attn.mask", &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("blocks.0.attn.mask") && err.contains("BoolStorage"), "{err}");
    assert!(pth.get("blocks.0.attn.W_Q", &Device::Cpu).unwrap().is_some());
}

#[test]
fn a_stanford_crfm_pickle_with_mask_buffers_loads_from_the_cache() {
    // The CRFM seeds' repositories hold `pytorch_model.bin` (HF names, mask buffers per layer).
    use crate::hub::{HubCache, Shape};
    let hub = HubCache::new();
    let shape = Shape { layers: 2, d_model: 32, heads: 2, d_mlp: 128, vocab: 50257, n_ctx: 32 };
    hub.gpt2("stanford-crfm/alias-gpt2-small-x21", shape, true, 1);
    let cache = hf_hub::Cache::new(hub.path().to_path_buf());
    let files = ModelFiles::from_cache(&cache, "stanford-gpt2-small-a", None, false).unwrap();
    assert!(files.weights[0].ends_with("pytorch_model.bin"), "{:?}", files.weights);
    let m = Model::load(&files, Processing::DEFAULT, &Device::Cpu).unwrap();
    assert!(m.cfg.scale_attn_by_inverse_layer_idx);
    let ids = m.tokenizer().unwrap().encode("The quick brown fox", true).unwrap();
    let n = ids.len();
    let logits = m.logits(&candle_core::Tensor::from_vec(ids, (1, n), &Device::Cpu).unwrap()).unwrap();
    assert_eq!(logits.dims(), &[1, n, 50257]);
}
