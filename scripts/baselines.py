#!/usr/bin/env python3
"""The verifiers rl-verify is measured against (scripts/bench-verify.sh), on the host's own
python3, none of them sandboxed (the programs have the host's files and network):

  subprocess  one fresh `python3 -I -S` per test (program, setup and test in a temporary file),
              with a timeout: the status quo of the first benchmark.
  fork        a warm interpreter per worker forks a child for every test; the child caps its
              address space (RLIMIT_AS) and CPU time (RLIMIT_CPU), runs the program, the
              problem's setup and the test from a fresh namespace, and reports by exit status
              (the evalplus / LiveCodeBench practice). Every test starts from the worker's
              state: isolated as a process is.
  exec        each worker runs every test in its own interpreter, one after another: compile and
              exec the program, setup and test in a fresh dict, with an interval timer for the
              timeout. No isolation at all (a test sees what earlier tests did to builtins and
              modules); the floor of what running the tests costs in CPython itself.

Usage: baselines.py subprocess|fork|exec PROBLEMS JOBS [--timeout S] < samples.jsonl > out.jsonl
(--timeout: 10 s for subprocess, 1 s otherwise.) Writes one line per sample,
{"problem_id", "sample", "statuses": [...]}, so that verdicts can be compared."""
import argparse, concurrent.futures, io, json, multiprocessing, os, resource, signal
import subprocess, sys, tempfile, time

STATUS = {0: "pass", 1: "fail", 2: "error", 3: "timeout"}
MEMORY = 1 << 30  # RLIMIT_AS of a forked child: 1 GiB


class Timeout(BaseException):
    pass


def on_alarm(signum, frame):
    raise Timeout()


def run_here(program, setup, test, timeout):
    """Run one test in this process; its status code (see STATUS)."""
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        g = {"__name__": "__main__", "__builtins__": __builtins__}
        exec(compile(program + "\n" + setup, "<program>", "exec"), g)
        exec(compile(test, "<test>", "exec"), g)
        return 0
    except Timeout:
        return 3
    except AssertionError:
        return 1
    except BaseException:
        return 2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def run_forked(job):
    program, setup, test, timeout = job
    pid = os.fork()
    if pid == 0:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
            cpu = int(timeout) + 1  # the backstop for a test that swallows the alarm
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
            code = run_here(program, setup, test, timeout)
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status):
        return STATUS.get(os.WEXITSTATUS(status), "error")
    return "timeout" if os.WTERMSIG(status) in (signal.SIGXCPU, signal.SIGKILL) else "error"


def run_exec(job):
    program, setup, test, timeout = job
    out, err = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = io.StringIO()
    try:
        return STATUS[run_here(program, setup, test, timeout)]
    finally:
        sys.stdout, sys.stderr = out, err


def run_subprocess(job):
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


def init_worker():
    signal.signal(signal.SIGALRM, on_alarm)
    # A forked child's (and a program's) prints go nowhere.
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["subprocess", "fork", "exec"])
    ap.add_argument("problems")
    ap.add_argument("jobs", type=int)
    ap.add_argument("--timeout", type=float)
    a = ap.parse_args()
    if a.timeout is None:
        a.timeout = 10.0 if a.mode == "subprocess" else 1.0
    problems = {}
    for line in open(a.problems):
        p = json.loads(line)
        problems[p["id"]] = p
    samples = [json.loads(l) for l in sys.stdin if l.strip()]
    work = []
    for s in samples:
        p = problems[s["problem_id"]]
        for t in p["tests"]:
            work.append((s["code"], p.get("setup") or "", t["assert"], a.timeout))
    start = time.time()
    if a.mode == "subprocess":
        with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as ex:
            results = list(ex.map(run_subprocess, work))
    else:
        # One warm interpreter per worker (a forked copy of this one).
        run = run_forked if a.mode == "fork" else run_exec
        with multiprocessing.get_context("fork").Pool(a.jobs, initializer=init_worker) as pool:
            results = pool.map(run, work, chunksize=8)
    elapsed = time.time() - start
    i = 0
    for s in samples:
        n = len(problems[s["problem_id"]]["tests"])
        print(json.dumps({"problem_id": s["problem_id"], "sample": s.get("sample"),
                          "statuses": results[i:i + n]}))
        i += n
    print(f"baseline {a.mode}: {len(work)} tests in {elapsed:.2f} s, "
          f"{len(work) / elapsed:.1f} tests/s", file=sys.stderr)


main()
