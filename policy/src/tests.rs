use super::*;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

/// A very small config (same code paths as the presets: GQA, tied or not).
fn micro(tied: bool) -> LlamaConfig {
    let mut c = LlamaConfig::preset(Preset::Tiny);
    c.hidden_size = 32;
    c.intermediate_size = 48;
    c.num_attention_heads = 4;
    c.num_key_value_heads = Some(2);
    c.head_dim = Some(8);
    c.num_hidden_layers = 2;
    c.max_position_embeddings = 64;
    c.tie_word_embeddings = tied;
    // Larger than the default so that the model is far from uniform and errors would show.
    c.initializer_range = 0.2;
    c
}

fn ids(v: &[u32], b: usize) -> Tensor {
    Tensor::from_vec(v.to_vec(), (b, v.len() / b), &Device::Cpu).unwrap()
}

fn seq() -> Vec<u32> {
    "def f(x):\n    return x + 1\n"
        .bytes()
        .map(u32::from)
        .collect()
}

/// Per-position log-probs of `tokens[1..]` through the training path.
fn train_logprobs(m: &Llama, tokens: &[u32]) -> Vec<f32> {
    let t = tokens.len();
    let logits = m.forward_train(&ids(&tokens[..t - 1], 1)).unwrap();
    let logits = logits.reshape((t - 1, m.cfg.vocab_size)).unwrap();
    let tgt = Tensor::from_vec(tokens[1..].to_vec(), t - 1, &Device::Cpu).unwrap();
    token_logprobs(&logits, &tgt).unwrap().to_vec1().unwrap()
}

#[test]
fn every_parameter_gets_a_nonzero_gradient() {
    for tied in [true, false] {
        let cfg = micro(tied);
        let tr = Trainable::new(&cfg, &model::init_tensors(&cfg, 1).unwrap()).unwrap();
        let toks = seq();
        let lp = train_logprobs_tensor(&tr.model, &toks);
        let loss = lp.sum_all().unwrap().neg().unwrap();
        let grads = loss.backward().unwrap();
        assert_eq!(tr.params.len(), model::param_shapes(&cfg).len());
        for (name, var) in &tr.params {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name} (tied={tied})"));
            let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(norm > 0.0 && norm.is_finite(), "{name}: |grad|^2 = {norm}");
        }
    }
}

fn train_logprobs_tensor(m: &Llama, tokens: &[u32]) -> Tensor {
    let t = tokens.len();
    let logits = m.forward_train(&ids(&tokens[..t - 1], 1)).unwrap();
    let logits = logits.reshape((t - 1, m.cfg.vocab_size)).unwrap();
    let tgt = Tensor::from_vec(tokens[1..].to_vec(), t - 1, &Device::Cpu).unwrap();
    token_logprobs(&logits, &tgt).unwrap()
}

#[test]
fn inference_path_matches_training_path() {
    // Through candle, and through the decode kernel once the weights are packed for it.
    for packed in [false, true] {
        inference_path_matches_training_path_with(packed);
    }
}

fn inference_path_matches_training_path_with(packed: bool) {
    let cfg = micro(false);
    let m = Llama::from_tensors(&cfg, &model::init_tensors(&cfg, 2).unwrap()).unwrap();
    if packed {
        m.prepare_decoding().unwrap();
    }
    let toks = seq();
    let want = train_logprobs(&m, &toks);
    // A prompt prefilled in one call, shared by three rows, then one token at a time; row 1
    // decodes the same tokens as the training sequence.
    let prompt = 7;
    let mut cache = KvCache::new(&cfg, 1, toks.len()).unwrap();
    let pre = m
        .forward_infer(&ids(&toks[..prompt], 1), &mut cache, false)
        .unwrap();
    let mut got = Vec::new();
    let lp_row = |logits: &Tensor, row: usize, tgt: u32| -> f32 {
        let l = logits
            .get(row)
            .unwrap()
            .reshape((1, cfg.vocab_size))
            .unwrap();
        let t = Tensor::from_vec(vec![tgt], 1, &Device::Cpu).unwrap();
        token_logprobs(&l, &t).unwrap().to_vec1::<f32>().unwrap()[0]
    };
    let pre = pre.reshape((prompt, cfg.vocab_size)).unwrap();
    for i in 0..prompt {
        let t = Tensor::from_vec(vec![toks[i + 1]], 1, &Device::Cpu).unwrap();
        let l = pre.get(i).unwrap().unsqueeze(0).unwrap();
        got.push(token_logprobs(&l, &t).unwrap().to_vec1::<f32>().unwrap()[0]);
    }
    let mut cache = cache.select(&[0, 0, 0]).unwrap();
    for i in prompt..toks.len() - 1 {
        let step = [b'x' as u32, toks[i], b'(' as u32];
        let logits = m.forward_infer(&ids(&step, 3), &mut cache, true).unwrap();
        let logits = logits.squeeze(1).unwrap();
        got.push(lp_row(&logits, 1, toks[i + 1]));
    }
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() < 1e-4,
            "position {i}: inference {a} vs training {b} (packed {packed})"
        );
    }
    // Not trivially uniform.
    assert!(
        want.iter()
            .any(|x| (x + (cfg.vocab_size as f32).ln()).abs() > 0.1)
    );
}

#[test]
fn checkpoint_round_trips_with_hf_names() {
    let dir = tempfile::tempdir().unwrap();
    for tied in [true, false] {
        let cfg = micro(tied);
        let tensors = model::init_tensors(&cfg, 3).unwrap();
        let out = dir.path().join(format!("ckpt-{tied}"));
        checkpoint::save(
            &out,
            checkpoint::Contents {
                cfg: &cfg,
                tensors: &tensors,
                files: checkpoint::byte_level_tokenizer_files(&cfg),
                extra_tensors: Vec::new(),
                sync: checkpoint::Durability::Disk,
            },
        )
        .unwrap();
        let ck = Checkpoint::load(&out).unwrap();
        assert_eq!(ck.cfg, cfg);
        let mut names: Vec<_> = ck.tensors.keys().cloned().collect();
        names.sort();
        assert!(names.contains(&"model.embed_tokens.weight".to_string()));
        assert!(names.contains(&"model.layers.1.self_attn.k_proj.weight".to_string()));
        assert!(names.contains(&"model.layers.0.mlp.gate_proj.weight".to_string()));
        assert!(names.contains(&"model.layers.0.post_attention_layernorm.weight".to_string()));
        assert!(names.contains(&"model.norm.weight".to_string()));
        assert_eq!(names.contains(&"lm_head.weight".to_string()), !tied);
        assert_eq!(names.len(), 2 + 9 * 2 + usize::from(!tied));
        for (n, t) in &tensors {
            let back = &ck.tensors[n];
            assert_eq!(back.dims(), t.dims(), "{n}");
            let d: f32 = (back - t)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert_eq!(d, 0.0, "{n}");
        }
        // The safetensors header carries the metadata transformers checks.
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        assert_eq!(header["__metadata__"]["format"], "pt");
        assert_eq!(header["model.embed_tokens.weight"]["dtype"], "F32");
        let cfg_json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg_json["architectures"][0], "LlamaForCausalLM");
        assert_eq!(cfg_json["model_type"], "llama");
        assert_eq!(cfg_json["tie_word_embeddings"], tied);
        assert_eq!(ck.tokenizer.encode("é").unwrap(), vec![0xc3, 0xa9]);
        // Same outputs after loading.
        let a = Llama::from_tensors(&cfg, &tensors).unwrap();
        let b = ck.model().unwrap();
        assert_eq!(train_logprobs(&a, &seq()), train_logprobs(&b, &seq()));
    }
}

fn f32_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn safetensors_are_written_from_storage_and_read_through_a_map() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let big = Tensor::randn(0f32, 1.0, (4, 6), &dev).unwrap();
    let tensors = HashMap::from([
        ("plain".to_string(), big.clone()),
        // not contiguous, and contiguous from an offset into a larger storage
        ("transposed".to_string(), big.t().unwrap()),
        ("rows".to_string(), big.narrow(0, 1, 2).unwrap()),
    ]);
    let path = dir.path().join("t.safetensors");
    checkpoint::write_safetensors(&path, &tensors).unwrap();
    // What another reader sees.
    let bytes = std::fs::read(&path).unwrap();

    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (name, t) in &tensors {
        let view = st.tensor(name).unwrap();
        assert_eq!(view.shape(), t.dims(), "{name}");
        let back: Vec<f32> = view
            .data()
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(back, f32_vec(t), "{name}");
    }
    for kind in [
        checkpoint::Weights::Constants,
        checkpoint::Weights::Variables,
    ] {
        let read = checkpoint::read_safetensors(&path, kind).unwrap();
        assert_eq!(read.len(), tensors.len());
        for (name, t) in &tensors {
            assert_eq!(read[name].dims(), t.dims(), "{name}");
            assert_eq!(f32_vec(&read[name]), f32_vec(t), "{name}");
            assert_eq!(
                read[name].is_variable(),
                kind == checkpoint::Weights::Variables,
                "{name}"
            );
        }
    }
    // Other dtypes are converted to f32.
    let half = big.to_dtype(DType::BF16).unwrap();
    let hpath = dir.path().join("h.safetensors");
    candle_core::safetensors::save(&HashMap::from([("h".to_string(), half.clone())]), &hpath)
        .unwrap();
    for kind in [
        checkpoint::Weights::Constants,
        checkpoint::Weights::Variables,
    ] {
        let read = checkpoint::read_safetensors(&hpath, kind).unwrap();
        assert_eq!(read["h"].dtype(), DType::F32);
        assert_eq!(
            f32_vec(&read["h"]),
            f32_vec(&half.to_dtype(DType::F32).unwrap())
        );
    }
}

#[test]
fn atomic_write_leaves_old_checkpoint_or_new_one_never_half() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("ckpt");
    checkpoint::write_dir_atomic(&target, checkpoint::Durability::Disk, |d| {
        checkpoint::write_file(&d.join("a"), b"old")?;
        Ok(())
    })
    .unwrap();
    // A failure half-way leaves the old directory as it was and no temporary behind.
    let err = checkpoint::write_dir_atomic(&target, checkpoint::Durability::Disk, |d| {
        checkpoint::write_file(&d.join("a"), b"half")?;
        anyhow::bail!("killed")
    });
    assert!(err.is_err());
    assert_eq!(std::fs::read(target.join("a")).unwrap(), b"old");
    let listing = |p: &std::path::Path| -> Vec<String> {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(listing(dir.path()), vec!["ckpt"]);
    // Replacing works and also leaves nothing beside it.
    checkpoint::write_dir_atomic(&target, checkpoint::Durability::Disk, |d| {
        checkpoint::write_file(&d.join("b"), b"new")?;
        Ok(())
    })
    .unwrap();
    assert_eq!(listing(&target), vec!["b"]);
    assert_eq!(listing(dir.path()), vec!["ckpt"]);
}

#[test]
fn init_is_a_function_of_the_seed_and_presets_have_their_sizes() {
    let cfg = micro(true);
    let a = model::init_tensors(&cfg, 5).unwrap();
    let b = model::init_tensors(&cfg, 5).unwrap();
    let c = model::init_tensors(&cfg, 6).unwrap();
    let flat = |m: &HashMap<String, Tensor>, n: &str| -> Vec<f32> {
        m[n].flatten_all().unwrap().to_vec1().unwrap()
    };
    let n = "model.layers.0.self_attn.q_proj.weight";
    assert_eq!(flat(&a, n), flat(&b, n));
    assert_ne!(flat(&a, n), flat(&c, n));
    assert_eq!(a[n].dtype(), DType::F32);
    let tiny = model::num_params(&LlamaConfig::preset(Preset::Tiny));
    let small = model::num_params(&LlamaConfig::preset(Preset::Small));
    assert!((1_000_000..=3_000_000).contains(&tiny), "{tiny}");
    assert!((10_000_000..=25_000_000).contains(&small), "{small}");
}

/// Gradients of `loss(logp)` with respect to every parameter, by name.
fn grads_by_name(tr: &Trainable, loss: &Tensor) -> HashMap<String, Vec<f32>> {
    let g = loss.backward().unwrap();
    tr.params
        .iter()
        .filter_map(|(n, v)| {
            g.get(v.as_tensor())
                .map(|t| (n.clone(), t.flatten_all().unwrap().to_vec1().unwrap()))
        })
        .collect()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * scale, "{what}[{i}]: {x} vs {y}");
    }
}

#[test]
fn chunked_head_logprobs_equal_unchunked_values_and_gradients() {
    for tied in [true, false] {
        let cfg = micro(tied);
        let tr = Trainable::new(&cfg, &model::init_tensors(&cfg, 3).unwrap()).unwrap();
        let toks = seq();
        let n = toks.len() - 1;
        let h = tr
            .model
            .hidden_train(&ids(&toks[..n], 1))
            .unwrap()
            .squeeze(0)
            .unwrap();
        let temps: Vec<f32> = (0..n).map(|i| 0.5 + (i % 3) as f32 * 0.5).collect();
        let temps = Tensor::from_vec(temps, (n, 1), &Device::Cpu).unwrap();
        // A loss that is not linear in the log-probs, and weighs the tokens differently, as
        // the clipped ratio does.
        let weights: Vec<f32> = (0..n).map(|i| (i as f32 - 7.0) / 5.0).collect();
        let weights = Tensor::from_vec(weights, n, &Device::Cpu).unwrap();
        let run = |chunk: LogitsChunk, t: Option<&Tensor>| {
            let lp = tr.model.head_logprobs(&h, &toks[1..], t, chunk).unwrap();
            let loss = ((&lp * 0.3).unwrap().exp().unwrap() * &weights)
                .unwrap()
                .sum_all()
                .unwrap();
            (lp.to_vec1::<f32>().unwrap(), grads_by_name(&tr, &loss))
        };
        for t in [None, Some(&temps)] {
            let (lp0, g0) = run(LogitsChunk::Off, t);
            assert_eq!(g0.len(), tr.params.len());
            for chunk in [1, 5, n - 1] {
                let (lp, g) = run(LogitsChunk::Rows(chunk), t);
                assert_close(&lp0, &lp, 1e-5, &format!("logp chunk {chunk}"));
                assert_eq!(g.len(), g0.len());
                for (name, want) in &g0 {
                    assert_close(
                        want,
                        &g[name],
                        1e-4,
                        &format!("{name} chunk {chunk} tied {tied}"),
                    );
                }
            }
        }
        // Auto does not chunk a small vocabulary: the same computation as Off, bit for bit.
        assert_eq!(LogitsChunk::Auto.rows(n, cfg.vocab_size), None);
        assert_eq!(LogitsChunk::Auto.rows(400, 49152), Some(341));
        assert_eq!(LogitsChunk::Rows(8).rows(8, 49152), None);
    }
}

fn lora_cfg(targets: &[&str]) -> lora::LoraConfig {
    lora::LoraConfig::new(
        4,
        8.0,
        targets.iter().map(|s| s.to_string()).collect(),
        "base".into(),
    )
}

/// An adapter with B non-zero too, so that it changes the model.
fn random_adapter(cfg: &LlamaConfig, lc: &lora::LoraConfig) -> HashMap<String, Tensor> {
    let mut a = lora::init(cfg, lc, 5).unwrap();
    let other = lora::init(cfg, lc, 6).unwrap();
    for (k, t) in a.iter_mut() {
        if k.ends_with("lora_B.weight") {
            let a_key = k.replace("lora_B", "lora_A");
            // B gets values of the same scale as A (B is [out, r]: reuse A's draws, reshaped).
            let src = other[&a_key]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let n = t.elem_count();
            let data: Vec<f32> = (0..n).map(|i| src[i % src.len()]).collect();
            *t = Tensor::from_vec(data, t.dims(), &Device::Cpu).unwrap();
        }
    }
    a
}

#[test]
fn lora_starts_as_the_base_trains_only_the_adapter_and_merges_exactly() {
    let cfg = micro(true);
    let base = model::init_tensors(&cfg, 1).unwrap();
    let base_model = Llama::from_tensors(&cfg, &base).unwrap();
    let toks = seq();
    let want = train_logprobs(&base_model, &toks);
    let lc = lora_cfg(&lora::MODULES);
    let fresh = lora::init(&cfg, &lc, 0).unwrap();
    assert_eq!(fresh.len(), 2 * 7 * cfg.num_hidden_layers);
    assert_eq!(
        fresh["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"].dims(),
        [4, cfg.intermediate_size]
    );
    // B = 0: a fresh adapter is the base model.
    let tr = Trainable::with_lora(&cfg, &base, &lc, &fresh).unwrap();
    assert_eq!(train_logprobs(&tr.model, &toks), want);
    // Only the adapter is trained; every A and B gets a gradient... except that with B = 0
    // the gradient of A is 0, so test with a non-zero B.
    let adapter = random_adapter(&cfg, &lc);
    let tr = Trainable::with_lora(&cfg, &base, &lc, &adapter).unwrap();
    assert_eq!(tr.params.len(), adapter.len());
    let loss = train_logprobs_tensor(&tr.model, &toks)
        .sum_all()
        .unwrap()
        .neg()
        .unwrap();
    let g = grads_by_name(&tr, &loss);
    assert_eq!(g.len(), adapter.len());
    for (k, v) in &g {
        assert!(v.iter().any(|&x| x != 0.0), "{k}");
    }
    // Merged weights give the same logits as base + adapter, on both paths.
    for targets in [&lora::MODULES[..], &["q_proj", "v_proj"][..]] {
        let lc = lora_cfg(targets);
        let adapter = random_adapter(&cfg, &lc);
        let unmerged = Llama::with_adapter(&cfg, &base, Some((&lc, &adapter))).unwrap();
        let merged =
            Llama::from_tensors(&cfg, &lora::merge(&cfg, &base, &lc, &adapter).unwrap()).unwrap();
        let a = train_logprobs(&unmerged, &toks);
        let b = train_logprobs(&merged, &toks);
        assert_close(&a, &b, 1e-5, "merged vs unmerged");
        assert!(
            a.iter().zip(&want).any(|(x, y)| (x - y).abs() > 1e-3),
            "adapter changes the model"
        );
        let mut cache = KvCache::new(&cfg, 1, 64).unwrap();
        let infer = unmerged
            .forward_infer(&ids(&toks[..toks.len() - 1], 1), &mut cache, false)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let tgt = Tensor::from_vec(toks[1..].to_vec(), toks.len() - 1, &Device::Cpu).unwrap();
        let c: Vec<f32> = token_logprobs(&infer, &tgt).unwrap().to_vec1().unwrap();
        assert_close(&a, &c, 1e-4, "inference path with adapter");
    }
}

#[test]
fn lora_adapter_round_trips_in_the_peft_layout_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = micro(false);
    let lc = lora_cfg(&["q_proj", "down_proj"]);
    let adapter = random_adapter(&cfg, &lc);
    let out = dir.path().join("adapter");
    lora::save(
        &out,
        &lc,
        &adapter,
        Vec::new(),
        Vec::new(),
        checkpoint::Durability::PageCache,
    )
    .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(lora::ADAPTER_CONFIG)).unwrap()).unwrap();
    assert_eq!(v["peft_type"], "LORA");
    assert_eq!(v["r"], 4);
    assert_eq!(v["lora_alpha"], 8.0);
    assert_eq!(
        v["target_modules"],
        serde_json::json!(["q_proj", "down_proj"])
    );
    assert_eq!(v["base_model_name_or_path"], "base");
    let (lc2, back) = lora::load(&out, &cfg).unwrap();
    assert_eq!(lc2, lc);
    assert_eq!(back.len(), adapter.len());
    for (k, t) in &adapter {
        let a: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = back[k].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b, "{k}");
    }
    // A config that does not match the tensors, and one with an unknown module.
    let mut wrong = lc.clone();
    wrong.r = 2;
    std::fs::write(
        out.join(lora::ADAPTER_CONFIG),
        serde_json::to_vec(&wrong).unwrap(),
    )
    .unwrap();
    let e = format!("{:#}", lora::load(&out, &cfg).err().unwrap());
    assert!(
        e.contains("adapter_model.safetensors") && e.contains("shape"),
        "{e}"
    );
    let mut wrong = lc.clone();
    wrong.target_modules.push("lm_head".into());
    std::fs::write(
        out.join(lora::ADAPTER_CONFIG),
        serde_json::to_vec(&wrong).unwrap(),
    )
    .unwrap();
    let e = format!("{:#}", lora::load(&out, &cfg).err().unwrap());
    assert!(
        e.contains("adapter_config.json") && e.contains("lm_head"),
        "{e}"
    );
}

#[test]
fn lora_linear_gradients_equal_the_composed_ops() {
    let cfg = micro(false);
    let base = model::init_tensors(&cfg, 1).unwrap();
    let lc = lora_cfg(&["q_proj", "up_proj", "down_proj"]);
    let adapter = random_adapter(&cfg, &lc);
    let tr = Trainable::with_lora(&cfg, &base, &lc, &adapter).unwrap();
    let toks = seq();
    let loss = train_logprobs_tensor(&tr.model, &toks)
        .sum_all()
        .unwrap()
        .neg()
        .unwrap();
    let got = grads_by_name(&tr, &loss);
    // The same function written with plain ops, W a variable too (its gradient ignored).
    let mut merged_vars = HashMap::new();
    let mut ab = Vec::new();
    for (name, _) in model::param_shapes(&cfg) {
        merged_vars.insert(name.clone(), base[&name].clone());
    }
    for (k, t) in &adapter {
        let v = candle_core::Var::from_tensor(t).unwrap();
        ab.push((k.clone(), v));
    }
    let s = lc.scale();
    for (name, shape) in model::param_shapes(&cfg) {
        if lc.targets(&name) {
            let a = &ab
                .iter()
                .find(|(k, _)| *k == lora::key(&name, 'A'))
                .unwrap()
                .1;
            let b = &ab
                .iter()
                .find(|(k, _)| *k == lora::key(&name, 'B'))
                .unwrap()
                .1;
            let delta = (b.as_tensor().matmul(a.as_tensor()).unwrap() * s).unwrap();
            assert_eq!(delta.dims(), shape.as_slice());
            merged_vars.insert(name.clone(), (&base[&name] + delta).unwrap());
        }
    }
    let composed = Llama::from_tensors(&cfg, &merged_vars).unwrap();
    let loss = train_logprobs_tensor(&composed, &toks)
        .sum_all()
        .unwrap()
        .neg()
        .unwrap();
    let g = loss.backward().unwrap();
    for (k, v) in &ab {
        let want: Vec<f32> = g
            .get(v.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_close(&want, &got[k], 1e-4, k);
    }
}

#[test]
fn decode_step_matches_training_path() {
    let cfg = micro(false);
    let base = model::init_tensors(&cfg, 2).unwrap();
    let lc = lora_cfg(&lora::MODULES);
    let adapter = random_adapter(&cfg, &lc);
    let mut rounded = Llama::from_tensors(&cfg, &base).unwrap();
    rounded.use_bf16_weights().unwrap();
    // The base model, one with a LoRA adapter (unmerged), and one with bf16 weights: the
    // decode path computes each one's own training-path log-probs.
    for (what, m) in [
        ("base", Llama::from_tensors(&cfg, &base).unwrap()),
        (
            "adapter",
            Llama::with_adapter(&cfg, &base, Some((&lc, &adapter))).unwrap(),
        ),
        ("bf16", rounded),
    ] {
        let toks = seq();
        let want = train_logprobs(&m, &toks);
        let prompt = 7;
        let (prefix, first) = m.prefill(&toks[..prompt]).unwrap();
        let lp = |logits: &[f32], tgt: u32| -> f32 {
            let l = Tensor::from_slice(logits, (1, logits.len()), &Device::Cpu).unwrap();
            let t = Tensor::from_vec(vec![tgt], 1, &Device::Cpu).unwrap();
            token_logprobs(&l, &t).unwrap().to_vec1::<f32>().unwrap()[0]
        };
        let mut got = vec![lp(&first, toks[prompt])];
        // Row 1 follows the training sequence; rows 0 and 2 decode other tokens beside it.
        let mut seqs: Vec<SeqCache> = (0..3).map(|_| SeqCache::new(prefix.clone(), 8)).collect();
        let v = cfg.vocab_size;
        for i in prompt..toks.len() - 1 {
            let mut refs: Vec<&mut SeqCache> = seqs.iter_mut().collect();
            let logits = m
                .decode_step(&mut refs, &[b'x' as u32, toks[i], b'(' as u32])
                .unwrap();
            got.push(lp(&logits[v..2 * v], toks[i + 1]));
        }
        assert_eq!(got.len(), want.len() - prompt + 1);
        for (i, (a, b)) in got.iter().zip(&want[prompt - 1..]).enumerate() {
            assert!(
                (a - b).abs() < 1e-4,
                "{what}: position {}: decode {a} vs training {b}",
                prompt + i
            );
        }
    }
}

/// Each sequence's logits, bit for bit, whatever else shares its steps: alone, in batches of
/// several sizes (past the padding threshold and past gemm's 64-row block), in another order,
/// and joining or leaving mid-way.
#[test]
fn decode_step_is_batch_invariant() {
    for cfg in [micro(true), LlamaConfig::preset(Preset::Tiny)] {
        let m = Llama::from_tensors(&cfg, &model::init_tensors(&cfg, 5).unwrap()).unwrap();
        let v = cfg.vocab_size;
        let prompts: Vec<Vec<u32>> = (0..3u32)
            .map(|p| (0..5 + 2 * p).map(|i| (7 * i + 3 * p) % 200 + 1).collect())
            .collect();
        let prefixes: Vec<_> = prompts.iter().map(|p| m.prefill(p).unwrap().0).collect();
        let token = |s: usize, t: usize| ((s * 31 + t * 17) % 250) as u32;
        // Sequence s continues prompt s % 3 with tokens token(s, 0..steps); logits[s][t].
        let run = |order: &[usize], steps: usize, join_late: bool| -> Vec<Vec<Vec<f32>>> {
            let n = order.iter().max().unwrap() + 1;
            let mut seqs: Vec<SeqCache> = (0..n)
                .map(|s| SeqCache::new(prefixes[s % 3].clone(), steps))
                .collect();
            let mut out = vec![Vec::new(); n];
            for t in 0..steps {
                // With join_late, the second half joins at step 2 and the first half leaves
                // two steps early.
                let live: Vec<usize> = order
                    .iter()
                    .copied()
                    .filter(|&s| {
                        !join_late || (s < n / 2 && t + 2 < steps) || (s >= n / 2 && t >= 2)
                    })
                    .collect();
                let mut refs: Vec<&mut SeqCache> = seqs
                    .iter_mut()
                    .enumerate()
                    .filter(|(s, _)| live.contains(s))
                    .map(|(_, c)| c)
                    .collect();
                // refs are in index order; so are the tokens.
                let mut idx = live.clone();
                idx.sort();
                let toks: Vec<u32> = idx.iter().map(|&s| token(s, out[s].len())).collect();
                let logits = m.decode_step(&mut refs, &toks).unwrap();
                for (r, &s) in idx.iter().enumerate() {
                    out[s].push(logits[r * v..(r + 1) * v].to_vec());
                }
            }
            out
        };
        let alone = |s: usize| run(&[s], 6, false).swap_remove(s);
        for (order, join) in [
            (vec![0, 1, 2], false),
            (vec![2, 0, 1], false),
            ((0..7).collect::<Vec<_>>(), false),
            ((0..70).collect::<Vec<_>>(), false),
            ((0..20).collect::<Vec<_>>(), true),
        ] {
            let got = run(&order, 6, join);
            let n = order.len();
            for s in [0, 1, 2, n - 2, n - 1] {
                // A late joiner's first logits are those of its first step alone, and so on.
                let (a, b) = (alone(s), &got[s]);
                assert!(!b.is_empty());
                for (t, row) in b.iter().enumerate() {
                    assert!(
                        row == &a[t],
                        "sequence {s} step {t} differs in a batch of {} (join {join})",
                        order.len()
                    );
                }
            }
        }
    }
}

/// The packed path (shared prompts, fused ops) computes what the composed path computes for
/// each sequence on its own: the same log-probs and the same gradients, for full and LoRA
/// training, tied and untied heads.
#[test]
fn packed_path_equals_separate_sequences_values_and_gradients() {
    let prompt_a: Vec<u32> = "def f(x):\n".bytes().map(u32::from).collect();
    let prompt_b: Vec<u32> = "# add\ndef add(a, b):\n".bytes().map(u32::from).collect();
    let comps: [(&[u32], &str); 5] = [
        (&prompt_a, "    return x + 1\n"),
        (&prompt_a, "    return x\n"),
        (&prompt_b, "    return a + b\n"),
        (&prompt_a, "  pass"),
        (&prompt_b, "\n"),
    ];
    let seqs: Vec<(Vec<u32>, usize)> = comps
        .iter()
        .map(|(p, c)| {
            let mut t = p.to_vec();
            t.extend(c.bytes().map(u32::from));
            (t, p.len())
        })
        .collect();
    // Per-token weights of a loss that is not linear in the log-probs.
    let weight = |s: usize, j: usize| ((s * 7 + j) % 5) as f32 / 4.0 - 0.4;
    let check = |tr: &Trainable, what: &str| {
        // Reference: each sequence alone through hidden_train.
        let mut ref_lp = Vec::new();
        let mut loss_ref = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
        for (si, (t, start)) in seqs.iter().enumerate() {
            let n = t.len() - 1;
            let h = tr
                .model
                .hidden_train(&ids(&t[..n], 1))
                .unwrap()
                .squeeze(0)
                .unwrap();
            let rows: Vec<u32> = (*start - 1..n).map(|r| r as u32).collect();
            let h = h
                .index_select(&Tensor::new(rows.as_slice(), &Device::Cpu).unwrap(), 0)
                .unwrap();
            let lp = tr
                .model
                .head_logprobs(&h, &t[*start..], None, LogitsChunk::Off)
                .unwrap();
            let w: Vec<f32> = (0..t.len() - start).map(|j| weight(si, j)).collect();
            let w = Tensor::from_vec(w, t.len() - start, &Device::Cpu).unwrap();
            let l = ((&lp * 0.3).unwrap().exp().unwrap() * &w)
                .unwrap()
                .sum_all()
                .unwrap();
            loss_ref = (loss_ref + l).unwrap();
            ref_lp.extend(lp.to_vec1::<f32>().unwrap());
        }
        let g_ref = grads_by_name(tr, &loss_ref);
        // Packed: one prompt segment per distinct prompt, one completion segment each.
        let mut batch = Packed::default();
        let mut prompts: Vec<(&[u32], (usize, usize))> = Vec::new();
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        let mut w = Vec::new();
        for (si, (t, start)) in seqs.iter().enumerate() {
            let p = &t[..*start];
            let seg = match prompts.iter().find(|(q, _)| *q == p) {
                Some((_, s)) => *s,
                None => {
                    let s = batch.push(p, 0, None);
                    prompts.push((p, s));
                    s
                }
            };
            rows.push((seg.0 + seg.1 - 1) as u32);
            let (cs, cl) = batch.push(&t[*start..t.len() - 1], *start, Some(seg));
            rows.extend((cs..cs + cl).map(|r| r as u32));
            targets.extend_from_slice(&t[*start..]);
            w.extend((0..t.len() - start).map(|j| weight(si, j)));
        }
        let h = tr.model.hidden_packed(&batch).unwrap();
        let h = h
            .index_select(&Tensor::new(rows.as_slice(), &Device::Cpu).unwrap(), 0)
            .unwrap();
        let lp = tr
            .model
            .head_logprobs(&h, &targets, None, LogitsChunk::Off)
            .unwrap();
        let n = w.len();
        let w = Tensor::from_vec(w, n, &Device::Cpu).unwrap();
        let loss = ((&lp * 0.3).unwrap().exp().unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap();
        assert_close(
            &ref_lp,
            &lp.to_vec1::<f32>().unwrap(),
            1e-5,
            &format!("{what} logp"),
        );
        let g = grads_by_name(tr, &loss);
        assert_eq!(g.len(), g_ref.len(), "{what}: parameters with a gradient");
        for (name, want) in &g_ref {
            assert!(
                want.iter().any(|&x| x != 0.0),
                "{what}: {name} has no gradient"
            );
            assert_close(want, &g[name], 1e-4, &format!("{what} {name}"));
        }
    };
    for tied in [true, false] {
        let cfg = micro(tied);
        let base = model::init_tensors(&cfg, 3).unwrap();
        check(
            &Trainable::new(&cfg, &base).unwrap(),
            &format!("full tied {tied}"),
        );
        let lc = lora_cfg(&lora::MODULES);
        let adapter = random_adapter(&cfg, &lc);
        check(
            &Trainable::with_lora(&cfg, &base, &lc, &adapter).unwrap(),
            &format!("lora tied {tied}"),
        );
    }
}

#[test]
fn linear_values_and_gradients_equal_candles_matmul_to_the_bit() {
    // Odd sizes (gemm's edge tiles) and sizes past one cache block, on 1 and 2 threads: the
    // same gemm calls as candle's matmul and its backward, so the same bits.
    let dev = Device::Cpu;
    for (m, k, n) in [(1, 1, 1), (7, 13, 5), (37, 576, 193), (300, 64, 1536)] {
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let x = candle_core::Var::randn(0f32, 1.0, (m, k), &dev).unwrap();
                let w = candle_core::Var::randn(0f32, 0.1, (n, k), &dev).unwrap();
                let r = Tensor::randn(0f32, 1.0, (m, n), &dev).unwrap();
                let ours = model::linear(x.as_tensor(), w.as_tensor()).unwrap();
                let theirs = x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
                let what = format!("{m}x{k} * ({n}x{k})^T on {threads} threads");
                assert_eq!(f32_vec(&ours), f32_vec(&theirs), "values, {what}");
                let g1 = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let g2 = (theirs * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                for (v, name) in [(&x, "dx"), (&w, "dW")] {
                    let a = g1.get(v.as_tensor()).unwrap();
                    let b = g2.get(v.as_tensor()).unwrap();
                    assert_eq!(a.dims(), b.dims(), "{name}, {what}");
                    assert!(a.is_contiguous(), "{name}, {what}");
                    let (a, b) = (f32_vec(a), f32_vec(b));
                    let same = a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits());
                    assert!(same, "{name} differs, {what}");
                }
            });
        }
    }
    // A batch of rows in a rank-3 input keeps its shape.
    let x = Tensor::randn(0f32, 1.0, (2, 3, 4), &dev).unwrap();
    let w = Tensor::randn(0f32, 1.0, (5, 4), &dev).unwrap();
    assert_eq!(model::linear(&x, &w).unwrap().dims(), &[2, 3, 5]);
}

#[test]
fn backward_sums_every_use_of_a_tensor() {
    // y = (x + 2x) - x^2 + rowsum(x) (broadcast), L = sum(c * y): dL/dx = c (3 - 2x) + rowsum(c).
    // Each use of x sends its own gradient; the patched backward (vendor/README.md) stores the
    // first one as it is and adds the others.
    let dev = Device::Cpu;
    let x = candle_core::Var::randn(0f32, 1.0, (3, 4), &dev).unwrap();
    let c = Tensor::randn(0f32, 1.0, (3, 4), &dev).unwrap();
    let xt = x.as_tensor();
    let y = ((xt + (xt * 2.0).unwrap()).unwrap() - xt.sqr().unwrap()).unwrap();
    let y = (y + xt.sum_keepdim(1).unwrap().broadcast_as((3, 4)).unwrap()).unwrap();
    let g = (y * &c).unwrap().sum_all().unwrap().backward().unwrap();
    let got = g.get(xt).unwrap();
    assert!(got.is_contiguous());
    let (xv, cv) = (f32_vec(xt), f32_vec(&c));
    for i in 0..3 {
        let row: f32 = cv[i * 4..i * 4 + 4].iter().sum();
        for j in 0..4 {
            let k = i * 4 + j;
            let want = cv[k] * (3.0 - 2.0 * xv[k]) + row;
            let have = f32_vec(got)[k];
            assert!(
                (want - have).abs() <= 1e-5 * (1.0 + want.abs()),
                "{k}: {have} vs {want}"
            );
        }
    }
    // A variable used once, through a transposed view: its gradient comes out contiguous.
    let w = candle_core::Var::randn(0f32, 1.0, (2, 3), &dev).unwrap();
    let v = Tensor::randn(0f32, 1.0, (4, 3), &dev).unwrap();
    let loss = v
        .matmul(&w.as_tensor().t().unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let gw = loss.backward().unwrap();
    let gw = gw.get(w.as_tensor()).unwrap();
    assert!(gw.is_contiguous());
    let vv = f32_vec(&v);
    let want: Vec<f32> = (0..6)
        .map(|k| (0..4).map(|r| vv[r * 3 + k % 3]).sum())
        .collect();
    assert_close(&f32_vec(gw), &want, 1e-5, "dW");
}
