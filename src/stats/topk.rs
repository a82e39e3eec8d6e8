//! Running top-k (or bottom-k) of many series at once, with the global index of each value.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// An f32 ordered by `total_cmp`, with its index (ties: lower index first).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Entry(f32, u64);

impl Eq for Entry {}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0).then(o.1.cmp(&self.1))
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// The k largest values of each series (`largest = false`: the k smallest).
#[derive(Clone, Debug)]
pub struct TopK {
    k: usize,
    largest: bool,
    heaps: Vec<BinaryHeap<Reverse<Entry>>>,
}

impl TopK {
    pub fn new(series: usize, k: usize, largest: bool) -> TopK {
        TopK { k, largest, heaps: (0..series).map(|_| BinaryHeap::with_capacity(k + 1)).collect() }
    }

    /// How many values each series keeps.
    pub fn k(&self) -> usize {
        self.k
    }

    #[inline]
    pub fn push(&mut self, series: usize, value: f32, index: u64) {
        if self.k == 0 || value.is_nan() {
            return;
        }
        let v = if self.largest { value } else { -value };
        let h = &mut self.heaps[series];
        let e = Entry(v, index);
        if h.len() < self.k {
            h.push(Reverse(e));
        } else if let Some(Reverse(min)) = h.peek() {
            if e > *min {
                h.pop();
                h.push(Reverse(e));
            }
        }
    }

    /// One value per series at the same index.
    pub fn add_row(&mut self, row: &[f32], index: u64) {
        for (i, &x) in row.iter().enumerate() {
            self.push(i, x, index);
        }
    }

    pub fn merge(&mut self, o: &TopK) {
        for (i, h) in o.heaps.iter().enumerate() {
            for Reverse(e) in h.iter() {
                let v = if self.largest { e.0 } else { -e.0 };
                self.push(i, v, e.1);
            }
        }
    }

    /// (value, index) of one series, best first.
    pub fn sorted(&self, series: usize) -> Vec<(f32, u64)> {
        let mut v: Vec<Entry> = self.heaps[series].iter().map(|r| r.0).collect();
        v.sort_by(|a, b| b.cmp(a));
        v.into_iter().map(|e| (if self.largest { e.0 } else { -e.0 }, e.1)).collect()
    }
}
