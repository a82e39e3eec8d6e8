//! One pass of the model over a dataset for the viewer's neurons: a histogram fitted to each
//! neuron's range, examples drawn at random from ranges of activation (reservoir sampling, seeded),
//! and the activation windows around given example positions; then examples de-duplicated.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// An example: a position, its activation and the activations of its window of tokens.
#[derive(Clone, Debug)]
pub struct Window {
    pub value: f32,
    pub row: usize,
    pub pos: usize,
    /// The window's first position in the row.
    pub from: usize,
    pub acts: Vec<f32>,
}

/// What the pass gathers for one neuron.
pub struct NeuronSample {
    /// Histogram range and counts (bins of equal width over [lo, hi]).
    pub lo: f32,
    pub hi: f32,
    pub bins: Vec<u64>,
    /// Ascending edges of the sampled ranges: range i is (edges[i], edges[i + 1]].
    pub edges: Vec<f32>,
    /// Positions seen in each range, and the sample drawn from it.
    pub seen: Vec<u64>,
    pub samples: Vec<Vec<Window>>,
    /// Windows of the requested example positions, by (row, position).
    pub wanted: BTreeMap<(usize, usize), Window>,
    capacity: usize,
    rng: ChaCha8Rng,
}

impl NeuronSample {
    /// `bins` bins over [lo, hi]; `levels` ranges of equal width over (base, hi] where base is 0
    /// when the neuron takes both signs, else its minimum; `capacity` samples kept per range.
    pub fn new(lo: f32, hi: f32, bins: usize, levels: usize, capacity: usize, seed: u64) -> NeuronSample {
        let hi = if hi > lo { hi } else { lo + 1e-6 };
        let base = if lo < 0.0 && hi > 0.0 { 0.0 } else { lo };
        let edges = (0..=levels).map(|i| base + (hi - base) * i as f32 / levels.max(1) as f32).collect();
        NeuronSample {
            lo,
            hi,
            bins: vec![0; bins.max(1)],
            edges,
            seen: vec![0; levels],
            samples: vec![Vec::new(); levels],
            wanted: BTreeMap::new(),
            capacity,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Count a value; `window` builds its example when the sample keeps it.
    pub fn add(&mut self, v: f32, window: impl FnOnce() -> Window) {
        let nb = self.bins.len();
        let b = (((v - self.lo) / (self.hi - self.lo)) * nb as f32).floor().clamp(0.0, nb as f32 - 1.0) as usize;
        self.bins[b] += 1;
        let levels = self.seen.len();
        if levels == 0 || v <= self.edges[0] || v > self.edges[levels] {
            return;
        }
        let width = (self.edges[levels] - self.edges[0]) / levels as f32;
        let mut l = (((v - self.edges[0]) / width).ceil() as usize).clamp(1, levels) - 1;
        // Float rounding at an edge: put the value in the range whose bounds hold it.
        while l > 0 && v <= self.edges[l] {
            l -= 1;
        }
        while l + 1 < levels && v > self.edges[l + 1] {
            l += 1;
        }
        self.seen[l] += 1;
        let seen = self.seen[l];
        if self.samples[l].len() < self.capacity {
            self.samples[l].push(window());
        } else {
            let j = self.rng.random_range(0..seen);
            if (j as usize) < self.capacity {
                self.samples[l][j as usize] = window();
            }
        }
    }
}

/// Examples, largest first, without one whose window overlaps a kept one's in the same row or
/// repeats a kept one's tokens (the same sentence at several places); at most `k`. `kept` holds
/// what earlier sections kept (row, position, tokens) and receives what this one keeps.
pub fn dedup(
    mut list: Vec<Window>,
    window: [usize; 2],
    tokens: impl Fn(&Window) -> Vec<u32>,
    kept: &mut Vec<(usize, usize, Vec<u32>)>,
    k: usize,
) -> Vec<Window> {
    list.sort_by(|a, b| b.value.total_cmp(&a.value).then(a.row.cmp(&b.row)).then(a.pos.cmp(&b.pos)));
    let mut out = Vec::new();
    for w in list {
        if out.len() == k {
            break;
        }
        let text = tokens(&w);
        let clash = |(r, p, t): &(usize, usize, Vec<u32>)| {
            (*r == w.row && p.abs_diff(w.pos) <= window[0] + window[1]) || *t == text
        };
        if kept.iter().any(clash) {
            continue;
        }
        kept.push((w.row, w.pos, text));
        out.push(w);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(value: f32, row: usize, pos: usize) -> Window {
        Window { value, row, pos, from: pos.saturating_sub(2), acts: vec![] }
    }

    #[test]
    fn overlapping_and_repeated_windows_are_dropped() {
        let text = |x: &Window| if x.row == 5 { vec![1, 2, 3] } else { vec![x.row as u32, x.pos as u32] };
        let list = vec![w(3.7, 0, 10), w(3.6, 0, 12), w(3.6, 5, 4), w(3.5, 5, 30), w(3.0, 1, 3), w(2.0, 2, 3)];
        let mut taken = vec![(2, 4, vec![9])];
        let kept: Vec<(usize, usize)> = dedup(list, [2, 1], text, &mut taken, 10).iter().map(|x| (x.row, x.pos)).collect();
        assert_eq!(kept, vec![(0, 10), (5, 4), (1, 3)]);
    }

    #[test]
    fn ranges_sample_what_falls_in_them() {
        let mut s = NeuronSample::new(-1.0, 4.0, 10, 4, 2, 0);
        for i in 0..1000 {
            let v = -1.0 + 5.0 * i as f32 / 999.0;
            s.add(v, || Window { value: v, row: 0, pos: i, from: i, acts: vec![] });
        }
        assert_eq!(s.edges, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.bins.iter().sum::<u64>(), 1000);
        for l in 0..4 {
            assert_eq!(s.samples[l].len(), 2);
            assert!(s.samples[l].iter().all(|x| x.value > s.edges[l] && x.value <= s.edges[l + 1]));
        }
    }
}
