//! The matrix product of decoding, `y = x W^T` for a few rows `x` `[rows, k]` and a weight
//! matrix `W` `[n, k]` in PyTorch's layout, written so that every output element is computed
//! by the same arithmetic whatever the number of rows, their order or the thread count:
//!
//! * element `(j, i)` is the dot product of row `j` of `x` and row `i` of `W`: 16 lane sums
//!   over `k` in order (one fused multiply-add per element and lane), reduced by a fixed
//!   shuffle tree, then the `k % 16` remaining products added in order;
//! * rows and weight rows are grouped into register tiles of up to 6 × 4 (tiles at the edges
//!   are smaller; with at most 4 rows, tiles of one weight row, which streams the weights in
//!   order) and threads take blocks of weight rows, but a tile's shape only decides which
//!   elements are computed together, never how one is computed.
//!
//! With AVX-512 (checked at run time) the lanes are one `zmm` register; without it the same
//! sums are done in scalar code, which rounds differently (results are reproducible on one
//! kind of CPU, not across kinds). `gemm`, which candle uses, repacks `W` on every call with a
//! handful of rows and changes its summation order with the number of rows (its matrix-vector
//! and dot-product paths): this kernel reads `W` as it is stored, once per call.

use rayon::prelude::*;

/// Weight rows per parallel task.
const BLOCK: usize = 32;
/// Up to this many input rows, tiles take one weight row ([`matmul_nt`]).
const SINGLE_STREAM_ROWS: usize = 4;
/// Register tile: weight rows × input rows.
const TM: usize = 4;
const TN: usize = 6;

struct Out(*mut f32);
// SAFETY: tasks write disjoint elements of the outputs (distinct weight rows).
unsafe impl Sync for Out {}

/// An element of a weight matrix: f32, or bf16 ([`Bf16`], widened to f32 exactly as it is
/// read, so a product with bf16 weights equals the f32 product with the same weights rounded
/// to bf16, bit for bit).
pub trait Weight: Copy + Send + Sync + 'static {
    /// The value as f32 (exact).
    fn get(self) -> f32;
    /// 16 consecutive weights at `p` as one register.
    ///
    /// # Safety
    /// AVX-512F must be available and `p..p + 16` readable.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
}

impl Weight for f32 {
    #[inline(always)]
    fn get(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> std::arch::x86_64::__m512 {
        // SAFETY: the caller's contract.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
}

/// A bfloat16 value: the upper 16 bits of an f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(transparent)]
pub struct Bf16(pub u16);

impl Bf16 {
    /// The nearest bf16 (ties to even); NaN stays NaN.
    pub fn from_f32(v: f32) -> Bf16 {
        let b = v.to_bits();
        if v.is_nan() {
            return Bf16(((b >> 16) as u16) | 0x40);
        }
        let round = 0x7fff + ((b >> 16) & 1);
        Bf16((b.wrapping_add(round) >> 16) as u16)
    }
}

impl Weight for Bf16 {
    #[inline(always)]
    fn get(self) -> f32 {
        f32::from_bits((self.0 as u32) << 16)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const Bf16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: the caller's contract (16 × 2 bytes readable, AVX-512F).
        unsafe {
            let h = _mm256_loadu_si256(p as *const __m256i);
            _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
        }
    }
}

/// `x W^T`: `x` `[rows, k]`, `w` `[n, k]`, both row-major; returns `[rows, n]`.
pub fn matmul_nt<W: Weight>(x: &[f32], rows: usize, w: &[W], n: usize, k: usize) -> Vec<f32> {
    matmul_nt_with(x, rows, w, n, k, simd_available())
}

/// Whether the AVX-512 path runs on this CPU.
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`matmul_nt`] with the AVX-512 path chosen by the caller (`simd` must only be true where
/// [`simd_available`] is).
pub fn matmul_nt_with<W: Weight>(
    x: &[f32],
    rows: usize,
    w: &[W],
    n: usize,
    k: usize,
    simd: bool,
) -> Vec<f32> {
    matmul_nt_many_with(x, rows, &[(w, n)], k, simd)
        .pop()
        .expect("one product")
}

/// `x W_m^T` for several weight matrices `W_m` `[n_m, k]` that read the same `x`, in one
/// parallel region (their row blocks are the tasks): one hand-off between threads instead of
/// one per matrix. Each product is the one [`matmul_nt`] computes, bit for bit.
pub fn matmul_nt_many<W: Weight>(
    x: &[f32],
    rows: usize,
    ws: &[(&[W], usize)],
    k: usize,
) -> Vec<Vec<f32>> {
    matmul_nt_many_with(x, rows, ws, k, simd_available())
}

fn matmul_nt_many_with<W: Weight>(
    x: &[f32],
    rows: usize,
    ws: &[(&[W], usize)],
    k: usize,
    simd: bool,
) -> Vec<Vec<f32>> {
    assert_eq!(x.len(), rows * k, "x is [rows, k]");
    for &(w, n) in ws {
        assert_eq!(w.len(), n * k, "w is [n, k]");
    }
    let simd = simd && simd_available();
    let mut ys: Vec<Vec<f32>> = ws.iter().map(|&(_, n)| vec![0f32; rows * n]).collect();
    let outs: Vec<Out> = ys.iter_mut().map(|y| Out(y.as_mut_ptr())).collect();
    // A few rows: one weight row per tile, so that a task reads its block of weights as one
    // sequential stream (measured here: 1.5x at one row; four interleaved rows per tile only
    // pay once the tile reuses them for 5 or more input rows).
    let tm_max = if rows <= SINGLE_STREAM_ROWS { 1 } else { TM };
    let tasks: Vec<(usize, usize)> = ws
        .iter()
        .enumerate()
        .flat_map(|(m, &(_, n))| (0..n.div_ceil(BLOCK)).map(move |b| (m, b)))
        .collect();
    let outs = &outs;
    tasks.into_par_iter().for_each(|(m, blk)| {
        let (w, n) = ws[m];
        let out = &outs[m];
        let i1 = ((blk + 1) * BLOCK).min(n);
        let mut i = blk * BLOCK;
        while i < i1 {
            let tm = (i1 - i).min(tm_max);
            let mut j = 0;
            while j < rows {
                let tn = (rows - j).min(TN);
                let mut t = [[0f32; TN]; TM];
                tile(
                    &w[i * k..(i + tm) * k],
                    &x[j * k..(j + tn) * k],
                    k,
                    tm,
                    tn,
                    simd,
                    &mut t,
                );
                for (a, ta) in t.iter().enumerate().take(tm) {
                    for (b, &v) in ta.iter().enumerate().take(tn) {
                        // SAFETY: (j + b, i + a) is in bounds of product m, and only this
                        // task writes its column i + a (weight row blocks are disjoint).
                        unsafe { *out.0.add((j + b) * n + i + a) = v };
                    }
                }
                j += tn;
            }
            i += tm;
        }
    });
    ys
}

/// One tile: `t[a][b]` = dot(w row a, x row b) for a < tm, b < tn.
fn tile<W: Weight>(
    w: &[W],
    x: &[f32],
    k: usize,
    tm: usize,
    tn: usize,
    simd: bool,
    t: &mut [[f32; TN]; TM],
) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        macro_rules! go {
            ($($m:literal, $n:literal);*) => {
                match (tm, tn) {
                    // SAFETY: simd implies avx512f (checked by the caller); the slices hold
                    // tm and tn rows of k.
                    $(($m, $n) => unsafe { avx512::tile::<W, $m, $n>(w, x, k, t) },)*
                    _ => unreachable!("tile shape"),
                }
            };
        }
        go!(1,1;1,2;1,3;1,4;1,5;1,6;2,1;2,2;2,3;2,4;2,5;2,6;
            3,1;3,2;3,3;3,4;3,5;3,6;4,1;4,2;4,3;4,4;4,5;4,6);
        return;
    }
    let _ = simd;
    for a in 0..tm {
        for b in 0..tn {
            t[a][b] = dot_scalar(&w[a * k..(a + 1) * k], &x[b * k..(b + 1) * k]);
        }
    }
}

/// Positions per block of keys.
pub const KB: usize = 16;

/// Append the key `[width]` of position `j` (the positions before it already there) to keys
/// stored in blocks of [`KB`] positions: element (position j, channel c) at
/// `((j / KB) * width + c) * KB + j % KB`, a block zero-padded until it fills. So the scores of
/// [`KB`] positions are [`KB`] lanes of one product per channel, with no reduction across lanes.
pub fn push_key(blocked: &mut Vec<f32>, j: usize, key: &[f32]) {
    let width = key.len();
    if j.is_multiple_of(KB) {
        blocked.resize(blocked.len() + width * KB, 0.0);
    }
    let base = (j / KB) * width * KB + j % KB;
    for (c, &x) in key.iter().enumerate() {
        blocked[base + c * KB] = x;
    }
}

/// One sequence's part of [`attend_shared`]: its query heads for one key/value head
/// `[n_rep, head_dim]`, and the keys ([`push_key`]'s layout) and values
/// (`[len, kv_heads * head_dim]`) of its own tokens.
pub struct AttnRow<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
}

/// Attention of one decoding position for sequences that continue the same prompt, for one
/// key/value head (at channel offset `off` of `width`) and its `n_rep` query heads: each query
/// scores the prompt's keys (`prefix`: keys in [`push_key`]'s layout and values `[len, width]`,
/// read once for all the sequences) then its own, softmax, and the weighted sum of values in
/// position order. A score is the sum over channels in order of q·k (one lane of a block).
/// Returns `[rows.len() * n_rep, head_dim]`. A query's result does not depend on the other
/// rows.
pub fn attend_shared(
    prefix: (&[f32], &[f32]),
    rows: &[AttnRow],
    shape: (usize, usize, usize, usize),
    scale: f32,
) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: avx512f is available.
        return unsafe { avx512::attend_shared(prefix, rows, shape, scale) };
    }
    attend_shared_with(prefix, rows, shape, scale, score_block_scalar, |a, x, y| {
        y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x)
    })
}

/// The [`KB`] scores of one block: `s[t] = sum over d in order of q[d] k[d * KB + t]`.
fn score_block_scalar(q: &[f32], k: &[f32]) -> [f32; KB] {
    let mut s = [0f32; KB];
    for (d, &qd) in q.iter().enumerate() {
        for (st, &kt) in s.iter_mut().zip(&k[d * KB..(d + 1) * KB]) {
            *st += qd * kt;
        }
    }
    s
}

#[inline(always)]
fn attend_shared_with(
    (pk, pv): (&[f32], &[f32]),
    rows: &[AttnRow],
    (off, width, n_rep, hd): (usize, usize, usize, usize),
    scale: f32,
    score_block: impl Fn(&[f32], &[f32]) -> [f32; KB],
    axpy: impl Fn(f32, &[f32], &mut [f32]),
) -> Vec<f32> {
    let plen = pv.len() / width;
    // Value head `off / hd` of position j.
    let head = |j: usize| j * width + off..j * width + off + hd;
    // Key head `off / hd` of block b.
    let kblock = |b: usize| (b * width + off) * KB..(b * width + off + hd) * KB;
    let q_of = |qi: usize| {
        let (m, a) = (qi / n_rep, qi % n_rep);
        &rows[m].q[a * hd..(a + 1) * hd]
    };
    // Scores of query (row m, head a) at index m * n_rep + a.
    let mut p: Vec<Vec<f32>> = rows
        .iter()
        .flat_map(|r| (0..n_rep).map(move |_| Vec::with_capacity(plen + r.v.len() / width)))
        .collect();
    for b in 0..plen.div_ceil(KB) {
        let (kb, n) = (&pk[kblock(b)], (plen - b * KB).min(KB));
        for (qi, pq) in p.iter_mut().enumerate() {
            pq.extend(score_block(q_of(qi), kb)[..n].iter().map(|s| s * scale));
        }
    }
    for (qi, pq) in p.iter_mut().enumerate() {
        let (k, len) = (rows[qi / n_rep].k, rows[qi / n_rep].v.len() / width);
        for b in 0..len.div_ceil(KB) {
            let n = (len - b * KB).min(KB);
            pq.extend(
                score_block(q_of(qi), &k[kblock(b)])[..n]
                    .iter()
                    .map(|s| s * scale),
            );
        }
        let max = pq.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0f32;
        for x in pq.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        let inv = 1.0 / sum;
        pq.iter_mut().for_each(|x| *x *= inv);
    }
    let mut y = vec![0f32; p.len() * hd];
    for j in 0..plen {
        let vj = &pv[head(j)];
        for (qi, yq) in y.chunks_mut(hd).enumerate() {
            axpy(p[qi][j], vj, yq);
        }
    }
    for (qi, yq) in y.chunks_mut(hd).enumerate() {
        let v = rows[qi / n_rep].v;
        for j in 0..v.len() / width {
            axpy(p[qi][plen + j], &v[head(j)], yq);
        }
    }
    y
}

/// The scalar dot product with the AVX-512 path's structure (16 lanes, a fixed tree, the
/// tail in order); products and sums are rounded separately (no fused multiply-add).
fn dot_scalar<W: Weight>(w: &[W], x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let k16 = w.len() / 16 * 16;
    for (cw, cx) in w[..k16].chunks_exact(16).zip(x[..k16].chunks_exact(16)) {
        for l in 0..16 {
            acc[l] += cw[l].get() * cx[l];
        }
    }
    let mut s = tree16(&acc);
    for (a, b) in w[k16..].iter().zip(&x[k16..]) {
        s += a.get() * b;
    }
    s
}

fn tree16(a: &[f32; 16]) -> f32 {
    let mut v = *a;
    let mut width = 16;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            v[l] += v[l + width];
        }
    }
    v[0]
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// The 16 lanes summed by a fixed tree: halves added, 16 -> 8 -> 4 -> 2 -> 1.
    #[target_feature(enable = "avx512f")]
    fn tree(v: __m512) -> f32 {
        let lo = _mm512_castps512_ps256(v);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
        let v8 = _mm256_add_ps(lo, hi);
        let v4 = _mm_add_ps(_mm256_castps256_ps128(v8), _mm256_extractf128_ps(v8, 1));
        let v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
        let v1 = _mm_add_ss(v2, _mm_shuffle_ps(v2, v2, 1));
        _mm_cvtss_f32(v1)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        let k = x.len().min(y.len());
        let k16 = k / 16 * 16;
        let av = _mm512_set1_ps(a);
        let mut i = 0;
        while i < k16 {
            // SAFETY: i + 16 <= k.
            unsafe {
                let v = _mm512_fmadd_ps(
                    av,
                    _mm512_loadu_ps(x.as_ptr().add(i)),
                    _mm512_loadu_ps(y.as_ptr().add(i)),
                );
                _mm512_storeu_ps(y.as_mut_ptr().add(i), v);
            }
            i += 16;
        }
        for i in k16..k {
            y[i] = a.mul_add(x[i], y[i]);
        }
    }

    /// See [`super::attend_shared`].
    #[target_feature(enable = "avx512f")]
    pub(super) fn attend_shared(
        prefix: (&[f32], &[f32]),
        rows: &[super::AttnRow],
        shape: (usize, usize, usize, usize),
        scale: f32,
    ) -> Vec<f32> {
        super::attend_shared_with(
            prefix,
            rows,
            shape,
            scale,
            |q, k| score_block(q, k),
            |a, x, y| axpy(a, x, y),
        )
    }

    /// See [`super::score_block_scalar`]: the 16 lanes are one `zmm`, one FMA per channel.
    #[target_feature(enable = "avx512f")]
    fn score_block(q: &[f32], k: &[f32]) -> [f32; super::KB] {
        assert!(k.len() >= q.len() * super::KB);
        let mut acc = _mm512_setzero_ps();
        for (d, &qd) in q.iter().enumerate() {
            // SAFETY: d * 16 + 16 <= k.len().
            let kd = unsafe { _mm512_loadu_ps(k.as_ptr().add(d * super::KB)) };
            acc = _mm512_fmadd_ps(_mm512_set1_ps(qd), kd, acc);
        }
        let mut s = [0f32; super::KB];
        // SAFETY: s holds 16 floats.
        unsafe { _mm512_storeu_ps(s.as_mut_ptr(), acc) };
        s
    }

    /// See [`super::tile`]. The tail products use fused multiply-adds too.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)] // register tiles read best indexed
    pub(super) unsafe fn tile<W: super::Weight, const M: usize, const N: usize>(
        w: &[W],
        x: &[f32],
        k: usize,
        t: &mut [[f32; super::TN]; super::TM],
    ) {
        debug_assert!(w.len() >= M * k && x.len() >= N * k);
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); N]; M];
        let k16 = k / 16 * 16;
        let mut kk = 0;
        while kk < k16 {
            let mut wv = [_mm512_setzero_ps(); M];
            for (a, v) in wv.iter_mut().enumerate() {
                // SAFETY: a < M rows of k, kk + 16 <= k.
                *v = unsafe { W::load16(wp.add(a * k + kk)) };
            }
            for b in 0..N {
                // SAFETY: b < N rows of k, kk + 16 <= k.
                let xv = unsafe { _mm512_loadu_ps(xp.add(b * k + kk)) };
                for a in 0..M {
                    acc[a][b] = _mm512_fmadd_ps(wv[a], xv, acc[a][b]);
                }
            }
            kk += 16;
        }
        for a in 0..M {
            for b in 0..N {
                let mut s = tree(acc[a][b]);
                for kk in k16..k {
                    s = w[a * k + kk].get().mul_add(x[b * k + kk], s);
                }
                t[a][b] = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32)
                    .wrapping_mul(2654435761)
                    .wrapping_add(seed.wrapping_mul(97));
                (h % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_a_plain_product_and_is_row_invariant() {
        for (n, k) in [(70, 37), (33, 64), (5, 16), (129, 200)] {
            let w = data(n * k, 1);
            let x = data(13 * k, 2);
            for simd in [false, true] {
                let y = matmul_nt_with(&x, 13, &w, n, k, simd);
                for j in 0..13 {
                    for i in 0..n {
                        let want: f64 = (0..k)
                            .map(|kk| w[i * k + kk] as f64 * x[j * k + kk] as f64)
                            .sum();
                        assert!((y[j * n + i] as f64 - want).abs() < 1e-4, "({j}, {i})");
                    }
                }
                // Each row alone, and the rows reversed: the same bits.
                for j in 0..13 {
                    let one = matmul_nt_with(&x[j * k..(j + 1) * k], 1, &w, n, k, simd);
                    assert!(one == y[j * n..(j + 1) * n], "row {j} alone (simd {simd})");
                }
                let rev: Vec<f32> = (0..13)
                    .rev()
                    .flat_map(|j| x[j * k..(j + 1) * k].to_vec())
                    .collect();
                let yr = matmul_nt_with(&rev, 13, &w, n, k, simd);
                for j in 0..13 {
                    assert!(yr[(12 - j) * n..(13 - j) * n] == y[j * n..(j + 1) * n]);
                }
            }
        }
    }

    #[test]
    fn many_products_at_once_equal_each_alone() {
        let k = 72;
        let (w1, w2, w3) = (data(70 * k, 5), data(33 * k, 6), data(5 * k, 7));
        let x = data(9 * k, 8);
        let ys = matmul_nt_many(&x, 9, &[(&w1[..], 70), (&w2[..], 33), (&w3[..], 5)], k);
        assert_eq!(ys.len(), 3);
        assert!(ys[0] == matmul_nt(&x, 9, &w1, 70, k));
        assert!(ys[1] == matmul_nt(&x, 9, &w2, 33, k));
        assert!(ys[2] == matmul_nt(&x, 9, &w3, 5, k));
    }

    #[test]
    fn bf16_weights_equal_f32_weights_rounded_to_bf16() {
        for (n, k) in [(70, 37), (33, 64), (129, 200)] {
            let w: Vec<f32> = data(n * k, 3).iter().map(|v| v * 1.2345).collect();
            let x = data(7 * k, 4);
            let wb: Vec<Bf16> = w.iter().map(|&v| Bf16::from_f32(v)).collect();
            let rounded: Vec<f32> = wb.iter().map(|b| b.get()).collect();
            assert!(rounded != w, "the data has values that bf16 rounds");
            for simd in [false, true] {
                let want = matmul_nt_with(&x, 7, &rounded, n, k, simd);
                assert!(
                    matmul_nt_with(&x, 7, &wb, n, k, simd) == want,
                    "simd {simd}"
                );
                // Row-invariant like the f32 path.
                let one = matmul_nt_with(&x[2 * k..3 * k], 1, &wb, n, k, simd);
                assert!(one == want[2 * n..3 * n]);
            }
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        let r = |v: f32| Bf16::from_f32(v).get();
        assert_eq!(r(1.0), 1.0);
        assert_eq!(r(-2.5), -2.5);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        assert_eq!(r(1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
        assert_eq!(r(1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
        assert_eq!(r(1.0 + 1.0 / 256.0 + 1e-6), 1.0 + 1.0 / 128.0);
        assert!(r(f32::NAN).is_nan());
        assert_eq!(r(f32::INFINITY), f32::INFINITY);
        assert_eq!(
            r(f32::MAX),
            f32::INFINITY,
            "overflows like any rounding to bf16"
        );
        for v in [0.1f32, -3.7e-5, 123.456, 1e30] {
            assert!((r(v) - v).abs() <= v.abs() / 256.0, "{v}");
        }
    }
}
