//! Exact sums: f64 values added as fixed-point integers, so that the order in which values (or
//! partial sums of shards) are added changes nothing, bit for bit.

use crate::store::arrays::{Arrays, ArraysFile};
use anyhow::Result;
use serde::{Deserialize, Serialize};

/// 2^64: fixed-point values are integers in units of 2^-64.
const SCALE: f64 = 18_446_744_073_709_551_616.0;

/// A value in fixed point (units of 2^-64, range ±2^63), rounded to nearest. Exact for f64 values
/// whose last mantissa bit is worth at least 2^-64 (any f32 ≥ 2^-40 in magnitude).
#[inline(always)]
pub fn fixed(x: f64) -> i128 {
    let r = (x.abs() * SCALE).round_ties_even();
    let hi = (r * (1.0 / SCALE)).floor();
    // r − hi·2^64 is exact: both are multiples of r's ulp and the result is at most r.
    let lo = r - hi * SCALE;
    let q = ((hi as i64 as i128) << 64) + lo as u64 as i128;
    if x < 0.0 {
        -q
    } else {
        q
    }
}

/// A fixed-point value as f64 (correctly rounded).
#[inline]
pub fn value(q: i128) -> f64 {
    q as f64 / SCALE
}

/// An exact running sum of f64 values: the integer part and the fraction (units of 2^-64) kept
/// apart, so the range is that of an i128 (±1.7e38) at a resolution of 2^-64. Sums of the same
/// values in any order, or merged from partial sums, are equal bit for bit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exact {
    /// Whole units.
    int: i128,
    /// Units of 2^-64, kept in [0, 2^64).
    frac: i128,
}

const ONE: i128 = 1 << 64;

impl Exact {
    /// Add `x` (rounded to a multiple of 2^-64; a non-finite value counts as 0).
    #[inline]
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        let whole = x.trunc();
        // |whole| < 2^127 for any finite f64 below 1.7e38; x − whole is exact.
        self.int += whole as i128;
        self.frac += fixed(x - whole);
        self.normalise();
    }

    /// Add another exact sum.
    #[inline]
    pub fn merge(&mut self, o: &Exact) {
        self.int += o.int;
        self.frac += o.frac;
        self.normalise();
    }

    #[inline]
    fn normalise(&mut self) {
        self.int += self.frac.div_euclid(ONE);
        self.frac = self.frac.rem_euclid(ONE);
    }

    /// The sum as f64.
    pub fn get(&self) -> f64 {
        self.int as f64 + value(self.frac)
    }

    /// The two words that store it (for partial-state files), and back.
    pub fn to_words(&self) -> [i128; 2] {
        [self.int, self.frac]
    }
    pub fn from_words([int, frac]: [i128; 2]) -> Exact {
        let mut e = Exact { int, frac };
        e.normalise();
        e
    }
}

/// `Exact` sums of many series, fed by f64 partial sums (one per series per batch): the batch's
/// own order of additions is fixed by the batch, and batches add exactly, so a dataset cut into
/// shards along batch boundaries gives the same totals as one pass.
pub fn add_all(acc: &mut [Exact], partial: &[f64]) {
    for (a, &x) in acc.iter_mut().zip(partial) {
        a.add(x);
    }
}

/// Exact sums into a partial-state file (two i128 words each) …
pub fn put(out: &mut Arrays, name: &str, values: &[Exact]) {
    let words: Vec<i128> = values.iter().flat_map(|e| e.to_words()).collect();
    out.put_i128(name, &words);
}

/// … and back.
pub fn get(file: &ArraysFile, name: &str) -> Result<Vec<Exact>> {
    Ok(file.get_i128(name)?.chunks_exact(2).map(|w| Exact::from_words([w[0], w[1]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_round_trips_and_is_associative() {
        for x in [0.0, 1.0, -1.0, 0.1, -3.75e-7, 12345.678, -9.9e12, 1e-30] {
            let q = fixed(x);
            assert!((value(q) - x).abs() <= 2f64.powi(-64) * 2.0 + x.abs() * 1e-16, "{x} -> {}", value(q));
        }
        let xs = [0.1, 1e10, -1e10, 3.3e-5, 7.0, -0.2];
        let one: i128 = xs.iter().map(|&x| fixed(x)).sum();
        let two: i128 = xs.iter().rev().map(|&x| fixed(x)).sum();
        assert_eq!(one, two);
        assert_eq!(fixed(1.0), 1i128 << 64);
        assert_eq!(fixed(-1.5), -(3i128 << 63));
    }

    #[test]
    fn exact_sums_ignore_order_and_reach_far() {
        let xs = [0.1, 1e25, -1e25, 3.3e-5, -7.25, 8.1e20, 1e-12, -0.3, 2.5e18];
        let mut fwd = Exact::default();
        xs.iter().for_each(|&x| fwd.add(x));
        let (mut a, mut b) = (Exact::default(), Exact::default());
        xs[..4].iter().rev().for_each(|&x| a.add(x));
        xs[4..].iter().rev().for_each(|&x| b.add(x));
        b.merge(&a);
        assert_eq!(fwd, b);
        assert_eq!(Exact::from_words(fwd.to_words()), fwd);
        let want = 0.1 + 3.3e-5 - 7.25 + 8.1e20 + 1e-12 - 0.3 + 2.5e18;
        assert!((fwd.get() - want).abs() <= want * 1e-15, "{} vs {want}", fwd.get());
        let mut neg = Exact::default();
        neg.add(-0.75);
        neg.add(-2.5);
        assert_eq!(neg.get(), -3.25);
    }
}
