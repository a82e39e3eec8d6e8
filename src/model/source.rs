//! Where a model's files are: a local folder, or a hub repository in the standard Hugging Face
//! cache (downloaded with hf-hub when online). Also TransformerLens's model aliases.

use anyhow::{anyhow, bail, Context, Result};
use hf_hub::{Cache, Repo, RepoType};
use std::path::{Path, PathBuf};

/// TransformerLens aliases → hub repositories.
pub const ALIASES: &[(&str, &str)] = &[
    ("gpt2-small", "gpt2"),
    ("gpt2", "gpt2"),
    ("gpt2-medium", "gpt2-medium"),
    ("gpt2-large", "gpt2-large"),
    ("gpt2-xl", "gpt2-xl"),
    ("distilgpt2", "distilgpt2"),
    ("stanford-gpt2-small-a", "stanford-crfm/alias-gpt2-small-x21"),
    ("stanford-gpt2-small-b", "stanford-crfm/battlestar-gpt2-small-x49"),
    ("stanford-gpt2-small-c", "stanford-crfm/caprica-gpt2-small-x81"),
    ("stanford-gpt2-small-d", "stanford-crfm/darkmatter-gpt2-small-x343"),
    ("stanford-gpt2-small-e", "stanford-crfm/expanse-gpt2-small-x777"),
    ("stanford-gpt2-medium-a", "stanford-crfm/arwen-gpt2-medium-x21"),
    ("stanford-gpt2-medium-b", "stanford-crfm/beren-gpt2-medium-x49"),
    ("stanford-gpt2-medium-c", "stanford-crfm/celebrimbor-gpt2-medium-x81"),
    ("stanford-gpt2-medium-d", "stanford-crfm/durin-gpt2-medium-x343"),
    ("stanford-gpt2-medium-e", "stanford-crfm/eowyn-gpt2-medium-x777"),
    ("pythia-14m", "EleutherAI/pythia-14m"),
    ("pythia-31m", "EleutherAI/pythia-31m"),
    ("pythia-70m", "EleutherAI/pythia-70m"),
    ("pythia-160m", "EleutherAI/pythia-160m"),
    ("pythia-410m", "EleutherAI/pythia-410m"),
    ("pythia-1b", "EleutherAI/pythia-1b"),
    ("pythia-1.4b", "EleutherAI/pythia-1.4b"),
    ("pythia-2.8b", "EleutherAI/pythia-2.8b"),
    ("pythia-6.9b", "EleutherAI/pythia-6.9b"),
    ("pythia-12b", "EleutherAI/pythia-12b"),
    ("pythia-70m-deduped", "EleutherAI/pythia-70m-deduped"),
    ("pythia-160m-deduped", "EleutherAI/pythia-160m-deduped"),
    ("pythia-410m-deduped", "EleutherAI/pythia-410m-deduped"),
    ("pythia-70m-v0", "EleutherAI/pythia-70m-v0"),
    ("pythia-160m-v0", "EleutherAI/pythia-160m-v0"),
    ("pythia-160m-seed1", "EleutherAI/pythia-160m-seed1"),
    ("pythia-160m-seed2", "EleutherAI/pythia-160m-seed2"),
    ("pythia-160m-seed3", "EleutherAI/pythia-160m-seed3"),
    ("solu-1l", "NeelNanda/SoLU_1L512W_C4_Code"),
    ("solu-2l", "NeelNanda/SoLU_2L512W_C4_Code"),
    ("solu-3l", "NeelNanda/SoLU_3L512W_C4_Code"),
    ("solu-4l", "NeelNanda/SoLU_4L512W_C4_Code"),
    ("solu-6l", "NeelNanda/SoLU_6L768W_C4_Code"),
    ("solu-8l", "NeelNanda/SoLU_8L1024W_C4_Code"),
    ("solu-10l", "NeelNanda/SoLU_10L1280W_C4_Code"),
    ("solu-12l", "NeelNanda/SoLU_12L1536W_C4_Code"),
    ("gelu-1l", "NeelNanda/GELU_1L512W_C4_Code"),
    ("gelu-2l", "NeelNanda/GELU_2L512W_C4_Code"),
    ("gelu-3l", "NeelNanda/GELU_3L512W_C4_Code"),
    ("gelu-4l", "NeelNanda/GELU_4L512W_C4_Code"),
];

/// Resolve a TL alias to its hub repository (other names pass through).
pub fn resolve_alias(name: &str) -> &str {
    ALIASES.iter().find(|a| a.0 == name).map(|a| a.1).unwrap_or(name)
}

/// How checkpoint tensors are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    Safetensors,
    /// PyTorch zip pickle (`pytorch_model.bin`, NeelNanda `model_final.pth`).
    Pickle,
}

/// The files of one model on disk.
#[derive(Clone, Debug)]
pub struct ModelFiles {
    /// Repository or folder, for messages.
    pub origin: String,
    pub config: PathBuf,
    pub weights: Vec<PathBuf>,
    pub format: WeightFormat,
    pub tokenizer: Option<PathBuf>,
}

/// Weight files tried in order, in a folder or a hub repository.
const WEIGHT_FILES: &[&str] =
    &["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "model_final.pth"];

/// The Hugging Face hub cache: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache() -> Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(p) => Cache::new(PathBuf::from(p)),
        None => Cache::from_env(),
    }
}

/// `HF_HUB_OFFLINE=1` (or `true`): nothing is downloaded.
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// A file of a hub repository: from the cache, else downloaded (unless `download` is false or
/// `HF_HUB_OFFLINE=1`). `Ok(None)` means the file is not to be had.
pub fn hub_file(repo: &Repo, file: &str, download: bool) -> Result<Option<PathBuf>> {
    hub_file_in(&hub_cache(), repo, file, download)
}

/// The cached snapshot folder of a repository at its revision: `refs/<revision>` names the commit
/// whose files are in `snapshots/<commit>/` (a revision that is itself a commit names its folder
/// directly), whatever files it holds.
pub fn snapshot(cache: &Cache, repo: &Repo) -> Option<PathBuf> {
    let root = cache.path().join(repo.folder_name());
    let revision = repo.revision();
    let commit = match std::fs::read_to_string(root.join("refs").join(revision)) {
        Ok(c) => c.trim().to_string(),
        Err(_) => revision.to_string(),
    };
    let dir = root.join("snapshots").join(commit);
    dir.is_dir().then_some(dir)
}

/// `hub_file` with an explicit cache folder.
pub fn hub_file_in(cache: &Cache, repo: &Repo, file: &str, download: bool) -> Result<Option<PathBuf>> {
    let cache = cache.clone();
    if let Some(p) = snapshot(&cache, repo).map(|d| d.join(file)).filter(|p| p.exists()) {
        return Ok(Some(p));
    }
    if offline() || !download {
        return Ok(None);
    }
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache).with_progress(true).build()?;
    match api.repo(repo.clone()).get(file) {
        Ok(p) => Ok(Some(p)),
        Err(hf_hub::api::sync::ApiError::RequestError(e)) if is_not_found(&e) => Ok(None),
        Err(e) => Err(anyhow!("{e}")),
    }
}

fn is_not_found(e: &impl std::fmt::Display) -> bool {
    e.to_string().contains("404")
}

/// How to place a repository by hand, for error messages.
pub fn placement_help(cache: &Cache, repo_id: &str, kind: RepoType, files: &str) -> String {
    let folder = Repo::new(repo_id.to_string(), kind).folder_name();
    format!(
        "place it in the Hugging Face cache by hand: {}/{folder}/snapshots/<commit>/ holding {files}, \
         and write <commit> into {}/{folder}/refs/main (or run once online: huggingface-cli download {repo_id}); \
         or point `path =` at a folder with the same files",
        cache.path().display(),
        cache.path().display()
    )
}

impl ModelFiles {
    /// Locate a model by folder path.
    pub fn from_folder(dir: &Path) -> Result<ModelFiles> {
        if !dir.is_dir() {
            bail!("model folder {} does not exist", dir.display());
        }
        let config = dir.join("config.json");
        if !config.is_file() {
            bail!("model folder {} has no config.json", dir.display());
        }
        let found = WEIGHT_FILES.iter().map(|f| dir.join(f)).find(|p| p.is_file());
        let Some(weights) = found else {
            bail!("model folder {} has none of {}", dir.display(), WEIGHT_FILES.join(", "));
        };
        let tok = dir.join("tokenizer.json");
        let (weights, format) = weight_list(&weights, |f| Ok(Some(dir.join(f))))?;
        let tokenizer = match tok.is_file() {
            true => Some(tok),
            false => named_tokenizer(&hub_cache(), &config, false).unwrap_or(None),
        };
        Ok(ModelFiles { origin: dir.display().to_string(), config, weights, format, tokenizer })
    }

    /// Locate a model by hub name or TL alias, through the cache (downloading what is missing).
    /// A model named on the command line: a folder, else a hub name or TL alias (downloaded when
    /// `download` and online).
    pub fn from_name(name: &str, download: bool) -> Result<ModelFiles> {
        let dir = Path::new(name);
        match (dir.is_dir(), download) {
            (true, _) => Self::from_folder(dir),
            (false, true) => Self::from_hub(name, None),
            (false, false) => Self::from_hub_offline(name, None),
        }
    }

    pub fn from_hub(name: &str, revision: Option<&str>) -> Result<ModelFiles> {
        Self::from_cache(&hub_cache(), name, revision, true)
    }

    /// Locate a model in the hub cache only.
    pub fn from_hub_offline(name: &str, revision: Option<&str>) -> Result<ModelFiles> {
        Self::from_cache(&hub_cache(), name, revision, false)
    }

    /// Locate a model through a given hub cache folder, downloading into it when `download`.
    pub fn from_cache(cache: &Cache, name: &str, revision: Option<&str>, download: bool) -> Result<ModelFiles> {
        let repo_id = resolve_alias(name);
        let repo = match revision {
            Some(r) => Repo::with_revision(repo_id.to_string(), RepoType::Model, r.to_string()),
            None => Repo::model(repo_id.to_string()),
        };
        let missing = |file: &str| {
            anyhow!(
                "model '{repo_id}' is not in the Hugging Face cache (missing {file}){}; {}",
                if offline() {
                    " and HF_HUB_OFFLINE=1"
                } else if download {
                    " and could not be downloaded"
                } else {
                    ""
                },
                placement_help(cache, repo_id, RepoType::Model, "config.json, model.safetensors and tokenizer.json")
            )
        };
        let config =
            hub_file_in(cache, &repo, "config.json", download).map_err(|e| missing("config.json").context(e))?;
        let config = config.ok_or_else(|| missing("config.json"))?;
        let mut weights = None;
        for f in WEIGHT_FILES {
            if let Some(p) = hub_file_in(cache, &repo, f, download)? {
                weights = Some(p);
                break;
            }
        }
        let weights = weights.ok_or_else(|| missing("model.safetensors"))?;
        let (weights, format) = weight_list(&weights, |f| hub_file_in(cache, &repo, f, download))?;
        let tokenizer = match hub_file_in(cache, &repo, "tokenizer.json", download).unwrap_or(None) {
            Some(t) => Some(t),
            None => named_tokenizer(cache, &config, download)?,
        };
        Ok(ModelFiles { origin: repo_id.to_string(), config, weights, format, tokenizer })
    }
}

/// The tokenizer of the repository a TL-style config names (`tokenizer_name`, as the NeelNanda
/// SoLU / GELU models do), through the cache.
fn named_tokenizer(cache: &Cache, config: &Path, download: bool) -> Result<Option<PathBuf>> {
    let text = std::fs::read_to_string(config)?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", config.display()))?;
    let Some(name) = v.get("tokenizer_name").and_then(|n| n.as_str()) else { return Ok(None) };
    let found = hub_file_in(cache, &Repo::model(name.to_string()), "tokenizer.json", download)?;
    if found.is_none() && download {
        bail!(
            "the tokenizer repository '{name}' named by {} is not in the cache; {}",
            config.display(),
            placement_help(cache, name, RepoType::Model, "tokenizer.json")
        );
    }
    Ok(found)
}

/// Expand a sharded index into its shard files; name the format.
fn weight_list(first: &Path, fetch: impl Fn(&str) -> Result<Option<PathBuf>>) -> Result<(Vec<PathBuf>, WeightFormat)> {
    let name = first.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".index.json") {
        let text = std::fs::read_to_string(first)?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", first.display()))?;
        let map = v.get("weight_map").and_then(|m| m.as_object()).context("index has no weight_map")?;
        let mut shards: Vec<&str> = map.values().filter_map(|s| s.as_str()).collect();
        shards.sort();
        shards.dedup();
        let mut out = Vec::new();
        for s in shards {
            out.push(fetch(s)?.with_context(|| format!("shard {s} listed in {} is missing", first.display()))?);
        }
        return Ok((out, WeightFormat::Safetensors));
    }
    let format = if name.ends_with(".safetensors") { WeightFormat::Safetensors } else { WeightFormat::Pickle };
    Ok((vec![first.to_path_buf()], format))
}
