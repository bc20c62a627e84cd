//! A Llama-architecture decoder: RMSNorm, rotary embeddings (Hugging Face's rotate-half
//! convention), grouped-query attention, SwiGLU MLP, optional tied embeddings.
//!
//! Two forward paths over the same weights:
//!
//! * [`Llama::forward_train`] is built only from differentiable ops (`rms_norm_slow`,
//!   `rope_slow`, and a causal softmax custom op with a hand-written backward): candle-nn's
//!   fused `rms_norm`, `rope` and `softmax_last_dim` kernels have no backward, and
//!   `backward()` silently drops the gradient through them.
//! * [`Llama::forward_infer`] uses those fused kernels and a key/value cache, for sampling.
//!
//! Both group the query heads that share a key/value head into one matrix product
//! (`[B, kv_heads, n_rep * T, head_dim]`), which is the same computation as Hugging Face's
//! `repeat_kv` (query head `h` uses key/value head `h / n_rep`) without copying keys and values.

use crate::config::LlamaConfig;
use anyhow::{Context, bail};
use candle_core::{D, DType, Device, Tensor, Var};
use std::collections::HashMap;
use std::sync::OnceLock;

type CResult<T> = candle_core::Result<T>;

mod decode;
pub mod kernel;
mod packed;
pub use decode::{Prefix, SeqCache};
pub use packed::{Packed, Segment};

/// A linear layer `W` `[out, in]`, with an optional low-rank update: y = x W^T + s (x A^T) B^T
/// (`A` `[r, in]`, `B` `[out, r]`, s = alpha / r), never merged into `W` while training.
struct Proj {
    w: Tensor,
    lora: Option<(Tensor, Tensor, f64)>,
    /// `w` as the decode kernel reads it: packed from `w` in f32 on the first decoding step,
    /// or in bf16 by [`Llama::use_bf16_weights`]. Packed once: decoding assumes the weights no
    /// longer change (sampling never changes them; a model being trained is not decoded).
    dec: OnceLock<DecodeWeights>,
    /// The adapter's `A` and `B`, packed on the first decoding step.
    lora_dec: OnceLock<(kernel::Panels<f32>, kernel::Panels<f32>)>,
}

/// A weight matrix packed for the decode kernel ([`kernel::Panels`]).
enum DecodeWeights {
    F32(kernel::Panels<f32>),
    Bf16(kernel::Panels<kernel::Bf16>),
    /// bf16 weights and products ([`kernel::PairPanels`]).
    Bf16Dot(kernel::PairPanels),
}

impl Proj {
    /// [`Proj::forward`] for inference: through the decode kernel where the weights are packed
    /// for it ([`Llama::prepare_decoding`], as rl-sample does), so that a prompt's prefill
    /// and its decoding steps compute products alike; through candle otherwise.
    fn infer(&self, x: &Tensor) -> CResult<Tensor> {
        if self.dec.get().is_none() {
            return self.forward(x);
        }
        decode::by_rows(x, |x, rows| self.decode(x, rows))
    }

    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let Some((a, b, s)) = &self.lora else {
            return linear(x, &self.w);
        };
        // Values outside the graph, gradients from LoraLinear: candle's matmul backward would
        // compute (and keep) a gradient for the frozen W, and the composed ops would keep
        // three [tokens, out] intermediates per module for the backward pass.
        let mut dims = x.dims().to_vec();
        let last = dims.pop().unwrap_or(1);
        let x2 = x.reshape((dims.iter().product::<usize>(), last))?;
        let xd = x2.detach();
        let (w, a_d, b_d) = (self.w.detach(), a.detach(), b.detach());
        let y = (xd.matmul(&w.t()?)? + (xd.matmul(&a_d.t()?)?.matmul(&b_d.t()?)? * *s)?)?;
        let op = LoraLinear {
            w,
            scale: *s,
            values: std::sync::Mutex::new(Some(y)),
        };
        dims.push(self.w.dim(0)?);
        x2.apply_op3(a, b, op)?.reshape(dims)
    }
}

/// y = x W^T + s (x A^T) B^T for x `[N, in]` with W frozen: the value is computed outside the
/// graph (taken from `values` once), the backward is dx = g W + s (g B) A, dA = s (g B)^T x,
/// dB = s g^T (x A^T); nothing for W.
struct LoraLinear {
    w: Tensor,
    scale: f64,
    values: std::sync::Mutex<Option<Tensor>>,
}

impl candle_core::CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn cpu_fwd(
        &self,
        _s1: &candle_core::CpuStorage,
        _l1: &candle_core::Layout,
        _s2: &candle_core::CpuStorage,
        _l2: &candle_core::Layout,
        _s3: &candle_core::CpuStorage,
        _l3: &candle_core::Layout,
    ) -> CResult<(candle_core::CpuStorage, candle_core::Shape)> {
        let y = self
            .values
            .lock()
            .map_err(|_| candle_core::Error::Msg("lora-linear: poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("lora-linear: run twice".into()))?;
        let shape = y.shape().clone();
        let data: Vec<f32> = y.flatten_all()?.to_vec1()?;
        Ok((candle_core::CpuStorage::F32(data), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (x, a, b, g) = (x.detach(), a.detach(), b.detach(), grad.detach());
        let gb = (g.matmul(&b)? * self.scale)?;
        let dx = (g.matmul(&self.w)? + gb.matmul(&a)?)?;
        let da = gb.t()?.matmul(&x)?;
        let db = (g.t()?.matmul(&x.matmul(&a.t()?)?)? * self.scale)?;
        Ok((Some(dx), Some(da), Some(db)))
    }
}

struct Layer {
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    gate: Proj,
    up: Proj,
    down: Proj,
    input_norm: Tensor,
    post_norm: Tensor,
}

/// The model: weights (`[out, in]` linear layers, as in PyTorch) and rotary tables.
pub struct Llama {
    pub cfg: LlamaConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    /// `lm_head` packed for the decode kernel (as [`Proj`]'s `dec`).
    lm_head_dec: OnceLock<DecodeWeights>,
    /// `[max_position_embeddings, head_dim / 2]`.
    cos: Tensor,
    sin: Tensor,
    /// The same tables as flat vectors, for [`Llama::decode_step`].
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
}

// Tensor naming lives with the config (crate::config), so that the checkpoint writers and LoRA
// do not depend on the model.
pub use crate::config::{num_params, param_shapes};

impl crate::checkpoint::Checkpoint {
    /// The model of a loaded checkpoint (here rather than in crate::checkpoint, which knows
    /// tensors and files but not the model).
    pub fn model(&self) -> anyhow::Result<Llama> {
        use anyhow::Context;
        Llama::from_tensors(&self.cfg, &self.tensors)
            .with_context(|| format!("{}", self.dir.display()))
    }
}

/// Hugging Face's rotary tables: inv_freq_i = theta^(-2i / head_dim), angle = pos * inv_freq_i;
/// the rotate-half layout pairs dimension `i` with `i + head_dim / 2`.
fn rope_tables(cfg: &LlamaConfig) -> (Vec<f32>, Vec<f32>) {
    let hd = cfg.head_dim();
    let n = cfg.max_position_embeddings;
    let inv: Vec<f64> = (0..hd / 2)
        .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / hd as f64))
        .collect();
    let mut cos = Vec::with_capacity(n * hd / 2);
    let mut sin = Vec::with_capacity(n * hd / 2);
    for p in 0..n {
        for f in &inv {
            let a = p as f64 * f;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    (cos, sin)
}

/// Additive causal mask for `t` queries at positions `pos..pos + t` over `pos + t` keys,
/// with each query row repeated `n_rep` times (the grouped query heads).
fn causal_mask(n_rep: usize, t: usize, pos: usize, dev: &Device) -> CResult<Tensor> {
    let s = pos + t;
    let mut m = Vec::with_capacity(n_rep * t * s);
    for _ in 0..n_rep {
        for i in 0..t {
            m.extend((0..s).map(|j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }));
        }
    }
    Tensor::from_vec(m, (n_rep * t, s), dev)
}

/// Causal softmax over the last dimension of attention scores `[.., n_rep * t, t]` (row `r` is
/// query position `r % t`; later keys get probability 0), with a backward: one pass instead of
/// the mask, max, exp, sum and divide of the composed ops, whose broadcasts dominated a
/// training step. Backward: dx = y * (dy - sum(dy * y)).
struct CausalSoftmax {
    t: usize,
}

impl candle_core::CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> CResult<(candle_core::CpuStorage, candle_core::Shape)> {
        let candle_core::CpuStorage::F32(data) = storage else {
            candle_core::bail!("causal-softmax: f32 only");
        };
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("causal-softmax: needs a contiguous input");
        };
        let data = &data[a..b];
        let dims = layout.dims();
        let (rows, s) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        let mut out = vec![0f32; data.len()];
        for (k, (src, dst)) in data.chunks(s).zip(out.chunks_mut(s)).enumerate() {
            let n = ((k % rows) % self.t + 1).min(s);
            let max = src[..n].iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let mut sum = 0f32;
            for (d, &x) in dst[..n].iter_mut().zip(&src[..n]) {
                *d = (x - max).exp();
                sum += *d;
            }
            let inv = 1.0 / sum;
            dst[..n].iter_mut().for_each(|d| *d *= inv);
        }
        Ok((candle_core::CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let s = (grad * res)?.sum_keepdim(D::Minus1)?;
        Ok(Some((res * grad.broadcast_sub(&s)?)?))
    }
}

/// `x W^T` over the last dimension of `x` (`[.., in]`, `W` `[out, in]`), by [`packed::Linear`]:
/// candle's product with a backward that writes each gradient once.
pub(crate) fn linear(x: &Tensor, w: &Tensor) -> CResult<Tensor> {
    let mut dims = x.dims().to_vec();
    let last = dims.pop().unwrap_or(1);
    let rows: usize = dims.iter().product();
    let x2 = if x.rank() == 2 {
        x.contiguous()?
    } else {
        x.reshape((rows, last))?
    };
    let y = x2.apply_op2(&w.contiguous()?, packed::Linear)?;
    if x.rank() == 2 {
        return Ok(y);
    }
    dims.push(w.dim(0)?);
    y.reshape(dims)
}

/// Run `f` on the data of a contiguous f32 CPU tensor.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> CResult<R> {
    let (storage, layout) = t.storage_and_layout();
    Ok(f(f32_data(&storage, layout)?))
}

/// The data of a contiguous f32 CPU storage.
fn f32_data<'a>(
    storage: &'a candle_core::Storage,
    layout: &candle_core::Layout,
) -> CResult<&'a [f32]> {
    let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)) = storage else {
        candle_core::bail!("not an f32 tensor on the CPU");
    };
    let Some((a, b)) = layout.contiguous_offsets() else {
        candle_core::bail!("not a contiguous tensor");
    };
    Ok(&data[a..b])
}

impl Llama {
    /// Build from tensors named as in Hugging Face checkpoints (any float dtype; computed in
    /// f32). Extra tensors are ignored; a missing or misshapen one is an error.
    pub fn from_tensors(
        cfg: &LlamaConfig,
        tensors: &HashMap<String, Tensor>,
    ) -> anyhow::Result<Self> {
        Self::with_adapter(cfg, tensors, None)
    }

    /// Like [`Llama::from_tensors`], with a LoRA adapter applied (unmerged) to its target
    /// modules: `adapter` holds its config and tensors under PEFT names (see [`crate::lora`]).
    pub fn with_adapter(
        cfg: &LlamaConfig,
        tensors: &HashMap<String, Tensor>,
        adapter: Option<(&crate::lora::LoraConfig, &HashMap<String, Tensor>)>,
    ) -> anyhow::Result<Self> {
        cfg.validate()?;
        let dev = Device::Cpu;
        let take = |name: &str, shape: &[usize]| -> anyhow::Result<Tensor> {
            let t = tensors
                .get(name)
                .with_context(|| format!("missing tensor {name}"))?;
            if t.dims() != shape {
                bail!("tensor {name} has shape {:?}, expected {shape:?}", t.dims());
            }
            Ok(t.to_dtype(DType::F32)?)
        };
        let shapes: HashMap<String, Vec<usize>> = param_shapes(cfg).into_iter().collect();
        let get = |name: String| take(&name, &shapes[&name]);
        let proj = |name: String| -> anyhow::Result<Proj> {
            let w = get(name.clone())?;
            let lora = match adapter {
                Some((lc, ts)) if lc.targets(&name) => {
                    let (a, b) = crate::lora::adapter_pair(lc, ts, &name, w.dims())?;
                    Some((a, b, lc.scale()))
                }
                _ => None,
            };
            Ok(Proj {
                w,
                lora,
                dec: OnceLock::new(),
                lora_dec: OnceLock::new(),
            })
        };
        let embed = get("model.embed_tokens.weight".into())?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            layers.push(Layer {
                q: proj(format!("{p}.self_attn.q_proj.weight"))?,
                k: proj(format!("{p}.self_attn.k_proj.weight"))?,
                v: proj(format!("{p}.self_attn.v_proj.weight"))?,
                o: proj(format!("{p}.self_attn.o_proj.weight"))?,
                gate: proj(format!("{p}.mlp.gate_proj.weight"))?,
                up: proj(format!("{p}.mlp.up_proj.weight"))?,
                down: proj(format!("{p}.mlp.down_proj.weight"))?,
                input_norm: get(format!("{p}.input_layernorm.weight"))?,
                post_norm: get(format!("{p}.post_attention_layernorm.weight"))?,
            });
        }
        let norm = get("model.norm.weight".into())?;
        let lm_head = if cfg.tie_word_embeddings {
            embed.clone()
        } else {
            get("lm_head.weight".into())?
        };
        let (rope_cos, rope_sin) = rope_tables(cfg);
        let half = (cfg.max_position_embeddings, cfg.head_dim() / 2);
        let cos = Tensor::from_slice(&rope_cos, half, &dev)?;
        let sin = Tensor::from_slice(&rope_sin, half, &dev)?;
        Ok(Llama {
            cfg: cfg.clone(),
            embed,
            layers,
            norm,
            lm_head,
            lm_head_dec: OnceLock::new(),
            cos,
            sin,
            rope_cos,
            rope_sin,
        })
    }

    fn eps(&self) -> f32 {
        self.cfg.rms_norm_eps as f32
    }

    fn check_len(&self, len: usize) -> CResult<()> {
        if len > self.cfg.max_position_embeddings {
            candle_core::bail!(
                "sequence of {len} tokens is longer than max_position_embeddings ({})",
                self.cfg.max_position_embeddings
            );
        }
        Ok(())
    }

    fn embed(&self, ids: &Tensor) -> CResult<Tensor> {
        let (b, t) = ids.dims2()?;
        self.embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.cfg.hidden_size))
    }

    fn mlp(l: &Layer, x: &Tensor) -> CResult<Tensor> {
        let g = l.gate.forward(x)?.silu()?;
        l.down.forward(&(g * l.up.forward(x)?)?)
    }

    /// Logits `[B, T, vocab]` for token ids `[B, T]` (u32), through differentiable ops only.
    /// Right padding needs no mask: causal attention never looks ahead.
    pub fn forward_train(&self, ids: &Tensor) -> CResult<Tensor> {
        self.lm_head(&self.hidden_train(ids)?)
    }

    /// The final hidden states `[B, T, hidden]` (after the last norm) of the training path;
    /// [`Llama::lm_head`] turns them into logits. Computing logits only where they are needed
    /// saves most of the time and memory of large vocabularies.
    pub fn hidden_train(&self, ids: &Tensor) -> CResult<Tensor> {
        let (b, t) = ids.dims2()?;
        self.check_len(t)?;
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let n_rep = nh / nkv;
        let cos = self.cos.narrow(0, 0, t)?;
        let sin = self.sin.narrow(0, 0, t)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut x = self.embed(ids)?;
        for l in &self.layers {
            let h = candle_nn::ops::rms_norm_slow(&x, &l.input_norm, self.eps())?;
            let heads = |w: &Proj, n: usize| -> CResult<Tensor> {
                w.forward(&h)?
                    .reshape((b, t, n, hd))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = candle_nn::rotary_emb::rope_slow(&heads(&l.q, nh)?, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_slow(&heads(&l.k, nkv)?, &cos, &sin)?;
            let v = heads(&l.v, nkv)?;
            let q = q.reshape((b, nkv, n_rep * t, hd))?;
            let att = (q.matmul(&k.t()?)? * scale)?.apply_op1(CausalSoftmax { t })?;
            let y = att
                .matmul(&v)?
                .reshape((b, nh, t, hd))?
                .transpose(1, 2)?
                .reshape((b, t, nh * hd))?;
            x = (x + l.o.forward(&y)?)?;
            let h = candle_nn::ops::rms_norm_slow(&x, &l.post_norm, self.eps())?;
            x = (&x + Self::mlp(l, &h)?)?;
        }
        candle_nn::ops::rms_norm_slow(&x, &self.norm, self.eps())
    }

    /// Logits for final hidden states `[.., hidden]`.
    pub fn lm_head(&self, hidden: &Tensor) -> CResult<Tensor> {
        linear(hidden, &self.lm_head)
    }

    /// Logits for token ids `[B, T]` that follow the `cache.len()` tokens already in `cache`,
    /// through the fused kernels; appends to the cache. Returns `[B, T, vocab]`, or only the
    /// last position's `[B, 1, vocab]` when `last_only`.
    pub fn forward_infer(
        &self,
        ids: &Tensor,
        cache: &mut KvCache,
        last_only: bool,
    ) -> CResult<Tensor> {
        let (b, t) = ids.dims2()?;
        let pos = cache.len;
        if b != cache.batch {
            candle_core::bail!("batch of {b} rows, cache of {}", cache.batch);
        }
        if pos + t > cache.capacity {
            candle_core::bail!(
                "cache holds {} positions, {} needed",
                cache.capacity,
                pos + t
            );
        }
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let n_rep = nh / nkv;
        let dev = ids.device();
        let mask = if t > 1 {
            Some(causal_mask(n_rep, t, pos, dev)?)
        } else {
            None
        };
        let cos = self.cos.narrow(0, pos, t)?;
        let sin = self.sin.narrow(0, pos, t)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut x = self.embed(ids)?;
        for (li, l) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &l.input_norm, self.eps())?;
            let heads = |w: &Proj, n: usize| -> CResult<Tensor> {
                w.infer(&h)?
                    .reshape((b, t, n, hd))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = candle_nn::rotary_emb::rope(&heads(&l.q, nh)?, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope(&heads(&l.k, nkv)?, &cos, &sin)?;
            let v = heads(&l.v, nkv)?;
            cache.k[li].slice_set(&k, 2, pos)?;
            cache.v[li].slice_set(&v, 2, pos)?;
            let k = cache.k[li].narrow(2, 0, pos + t)?;
            let v = cache.v[li].narrow(2, 0, pos + t)?;
            let q = q.reshape((b, nkv, n_rep * t, hd))?;
            let mut att = (q.matmul(&k.t()?)? * scale)?;
            if let Some(m) = &mask {
                att = att.broadcast_add(m)?;
            }
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y = att
                .matmul(&v)?
                .reshape((b, nh, t, hd))?
                .transpose(1, 2)?
                .reshape((b, t, nh * hd))?;
            x = (x + l.o.infer(&y)?)?;
            let h = candle_nn::ops::rms_norm(&x, &l.post_norm, self.eps())?;
            let g = l.gate.infer(&h)?.silu()?;
            x = (&x + l.down.infer(&(g * l.up.infer(&h)?)?)?)?;
        }
        cache.len += t;
        let x = if last_only && t > 1 {
            x.narrow(1, t - 1, 1)?.contiguous()?
        } else {
            x
        };
        let x = candle_nn::ops::rms_norm(&x, &self.norm, self.eps())?;
        self.head_infer(&x)
    }
}

/// Keys and values of the positions seen so far, per layer `[B, kv_heads, capacity, head_dim]`,
/// preallocated so that a decoding step writes in place instead of concatenating.
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    len: usize,
    capacity: usize,
    batch: usize,
}

impl KvCache {
    pub fn new(cfg: &LlamaConfig, batch: usize, capacity: usize) -> CResult<Self> {
        let capacity = capacity.min(cfg.max_position_embeddings);
        let shape = (batch, cfg.kv_heads(), capacity, cfg.head_dim());
        let zeros = || Tensor::zeros(shape, DType::F32, &Device::Cpu);
        let n = cfg.num_hidden_layers;
        Ok(KvCache {
            k: (0..n).map(|_| zeros()).collect::<CResult<_>>()?,
            v: (0..n).map(|_| zeros()).collect::<CResult<_>>()?,
            len: 0,
            capacity,
            batch,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// A cache of the given rows of this one (repeats allowed), e.g. one prompt's cache
    /// copied to each of the K samples, or the rows still generating.
    pub fn select(&self, rows: &[usize]) -> CResult<KvCache> {
        let idx = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            &Device::Cpu,
        )?;
        let pick = |ts: &[Tensor]| -> CResult<Vec<Tensor>> {
            ts.iter().map(|t| t.index_select(&idx, 0)).collect()
        };
        Ok(KvCache {
            k: pick(&self.k)?,
            v: pick(&self.v)?,
            len: self.len,
            capacity: self.capacity,
            batch: rows.len(),
        })
    }
}

/// Log-probability of each target token under softmax(logits / temperature):
/// logits `[N, V]`, targets `[N]` u32 → `[N]`. Differentiable (the max is only a shift).
pub fn token_logprobs(logits: &Tensor, targets: &Tensor) -> CResult<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let picked = shifted.gather(&targets.unsqueeze(1)?, 1)?;
    (picked - lse)?.squeeze(1)
}

/// Rows of `[rows, vocab]` logits computed at once by the automatic chunking of
/// [`Llama::head_logprobs`]: 2^24 f32 (64 MiB) per logits tensor.
pub const AUTO_LOGITS_ELEMENTS: usize = 1 << 24;

/// How many positions' logits [`Llama::head_logprobs`] computes at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogitsChunk {
    /// All rows at once when `rows x vocab` <= [`AUTO_LOGITS_ELEMENTS`], else chunks of
    /// `AUTO_LOGITS_ELEMENTS / vocab` rows.
    #[default]
    Auto,
    /// Never chunk (the `[rows, vocab]` logits and their log-softmax exist at once).
    Off,
    /// Chunks of this many rows (when there are more rows than this).
    Rows(usize),
}

impl LogitsChunk {
    /// The chunk size for `rows` rows of a `vocab`-sized head; `None`: do not chunk.
    pub fn rows(self, rows: usize, vocab: usize) -> Option<usize> {
        let c = match self {
            LogitsChunk::Off => return None,
            LogitsChunk::Auto => (AUTO_LOGITS_ELEMENTS / vocab.max(1)).max(1),
            LogitsChunk::Rows(c) => c.max(1),
        };
        (rows > c).then_some(c)
    }
}

impl Llama {
    /// Log-probabilities `[N]` of `targets` (N ids) under softmax(lm_head(hidden) / temperature)
    /// for final hidden states `[N, hidden]` (`temps`: `[N, 1]`, or `None` for 1). Differentiable
    /// with respect to `hidden` and the head weights.
    ///
    /// Unchunked, this is `token_logprobs(lm_head(hidden) / temps)`, and autograd keeps several
    /// `[N, vocab]` tensors until the backward pass. Chunked, the values are computed `chunk`
    /// rows at a time outside the graph and attached to it by [`HeadLogprobs`], whose backward
    /// recomputes each chunk's softmax: at most one `[chunk, vocab]` block exists at a time, in
    /// the forward pass and in the backward pass. The temperature divides the hidden states
    /// instead of the logits there (the same function; rounding may differ).
    pub fn head_logprobs(
        &self,
        hidden: &Tensor,
        targets: &[u32],
        temps: Option<&Tensor>,
        chunk: LogitsChunk,
    ) -> CResult<Tensor> {
        let n = targets.len();
        let dev = hidden.device();
        let Some(c) = chunk.rows(n, self.cfg.vocab_size) else {
            let mut logits = self.lm_head(hidden)?;
            if let Some(t) = temps {
                logits = logits.broadcast_div(t)?;
            }
            return token_logprobs(&logits, &Tensor::from_slice(targets, n, dev)?);
        };
        let h = match temps {
            Some(t) => hidden.broadcast_div(t)?,
            None => hidden.clone(),
        };
        let (hd, wd) = (h.detach(), self.lm_head.detach());
        let mut values = Vec::with_capacity(n.div_ceil(c));
        for s in (0..n).step_by(c) {
            let len = c.min(n - s);
            let logits = hd.narrow(0, s, len)?.matmul(&wd.t()?)?;
            let tgt = Tensor::from_slice(&targets[s..s + len], len, dev)?;
            values.push(token_logprobs(&logits, &tgt)?);
        }
        let values = Tensor::cat(&values, 0)?;
        h.apply_op3(
            &self.lm_head,
            &values,
            HeadLogprobs {
                targets: targets.to_vec(),
                chunk: c,
            },
        )
    }
}

/// Attaches log-probabilities computed outside the graph (the third argument, returned as is)
/// to hidden states `h` `[N, H]` and head weights `w` `[V, H]`, with the backward of
/// logp_i = (w h_i)[y_i] - logsumexp(w h_i): for upstream g_i, dz_i = g_i (onehot(y_i) - p_i),
/// dh = dz w, dw = dz^T h, computed `chunk` rows at a time.
struct HeadLogprobs {
    targets: Vec<u32>,
    chunk: usize,
}

impl candle_core::CustomOp3 for HeadLogprobs {
    fn name(&self) -> &'static str {
        "head-logprobs"
    }

    fn cpu_fwd(
        &self,
        _s1: &candle_core::CpuStorage,
        _l1: &candle_core::Layout,
        _s2: &candle_core::CpuStorage,
        _l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> CResult<(candle_core::CpuStorage, candle_core::Shape)> {
        let candle_core::CpuStorage::F32(data) = s3 else {
            candle_core::bail!("head-logprobs: f32 only");
        };
        let Some((a, b)) = l3.contiguous_offsets() else {
            candle_core::bail!("head-logprobs: needs contiguous values");
        };
        Ok((
            candle_core::CpuStorage::F32(data[a..b].to_vec()),
            l3.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        h: &Tensor,
        w: &Tensor,
        _values: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // A frozen head (LoRA, a reference model) needs no gradient: skip its matmuls.
        let want_w = w.track_op();
        // Detached: the gradient's own graph would keep every chunk's [chunk, V] block alive.
        let (h, w, grad) = (h.detach(), w.detach(), grad.detach());
        let n = self.targets.len();
        let v = w.dim(0)?;
        let g: Vec<f32> = grad.to_vec1()?;
        let mut dh = Vec::with_capacity(n.div_ceil(self.chunk));
        let mut dw: Option<Tensor> = None;
        for s in (0..n).step_by(self.chunk) {
            let len = self.chunk.min(n - s);
            let hc = h.narrow(0, s, len)?;
            let p = candle_nn::ops::softmax_last_dim(&hc.matmul(&w.t()?)?)?;
            let mut dz: Vec<f32> = p.flatten_all()?.to_vec1()?;
            for r in 0..len {
                let gr = g[s + r];
                let row = &mut dz[r * v..(r + 1) * v];
                row.iter_mut().for_each(|x| *x *= -gr);
                row[self.targets[s + r] as usize] += gr;
            }
            let dz = Tensor::from_vec(dz, (len, v), h.device())?;
            dh.push(dz.matmul(&w)?);
            if want_w {
                let d = dz.t()?.matmul(&hc)?;
                dw = Some(match dw {
                    Some(acc) => (acc + d)?,
                    None => d,
                });
            }
        }
        Ok((Some(Tensor::cat(&dh, 0)?), dw, None))
    }
}

/// The model's parameters as candle `Var`s (for the optimizer), and the model built on them.
pub struct Trainable {
    pub model: Llama,
    /// `(Hugging Face name, variable)`, in [`param_shapes`] order.
    pub params: Vec<(String, Var)>,
}

impl Trainable {
    pub fn new(cfg: &LlamaConfig, tensors: &HashMap<String, Tensor>) -> anyhow::Result<Self> {
        let mut params = Vec::new();
        let mut vars = HashMap::new();
        for (name, _) in param_shapes(cfg) {
            let t = tensors
                .get(&name)
                .with_context(|| format!("missing tensor {name}"))?
                .to_dtype(DType::F32)?;
            let var = Var::from_tensor(&t)?;
            vars.insert(name.clone(), var.as_tensor().clone());
            params.push((name, var));
        }
        let model = Llama::from_tensors(cfg, &vars)?;
        Ok(Trainable { model, params })
    }

    /// The base weights frozen (constants, no gradient) and a LoRA adapter's `A` and `B` as the
    /// parameters, named by their PEFT keys; `adapter` holds their initial values
    /// ([`crate::lora::init`] or a loaded adapter).
    pub fn with_lora(
        cfg: &LlamaConfig,
        base: &HashMap<String, Tensor>,
        lc: &crate::lora::LoraConfig,
        adapter: &HashMap<String, Tensor>,
    ) -> anyhow::Result<Self> {
        lc.validate()?;
        let mut params = Vec::new();
        let mut vars = HashMap::new();
        for (key, _) in crate::lora::adapter_shapes(cfg, lc) {
            let t = adapter
                .get(&key)
                .with_context(|| format!("missing adapter tensor {key}"))?
                .to_dtype(DType::F32)?;
            let var = Var::from_tensor(&t)?;
            vars.insert(key.clone(), var.as_tensor().clone());
            params.push((key, var));
        }
        let model = Llama::with_adapter(cfg, base, Some((lc, &vars)))?;
        Ok(Trainable { model, params })
    }

    /// The current weights, detached from the autograd graph, by name.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.params
            .iter()
            .map(|(n, v)| (n.clone(), v.as_detached_tensor()))
            .collect()
    }
}

/// Initial weights: N(0, initializer_range) for matrices, ones for norms; a function of `seed`
/// alone (ChaCha8, Box–Muller), whatever the machine.
pub fn init_tensors(cfg: &LlamaConfig, seed: u64) -> anyhow::Result<HashMap<String, Tensor>> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let std = cfg.initializer_range;
    let mut out = HashMap::new();
    for (name, shape) in param_shapes(cfg) {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if shape.len() == 1 {
            vec![1.0; n]
        } else {
            (0..n)
                .map(|_| {
                    let u1: f64 = 1.0 - rng.random::<f64>();
                    let u2: f64 = rng.random::<f64>();
                    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                    (z * std) as f32
                })
                .collect()
        };
        out.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
    }
    Ok(out)
}
