//! GGUF (llama.cpp's model file) to a Hugging Face checkpoint.
//!
//! [`convert`] reads a llama-architecture GGUF with candle's reader, dequantizes every tensor
//! (Q4_1, Q8_0, F16, ... all become f32) and writes a checkpoint directory that this crate and
//! transformers' `LlamaForCausalLM` both load:
//!
//! - `config.json` from the `llama.*` metadata; tied embeddings when there is no `output.weight`;
//! - `model.safetensors` under HF names, with llama.cpp's Q/K row permutation undone;
//! - `tokenizer.json` rebuilt from the `tokenizer.ggml.*` metadata (byte-level BPE);
//! - `tokenizer_config.json` with the special tokens and the `chat_template`;
//! - `generation_config.json` with the bos/eos/pad ids.
//!
//! llama.cpp's `convert_hf_to_gguf.py` stores `q_proj` / `k_proj` rows permuted for its
//! interleaved rotary layout: rows viewed as `(n_head, 2, head_dim / 2)` are swapped to
//! `(n_head, head_dim / 2, 2)`. [`unpermute_rows`] is the inverse, with the query heads for
//! `q_proj` and the key/value heads for `k_proj`.

use crate::checkpoint::{self, TOKENIZER, TOKENIZER_CONFIG};
use crate::config::{LlamaConfig, TokenIds};
use anyhow::{Context, anyhow, bail};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use serde_json::{Map, json};
use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::Path;

/// What a conversion produced, for the summary line.
#[derive(Debug, Clone)]
pub struct Summary {
    pub cfg: LlamaConfig,
    pub params: usize,
    /// `(ggml type, tensor count)`, sorted by type name.
    pub source_types: Vec<(String, usize)>,
    pub added_tokens: usize,
    pub has_chat_template: bool,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let types: Vec<String> = self
            .source_types
            .iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect();
        write!(
            f,
            "{} layers, hidden {}, {}/{} heads, vocab {}, {:.1} M parameters (f32, from {}){}, \
             {} special tokens{}",
            self.cfg.num_hidden_layers,
            self.cfg.hidden_size,
            self.cfg.num_attention_heads,
            self.cfg.kv_heads(),
            self.cfg.vocab_size,
            self.params as f64 / 1e6,
            types.join(", "),
            if self.cfg.tie_word_embeddings {
                ", tied embeddings"
            } else {
                ""
            },
            self.added_tokens,
            if self.has_chat_template {
                ", chat template"
            } else {
                ""
            },
        )
    }
}

/// Convert the GGUF file `src` into a checkpoint directory `out`, written atomically (an
/// existing `out` is replaced only once the new one is complete).
pub fn convert(src: &Path, out: &Path) -> anyhow::Result<Summary> {
    let mut file = std::fs::File::open(src).with_context(|| format!("{}", src.display()))?;
    let converted = read(&mut file).with_context(|| format!("{}", src.display()))?;
    checkpoint::save(
        out,
        checkpoint::Contents {
            cfg: &converted.summary.cfg,
            tensors: &converted.tensors,
            files: converted.files,
            extra_tensors: Vec::new(),
            sync: crate::checkpoint::Durability::PageCache,
        },
    )
    .with_context(|| format!("writing {}", out.display()))?;
    Ok(converted.summary)
}

/// A GGUF model in memory, in the Hugging Face layout.
pub struct Converted {
    pub summary: Summary,
    /// f32 tensors under HF names.
    pub tensors: HashMap<String, Tensor>,
    /// `tokenizer.json` and `tokenizer_config.json`: (name, bytes).
    pub files: Vec<(String, Vec<u8>)>,
}

/// Read and convert a GGUF stream (see the module docs).
pub fn read<R: Read + Seek>(reader: &mut R) -> anyhow::Result<Converted> {
    let mut magic = [0u8; 4];
    let got = read_up_to(reader, &mut magic)?;
    if &magic[..got] != b"GGUF" {
        bail!(
            "not a GGUF file (it starts with {:?}, not \"GGUF\")",
            String::from_utf8_lossy(&magic[..got])
        );
    }
    reader.rewind()?;
    let content = Content::read(reader).map_err(|e| anyhow!("reading the GGUF header: {e}"))?;
    let meta = Meta(&content.metadata);

    let arch = meta.string("general.architecture")?;
    if arch != "llama" {
        bail!("architecture \"{arch}\" is not supported (only llama)");
    }
    let cfg = config(&meta, &content)?;
    cfg.validate()?;

    let mut source_types: HashMap<String, usize> = HashMap::new();
    for info in content.tensor_infos.values() {
        *source_types
            .entry(format!("{:?}", info.ggml_dtype))
            .or_default() += 1;
    }
    let mut source_types: Vec<(String, usize)> = source_types.into_iter().collect();
    source_types.sort();

    let tensors = tensors(reader, &content, &cfg)?;
    let params = tensors.values().map(|t| t.elem_count()).sum();
    let tokenizer = tokenizer_json(&meta)?;
    let added_tokens = tokenizer["added_tokens"].as_array().map_or(0, Vec::len);
    let tokenizer_config = tokenizer_config_json(&meta, &cfg)?;
    let has_chat_template = tokenizer_config.get("chat_template").is_some();
    let files = vec![
        (
            TOKENIZER.to_string(),
            serde_json::to_vec_pretty(&tokenizer)?,
        ),
        (
            TOKENIZER_CONFIG.to_string(),
            serde_json::to_vec_pretty(&tokenizer_config)?,
        ),
    ];
    Ok(Converted {
        summary: Summary {
            cfg,
            params,
            source_types,
            added_tokens,
            has_chat_template,
        },
        tensors,
        files,
    })
}

fn read_up_to<R: Read>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Typed access to GGUF metadata, with errors that name the key.
struct Meta<'a>(&'a HashMap<String, Value>);

impl Meta<'_> {
    fn get(&self, key: &str) -> anyhow::Result<&Value> {
        self.0
            .get(key)
            .with_context(|| format!("metadata key {key} is missing"))
    }

    fn string(&self, key: &str) -> anyhow::Result<&str> {
        match self.get(key)? {
            Value::String(s) => Ok(s),
            v => bail!(
                "metadata key {key}: expected a string, got {:?}",
                v.value_type()
            ),
        }
    }

    fn opt_string(&self, key: &str) -> anyhow::Result<Option<&str>> {
        match self.0.contains_key(key) {
            true => self.string(key).map(Some),
            false => Ok(None),
        }
    }

    fn int(&self, key: &str) -> anyhow::Result<u64> {
        let v = self.get(key)?;
        let n: Option<u64> = match *v {
            Value::U8(x) => Some(x.into()),
            Value::U16(x) => Some(x.into()),
            Value::U32(x) => Some(x.into()),
            Value::U64(x) => Some(x),
            Value::I8(x) => u64::try_from(x).ok(),
            Value::I16(x) => u64::try_from(x).ok(),
            Value::I32(x) => u64::try_from(x).ok(),
            Value::I64(x) => u64::try_from(x).ok(),
            _ => bail!(
                "metadata key {key}: expected an integer, got {:?}",
                v.value_type()
            ),
        };
        n.with_context(|| format!("metadata key {key}: negative value {v:?}"))
    }

    fn usize(&self, key: &str) -> anyhow::Result<usize> {
        Ok(usize::try_from(self.int(key)?)?)
    }

    fn opt_usize(&self, key: &str) -> anyhow::Result<Option<usize>> {
        match self.0.contains_key(key) {
            true => self.usize(key).map(Some),
            false => Ok(None),
        }
    }

    fn opt_u32(&self, key: &str) -> anyhow::Result<Option<u32>> {
        match self.0.contains_key(key) {
            true => Ok(Some(u32::try_from(self.int(key)?)?)),
            false => Ok(None),
        }
    }

    fn opt_f64(&self, key: &str) -> anyhow::Result<Option<f64>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(f64::from(*x))),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(v) => bail!(
                "metadata key {key}: expected a float, got {:?}",
                v.value_type()
            ),
        }
    }

    fn opt_bool(&self, key: &str) -> anyhow::Result<Option<bool>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => bail!(
                "metadata key {key}: expected a bool, got {:?}",
                v.value_type()
            ),
        }
    }

    fn array(&self, key: &str) -> anyhow::Result<&[Value]> {
        match self.get(key)? {
            Value::Array(a) => Ok(a),
            v => bail!(
                "metadata key {key}: expected an array, got {:?}",
                v.value_type()
            ),
        }
    }

    fn strings(&self, key: &str) -> anyhow::Result<Vec<&str>> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                v => bail!(
                    "metadata key {key}[{i}]: expected a string, got {:?}",
                    v.value_type()
                ),
            })
            .collect()
    }
}

/// Round an f32 metadata value to the shortest decimal that reads back as the same f32, so
/// that 1e-5 stored as f32 is written as 1e-5, not 9.999999747378752e-6.
fn f32_exact(x: f64) -> f64 {
    (x as f32).to_string().parse().unwrap_or(x)
}

fn config(meta: &Meta<'_>, content: &Content) -> anyhow::Result<LlamaConfig> {
    let hidden = meta.usize("llama.embedding_length")?;
    let heads = meta.usize("llama.attention.head_count")?;
    let kv_heads = meta
        .opt_usize("llama.attention.head_count_kv")?
        .unwrap_or(heads);
    if heads == 0 || kv_heads == 0 {
        bail!("llama.attention.head_count and head_count_kv must be positive");
    }
    let head_dim = match meta.opt_usize("llama.attention.key_length")? {
        Some(k) => k,
        None => hidden / heads,
    };
    if let Some(v) = meta.opt_usize("llama.attention.value_length")?
        && v != head_dim
    {
        bail!("llama.attention.value_length {v} differs from key_length {head_dim}");
    }
    if let Some(rot) = meta.opt_usize("llama.rope.dimension_count")?
        && rot != head_dim
    {
        bail!(
            "partial rotary embeddings (llama.rope.dimension_count {rot} < head_dim {head_dim}) are not supported"
        );
    }
    if let Some(kind) = meta.opt_string("llama.rope.scaling.type")?
        && kind != "none"
    {
        bail!("rope scaling \"{kind}\" (llama.rope.scaling.type) is not supported");
    }
    let embed = content
        .tensor_infos
        .get("token_embd.weight")
        .context("tensor token_embd.weight is missing")?;
    let embed_rows = embed.shape.dims().first().copied().unwrap_or(0);
    let vocab = match meta.opt_usize("llama.vocab_size")? {
        Some(v) => v,
        None => meta.array("tokenizer.ggml.tokens")?.len(),
    };
    if vocab != embed_rows {
        bail!(
            "the vocabulary has {vocab} tokens but token_embd.weight has {embed_rows} rows ({:?})",
            embed.shape
        );
    }
    let mut extra = Map::new();
    extra.insert("attention_dropout".into(), json!(0.0));
    extra.insert("pretraining_tp".into(), json!(1));
    extra.insert("use_cache".into(), json!(true));
    Ok(LlamaConfig {
        architectures: vec!["LlamaForCausalLM".into()],
        model_type: "llama".into(),
        hidden_size: hidden,
        intermediate_size: meta.usize("llama.feed_forward_length")?,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv_heads),
        num_hidden_layers: meta.usize("llama.block_count")?,
        rms_norm_eps: f32_exact(
            meta.opt_f64("llama.attention.layer_norm_rms_epsilon")?
                .unwrap_or(1e-5),
        ),
        rope_theta: f32_exact(meta.opt_f64("llama.rope.freq_base")?.unwrap_or(10000.0)),
        vocab_size: vocab,
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        max_position_embeddings: meta.opt_usize("llama.context_length")?.unwrap_or(2048),
        // This crate's samplers and trainers start every sequence with `bos_token_id` when the
        // config has one; a model that is not given a BOS (`add_bos_token` false, as SmolLM2)
        // gets none. transformers' LlamaConfig then defaults it to 1, which only matters for
        // generating from an empty prompt; tokenizer_config.json still names the token.
        bos_token_id: match meta.opt_bool("tokenizer.ggml.add_bos_token")? {
            Some(false) => None,
            _ => meta.opt_u32("tokenizer.ggml.bos_token_id")?,
        },
        eos_token_id: meta
            .opt_u32("tokenizer.ggml.eos_token_id")?
            .map(TokenIds::One),
        pad_token_id: meta.opt_u32("tokenizer.ggml.padding_token_id")?,
        torch_dtype: "float32".into(),
        head_dim: Some(head_dim),
        hidden_act: "silu".into(),
        attention_bias: false,
        mlp_bias: false,
        rope_scaling: None,
        initializer_range: 0.02,
        extra,
    })
}

/// The GGUF tensor name of each HF tensor of a llama layer.
const LAYER_TENSORS: [(&str, &str); 9] = [
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];

/// Undo llama.cpp's rotary row permutation of a `(n_head * head_dim, in)` weight: its rows,
/// viewed as `(n_head, head_dim / 2, 2)`, go back to `(n_head, 2, head_dim / 2)`.
pub fn unpermute_rows(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    if n_head == 0 || !out.is_multiple_of(2 * n_head) {
        candle_core::bail!("cannot unpermute {out} rows into {n_head} heads of even width");
    }
    w.reshape((n_head, out / n_head / 2, 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, inp))
}

fn tensors<R: Read + Seek>(
    reader: &mut R,
    content: &Content,
    cfg: &LlamaConfig,
) -> anyhow::Result<HashMap<String, Tensor>> {
    let mut names: Vec<(String, String)> = vec![
        (
            "token_embd.weight".into(),
            "model.embed_tokens.weight".into(),
        ),
        ("output_norm.weight".into(), "model.norm.weight".into()),
    ];
    if !cfg.tie_word_embeddings {
        names.push(("output.weight".into(), "lm_head.weight".into()));
    }
    for l in 0..cfg.num_hidden_layers {
        for (g, h) in LAYER_TENSORS {
            names.push((
                format!("blk.{l}.{g}.weight"),
                format!("model.layers.{l}.{h}.weight"),
            ));
        }
    }
    let expected: HashMap<String, Vec<usize>> =
        crate::config::param_shapes(cfg).into_iter().collect();
    let mut out = HashMap::new();
    for (gguf_name, hf_name) in &names {
        let q = content
            .tensor(reader, gguf_name, &Device::Cpu)
            .map_err(|e| anyhow!("tensor {gguf_name}: {e}"))?;
        let mut t = q
            .dequantize(&Device::Cpu)
            .map_err(|e| anyhow!("dequantizing {gguf_name} ({:?}): {e}", q.dtype()))?;
        if hf_name.ends_with("q_proj.weight") {
            t = unpermute_rows(&t, cfg.num_attention_heads)?;
        } else if hf_name.ends_with("k_proj.weight") {
            t = unpermute_rows(&t, cfg.kv_heads())?;
        }
        let want = &expected[hf_name];
        if t.dims() != want.as_slice() {
            bail!(
                "tensor {gguf_name} has shape {:?}, the config needs {want:?} for {hf_name}",
                t.dims()
            );
        }
        out.insert(hf_name.clone(), t);
    }
    let used: std::collections::HashSet<&str> = names.iter().map(|(g, _)| g.as_str()).collect();
    let mut unused: Vec<&String> = content
        .tensor_infos
        .keys()
        .filter(|k| !used.contains(k.as_str()))
        .collect();
    unused.sort();
    if !unused.is_empty() {
        bail!(
            "tensors this converter does not know how to place: {}",
            unused
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(out)
}

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

fn token_types(meta: &Meta<'_>, n: usize) -> anyhow::Result<Vec<i64>> {
    let key = "tokenizer.ggml.token_type";
    if !meta.0.contains_key(key) {
        return Ok(vec![1; n]);
    }
    let types = meta.array(key)?;
    if types.len() != n {
        bail!("{key} has {} entries for {n} tokens", types.len());
    }
    types
        .iter()
        .enumerate()
        .map(|(i, v)| match *v {
            Value::I32(x) => Ok(i64::from(x)),
            Value::U32(x) => Ok(i64::from(x)),
            Value::I8(x) => Ok(i64::from(x)),
            Value::U8(x) => Ok(i64::from(x)),
            _ => bail!("{key}[{i}]: expected an integer, got {:?}", v.value_type()),
        })
        .collect()
}

/// The pre-tokenizer that matches llama.cpp's `tokenizer.ggml.pre` for byte-level BPE.
fn pre_tokenizer(pre: &str) -> anyhow::Result<serde_json::Value> {
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                            "trim_offsets": true, "use_regex": true});
    match pre {
        // GPT-2's split regex over bytes.
        "gpt2" | "gpt-2" | "default" => Ok(byte_level),
        // StarCoder / SmolLM: every digit its own word, then GPT-2's regex.
        "smollm" | "starcoder" => Ok(json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            byte_level,
        ]})),
        other => bail!(
            "tokenizer.ggml.pre \"{other}\" is not supported (known: smollm, starcoder, gpt2)"
        ),
    }
}

/// `tokenizer.json` from the `tokenizer.ggml.*` metadata.
fn tokenizer_json(meta: &Meta<'_>) -> anyhow::Result<serde_json::Value> {
    let model = meta.string("tokenizer.ggml.model")?;
    if model != "gpt2" {
        bail!("tokenizer.ggml.model \"{model}\" is not supported (only gpt2, byte-level BPE)");
    }
    if meta.opt_bool("tokenizer.ggml.add_space_prefix")? == Some(true) {
        bail!("tokenizer.ggml.add_space_prefix = true is not supported");
    }
    let pre = pre_tokenizer(meta.opt_string("tokenizer.ggml.pre")?.unwrap_or("default"))?;
    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    let types = token_types(meta, tokens.len())?;
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, (tok, ty)) in tokens.iter().zip(&types).enumerate() {
        if vocab.insert(tok.to_string(), json!(id)).is_some() {
            bail!("tokenizer.ggml.tokens[{id}]: duplicate token {tok:?}");
        }
        if *ty == TOKEN_TYPE_CONTROL || *ty == TOKEN_TYPE_USER_DEFINED {
            added.push(json!({"id": id, "content": tok, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false,
                "special": *ty == TOKEN_TYPE_CONTROL}));
        }
    }
    let merges = meta.strings("tokenizer.ggml.merges")?;
    for (i, m) in merges.iter().enumerate() {
        let mut parts = m.split(' ');
        let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
            bail!("tokenizer.ggml.merges[{i}]: {m:?} is not two tokens separated by one space");
        };
        for part in [a, b] {
            if !vocab.contains_key(part) {
                bail!("tokenizer.ggml.merges[{i}]: {part:?} is not in the vocabulary");
            }
        }
    }
    let unk =
        match meta.opt_u32("tokenizer.ggml.unknown_token_id")? {
            Some(id) => Some(*tokens.get(id as usize).with_context(|| {
                format!("tokenizer.ggml.unknown_token_id {id} is out of range")
            })?),
            None => None,
        };
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": false,
                           "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true,
                    "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    }))
}

/// `tokenizer_config.json`: the special tokens by name, and the chat template, for
/// `AutoTokenizer` and for `rl-sample --chat-template`.
fn tokenizer_config_json(meta: &Meta<'_>, cfg: &LlamaConfig) -> anyhow::Result<serde_json::Value> {
    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    let mut out = Map::new();
    out.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    for (name, key) in [
        ("bos_token", "tokenizer.ggml.bos_token_id"),
        ("eos_token", "tokenizer.ggml.eos_token_id"),
        ("pad_token", "tokenizer.ggml.padding_token_id"),
        ("unk_token", "tokenizer.ggml.unknown_token_id"),
    ] {
        if let Some(id) = meta.opt_u32(key)? {
            let tok = tokens
                .get(id as usize)
                .with_context(|| format!("{key} {id} is out of range"))?;
            out.insert(name.into(), json!(tok));
        }
    }
    out.insert(
        "add_bos_token".into(),
        json!(
            meta.opt_bool("tokenizer.ggml.add_bos_token")?
                .unwrap_or(false)
        ),
    );
    out.insert(
        "add_eos_token".into(),
        json!(
            meta.opt_bool("tokenizer.ggml.add_eos_token")?
                .unwrap_or(false)
        ),
    );
    out.insert("clean_up_tokenization_spaces".into(), json!(false));
    out.insert(
        "model_max_length".into(),
        json!(cfg.max_position_embeddings),
    );
    if let Some(t) = meta.opt_string("tokenizer.chat_template")? {
        out.insert("chat_template".into(), json!(t));
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Checkpoint;
    use candle_core::quantized::{GgmlDType, QTensor, gguf_file};

    const LAYERS: usize = 2;
    const HIDDEN: usize = 8;
    const HEADS: usize = 2;
    const KV_HEADS: usize = 1;
    const HEAD_DIM: usize = 4;
    const INTER: usize = 12;
    /// Special tokens first (type 3), then characters and merged tokens.
    const TOKENS: [&str; 14] = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "d",
        "e",
        "f",
        "Ġ",
        "x",
        "1",
        "2",
        "de",
        "def",
        "Ġx",
        "12",
    ];
    const MERGES: [&str; 4] = ["d e", "de f", "Ġ x", "1 2"];
    const TEMPLATE: &str =
        "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}";

    fn cfg(tied: bool) -> LlamaConfig {
        let mut c = LlamaConfig::preset(crate::Preset::Tiny);
        c.hidden_size = HIDDEN;
        c.intermediate_size = INTER;
        c.num_attention_heads = HEADS;
        c.num_key_value_heads = Some(KV_HEADS);
        c.head_dim = Some(HEAD_DIM);
        c.num_hidden_layers = LAYERS;
        c.vocab_size = TOKENS.len();
        c.tie_word_embeddings = tied;
        c
    }

    /// Distinct, deterministic values for every tensor, so that a misplaced row shows.
    fn hf_tensors(cfg: &LlamaConfig) -> HashMap<String, Tensor> {
        crate::config::param_shapes(cfg)
            .into_iter()
            .enumerate()
            .map(|(k, (name, shape))| {
                let n: usize = shape.iter().product();
                let data: Vec<f32> = (0..n)
                    .map(|i| ((i * 7 + k * 131) as f32 * 0.37).sin())
                    .collect();
                (name, Tensor::from_vec(data, shape, &Device::Cpu).unwrap())
            })
            .collect()
    }

    /// llama.cpp's `permute`, written out row by row: within each head, row `half * hd/2 + j`
    /// of the HF layout becomes row `2 * j + half`.
    fn llama_cpp_permute(w: &Tensor, n_head: usize) -> Tensor {
        let rows: Vec<Vec<f32>> = w.to_vec2().unwrap();
        let hd = rows.len() / n_head;
        let mut out = rows.clone();
        for h in 0..n_head {
            for j in 0..hd / 2 {
                for half in 0..2 {
                    out[h * hd + 2 * j + half] = rows[h * hd + half * hd / 2 + j].clone();
                }
            }
        }
        let cols = out[0].len();
        Tensor::from_vec(out.concat(), (rows.len(), cols), &Device::Cpu).unwrap()
    }

    fn gguf_name(hf: &str) -> String {
        match hf {
            "model.embed_tokens.weight" => "token_embd.weight".into(),
            "model.norm.weight" => "output_norm.weight".into(),
            "lm_head.weight" => "output.weight".into(),
            _ => {
                let rest = hf.strip_prefix("model.layers.").unwrap();
                let (layer, rest) = rest.split_once('.').unwrap();
                let part = rest.strip_suffix(".weight").unwrap();
                let g = LAYER_TENSORS.iter().find(|(_, h)| *h == part).unwrap().0;
                format!("blk.{layer}.{g}.weight")
            }
        }
    }

    fn metadata(arch: &str) -> Vec<(String, Value)> {
        let strings =
            |xs: &[&str]| Value::Array(xs.iter().map(|s| Value::String(s.to_string())).collect());
        let mut types = vec![Value::I32(3); 3];
        types.extend(std::iter::repeat_n(Value::I32(1), TOKENS.len() - 3));
        vec![
            ("general.architecture".into(), Value::String(arch.into())),
            ("llama.block_count".into(), Value::U32(LAYERS as u32)),
            ("llama.context_length".into(), Value::U32(64)),
            ("llama.embedding_length".into(), Value::U32(HIDDEN as u32)),
            ("llama.feed_forward_length".into(), Value::U32(INTER as u32)),
            (
                "llama.attention.head_count".into(),
                Value::U32(HEADS as u32),
            ),
            (
                "llama.attention.head_count_kv".into(),
                Value::U32(KV_HEADS as u32),
            ),
            ("llama.rope.freq_base".into(), Value::F32(100000.0)),
            (
                "llama.attention.layer_norm_rms_epsilon".into(),
                Value::F32(1e-5),
            ),
            ("llama.vocab_size".into(), Value::U32(TOKENS.len() as u32)),
            (
                "llama.rope.dimension_count".into(),
                Value::U32(HEAD_DIM as u32),
            ),
            ("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false)),
            ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
            ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
            ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
            ("tokenizer.ggml.tokens".into(), strings(&TOKENS)),
            ("tokenizer.ggml.token_type".into(), Value::Array(types)),
            ("tokenizer.ggml.merges".into(), strings(&MERGES)),
            ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
            ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
            ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
            ("tokenizer.ggml.padding_token_id".into(), Value::U32(2)),
            (
                "tokenizer.chat_template".into(),
                Value::String(TEMPLATE.into()),
            ),
        ]
    }

    /// Write a GGUF of `tensors` (HF names, HF layout) the way llama.cpp's converter would.
    fn write_gguf(path: &Path, meta: &[(String, Value)], tensors: &HashMap<String, Tensor>) {
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        let qs: Vec<(String, QTensor)> = names
            .into_iter()
            .map(|hf| {
                let mut t = tensors[hf].clone();
                if hf.ends_with("q_proj.weight") {
                    t = llama_cpp_permute(&t, HEADS);
                } else if hf.ends_with("k_proj.weight") {
                    t = llama_cpp_permute(&t, KV_HEADS);
                }
                (
                    gguf_name(hf),
                    QTensor::quantize(&t, GgmlDType::F32).unwrap(),
                )
            })
            .collect();
        let meta: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let qs: Vec<(&str, &QTensor)> = qs.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut f = std::fs::File::create(path).unwrap();
        gguf_file::write(&mut f, &meta, &qs).unwrap();
    }

    fn assert_same(a: &Tensor, b: &Tensor, name: &str) {
        assert_eq!(a.dims(), b.dims(), "{name}");
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b, "{name}");
    }

    #[test]
    fn converts_a_tiny_llama_with_tied_embeddings() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = cfg(true);
        let original = hf_tensors(&cfg);
        let src = dir.path().join("tiny.gguf");
        write_gguf(&src, &metadata("llama"), &original);
        let out = dir.path().join("ckpt");
        let summary = convert(&src, &out).unwrap();
        assert_eq!(summary.added_tokens, 3);
        assert!(summary.has_chat_template);

        let ck = Checkpoint::load(&out).unwrap();
        let c = &ck.cfg;
        assert_eq!(
            (c.num_hidden_layers, c.hidden_size, c.intermediate_size),
            (LAYERS, HIDDEN, INTER)
        );
        assert_eq!(
            (c.num_attention_heads, c.kv_heads(), c.head_dim()),
            (HEADS, KV_HEADS, HEAD_DIM)
        );
        assert_eq!((c.rope_theta, c.rms_norm_eps), (100000.0, 1e-5));
        assert_eq!(
            (c.vocab_size, c.max_position_embeddings),
            (TOKENS.len(), 64)
        );
        assert!(c.tie_word_embeddings);
        // add_bos_token is false: no BOS for rl-sample / rl-update to prepend.
        assert_eq!(
            (c.bos_token_id, c.eos_ids(), c.pad_token_id),
            (None, vec![2], Some(2))
        );
        assert_eq!(c.architectures, vec!["LlamaForCausalLM".to_string()]);

        // Every tensor is the original, the Q/K permutation undone; no lm_head when tied.
        assert_eq!(ck.tensors.len(), original.len());
        assert!(!ck.tensors.contains_key("lm_head.weight"));
        for (name, t) in &original {
            assert_same(&ck.tensors[name], t, name);
        }
        ck.model().unwrap();

        // Digits split one by one (the "1 2" merge never applies), no prefix space, special
        // tokens matched whole and left out when decoding.
        let tok = &ck.tokenizer;
        let ids = tok.encode("def x12<|im_end|>").unwrap();
        assert_eq!(ids, vec![11, 12, 8, 9, 2]);
        assert_eq!(tok.decode(&ids).unwrap(), "def x12");
        assert_eq!(tok.encode("x").unwrap(), vec![7]);
        assert_eq!(tok.token_id("<|im_start|>"), Some(1));

        let tc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(TOKENIZER_CONFIG)).unwrap()).unwrap();
        assert_eq!(tc["chat_template"], TEMPLATE);
        assert_eq!(
            (&tc["bos_token"], &tc["eos_token"], &tc["pad_token"]),
            (
                &json!("<|im_start|>"),
                &json!("<|im_end|>"),
                &json!("<|im_end|>")
            )
        );
        assert_eq!(tc["model_max_length"], 64);
        let tj: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(TOKENIZER)).unwrap()).unwrap();
        assert_eq!(tj["added_tokens"][2]["special"], true);
        let gc: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join(checkpoint::GENERATION_CONFIG)).unwrap(),
        )
        .unwrap();
        assert_eq!(gc["eos_token_id"], 2);
    }

    #[test]
    fn an_output_tensor_gives_an_untied_lm_head() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = cfg(false);
        let original = hf_tensors(&cfg);
        let src = dir.path().join("untied.gguf");
        let mut meta = metadata("llama");
        for (k, v) in &mut meta {
            if k == "tokenizer.ggml.add_bos_token" {
                *v = Value::Bool(true);
            }
        }
        write_gguf(&src, &meta, &original);
        let out = dir.path().join("ckpt");
        convert(&src, &out).unwrap();
        let ck = Checkpoint::load(&out).unwrap();
        assert!(!ck.cfg.tie_word_embeddings);
        assert_eq!(ck.cfg.bos_token_id, Some(1));
        assert_same(
            &ck.tensors["lm_head.weight"],
            &original["lm_head.weight"],
            "lm_head",
        );
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        let w = Tensor::arange(0f32, 24.0 * 3.0, &Device::Cpu)
            .unwrap()
            .reshape((24, 3))
            .unwrap();
        for heads in [1, 2, 3, 6] {
            let back = unpermute_rows(&llama_cpp_permute(&w, heads), heads).unwrap();
            assert_same(&back, &w, &format!("{heads} heads"));
        }
        assert!(unpermute_rows(&w, 5).is_err());
    }

    #[test]
    fn rejects_a_file_that_is_not_gguf() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("model.safetensors");
        std::fs::write(&src, b"{\"not\": \"gguf\"}").unwrap();
        let out = dir.path().join("ckpt");
        let err = format!("{:#}", convert(&src, &out).unwrap_err());
        assert!(
            err.contains("model.safetensors") && err.contains("not a GGUF file"),
            "{err}"
        );
        assert!(!out.exists());
        let err = format!(
            "{:#}",
            convert(&dir.path().join("missing.gguf"), &out).unwrap_err()
        );
        assert!(err.contains("missing.gguf"), "{err}");
    }

    #[test]
    fn rejects_an_unsupported_architecture_or_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = cfg(true);
        let original = hf_tensors(&cfg);
        let src = dir.path().join("gemma.gguf");
        write_gguf(&src, &metadata("gemma"), &original);
        let out = dir.path().join("ckpt");
        let err = format!("{:#}", convert(&src, &out).unwrap_err());
        assert!(
            err.contains("gemma.gguf") && err.contains("architecture \"gemma\" is not supported"),
            "{err}"
        );

        let mut meta = metadata("llama");
        for (k, v) in &mut meta {
            if k == "tokenizer.ggml.model" {
                *v = Value::String("llama".into());
            }
        }
        write_gguf(&src, &meta, &original);
        let err = format!("{:#}", convert(&src, &out).unwrap_err());
        assert!(
            err.contains("tokenizer.ggml.model \"llama\" is not supported"),
            "{err}"
        );
        assert!(!out.exists());
    }
}
