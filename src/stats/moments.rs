//! Per-neuron power sums in f64 → mean, variance, skew, kurtosis (non-excess), activation frequency.

/// Power sums of `n` series (neurons) over the same positions.
#[derive(Clone, Debug)]
pub struct Moments {
    pub count: u64,
    pub s1: Vec<f64>,
    pub s2: Vec<f64>,
    pub s3: Vec<f64>,
    pub s4: Vec<f64>,
    /// Positions with a value > 0.
    pub positive: Vec<u64>,
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

/// Population statistics of one series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub mean: f64,
    pub var: f64,
    pub skew: f64,
    pub kurt: f64,
    pub freq: f64,
    pub min: f32,
    pub max: f32,
}

impl Moments {
    pub fn new(n: usize) -> Moments {
        Moments {
            count: 0,
            s1: vec![0.0; n],
            s2: vec![0.0; n],
            s3: vec![0.0; n],
            s4: vec![0.0; n],
            positive: vec![0; n],
            min: vec![f32::INFINITY; n],
            max: vec![f32::NEG_INFINITY; n],
        }
    }

    /// Add one position: `row` holds one value per series.
    pub fn add_row(&mut self, row: &[f32]) {
        self.count += 1;
        for (i, &x) in row.iter().enumerate() {
            let xd = x as f64;
            let x2 = xd * xd;
            self.s1[i] += xd;
            self.s2[i] += x2;
            self.s3[i] += x2 * xd;
            self.s4[i] += x2 * x2;
            self.positive[i] += u64::from(x > 0.0);
            self.min[i] = self.min[i].min(x);
            self.max[i] = self.max[i].max(x);
        }
    }

    /// Combine partial sums (shards of a dataset).
    pub fn merge(&mut self, o: &Moments) {
        self.count += o.count;
        for i in 0..self.s1.len() {
            self.s1[i] += o.s1[i];
            self.s2[i] += o.s2[i];
            self.s3[i] += o.s3[i];
            self.s4[i] += o.s4[i];
            self.positive[i] += o.positive[i];
            self.min[i] = self.min[i].min(o.min[i]);
            self.max[i] = self.max[i].max(o.max[i]);
        }
    }

    /// Population moments of series `i`: skew = m3/var^1.5, kurt = m4/var² (a Gaussian has 3).
    pub fn summary(&self, i: usize) -> Summary {
        let n = self.count.max(1) as f64;
        let mean = self.s1[i] / n;
        let (e2, e3, e4) = (self.s2[i] / n, self.s3[i] / n, self.s4[i] / n);
        let var = (e2 - mean * mean).max(0.0);
        let m3 = e3 - 3.0 * mean * e2 + 2.0 * mean.powi(3);
        let m4 = e4 - 4.0 * mean * e3 + 6.0 * mean * mean * e2 - 3.0 * mean.powi(4);
        let (skew, kurt) = if var > 0.0 { (m3 / var.powf(1.5), m4 / (var * var)) } else { (0.0, 0.0) };
        Summary { mean, var, skew, kurt, freq: self.positive[i] as f64 / n, min: self.min[i], max: self.max[i] }
    }
}
