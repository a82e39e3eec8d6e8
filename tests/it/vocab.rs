//! Vocabulary projections: chunked extremes and the reverse search equal a dense brute force.

use crate::common::load;
use lantern::analysis::vocab::{extremes, monotokenic, scores, token_column, top_entries, Basis, Side};
use lantern::model::Processing;

#[test]
fn chunked_extremes_and_reverse_search_equal_brute_force() {
    let model = load("gpt2-tiny", Processing::DEFAULT);
    let (layers, d_mlp, vocab) = (model.cfg.n_layers, model.cfg.d_mlp, model.cfg.d_vocab);
    // Several spans of tokens per parallel task.
    assert!(vocab > 256, "{vocab}");
    for basis in [Basis::Unembed, Basis::Embed] {
        let e = extremes(&model, Side::Out, basis, 37, |_| Ok(())).unwrap();
        let mut dense = Vec::new();
        for l in 0..layers {
            let w = model.param(&format!("blocks.{l}.mlp.W_out")).unwrap();
            let s: Vec<Vec<f32>> = scores(&model, &w, basis, false).unwrap().to_vec2().unwrap();
            dense.extend(s);
        }
        assert_eq!(e.neuron_best.len(), layers * d_mlp);
        for (n, row) in dense.iter().enumerate() {
            let top = top_entries(row, 2, false);
            assert_eq!(e.neuron_best[n].0 as usize, top[0].0);
            assert!((e.neuron_best[n].1 - top[0].1).abs() < 1e-4 && (e.neuron_best[n].2 - top[1].1).abs() < 1e-4);
        }
        for t in 0..vocab {
            let col = token_column(&model, t as u32, Side::Out, basis).unwrap();
            let want: Vec<f32> = dense.iter().map(|r| r[t]).collect();
            for (a, b) in col.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4);
            }
            let top = top_entries(&want, 2, false);
            assert_eq!(e.token_best[t].0 as usize, top[0].0, "{basis:?} token {t}");
            assert!((e.token_best[t].2 - top[1].1).abs() < 1e-4);
        }
    }
    let e = extremes(&model, Side::Out, Basis::Embed, 37, |_| Ok(())).unwrap();
    // A neuron is monotokenic exactly when it is its best token's best neuron.
    let mono: Vec<usize> = (0..layers * d_mlp).filter(|&n| monotokenic(&e, n).is_some()).collect();
    for &n in &mono {
        let tok = e.neuron_best[n].0 as usize;
        assert_eq!(e.token_best[tok].0 as usize, n);
        assert!(monotokenic(&e, n).unwrap() >= 0.0);
    }
    assert!(vocab > 0 && !mono.is_empty());
}
