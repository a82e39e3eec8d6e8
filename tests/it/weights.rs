//! Weight statistics equal their direct formulas on a fixture model.

use crate::common::load;
use candle_core::{Tensor, D};
use lantern::analysis::weights::{head_composition, moments, neuron_weights, vocab_class, Moments};
use lantern::model::Processing;

fn v(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn norm(x: &[f32]) -> f32 {
    x.iter().map(|a| a * a).sum::<f32>().sqrt()
}

#[test]
fn neuron_weight_statistics_follow_their_definitions() {
    let model = load("pythia-tiny", Processing::DEFAULT);
    let w_in = model.param("blocks.1.mlp.W_in").unwrap(); // [d, m]
    let w_out = model.param("blocks.1.mlp.W_out").unwrap(); // [m, d]
    let s = neuron_weights(&model, 1).unwrap();
    for n in [0usize, 7, 255] {
        let a = v(&w_in.narrow(1, n, 1).unwrap());
        let b = v(&w_out.get(n).unwrap());
        let cos = a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>() / (norm(&a) * norm(&b));
        assert!((s.w_in_norm[n] - norm(&a)).abs() < 1e-5);
        assert!((s.w_out_norm[n] - norm(&b)).abs() < 1e-5);
        assert!((s.in_out_sim[n] - cos).abs() < 1e-5);
        assert!((s.l2_penalty[n] - (norm(&a).powi(2) + norm(&b).powi(2))).abs() < 1e-4);
    }
}

#[test]
fn moments_and_classes_follow_the_study() {
    let m = moments(&[1.0, 2.0, 3.0, 10.0]);
    assert!((m.mean - 4.0).abs() < 1e-12);
    assert!((m.var - 12.5).abs() < 1e-12);
    // m3 = ((-3)^3 + (-2)^3 + (-1)^3 + 6^3) / 4 = 45; skew = 45 / 12.5^1.5
    assert!((m.skew - 45.0 / 12.5f64.powf(1.5)).abs() < 1e-12);
    assert_eq!(vocab_class(&Moments { mean: 0.0, var: 0.001, skew: 1.0, kurt: 12.0 }, 10.0, 0.005), "prediction");
    assert_eq!(vocab_class(&Moments { mean: 0.0, var: 0.001, skew: -1.0, kurt: 12.0 }, 10.0, 0.005), "suppression");
    assert_eq!(vocab_class(&Moments { mean: 0.0, var: 0.01, skew: 0.0, kurt: 3.0 }, 10.0, 0.005), "partition");
    assert_eq!(vocab_class(&Moments { mean: 0.0, var: 0.001, skew: 0.0, kurt: 3.0 }, 10.0, 0.005), "none");
}

#[test]
fn head_composition_equals_the_explicit_matrices() {
    let model = load("gpt2-tiny", Processing::DEFAULT);
    let c = head_composition(&model, 0, 1).unwrap();
    let p = |n: &str| model.param(&format!("blocks.1.attn.{n}")).unwrap();
    let (w_q, w_k, w_v, w_o) = (p("W_Q"), p("W_K"), p("W_V"), p("W_O"));
    let w_out = model.param("blocks.0.mlp.W_out").unwrap();
    let w_in = model.param("blocks.0.mlp.W_in").unwrap().t().unwrap();
    let unit = |x: Tensor| x.broadcast_div(&x.sqr().unwrap().sum_keepdim(D::Minus1).unwrap().sqrt().unwrap()).unwrap();
    for h in [0usize, 3] {
        let qk = w_q.get(h).unwrap().matmul(&w_k.get(h).unwrap().t().unwrap()).unwrap(); // [d, d]
        let ov = w_v.get(h).unwrap().matmul(&w_o.get(h).unwrap()).unwrap();
        let fro = |m: &Tensor| m.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap();
        for n in [1usize, 100] {
            let wo = unit(w_out.get(n).unwrap().unsqueeze(1).unwrap().t().unwrap()).t().unwrap(); // [d, 1]
            let wi = unit(w_in.get(n).unwrap().unsqueeze(0).unwrap()).t().unwrap();
            let nrm = |x: Tensor| x.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap();
            let k = nrm(qk.matmul(&wo).unwrap()) / fro(&qk);
            let q = nrm(qk.t().unwrap().matmul(&wo).unwrap()) / fro(&qk);
            let vv = nrm(ov.t().unwrap().matmul(&wo).unwrap()) / fro(&ov);
            let o = nrm(ov.matmul(&wi).unwrap()) / fro(&ov);
            let got = |t: &Tensor| t.get(n).unwrap().get(h).unwrap().to_scalar::<f32>().unwrap();
            for (name, g, w) in [("k", got(&c.k), k), ("q", got(&c.q), q), ("v", got(&c.v), vv), ("o", got(&c.o), o)] {
                assert!((g - w).abs() < 1e-5, "{name} neuron {n} head {h}: {g} vs {w}");
            }
        }
    }
}
