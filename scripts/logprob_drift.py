#!/usr/bin/env python3
"""How far a sampler's recorded log-probs are from the f32 model's, token by token.

  logprob_drift.py MODEL SAMPLES [SAMPLES ...] [--threads T]

For every record of rl-sample's output (its `prompt_tokens`, `tokens`, `logprobs` and
`temperature`), the log-probability of each generated token under transformers'
LlamaForCausalLM loaded from MODEL in f32 (softmax of logits / temperature, one forward pass
of prompt + completion) is compared with the recorded one. Run on f32 samples it measures
rl-sample against PyTorch (the training path agrees with rl-sample within 1e-4); on `--weights
bf16` samples, the bf16 model against the f32 one. Prints one JSON line per SAMPLES file:
tokens, mean |difference|, its 99th percentile and maximum, and the mean signed difference
(recorded - f32): as the tokens were drawn from the sampler, the k1 estimate of
KL(sampler || f32) per token.
Needs torch and transformers (the venv scripts/bench-update.sh makes).
"""
import argparse
import json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("samples", nargs="+")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()

    import os
    import torch
    from transformers import LlamaForCausalLM

    torch.set_num_threads(a.threads or os.cpu_count())
    model = LlamaForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32).eval()
    for path in a.samples:
        diffs = []
        weights = set()
        for n, line in enumerate(open(path), 1):
            r = json.loads(line)
            prompt, toks, lps = r["prompt_tokens"], r["tokens"], r["logprobs"]
            if not toks:
                continue
            t = r.get("temperature") or 1.0
            weights.add(r.get("weights", "f32"))
            ids = torch.tensor([prompt + toks])
            with torch.inference_mode():
                logits = model(ids).logits[0, len(prompt) - 1 : -1].double() / t
            want = torch.log_softmax(logits, -1).gather(1, torch.tensor(toks)[:, None])[:, 0]
            for got, w in zip(lps, want.tolist()):
                diffs.append(got - w)
        d = torch.tensor(diffs, dtype=torch.float64)
        ad = d.abs()
        print(json.dumps({
            "file": path,
            "weights": sorted(weights),
            "tokens": len(diffs),
            "mean_abs": ad.mean().item(),
            "p99_abs": ad.quantile(0.99).item() if len(diffs) else None,
            "max_abs": ad.max().item(),
            "kl_estimate": d.mean().item(),
        }))


if __name__ == "__main__":
    main()
