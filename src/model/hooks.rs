//! Hook points: TransformerLens names, short aliases, shapes and which hooks each family fires.

use super::config::{Family, ModelConfig};
use std::fmt;

/// A hook site inside a transformer block, in forward order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockSite {
    ResidPre,
    Ln1Scale,
    Ln1Normalized,
    Q,
    K,
    V,
    RotQ,
    RotK,
    AttnScores,
    Pattern,
    Z,
    Result,
    AttnOut,
    ResidMid,
    MlpIn,
    Ln2Scale,
    Ln2Normalized,
    Pre,
    Mid,
    MlpLnScale,
    MlpLnNormalized,
    Post,
    MlpOut,
    ResidPost,
}

/// Every block site with its TL suffix (after `blocks.L.`) and its short alias.
pub const BLOCK_SITES: &[(BlockSite, &str, &str)] = &[
    (BlockSite::ResidPre, "hook_resid_pre", "resid_pre"),
    (BlockSite::Ln1Scale, "ln1.hook_scale", "ln1_scale"),
    (BlockSite::Ln1Normalized, "ln1.hook_normalized", "ln1_normalized"),
    (BlockSite::Q, "attn.hook_q", "q"),
    (BlockSite::K, "attn.hook_k", "k"),
    (BlockSite::V, "attn.hook_v", "v"),
    (BlockSite::RotQ, "attn.hook_rot_q", "rot_q"),
    (BlockSite::RotK, "attn.hook_rot_k", "rot_k"),
    (BlockSite::AttnScores, "attn.hook_attn_scores", "attn_scores"),
    (BlockSite::Pattern, "attn.hook_pattern", "pattern"),
    (BlockSite::Z, "attn.hook_z", "z"),
    (BlockSite::Result, "attn.hook_result", "result"),
    (BlockSite::AttnOut, "hook_attn_out", "attn_out"),
    (BlockSite::ResidMid, "hook_resid_mid", "resid_mid"),
    (BlockSite::MlpIn, "hook_mlp_in", "mlp_in"),
    (BlockSite::Ln2Scale, "ln2.hook_scale", "ln2_scale"),
    (BlockSite::Ln2Normalized, "ln2.hook_normalized", "ln2_normalized"),
    (BlockSite::Pre, "mlp.hook_pre", "pre"),
    (BlockSite::Mid, "mlp.hook_mid", "mid"),
    (BlockSite::MlpLnScale, "mlp.ln.hook_scale", "mlp_ln_scale"),
    (BlockSite::MlpLnNormalized, "mlp.ln.hook_normalized", "mlp_ln_normalized"),
    (BlockSite::Post, "mlp.hook_post", "post"),
    (BlockSite::MlpOut, "hook_mlp_out", "mlp_out"),
    (BlockSite::ResidPost, "hook_resid_post", "resid_post"),
];

/// Extra aliases TransformerLens's `get_act_name` accepts.
const ALIAS_SYNONYMS: &[(&str, &str)] = &[
    ("attn", "pattern"),
    ("attn_logits", "attn_scores"),
    ("key", "k"),
    ("query", "q"),
    ("value", "v"),
    ("mlp_pre", "pre"),
    ("mlp_mid", "mid"),
    ("mlp_post", "post"),
];

impl BlockSite {
    pub fn tl_suffix(self) -> &'static str {
        BLOCK_SITES.iter().find(|s| s.0 == self).map(|s| s.1).unwrap_or("?")
    }
    pub fn alias(self) -> &'static str {
        BLOCK_SITES.iter().find(|s| s.0 == self).map(|s| s.2).unwrap_or("?")
    }
    /// Whether the last axis of this hook is the MLP neuron axis.
    pub fn is_neuron_site(self) -> bool {
        matches!(self, BlockSite::Pre | BlockSite::Mid | BlockSite::Post | BlockSite::MlpLnNormalized)
    }
    /// Whether this hook has a head axis (as axis 2, or axis 1 for scores/pattern).
    pub fn has_heads(self) -> bool {
        matches!(
            self,
            BlockSite::Q
                | BlockSite::K
                | BlockSite::V
                | BlockSite::RotQ
                | BlockSite::RotK
                | BlockSite::Z
                | BlockSite::Result
                | BlockSite::AttnScores
                | BlockSite::Pattern
        )
    }
    fn from_suffix(s: &str) -> Option<BlockSite> {
        BLOCK_SITES.iter().find(|x| x.1 == s).map(|x| x.0)
    }
    fn from_alias(s: &str) -> Option<BlockSite> {
        let s = ALIAS_SYNONYMS.iter().find(|x| x.0 == s).map(|x| x.1).unwrap_or(s);
        BLOCK_SITES.iter().find(|x| x.2 == s).map(|x| x.0)
    }
}

/// A hook point of a model: TL's `HookPoint` name as data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    Embed,
    PosEmbed,
    Block(usize, BlockSite),
    LnFinalScale,
    LnFinalNormalized,
}

impl HookPoint {
    pub fn layer(&self) -> Option<usize> {
        match self {
            HookPoint::Block(l, _) => Some(*l),
            _ => None,
        }
    }
    pub fn site(&self) -> Option<BlockSite> {
        match self {
            HookPoint::Block(_, s) => Some(*s),
            _ => None,
        }
    }

    /// Parse a TL name (`blocks.3.mlp.hook_post`), or an alias with a layer
    /// (`post.3`, `resid_pre.0`, TL's `get_act_name` style `post3`).
    pub fn parse(name: &str) -> Option<HookPoint> {
        match name {
            "hook_embed" | "embed" => return Some(HookPoint::Embed),
            "hook_pos_embed" | "pos_embed" => return Some(HookPoint::PosEmbed),
            "ln_final.hook_scale" | "ln_final_scale" => return Some(HookPoint::LnFinalScale),
            "ln_final.hook_normalized" | "ln_final_normalized" => return Some(HookPoint::LnFinalNormalized),
            _ => {}
        }
        if let Some(rest) = name.strip_prefix("blocks.") {
            let (layer, suffix) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            return BlockSite::from_suffix(suffix).map(|s| HookPoint::Block(layer, s));
        }
        if let Some((alias, layer)) = name.rsplit_once('.') {
            let layer: usize = layer.parse().ok()?;
            return BlockSite::from_alias(alias).map(|s| HookPoint::Block(layer, s));
        }
        let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            let (alias, layer) = name.split_at(name.len() - digits);
            let layer: usize = layer.parse().ok()?;
            return BlockSite::from_alias(alias).map(|s| HookPoint::Block(layer, s));
        }
        None
    }

    /// Whether a model of this configuration fires this hook (layers included).
    pub fn exists_in(&self, cfg: &ModelConfig) -> bool {
        match self {
            HookPoint::PosEmbed => cfg.family != Family::NeoX,
            HookPoint::Block(l, s) => *l < cfg.n_layers && site_exists(*s, cfg),
            _ => true,
        }
    }

    /// Width of the hook's per-position vector; `None` for hooks over pairs of positions
    /// (attention scores and pattern), which are not per-neuron data.
    pub fn width(&self, cfg: &ModelConfig) -> Option<usize> {
        match self.site() {
            Some(BlockSite::AttnScores | BlockSite::Pattern) => None,
            _ => Some(self.shape(cfg, 1, 1)[2..].iter().product()),
        }
    }

    /// TL's shape of this hook for a batch of `batch` rows and `pos` positions.
    pub fn shape(&self, cfg: &ModelConfig, batch: usize, pos: usize) -> Vec<usize> {
        let (b, p, d) = (batch, pos, cfg.d_model);
        match self {
            HookPoint::Embed | HookPoint::PosEmbed | HookPoint::LnFinalNormalized => vec![b, p, d],
            HookPoint::LnFinalScale => vec![b, p, 1],
            HookPoint::Block(_, s) => match s {
                BlockSite::Ln1Scale | BlockSite::Ln2Scale | BlockSite::MlpLnScale => vec![b, p, 1],
                BlockSite::Q | BlockSite::K | BlockSite::V | BlockSite::RotQ | BlockSite::RotK | BlockSite::Z => {
                    vec![b, p, cfg.n_heads, cfg.d_head]
                }
                BlockSite::Result => vec![b, p, cfg.n_heads, d],
                BlockSite::AttnScores | BlockSite::Pattern => vec![b, cfg.n_heads, p, p],
                BlockSite::Pre | BlockSite::Mid | BlockSite::MlpLnNormalized | BlockSite::Post => {
                    vec![b, p, cfg.d_mlp]
                }
                _ => vec![b, p, d],
            },
        }
    }
}

/// Whether a block site exists for this configuration.
pub(super) fn site_exists(s: BlockSite, cfg: &ModelConfig) -> bool {
    let neox = cfg.family == Family::NeoX;
    let solu = cfg.family == Family::Solu;
    match s {
        BlockSite::RotQ | BlockSite::RotK => neox,
        BlockSite::ResidMid => !cfg.parallel_attn_mlp,
        BlockSite::Mid | BlockSite::MlpLnScale | BlockSite::MlpLnNormalized => solu,
        _ => true,
    }
}

/// Whether TL fires this hook by default (`hook_result` and `hook_mlp_in` need flags).
pub fn fired_by_default(s: BlockSite) -> bool {
    !matches!(s, BlockSite::Result | BlockSite::MlpIn)
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookPoint::Embed => f.write_str("hook_embed"),
            HookPoint::PosEmbed => f.write_str("hook_pos_embed"),
            HookPoint::LnFinalScale => f.write_str("ln_final.hook_scale"),
            HookPoint::LnFinalNormalized => f.write_str("ln_final.hook_normalized"),
            HookPoint::Block(l, s) => write!(f, "blocks.{l}.{}", s.tl_suffix()),
        }
    }
}

/// Every hook point of a model in forward order; `all` includes the optional ones.
pub fn all_hooks(cfg: &ModelConfig, all: bool) -> Vec<HookPoint> {
    let mut out = vec![HookPoint::Embed];
    if HookPoint::PosEmbed.exists_in(cfg) {
        out.push(HookPoint::PosEmbed);
    }
    for l in 0..cfg.n_layers {
        for &(s, _, _) in BLOCK_SITES {
            if site_exists(s, cfg) && (all || fired_by_default(s)) {
                out.push(HookPoint::Block(l, s));
            }
        }
    }
    out.push(HookPoint::LnFinalScale);
    out.push(HookPoint::LnFinalNormalized);
    out
}

/// A layer-less hook selector such as `mlp.hook_post` or `post`, for all layers.
pub fn parse_site(name: &str) -> Option<BlockSite> {
    BlockSite::from_suffix(name).or_else(|| BlockSite::from_alias(name))
}

/// Parse a neuron written `L1.N23` or `1.23` into (layer, neuron).
pub fn parse_neuron(s: &str) -> Option<(usize, usize)> {
    let t = s.trim().trim_start_matches(['L', 'l']);
    let (l, n) = t.split_once('.')?;
    Some((l.parse().ok()?, n.trim_start_matches(['N', 'n']).parse().ok()?))
}
