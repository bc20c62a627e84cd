//! AdamW whose moments outlive the process: they are saved beside the weights
//! (`optimizer.safetensors`, `trainer_state.json`) and loaded by the next invocation, since
//! each RL step is a separate run of rl-update. (candle-nn's `AdamW` keeps its moments private.)

use anyhow::{Context, bail};
use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Tensor, Var};
use rayon::prelude::*;
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
        let ts = rlcode_policy::checkpoint::read_safetensors(
            &opt_path,
            rlcode_policy::checkpoint::Weights::Constants,
        )?;
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
        // In place, one pass each for the two moments and the weights (the composed candle ops
        // this replaces allocated a dozen model-sized temporaries, each in fresh pages); the
        // arithmetic is theirs, in the same order, so the results are the same to the bit.
        let (b1, b2) = (self.beta1 as f32, self.beta2 as f32);
        let (c1, c2) = ((1.0 - self.beta1) as f32, (1.0 - self.beta2) as f32);
        for (name, var) in params {
            let Some(g) = grads.get(name) else { continue };
            let g = g.contiguous()?;
            match self.m.get(name) {
                Some(m) => m.inplace_op2(
                    &g,
                    &Ema {
                        keep: b1,
                        take: c1,
                        square: false,
                    },
                )?,
                None => {
                    self.m.insert(name.clone(), (&g * (1.0 - self.beta1))?);
                }
            }
            match self.v.get(name) {
                Some(v) => v.inplace_op2(
                    &g,
                    &Ema {
                        keep: b2,
                        take: c2,
                        square: true,
                    },
                )?,
                None => {
                    self.v
                        .insert(name.clone(), (g.sqr()? * (1.0 - self.beta2))?);
                }
            }
            let decay = self.weight_decay > 0.0 && var.rank() > 1;
            let apply = Apply {
                inv_bc1: (1.0 / bc1) as f32,
                inv_bc2: (1.0 / bc2) as f32,
                eps: self.eps as f32,
                decay: decay.then_some((1.0 - self.lr * self.weight_decay) as f32),
                lr: self.lr as f32,
            };
            var.as_tensor()
                .inplace_op3(&self.m[name], &self.v[name], &apply)?;
        }
        Ok(())
    }
}

/// Elements per task of the in-place optimizer passes.
const CHUNK: usize = 1 << 16;

/// The f32 data of a contiguous CPU tensor's storage.
fn f32s<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(d), Some((a, b))) => Ok(&d[a..b]),
        _ => candle_core::bail!("AdamW: {what} is not a contiguous f32 tensor"),
    }
}

fn f32s_mut<'a>(
    s: &'a mut CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(d), Some((a, b))) => Ok(&mut d[a..b]),
        _ => candle_core::bail!("AdamW: {what} is not a contiguous f32 tensor"),
    }
}

/// A moment's update in place: `x = x * keep + g * take` (`g * g` for the second moment).
struct Ema {
    keep: f32,
    take: f32,
    square: bool,
}

impl InplaceOp2 for Ema {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let x = f32s_mut(s1, l1, "a moment")?;
        let g = f32s(s2, l2, "a gradient")?;
        if x.len() != g.len() {
            candle_core::bail!("AdamW: moment and gradient differ in size");
        }
        let (keep, take, square) = (self.keep, self.take, self.square);
        x.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .for_each(|(x, g)| {
                for (x, &g) in x.iter_mut().zip(g) {
                    let g = if square { g * g } else { g };
                    *x = *x * keep + g * take;
                }
            });
        Ok(())
    }
}

/// The weights' update in place: `theta = theta * decay - lr * (m / bc1) / (sqrt(v / bc2) + eps)`.
struct Apply {
    inv_bc1: f32,
    inv_bc2: f32,
    eps: f32,
    decay: Option<f32>,
    lr: f32,
}

impl InplaceOp3 for Apply {
    fn name(&self) -> &'static str {
        "adamw-apply"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let theta = f32s_mut(s1, l1, "a weight")?;
        let m = f32s(s2, l2, "a moment")?;
        let v = f32s(s3, l3, "a moment")?;
        if theta.len() != m.len() || theta.len() != v.len() {
            candle_core::bail!("AdamW: weight and moments differ in size");
        }
        let a = self;
        theta
            .par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK))
            .zip(v.par_chunks(CHUNK))
            .for_each(|((theta, m), v)| {
                for ((t, &m), &v) in theta.iter_mut().zip(m).zip(v) {
                    let update = (m * a.inv_bc1) / ((v * a.inv_bc2).sqrt() + a.eps);
                    let kept = match a.decay {
                        Some(d) => *t * d,
                        None => *t,
                    };
                    *t = kept - update * a.lr;
                }
            });
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The step as composed candle ops (what the in-place passes replaced).
    fn reference_step(
        o: &AdamW,
        t: i32,
        theta: &Tensor,
        m: Option<&Tensor>,
        v: Option<&Tensor>,
        g: &Tensor,
    ) -> (Tensor, Tensor, Tensor) {
        let bc1 = 1.0 - o.beta1.powi(t);
        let bc2 = 1.0 - o.beta2.powi(t);
        let m = match m {
            Some(m) => ((m * o.beta1).unwrap() + (g * (1.0 - o.beta1)).unwrap()).unwrap(),
            None => (g * (1.0 - o.beta1)).unwrap(),
        };
        let v = match v {
            Some(v) => {
                ((v * o.beta2).unwrap() + (g.sqr().unwrap() * (1.0 - o.beta2)).unwrap()).unwrap()
            }
            None => (g.sqr().unwrap() * (1.0 - o.beta2)).unwrap(),
        };
        let update =
            ((&m / bc1).unwrap() / ((&v / bc2).unwrap().sqrt().unwrap() + o.eps).unwrap()).unwrap();
        let mut theta = theta.clone();
        if o.weight_decay > 0.0 && theta.rank() > 1 {
            theta = (theta * (1.0 - o.lr * o.weight_decay)).unwrap();
        }
        let theta = (theta - (update * o.lr).unwrap()).unwrap();
        (theta, m, v)
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    #[test]
    fn in_place_step_equals_the_composed_ops_to_the_bit() {
        let dev = Device::Cpu;
        // A matrix larger than one task's chunk (weight decay applies) and a vector (it does not).
        let shapes: [(&str, Vec<usize>); 2] = [("w", vec![300, 700]), ("norm", vec![700])];
        let mut opt = AdamW::new(3e-4, 0.1);
        let mut params = Vec::new();
        let mut reference = HashMap::new();
        for (i, (name, shape)) in shapes.iter().enumerate() {
            let t = Tensor::randn(0f32, 1.0, shape.as_slice(), &dev).unwrap();
            let t = (t + i as f64).unwrap();
            reference.insert(name.to_string(), (t.copy().unwrap(), None, None));
            params.push((name.to_string(), Var::from_tensor(&t).unwrap()));
        }
        for step in 1..=3 {
            let mut grads = HashMap::new();
            for (name, shape) in &shapes {
                let g = (Tensor::randn(0f32, 1.0, shape.as_slice(), &dev).unwrap() * 1e-2).unwrap();
                grads.insert(name.to_string(), g);
            }
            opt.step(&params, &grads).unwrap();
            for (name, var) in &params {
                let (theta, m, v) = reference.remove(name).unwrap();
                let (theta, m, v) =
                    reference_step(&opt, step, &theta, m.as_ref(), v.as_ref(), &grads[name]);
                assert_eq!(bits(var.as_tensor()), bits(&theta), "{name}, step {step}");
                assert_eq!(bits(&opt.m[name]), bits(&m), "{name} m, step {step}");
                assert_eq!(bits(&opt.v[name]), bits(&v), "{name} v, step {step}");
                reference.insert(name.clone(), (theta, Some(m), Some(v)));
            }
        }
    }
}
