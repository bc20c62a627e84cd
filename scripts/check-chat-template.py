#!/usr/bin/env python3
"""Check rl-sample's chat-template rendering (minijinja) against jinja2 as transformers uses it.

    python3 scripts/check-chat-template.py BIN_DIR TINY_CHECKPOINT

transformers renders chat templates with jinja2's ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True, extensions=[loopcontrols]) and a raise_exception global. This script copies a
byte-level checkpoint (`rl-update init --config tiny --out DIR`) once per template below, runs
`rl-sample --chat-template --max-tokens 1` on two problems, with and without --system-prompt, and
compares the prompt ids (bytes, plus the special tokens) with jinja2's rendering of the same
messages. Needs only jinja2. Exit 0 when every rendering is identical.
"""
import json, subprocess, sys, shutil, os, tempfile
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.ext import loopcontrols
B = os.path.abspath(sys.argv[1]); ck0 = os.path.abspath(sys.argv[2])
os.chdir(tempfile.mkdtemp(prefix="check-chat-template-"))
TEMPLATES = {
 "smollm2": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
 "llama3": "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
 "zephyr": "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}",
 "strip": "{%- for m in messages %}{%- if m.role == 'system' %}{{- '[SYS] ' + m.content.strip() + '\n' }}{%- continue %}{%- endif %}{{- '[' + m.role|upper + '] ' + m.content.strip() }}\n{%- endfor %}\n{%- if add_generation_prompt %}[ASSISTANT]{% endif %}",
}
USER = "Complete the following Python function. Answer with the whole function in one ```python code block.\n\n```python\n{prompt}```"
probs = [{"id": "a", "prompt": "from typing import List\n\n\ndef f(xs: List[int]) -> int:\n    \"\"\" Sum. \"\"\"\n"},
         {"id": "b", "prompt": "def g(s):"}]
open("p.jsonl", "w").write("".join(json.dumps(p) + "\n" for p in probs))
cfg0 = json.load(open(os.path.join(ck0, "tokenizer_config.json")))
def raise_exception(m): raise Exception(m)
bad = 0
for name, t in TEMPLATES.items():
    for sp in [None, "You write Python."]:
        ck = f"ck_{name}"; shutil.rmtree(ck, ignore_errors=True); shutil.copytree(ck0, ck)
        cfg = dict(cfg0, chat_template=t); json.dump(cfg, open(os.path.join(ck, "tokenizer_config.json"), "w"))
        cmd = [f"{B}/rl-sample", "--model", ck, "--problems", "p.jsonl", "--chat-template", "--max-tokens", "1"]
        if sp: cmd += ["--system-prompt", sp]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.globals["raise_exception"] = raise_exception
        tmpl = env.from_string(t)
        for p, line in zip(probs, out.splitlines()):
            rec = json.loads(line)
            prompt = p["prompt"] if p["prompt"].endswith("\n") else p["prompt"] + "\n"
            msgs = ([{"role": "system", "content": sp}] if sp else []) + [{"role": "user", "content": USER.replace("{prompt}", prompt)}]
            want = tmpl.render(messages=msgs, add_generation_prompt=True, bos_token=cfg["bos_token"], eos_token=cfg["eos_token"], pad_token=cfg.get("pad_token"))
            special = {256: b"<|bos|>", 257: b"<|eos|>", 258: b"<|pad|>"}
            got = b"".join(special.get(i, bytes([i]) if i < 256 else b"?") for i in rec["prompt_tokens"]).decode()
            print(f"{name:8} sys={bool(sp)!s:5} {p['id']}: {'same' if got == want else 'DIFFERENT'} ({len(got)} chars)")
            if got != want: bad += 1; print(repr(want)); print(repr(got))
print("differences:", bad); sys.exit(1 if bad else 0)
