//! Batched decoding for continuous batching: any set of sequences, each at its own position and
//! with its own key/value cache, advances by one token in one call ([`Llama::decode_step`]).
//!
//! **Batch invariance.** A sequence's logits are a function of its own tokens only, bit for
//! bit: they do not depend on which other sequences share the call, on their number or order,
//! or on the thread count. A step is computed here, not by candle: the matrix products by
//! [`kernel::matmul_nt`], whose result for a row never depends on the other rows (candle's
//! `gemm` changes its order of summation with the number of rows); RMSNorm, SiLU, the
//! residual sums and the rotary embedding one row at a time; attention per sequence and head
//! over that sequence's own cache in position order (no padding, no mask, no copy when a
//! sequence leaves).
//!
//! A prompt is prefilled once ([`Llama::prefill`], the fused path over the whole prompt) and its
//! keys and values ([`Prefix`]) are shared, read-only, by every sequence that continues it.

use super::{CResult, Llama, kernel, with_f32};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

/// The most sequences of one prompt in one attention task (see [`Llama::decode_step`]).
const ATTN_ROWS: usize = 4;

/// The keys and values of a prompt, shared by the sequences that continue it: per layer, the
/// keys in blocks of [`kernel::KB`] positions ([`kernel::push_key`]'s layout) and the values
/// `[len, kv_heads * head_dim]` (position-major).
pub struct Prefix {
    len: usize,
    width: usize,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Prefix {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        4 * self.k.iter().chain(&self.v).map(Vec::len).sum::<usize>()
    }
}

/// One sequence being decoded: a shared prompt [`Prefix`] and the keys and values of the tokens
/// generated after it, per layer, laid out as the prefix's.
pub struct SeqCache {
    prefix: Arc<Prefix>,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

impl SeqCache {
    /// A sequence continuing `prefix`, with room reserved for `reserve` generated tokens.
    pub fn new(prefix: Arc<Prefix>, reserve: usize) -> Self {
        let layers = prefix.k.len();
        let width = prefix.width;
        let keys = || Vec::with_capacity(reserve.div_ceil(kernel::KB) * kernel::KB * width);
        let values = || Vec::with_capacity(reserve * width);
        SeqCache {
            k: (0..layers).map(|_| keys()).collect(),
            v: (0..layers).map(|_| values()).collect(),
            prefix,
            len: 0,
        }
    }

    /// The prompt's keys and values it continues.
    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    /// Positions in the cache (prompt and generated tokens).
    pub fn pos(&self) -> usize {
        self.prefix.len + self.len
    }

    /// Bytes of keys and values this sequence holds itself (allocated; the prefix not counted).
    pub fn bytes(&self) -> usize {
        4 * self
            .k
            .iter()
            .chain(&self.v)
            .map(Vec::capacity)
            .sum::<usize>()
    }
}

/// Hugging Face's rotate-half rotary embedding of one head at one position, in place.
#[inline]
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    for i in 0..half {
        let (a, b) = (x[i], x[i + half]);
        x[i] = a * cos[i] - b * sin[i];
        x[i + half] = a * sin[i] + b * cos[i];
    }
}

impl Llama {
    /// Run `prompt` (token ids) through the fused path; returns its keys and values and the
    /// logits `[vocab]` of its last position.
    pub fn prefill(&self, prompt: &[u32]) -> CResult<(Arc<Prefix>, Vec<f32>)> {
        let t = prompt.len();
        self.check_len(t)?;
        let mut cache = super::KvCache::new(&self.cfg, 1, t)?;
        let ids = Tensor::from_slice(prompt, (1, t), &Device::Cpu)?;
        let logits: Vec<f32> = self
            .forward_infer(&ids, &mut cache, true)?
            .flatten_all()?
            .to_vec1()?;
        // [1, kv_heads, t, head_dim] -> [t, kv_heads * head_dim]
        let rows = |c: &Tensor| -> CResult<Vec<f32>> {
            c.narrow(2, 0, t)?
                .squeeze(0)?
                .transpose(0, 1)?
                .contiguous()?
                .flatten_all()?
                .to_vec1()
        };
        let width = self.cfg.kv_heads() * self.cfg.head_dim();
        let mut k = Vec::with_capacity(cache.k.len());
        for c in &cache.k {
            let mut blocked = Vec::new();
            for (j, key) in rows(c)?.chunks(width).enumerate() {
                kernel::push_key(&mut blocked, j, key);
            }
            k.push(blocked);
        }
        let v = cache.v.iter().map(rows).collect::<CResult<Vec<_>>>()?;
        Ok((
            Arc::new(Prefix {
                len: t,
                width,
                k,
                v,
            }),
            logits,
        ))
    }

    /// Append one token to each sequence (`tokens[i]` to `seqs[i]`) and return the next
    /// position's logits, `[seqs.len() * vocab]` row-major. Batch-invariant (see the module
    /// docs).
    pub fn decode_step(&self, seqs: &mut [&mut SeqCache], tokens: &[u32]) -> CResult<Vec<f32>> {
        let rows = seqs.len();
        if rows != tokens.len() {
            candle_core::bail!("{rows} sequences, {} tokens", tokens.len());
        }
        if rows == 0 {
            return Ok(Vec::new());
        }
        for s in seqs.iter() {
            self.check_len(s.pos() + 1)?;
        }
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let hidden = cfg.hidden_size;
        let n_rep = nh / nkv;
        let half = hd / 2;
        let scale = 1.0 / (hd as f32).sqrt();
        let eps = self.eps();
        let mut x = with_f32(&self.embed, |e| {
            let mut x = Vec::with_capacity(rows * hidden);
            for &t in tokens {
                let t = t as usize;
                if t >= e.len() / hidden {
                    return Err(candle_core::Error::Msg(format!(
                        "token id {t} out of range"
                    )));
                }
                x.extend_from_slice(&e[t * hidden..(t + 1) * hidden]);
            }
            Ok(x)
        })??;
        let positions: Vec<usize> = seqs.iter().map(|s| s.pos()).collect();
        // Rows by the prompt they continue, in row order.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (r, s) in seqs.iter().enumerate() {
            match groups
                .iter_mut()
                .find(|g| Arc::ptr_eq(&seqs[g[0]].prefix, &s.prefix))
            {
                Some(g) => g.push(r),
                None => groups.push(vec![r]),
            }
        }
        // At most ATTN_ROWS sequences per attention task: a prompt's 8 samples make 2 tasks
        // per key/value head, not 1, so that the tasks spread evenly over the threads.
        let groups: Vec<Vec<usize>> = groups
            .iter()
            .flat_map(|g| g.chunks(ATTN_ROWS).map(<[usize]>::to_vec))
            .collect();
        for (li, l) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &l.input_norm, hidden, eps)?;
            let [mut q, mut k, v]: [Vec<f32>; 3] =
                super::Proj::decode_many(&[&l.q, &l.k, &l.v], &h, rows)?
                    .try_into()
                    .expect("three products");
            // A few thousand operations a row: not worth a hand-off between threads.
            seqs.iter_mut()
                .zip(q.chunks_mut(nh * hd))
                .zip(k.chunks_mut(nkv * hd))
                .zip(v.chunks(nkv * hd))
                .zip(positions.iter())
                .for_each(|((((seq, q), k), v), &pos)| {
                    let cos = &self.rope_cos[pos * half..(pos + 1) * half];
                    let sin = &self.rope_sin[pos * half..(pos + 1) * half];
                    q.chunks_mut(hd).for_each(|h| rope(h, cos, sin));
                    k.chunks_mut(hd).for_each(|h| rope(h, cos, sin));
                    kernel::push_key(&mut seq.k[li], seq.len, k);
                    seq.v[li].extend_from_slice(v);
                });
            // Attention, one task per (prompt, key/value head, up to ATTN_ROWS of the prompt's
            // sequences): the sequences of a task read the prompt's keys and values once
            // between them.
            let tasks: Vec<(usize, usize)> = (0..groups.len())
                .flat_map(|gi| (0..nkv).map(move |g| (gi, g)))
                .collect();
            let seqs_ro: &[&mut SeqCache] = seqs;
            let outs: Vec<Vec<f32>> = tasks
                .par_iter()
                .with_max_len(1)
                .map(|&(gi, g)| {
                    let members = &groups[gi];
                    let prefix = &seqs_ro[members[0]].prefix;
                    let rows: Vec<kernel::AttnRow> = members
                        .iter()
                        .map(|&r| kernel::AttnRow {
                            q: &q[r * nh * hd + g * n_rep * hd..r * nh * hd + (g + 1) * n_rep * hd],
                            k: &seqs_ro[r].k[li],
                            v: &seqs_ro[r].v[li],
                        })
                        .collect();
                    kernel::attend_shared(
                        (&prefix.k[li], &prefix.v[li]),
                        &rows,
                        (g * hd, nkv * hd, n_rep, hd),
                        scale,
                    )
                })
                .collect();
            let mut y = vec![0f32; rows * nh * hd];
            for (&(gi, g), out) in tasks.iter().zip(&outs) {
                for (m, &r) in groups[gi].iter().enumerate() {
                    let at = r * nh * hd + g * n_rep * hd;
                    y[at..at + n_rep * hd]
                        .copy_from_slice(&out[m * n_rep * hd..(m + 1) * n_rep * hd]);
                }
            }
            add_into(&mut x, &l.o.decode(&y, rows)?);
            let h = rms_norm(&x, &l.post_norm, hidden, eps)?;
            let [mut g, u]: [Vec<f32>; 2] = super::Proj::decode_many(&[&l.gate, &l.up], &h, rows)?
                .try_into()
                .expect("two products");
            // SwiGLU, element by element (an exp each: at 64 rows, 98k per layer), rows shared
            // among the threads in blocks of 8.
            let inter = g.len() / rows;
            g.par_chunks_mut(inter * 8)
                .zip(u.par_chunks(inter * 8))
                .for_each(|(g, u)| kernel::silu_mul(g, u));
            add_into(&mut x, &l.down.decode(&g, rows)?);
        }
        for s in seqs.iter_mut() {
            s.len += 1;
        }
        let h = rms_norm(&x, &self.norm, hidden, eps)?;
        Ok(super::DecodeWeights::of(&self.lm_head_dec, &self.lm_head)?.matmul(&h, rows))
    }

    /// Round the weights of every linear layer and of the LM head to bf16 (nearest, ties to
    /// even), for sampling: the decode kernel then reads them as bf16, half the bytes per
    /// token, and the prefill computes with the same rounded values in f32, so the two paths
    /// are one model. Embeddings, norms and a LoRA adapter's matrices stay f32; arithmetic
    /// stays f32. The result is a different model from the f32 one: its log-probs differ
    /// from the f32 model's by a documented tolerance (docs/formats.md), not by rounding
    /// alone. Irreversible for this value; training never calls it.
    pub fn use_bf16_weights(&mut self) -> CResult<()> {
        self.round_to_bf16(false)
    }

    /// [`Llama::use_bf16_weights`], and the products' inputs rounded to bf16 too: every linear
    /// layer and the LM head (in decoding and in the prefill alike) compute with AVX-512 BF16's
    /// `vdpbf16ps` ([`kernel::PairPanels`]: two products per lane and instruction, f32 sums),
    /// as llama.cpp's BF16 models do. Another model again, further from f32 than
    /// [`Llama::use_bf16_weights`]'s (docs/sampling.md has the measured log-prob drift);
    /// batch-invariant like the others, and the same bits on CPUs without AVX-512 BF16.
    pub fn use_bf16_products(&mut self) -> CResult<()> {
        self.round_to_bf16(true)
    }

    fn round_to_bf16(&mut self, products: bool) -> CResult<()> {
        let round = |w: &Tensor| -> CResult<(Tensor, OnceLock<super::DecodeWeights>)> {
            let (n, k) = w.dims2()?;
            let wb: Vec<kernel::Bf16> = with_f32(w, |d| {
                d.iter().map(|&v| kernel::Bf16::from_f32(v)).collect()
            })?;
            let r: Vec<f32> = wb.iter().map(|b| kernel::Weight::get(*b)).collect();
            let packed = if products {
                super::DecodeWeights::Bf16Dot(kernel::PairPanels::pack(&wb, n, k))
            } else {
                super::DecodeWeights::Bf16(kernel::Panels::pack(&wb, n, k))
            };
            Ok((
                Tensor::from_vec(r, w.dims(), &Device::Cpu)?,
                OnceLock::from(packed),
            ))
        };
        for l in &mut self.layers {
            for p in [
                &mut l.q,
                &mut l.k,
                &mut l.v,
                &mut l.o,
                &mut l.gate,
                &mut l.up,
                &mut l.down,
            ] {
                (p.w, p.dec) = round(&p.w)?;
            }
        }
        // A tied head gets its own rounded copy; the embeddings it was tied to stay f32.
        (self.lm_head, self.lm_head_dec) = round(&self.lm_head)?;
        Ok(())
    }

    /// The LM head for inference: through the decode kernel where it is packed for it (as
    /// [`super::Proj`]'s `infer`), through candle otherwise. `x` `[.., hidden]`.
    pub(super) fn head_infer(&self, x: &Tensor) -> CResult<Tensor> {
        match self.lm_head_dec.get() {
            Some(w) => by_rows(x, |x, rows| Ok(w.matmul(x, rows))),
            None => super::linear(x, &self.lm_head),
        }
    }

    /// Pack every weight matrix for the decode kernel now ([`kernel::Panels`]; otherwise the
    /// first decoding step does it): a second copy of the weights, in the kernel's layout.
    pub fn prepare_decoding(&self) -> CResult<()> {
        for l in &self.layers {
            for p in [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down] {
                super::DecodeWeights::of(&p.dec, &p.w)?;
            }
        }
        super::DecodeWeights::of(&self.lm_head_dec, &self.lm_head)?;
        Ok(())
    }

    /// Whether [`Llama::use_bf16_weights`] was called.
    pub fn bf16_weights(&self) -> bool {
        matches!(
            self.lm_head_dec.get(),
            Some(super::DecodeWeights::Bf16(_) | super::DecodeWeights::Bf16Dot(_))
        )
    }
}

impl super::DecodeWeights {
    /// What `cell` holds, or `w` packed in f32 into it.
    fn of<'a>(cell: &'a OnceLock<Self>, w: &Tensor) -> CResult<&'a Self> {
        if let Some(d) = cell.get() {
            return Ok(d);
        }
        let packed = Self::F32(pack_f32(w)?);
        // (another thread may have packed it meanwhile: the same values)
        Ok(cell.get_or_init(|| packed))
    }

    /// `x W^T` for `rows` rows of `x` ([`kernel::matmul_nt`]).
    fn matmul(&self, x: &[f32], rows: usize) -> Vec<f32> {
        match self {
            Self::F32(w) => kernel::matmul_nt(x, rows, w),
            Self::Bf16(w) => kernel::matmul_nt(x, rows, w),
            Self::Bf16Dot(w) => kernel::matmul_nt(x, rows, w),
        }
    }
}

/// A `[n, k]` f32 tensor packed for the decode kernel.
fn pack_f32(w: &Tensor) -> CResult<kernel::Panels<f32>> {
    let (n, k) = w.dims2()?;
    with_f32(w, |d| kernel::Panels::pack(d, n, k))
}

/// `f` applied to `x` `[.., k]` seen as rows of `k`, its `[rows, n]` result given back as
/// `[.., n]` (the inference path's products through the decode kernel).
pub(super) fn by_rows(
    x: &Tensor,
    f: impl FnOnce(&[f32], usize) -> CResult<Vec<f32>>,
) -> CResult<Tensor> {
    let mut dims = x.dims().to_vec();
    dims.pop();
    let rows = dims.iter().product::<usize>();
    let y = with_f32(&x.contiguous()?, |x| f(x, rows))??;
    dims.push(y.len() / rows.max(1));
    Tensor::from_vec(y, dims, &Device::Cpu)
}

impl super::Proj {
    /// `x W^T (+ s (x A^T) B^T)` of several layers that read the same `x` (`W` in bf16 where
    /// [`Llama::use_bf16_weights`] put it): their base products in one parallel region
    /// ([`kernel::matmul_nt_many`]), each the value [`kernel::matmul_nt`] gives.
    fn decode_many(projs: &[&Self], x: &[f32], rows: usize) -> CResult<Vec<Vec<f32>>> {
        use super::DecodeWeights as D;
        let ws = projs
            .iter()
            .map(|p| D::of(&p.dec, &p.w))
            .collect::<CResult<Vec<_>>>()?;
        let f32s: Vec<_> = ws
            .iter()
            .filter_map(|w| if let D::F32(p) = w { Some(p) } else { None })
            .collect();
        let bf16s: Vec<_> = ws
            .iter()
            .filter_map(|w| if let D::Bf16(p) = w { Some(p) } else { None })
            .collect();
        let dots: Vec<_> = ws
            .iter()
            .filter_map(|w| if let D::Bf16Dot(p) = w { Some(p) } else { None })
            .collect();
        let mut ys = if f32s.len() == ws.len() {
            kernel::matmul_nt_many(x, rows, &f32s)
        } else if bf16s.len() == ws.len() {
            kernel::matmul_nt_many(x, rows, &bf16s)
        } else if dots.len() == ws.len() {
            kernel::matmul_nt_many(x, rows, &dots)
        } else {
            ws.iter().map(|w| w.matmul(x, rows)).collect()
        };
        for (p, y) in projs.iter().zip(&mut ys) {
            p.add_lora(x, rows, y)?;
        }
        Ok(ys)
    }

    /// `x W^T (+ s (x A^T) B^T)` for `rows` rows through [`kernel::matmul_nt`] (`W` in bf16
    /// where [`Llama::use_bf16_weights`] put it).
    pub(super) fn decode(&self, x: &[f32], rows: usize) -> CResult<Vec<f32>> {
        Ok(Self::decode_many(&[self], x, rows)?
            .pop()
            .expect("one product"))
    }

    /// `y += s (x A^T) B^T` where there is an adapter.
    fn add_lora(&self, x: &[f32], rows: usize, y: &mut [f32]) -> CResult<()> {
        let Some((a, b, s)) = &self.lora else {
            return Ok(());
        };
        let (pa, pb) = match self.lora_dec.get() {
            Some(p) => p,
            None => {
                let packed = (pack_f32(a)?, pack_f32(b)?);
                self.lora_dec.get_or_init(|| packed)
            }
        };
        let xa = kernel::matmul_nt(x, rows, pa);
        let d = kernel::matmul_nt(&xa, rows, pb);
        let s = *s as f32;
        for (y, d) in y.iter_mut().zip(&d) {
            *y += s * d;
        }
        Ok(())
    }
}

/// RMSNorm of each row of `x` (`[rows, dim]`) with weight `alpha`, as candle's fused kernel:
/// x / sqrt(mean(x^2) + eps) * alpha.
fn rms_norm(x: &[f32], alpha: &Tensor, dim: usize, eps: f32) -> CResult<Vec<f32>> {
    with_f32(alpha, |alpha| {
        let mut out = vec![0f32; x.len()];
        for (src, dst) in x.chunks(dim).zip(out.chunks_mut(dim)) {
            let sum2: f32 = src.iter().map(|v| v * v).sum();
            let m = (sum2 / dim as f32 + eps).sqrt();
            for ((d, s), a) in dst.iter_mut().zip(src).zip(alpha) {
                *d = *s / m * *a;
            }
        }
        out
    })
}

fn add_into(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
}
