"""Reward functions for verl and TRL backed by rlcode's verifier (``rl-verify serve``).

Standard library only. Every call goes to ``POST /verify`` of one of the servers named by
``urls`` (or ``$RLCODE_SERVE_URLS``, comma-separated, or ``$RLCODE_SERVE_URL``; default
``http://127.0.0.1:8080``), balanced client-side round-robin, with retries on another server when
one is unreachable, full (503) or failing (5xx). ``$RLCODE_SERVE_TOKEN`` is sent as a bearer
token when set.

verl (custom reward function)::

    custom_reward_function.path=/path/to/rlcode/python/rlcode_reward/__init__.py
    custom_reward_function.name=compute_score

TRL::

    from rlcode_reward import make_trl_reward
    trainer = GRPOTrainer(..., reward_funcs=[make_trl_reward("binary")])

A sample whose tests the sandbox could not run (``infra``: the server's own failure, never the
program's) has no reward: ``None`` from both functions (TRL ignores ``None`` rewards; for verl,
``on_infra="nan"`` or ``$RLCODE_INFRA=nan`` returns NaN instead, and ``on_infra="raise"`` raises
:class:`RewardUnavailable`). A server that cannot be reached after the retries raises
:class:`RewardUnavailable`: an outage is never scored as a failed program.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

__all__ = [
    "Client",
    "RewardUnavailable",
    "compute_score",
    "extract_code",
    "make_trl_reward",
    "problem_from_ground_truth",
]

DEFAULT_URL = "http://127.0.0.1:8080"


class RewardUnavailable(RuntimeError):
    """No server could answer (after retries), or a sample's reward is undefined (``infra``)."""


class BadRequest(ValueError):
    """The server refused the request (HTTP 4xx): the message names the field at fault."""


def _env_urls() -> List[str]:
    raw = os.environ.get("RLCODE_SERVE_URLS") or os.environ.get("RLCODE_SERVE_URL") or DEFAULT_URL
    return [u.strip().rstrip("/") for u in raw.split(",") if u.strip()]


class Client:
    """A client of one or more ``rl-verify serve`` instances.

    ``retries`` is the number of further attempts after the first, each on the next server,
    after ``backoff`` × 2^attempt seconds (or the server's ``Retry-After``).
    """

    def __init__(
        self,
        urls: Optional[Union[str, Sequence[str]]] = None,
        token: Optional[str] = None,
        timeout: float = 600.0,
        retries: int = 5,
        backoff: float = 0.25,
    ) -> None:
        if urls is None:
            urls = _env_urls()
        elif isinstance(urls, str):
            urls = [u.strip() for u in urls.split(",") if u.strip()]
        self.urls = [u.rstrip("/") for u in urls]
        if not self.urls:
            raise ValueError("no server URL given")
        self.token = token if token is not None else os.environ.get("RLCODE_SERVE_TOKEN")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._next = itertools.count()
        self._lock = threading.Lock()

    def _start(self) -> int:
        with self._lock:
            return next(self._next)

    def post(self, path: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """POST ``body`` as JSON to ``path``; the answer's JSON object."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        start = self._start()
        errors: List[str] = []
        for attempt in range(self.retries + 1):
            url = self.urls[(start + attempt) % len(self.urls)] + path
            wait = self.backoff * (2**attempt)
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                text = e.read().decode("utf-8", "replace")
                try:
                    message = json.loads(text).get("error") or text
                except ValueError:
                    message = text
                if 400 <= e.code < 500 and e.code not in (408, 429):
                    raise BadRequest(f"{url}: HTTP {e.code}: {message}") from None
                errors.append(f"{url}: HTTP {e.code}: {message}")
                retry_after = e.headers.get("Retry-After") if e.headers else None
                if retry_after and retry_after.isdigit():
                    wait = max(wait, float(retry_after))
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"{url}: {e}")
            if attempt < self.retries:
                time.sleep(wait)
        raise RewardUnavailable(
            f"no rl-verify server answered {path} after {self.retries + 1} attempts: "
            + "; ".join(errors[-3:])
        )

    def verify(
        self,
        problem: Dict[str, Any],
        codes: Sequence[str],
        reward: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Verdicts (and, with ``reward``, rewards) of ``codes`` on ``problem`` (a problem record)."""
        path = "/verify"
        if reward:
            path += "?reward=" + urllib.request.quote(reward, safe=":.")
        return self.post(path, {"problem": problem, "samples": [{"code": c} for c in codes]})

    def run_code(self, code: str, stdin: str = "", run_timeout: Optional[float] = None) -> Dict[str, Any]:
        """SandboxFusion's ``/run_code``."""
        body: Dict[str, Any] = {"code": code, "stdin": stdin, "language": "python"}
        if run_timeout is not None:
            body["run_timeout"] = run_timeout
        return self.post("/run_code", body)


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.S)


def extract_code(text: str) -> str:
    """The program in a completion: the last fenced Python block (```python or ```py), else
    the last fenced block, else the whole text."""
    blocks = _FENCE.findall(text)
    if not blocks:
        return text
    python = [b for lang, b in blocks if lang.lower() in ("python", "py", "python3")]
    return (python or [b for _, b in blocks])[-1]


def _as_obj(x: Any) -> Any:
    if isinstance(x, (bytes, bytearray)):
        x = x.decode()
    if isinstance(x, str):
        s = x.strip()
        if s[:1] in ("{", "["):
            try:
                return json.loads(s)
            except ValueError:
                return x
    return x


def _literal(v: Any) -> str:
    """A Python literal for a JSON value (for call-based tests)."""
    if v is None:
        return "None"
    if v is True:
        return "True"
    if v is False:
        return "False"
    if isinstance(v, float) and not math.isfinite(v):
        return f"float({str(v)!r})"
    if isinstance(v, list):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(x)}" for k, x in v.items()) + "}"
    return json.dumps(v)


def problem_from_ground_truth(ground_truth: Any, extra_info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """An rlcode problem record from a dataset's ground truth. Accepted:

    - a problem record (``{"id"?, "tests": [...]}``, rlcode's format: ``{"assert": ...}`` assert
      tests or ``{"stdin": ..., "stdout": ...}`` stdio tests);
    - verl / PRIME / TACO style ``{"inputs": [...], "outputs": [...]}``: stdio tests, or with
      ``fn_name`` call-based tests (``assert fn_name(*inputs[i]) == outputs[i]``);
    - a list of assert statements (strings), or one string of them (one test per line).

    ``extra_info`` may carry ``setup`` (code run before each assert test) and ``limits``.
    """
    gt = _as_obj(ground_truth)
    extra = extra_info or {}
    problem: Dict[str, Any]
    if isinstance(gt, dict) and "tests" in gt:
        problem = dict(gt)
    elif isinstance(gt, dict) and "inputs" in gt and "outputs" in gt:
        inputs, outputs = gt["inputs"], gt["outputs"]
        if len(inputs) != len(outputs):
            raise ValueError(f"ground truth has {len(inputs)} inputs and {len(outputs)} outputs")
        fn = gt.get("fn_name")
        if fn:
            tests = []
            for args, want in zip(inputs, outputs):
                args = args if isinstance(args, list) else [args]
                if isinstance(want, list) and len(want) == 1:
                    want = want[0]  # APPS wraps a call's result in a list
                call = f"{fn}({', '.join(_literal(a) for a in args)})"
                tests.append({"assert": f"assert {call} == {_literal(want)}"})
        else:
            tests = [
                {"stdin": i if isinstance(i, str) else "\n".join(map(str, i)),
                 "stdout": o if isinstance(o, str) else "\n".join(map(str, o))}
                for i, o in zip(inputs, outputs)
            ]
        problem = {"tests": tests}
    elif isinstance(gt, list) and all(isinstance(t, str) for t in gt):
        problem = {"tests": [{"assert": t} for t in gt]}
    elif isinstance(gt, str):
        lines = [l for l in gt.splitlines() if l.strip()]
        problem = {"tests": [{"assert": l} for l in lines]}
    else:
        raise ValueError("ground truth is neither a problem record, inputs/outputs, nor assert tests")
    for k in ("setup", "limits", "entry_point"):
        if k in extra and k not in problem:
            problem[k] = extra[k]
    problem.setdefault("prompt", "")
    if not problem.get("id"):
        digest = hashlib.sha256(json.dumps(problem["tests"], sort_keys=True).encode()).hexdigest()
        problem["id"] = "gt/" + digest[:16]
    return problem


_default_client: Optional[Client] = None
_default_lock = threading.Lock()


def _client() -> Client:
    global _default_client
    with _default_lock:
        if _default_client is None:
            _default_client = Client()
        return _default_client


def _infra(on_infra: Optional[str]) -> Optional[float]:
    mode = on_infra or os.environ.get("RLCODE_INFRA", "none")
    if mode == "nan":
        return float("nan")
    if mode == "raise":
        raise RewardUnavailable("the sandbox could not run this sample's tests (infra)")
    return None


def compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: Optional[Dict[str, Any]] = None,
    *,
    reward: Optional[str] = None,
    client: Optional[Client] = None,
    on_infra: Optional[str] = None,
) -> Optional[float]:
    """verl's custom reward signature: the reward of one completion.

    ``reward`` (default ``$RLCODE_REWARD``, else ``binary``) is any rlcode design
    (``rl-score --help`` lists them); a single completion is its own group, so designs that
    compare a group's members see a group of one (use :func:`make_trl_reward`, or rl-score on
    files, for those). ``None`` (or per ``on_infra``) when the sandbox failed.
    """
    design = reward or os.environ.get("RLCODE_REWARD", "binary")
    problem = problem_from_ground_truth(ground_truth, extra_info)
    answer = (client or _client()).verify(problem, [extract_code(solution_str)], design)
    r = answer["rewards"][0]
    return _infra(on_infra) if r is None else float(r)


def _completion_text(c: Any) -> str:
    if isinstance(c, str):
        return c
    if isinstance(c, list):  # conversational: a list of messages, the last the answer
        for m in reversed(c):
            if isinstance(m, dict) and m.get("role", "assistant") == "assistant":
                return str(m.get("content", ""))
        return str(c[-1].get("content", "")) if c and isinstance(c[-1], dict) else ""
    if isinstance(c, dict):
        return str(c.get("content", ""))
    return str(c)


def make_trl_reward(
    reward: str = "binary",
    column: str = "ground_truth",
    client: Optional[Client] = None,
    on_infra: Optional[str] = None,
):
    """A TRL ``GRPOTrainer`` reward function ``f(completions, **columns) -> list``.

    The dataset column ``column`` holds each prompt's ground truth (anything
    :func:`problem_from_ground_truth` takes). The completions of one problem (TRL repeats each
    prompt ``num_generations`` times) go to the server as one group, so group designs
    (``verpo``, ``best_partial``, ...) see the whole group. ``None`` where the sandbox failed.
    """

    def rlcode_reward(completions: Sequence[Any], **columns: Any) -> List[Optional[float]]:
        truths = columns.get(column)
        if truths is None:
            raise KeyError(f"the dataset has no column {column!r} (make_trl_reward(column=...))")
        extras = columns.get("extra_info") or [None] * len(completions)
        groups: Dict[str, Dict[str, Any]] = {}
        for i, (c, gt, ex) in enumerate(zip(completions, truths, extras)):
            problem = problem_from_ground_truth(gt, ex)
            g = groups.setdefault(problem["id"], {"problem": problem, "members": []})
            g["members"].append((i, extract_code(_completion_text(c))))
        out: List[Optional[float]] = [None] * len(completions)
        cl = client or _client()
        for g in groups.values():
            answer = cl.verify(g["problem"], [code for _, code in g["members"]], reward)
            for (i, _), r in zip(g["members"], answer["rewards"]):
                out[i] = _infra(on_infra) if r is None else float(r)
        return out

    rlcode_reward.__name__ = "rlcode_" + re.sub(r"[^A-Za-z0-9_]", "_", reward)
    return rlcode_reward
