//! The one hook-selector grammar of experiment files and the command line: full names, aliases,
//! layer-less names, globs (optional hooks only when spelled), typed errors.

use crate::common::fixture;
use lantern::model::selector::{select, select_all, SelectError};
use lantern::model::{BlockSite, HookPoint, ModelConfig};

fn cfg() -> ModelConfig {
    ModelConfig::from_file(&fixture("gpt2-tiny").join("config.json")).unwrap()
}

#[test]
fn every_spelling_selects_the_same_hooks() {
    let cfg = cfg();
    let post1 = vec![HookPoint::Block(1, BlockSite::Post)];
    for s in ["blocks.1.mlp.hook_post", "post.1", "post1", "mlp_post.1"] {
        assert_eq!(select(&cfg, s).unwrap(), post1, "{s}");
    }
    let every: Vec<HookPoint> = (0..cfg.n_layers).map(|l| HookPoint::Block(l, BlockSite::Post)).collect();
    for s in ["mlp.hook_post", "post", "blocks.*.mlp.hook_post"] {
        assert_eq!(select(&cfg, s).unwrap(), every, "{s}");
    }
}

#[test]
fn globs_reach_optional_hooks_only_when_they_spell_them() {
    let cfg = cfg();
    let result: Vec<HookPoint> = (0..cfg.n_layers).map(|l| HookPoint::Block(l, BlockSite::Result)).collect();
    assert_eq!(select(&cfg, "blocks.*.attn.hook_result").unwrap(), result);
    let all = select(&cfg, "*").unwrap();
    assert!(!all.iter().any(|h| h.site() == Some(BlockSite::Result)), "`*` is what TL fires by default");
    assert!(select(&cfg, "blocks.0.*").unwrap().iter().all(|h| h.site() != Some(BlockSite::MlpIn)));
    let both = select_all(&cfg, &["blocks.1.mlp.*", "post.1"]).unwrap();
    assert_eq!(both.iter().filter(|h| **h == HookPoint::Block(1, BlockSite::Post)).count(), 1, "each once");
}

#[test]
fn bad_selectors_say_why() {
    let cfg = cfg();
    assert_eq!(
        select(&cfg, "blocks.9.mlp.hook_post").unwrap_err(),
        SelectError::LayerOutOfRange { selector: "blocks.9.mlp.hook_post".into(), layer: 9, layers: cfg.n_layers }
    );
    assert!(matches!(select(&cfg, "blocks.0.attn.hook_rot_q").unwrap_err(), SelectError::NotInFamily { .. }));
    let e = select(&cfg, "mlp.hook_pots").unwrap_err();
    assert_eq!(e.to_string(), "unknown hook 'mlp.hook_pots'");
    assert_eq!(e.nearest(), Some("mlp.hook_post"));
    assert!(matches!(select(&cfg, "blocks.*.nothing").unwrap_err(), SelectError::NoMatch { .. }));
}
