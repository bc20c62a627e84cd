//! LoRA adapters in the PEFT layout.
//!
//! ```text
//! adapter/
//!   adapter_config.json          {"peft_type": "LORA", "r": 8, "lora_alpha": 16.0,
//!                                 "target_modules": ["q_proj", ...], "base_model_name_or_path": ...}
//!   adapter_model.safetensors    base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
//!                                [r, in] and ...lora_B.weight [out, r], f32
//! ```
//!
//! A target module `W` `[out, in]` computes x W^T + (alpha / r) (x A^T) B^T. A new adapter has
//! `A` drawn from U(-1/sqrt(in), 1/sqrt(in)) (PyTorch's and PEFT's default init of `A`, seeded
//! here) and `B` = 0, so that it starts as the base model. [`merge`] folds it into the weights:
//! W + (alpha / r) B A.

use crate::config::LlamaConfig;
use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// The linear layers an adapter may target (Llama module names).
pub const MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// `adapter_config.json` (the PEFT fields this code reads and writes; others are ignored).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoraConfig {
    #[serde(default = "lora_type")]
    pub peft_type: String,
    #[serde(default = "causal_lm")]
    pub task_type: String,
    pub r: usize,
    pub lora_alpha: f64,
    pub target_modules: Vec<String>,
    #[serde(default)]
    pub base_model_name_or_path: String,
    #[serde(default)]
    pub lora_dropout: f64,
    #[serde(default = "no_bias")]
    pub bias: String,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub inference_mode: bool,
}

fn lora_type() -> String {
    "LORA".into()
}
fn causal_lm() -> String {
    "CAUSAL_LM".into()
}
fn no_bias() -> String {
    "none".into()
}

impl LoraConfig {
    pub fn new(r: usize, lora_alpha: f64, target_modules: Vec<String>, base: String) -> Self {
        LoraConfig {
            peft_type: lora_type(),
            task_type: causal_lm(),
            r,
            lora_alpha,
            target_modules,
            base_model_name_or_path: base,
            lora_dropout: 0.0,
            bias: no_bias(),
            fan_in_fan_out: false,
            use_rslora: false,
            inference_mode: true,
        }
    }

    /// Refuse what this implementation does not compute.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.peft_type != "LORA" {
            bail!("peft_type {:?} is not LORA", self.peft_type);
        }
        if self.r == 0 {
            bail!("r must be at least 1");
        }
        if !self.lora_alpha.is_finite() || self.lora_alpha <= 0.0 {
            bail!("lora_alpha must be a positive number");
        }
        if self.target_modules.is_empty() {
            bail!("target_modules is empty");
        }
        if let Some(m) = self
            .target_modules
            .iter()
            .find(|m| !MODULES.contains(&m.as_str()))
        {
            bail!("target module {m:?} is not one of {}", MODULES.join(", "));
        }
        if self.use_rslora || self.fan_in_fan_out || self.bias != "none" {
            bail!("use_rslora, fan_in_fan_out and bias other than \"none\" are not supported");
        }
        Ok(())
    }

    /// alpha / r.
    pub fn scale(&self) -> f64 {
        self.lora_alpha / self.r as f64
    }

    /// Whether the weight `name` (e.g. `model.layers.0.self_attn.q_proj.weight`) is adapted.
    pub fn targets(&self, name: &str) -> bool {
        let Some(stem) = name.strip_suffix(".weight") else {
            return false;
        };
        let module = stem.rsplit('.').next().unwrap_or("");
        stem.starts_with("model.layers.") && self.target_modules.iter().any(|m| m == module)
    }
}

/// PEFT's key of the `A` (`which` = 'A') or `B` matrix of weight `name`.
pub fn key(name: &str, which: char) -> String {
    let stem = name.strip_suffix(".weight").unwrap_or(name);
    format!("base_model.model.{stem}.lora_{which}.weight")
}

/// Every adapter tensor's key and shape, in checkpoint order (A then B of each target).
pub fn adapter_shapes(cfg: &LlamaConfig, lc: &LoraConfig) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for (name, shape) in crate::config::param_shapes(cfg) {
        if lc.targets(&name) {
            out.push((key(&name, 'A'), vec![lc.r, shape[1]]));
            out.push((key(&name, 'B'), vec![shape[0], lc.r]));
        }
    }
    out
}

/// A fresh adapter: A ~ U(-1/sqrt(in), 1/sqrt(in)) from ChaCha8(seed), B = 0.
pub fn init(
    cfg: &LlamaConfig,
    lc: &LoraConfig,
    seed: u64,
) -> anyhow::Result<HashMap<String, Tensor>> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = HashMap::new();
    for (k, shape) in adapter_shapes(cfg, lc) {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if k.ends_with(".lora_A.weight") {
            let bound = 1.0 / (shape[1] as f64).sqrt();
            (0..n)
                .map(|_| ((rng.random::<f64>() * 2.0 - 1.0) * bound) as f32)
                .collect()
        } else {
            vec![0.0; n]
        };
        out.insert(k, Tensor::from_vec(data, shape, &Device::Cpu)?);
    }
    Ok(out)
}

/// Check that `tensors` hold exactly the adapter `lc` describes for `cfg`, with the right
/// shapes (converted to f32).
pub fn check(
    cfg: &LlamaConfig,
    lc: &LoraConfig,
    tensors: HashMap<String, Tensor>,
) -> anyhow::Result<HashMap<String, Tensor>> {
    let mut tensors = tensors;
    let mut out = HashMap::new();
    for (k, shape) in adapter_shapes(cfg, lc) {
        let t = tensors
            .remove(&k)
            .with_context(|| format!("missing tensor {k}"))?;
        if t.dims() != shape.as_slice() {
            bail!("tensor {k} has shape {:?}, expected {shape:?}", t.dims());
        }
        out.insert(k, t.to_dtype(DType::F32)?);
    }
    if let Some(extra) = tensors.keys().min() {
        bail!(
            "tensor {extra} is not part of the adapter (r {}, targets {:?})",
            lc.r,
            lc.target_modules
        );
    }
    Ok(out)
}

/// The (A, B) pair of weight `name` `[out, in]` from adapter tensors.
pub(crate) fn adapter_pair(
    lc: &LoraConfig,
    tensors: &HashMap<String, Tensor>,
    name: &str,
    w_dims: &[usize],
) -> anyhow::Result<(Tensor, Tensor)> {
    let get = |which: char, shape: [usize; 2]| -> anyhow::Result<Tensor> {
        let k = key(name, which);
        let t = tensors
            .get(&k)
            .with_context(|| format!("missing adapter tensor {k}"))?;
        if t.dims() != shape {
            bail!(
                "adapter tensor {k} has shape {:?}, expected {shape:?}",
                t.dims()
            );
        }
        Ok(t.clone())
    };
    Ok((get('A', [lc.r, w_dims[1]])?, get('B', [w_dims[0], lc.r])?))
}

/// Load an adapter directory: its config (validated) and tensors (checked against `cfg`).
pub fn load(
    dir: &Path,
    cfg: &LlamaConfig,
) -> anyhow::Result<(LoraConfig, HashMap<String, Tensor>)> {
    let cpath = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&cpath).with_context(|| format!("{}", cpath.display()))?;
    let lc: LoraConfig =
        serde_json::from_str(&text).with_context(|| format!("{}", cpath.display()))?;
    lc.validate()
        .with_context(|| format!("{}", cpath.display()))?;
    let wpath = dir.join(ADAPTER_WEIGHTS);
    let ts = candle_core::safetensors::load(&wpath, &Device::Cpu)
        .with_context(|| format!("{}", wpath.display()))?;
    let ts = check(cfg, &lc, ts).with_context(|| format!("{}", wpath.display()))?;
    Ok((lc, ts))
}

/// Write an adapter directory atomically: config, tensors, and extra files / tensor files
/// (optimizer state).
pub fn save(
    target: &Path,
    lc: &LoraConfig,
    tensors: &HashMap<String, Tensor>,
    files: Vec<(String, Vec<u8>)>,
    extra_tensors: Vec<(String, &HashMap<String, Tensor>)>,
    sync: crate::checkpoint::Durability,
) -> anyhow::Result<()> {
    let config = serde_json::to_vec_pretty(lc)?;
    crate::checkpoint::write_dir_atomic(target, sync, |dir| {
        crate::checkpoint::write_file(&dir.join(ADAPTER_CONFIG), &config)?;
        crate::checkpoint::write_safetensors(&dir.join(ADAPTER_WEIGHTS), tensors)?;
        for (name, bytes) in &files {
            crate::checkpoint::write_file(&dir.join(name), bytes)?;
        }
        for (name, ts) in &extra_tensors {
            crate::checkpoint::write_safetensors(&dir.join(name), ts)?;
        }
        Ok(())
    })
}

/// The base weights with the adapter folded in: W + (alpha / r) B A for each target.
pub fn merge(
    cfg: &LlamaConfig,
    base: &HashMap<String, Tensor>,
    lc: &LoraConfig,
    adapter: &HashMap<String, Tensor>,
) -> anyhow::Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (name, shape) in crate::config::param_shapes(cfg) {
        let w = base
            .get(&name)
            .with_context(|| format!("missing tensor {name}"))?
            .to_dtype(DType::F32)?;
        let w = if lc.targets(&name) {
            let (a, b) = adapter_pair(lc, adapter, &name, &shape)?;
            (w + (b.matmul(&a)? * lc.scale())?)?
        } else {
            w
        };
        out.insert(name, w);
    }
    Ok(out)
}
