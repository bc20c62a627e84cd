#!/usr/bin/env python3
"""PyTorch's peer of an rl-sample workload, for scripts/bench-sample.sh --torch.

  bench_sample_torch.py MODEL SAMPLES --max-tokens N [--temperature 1.0] [--threads T]

SAMPLES is rl-sample's output for the workload: its `prompt_tokens` (the chat prompt exactly as
rl-sample tokenized it) and how many samples each problem got. transformers' LlamaForCausalLM
(f32, loaded from MODEL) then generates the same number of sequences from the same prompt
tokens in one `generate` call, as a user of transformers would: the prompts left-padded into one
batch, pure sampling at the temperature (top_k 0, top_p 1), at most N new tokens, stopping at
the end-of-turn token; sequences that finish early are padded until the whole batch is done.
A warm-up call of 4 tokens comes first. Prints one JSON line: generated tokens (up to and with
each sequence's end-of-turn token), the seconds of the timed call, tok/s.
"""
import argparse
import json
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("samples")
    ap.add_argument("--max-tokens", type=int, required=True)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()

    import os
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    torch.set_num_threads(a.threads or os.cpu_count())
    torch.manual_seed(1)
    prompts = []
    for line in open(a.samples):
        r = json.loads(line)
        prompts.append(r["prompt_tokens"])
    tok = AutoTokenizer.from_pretrained(a.model)
    model = LlamaForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32).eval()
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    kw = dict(do_sample=True, temperature=a.temperature, top_k=0, top_p=1.0,
              eos_token_id=eos, pad_token_id=pad)
    with torch.inference_mode():
        model.generate(input_ids=ids[:1], attention_mask=mask[:1], max_new_tokens=4, **kw)
        t0 = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=a.max_tokens, **kw)
        secs = time.perf_counter() - t0
    tokens = 0
    for row in out[:, width:].tolist():
        n = len(row)
        if eos in row:
            n = row.index(eos) + 1
        tokens += n
    print(json.dumps({"sequences": len(prompts), "tokens": tokens, "seconds": secs,
                      "tok_s": tokens / secs, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
