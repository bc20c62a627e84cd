//! The matrix product of decoding, `y = x W^T` for a few rows `x` `[rows, k]` and a weight
//! matrix `W` `[n, k]` in PyTorch's layout, written so that every output element is computed
//! by the same arithmetic whatever the number of rows, their order, the thread count or the CPU:
//!
//! * `W` is repacked once ([`Panels`]) into panels of [`P`] output columns, each panel stored
//!   `k`-major (`[k, P]`), so a panel is one contiguous stream;
//! * element `(j, i)` is `sum_k x[j, k] * W[i, k]` accumulated in order of `k` from zero, one
//!   fused multiply-add per term (`f32::mul_add`: the same rounding whether done by an AVX-512
//!   lane or in scalar code, so CPUs without AVX-512 get the same bits, only slower);
//! * a register tile holds up to [`R`] input rows × one panel (`x[j, k]` broadcast, two
//!   16-lane weight vectors per `k`, no horizontal sums); threads take panels. A tile's shape
//!   only decides which elements are computed together, never how one is computed.
//!
//! Reading the weights `k`-major makes every loaded weight vector feed up to [`R`] rows at
//! once: at 8 rows this ran 1.7-1.9x faster than the previous dot-product tiles (16 lanes
//! along `k`, then a shuffle tree per element), at the memory bandwidth of one row
//! (docs/benchmarks.md). `gemm`, which candle uses, repacks `W` on every call with a handful of
//! rows and changes its summation order with the number of rows.

use rayon::prelude::*;

/// Output columns per panel (two 16-lane vectors).
pub const P: usize = 32;
/// Input rows per register tile.
pub const R: usize = 8;

struct Out(*mut f32);
// SAFETY: tasks write disjoint elements of the outputs (distinct panels' columns).
unsafe impl Sync for Out {}

/// An element of a weight matrix: f32, or bf16 ([`Bf16`], widened to f32 exactly as it is
/// read, so a product with bf16 weights equals the f32 product with the same weights rounded
/// to bf16, bit for bit).
pub trait Weight: Copy + Send + Sync + 'static {
    /// Zero (the padding of a last, partial panel).
    const ZERO: Self;
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
    const ZERO: f32 = 0.0;
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
    #[inline(always)]
    pub fn from_f32(v: f32) -> Bf16 {
        // Without a branch, so that a loop of it vectorizes.
        let b = v.to_bits();
        let round = 0x7fff + ((b >> 16) & 1);
        let rounded = (b.wrapping_add(round) >> 16) as u16;
        let quiet = ((b >> 16) as u16) | 0x40;
        Bf16(if v.is_nan() { quiet } else { rounded })
    }
}

impl Weight for Bf16 {
    const ZERO: Bf16 = Bf16(0);
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

/// A weight matrix `W` `[n, k]` repacked for [`matmul_nt`]: panel `p` holds columns
/// `p * P .. p * P + P` of `W^T`, `k`-major (`[k, P]`); a last partial panel is padded with
/// zeros (their outputs are never written).
#[derive(Clone, Debug)]
pub struct Panels<W> {
    data: Vec<W>,
    n: usize,
    k: usize,
}

impl<W: Weight> Panels<W> {
    /// Repack a row-major `w` `[n, k]`.
    pub fn pack(w: &[W], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "w is [n, k]");
        let panels = n.div_ceil(P);
        let mut data = vec![W::ZERO; panels * k * P];
        data.par_chunks_mut(k * P)
            .enumerate()
            .for_each(|(p, panel)| {
                for c in 0..P.min(n - p * P) {
                    let row = &w[(p * P + c) * k..(p * P + c + 1) * k];
                    for (kk, &v) in row.iter().enumerate() {
                        panel[kk * P + c] = v;
                    }
                }
            });
        Panels { data, n, k }
    }

    fn panel(&self, p: usize) -> &[W] {
        &self.data[p * self.k * P..(p + 1) * self.k * P]
    }
}

/// A weight matrix packed in panels of [`P`] output columns, with the register tile that
/// reads them: [`Panels`] (f32 or bf16 weights, f32 arithmetic) or [`PairPanels`] (bf16
/// products). The driver ([`matmul_nt_many`]) is the same for both.
pub trait Packed: Sync {
    /// The input as the tile reads it.
    type X: Copy + Send + Sync;
    /// Output columns.
    fn n(&self) -> usize;
    /// Input width.
    fn k(&self) -> usize;
    /// `x` `[rows, k]` as the tile reads it: [`Packed::row_len`] elements per row.
    fn prepare(x: &[f32], rows: usize, k: usize) -> std::borrow::Cow<'_, [Self::X]>;
    fn row_len(&self) -> usize;
    /// Panel `p`'s tile of `tr` rows of prepared input `x`, into `t[..tr]`.
    fn tile(&self, p: usize, x: &[Self::X], tr: usize, simd: bool, t: &mut [[f32; P]; R]);
}

impl<W: Weight> Packed for Panels<W> {
    type X = f32;
    fn n(&self) -> usize {
        self.n
    }
    fn k(&self) -> usize {
        self.k
    }
    fn prepare(x: &[f32], _rows: usize, _k: usize) -> std::borrow::Cow<'_, [f32]> {
        std::borrow::Cow::Borrowed(x)
    }
    fn row_len(&self) -> usize {
        self.k
    }
    fn tile(&self, p: usize, x: &[f32], tr: usize, simd: bool, t: &mut [[f32; P]; R]) {
        tile(self.panel(p), x, self.k, tr, simd, t);
    }
}

/// `x W^T`: `x` `[rows, k]` row-major; returns `[rows, n]`.
pub fn matmul_nt<M: Packed>(x: &[f32], rows: usize, w: &M) -> Vec<f32> {
    matmul_nt_with(x, rows, w, simd_available())
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

/// e^x in f32: x = n ln 2 + r with n = round(x / ln 2) and |r| <= ln 2 / 2, then Cephes'
/// degree-7 polynomial of e^r (within 1 ulp of e^x for x in [-87, 88.7]: 0.96 at worst over
/// 23 million points in the tests) times 2^n; 0 below -87 (e^-87 = 1.6e-38), +inf above 88.7,
/// NaN for NaN.
/// Separate multiplies and adds only (no table, no fused multiply-add), so that the bits are the
/// same in a vectorized loop and a scalar one, on every CPU ([`exp_in_place`] vectorizes it).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LO: f32 = -87.0;
    const HI: f32 = 88.7;
    // 1.5 * 2^23: adding it rounds a float of magnitude below 2^22 to an integer, which then
    // sits in the low bits of the sum's mantissa.
    const MAGIC: f32 = 12_582_912.0;
    // ln 2 in two parts (C1 has few bits, so n * C1 is exact).
    const C1: f32 = 355.0 / 512.0;
    const C2: f32 = -2.121_944_4e-4;
    let c = x.clamp(LO, HI);
    let t = c * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = (c - n * C1) - n * C2;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * (r * r) + r + 1.0;
    // 2^n from n's bits in t's mantissa; -126 <= n <= 128 after the clamp, so split it in two
    // halves that are each a normal power of two.
    let ni = t.to_bits() as i32 - MAGIC.to_bits() as i32;
    let h = ni >> 1;
    let s1 = f32::from_bits(((h + 127) << 23) as u32);
    let s2 = f32::from_bits(((ni - h + 127) << 23) as u32);
    let e = y * s1 * s2;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        e
    }
}

/// `xs[i] = exp_f32(xs[i])`, 16 lanes at a time where the CPU has AVX-512 (the same bits).
pub fn exp_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { exp_avx512(xs) };
        return;
    }
    xs.iter_mut().for_each(|x| *x = exp_f32(*x));
}

/// SwiGLU's element-wise step, `g[i] = g[i] / (1 + e^-g[i]) * u[i]` (e^ by [`exp_f32`]), 16
/// lanes at a time where the CPU has AVX-512 (the same bits).
pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len());
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { silu_mul_avx512(g, u) };
        return;
    }
    silu_mul_scalar(g, u);
}

#[inline(always)]
fn silu_mul_scalar(g: &mut [f32], u: &[f32]) {
    for (g, &u) in g.iter_mut().zip(u) {
        *g = *g / (1.0 + exp_f32(-*g)) * u;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn silu_mul_avx512(g: &mut [f32], u: &[f32]) {
    silu_mul_scalar(g, u);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn exp_avx512(xs: &mut [f32]) {
    xs.iter_mut().for_each(|x| *x = exp_f32(*x));
}

/// [`matmul_nt`] with the AVX-512 path chosen by the caller (`simd` is ignored where
/// [`simd_available`] is false). Both paths give the same bits.
pub fn matmul_nt_with<M: Packed>(x: &[f32], rows: usize, w: &M, simd: bool) -> Vec<f32> {
    matmul_nt_many_with(x, rows, &[w], simd)
        .pop()
        .expect("one product")
}

/// `x W_m^T` for several weight matrices `W_m` that read the same `x`, in one parallel region
/// (their panels are the tasks): one hand-off between threads instead of one per matrix. Each
/// product is the one [`matmul_nt`] computes, bit for bit.
pub fn matmul_nt_many<M: Packed>(x: &[f32], rows: usize, ws: &[&M]) -> Vec<Vec<f32>> {
    matmul_nt_many_with(x, rows, ws, simd_available())
}

fn matmul_nt_many_with<M: Packed>(x: &[f32], rows: usize, ws: &[&M], simd: bool) -> Vec<Vec<f32>> {
    let Some(k) = ws.first().map(|w| w.k()) else {
        return Vec::new();
    };
    assert!(ws.iter().all(|w| w.k() == k), "the products share x: one k");
    assert_eq!(x.len(), rows * k, "x is [rows, k]");
    let simd = simd && simd_available();
    let xs = M::prepare(x, rows, k);
    let len = ws[0].row_len();
    // Not zeroed: the tasks below write every element (each panel's columns of every row)
    // before the lengths are set.
    let mut ys: Vec<Vec<f32>> = ws
        .iter()
        .map(|w| Vec::with_capacity(rows * w.n()))
        .collect();
    let outs: Vec<Out> = ys.iter_mut().map(|y| Out(y.as_mut_ptr())).collect();
    let tasks: Vec<(usize, usize)> = ws
        .iter()
        .enumerate()
        .flat_map(|(m, w)| (0..w.n().div_ceil(P)).map(move |p| (m, p)))
        .collect();
    let (outs, xs) = (&outs, &xs);
    tasks.into_par_iter().for_each(|(m, p)| {
        let w = ws[m];
        let n = w.n();
        let cols = P.min(n - p * P);
        let mut j = 0;
        while j < rows {
            let tr = (rows - j).min(R);
            let mut t = [[0f32; P]; R];
            w.tile(p, &xs[j * len..(j + tr) * len], tr, simd, &mut t);
            for (b, tb) in t.iter().enumerate().take(tr) {
                // SAFETY: row j + b, columns p * P .. p * P + cols are within product m's
                // capacity, and only this task writes them (panels are disjoint).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        tb.as_ptr(),
                        outs[m].0.add((j + b) * n + p * P),
                        cols,
                    )
                };
            }
            j += tr;
        }
    });
    for (y, w) in ys.iter_mut().zip(ws) {
        // SAFETY: the capacity is rows * n, and the tasks (one per panel of each product, all
        // of them run) wrote every row's columns p * P .. p * P + cols of every panel p, i.e.
        // every element.
        unsafe { y.set_len(rows * w.n()) };
    }
    ys
}

/// A weight matrix `W` `[n, k]` in bf16 for products in bf16 ([`Packed`]): panel `p` holds
/// columns `p * P .. p * P + P`, the inputs in pairs, `[k / 2, P]` of `u32`: element
/// `(i, c)` is `W[c, 2i]` (low half) and `W[c, 2i + 1]` (high half), bf16 bits; an odd `k`
/// is padded with a zero weight, a last partial panel with zero columns.
///
/// The input is rounded to bf16 too ([`Bf16::from_f32`]), and output element `(j, c)` is, in
/// order of `i` from zero: `acc = fma(x[2i+1], W[c, 2i+1], acc)`, then `acc = fma(x[2i],
/// W[c, 2i], acc)` (each product of two bf16 values is exact in f32), with subnormal inputs
/// and results read and written as zero: what AVX-512 BF16's `vdpbf16ps` computes, lane by
/// lane (checked against this CPU: [`dot_pair`]). So a product is again independent of the
/// other rows, the tile, the thread count and the CPU; on one without AVX-512 BF16 the scalar
/// path gives the same bits, slower.
#[derive(Clone, Debug)]
pub struct PairPanels {
    data: Vec<u32>,
    n: usize,
    k: usize,
}

impl PairPanels {
    /// Repack a row-major `w` `[n, k]`.
    pub fn pack(w: &[Bf16], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "w is [n, k]");
        let kp = k.div_ceil(2);
        let mut data = vec![0u32; n.div_ceil(P) * kp * P];
        data.par_chunks_mut(kp * P)
            .enumerate()
            .for_each(|(p, panel)| {
                for c in 0..P.min(n - p * P) {
                    let row = &w[(p * P + c) * k..(p * P + c + 1) * k];
                    for (i, pair) in row.chunks(2).enumerate() {
                        let hi = pair.get(1).map_or(0, |b| b.0 as u32);
                        panel[i * P + c] = pair[0].0 as u32 | hi << 16;
                    }
                }
            });
        PairPanels { data, n, k }
    }
}

/// `x` `[rows, k]` rounded to bf16 and paired as [`PairPanels`] reads it, `[rows, k / 2]`.
/// 16 pairs at a time where the CPU has AVX-512 (the same bits).
fn bf16_pairs(x: &[f32], rows: usize, k: usize) -> Vec<u32> {
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: the CPU has AVX-512F (checked above).
        return unsafe { bf16_pairs_avx512(x, rows, k) };
    }
    bf16_pairs_scalar(x, rows, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn bf16_pairs_avx512(x: &[f32], rows: usize, k: usize) -> Vec<u32> {
    bf16_pairs_scalar(x, rows, k)
}

#[inline(always)]
fn bf16_pairs_scalar(x: &[f32], rows: usize, k: usize) -> Vec<u32> {
    let kp = k.div_ceil(2);
    let mut out = vec![0u32; rows * kp];
    let bits = |v: f32| Bf16::from_f32(v).0 as u32;
    for (row, o) in x.chunks(k).zip(out.chunks_mut(kp)) {
        let mut pairs = row.chunks_exact(2);
        for (pair, o) in (&mut pairs).zip(o.iter_mut()) {
            *o = bits(pair[0]) | bits(pair[1]) << 16;
        }
        if let [v] = pairs.remainder() {
            o[kp - 1] = bits(*v);
        }
    }
    out
}

/// Whether this CPU runs [`PairPanels`]' products in AVX-512 BF16.
pub fn bf16_dot_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl Packed for PairPanels {
    type X = u32;
    fn n(&self) -> usize {
        self.n
    }
    fn k(&self) -> usize {
        self.k
    }
    fn prepare(x: &[f32], rows: usize, k: usize) -> std::borrow::Cow<'_, [u32]> {
        std::borrow::Cow::Owned(bf16_pairs(x, rows, k))
    }
    fn row_len(&self) -> usize {
        self.k.div_ceil(2)
    }
    fn tile(&self, p: usize, x: &[u32], tr: usize, simd: bool, t: &mut [[f32; P]; R]) {
        let kp = self.k.div_ceil(2);
        let panel = &self.data[p * kp * P..(p + 1) * kp * P];
        debug_assert!(x.len() >= tr * kp && tr <= R);
        #[cfg(target_arch = "x86_64")]
        if simd && bf16_dot_available() {
            macro_rules! go {
                ($($r:literal)*) => {
                    match tr {
                        // SAFETY: AVX-512F and BF16 checked; the slices hold the panel and tr
                        // rows of kp pairs.
                        $($r => unsafe { avx512::tile_dot::<$r>(panel, x, kp, t) },)*
                        _ => unreachable!("tile rows"),
                    }
                };
            }
            go!(1 2 3 4 5 6 7 8);
            return;
        }
        let _ = simd;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has FMA (checked above).
            unsafe { tile_dot_fma(panel, x, kp, tr, t) };
            return;
        }
        tile_dot_scalar(panel, x, kp, tr, t);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn tile_dot_fma(panel: &[u32], x: &[u32], kp: usize, tr: usize, t: &mut [[f32; P]; R]) {
    tile_dot_scalar(panel, x, kp, tr, t);
}

#[inline(always)]
fn tile_dot_scalar(panel: &[u32], x: &[u32], kp: usize, tr: usize, t: &mut [[f32; P]; R]) {
    for (b, tb) in t.iter_mut().enumerate().take(tr) {
        let xb = &x[b * kp..(b + 1) * kp];
        for (i, &xv) in xb.iter().enumerate() {
            for (acc, &w) in tb.iter_mut().zip(&panel[i * P..(i + 1) * P]) {
                *acc = dot_pair(*acc, w, xv);
            }
        }
    }
}

/// One lane of `vdpbf16ps`: `acc + w.hi * x.hi`, rounded, then `+ w.lo * x.lo`, rounded
/// (products exact), subnormal inputs and results as zero.
#[inline(always)]
pub fn dot_pair(acc: f32, w: u32, x: u32) -> f32 {
    #[inline(always)]
    fn flush(v: f32) -> f32 {
        if v.is_subnormal() {
            0f32.copysign(v)
        } else {
            v
        }
    }
    let lo = |v: u32| flush(f32::from_bits(v << 16));
    let hi = |v: u32| flush(f32::from_bits(v & 0xffff_0000));
    let a = flush(hi(w).mul_add(hi(x), flush(acc)));
    flush(lo(w).mul_add(lo(x), a))
}

/// One tile: `t[b][c]` = sum over `kk` of `x[b, kk] * panel[kk, c]`, in order of `kk`, for
/// `b < tr` rows.
fn tile<W: Weight>(panel: &[W], x: &[f32], k: usize, tr: usize, simd: bool, t: &mut [[f32; P]; R]) {
    debug_assert!(panel.len() >= k * P && x.len() >= tr * k && tr <= R);
    #[cfg(target_arch = "x86_64")]
    if simd {
        macro_rules! go {
            ($($r:literal)*) => {
                match tr {
                    // SAFETY: simd implies avx512f (checked by the caller); the slices hold
                    // the panel and tr rows of k.
                    $($r => unsafe { avx512::tile::<W, $r>(panel, x, k, t) },)*
                    _ => unreachable!("tile rows"),
                }
            };
        }
        go!(1 2 3 4 5 6 7 8);
        return;
    }
    let _ = simd;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA (checked above).
        unsafe { tile_fma(panel, x, k, tr, t) };
        return;
    }
    tile_scalar(panel, x, k, tr, t);
}

/// [`tile_scalar`] compiled with FMA instructions (without them `mul_add` is a library call:
/// the same result, much slower).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn tile_fma<W: Weight>(panel: &[W], x: &[f32], k: usize, tr: usize, t: &mut [[f32; P]; R]) {
    tile_scalar(panel, x, k, tr, t);
}

/// The tile in scalar code: the same fused multiply-adds in the same order as the AVX-512
/// path, so the same bits.
#[inline(always)]
fn tile_scalar<W: Weight>(panel: &[W], x: &[f32], k: usize, tr: usize, t: &mut [[f32; P]; R]) {
    for (b, tb) in t.iter_mut().enumerate().take(tr) {
        let xb = &x[b * k..(b + 1) * k];
        for (kk, &xv) in xb.iter().enumerate() {
            let wk = &panel[kk * P..(kk + 1) * P];
            for (acc, w) in tb.iter_mut().zip(wk) {
                *acc = xv.mul_add(w.get(), *acc);
            }
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
/// position order. Returns `[rows.len() * n_rep, head_dim]`.
///
/// The arithmetic of one query is fixed, whatever the other rows: a score is the sum over
/// channels in order of `q[d] * k[d]`, from zero, one fused multiply-add per term, then times
/// `scale`; an output element is the sum over positions in order (the prompt's, then the
/// sequence's own) of `p[j] * v[j]`, from zero, one fused multiply-add per term. Register
/// tiles of several queries ([`QS`] for scores, [`QV`] for values) read each key and value
/// vector once for all of them; a tile's shape only decides which elements are computed
/// together. The scalar path (compiled with FMA where the CPU has it) gives the same bits.
pub fn attend_shared(
    prefix: (&[f32], &[f32]),
    rows: &[AttnRow],
    shape: (usize, usize, usize, usize),
    scale: f32,
) -> Vec<f32> {
    attend_shared_with(prefix, rows, shape, scale, simd_available())
}

/// Queries per register tile of scores (one accumulator of [`KB`] lanes each).
const QS: usize = 8;
/// Queries per register tile of the weighted sum of values (up to 64 channels each).
const QV: usize = 4;

/// [`attend_shared`] with the AVX-512 path chosen by the caller (`simd` is ignored where
/// [`simd_available`] is false or the head size is not a multiple of 16). Both paths give
/// the same bits.
pub fn attend_shared_with(
    (pk, pv): (&[f32], &[f32]),
    rows: &[AttnRow],
    (off, width, n_rep, hd): (usize, usize, usize, usize),
    scale: f32,
    simd: bool,
) -> Vec<f32> {
    let simd = simd && simd_available() && hd.is_multiple_of(16);
    let plen = pv.len() / width;
    let nq = rows.len() * n_rep;
    // Key head `off / hd` of block b.
    let kblock = |b: usize| (b * width + off) * KB..(b * width + off + hd) * KB;
    // Query qi: row qi / n_rep, head qi % n_rep.
    let q_of = |qi: usize| {
        let (m, a) = (qi / n_rep, qi % n_rep);
        &rows[m].q[a * hd..(a + 1) * hd]
    };
    let mut p: Vec<Vec<f32>> = (0..nq)
        .map(|qi| Vec::with_capacity(plen + rows[qi / n_rep].v.len() / width))
        .collect();
    // The scores of queries q0..q1 against block `kb` of n positions, appended.
    let mut score = |q0: usize, q1: usize, kb: &[f32], n: usize| {
        let mut qs: [&[f32]; QS] = [&[]; QS];
        for (slot, qi) in qs.iter_mut().zip(q0..q1) {
            *slot = q_of(qi);
        }
        let s = scores(&qs[..q1 - q0], kb, hd, simd);
        for (pq, sq) in p[q0..q1].iter_mut().zip(&s) {
            pq.extend(sq[..n].iter().map(|x| x * scale));
        }
    };
    for b in 0..plen.div_ceil(KB) {
        let (kb, n) = (&pk[kblock(b)], (plen - b * KB).min(KB));
        for q0 in (0..nq).step_by(QS) {
            score(q0, nq.min(q0 + QS), kb, n);
        }
    }
    for (m, r) in rows.iter().enumerate() {
        let len = r.v.len() / width;
        for b in 0..len.div_ceil(KB) {
            let (kb, n) = (&r.k[kblock(b)], (len - b * KB).min(KB));
            for q0 in (m * n_rep..(m + 1) * n_rep).step_by(QS) {
                score(q0, ((m + 1) * n_rep).min(q0 + QS), kb, n);
            }
        }
    }
    for pq in p.iter_mut() {
        let max = pq.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        pq.iter_mut().for_each(|x| *x -= max);
        exp_in_place(pq);
        let sum: f32 = pq.iter().sum();
        let inv = 1.0 / sum;
        pq.iter_mut().for_each(|x| *x *= inv);
    }
    let mut y = vec![0f32; nq * hd];
    // y[q0..q1] += the weights `range` of queries q0..q1 times the values `v` (positions
    // from 0).
    let value = |y: &mut [f32], q0: usize, q1: usize, range: std::ops::Range<usize>, v: &[f32]| {
        let mut ps: [&[f32]; QV] = [&[]; QV];
        for (slot, pq) in ps.iter_mut().zip(&p[q0..q1]) {
            *slot = &pq[range.clone()];
        }
        values(
            &mut y[q0 * hd..q1 * hd],
            &ps[..q1 - q0],
            v,
            (off, width, hd),
            simd,
        );
    };
    for q0 in (0..nq).step_by(QV) {
        value(&mut y, q0, nq.min(q0 + QV), 0..plen, pv);
    }
    for (m, r) in rows.iter().enumerate() {
        let len = r.v.len() / width;
        for q0 in (m * n_rep..(m + 1) * n_rep).step_by(QV) {
            value(
                &mut y,
                q0,
                ((m + 1) * n_rep).min(q0 + QV),
                plen..plen + len,
                r.v,
            );
        }
    }
    y
}

/// The scores of up to [`QS`] queries `qs` (each `[hd]`) against one block of keys `k`
/// (`[hd, KB]`): `s[i][t]` = sum over `d` in order of `qs[i][d] * k[d, t]`, from zero.
fn scores(qs: &[&[f32]], k: &[f32], hd: usize, simd: bool) -> [[f32; KB]; QS] {
    assert!(qs.len() <= QS && k.len() >= hd * KB && qs.iter().all(|q| q.len() >= hd));
    let mut s = [[0f32; KB]; QS];
    #[cfg(target_arch = "x86_64")]
    if simd {
        macro_rules! go {
            ($($n:literal)*) => {
                match qs.len() {
                    0 => {}
                    // SAFETY: simd implies avx512f; the slices' lengths are checked above.
                    $($n => unsafe { avx512::scores::<$n>(qs, k, hd, &mut s) },)*
                    _ => unreachable!("score tile"),
                }
            };
        }
        go!(1 2 3 4 5 6 7 8);
        return s;
    }
    let _ = simd;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA (checked above).
        unsafe { scores_fma(qs, k, hd, &mut s) };
        return s;
    }
    scores_scalar(qs, k, hd, &mut s);
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn scores_fma(qs: &[&[f32]], k: &[f32], hd: usize, s: &mut [[f32; KB]; QS]) {
    scores_scalar(qs, k, hd, s);
}

#[inline(always)]
fn scores_scalar(qs: &[&[f32]], k: &[f32], hd: usize, s: &mut [[f32; KB]; QS]) {
    for (q, sq) in qs.iter().zip(s.iter_mut()) {
        for (d, &qd) in q[..hd].iter().enumerate() {
            for (st, &kt) in sq.iter_mut().zip(&k[d * KB..(d + 1) * KB]) {
                *st = qd.mul_add(kt, *st);
            }
        }
    }
}

/// `y[i, c] += sum over j in order of ps[i][j] * v[j * width + off + c]` for up to [`QV`]
/// queries (`y` `[ps.len(), hd]`), one fused multiply-add per term.
fn values(
    y: &mut [f32],
    ps: &[&[f32]],
    v: &[f32],
    (off, width, hd): (usize, usize, usize),
    simd: bool,
) {
    let n = ps.first().map_or(0, |p| p.len());
    assert!(ps.len() <= QV && ps.iter().all(|p| p.len() == n) && y.len() == ps.len() * hd);
    assert!(n == 0 || ((n - 1) * width + off + hd <= v.len()));
    #[cfg(target_arch = "x86_64")]
    if simd && hd.is_multiple_of(16) {
        macro_rules! go {
            ($c0:expr, $vecs:expr, $($q:literal)*) => {
                match (ps.len(), $vecs) {
                    $(
                        // SAFETY: simd implies avx512f; lengths checked above.
                        ($q, 1) => unsafe { avx512::values::<$q, 1>(y, ps, v, (off, width, hd), $c0) },
                        ($q, 2) => unsafe { avx512::values::<$q, 2>(y, ps, v, (off, width, hd), $c0) },
                        ($q, 3) => unsafe { avx512::values::<$q, 3>(y, ps, v, (off, width, hd), $c0) },
                        ($q, 4) => unsafe { avx512::values::<$q, 4>(y, ps, v, (off, width, hd), $c0) },
                    )*
                    _ => unreachable!("value tile"),
                }
            };
        }
        let mut c0 = 0;
        while c0 < hd && !ps.is_empty() {
            let vecs = ((hd - c0) / 16).min(4);
            go!(c0, vecs, 1 2 3 4);
            c0 += vecs * 16;
        }
        return;
    }
    let _ = simd;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA (checked above).
        unsafe { values_fma(y, ps, v, (off, width, hd)) };
        return;
    }
    values_scalar(y, ps, v, (off, width, hd));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn values_fma(y: &mut [f32], ps: &[&[f32]], v: &[f32], shape: (usize, usize, usize)) {
    values_scalar(y, ps, v, shape);
}

#[inline(always)]
fn values_scalar(y: &mut [f32], ps: &[&[f32]], v: &[f32], (off, width, hd): (usize, usize, usize)) {
    for (yq, p) in y.chunks_mut(hd).zip(ps) {
        for (j, &pj) in p.iter().enumerate() {
            let vj = &v[j * width + off..j * width + off + hd];
            for (yc, &vc) in yq.iter_mut().zip(vj) {
                *yc = pj.mul_add(vc, *yc);
            }
        }
    }
}
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// See [`super::scores`]: one accumulator of 16 lanes per query, one key vector and one
    /// broadcast per query and channel.
    ///
    /// # Safety
    /// AVX-512F; `qs` holds `N` slices of at least `hd`, `k` at least `hd * 16` floats.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)] // register tiles read best indexed
    pub(super) unsafe fn scores<const N: usize>(
        qs: &[&[f32]],
        k: &[f32],
        hd: usize,
        s: &mut [[f32; super::KB]; super::QS],
    ) {
        debug_assert!(qs.len() == N && k.len() >= hd * super::KB);
        let qp: [*const f32; N] = std::array::from_fn(|i| qs[i].as_ptr());
        let mut acc = [_mm512_setzero_ps(); N];
        for d in 0..hd {
            // SAFETY: d < hd: within each query and within the block.
            unsafe {
                let kd = _mm512_loadu_ps(k.as_ptr().add(d * super::KB));
                for i in 0..N {
                    acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(*qp[i].add(d)), kd, acc[i]);
                }
            }
        }
        for i in 0..N {
            // SAFETY: s[i] holds 16 floats.
            unsafe { _mm512_storeu_ps(s[i].as_mut_ptr(), acc[i]) };
        }
    }

    /// See [`super::values`]: channels `c0 .. c0 + 16 V` of `N` queries held in registers
    /// over all positions; per position `V` value vectors and one broadcast per query.
    ///
    /// # Safety
    /// AVX-512F; `y` is `[N, hd]`, each of `ps` has the same length `n`, and `v` holds
    /// positions `0..n` of `width` with `c0 + 16 V <= hd`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)] // register tiles read best indexed
    pub(super) unsafe fn values<const N: usize, const V: usize>(
        y: &mut [f32],
        ps: &[&[f32]],
        v: &[f32],
        (off, width, hd): (usize, usize, usize),
        c0: usize,
    ) {
        debug_assert!(ps.len() == N && y.len() == N * hd && c0 + 16 * V <= hd);
        let n = ps[0].len();
        let pp: [*const f32; N] = std::array::from_fn(|i| ps[i].as_ptr());
        let yp = y.as_mut_ptr();
        let mut acc = [[_mm512_setzero_ps(); V]; N];
        // SAFETY (all the pointer arithmetic below): the caller's contract.
        unsafe {
            for i in 0..N {
                for l in 0..V {
                    acc[i][l] = _mm512_loadu_ps(yp.add(i * hd + c0 + 16 * l));
                }
            }
            for j in 0..n {
                let base = v.as_ptr().add(j * width + off + c0);
                let mut vv = [_mm512_setzero_ps(); V];
                for l in 0..V {
                    vv[l] = _mm512_loadu_ps(base.add(16 * l));
                }
                for i in 0..N {
                    let pj = _mm512_set1_ps(*pp[i].add(j));
                    for l in 0..V {
                        acc[i][l] = _mm512_fmadd_ps(pj, vv[l], acc[i][l]);
                    }
                }
            }
            for i in 0..N {
                for l in 0..V {
                    _mm512_storeu_ps(yp.add(i * hd + c0 + 16 * l), acc[i][l]);
                }
            }
        }
    }
    /// See [`super::PairPanels`]: per pair of inputs, the panel's two vectors of 16 weight
    /// pairs and one broadcast of each row's input pair, `2 * N` `vdpbf16ps`.
    ///
    /// # Safety
    /// AVX-512F and AVX-512 BF16; `panel` holds `kp * P` and `x` `N * kp` pairs.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::needless_range_loop)] // register tiles read best indexed
    pub(super) unsafe fn tile_dot<const N: usize>(
        panel: &[u32],
        x: &[u32],
        kp: usize,
        t: &mut [[f32; super::P]; super::R],
    ) {
        debug_assert!(panel.len() >= kp * super::P && x.len() >= N * kp);
        let (wp, xp) = (panel.as_ptr(), x.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); 2]; N];
        for i in 0..kp {
            // SAFETY: i < kp pairs of P weights in the panel; b < N rows of kp in x.
            unsafe {
                let w0: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(wp.add(i * super::P) as *const _));
                let w1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(wp.add(i * super::P + 16) as *const _));
                for b in 0..N {
                    let xb: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*xp.add(b * kp + i) as i32));
                    acc[b][0] = _mm512_dpbf16_ps(acc[b][0], w0, xb);
                    acc[b][1] = _mm512_dpbf16_ps(acc[b][1], w1, xb);
                }
            }
        }
        for b in 0..N {
            // SAFETY: t[b] holds P = 32 floats.
            unsafe {
                _mm512_storeu_ps(t[b].as_mut_ptr(), acc[b][0]);
                _mm512_storeu_ps(t[b].as_mut_ptr().add(16), acc[b][1]);
            }
        }
    }

    /// See [`super::tile`]: per `kk`, the panel's two weight vectors and one broadcast of
    /// each row's `x[b, kk]`, `2 * N` fused multiply-adds.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)] // register tiles read best indexed
    pub(super) unsafe fn tile<W: super::Weight, const N: usize>(
        panel: &[W],
        x: &[f32],
        k: usize,
        t: &mut [[f32; super::P]; super::R],
    ) {
        debug_assert!(panel.len() >= k * super::P && x.len() >= N * k);
        let (wp, xp) = (panel.as_ptr(), x.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); 2]; N];
        for kk in 0..k {
            // SAFETY: kk < k rows of P weights in the panel; b < N rows of k in x.
            unsafe {
                let w0 = W::load16(wp.add(kk * super::P));
                let w1 = W::load16(wp.add(kk * super::P + 16));
                for b in 0..N {
                    let xv = _mm512_set1_ps(*xp.add(b * k + kk));
                    acc[b][0] = _mm512_fmadd_ps(xv, w0, acc[b][0]);
                    acc[b][1] = _mm512_fmadd_ps(xv, w1, acc[b][1]);
                }
            }
        }
        for b in 0..N {
            // SAFETY: t[b] holds P = 32 floats.
            unsafe {
                _mm512_storeu_ps(t[b].as_mut_ptr(), acc[b][0]);
                _mm512_storeu_ps(t[b].as_mut_ptr().add(16), acc[b][1]);
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
    fn bf16_rounding_is_nearest_even_and_pairs_are_the_same_with_or_without_simd() {
        // Finite values: the nearer of the two bf16 neighbours (truncated, truncated + 1 ulp),
        // the even one on a tie.
        let want = |v: f32| -> u16 {
            let lo = v.to_bits() & 0xffff_0000;
            let hi = lo.wrapping_add(0x1_0000);
            let (dl, dh) = (
                (v as f64 - f32::from_bits(lo) as f64).abs(),
                (f32::from_bits(hi) as f64 - v as f64).abs(),
            );
            let pick = if dl < dh || (dl == dh && (lo >> 16) & 1 == 0) {
                lo
            } else {
                hi
            };
            (pick >> 16) as u16
        };
        let mut xs: Vec<f32> = (0..2_000_000u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)))
            .filter(|v| v.is_finite() && v.abs() < 3.0e38)
            .collect();
        xs.extend([
            0.0,
            -0.0,
            1.0 + 2f32.powi(-8),
            1.0 + 3.0 * 2f32.powi(-8),
            1e-40,
            -1e-40,
        ]);
        for &v in &xs {
            assert_eq!(Bf16::from_f32(v).0, want(v), "{v:e}");
        }
        assert!(Bf16::from_f32(f32::NAN).get().is_nan());
        assert_eq!(Bf16::from_f32(f32::INFINITY).get(), f32::INFINITY);
        for k in [576, 7] {
            let rows = xs.len() / k / 100;
            let x = &xs[..rows * k];
            let p = bf16_pairs(x, rows, k);
            assert_eq!(p, bf16_pairs_scalar(x, rows, k));
            let kp = k.div_ceil(2);
            for (j, row) in x.chunks(k).enumerate() {
                for (i, &v) in row.iter().enumerate() {
                    let half = (p[j * kp + i / 2] >> (16 * (i % 2))) as u16;
                    assert_eq!(half, Bf16::from_f32(v).0);
                }
            }
            if k % 2 == 1 {
                assert!((0..rows).all(|j| p[j * kp + kp - 1] >> 16 == 0));
            }
        }
    }

    #[test]
    fn exp_f32_is_within_1_ulp_of_exp_and_the_same_with_or_without_simd() {
        // Every 97th float in [-87, 88.7] (23 million of them), and the edges.
        let (lo, hi) = ((-87f32).to_bits(), 88.7f32.to_bits());
        let mut xs: Vec<f32> = (0x8000_0000..=lo)
            .step_by(97)
            .chain((0..=hi).step_by(97))
            .map(f32::from_bits)
            .chain([-87.0, 88.7, 0.0, -0.0, 1e-30, -1e-30])
            .collect();
        let mut worst = 0f64;
        for &x in &xs {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            // One ulp of the f32 nearest to e^x (subnormal results: the smallest ulp).
            let ulp = ((want as f32).next_up() as f64 - want as f32 as f64).max(1e-45);
            worst = worst.max((got - want).abs() / ulp);
        }
        assert!(worst < 1.0, "{worst} ulp");
        for (x, want) in [(-87.01f32, 0.0), (-1e30, 0.0), (f32::NEG_INFINITY, 0.0)] {
            assert_eq!(exp_f32(x), want, "{x}");
        }
        assert_eq!(exp_f32(88.71), f32::INFINITY);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        xs.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -100.0, 100.0]);
        let mut v = xs.clone();
        exp_in_place(&mut v);
        for (x, e) in xs.iter().zip(&v) {
            assert_eq!(e.to_bits(), exp_f32(*x).to_bits(), "{x}");
        }
        // SwiGLU's step: the same bits vectorized, and within 1e-6 of f64.
        let g0 = data(1000, 3).iter().map(|x| x * 30.0).collect::<Vec<_>>();
        let u = data(1000, 4);
        let mut g = g0.clone();
        silu_mul(&mut g, &u);
        let mut gs = g0.clone();
        silu_mul_scalar(&mut gs, &u);
        for i in 0..g.len() {
            assert_eq!(g[i].to_bits(), gs[i].to_bits());
            let (x, y) = (g0[i] as f64, u[i] as f64);
            let want = x / (1.0 + (-x).exp()) * y;
            assert!(
                (g[i] as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{x}"
            );
        }
    }

    #[test]
    fn matches_a_plain_product_is_row_invariant_and_the_same_with_or_without_simd() {
        for (n, k) in [(70, 37), (33, 64), (5, 16), (129, 200), (32, 1)] {
            let w = Panels::pack(&data(n * k, 1), n, k);
            let wr = data(n * k, 1);
            let x = data(13 * k, 2);
            let y = matmul_nt_with(&x, 13, &w, true);
            for j in 0..13 {
                for i in 0..n {
                    let want: f64 = (0..k)
                        .map(|kk| wr[i * k + kk] as f64 * x[j * k + kk] as f64)
                        .sum();
                    assert!((y[j * n + i] as f64 - want).abs() < 1e-4, "({j}, {i})");
                    // In order of k, one fused multiply-add per term.
                    let seq = (0..k).fold(0f32, |s, kk| x[j * k + kk].mul_add(wr[i * k + kk], s));
                    assert_eq!(y[j * n + i].to_bits(), seq.to_bits(), "({j}, {i})");
                }
            }
            assert!(
                matmul_nt_with(&x, 13, &w, false) == y,
                "scalar and simd differ"
            );
            // Each row alone, and the rows reversed: the same bits.
            for j in 0..13 {
                let one = matmul_nt_with(&x[j * k..(j + 1) * k], 1, &w, true);
                assert!(one == y[j * n..(j + 1) * n], "row {j} alone");
            }
            let rev: Vec<f32> = (0..13)
                .rev()
                .flat_map(|j| x[j * k..(j + 1) * k].to_vec())
                .collect();
            let yr = matmul_nt_with(&rev, 13, &w, true);
            for j in 0..13 {
                assert!(yr[(12 - j) * n..(13 - j) * n] == y[j * n..(j + 1) * n]);
            }
        }
    }

    #[test]
    fn many_products_at_once_equal_each_alone() {
        let k = 72;
        let (w1, w2, w3) = (
            Panels::pack(&data(70 * k, 5), 70, k),
            Panels::pack(&data(33 * k, 6), 33, k),
            Panels::pack(&data(5 * k, 7), 5, k),
        );
        let x = data(9 * k, 8);
        let ys = matmul_nt_many(&x, 9, &[&w1, &w2, &w3]);
        assert_eq!(ys.len(), 3);
        assert!(ys[0] == matmul_nt(&x, 9, &w1));
        assert!(ys[1] == matmul_nt(&x, 9, &w2));
        assert!(ys[2] == matmul_nt(&x, 9, &w3));
    }

    #[test]
    fn bf16_weights_equal_f32_weights_rounded_to_bf16() {
        for (n, k) in [(70, 37), (33, 64), (129, 200)] {
            let w: Vec<f32> = data(n * k, 3).iter().map(|v| v * 1.2345).collect();
            let x = data(7 * k, 4);
            let wb: Vec<Bf16> = w.iter().map(|&v| Bf16::from_f32(v)).collect();
            let rounded: Vec<f32> = wb.iter().map(|b| b.get()).collect();
            assert!(rounded != w, "the data has values that bf16 rounds");
            let (pb, pr) = (Panels::pack(&wb, n, k), Panels::pack(&rounded, n, k));
            for simd in [false, true] {
                let want = matmul_nt_with(&x, 7, &pr, simd);
                assert!(matmul_nt_with(&x, 7, &pb, simd) == want, "simd {simd}");
                // Row-invariant like the f32 path.
                let one = matmul_nt_with(&x[2 * k..3 * k], 1, &pb, simd);
                assert!(one == want[2 * n..3 * n]);
            }
        }
    }

    /// Keys in push_key's layout and values `[len, width]` of `len` positions.
    fn kv(len: usize, width: usize, seed: u32) -> (Vec<f32>, Vec<f32>) {
        let (keys, v) = (data(len * width, seed), data(len * width, seed + 1));
        let mut k = Vec::new();
        for j in 0..len {
            push_key(&mut k, j, &keys[j * width..(j + 1) * width]);
        }
        (k, v)
    }

    #[test]
    fn attention_matches_softmax_in_f64_is_row_invariant_and_the_same_with_or_without_simd() {
        // (head size, key/value heads, queries per key/value head); 24 is not a multiple of 16
        // (scalar path), 80 leaves a tail of one vector after 64 channels.
        for (hd, nkv, n_rep) in [(64, 3, 3), (80, 2, 5), (24, 2, 9), (16, 1, 1)] {
            let width = nkv * hd;
            let (pk, pv) = kv(37, width, 11);
            let lens = [1, 17, 5, 32];
            let own: Vec<(Vec<f32>, Vec<f32>)> = lens
                .iter()
                .enumerate()
                .map(|(i, &l)| kv(l, width, 20 + i as u32))
                .collect();
            let qs: Vec<Vec<f32>> = (0..lens.len())
                .map(|i| {
                    data(n_rep * hd, 40 + i as u32)
                        .iter()
                        .map(|x| x * 3.0)
                        .collect()
                })
                .collect();
            let rows: Vec<AttnRow> = (0..lens.len())
                .map(|i| AttnRow {
                    q: &qs[i],
                    k: &own[i].0,
                    v: &own[i].1,
                })
                .collect();
            let scale = 1.0 / (hd as f32).sqrt();
            for g in 0..nkv {
                let shape = (g * hd, width, n_rep, hd);
                let y = attend_shared_with((&pk, &pv), &rows, shape, scale, true);
                assert_eq!(y.len(), lens.len() * n_rep * hd);
                let ys = attend_shared_with((&pk, &pv), &rows, shape, scale, false);
                assert!(y == ys, "scalar and simd differ (hd {hd})");
                // Each row alone, and the rows reversed: the same bits.
                for (m, r) in rows.iter().enumerate() {
                    let one = AttnRow {
                        q: r.q,
                        k: r.k,
                        v: r.v,
                    };
                    let alone = attend_shared((&pk, &pv), &[one], shape, scale);
                    assert!(
                        alone == y[m * n_rep * hd..(m + 1) * n_rep * hd],
                        "row {m} alone"
                    );
                }
                let rev: Vec<AttnRow> = rows
                    .iter()
                    .rev()
                    .map(|r| AttnRow {
                        q: r.q,
                        k: r.k,
                        v: r.v,
                    })
                    .collect();
                let yr = attend_shared((&pk, &pv), &rev, shape, scale);
                let per = n_rep * hd;
                for m in 0..lens.len() {
                    let back = lens.len() - 1 - m;
                    assert!(yr[back * per..(back + 1) * per] == y[m * per..(m + 1) * per]);
                }
                // Against the textbook softmax(q k^T scale) v in f64.
                for (m, r) in rows.iter().enumerate() {
                    let len = lens[m];
                    let key = |j: usize, c: usize| -> f64 {
                        let (blocked, jj) = if j < 37 {
                            (&pk, j)
                        } else {
                            (&own[m].0, j - 37)
                        };
                        blocked[((jj / KB) * width + g * hd + c) * KB + jj % KB] as f64
                    };
                    let val = |j: usize, c: usize| -> f64 {
                        if j < 37 {
                            pv[j * width + g * hd + c] as f64
                        } else {
                            r.v[(j - 37) * width + g * hd + c] as f64
                        }
                    };
                    for a in 0..n_rep {
                        let q = &r.q[a * hd..(a + 1) * hd];
                        let s: Vec<f64> = (0..37 + len)
                            .map(|j| {
                                (0..hd).map(|c| q[c] as f64 * key(j, c)).sum::<f64>() * scale as f64
                            })
                            .collect();
                        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                        let sum: f64 = e.iter().sum();
                        for c in 0..hd {
                            let want: f64 = (0..37 + len).map(|j| e[j] / sum * val(j, c)).sum();
                            let got = y[(m * n_rep + a) * hd + c] as f64;
                            assert!((got - want).abs() < 1e-5, "hd {hd} row {m} head {a} ch {c}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bf16_products_are_the_paired_fma_chain_row_invariant_and_the_same_with_or_without_simd() {
        for (n, k) in [(70, 37), (33, 64), (5, 16), (129, 200), (32, 1)] {
            let w: Vec<Bf16> = data(n * k, 9)
                .iter()
                .map(|&v| Bf16::from_f32(v * 1.7))
                .collect();
            let pk = PairPanels::pack(&w, n, k);
            let x = data(13 * k, 10);
            let y = matmul_nt_with(&x, 13, &pk, true);
            let xb: Vec<f32> = x.iter().map(|&v| Bf16::from_f32(v).get()).collect();
            for j in 0..13 {
                for i in 0..n {
                    let want: f64 = (0..k)
                        .map(|kk| w[i * k + kk].get() as f64 * xb[j * k + kk] as f64)
                        .sum();
                    assert!((y[j * n + i] as f64 - want).abs() < 1e-4, "({j}, {i})");
                    // Pairs in order, the odd input first within a pair.
                    let mut acc = 0f32;
                    for kk in (0..k).step_by(2) {
                        if kk + 1 < k {
                            acc = w[i * k + kk + 1].get().mul_add(xb[j * k + kk + 1], acc);
                        }
                        acc = w[i * k + kk].get().mul_add(xb[j * k + kk], acc);
                    }
                    assert_eq!(y[j * n + i].to_bits(), acc.to_bits(), "({j}, {i})");
                }
            }
            assert!(
                matmul_nt_with(&x, 13, &pk, false) == y,
                "scalar and simd differ"
            );
            for j in 0..13 {
                let one = matmul_nt_with(&x[j * k..(j + 1) * k], 1, &pk, true);
                assert!(one == y[j * n..(j + 1) * n], "row {j} alone");
            }
        }
    }

    /// The scalar emulation of one `vdpbf16ps` lane against the instruction, where the CPU has
    /// it: random pairs over a wide range of exponents, and subnormal inputs and results.
    #[test]
    fn dot_pair_is_what_vdpbf16ps_computes() {
        if !bf16_dot_available() {
            eprintln!("no AVX-512 BF16 here: nothing to compare");
            return;
        }
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut cases: Vec<(f32, u32, u32)> = Vec::new();
        for _ in 0..20_000 {
            let val = |r: u64| {
                let m = (r % 4001) as f32 / 200.0 - 10.0;
                m * 2f32.powi(((r >> 20) % 60) as i32 - 30)
            };
            let pair =
                |a: f32, b: f32| Bf16::from_f32(a).0 as u32 | (Bf16::from_f32(b).0 as u32) << 16;
            let (a, b, c, d) = (val(next()), val(next()), val(next()), val(next()));
            cases.push((val(next()), pair(a, b), pair(c, d)));
        }
        let tiny = f32::MIN_POSITIVE;
        let sub = Bf16(0x0001).0 as u32; // a bf16 subnormal
        for (acc, w, x) in [
            (0.0, sub, Bf16::from_f32(2f32.powi(100)).0 as u32),
            (f32::from_bits(1), 0, 0),
            (
                0.0,
                Bf16::from_f32(2f32.powi(-70)).0 as u32,
                Bf16::from_f32(2f32.powi(-70)).0 as u32,
            ),
            (
                -0.0,
                Bf16::from_f32(-2f32.powi(-70)).0 as u32,
                Bf16::from_f32(2f32.powi(-70)).0 as u32,
            ),
            (
                tiny,
                Bf16::from_f32(-1.0).0 as u32,
                Bf16::from_f32(tiny).0 as u32,
            ),
        ] {
            cases.push((acc, w, x));
        }
        // 16 lanes at a time: a panel of one pair, one row.
        for chunk in cases.chunks(16) {
            for (lane, &(acc, w, x)) in chunk.iter().enumerate() {
                let mut panel = [0u32; P];
                panel[lane] = w;
                let mut t = [[0f32; P]; R];
                t[0][lane] = acc;
                // SAFETY: checked above that the CPU has AVX-512F and BF16.
                let hw = unsafe {
                    use std::arch::x86_64::*;
                    let r = _mm512_dpbf16_ps(
                        _mm512_loadu_ps(t[0].as_ptr()),
                        std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                            panel.as_ptr() as *const _,
                        )),
                        std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(x as i32)),
                    );
                    let mut o = [0f32; 16];
                    _mm512_storeu_ps(o.as_mut_ptr(), r);
                    o[lane]
                };
                let em = dot_pair(acc, w, x);
                assert_eq!(
                    hw.to_bits(),
                    em.to_bits(),
                    "acc {acc:e} w {w:08x} x {x:08x}"
                );
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
