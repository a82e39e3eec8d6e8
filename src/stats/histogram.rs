//! Histograms with explicit edges, binned like `torch.searchsorted(edges, x)` (left): bin k counts
//! values in (e[k-1], e[k]], with one open bin below the first edge and one above the last.

#[derive(Clone, Debug)]
pub struct Histogram {
    pub edges: Vec<f32>,
    /// [series, edges + 1]
    pub counts: Vec<u32>,
}

impl Histogram {
    pub fn new(edges: Vec<f32>, series: usize) -> Histogram {
        let bins = edges.len() + 1;
        Histogram { edges, counts: vec![0; series * bins] }
    }

    /// `linspace(start, stop, n)` edges.
    pub fn linspace(start: f32, stop: f32, n: usize) -> Vec<f32> {
        if n < 2 {
            return vec![start];
        }
        (0..n).map(|i| start + (stop - start) * i as f32 / (n - 1) as f32).collect()
    }

    pub fn bins(&self) -> usize {
        self.edges.len() + 1
    }

    /// The bin of a value: the number of edges strictly below it.
    #[inline]
    pub fn bin(&self, x: f32) -> usize {
        self.edges.partition_point(|&e| e < x)
    }

    pub fn add_row(&mut self, row: &[f32]) {
        let b = self.bins();
        for (i, &x) in row.iter().enumerate() {
            let k = self.bin(x);
            self.counts[i * b + k] += 1;
        }
    }

    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += *b;
        }
    }

    pub fn series(&self, i: usize) -> &[u32] {
        let b = self.bins();
        &self.counts[i * b..(i + 1) * b]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_follow_searchsorted_left() {
        let h = Histogram::new(vec![0.0, 1.0, 2.0], 1);
        assert_eq!(h.bin(-0.5), 0);
        assert_eq!(h.bin(0.0), 0);
        assert_eq!(h.bin(0.5), 1);
        assert_eq!(h.bin(1.0), 1);
        assert_eq!(h.bin(2.5), 3);
    }
}
