#!/usr/bin/env python3
"""The status-quo verifier that rl-verify is measured against: one native `python3` subprocess
per test, with a timeout, N at a time. Reads samples (JSONL) on stdin and a problems file; writes
one line per sample: {"problem_id", "sample", "statuses": [...]} so verdicts can be compared.
Benchmark use only: it runs programs on the host with no sandbox at all."""
import concurrent.futures, json, os, subprocess, sys, tempfile, time

def run_one(job):
    program, setup, test, timeout = job
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(program + "\n" + setup + "\n" + test + "\n")
        path = f.name
    try:
        p = subprocess.run([sys.executable, "-I", "-S", path], capture_output=True, timeout=timeout)
        if p.returncode == 0:
            return "pass"
        last = p.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        return "fail" if last[0].startswith("AssertionError") else "error"
    except subprocess.TimeoutExpired:
        return "timeout"
    finally:
        os.unlink(path)

def main():
    problems_path, jobs = sys.argv[1], int(sys.argv[2])
    problems = {}
    for line in open(problems_path):
        p = json.loads(line)
        problems[p["id"]] = p
    samples = [json.loads(l) for l in sys.stdin if l.strip()]
    work = []
    for s in samples:
        p = problems[s["problem_id"]]
        for t in p["tests"]:
            work.append((s["code"], p.get("setup") or "", t["assert"], 10))
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as ex:
        results = list(ex.map(run_one, work))
    elapsed = time.time() - start
    i = 0
    for s in samples:
        n = len(problems[s["problem_id"]]["tests"])
        print(json.dumps({"problem_id": s["problem_id"], "sample": s.get("sample"),
                          "statuses": results[i:i + n]}))
        i += n
    print(f"baseline: {len(work)} tests in {elapsed:.2f} s, {len(work) / elapsed:.1f} tests/s",
          file=sys.stderr)

main()
