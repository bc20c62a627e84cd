//! The packed training path: many sequences in one `[rows, hidden]` matrix, with no padding, and
//! a prompt shared by several completions computed once.
//!
//! A [`Packed`] batch is a list of segments of rows. A segment attends causally to itself and,
//! when it has one, to the whole of a prefix segment: a group's K completions of one prompt are
//! K segments whose prefix is the prompt's segment, so the prompt's forward pass runs once for
//! the group instead of K times, and its backward pass receives the K completions' gradients
//! summed. This is the same function as K separate sequences `prompt + completion_i` (each
//! completion row sees the prompt's rows and the earlier rows of its own completion, at the same
//! positions), computed with fewer operations; only the rounding differs.
//!
//! Every row-wise operation (norms, projections, MLP) runs on all rows of the batch at once; the
//! custom operations below fuse what the composed candle ops of [`Llama::hidden_train`] spread
//! over many tensors (RMSNorm: six, rotary embedding: seven, SwiGLU: three, attention: a dozen
//! with the reshapes), each with its backward, so that a step allocates and touches far less
//! memory. Every reduction runs in a fixed order and parallel tasks write disjoint outputs, so
//! the results do not depend on the thread count.

use super::{CResult, Llama, Proj, with_f32};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Device, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Rows `start..start + len` of a packed batch, attending to themselves (causally) and to all of
/// the rows of `prefix` (`(start, len)` of another segment), if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start: usize,
    pub len: usize,
    pub prefix: Option<(usize, usize)>,
}

/// A packed batch: token ids and positions of every row, and the segments they form.
#[derive(Debug, Clone, Default)]
pub struct Packed {
    pub ids: Vec<u32>,
    pub positions: Vec<u32>,
    pub segments: Vec<Segment>,
}

impl Packed {
    /// Append a segment of `ids` at positions `first_position..`, attending to `prefix` (a
    /// segment appended before); returns its `(start, len)`.
    pub fn push(
        &mut self,
        ids: &[u32],
        first_position: usize,
        prefix: Option<(usize, usize)>,
    ) -> (usize, usize) {
        let start = self.ids.len();
        self.ids.extend_from_slice(ids);
        self.positions
            .extend((0..ids.len()).map(|i| (first_position + i) as u32));
        if !ids.is_empty() {
            self.segments.push(Segment {
                start,
                len: ids.len(),
                prefix,
            });
        }
        (start, ids.len())
    }

    pub fn rows(&self) -> usize {
        self.ids.len()
    }
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> CResult<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("{op}: f32 only");
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: needs a contiguous input");
    };
    Ok(&data[a..b])
}

/// A tensor's f32 data, read in place where it is contiguous (the backward passes used to copy
/// every input), copied where it is strided.
enum Data<'a> {
    Held(candle_core::StorageRef<'a>, std::ops::Range<usize>),
    Owned(Vec<f32>),
}

impl std::ops::Deref for Data<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            Data::Held(s, r) => match &**s {
                candle_core::Storage::Cpu(CpuStorage::F32(d)) => &d[r.clone()],
                _ => unreachable!("values holds f32 CPU storage only"),
            },
            Data::Owned(v) => v,
        }
    }
}

fn values(t: &Tensor) -> CResult<Data<'_>> {
    if let Some((a, b)) = t.layout().contiguous_offsets() {
        let (s, _) = t.storage_and_layout();
        if matches!(&*s, candle_core::Storage::Cpu(CpuStorage::F32(_))) {
            return Ok(Data::Held(s, a..b));
        }
    }
    Ok(Data::Owned(
        t.flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?,
    ))
}

/// Rows per parallel task of the row-wise ops (fixed, so that reductions across rows are summed
/// in the same order whatever the thread count).
const ROWS_PER_TASK: usize = 32;

/// RMSNorm over the last dimension, `x * w / sqrt(mean(x^2) + eps)`, with its backward.
struct RmsNorm {
    eps: f32,
}

fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ss: f32 = x.iter().map(|v| v * v).sum();
    1.0 / (ss / x.len() as f32 + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "packed-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = contiguous(s1, l1, self.name())?;
        let w = contiguous(s2, l2, self.name())?;
        let h = w.len();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(h * ROWS_PER_TASK)
            .zip(x.par_chunks(h * ROWS_PER_TASK))
            .for_each(|(yc, xc)| {
                for (yr, xr) in yc.chunks_mut(h).zip(xc.chunks(h)) {
                    let r = inv_rms(xr, self.eps);
                    for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(w) {
                        *o = v * r * g;
                    }
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let want_w = w.track_op();
        let (xv, wv, gv) = (values(x)?, values(w)?, values(grad)?);
        let h = wv.len();
        let mut dx = vec![0f32; xv.len()];
        // dx_j = r (w_j g_j - x_j r^2 mean_i(w_i g_i x_i)); dw_j = sum over rows of g_j x_j r.
        let partial_dw: Vec<Vec<f32>> = dx
            .par_chunks_mut(h * ROWS_PER_TASK)
            .zip(xv.par_chunks(h * ROWS_PER_TASK))
            .zip(gv.par_chunks(h * ROWS_PER_TASK))
            .map(|((dc, xc), gc)| {
                let mut dw = if want_w { vec![0f32; h] } else { Vec::new() };
                for ((dr, xr), gr) in dc.chunks_mut(h).zip(xc.chunks(h)).zip(gc.chunks(h)) {
                    let r = inv_rms(xr, self.eps);
                    let dot: f32 = xr
                        .iter()
                        .zip(gr)
                        .zip(wv.iter())
                        .map(|((a, b), c)| a * b * c)
                        .sum();
                    let c = r * r * dot / h as f32;
                    for j in 0..h {
                        dr[j] = r * (wv[j] * gr[j] - xr[j] * c);
                    }
                    if want_w {
                        for j in 0..h {
                            dw[j] += gr[j] * xr[j] * r;
                        }
                    }
                }
                dw
            })
            .collect();
        let dx = Tensor::from_vec(dx, x.shape(), x.device())?;
        let dw = if want_w {
            let mut dw = vec![0f32; h];
            for p in &partial_dw {
                for (a, b) in dw.iter_mut().zip(p) {
                    *a += b;
                }
            }
            Some(Tensor::from_vec(dw, w.shape(), w.device())?)
        } else {
            None
        };
        Ok((Some(dx), dw))
    }
}

/// Rotary embedding (Hugging Face's rotate-half convention) of `x` `[rows, heads, head_dim]`,
/// each row at its own position: `cos`/`sin` are `[rows, head_dim / 2]`.
struct Rope {
    cos: Arc<Vec<f32>>,
    sin: Arc<Vec<f32>>,
    /// Direction: 1 rotates by +angle (the forward), -1 by -angle (its backward).
    sign: f32,
}

impl Rope {
    fn apply(&self, x: &[f32], heads: usize, hd: usize) -> Vec<f32> {
        let half = hd / 2;
        let mut y = vec![0f32; x.len()];
        let row = heads * hd;
        y.par_chunks_mut(row * ROWS_PER_TASK)
            .zip(x.par_chunks(row * ROWS_PER_TASK))
            .enumerate()
            .for_each(|(t, (yc, xc))| {
                for (i, (yr, xr)) in yc.chunks_mut(row).zip(xc.chunks(row)).enumerate() {
                    let r = t * ROWS_PER_TASK + i;
                    let cos = &self.cos[r * half..(r + 1) * half];
                    let sin = &self.sin[r * half..(r + 1) * half];
                    for (yh, xh) in yr.chunks_mut(hd).zip(xr.chunks(hd)) {
                        for f in 0..half {
                            let (a, b) = (xh[f], xh[f + half]);
                            let (c, s) = (cos[f], self.sign * sin[f]);
                            yh[f] = a * c - b * s;
                            yh[f + half] = b * c + a * s;
                        }
                    }
                }
            });
        y
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "packed-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = contiguous(s, l, self.name())?;
        let (_, heads, hd) = l.shape().dims3()?;
        Ok((CpuStorage::F32(self.apply(x, heads, hd)), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let (_, heads, hd) = x.dims3()?;
        let back = Rope {
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            sign: -self.sign,
        };
        let g = back.apply(&values(grad)?, heads, hd);
        Ok(Some(Tensor::from_vec(g, x.shape(), x.device())?))
    }
}

/// `silu(g) * u`, with its backward.
struct SwiGlu;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "packed-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let g = contiguous(s1, l1, self.name())?;
        let u = contiguous(s2, l2, self.name())?;
        if g.len() != u.len() {
            candle_core::bail!("packed-swiglu: shapes differ");
        }
        let mut y = vec![0f32; g.len()];
        y.par_chunks_mut(4096)
            .zip(g.par_chunks(4096).zip(u.par_chunks(4096)))
            .for_each(|(yc, (gc, uc))| {
                for ((o, &a), &b) in yc.iter_mut().zip(gc).zip(uc) {
                    *o = a * sigmoid(a) * b;
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let (gv, uv, dy) = (values(g)?, values(u)?, values(grad)?);
        let mut dg = vec![0f32; gv.len()];
        let mut du = vec![0f32; gv.len()];
        dg.par_chunks_mut(4096)
            .zip(du.par_chunks_mut(4096))
            .enumerate()
            .for_each(|(c, (dgc, duc))| {
                let o = c * 4096;
                for i in 0..dgc.len() {
                    let (a, b, d) = (gv[o + i], uv[o + i], dy[o + i]);
                    let s = sigmoid(a);
                    duc[i] = d * a * s;
                    dgc[i] = d * b * s * (1.0 + a * (1.0 - s));
                }
            });
        Ok((
            Some(Tensor::from_vec(dg, g.shape(), g.device())?),
            Some(Tensor::from_vec(du, u.shape(), u.device())?),
        ))
    }
}

/// A matrix of `f32` in memory: first element, row stride and column stride (in elements).
#[derive(Clone, Copy)]
struct Mat {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

/// `dst (m x n, row stride dst_rs) = [dst +] a (m x k) * b (k x n)`, on the calling thread.
///
/// # Safety
/// Every element addressed through `dst`, `a` and `b` must be in bounds, and `dst` must not be
/// written by anyone else meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    acc: bool,
    a: Mat,
    b: Mat,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !acc {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: in bounds by the caller's contract.
                    unsafe { *dst.offset(i as isize * dst_rs + j as isize) = 0.0 };
                }
            }
        }
        return;
    }
    // SAFETY: the caller's contract; gemm reads a and b and writes dst within m x n x k.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            acc,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `a (m x k) * b (k x n)` into a new matrix whose element `(i, j)` lies at `i * rs + j * cs`,
/// by `gemm` on rayon's threads as candle's matmul runs it (same arguments, so the same values).
///
/// # Safety
/// `a` and `b` must address `m x k` and `k x n` elements in bounds; `(rs, cs)` must map the
/// `m x n` elements one to one onto `0..m * n`.
unsafe fn gemm_new(m: usize, n: usize, k: usize, a: Mat, b: Mat, rs: isize, cs: isize) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: a and b by the caller's contract. With `read_dst` false gemm never reads dst
    // (gemm-common sets alpha to zero, and then writes dst without reading it, also for k = 0)
    // and writes each of its m x n elements, which (rs, cs) place one to one within `out`'s
    // capacity (the caller's contract), so every element is initialized before `set_len`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            cs,
            rs,
            false,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
        out.set_len(m * n);
    }
    out
}

/// `y = x W^T` for `x` `[rows, in]` and `W` `[out, in]`, with its own backward: `dx = g W` and
/// `dW = x^T g`, the latter written straight into `W`'s `[out, in]` layout. The same products as
/// candle's `x.matmul(&w.t())` and its backward (same `gemm` calls, so the same values), but
/// each gradient is allocated and written once: candle's backward adds `dW`'s transposed view
/// into a fresh tensor of zeros, and the transpose node and its matmul add two more.
pub(super) struct Linear;

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let (x, w) = (contiguous(s1, l1, "linear")?, contiguous(s2, l2, "linear")?);
        let ((m, k), (n, k2)) = (l1.shape().dims2()?, l2.shape().dims2()?);
        if k != k2 {
            candle_core::bail!("linear: x [{m}, {k}] and W [{n}, {k2}] do not match");
        }
        let (x, w) = (mat(x, k as isize, 1), mat(w, 1, k as isize));
        // SAFETY: x is m x k and W^T k x n within their slices; (n, 1) is row-major m x n.
        let y = unsafe { gemm_new(m, n, k, x, w, n as isize, 1) };
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let ((m, k), n) = (x.dims2()?, w.dim(0)?);
        let (x, w, g) = (x.contiguous()?, w.contiguous()?, grad.contiguous()?);
        let (dx, dw) = with_f32(&x, |xv| {
            with_f32(&w, |wv| {
                with_f32(&g, |gv| {
                    // x^T: x's [m, k] read with rows and columns swapped.
                    let (xt, wm, gm) = (
                        mat(xv, 1, k as isize),
                        mat(wv, k as isize, 1),
                        mat(gv, n as isize, 1),
                    );
                    // SAFETY: g is m x n, W n x k, x m x k within their slices (their shapes);
                    // dx is row-major m x k; x^T g (k x n) lands transposed, as W's n x k.
                    unsafe {
                        let dx = gemm_new(m, k, n, gm, wm, k as isize, 1);
                        let dw = gemm_new(k, n, m, xt, gm, 1, k as isize);
                        (dx, dw)
                    }
                })
            })
        })???;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (m, k), dev)?),
            Some(Tensor::from_vec(dw, (n, k), dev)?),
        ))
    }
}

fn mat(v: &[f32], rs: isize, cs: isize) -> Mat {
    Mat {
        ptr: v.as_ptr(),
        rs,
        cs,
    }
}

struct SendPtr(*mut f32);
// SAFETY: the tasks that share one write disjoint elements (see each use).
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// Causal attention over packed segments: `q` `[rows, heads, hd]`, `k` and `v`
/// `[rows, kv_heads, hd]` (query head `h` uses key/value head `h / (heads / kv_heads)`);
/// out `[rows, heads, hd]`. Row `i` of a segment sees all of its prefix's rows and rows `0..=i`
/// of its own.
struct Attention {
    segments: Arc<Vec<Segment>>,
    scale: f32,
}

/// The dimensions of an attention call.
#[derive(Clone, Copy)]
struct Dims {
    heads: usize,
    kv_heads: usize,
    hd: usize,
}

impl Dims {
    fn q_block(&self, base: *const f32, row: usize, head: usize) -> Mat {
        Mat {
            // SAFETY (of the callers' offsets): row < rows, head < heads.
            ptr: base.wrapping_add((row * self.heads + head) * self.hd),
            rs: (self.heads * self.hd) as isize,
            cs: 1,
        }
    }

    fn kv_block(&self, base: *const f32, row: usize, head: usize) -> Mat {
        Mat {
            ptr: base.wrapping_add((row * self.kv_heads + head) * self.hd),
            rs: (self.kv_heads * self.hd) as isize,
            cs: 1,
        }
    }
}

fn transpose(m: Mat) -> Mat {
    Mat {
        ptr: m.ptr,
        rs: m.cs,
        cs: m.rs,
    }
}

/// Scores of one segment and query head, softmaxed in place: `p` `[len, pl + len]` where `pl` is
/// the prefix's length; masked entries are 0.
fn probabilities(
    d: Dims,
    seg: &Segment,
    head: usize,
    scale: f32,
    q: *const f32,
    k: *const f32,
    p: &mut [f32],
) {
    let kvh = head / (d.heads / d.kv_heads);
    let (ps, pl) = seg.prefix.unwrap_or((0, 0));
    let s = pl + seg.len;
    let qb = d.q_block(q, seg.start, head);
    // SAFETY: the blocks lie within q and k (segments index valid rows); p has len x s elements.
    unsafe {
        if pl > 0 {
            mm(
                seg.len,
                pl,
                d.hd,
                p.as_mut_ptr(),
                s as isize,
                false,
                qb,
                transpose(d.kv_block(k, ps, kvh)),
            );
        }
        mm(
            seg.len,
            seg.len,
            d.hd,
            p.as_mut_ptr().add(pl),
            s as isize,
            false,
            qb,
            transpose(d.kv_block(k, seg.start, kvh)),
        );
    }
    for (i, row) in p.chunks_mut(s).enumerate() {
        let n = pl + i + 1;
        let max = row[..n]
            .iter()
            .fold(f32::NEG_INFINITY, |m, &x| m.max(x * scale));
        let mut sum = 0f32;
        for x in &mut row[..n] {
            *x = (*x * scale - max).exp();
            sum += *x;
        }
        let inv = 1.0 / sum;
        row[..n].iter_mut().for_each(|x| *x *= inv);
        row[n..].iter_mut().for_each(|x| *x = 0.0);
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "packed-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let q = contiguous(s1, l1, self.name())?;
        let k = contiguous(s2, l2, self.name())?;
        let v = contiguous(s3, l3, self.name())?;
        let (rows, heads, hd) = l1.shape().dims3()?;
        let (_, kv_heads, _) = l2.shape().dims3()?;
        let d = Dims {
            heads,
            kv_heads,
            hd,
        };
        let mut out = vec![0f32; rows * heads * hd];
        let o = SendPtr(out.as_mut_ptr());
        let o = &o;
        let tasks: Vec<(usize, usize)> = (0..self.segments.len())
            .flat_map(|s| (0..heads).map(move |h| (s, h)))
            .collect();
        tasks.par_iter().for_each(|&(si, h)| {
            let seg = &self.segments[si];
            let (ps, pl) = seg.prefix.unwrap_or((0, 0));
            let s = pl + seg.len;
            let mut p = vec![0f32; seg.len * s];
            probabilities(d, seg, h, self.scale, q.as_ptr(), k.as_ptr(), &mut p);
            let kvh = h / (heads / kv_heads);
            let dst = o.0.wrapping_add((seg.start * heads + h) * hd);
            let pm = |off: usize| Mat {
                ptr: p.as_ptr().wrapping_add(off),
                rs: s as isize,
                cs: 1,
            };
            // SAFETY: task (segment, head) writes only its segment's rows of head h.
            unsafe {
                mm(
                    seg.len,
                    hd,
                    seg.len,
                    dst,
                    (heads * hd) as isize,
                    false,
                    pm(pl),
                    d.kv_block(v.as_ptr(), seg.start, kvh),
                );
                if pl > 0 {
                    mm(
                        seg.len,
                        hd,
                        pl,
                        dst,
                        (heads * hd) as isize,
                        true,
                        pm(0),
                        d.kv_block(v.as_ptr(), ps, kvh),
                    );
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, heads, hd) = q.dims3()?;
        let (_, kv_heads, _) = k.dims3()?;
        let d = Dims {
            heads,
            kv_heads,
            hd,
        };
        let n_rep = heads / kv_heads;
        let (qv, kv, vv, gv) = (values(q)?, values(k)?, values(v)?, values(grad)?);
        let mut dq = vec![0f32; qv.len()];
        let mut dk = vec![0f32; kv.len()];
        let mut dv = vec![0f32; vv.len()];
        let (dqp, dkp, dvp) = (
            SendPtr(dq.as_mut_ptr()),
            SendPtr(dk.as_mut_ptr()),
            SendPtr(dv.as_mut_ptr()),
        );
        let (dqp, dkp, dvp) = (&dqp, &dkp, &dvp);
        let tasks: Vec<(usize, usize)> = (0..self.segments.len())
            .flat_map(|s| (0..kv_heads).map(move |g| (s, g)))
            .collect();
        let kv_rs = (kv_heads * hd) as isize;
        // Each task: one segment and one key/value head (its n_rep query heads). It writes dq of
        // its rows and heads, dk/dv of its own rows and key/value head (no other task's queries
        // see them, except a prompt's rows seen as a prefix: those contributions come back in
        // per-task buffers and are added below, in task order).
        let prefix_grads: Vec<Option<(Vec<f32>, Vec<f32>)>> = tasks
            .par_iter()
            .map(|&(si, g)| {
                let seg = &self.segments[si];
                let (ps, pl) = seg.prefix.unwrap_or((0, 0));
                let s = pl + seg.len;
                let mut p = vec![0f32; seg.len * s];
                let mut dp = vec![0f32; seg.len * s];
                let mut bk = vec![0f32; pl * hd];
                let mut bv = vec![0f32; pl * hd];
                for r in 0..n_rep {
                    let h = g * n_rep + r;
                    probabilities(d, seg, h, self.scale, qv.as_ptr(), kv.as_ptr(), &mut p);
                    let go = d.q_block(gv.as_ptr(), seg.start, h);
                    let qb = d.q_block(qv.as_ptr(), seg.start, h);
                    let first = r == 0;
                    // SAFETY: the blocks lie within their buffers; this task alone writes dq of
                    // (its rows, head h), dk/dv of (its rows, head g), and its own buffers.
                    unsafe {
                        // dP = dO V^T
                        if pl > 0 {
                            mm(
                                seg.len,
                                pl,
                                hd,
                                dp.as_mut_ptr(),
                                s as isize,
                                false,
                                go,
                                transpose(d.kv_block(vv.as_ptr(), ps, g)),
                            );
                        }
                        mm(
                            seg.len,
                            seg.len,
                            hd,
                            dp.as_mut_ptr().add(pl),
                            s as isize,
                            false,
                            go,
                            transpose(d.kv_block(vv.as_ptr(), seg.start, g)),
                        );
                    }
                    // dS = P (dP - sum_j P dP), times the scale; kept in dp.
                    for (pr, dr) in p.chunks(s).zip(dp.chunks_mut(s)) {
                        let dot: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                        for (x, &pp) in dr.iter_mut().zip(pr) {
                            *x = pp * (*x - dot) * self.scale;
                        }
                    }
                    let pm = |buf: &Vec<f32>, off: usize| Mat {
                        ptr: buf.as_ptr().wrapping_add(off),
                        rs: s as isize,
                        cs: 1,
                    };
                    let dq_dst = dqp.0.wrapping_add((seg.start * heads + h) * hd);
                    let dk_own = dkp.0.wrapping_add((seg.start * kv_heads + g) * hd);
                    let dv_own = dvp.0.wrapping_add((seg.start * kv_heads + g) * hd);
                    // SAFETY: as above.
                    unsafe {
                        // dQ = dS K
                        mm(
                            seg.len,
                            hd,
                            seg.len,
                            dq_dst,
                            (heads * hd) as isize,
                            false,
                            pm(&dp, pl),
                            d.kv_block(kv.as_ptr(), seg.start, g),
                        );
                        if pl > 0 {
                            mm(
                                seg.len,
                                hd,
                                pl,
                                dq_dst,
                                (heads * hd) as isize,
                                true,
                                pm(&dp, 0),
                                d.kv_block(kv.as_ptr(), ps, g),
                            );
                        }
                        // dK_own += dS_own^T Q, dV_own += P_own^T dO
                        mm(
                            seg.len,
                            hd,
                            seg.len,
                            dk_own,
                            kv_rs,
                            true,
                            transpose(pm(&dp, pl)),
                            qb,
                        );
                        mm(
                            seg.len,
                            hd,
                            seg.len,
                            dv_own,
                            kv_rs,
                            true,
                            transpose(pm(&p, pl)),
                            go,
                        );
                        if pl > 0 {
                            mm(
                                pl,
                                hd,
                                seg.len,
                                bk.as_mut_ptr(),
                                hd as isize,
                                !first,
                                transpose(pm(&dp, 0)),
                                qb,
                            );
                            mm(
                                pl,
                                hd,
                                seg.len,
                                bv.as_mut_ptr(),
                                hd as isize,
                                !first,
                                transpose(pm(&p, 0)),
                                go,
                            );
                        }
                    }
                }
                (pl > 0).then_some((bk, bv))
            })
            .collect();
        for (&(si, g), bufs) in tasks.iter().zip(prefix_grads) {
            let Some((bk, bv)) = bufs else { continue };
            let (ps, pl) = self.segments[si].prefix.unwrap_or((0, 0));
            for i in 0..pl {
                let o = ((ps + i) * kv_heads + g) * hd;
                for c in 0..hd {
                    dk[o + c] += bk[i * hd + c];
                    dv[o + c] += bv[i * hd + c];
                }
            }
        }
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), q.device())?),
            Some(Tensor::from_vec(dk, k.shape(), k.device())?),
            Some(Tensor::from_vec(dv, v.shape(), v.device())?),
        ))
    }
}

impl Llama {
    /// The final hidden states `[rows, hidden]` (after the last norm) of a packed batch: the
    /// training path of [`Llama::hidden_train`] for many sequences and shared prompts at once
    /// (see the module docs). Differentiable with respect to the weights and LoRA adapters.
    pub fn hidden_packed(&self, batch: &Packed) -> CResult<Tensor> {
        let rows = batch.rows();
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        for seg in &batch.segments {
            let (ps, pl) = seg.prefix.unwrap_or((0, 0));
            if seg.start + seg.len > rows || ps + pl > rows {
                candle_core::bail!("packed batch: a segment lies outside its {rows} rows");
            }
        }
        if let Some(&p) = batch.positions.iter().max() {
            self.check_len(p as usize + 1)?;
        }
        let half = hd / 2;
        let mut cos = Vec::with_capacity(rows * half);
        let mut sin = Vec::with_capacity(rows * half);
        for &p in &batch.positions {
            let p = p as usize;
            cos.extend_from_slice(&self.rope_cos[p * half..(p + 1) * half]);
            sin.extend_from_slice(&self.rope_sin[p * half..(p + 1) * half]);
        }
        let (cos, sin) = (Arc::new(cos), Arc::new(sin));
        let rope = || Rope {
            cos: cos.clone(),
            sin: sin.clone(),
            sign: 1.0,
        };
        let segments = Arc::new(batch.segments.clone());
        let scale = 1.0 / (hd as f32).sqrt();
        let eps = self.eps();
        let ids = Tensor::from_slice(&batch.ids, rows, &Device::Cpu)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        let heads = |p: &Proj, h: &Tensor, n: usize| -> CResult<Tensor> {
            p.forward(h)?.reshape((rows, n, hd))
        };
        for l in &self.layers {
            let h = x.apply_op2(&l.input_norm, RmsNorm { eps })?;
            let q = heads(&l.q, &h, nh)?.apply_op1(rope())?;
            let k = heads(&l.k, &h, nkv)?.apply_op1(rope())?;
            let v = heads(&l.v, &h, nkv)?;
            let y = q.apply_op3(
                &k,
                &v,
                Attention {
                    segments: segments.clone(),
                    scale,
                },
            )?;
            x = (x + l.o.forward(&y.reshape((rows, nh * hd))?)?)?;
            let h = x.apply_op2(&l.post_norm, RmsNorm { eps })?;
            let a = l.gate.forward(&h)?.apply_op2(&l.up.forward(&h)?, SwiGlu)?;
            x = (&x + l.down.forward(&a)?)?;
        }
        x.apply_op2(&self.norm, RmsNorm { eps })
    }
}
