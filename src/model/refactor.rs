//! TL's `refactor_factored_attn_matrices`: rewrite W_Q/W_K (with their biases) and W_V/W_O as the
//! balanced SVD factors of W_QK and W_OV. Attention scores, patterns and outputs are unchanged;
//! q, k, v and z change basis (their signs follow this SVD, not torch's).

use super::checkpoint::Params;
use super::config::ModelConfig;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

/// A dense row-major f64 matrix, just enough for small SVDs.
#[derive(Clone)]
struct Mat {
    r: usize,
    c: usize,
    v: Vec<f64>,
}

impl Mat {
    fn zeros(r: usize, c: usize) -> Mat {
        Mat { r, c, v: vec![0.0; r * c] }
    }
    fn at(&self, i: usize, j: usize) -> f64 {
        self.v[i * self.c + j]
    }
    fn t(&self) -> Mat {
        let mut m = Mat::zeros(self.c, self.r);
        for i in 0..self.r {
            for j in 0..self.c {
                m.v[j * self.r + i] = self.at(i, j);
            }
        }
        m
    }
    fn mul(&self, o: &Mat) -> Mat {
        let mut m = Mat::zeros(self.r, o.c);
        for i in 0..self.r {
            for k in 0..self.c {
                let a = self.at(i, k);
                for j in 0..o.c {
                    m.v[i * o.c + j] += a * o.at(k, j);
                }
            }
        }
        m
    }
}

/// Eigen-decomposition of a symmetric matrix by cyclic Jacobi: (eigenvalues, eigenvectors as columns),
/// sorted by decreasing eigenvalue.
fn sym_eig(a: &Mat) -> (Vec<f64>, Mat) {
    let (vals, vecs, _sweeps) = jacobi(a);
    (vals, vecs)
}

/// `sym_eig` and the number of sweeps it took: it stops once the off-diagonal mass is at the
/// rounding level of the matrix's norm (relative, so large weights converge as fast as small ones),
/// or stops shrinking.
fn jacobi(a: &Mat) -> (Vec<f64>, Mat, usize) {
    let n = a.r;
    let mut a = a.clone();
    let mut v = Mat::zeros(n, n);
    for i in 0..n {
        v.v[i * n + i] = 1.0;
    }
    let total: f64 = a.v.iter().map(|x| x * x).sum();
    let (mut last, mut sweeps) = (f64::INFINITY, 0);
    for _ in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |j| *j != i).map(move |j| (i, j)))
            .map(|(i, j)| a.at(i, j).powi(2))
            .sum();
        if off <= 1e-30 * total || off >= last {
            break;
        }
        (last, sweeps) = (off, sweeps + 1);
        for p in 0..n {
            for q in p + 1..n {
                let apq = a.at(p, q);
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a.at(q, q) - a.at(p, p)) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a.at(k, p), a.at(k, q));
                    a.v[k * n + p] = c * akp - s * akq;
                    a.v[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a.at(p, k), a.at(q, k));
                    a.v[p * n + k] = c * apk - s * aqk;
                    a.v[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v.at(k, p), v.at(k, q));
                    v.v[k * n + p] = c * vkp - s * vkq;
                    v.v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a.at(j, j).total_cmp(&a.at(i, i)));
    let vals = order.iter().map(|&i| a.at(i, i)).collect();
    let mut vs = Mat::zeros(n, n);
    for (new, &old) in order.iter().enumerate() {
        for k in 0..n {
            vs.v[k * n + new] = v.at(k, old);
        }
    }
    (vals, vs, sweeps)
}

/// Balanced factors (U√S, √S Vᵀ) of A·B where A is m×k and B is k×n with small k.
fn make_even(a: &Mat, b: &Mat) -> (Mat, Mat) {
    let k = a.c;
    // SVD of A through its Gram matrix: A = Ua Sa Vaᵀ.
    let (ea, va) = sym_eig(&a.t().mul(a));
    let sa: Vec<f64> = ea.iter().map(|x| x.max(0.0).sqrt()).collect();
    // C = Sa Vaᵀ B, then C = Uc Sc Vcᵀ; A·B = (Ua Uc) Sc Vcᵀ.
    let mut c = va.t().mul(b);
    for i in 0..k {
        for j in 0..c.c {
            c.v[i * c.c + j] *= sa[i];
        }
    }
    let (ec, uc) = sym_eig(&c.mul(&c.t()));
    let sc: Vec<f64> = ec.iter().map(|x| x.max(0.0).sqrt()).collect();
    // Ua = A Va / Sa (columns with zero singular value stay zero).
    let mut ua = a.mul(&va);
    for i in 0..ua.r {
        for j in 0..k {
            ua.v[i * k + j] = if sa[j] > 1e-12 { ua.v[i * k + j] / sa[j] } else { 0.0 };
        }
    }
    let u = ua.mul(&uc);
    // Vcᵀ = Sc⁻¹ Ucᵀ C
    let mut vt = uc.t().mul(&c);
    for i in 0..k {
        for j in 0..vt.c {
            vt.v[i * vt.c + j] = if sc[i] > 1e-12 { vt.v[i * vt.c + j] / sc[i] } else { 0.0 };
        }
    }
    let mut left = u;
    for i in 0..left.r {
        for j in 0..k {
            left.v[i * k + j] *= sc[j].sqrt();
        }
    }
    for i in 0..k {
        for j in 0..vt.c {
            vt.v[i * vt.c + j] *= sc[i].sqrt();
        }
    }
    (left, vt)
}

fn to_mat(t: &Tensor) -> Result<Mat> {
    let (r, c) = t.dims2()?;
    let v = t.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    Ok(Mat { r, c, v })
}

fn to_tensor(m: &Mat, dev: &Device) -> Result<Tensor> {
    let v: Vec<f32> = m.v.iter().map(|x| *x as f32).collect();
    Ok(Tensor::from_vec(v, (m.r, m.c), dev)?)
}

fn param<'a>(p: &'a Params, k: &str) -> Result<&'a Tensor> {
    p.get(k).with_context(|| format!("missing parameter {k}"))
}

pub fn refactor_factored_attn_matrices(p: &mut Params, cfg: &ModelConfig) -> Result<()> {
    let (d, dh) = (cfg.d_model, cfg.d_head);
    for l in 0..cfg.n_layers {
        let t = format!("blocks.{l}.attn.");
        let dev = param(p, &format!("{t}W_Q"))?.device().clone();
        let (mut wq, mut bq, mut wk, mut bk, mut wv, mut wo) = (vec![], vec![], vec![], vec![], vec![], vec![]);
        let b_o = param(p, &format!("{t}b_O"))?.clone();
        let mut new_b_o = b_o.clone();
        let pick = |h: usize, n: &str| -> Result<Tensor> { Ok(param(p, &format!("{t}{n}"))?.get(h)?) };
        // The heads' factorisations in parallel (f64 on the CPU), gathered in head order.
        let inputs = (0..cfg.n_heads)
            .map(|h| -> Result<[Mat; 4]> {
                // W_Q_eff = [W_Q; b_Q] is (d+1)×dh; W_QK = W_Q_eff · W_K_effᵀ.
                let q_eff = to_mat(&Tensor::cat(&[pick(h, "W_Q")?, pick(h, "b_Q")?.unsqueeze(0)?], 0)?)?;
                let k_eff = to_mat(&Tensor::cat(&[pick(h, "W_K")?, pick(h, "b_K")?.unsqueeze(0)?], 0)?)?;
                Ok([q_eff, k_eff.t(), to_mat(&pick(h, "W_V")?)?, to_mat(&pick(h, "W_O")?)?])
            })
            .collect::<Result<Vec<_>>>()?;
        let evened: Vec<_> = inputs.par_iter().map(|[q, kt, v, o]| (make_even(q, kt), make_even(v, o))).collect();
        for (h, ((qe, kt), (ve, oe))) in evened.into_iter().enumerate() {
            let qe = to_tensor(&qe, &dev)?;
            let ke = to_tensor(&kt.t(), &dev)?;
            wq.push(qe.narrow(0, 0, d)?);
            bq.push(qe.get(d)?);
            wk.push(ke.narrow(0, 0, d)?);
            bk.push(ke.get(d)?);
            // b_V folds into b_O, then W_OV = W_V · W_O is re-balanced.
            let (w_o, b_v) = (pick(h, "W_O")?, pick(h, "b_V")?);
            new_b_o = (new_b_o + b_v.unsqueeze(0)?.matmul(&w_o)?.squeeze(0)?)?;
            wv.push(to_tensor(&ve, &dev)?);
            wo.push(to_tensor(&oe, &dev)?);
        }
        p.insert(format!("{t}W_Q"), Tensor::stack(&wq, 0)?);
        p.insert(format!("{t}b_Q"), Tensor::stack(&bq, 0)?);
        p.insert(format!("{t}W_K"), Tensor::stack(&wk, 0)?);
        p.insert(format!("{t}b_K"), Tensor::stack(&bk, 0)?);
        p.insert(format!("{t}W_V"), Tensor::stack(&wv, 0)?);
        p.insert(format!("{t}W_O"), Tensor::stack(&wo, 0)?);
        p.insert(format!("{t}b_V"), Tensor::zeros((cfg.n_heads, dh), candle_core::DType::F32, &dev)?);
        p.insert(format!("{t}b_O"), new_b_o);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_even_reproduces_product_with_balanced_factors() {
        let a = Mat { r: 5, c: 3, v: (0..15).map(|i| ((i * 7 % 11) as f64 - 5.0) / 3.0).collect() };
        let b = Mat { r: 3, c: 4, v: (0..12).map(|i| ((i * 5 % 7) as f64 - 3.0) / 2.0).collect() };
        let (l, r) = make_even(&a, &b);
        let want = a.mul(&b);
        let got = l.mul(&r);
        for (x, y) in want.v.iter().zip(&got.v) {
            assert!((x - y).abs() < 1e-9, "{x} vs {y}");
        }
        // Balanced: LᵀL equals R Rᵀ (both are the diagonal S).
        let (ll, rr) = (l.t().mul(&l), r.mul(&r.t()));
        for (x, y) in ll.v.iter().zip(&rr.v) {
            assert!((x - y).abs() < 1e-9);
        }
    }

    #[test]
    fn jacobi_stops_at_the_rounding_level_of_large_matrices() {
        // A 64 × 64 Gram matrix with entries in the thousands (GPT-2 Large's W_Q scale): an
        // absolute threshold never reached made every call run all 100 sweeps.
        let a = Mat { r: 300, c: 64, v: (0..300 * 64).map(|i| ((i * 7919 % 1009) as f64 - 504.0) / 9.0).collect() };
        let g = a.t().mul(&a);
        let (vals, vecs, sweeps) = jacobi(&g);
        assert!(sweeps < 20, "{sweeps} sweeps");
        // G = V diag(λ) Vᵀ to the matrix's precision.
        let scale = vals[0].abs();
        for i in 0..64 {
            for j in 0..64 {
                let r: f64 = (0..64).map(|k| vecs.at(i, k) * vals[k] * vecs.at(j, k)).sum();
                assert!((r - g.at(i, j)).abs() < 1e-9 * scale, "{i},{j}: {r} vs {}", g.at(i, j));
            }
        }
    }
}
