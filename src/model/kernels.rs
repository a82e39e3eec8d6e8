//! Fused CPU kernels over f32 slices (exp, GELU, LayerNorm, causal attention, log-softmax statistics),
//! compiled for AVX-512 / AVX2 and chosen at run time. Reductions use a fixed lane layout so every
//! code path gives the same bits.

use rayon::prelude::*;

/// Defines a function whose body is compiled three times (AVX-512, AVX2+FMA, baseline) and
/// dispatched on the CPU's features. No `mul_add`: results are the same on every path.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident : $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])* $vis fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            fn body($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                unsafe fn v4($($a: $t),*) $(-> $r)? { body($($a),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($a: $t),*) $(-> $r)? { body($($a),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features v4 is compiled for (checked just above).
                    return unsafe { v4($($a),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features v3 is compiled for (checked just above).
                    return unsafe { v3($($a),*) };
                }
            }
            body($($a),*)
        }
    };
}
pub(crate) use multiversion;

const LANES: usize = 16;
/// Rows per rayon task: below this much work, threading costs more than it saves.
pub(crate) const MIN_PAR_ELEMS: usize = 1 << 15;

/// e^x with ~1e-7 relative error, branch-free so that loops over it vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // SAFETY: n is an integer in [-126, 127] (x was clamped), so the conversion is exact; unlike
    // a saturating `as` cast it vectorises.
    let scale = f32::from_bits(((unsafe { n.to_int_unchecked::<i32>() } + 127) << 23) as u32);
    p * scale
}

/// tanh through exp; absolute error ~1e-7.
#[inline(always)]
pub(crate) fn tanh(y: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * y) + 1.0)
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7).
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

#[inline(always)]
pub(crate) fn gelu_new_1(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    0.5 * x * (1.0 + tanh(C * (x + 0.044715 * x * x * x)))
}

#[inline(always)]
fn gelu_1(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

multiversion! {
    fn gelu_new_slice(x: &[f32], out: &mut [f32]) {
        for (o, v) in out.iter_mut().zip(x) {
            *o = gelu_new_1(*v);
        }
    }
}

multiversion! {
    fn gelu_slice(x: &[f32], out: &mut [f32]) {
        for (o, v) in out.iter_mut().zip(x) {
            *o = gelu_1(*v);
        }
    }
}

/// Element-wise non-linearities applied in place, in parallel chunks.
#[derive(Clone, Copy)]
pub enum Pointwise {
    GeluNew,
    Gelu,
    Relu,
}

pub fn pointwise(x: &[f32], op: Pointwise) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    let f = move |(o, c): (&mut [f32], &[f32])| match op {
        Pointwise::GeluNew => gelu_new_slice(c, o),
        Pointwise::Gelu => gelu_slice(c, o),
        Pointwise::Relu => o.iter_mut().zip(c).for_each(|(o, v)| *o = v.max(0.0)),
    };
    if x.len() < MIN_PAR_ELEMS {
        f((&mut out, x))
    } else {
        out.par_chunks_mut(8192).zip(x.par_chunks(8192)).for_each(f)
    }
    out
}

/// Sum with a fixed 16-lane layout (identical bits on every instruction set).
#[inline(always)]
pub(crate) fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += f(c[i]);
        }
    }
    for (i, v) in rest.iter().enumerate() {
        acc[i] += f(*v);
    }
    let mut s = 0.0;
    for a in acc {
        s += a;
    }
    s
}

#[inline(always)]
pub(crate) fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    for (i, v) in rest.iter().enumerate() {
        acc[i] = acc[i].max(*v);
    }
    acc.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

multiversion! {
    /// TL's LayerNorm of one row: centre, divide by sqrt(var + eps), then weight and bias.
    pub(crate) fn ln_row(x: &[f32], w: Option<&[f32]>, b: Option<&[f32]>, eps: f32, out: &mut [f32]) -> f32 {
        let n = x.len() as f32;
        let mean = lane_sum(x, |v| v) / n;
        let var = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
        let scale = (var + eps).sqrt();
        for (o, v) in out.iter_mut().zip(x) {
            *o = (*v - mean) / scale;
        }
        if let Some(w) = w {
            for (o, w) in out.iter_mut().zip(w) {
                *o *= *w;
            }
        }
        if let Some(b) = b {
            for (o, b) in out.iter_mut().zip(b) {
                *o += *b;
            }
        }
        scale
    }
}

/// LayerNorm over the last axis of `x` (rows of `d`): returns (normalized, scale per row).
pub fn layer_norm(x: &[f32], d: usize, w: Option<&[f32]>, b: Option<&[f32]>, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let rows = x.len() / d;
    let mut out = vec![0.0f32; x.len()];
    let mut scale = vec![0.0f32; rows];
    let job = |(o, (s, xr)): (&mut [f32], (&mut f32, &[f32]))| *s = ln_row(xr, w, b, eps, o);
    let it = out.chunks_mut(d).zip(scale.iter_mut().zip(x.chunks(d)));
    if x.len() < MIN_PAR_ELEMS {
        it.for_each(job);
    } else {
        out.par_chunks_mut(d).zip(scale.par_iter_mut().zip(x.par_chunks(d))).for_each(job);
    }
    (out, scale)
}

multiversion! {
    /// Softmax of a row over `x[..n]` written to `out[..n]`; entries past `n` set to zero.
    fn softmax_prefix(x: &[f32], n: usize, out: &mut [f32]) {
        let m = lane_max(&x[..n]);
        for (o, v) in out[..n].iter_mut().zip(&x[..n]) {
            *o = exp(*v - m);
        }
        let s = lane_sum(&out[..n], |v| v);
        let inv = 1.0 / s;
        for o in out[..n].iter_mut() {
            *o *= inv;
        }
        for o in out[n..].iter_mut() {
            *o = 0.0;
        }
    }
}

/// SoLU's first half: x · softmax(x) over each row of `d`.
pub fn solu(x: &[f32], d: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    let job = |(o, row): (&mut [f32], &[f32])| {
        softmax_prefix(row, d, o);
        for (o, v) in o.iter_mut().zip(row) {
            *o *= *v;
        }
    };
    if x.len() < MIN_PAR_ELEMS {
        out.chunks_mut(d).zip(x.chunks(d)).for_each(job)
    } else {
        out.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(job)
    }
    out
}

/// A row-major matrix operand, stored as [rows, cols] or, when `t`, as its transpose [cols, rows].
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub t: bool,
}

impl<'a> Mat<'a> {
    pub fn n(data: &'a [f32]) -> Mat<'a> {
        Mat { data, t: false }
    }
    pub fn t(data: &'a [f32]) -> Mat<'a> {
        Mat { data, t: true }
    }
}

/// dst [m, n] (+)= a [m, k] · b [k, n], each operand possibly stored transposed; multithreaded.
/// With `accumulate` false dst is overwritten without being read.
pub fn matmul(dst: &mut [f32], a: Mat, b: Mat, m: usize, n: usize, k: usize, accumulate: bool) {
    assert!(dst.len() == m * n, "matmul: the output is not {m} × {n}");
    // SAFETY: dst has m × n elements (the operands are checked by matmul_raw).
    unsafe { matmul_raw(dst.as_mut_ptr(), a, b, m, n, k, accumulate) }
}

/// `matmul` into a raw contiguous [m, n] buffer.
///
/// # Safety
/// `dst` must address m × n writable elements that overlap neither operand; with `accumulate`
/// they must be initialised.
unsafe fn matmul_raw(dst: *mut f32, a: Mat, b: Mat, m: usize, n: usize, k: usize, accumulate: bool) {
    assert!(a.data.len() == m * k && b.data.len() == k * n, "matmul: operands are not {m} × {k} and {k} × {n}");
    // (column stride, row stride) of each operand as gemm wants them.
    let (a_cs, a_rs) = if a.t { (m, 1) } else { (1, k) };
    let (b_cs, b_rs) = if b.t { (k, 1) } else { (1, n) };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        n as isize,
        accumulate,
        a.data.as_ptr(),
        a_cs as isize,
        a_rs as isize,
        b.data.as_ptr(),
        b_cs as isize,
        b_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::Rayon(rayon::current_num_threads()),
    )
}

/// y [rows, n] = x [rows, k] · w [k, n] + b [n]: the bias is written first and the GEMM adds to it.
/// A single row is computed as two (gemm takes another, differently rounded path for one row), so
/// every row's result is the same whatever the batch it is in.
pub fn linear(x: &[f32], w: &[f32], b: &[f32], rows: usize, k: usize, n: usize) -> Vec<f32> {
    if rows == 1 {
        let twice = [x, x].concat();
        let mut y = linear(&twice, w, b, 2, k, n);
        y.truncate(n);
        return y;
    }
    // A zero bias (GPT-2's unembedding) needs no initial pass: the GEMM writes without reading.
    let zero_bias = b.iter().all(|&x| x == 0.0);
    let mut y = Vec::with_capacity(rows * n);
    crate::util::sys::advise_huge_pages(&y);
    if zero_bias {
        // SAFETY: with read_dst = false the GEMM writes every element before anything reads it.
        unsafe { y.set_len(rows * n) };
    } else {
        for _ in 0..rows {
            y.extend_from_slice(b);
        }
    }
    // SAFETY: `y` holds rows × n elements, written before read where the bias is zero.
    unsafe { matmul_raw(y.as_mut_ptr(), Mat::n(x), Mat::n(w), rows, n, k, !zero_bias) };
    y
}

/// Strided view of per-head vectors: element (row, head, d) at `offset + row*row_stride + head*d_head + d`.
#[derive(Clone, Copy)]
pub struct HeadView<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub row_stride: usize,
}

/// Sizes of one attention call.
#[derive(Clone, Copy)]
pub struct AttnDims {
    pub batch: usize,
    pub pos: usize,
    pub heads: usize,
    pub d_head: usize,
    /// Multiplier of q·k (1 / attention scale).
    pub scale: f32,
    /// Score written above the diagonal.
    pub masked: f32,
}

pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: every parallel task writes a disjoint block through the pointer (see `attention`).
unsafe impl Send for SendPtr {}
// SAFETY: as for Send: no two tasks touch the same elements.
unsafe impl Sync for SendPtr {}

/// C[m×n] = alpha·A·B with arbitrary strides (row stride, column stride), single-threaded.
///
/// # Safety
/// Every element addressed through the pointers and strides must be inside its allocation, and
/// `dst` must not overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn small_gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
    alpha: f32,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        0.0,
        alpha,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// Rows per block of the causal attention products: block r only needs key positions < (r + 1)·B.
const CAUSAL_BLOCK: usize = 32;

/// (first row, rows, key positions needed) of each causal row block of a [t, t] product.
pub(crate) fn causal_blocks(t: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..t).step_by(CAUSAL_BLOCK).map(move |r0| {
        let rows = CAUSAL_BLOCK.min(t - r0);
        (r0, rows, r0 + rows)
    })
}

/// Causal attention scores of one (batch, head): `out` is [pos, pos], masked above the diagonal.
/// Only the blocks on or below the diagonal are multiplied.
fn scores_bh(q: HeadView, k: HeadView, d: AttnDims, b: usize, h: usize, out: &mut [f32]) {
    let t = d.pos;
    for (r0, rows, cols) in causal_blocks(t) {
        // SAFETY: `out` is [t, t]; the q and k views cover rows r0..r0 + rows and 0..cols of head h.
        unsafe {
            small_gemm(
                rows,
                cols,
                d.d_head,
                out.as_mut_ptr().add(r0 * t),
                t,
                q.data.as_ptr().add(q.offset + (b * t + r0) * q.row_stride + h * d.d_head),
                q.row_stride,
                1,
                k.data.as_ptr().add(k.offset + b * t * k.row_stride + h * d.d_head),
                1,
                k.row_stride,
                d.scale,
            );
        }
    }
    for i in 0..t {
        for v in &mut out[i * t + i + 1..(i + 1) * t] {
            *v = d.masked;
        }
    }
}

/// z rows of one (batch, head) = pattern · v, written into z [batch, pos, heads, d_head]; each row
/// block multiplies only the key positions its causal pattern can be non-zero at.
fn pv_bh(pattern: &[f32], v: HeadView, d: AttnDims, b: usize, h: usize, z: &SendPtr) {
    let t = d.pos;
    let zs = d.heads * d.d_head;
    for (r0, rows, cols) in causal_blocks(t) {
        // SAFETY: z is [batch, pos, heads, d_head] and this (b, h) writes only its own columns; the
        // pattern is [t, t] and v covers key positions 0..cols.
        unsafe {
            small_gemm(
                rows,
                d.d_head,
                cols,
                z.0.add((b * t + r0) * zs + h * d.d_head),
                zs,
                pattern.as_ptr().add(r0 * t),
                t,
                1,
                v.data.as_ptr().add(v.offset + b * t * v.row_stride + h * d.d_head),
                v.row_stride,
                1,
                1.0,
            );
        }
    }
}

/// Row-wise causal softmax of a [pos, pos] block (row i keeps columns 0..=i).
fn softmax_causal_block(scores: &[f32], t: usize, out: &mut [f32]) {
    for i in 0..t {
        softmax_prefix(&scores[i * t..(i + 1) * t], i + 1, &mut out[i * t..(i + 1) * t]);
    }
}

/// Fused causal attention. Returns z [batch, pos, heads, d_head] and, when asked, the masked
/// scores and the pattern, both [batch, heads, pos, pos].
pub fn attention(
    q: HeadView,
    k: HeadView,
    v: HeadView,
    d: AttnDims,
    want_scores: bool,
    want_pattern: bool,
) -> (Vec<f32>, Option<Vec<f32>>, Option<Vec<f32>>) {
    let t = d.pos;
    let blocks = d.batch * d.heads;
    let mut z = vec![0.0f32; d.batch * t * d.heads * d.d_head];
    let mut scores = want_scores.then(|| vec![0.0f32; blocks * t * t]);
    let mut pattern = want_pattern.then(|| vec![0.0f32; blocks * t * t]);
    let zp = SendPtr(z.as_mut_ptr());
    let sp = scores.as_mut().map(|s| SendPtr(s.as_mut_ptr()));
    let pp = pattern.as_mut().map(|s| SendPtr(s.as_mut_ptr()));
    (0..blocks).into_par_iter().for_each_init(
        || (vec![0.0f32; t * t], vec![0.0f32; t * t]),
        |(s_scratch, p_scratch), i| {
            let (b, h) = (i / d.heads, i % d.heads);
            // Each (b, h) owns block i of scores / pattern and its own z columns.
            let s_blk: &mut [f32] = match &sp {
                // SAFETY: block i of the [blocks, t, t] scores buffer, written by this task only.
                Some(p) => unsafe { std::slice::from_raw_parts_mut(p.0.add(i * t * t), t * t) },
                None => s_scratch,
            };
            scores_bh(q, k, d, b, h, s_blk);
            let p_blk: &mut [f32] = match &pp {
                // SAFETY: block i of the [blocks, t, t] pattern buffer, written by this task only.
                Some(p) => unsafe { std::slice::from_raw_parts_mut(p.0.add(i * t * t), t * t) },
                None => p_scratch,
            };
            softmax_causal_block(s_blk, t, p_blk);
            pv_bh(p_blk, v, d, b, h, &zp);
        },
    );
    (z, scores, pattern)
}

/// Causal softmax of full scores [batch, heads, pos, pos].
pub fn softmax_causal(scores: &[f32], t: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; scores.len()];
    out.par_chunks_mut(t * t).zip(scores.par_chunks(t * t)).for_each(|(o, s)| softmax_causal_block(s, t, o));
    out
}

/// Scores [batch, heads, pos, pos] from q and k.
pub fn scores(q: HeadView, k: HeadView, d: AttnDims) -> Vec<f32> {
    let t = d.pos;
    let mut out = vec![0.0f32; d.batch * d.heads * t * t];
    out.par_chunks_mut(t * t).enumerate().for_each(|(i, o)| scores_bh(q, k, d, i / d.heads, i % d.heads, o));
    out
}

/// z [batch, pos, heads, d_head] from a pattern [batch, heads, pos, pos] and v.
pub fn pattern_times_v(pattern: &[f32], v: HeadView, d: AttnDims) -> Vec<f32> {
    let t = d.pos;
    let mut z = vec![0.0f32; d.batch * t * d.heads * d.d_head];
    let zp = SendPtr(z.as_mut_ptr());
    (0..d.batch * d.heads)
        .into_par_iter()
        .for_each(|i| pv_bh(&pattern[i * t * t..(i + 1) * t * t], v, d, i / d.heads, i % d.heads, &zp));
    z
}

/// Rotary position embedding (NeoX: halves not interleaved) on the first `rot` dims of each head.
/// Reads a strided view, returns a contiguous [rows, heads, d_head] buffer.
pub fn rotary(x: HeadView, rows: usize, pos: usize, heads: usize, d_head: usize, rot: usize, base: f64) -> Vec<f32> {
    let half = rot / 2;
    let mut sin = vec![0.0f32; pos * half];
    let mut cos = vec![0.0f32; pos * half];
    for p in 0..pos {
        for i in 0..half {
            let freq = base.powf(i as f64 / half as f64) as f32;
            let angle = p as f32 / freq;
            sin[p * half + i] = angle.sin();
            cos[p * half + i] = angle.cos();
        }
    }
    let w = heads * d_head;
    let mut out = vec![0.0f32; rows * w];
    out.par_chunks_mut(w).enumerate().for_each(|(r, o)| {
        let p = r % pos;
        let src = &x.data[x.offset + r * x.row_stride..x.offset + r * x.row_stride + w];
        o.copy_from_slice(src);
        for h in 0..heads {
            let s = &src[h * d_head..h * d_head + rot];
            let oh = &mut o[h * d_head..h * d_head + rot];
            for i in 0..half {
                let (c, sn) = (cos[p * half + i], sin[p * half + i]);
                oh[i] = s[i] * c - s[i + half] * sn;
                oh[i + half] = s[i + half] * c + s[i] * sn;
            }
        }
    });
    out
}

/// What one logit row says about its target token: cross-entropy loss, and when asked the
/// entropy of the prediction (nats) and the target's rank (entries with a strictly larger logit).
#[derive(Clone, Copy, Debug, Default)]
pub struct TargetStats {
    pub loss: f32,
    pub entropy: f32,
    pub rank: u32,
}

/// Max of a row and, in the same pass, how many entries exceed `t`.
#[inline(always)]
fn lane_max_above(x: &[f32], t: f32) -> (f32, u32) {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut above = [0u32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
            above[i] += u32::from(c[i] > t);
        }
    }
    for (i, v) in rest.iter().enumerate() {
        acc[i] = acc[i].max(*v);
        above[i] += u32::from(*v > t);
    }
    (acc.into_iter().fold(f32::NEG_INFINITY, f32::max), above.iter().sum())
}

/// Σ e^(x−m) and Σ e^(x−m)·(x−m) in one pass (one exponential per entry).
#[inline(always)]
fn lane_exp_sums(x: &[f32], m: f32) -> (f32, f32) {
    let (mut s, mut sx) = ([0.0f32; LANES], [0.0f32; LANES]);
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            let d = c[i] - m;
            let e = exp(d);
            s[i] += e;
            sx[i] += e * d;
        }
    }
    for (i, v) in rest.iter().enumerate() {
        let d = *v - m;
        let e = exp(d);
        s[i] += e;
        sx[i] += e * d;
    }
    (s.iter().sum(), sx.iter().sum())
}

multiversion! {
    /// Loss of `target` under one row of logits; the entropy and the rank only when asked (the
    /// loss alone is a max and one sum of exponentials).
    fn target_row(x: &[f32], target: usize, entropy: bool, rank: bool) -> TargetStats {
        let lt = x[target];
        let (m, above) = if rank { lane_max_above(x, lt) } else { (lane_max(x), 0) };
        let (s, sx) = if entropy { lane_exp_sums(x, m) } else { (lane_sum(x, |v| exp(v - m)), 0.0) };
        let ln_s = s.ln();
        TargetStats { loss: m + ln_s - lt, entropy: if entropy { ln_s - sx / s } else { 0.0 }, rank: above }
    }
}

/// [`TargetStats`] of the rows `rows[i]` (each `d` logits of `x`) against `targets[i]`, in
/// parallel over rows.
pub fn target_rows(
    x: &[f32],
    d: usize,
    rows: &[usize],
    targets: &[u32],
    entropy: bool,
    rank: bool,
) -> Vec<TargetStats> {
    rows.par_iter()
        .zip(targets.par_iter())
        .map(|(&r, &t)| target_row(&x[r * d..(r + 1) * d], t as usize, entropy, rank))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        let mut worst = 0.0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let rel = ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
    }

    #[test]
    fn gelu_variants_match_reference() {
        for i in -800..800 {
            let x = i as f32 / 100.0;
            let xd = x as f64;
            let gn = 0.5 * xd * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3))).tanh());
            assert!((gelu_new_1(x) as f64 - gn).abs() < 2e-6, "gelu_new({x})");
            let mut v = [0.0];
            gelu_slice(&[x], &mut v);
            let g = 0.5 * xd * (1.0 + libm_erf(xd / std::f64::consts::SQRT_2));
            assert!((v[0] as f64 - g).abs() < 2e-6, "gelu({x})");
        }
    }

    /// erf by its Taylor series (accurate for |x| <= 4).
    fn libm_erf(x: f64) -> f64 {
        if x.abs() > 4.0 {
            return x.signum();
        }
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn matmul_transposes() {
        // a = [[1, 2], [3, 4]], b = [[5, 6], [7, 8]].
        let (a, b, at, bt) = ([1., 2., 3., 4.], [5., 6., 7., 8.], [1., 3., 2., 4.], [5., 7., 6., 8.]);
        let want = [19., 22., 43., 50.];
        for (x, y) in
            [(Mat::n(&a), Mat::n(&b)), (Mat::t(&at), Mat::n(&b)), (Mat::n(&a), Mat::t(&bt)), (Mat::t(&at), Mat::t(&bt))]
        {
            let mut c = [1f32; 4];
            matmul(&mut c, x, y, 2, 2, 2, false);
            assert_eq!(c, want);
            matmul(&mut c, x, y, 2, 2, 2, true);
            assert_eq!(c, want.map(|v| 2.0 * v));
        }
    }
}
