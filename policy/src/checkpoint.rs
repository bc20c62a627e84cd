//! Checkpoints: directories in the Hugging Face layout.
//!
//! ```text
//! ckpt/
//!   config.json             LlamaConfig (architectures ["LlamaForCausalLM"], model_type "llama")
//!   model.safetensors       f32 tensors under HF names; no lm_head.weight when tied;
//!                           header metadata {"format": "pt"} as transformers expects
//!   tokenizer.json          a Hugging Face tokenizer (byte-level BPE for the tiny models)
//!   tokenizer_config.json   optional: special tokens for AutoTokenizer
//!   generation_config.json  bos/eos/pad ids
//!   optimizer.safetensors   optional (rl-update): AdamW moments, "<param>.exp_avg[_sq]"
//!   trainer_state.json      optional (rl-update): {"step": N, ...}
//! ```
//!
//! transformers ignores the last two. A directory is written whole into a temporary sibling
//! and renamed into place, so a killed run never leaves a half-written checkpoint.

use crate::config::LlamaConfig;
use crate::tokenizer::{self, Tokenizer};
use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
pub const TOKENIZER: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
pub const GENERATION_CONFIG: &str = "generation_config.json";

/// A loaded checkpoint.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub cfg: LlamaConfig,
    pub tensors: HashMap<String, Tensor>,
    pub tokenizer: Tokenizer,
}

impl Checkpoint {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        Self::load_as(dir, Weights::Constants)
    }

    /// Like [`Checkpoint::load`]; with [`Weights::Variables`] the weights are candle variables
    /// from the start, so that training them in full needs no second copy of the model.
    pub fn load_as(dir: &Path, kind: Weights) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            bail!("{}: not a checkpoint directory", dir.display());
        }
        let cfg = LlamaConfig::load(&dir.join(CONFIG))?;
        let tensors = load_weights_as(dir, kind)?;
        let tokenizer = tokenizer::load_dir(dir)?;
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            cfg,
            tensors,
            tokenizer,
        })
    }
}

/// What the loaded weights are to candle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    /// Plain tensors: no gradient is computed for them.
    Constants,
    /// Variables (`candle_core::Var`): what full fine-tuning trains.
    Variables,
}

/// `model.safetensors`, or the shards named by `model.safetensors.index.json`; converted to f32.
pub fn load_weights(dir: &Path) -> anyhow::Result<HashMap<String, Tensor>> {
    load_weights_as(dir, Weights::Constants)
}

/// [`load_weights`], as constants or variables. Each file is memory-mapped and each tensor
/// copied once, straight into its own storage (reading the file into a buffer first, then
/// converting, then copying into a variable made three copies of the model in fresh pages).
pub fn load_weights_as(dir: &Path, kind: Weights) -> anyhow::Result<HashMap<String, Tensor>> {
    let single = dir.join(WEIGHTS);
    let files: Vec<PathBuf> = if single.exists() {
        vec![single]
    } else {
        let index = dir.join(WEIGHTS_INDEX);
        let text = std::fs::read_to_string(&index)
            .with_context(|| format!("{}: no {WEIGHTS} or {WEIGHTS_INDEX}", dir.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}", index.display()))?;
        let mut shards: Vec<String> = v["weight_map"]
            .as_object()
            .with_context(|| format!("{}: no weight_map", index.display()))?
            .values()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        shards.sort();
        shards.dedup();
        shards.into_iter().map(|s| dir.join(s)).collect()
    };
    let mut out = HashMap::new();
    for f in files {
        read_safetensors_into(&f, kind, &mut out).with_context(|| format!("{}", f.display()))?;
    }
    Ok(out)
}

/// Every tensor of one safetensors file, as f32 (see [`load_weights_as`]).
pub fn read_safetensors(path: &Path, kind: Weights) -> anyhow::Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    read_safetensors_into(path, kind, &mut out).with_context(|| format!("{}", path.display()))?;
    Ok(out)
}

fn read_safetensors_into(
    path: &Path,
    kind: Weights,
    out: &mut HashMap<String, Tensor>,
) -> anyhow::Result<()> {
    let file = std::fs::File::open(path)?;
    // SAFETY: the map is only read while this function runs. Checkpoints are written whole
    // into new files and renamed into place (`write_dir_atomic`), never modified in place; a
    // file truncated by another program meanwhile would fault the process, not corrupt it.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let st = safetensors::SafeTensors::deserialize(&map)?;
    // Each tensor copied out of the map on one of rayon's threads (the copies fault in fresh
    // pages: ~0.4 s for SmolLM2-135M's 540 MB on one thread here, 0.2-0.3 s on two).
    let tensors = st.tensors();
    let loaded = tensors
        .into_par_iter()
        .map(|(name, view)| -> anyhow::Result<(String, Tensor)> {
            let t = match (view.dtype(), kind) {
                (safetensors::Dtype::F32, Weights::Variables) => {
                    let bytes = view.data();
                    let data: Vec<f32> = match bytemuck::try_cast_slice::<u8, f32>(bytes) {
                        Ok(aligned) => aligned.to_vec(),
                        Err(_) => {
                            let mut v = vec![0f32; bytes.len() / 4];
                            bytemuck::cast_slice_mut::<f32, u8>(&mut v).copy_from_slice(bytes);
                            v
                        }
                    };
                    candle_core::Var::from_vec(data, view.shape(), &Device::Cpu)?.into_inner()
                }
                _ => {
                    let dtype = candle_dtype(view.dtype())
                        .with_context(|| format!("{name}: unsupported dtype {:?}", view.dtype()))?;
                    let t =
                        Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)?
                            .to_dtype(DType::F32)?;
                    match kind {
                        Weights::Constants => t,
                        Weights::Variables => candle_core::Var::from_tensor(&t)?.into_inner(),
                    }
                }
            };
            Ok((name, t))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    out.extend(loaded);
    Ok(())
}

fn candle_dtype(d: safetensors::Dtype) -> Option<DType> {
    use safetensors::Dtype as S;
    Some(match d {
        S::F32 => DType::F32,
        S::F16 => DType::F16,
        S::BF16 => DType::BF16,
        S::F64 => DType::F64,
        S::U8 => DType::U8,
        S::U32 => DType::U32,
        S::I64 => DType::I64,
        _ => return None,
    })
}

/// Write f32 tensors as a safetensors file, names sorted, with `{"format": "pt"}` metadata
/// (the `safetensors` crate). Each tensor's bytes are written straight from its storage: no copy
/// of the weights is made (a copy of 1.6 GB of weights and optimizer state, in freshly faulted
/// pages, used to take longer than writing them).
pub fn write_safetensors(path: &Path, tensors: &HashMap<String, Tensor>) -> anyhow::Result<()> {
    let mut f32s: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(name, t)| Ok((name.as_str(), t.to_dtype(DType::F32)?.contiguous()?)))
        .collect::<candle_core::Result<_>>()?;
    f32s.sort_by(|a, b| a.0.cmp(b.0));
    let held: Vec<_> = f32s
        .iter()
        .map(|(name, t)| {
            let (storage, layout) = t.storage_and_layout();
            (*name, storage, layout.clone(), t.dims().to_vec())
        })
        .collect();
    let views = held
        .iter()
        .map(|(name, storage, layout, shape)| {
            let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)) = &**storage else {
                bail!("{name}: not an f32 tensor on the CPU");
            };
            let (a, b) = layout
                .contiguous_offsets()
                .with_context(|| format!("{name}: not contiguous"))?;
            Ok((
                *name,
                F32View {
                    data: &data[a..b],
                    shape,
                },
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path)
        .with_context(|| format!("{}", path.display()))?;
    // (the crate writes through a temporary file, created 0600)
    rlcode_core::paths::publish_mode(path).with_context(|| format!("{}", path.display()))?;
    Ok(())
}

/// An f32 tensor's data, borrowed, as the `safetensors` crate writes it (little-endian bytes).
struct F32View<'a> {
    data: &'a [f32],
    shape: &'a [usize],
}

#[cfg(not(target_endian = "little"))]
compile_error!("checkpoints are written as the machine's f32 bytes: little-endian only");

impl safetensors::View for F32View<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(bytemuck::cast_slice(self.data))
    }
    fn data_len(&self) -> usize {
        std::mem::size_of_val(self.data)
    }
}

/// Whether a checkpoint reaches the disk before its writer returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Written to the page cache and renamed into place (as `torch.save` and transformers'
    /// `save_pretrained` do): a killed process leaves the old checkpoint or the whole new
    /// one; a crash of the machine within the kernel's write-back delay (~30 s) may leave
    /// the new directory with empty, short or partly unwritten files.
    #[default]
    PageCache,
    /// Also fsync every file and the directory before the rename, and the parent after it:
    /// the new checkpoint survives a crash of the machine once the call returns.
    Disk,
}

/// Write a checkpoint directory at `target` atomically: `fill` writes the files into a fresh
/// temporary directory beside `target`, which is then renamed into place. An existing `target`
/// is replaced (moved aside first, removed after). On error the temporary directory is removed
/// and `target` is untouched. With [`Durability::Disk`] the files are fsynced side by side (one
/// file's data goes to disk while another's is flushed) before the rename.
pub fn write_dir_atomic(
    target: &Path,
    sync: Durability,
    fill: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let name = target
        .file_name()
        .with_context(|| format!("{}: not a directory name", target.display()))?
        .to_string_lossy()
        .to_string();
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("{}", parent.display()))?;
    // Both temporary directories are removed when dropped: on an error, on a panic, and (the
    // old one, holding the replaced checkpoint) after the swap.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .tempdir_in(&parent)
        .with_context(|| format!("a temporary directory in {}", parent.display()))?;
    fill(tmp.path())?;
    if sync == Durability::Disk {
        sync_tree(tmp.path())?;
    }
    // The parent's entry for the new name, once renamed.
    let sync_parent = || -> anyhow::Result<()> {
        if sync == Durability::Disk {
            std::fs::File::open(&parent)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing {}", parent.display()))?;
        }
        Ok(())
    };
    if !target.exists() {
        std::fs::rename(tmp.path(), target).with_context(|| format!("{}", target.display()))?;
        // (renamed away: dropping `tmp` finds nothing to remove)
        return sync_parent();
    }
    // rename(2) replaces an empty directory: `old` is one, created only to reserve the name.
    let old = tempfile::Builder::new()
        .prefix(&format!(".{name}.old-"))
        .tempdir_in(&parent)
        .with_context(|| format!("a temporary directory in {}", parent.display()))?;
    std::fs::rename(target, old.path())
        .with_context(|| format!("moving {} aside", target.display()))?;
    if let Err(e) = std::fs::rename(tmp.path(), target) {
        // Put the old checkpoint back rather than leave none.
        let _ = std::fs::rename(old.path(), target);
        return Err(e).with_context(|| format!("{}", target.display()));
    }
    sync_parent()
}

/// fsync every file of directory `dir` (one thread per file: their write-backs overlap),
/// then `dir` itself.
fn sync_tree(dir: &Path) -> anyhow::Result<()> {
    let files = std::fs::read_dir(dir)
        .and_then(|es| {
            es.map(|e| e.map(|e| e.path()))
                .collect::<Result<Vec<_>, _>>()
        })
        .with_context(|| format!("{}", dir.display()))?;
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .map(|f| {
                s.spawn(move || {
                    std::fs::File::open(f)
                        .and_then(|f| f.sync_all())
                        .with_context(|| format!("syncing {}", f.display()))
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// What a checkpoint directory holds besides its weights.
pub struct Contents<'a> {
    pub cfg: &'a LlamaConfig,
    pub tensors: &'a HashMap<String, Tensor>,
    /// Files copied verbatim (tokenizer.json, tokenizer_config.json, ...): (name, bytes).
    pub files: Vec<(String, Vec<u8>)>,
    /// Extra safetensors files (optimizer state): (name, tensors).
    pub extra_tensors: Vec<(String, &'a HashMap<String, Tensor>)>,
    pub sync: Durability,
}

/// Write a whole checkpoint atomically (see [`write_dir_atomic`]). Tied embeddings are saved
/// once, as transformers does; only the tensors named by the config are written.
pub fn save(target: &Path, contents: Contents<'_>) -> anyhow::Result<()> {
    let cfg = contents.cfg;
    let mut weights = HashMap::new();
    for (name, _) in crate::config::param_shapes(cfg) {
        let t = contents
            .tensors
            .get(&name)
            .with_context(|| format!("missing tensor {name}"))?;
        weights.insert(name, t.clone());
    }
    write_dir_atomic(target, contents.sync, |dir| {
        write_file(&dir.join(CONFIG), cfg.to_json_pretty().as_bytes())?;
        write_file(
            &dir.join(GENERATION_CONFIG),
            generation_config(cfg).as_bytes(),
        )?;
        for (name, bytes) in &contents.files {
            write_file(&dir.join(name), bytes)?;
        }
        // The weights and each extra file (the optimizer state: twice the weights) are written
        // side by side (each thread copies into the page cache).
        std::thread::scope(|s| {
            let extra: Vec<_> = contents
                .extra_tensors
                .iter()
                .map(|(name, ts)| s.spawn(move || write_safetensors(&dir.join(name), ts)))
                .collect();
            let main = write_safetensors(&dir.join(WEIGHTS), &weights);
            extra
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .fold(main, |acc, r| acc.and(r))
        })
    })
}

fn generation_config(cfg: &LlamaConfig) -> String {
    let mut m = serde_json::Map::new();
    if let Some(b) = cfg.bos_token_id {
        m.insert("bos_token_id".into(), b.into());
    }
    if let Some(e) = &cfg.eos_token_id {
        m.insert(
            "eos_token_id".into(),
            serde_json::to_value(e).unwrap_or_default(),
        );
    }
    if let Some(p) = cfg.pad_token_id {
        m.insert("pad_token_id".into(), p.into());
    }
    serde_json::to_string_pretty(&m).expect("serializes")
}

pub fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("{}", path.display()))?;
    Ok(())
}

/// The tokenizer files of a checkpoint directory, to copy into the next one.
pub fn tokenizer_files(dir: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for name in [TOKENIZER, TOKENIZER_CONFIG, "special_tokens_map.json"] {
        let p = dir.join(name);
        if p.exists() {
            out.push((
                name.to_string(),
                std::fs::read(&p).with_context(|| format!("{}", p.display()))?,
            ));
        }
    }
    Ok(out)
}

/// The byte-level tokenizer's files for a new checkpoint.
pub fn byte_level_tokenizer_files(cfg: &LlamaConfig) -> Vec<(String, Vec<u8>)> {
    vec![
        (TOKENIZER.into(), tokenizer::byte_level_json().into_bytes()),
        (
            TOKENIZER_CONFIG.into(),
            tokenizer::byte_level_config_json(cfg.max_position_embeddings).into_bytes(),
        ),
    ]
}
