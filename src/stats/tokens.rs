//! Per-token-id statistics of many series: sum, count and max of the activation for each
//! vocabulary entry (memory: series × vocabulary, independent of the number of tokens).

#[derive(Clone, Debug)]
pub struct TokenStats {
    pub vocab: usize,
    pub count: Vec<u32>,
    /// [series, vocab]
    pub sum: Vec<f64>,
    /// [series, vocab], starts at -inf
    pub max: Vec<f32>,
}

impl TokenStats {
    pub fn new(series: usize, vocab: usize) -> TokenStats {
        TokenStats {
            vocab,
            count: vec![0; vocab],
            sum: vec![0.0; series * vocab],
            max: vec![f32::NEG_INFINITY; series * vocab],
        }
    }

    /// Bytes this would take, for memory checks before allocating.
    pub fn bytes(series: usize, vocab: usize) -> usize {
        series * vocab * 12 + vocab * 4
    }

    pub fn add_row(&mut self, row: &[f32], token: u32) {
        let t = token as usize;
        if t >= self.vocab {
            return;
        }
        self.count[t] += 1;
        for (i, &x) in row.iter().enumerate() {
            let j = i * self.vocab + t;
            self.sum[j] += x as f64;
            self.max[j] = self.max[j].max(x);
        }
    }

    /// Add the statistics of other positions (f64 sums: equal to one pass up to rounding).
    pub fn merge(&mut self, o: &TokenStats) {
        self.count.iter_mut().zip(&o.count).for_each(|(a, b)| *a += b);
        self.sum.iter_mut().zip(&o.sum).for_each(|(a, b)| *a += b);
        self.max.iter_mut().zip(&o.max).for_each(|(a, b)| *a = a.max(*b));
    }

    /// Mean activation of series `i` on token `t` (None if the token never occurred).
    pub fn mean(&self, i: usize, t: usize) -> Option<f32> {
        (self.count[t] > 0).then(|| (self.sum[i * self.vocab + t] / self.count[t] as f64) as f32)
    }

    /// The k tokens with the largest mean (or max) activation for series `i`: (token, value).
    pub fn top(&self, i: usize, k: usize, by_max: bool) -> Vec<(u32, f32)> {
        let mut v: Vec<(u32, f32)> = (0..self.vocab)
            .filter(|&t| self.count[t] > 0)
            .map(|t| (t as u32, if by_max { self.max[i * self.vocab + t] } else { self.mean(i, t).unwrap_or(0.0) }))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(k);
        v
    }
}
