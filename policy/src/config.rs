//! The model's `config.json`: the fields of Hugging Face's `LlamaConfig`.
//!
//! A checkpoint written here loads in `transformers`' `LlamaForCausalLM` unchanged, so the file
//! carries the names and defaults transformers expects; fields this crate does not use are kept
//! in `extra` and written back as they were.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;

/// `eos_token_id` is an integer or a list of integers in Hugging Face configs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    #[serde(default = "llama_architectures")]
    pub architectures: Vec<String>,
    #[serde(default = "llama_model_type")]
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: query heads share `num_attention_heads / num_key_value_heads`
    /// to a key/value head. Absent means plain multi-head attention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    pub num_hidden_layers: usize,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    pub vocab_size: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
    #[serde(default = "default_torch_dtype")]
    pub torch_dtype: String,
    /// Per-head width; absent means `hidden_size / num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub rope_scaling: Option<Value>,
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Fields this crate does not use, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn llama_architectures() -> Vec<String> {
    vec!["LlamaForCausalLM".to_string()]
}
fn llama_model_type() -> String {
    "llama".to_string()
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_max_position_embeddings() -> usize {
    2048
}
fn default_torch_dtype() -> String {
    "float32".to_string()
}
fn default_hidden_act() -> String {
    "silu".to_string()
}
fn default_initializer_range() -> f64 {
    0.02
}

/// Named model sizes for `rl-update init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// ~1.6 M parameters: 4 layers, width 192, 6 query / 2 key-value heads.
    Tiny,
    /// ~17.8 M parameters: 6 layers, width 512, 8 query / 4 key-value heads.
    Small,
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tiny" => Ok(Preset::Tiny),
            "small" => Ok(Preset::Small),
            _ => Err(format!("unknown config \"{s}\" (expected tiny or small)")),
        }
    }
}

impl LlamaConfig {
    /// A config for a byte-level tokenizer (256 bytes + bos/eos/pad, see
    /// [`crate::Tokenizer::byte_level`]), with tied embeddings.
    pub fn preset(preset: Preset) -> Self {
        let (hidden, inter, heads, kv, layers) = match preset {
            Preset::Tiny => (192, 512, 6, 2, 4),
            Preset::Small => (512, 1408, 8, 4, 6),
        };
        let mut extra = Map::new();
        extra.insert("attention_dropout".into(), Value::from(0.0));
        extra.insert("pretraining_tp".into(), Value::from(1));
        extra.insert("use_cache".into(), Value::from(true));
        LlamaConfig {
            architectures: llama_architectures(),
            model_type: llama_model_type(),
            hidden_size: hidden,
            intermediate_size: inter,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv),
            num_hidden_layers: layers,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            vocab_size: crate::tokenizer::BYTE_LEVEL_VOCAB,
            tie_word_embeddings: true,
            max_position_embeddings: 2048,
            bos_token_id: Some(crate::tokenizer::BOS_ID),
            eos_token_id: Some(TokenIds::One(crate::tokenizer::EOS_ID)),
            pad_token_id: Some(crate::tokenizer::PAD_ID),
            torch_dtype: default_torch_dtype(),
            head_dim: Some(hidden / heads),
            hidden_act: default_hidden_act(),
            attention_bias: false,
            mlp_bias: false,
            rope_scaling: None,
            initializer_range: 0.02,
            extra,
        }
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }

    /// Reject what this implementation does not compute, rather than compute it wrong.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.model_type != "llama" {
            bail!(
                "model_type \"{}\" is not supported (only llama)",
                self.model_type
            );
        }
        if self.hidden_act != "silu" {
            bail!(
                "hidden_act \"{}\" is not supported (only silu)",
                self.hidden_act
            );
        }
        if self.attention_bias || self.mlp_bias {
            bail!("attention_bias / mlp_bias are not supported");
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            bail!("rope_scaling is not supported");
        }
        if self.num_attention_heads == 0 || self.kv_heads() == 0 {
            bail!("num_attention_heads and num_key_value_heads must be positive");
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            bail!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.kv_heads()
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            bail!("head_dim must be even for rotary embeddings");
        }
        Ok(())
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        let cfg: LlamaConfig =
            serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
        cfg.validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(cfg)
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a config always serializes")
    }
}

/// Every parameter's Hugging Face name and shape, in a fixed order.
pub fn param_shapes(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let hd = cfg.head_dim();
    let (q_out, kv_out) = (cfg.num_attention_heads * hd, cfg.kv_heads() * hd);
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.push((format!("{p}.self_attn.q_proj.weight"), vec![q_out, h]));
        out.push((format!("{p}.self_attn.k_proj.weight"), vec![kv_out, h]));
        out.push((format!("{p}.self_attn.v_proj.weight"), vec![kv_out, h]));
        out.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q_out]));
        out.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
        out.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
        out.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![v, h]));
    }
    out
}

pub fn num_params(cfg: &LlamaConfig) -> usize {
    param_shapes(cfg)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}
