//! AdamW whose moments outlive the process: they are saved beside the weights
//! (`optimizer.safetensors`, `trainer_state.json`) and loaded by the next invocation, since
//! each RL step is a separate run of rl-update. (candle-nn's `AdamW` keeps its moments private.)

use anyhow::{Context, bail};
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimizer steps taken so far (also the AdamW bias-correction step).
    pub step: u64,
    #[serde(default)]
    pub optimizer: String,
    #[serde(default)]
    pub beta1: f64,
    #[serde(default)]
    pub beta2: f64,
    #[serde(default)]
    pub eps: f64,
    /// The algorithm and learning rate of the last step.
    #[serde(default)]
    pub algo: String,
    #[serde(default)]
    pub lr: f64,
}

pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub step: u64,
    m: HashMap<String, Tensor>,
    v: HashMap<String, Tensor>,
}

impl AdamW {
    pub fn new(lr: f64, weight_decay: f64) -> Self {
        AdamW {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            step: 0,
            m: HashMap::new(),
            v: HashMap::new(),
        }
    }

    /// Load the step count and moments saved in a checkpoint directory, where present.
    pub fn load_state(&mut self, dir: &Path, params: &[(String, Var)]) -> anyhow::Result<()> {
        let state_path = dir.join(STATE_FILE);
        if state_path.exists() {
            let text = std::fs::read_to_string(&state_path)
                .with_context(|| format!("{}", state_path.display()))?;
            let st: TrainerState =
                serde_json::from_str(&text).with_context(|| format!("{}", state_path.display()))?;
            self.step = st.step;
        }
        let opt_path = dir.join(OPTIMIZER_FILE);
        if !opt_path.exists() {
            return Ok(());
        }
        let ts = candle_core::safetensors::load(&opt_path, &candle_core::Device::Cpu)
            .with_context(|| format!("{}", opt_path.display()))?;
        for (name, var) in params {
            for (suffix, map) in [("exp_avg", &mut self.m), ("exp_avg_sq", &mut self.v)] {
                let key = format!("{name}.{suffix}");
                if let Some(t) = ts.get(&key) {
                    if t.dims() != var.dims() {
                        bail!(
                            "{}: {key} has shape {:?}, the parameter {:?}",
                            opt_path.display(),
                            t.dims(),
                            var.dims()
                        );
                    }
                    map.insert(name.clone(), t.clone());
                }
            }
        }
        Ok(())
    }

    /// The moments as `<param>.exp_avg` / `<param>.exp_avg_sq` (PyTorch's names).
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (n, t) in &self.m {
            out.insert(format!("{n}.exp_avg"), t.clone());
        }
        for (n, t) in &self.v {
            out.insert(format!("{n}.exp_avg_sq"), t.clone());
        }
        out
    }

    pub fn trainer_state(&self, algo: &str) -> TrainerState {
        TrainerState {
            step: self.step,
            optimizer: "adamw".into(),
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            algo: algo.into(),
            lr: self.lr,
        }
    }

    /// One decoupled-weight-decay Adam step. Weight decay applies to matrices only, not to
    /// the norm gains.
    pub fn step(
        &mut self,
        params: &[(String, Var)],
        grads: &HashMap<String, Tensor>,
    ) -> anyhow::Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        for (name, var) in params {
            let Some(g) = grads.get(name) else { continue };
            let m = match self.m.get(name) {
                Some(m) => ((m * self.beta1)? + (g * (1.0 - self.beta1))?)?,
                None => (g * (1.0 - self.beta1))?,
            };
            let v = match self.v.get(name) {
                Some(v) => ((v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?,
                None => (g.sqr()? * (1.0 - self.beta2))?,
            };
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + self.eps)?)?;
            let mut theta = var.as_detached_tensor();
            if self.weight_decay > 0.0 && var.rank() > 1 {
                theta = (theta * (1.0 - self.lr * self.weight_decay))?;
            }
            var.set(&(theta - (update * self.lr)?)?)?;
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
        Ok(())
    }
}

/// The global L2 norm of the gradients, and scale them down to `max_norm` when above it
/// (`max_norm` <= 0 disables clipping). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut HashMap<String, Tensor>, max_norm: f64) -> anyhow::Result<f64> {
    let mut names: Vec<&String> = grads.keys().collect();
    // A fixed order keeps the f64 sum, and so the result, deterministic.
    names.sort();
    let mut sq = 0.0f64;
    for n in names {
        sq += grads[n].sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.values_mut() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}
