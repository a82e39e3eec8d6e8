//! Vocabulary projections: chunked extremes and the reverse search equal a dense brute force.

use crate::common::load;
use lantern::analysis::vocab::{extremes, monotokenic, scores, token_column, top_entries, Basis, Side};
use lantern::model::Processing;

#[test]
fn chunked_extremes_and_reverse_search_equal_brute_force() {
    let model = load("gpt2-tiny", Processing::DEFAULT);
    let e = extremes(&model, Side::Out, Basis::Embed, 37, |_| Ok(())).unwrap();
    let (layers, d_mlp, vocab) = (model.cfg.n_layers, model.cfg.d_mlp, model.cfg.d_vocab);
    let mut dense = Vec::new();
    for l in 0..layers {
        let w = model.param(&format!("blocks.{l}.mlp.W_out")).unwrap();
        let s: Vec<Vec<f32>> = scores(&model, &w, Basis::Embed, false).unwrap().to_vec2().unwrap();
        dense.extend(s);
    }
    assert_eq!(e.neuron_best.len(), layers * d_mlp);
    for (n, row) in dense.iter().enumerate() {
        let top = top_entries(row, 2, false);
        assert_eq!(e.neuron_best[n].0 as usize, top[0].0);
        assert_eq!(e.neuron_best[n].2, top[1].1);
    }
    for t in [0u32, 17, 511] {
        let col = token_column(&model, t, Side::Out, Basis::Embed).unwrap();
        let want: Vec<f32> = dense.iter().map(|r| r[t as usize]).collect();
        for (a, b) in col.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5);
        }
        let best = top_entries(&col, 1, false)[0].0;
        assert_eq!(e.token_best[t as usize].0 as usize, best);
    }
    // A neuron is monotokenic exactly when it is its best token's best neuron.
    let mono: Vec<usize> = (0..layers * d_mlp).filter(|&n| monotokenic(&e, n).is_some()).collect();
    for &n in &mono {
        let tok = e.neuron_best[n].0 as usize;
        assert_eq!(e.token_best[tok].0 as usize, n);
        assert!(monotokenic(&e, n).unwrap() >= 0.0);
    }
    assert!(vocab > 0 && !mono.is_empty());
}
