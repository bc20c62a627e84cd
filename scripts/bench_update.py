#!/usr/bin/env python3
"""The update step's workload and its PyTorch peer, for scripts/bench-update.sh.

  bench_update.py batch OUT --kind group|distinct [--prompt 64] [--completion 64] [--samples 8]
      Write a scored batch (rl-score's records: prompt_tokens, tokens, reward) of SAMPLES
      sequences of PROMPT + COMPLETION tokens: `group` is one prompt's SAMPLES completions (an RL
      group), `distinct` SAMPLES different prompts. Token ids are drawn from a fixed generator
      (standard library only), rewards alternate 1, 0 so that every advantage is +-1.

  bench_update.py torch MODEL BATCH --mode full|lora [--rank 16] [--steps 4] [--lr 1e-6]
      PyTorch's in-process training step on BATCH: transformers' LlamaForCausalLM loaded from
      MODEL (f32), one padded batch of every sequence, logits only at the completion positions,
      the GRPO token loss rl-update computes (ratio to the detached log-probs, times the
      group-normalised advantage, token mean), backward, AdamW. `lora` freezes the model and adds
      rank-RANK adapters (alpha 2 x rank) to the seven projections of every layer, as
      rl-update --lora-rank does. Prints one JSON line: the median step time (the first, warm-up
      step excluded) and its split.
"""
import argparse
import json
import random
import statistics
import sys
import time


def make_batch(a):
    rng = random.Random(1234)
    # Ordinary token ids of the 49,152 vocabulary (its first ids are special tokens).
    draw = lambda n: [rng.randrange(100, 49000) for _ in range(n)]
    shared = draw(a.prompt)
    with open(a.out, "w") as f:
        for i in range(a.samples):
            prompt = shared if a.kind == "group" else draw(a.prompt)
            rec = {
                # One group either way (so that every advantage is +-1); prompts decide what
                # rl-update can share.
                "problem_id": "bench/0",
                "sample": i,
                "prompt_tokens": prompt,
                "tokens": draw(a.completion),
                "temperature": 1.0,
                "reward": 1.0 if i % 2 == 0 else 0.0,
                "reward_name": "binary",
            }
            f.write(json.dumps(rec) + "\n")


def torch_step(a):
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32)
    model.train()
    recs = [json.loads(line) for line in open(a.batch)]
    if a.mode == "lora":
        for p in model.parameters():
            p.requires_grad_(False)
        targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

        class LoRA(torch.nn.Module):
            def __init__(self, base, r):
                super().__init__()
                self.base, self.scale = base, 2.0
                self.A = torch.nn.Parameter(torch.randn(r, base.in_features) * 0.01)
                self.B = torch.nn.Parameter(torch.zeros(base.out_features, r))

            def forward(self, x):
                return self.base(x) + (x @ self.A.t()) @ self.B.t() * self.scale

        for layer in model.model.layers:
            for mod in (layer.self_attn, layer.mlp):
                for name in targets:
                    if hasattr(mod, name):
                        setattr(mod, name, LoRA(getattr(mod, name), a.rank))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    # Group-normalised advantages (GRPO), per problem.
    groups = {}
    for r in recs:
        groups.setdefault(r["problem_id"], []).append(r["reward"])
    adv = []
    for r in recs:
        g = groups[r["problem_id"]]
        mean = sum(g) / len(g)
        std = statistics.pstdev(g) if len(g) > 1 else 0.0
        adv.append((r["reward"] - mean) / (std + 1e-6) if len(g) > 1 else 0.0)
    seqs = [r["prompt_tokens"] + r["tokens"] for r in recs]
    width = max(len(s) for s in seqs) - 1
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    rows, cols, tgt, weight = [], [], [], []
    total = sum(len(r["tokens"]) for r in recs)
    for i, (r, s) in enumerate(zip(recs, seqs)):
        ids[i, : len(s) - 1] = torch.tensor(s[:-1])
        start = len(r["prompt_tokens"])
        for j in range(start - 1, len(s) - 1):
            rows.append(i)
            cols.append(j)
            tgt.append(s[j + 1])
            weight.append(-adv[i] / total)
    rows, cols, tgt = torch.tensor(rows), torch.tensor(cols), torch.tensor(tgt)
    weight = torch.tensor(weight)
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        hidden = model.model(input_ids=ids).last_hidden_state
        logits = model.lm_head(hidden[rows, cols])
        logp = torch.log_softmax(logits, dim=-1).gather(1, tgt[:, None]).squeeze(1)
        loss = (torch.exp(logp - logp.detach()) * weight).sum()
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        t3 = time.perf_counter()
        times.append((t3 - t0, t1 - t0, t2 - t1, t3 - t2))
    rest = times[1:] or times
    med = lambda k: statistics.median(t[k] for t in rest)
    print(json.dumps({
        "mode": a.mode, "sequences": len(seqs), "tokens": sum(len(s) for s in seqs),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "step_s": round(med(0), 3), "forward_s": round(med(1), 3),
        "backward_s": round(med(2), 3), "optimizer_s": round(med(3), 3),
        "steps_timed": len(rest),
    }))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("batch")
    b.add_argument("out")
    b.add_argument("--kind", choices=["group", "distinct"], required=True)
    b.add_argument("--prompt", type=int, default=64)
    b.add_argument("--completion", type=int, default=64)
    b.add_argument("--samples", type=int, default=8)
    t = sub.add_parser("torch")
    t.add_argument("model")
    t.add_argument("batch")
    t.add_argument("--mode", choices=["full", "lora"], required=True)
    t.add_argument("--rank", type=int, default=16)
    t.add_argument("--steps", type=int, default=4)
    t.add_argument("--lr", type=float, default=1e-6)
    a = p.parse_args()
    make_batch(a) if a.cmd == "batch" else torch_step(a)


if __name__ == "__main__":
    sys.exit(main())
