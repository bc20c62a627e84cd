#!/usr/bin/env python3
"""Check that a checkpoint written by rlcode loads in Hugging Face transformers unchanged.

Usage: python3 scripts/check-hf-load.py CKPT_DIR SAMPLES.jsonl

SAMPLES.jsonl: rl-sample output of CKPT_DIR at --temperature 1.0 --top-p 1.0 (so each record's
`logprobs` are the model's own log-probabilities of its `tokens`). The script loads CKPT_DIR with
LlamaForCausalLM.from_pretrained and AutoTokenizer.from_pretrained, and reports the largest
difference between transformers' log-probabilities of the sampled tokens and rl-sample's, and the
records whose prompt the HF tokenizer encodes to other ids. Needs torch and transformers (not a
dependency of rlcode; run it where they are installed).
"""
import json
import sys

import torch
from transformers import AutoTokenizer, LlamaForCausalLM


def main(ckpt, samples):
    model = LlamaForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(ckpt)
    # rl-sample starts the prompt with bos_token_id only when config.json names one (a model
    # converted from a GGUF with add_bos_token false has none; transformers would default it).
    with open(f"{ckpt}/config.json") as f:
        skip = 1 if json.load(f).get("bos_token_id") is not None else 0
    worst, tokens, mismatches, records, prompts_checked = 0.0, 0, 0, 0, 0
    for line in open(samples):
        r = json.loads(line)
        records += 1
        prompt, completion = r["prompt_tokens"], r["tokens"]
        # The prompt text is `code` less the completion, unless `code` is a fenced block taken
        # out of the completion: such records cannot be checked here.
        if r["code"].endswith(r["completion"]):
            text = r["code"][: len(r["code"]) - len(r["completion"])]
            prompts_checked += 1
            if tok.encode(text, add_special_tokens=False) != prompt[skip:]:
                mismatches += 1
        with torch.no_grad():
            logits = model(torch.tensor([prompt + completion])).logits[0].double()
        lp = torch.log_softmax(logits, -1)
        for j, t in enumerate(completion):
            worst = max(worst, abs(lp[len(prompt) - 1 + j, t].item() - r["logprobs"][j]))
            tokens += 1
    report = {"checkpoint": ckpt, "records": records, "tokens": tokens,
              "max_abs_logprob_diff": worst, "prompts_checked": prompts_checked,
              "tokenizer_mismatches": mismatches,
              "parameters": sum(p.numel() for p in model.parameters())}
    print(json.dumps(report))
    return 0 if worst < 1e-4 and mismatches == 0 else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
