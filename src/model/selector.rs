//! Hook selectors, one grammar for experiment files and the command line: a TransformerLens name
//! (`blocks.3.mlp.hook_post`), an alias with a layer (`post.3`, `post3`), a layer-less name for
//! every layer (`mlp.hook_post`, `post`), or a glob over TL names (`blocks.*.attn.hook_z`; `*`
//! alone is every hook TL fires by default; a glob selects an optional hook such as
//! `attn.hook_result` only when it spells that hook's name).

use super::config::{Family, ModelConfig};
use super::hooks::{all_hooks, fired_by_default, parse_site, site_exists, BlockSite, HookPoint, BLOCK_SITES};

/// Why a selector selects nothing.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SelectError {
    #[error("layer {layer} out of range in '{selector}': the model has {layers} layers (0..={})", layers - 1)]
    LayerOutOfRange { selector: String, layer: usize, layers: usize },
    #[error("hook '{selector}' does not exist in {family:?} models")]
    NotInFamily { selector: String, family: Family },
    #[error("bad hook pattern '{selector}': {reason}")]
    BadPattern { selector: String, reason: String },
    #[error("unknown hook '{selector}'")]
    Unknown { selector: String, nearest: Option<String> },
    #[error("no hook matches '{selector}'")]
    NoMatch { selector: String },
}

impl SelectError {
    /// The nearest valid name, when the selector looks like a misspelling.
    pub fn nearest(&self) -> Option<&str> {
        match self {
            SelectError::Unknown { nearest, .. } => nearest.as_deref(),
            _ => None,
        }
    }
}

/// The hook points one selector names, in forward order.
pub fn select(cfg: &ModelConfig, selector: &str) -> Result<Vec<HookPoint>, SelectError> {
    if let Some(p) = HookPoint::parse(selector) {
        if p.exists_in(cfg) {
            return Ok(vec![p]);
        }
        return Err(match p.layer() {
            Some(layer) if layer >= cfg.n_layers => {
                SelectError::LayerOutOfRange { selector: selector.into(), layer, layers: cfg.n_layers }
            }
            _ => SelectError::NotInFamily { selector: selector.into(), family: cfg.family },
        });
    }
    if let Some(site) = parse_site(selector) {
        let all: Vec<HookPoint> =
            (0..cfg.n_layers).map(|l| HookPoint::Block(l, site)).filter(|p| p.exists_in(cfg)).collect();
        if all.is_empty() {
            return Err(SelectError::NotInFamily { selector: selector.into(), family: cfg.family });
        }
        return Ok(all);
    }
    if selector == "*" {
        return Ok(all_hooks(cfg, false));
    }
    if !selector.contains(['*', '?', '[']) {
        return Err(SelectError::Unknown { selector: selector.into(), nearest: nearest_name(cfg, selector) });
    }
    let glob = glob::Pattern::new(selector)
        .map_err(|e| SelectError::BadPattern { selector: selector.into(), reason: e.to_string() })?;
    let spelled = |s: BlockSite| selector.contains(s.tl_suffix());
    let found: Vec<HookPoint> = all_hooks(cfg, true)
        .into_iter()
        .filter(|h| h.site().is_none_or(|s| fired_by_default(s) || spelled(s)))
        .filter(|h| glob.matches(&h.to_string()))
        .collect();
    if found.is_empty() {
        return Err(SelectError::NoMatch { selector: selector.into() });
    }
    Ok(found)
}

/// Every hook point several selectors name, sorted, each once.
pub fn select_all<S: AsRef<str>>(cfg: &ModelConfig, selectors: &[S]) -> Result<Vec<HookPoint>, SelectError> {
    let mut out = Vec::new();
    for s in selectors {
        out.extend(select(cfg, s.as_ref())?);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Every accepted spelling of a model's hooks, for "did you mean" suggestions.
pub fn known_names(cfg: &ModelConfig) -> Vec<String> {
    let mut names: Vec<String> = all_hooks(cfg, true).iter().map(|h| h.to_string()).collect();
    for &(s, suffix, alias) in BLOCK_SITES {
        if site_exists(s, cfg) {
            names.push(suffix.to_string());
            names.push(alias.to_string());
        }
    }
    names
}

fn nearest_name(cfg: &ModelConfig, selector: &str) -> Option<String> {
    let names = known_names(cfg);
    crate::util::nearest(selector, names.iter().map(|s| s.as_str())).map(str::to_string)
}
