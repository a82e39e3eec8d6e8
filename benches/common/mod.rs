//! What the benchmarks share: peak RSS and the machine's f32 matmul peak measured in the run.

use candle_core::{Device, Tensor};
use std::time::Instant;

/// Peak resident set size of this process so far, in MB.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// The fastest of `reps` timed calls of `f` after one warm-up call, in seconds. On a shared
/// machine the fastest call is the one least disturbed by other load, so the throughput and the
/// matmul peak it is compared with are both measured this way.
#[allow(dead_code)]
pub fn best_time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Best GFLOP/s of candle's f32 matmul over `shapes` (m, k, n), each printed (fastest of 10 calls).
#[allow(dead_code)]
pub fn matmul_peak(shapes: &[(usize, usize, usize)]) -> f64 {
    matmul_peak_on(&Device::Cpu, shapes)
}

/// The same on `dev` (on a GPU each call waits for the device to finish).
#[allow(dead_code)]
pub fn matmul_peak_on(dev: &Device, shapes: &[(usize, usize, usize)]) -> f64 {
    let mut best: f64 = 0.0;
    for &(m, k, n) in shapes {
        let a = Tensor::randn(0f32, 1.0, (m, k), dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, (k, n), dev).unwrap();
        let secs = best_time(10, || {
            let _ = a.matmul(&b).unwrap();
            dev.synchronize().unwrap();
        });
        let gflops = 2.0 * (m * k * n) as f64 / secs / 1e9;
        println!("  matmul {m}×{k}×{n}: {gflops:.1} GFLOP/s");
        best = best.max(gflops);
    }
    best
}
