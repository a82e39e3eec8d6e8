//! Shapes of well-known hub models, so experiment files can be validated (hooks, layers, neurons)
//! on a machine where the model has not been downloaded yet.

use super::config::{Activation, Family, ModelConfig};

/// (repository, family, layers, d_model, heads, d_mlp, vocab, context, crfm attention scaling)
const KNOWN: &[(&str, Family, usize, usize, usize, usize, usize, usize, bool)] = &[
    ("gpt2", Family::Gpt2, 12, 768, 12, 3072, 50257, 1024, false),
    ("gpt2-medium", Family::Gpt2, 24, 1024, 16, 4096, 50257, 1024, false),
    ("gpt2-large", Family::Gpt2, 36, 1280, 20, 5120, 50257, 1024, false),
    ("gpt2-xl", Family::Gpt2, 48, 1600, 25, 6400, 50257, 1024, false),
    ("distilgpt2", Family::Gpt2, 6, 768, 12, 3072, 50257, 1024, false),
    ("stanford-crfm/alias-gpt2-small-x21", Family::Gpt2, 12, 768, 12, 3072, 50257, 1024, true),
    ("stanford-crfm/battlestar-gpt2-small-x49", Family::Gpt2, 12, 768, 12, 3072, 50257, 1024, true),
    ("stanford-crfm/caprica-gpt2-small-x81", Family::Gpt2, 12, 768, 12, 3072, 50257, 1024, true),
    ("stanford-crfm/darkmatter-gpt2-small-x343", Family::Gpt2, 12, 768, 12, 3072, 50257, 1024, true),
    ("stanford-crfm/expanse-gpt2-small-x777", Family::Gpt2, 12, 768, 12, 3072, 50257, 1024, true),
    ("stanford-crfm/arwen-gpt2-medium-x21", Family::Gpt2, 24, 1024, 16, 4096, 50257, 1024, true),
    ("stanford-crfm/beren-gpt2-medium-x49", Family::Gpt2, 24, 1024, 16, 4096, 50257, 1024, true),
    ("stanford-crfm/celebrimbor-gpt2-medium-x81", Family::Gpt2, 24, 1024, 16, 4096, 50257, 1024, true),
    ("stanford-crfm/durin-gpt2-medium-x343", Family::Gpt2, 24, 1024, 16, 4096, 50257, 1024, true),
    ("stanford-crfm/eowyn-gpt2-medium-x777", Family::Gpt2, 24, 1024, 16, 4096, 50257, 1024, true),
    ("EleutherAI/pythia-70m", Family::NeoX, 6, 512, 8, 2048, 50304, 2048, false),
    ("EleutherAI/pythia-70m-v0", Family::NeoX, 6, 512, 8, 2048, 50304, 2048, false),
    ("EleutherAI/pythia-160m", Family::NeoX, 12, 768, 12, 3072, 50304, 2048, false),
    ("EleutherAI/pythia-160m-seed1", Family::NeoX, 12, 768, 12, 3072, 50304, 2048, false),
    ("EleutherAI/pythia-160m-seed2", Family::NeoX, 12, 768, 12, 3072, 50304, 2048, false),
    ("EleutherAI/pythia-160m-seed3", Family::NeoX, 12, 768, 12, 3072, 50304, 2048, false),
    ("EleutherAI/pythia-410m", Family::NeoX, 24, 1024, 16, 4096, 50304, 2048, false),
    ("NeelNanda/SoLU_1L512W_C4_Code", Family::Solu, 1, 512, 8, 2048, 48262, 1024, false),
    ("NeelNanda/SoLU_2L512W_C4_Code", Family::Solu, 2, 512, 8, 2048, 48262, 1024, false),
];

/// The configuration of a known repository, if lantern knows its shape.
pub fn known_config(repo: &str) -> Option<ModelConfig> {
    let &(_, family, n_layers, d_model, n_heads, d_mlp, d_vocab, n_ctx, crfm) = KNOWN.iter().find(|k| k.0 == repo)?;
    let neox = family == Family::NeoX;
    let mut cfg = ModelConfig::gpt2(n_layers, d_model, n_heads, d_mlp, d_vocab, n_ctx);
    cfg.family = family;
    cfg.act = match family {
        Family::Gpt2 => Activation::GeluNew,
        Family::NeoX => Activation::Gelu,
        Family::Solu => Activation::SoluLn,
    };
    cfg.rotary_dim = if neox { d_model / n_heads / 4 } else { 0 };
    cfg.parallel_attn_mlp = neox;
    cfg.scale_attn_by_inverse_layer_idx = crfm;
    let special = if neox { 0 } else { 50256 };
    (cfg.bos_token_id, cfg.eos_token_id) = (special, special);
    Some(cfg)
}

/// The configuration of a model named on the command line (folder, hub name or alias) without
/// loading weights: from its files when they are here, else from the known shapes.
pub fn config_of(model: &str) -> anyhow::Result<ModelConfig> {
    match super::ModelFiles::from_name(model, false) {
        Ok(f) => ModelConfig::from_file(&f.config),
        Err(e) if !std::path::Path::new(model).is_dir() => known_config(super::source::resolve_alias(model)).ok_or(e),
        Err(e) => Err(e),
    }
}
