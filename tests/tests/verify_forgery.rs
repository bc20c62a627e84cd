//! Forged verdicts: wrong programs that try to get `pass` (or to make their own verdict
//! `infra`) by every family in docs/security.md, on both runtimes. Each attack is listed as
//! attack → defence there; here each one runs against value tests (compared on the host),
//! tests that run in the program's interpreter, a CodeI/O-style test and a stdio test, and must
//! pass none of them and never be `infra`. Correct programs beside them must pass everything,
//! including the ones that read their stdin by every idiom.

use rlcode_tests::{jsonl, on_both_runtimes, verify, write};
use serde_json::{Value, json};

const PREINIT: &str = "preinit";

on_both_runtimes! {
    no_attack_forges_a_pass_or_an_infra => attacks_preinit, attacks_python;
    stdin_reaches_the_program_by_every_idiom => stdin_idioms_preinit, stdin_idioms_python;
    generated_risky_programs_never_pass_nor_become_infra
        => generated_programs_preinit, generated_programs_python;
    statuses_follow_the_program_not_the_harness => statuses_preinit, statuses_python;
}

const LIMITS: &str = r#"{"fuel": 3000000000, "wall_ms": 3000, "memory_mb": 64}"#;

/// The problems every attack is tried on: `add` (value tests, tests run in the program's
/// interpreter), CodeI/O-style `main_solution` (its own setup, compared on the host), and a
/// stdio sum.
fn problems() -> Vec<Value> {
    let limits: Value = serde_json::from_str(LIMITS).unwrap();
    vec![
        json!({
            "id": "add", "prompt": "def add(a, b):\n", "entry_point": "add",
            "setup": "candidate = add\n",
            "tests": [
                {"assert": "assert add(1, 2) == 3"},
                {"assert": "import math\nassert abs(candidate(0.5, 0.25) - 0.75) < 1e-6"},
                {"assert": "assert sorted([add(2, 1), add(0, 0)]) == [0, 3]"},
                {"assert": "for i in range(3):\n    assert add(i, 1) == i + 1"},
                {"assert": "import math\nassert math.isclose(add(1, 2), 3)"},
                {"assert": "assert len(str(add(10, 5))) == 2 and add(10, 5) + 0 == 15"}
            ],
            "limits": limits
        }),
        json!({
            "id": "codeio", "prompt": "", "entry_point": "main_solution",
            "setup": rlcode_core::CODEIO_SETUP,
            "tests": [
                {"assert": "assert _rl_same(main_solution(n=3), [1, 2, 3])\n"},
                {"assert": "assert _rl_same(main_solution(n=1), [1])\n"}
            ],
            "limits": limits
        }),
        json!({
            "id": "sum", "prompt": "",
            "tests": [{"stdin": "1 2\n", "stdout": "3\n"}, {"stdin": "5 5\n", "stdout": "10"}],
            "limits": limits
        }),
    ]
}

const ADD: &str = "def add(a, b):\n    return a + b\n";
const MAIN: &str = "def main_solution(n):\n    return list(range(1, n + 1))\n";
const SUM: &str = "a, b = map(int, input().split())\nprint(a + b)\n";

/// (family, name, program): every program is wrong (`add` returns 7 or a hijacking object,
/// `main_solution` a wrong list, the stdio program prints nothing right).
fn attacks() -> Vec<(&'static str, &'static str, String)> {
    // A hijacking object: equal to everything, true, close to everything.
    let everything = "class Any:\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n    \
        __lt__ = __le__ = __gt__ = __ge__ = __eq__\n    __bool__ = lambda s: True\n    \
        __sub__ = __rsub__ = __add__ = __radd__ = lambda s, o: s\n    __abs__ = lambda s: 0\n    \
        __hash__ = lambda s: 0\n    __len__ = lambda s: 2\n    __str__ = __repr__ = lambda s: '15'\n    \
        __iter__ = lambda s: iter([0, 3])\n    __float__ = lambda s: 3.0\n    __index__ = lambda s: 3\n";
    let wrong = |body: &str| {
        format!("{body}\ndef add(a, b):\n    return 7\ndef main_solution(n):\n    return [9]\n")
    };
    let returning = |setup: &str, value: &str| {
        format!(
            "{setup}\ndef add(a, b):\n    return {value}\ndef main_solution(n):\n    return {value}\n"
        )
    };
    // Walk up from the frame in `fr` for the harness's token and print it as a pass would.
    let walk = "def walk(fr):\n    import os\n    while fr is not None:\n        \
        for v in list(fr.f_locals.values()):\n            if type(v) is bytes and v.startswith(b'rlcode-'):\n                \
        os.write(2, b'\\n' + v + b' OK\\n')\n                os._exit(0)\n            \
        for c in (getattr(v, '__closure__', None) or ()):\n                x = c.cell_contents\n                \
        if type(x) is bytes and x.startswith(b'rlcode-'):\n                    os.write(2, b'\\n' + x + b' OK\\n')\n                    os._exit(0)\n        \
        fr = fr.f_back\n";
    vec![
        // Comparison hijacks.
        ("comparison", "eq_always_true", returning(everything, "Any()")),
        (
            "comparison",
            "int_subclass",
            returning(
                "class I(int):\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n    \
                 __sub__ = __rsub__ = lambda s, o: I(0)\n    __abs__ = lambda s: I(0)\n    __lt__ = lambda s, o: True\n    __hash__ = int.__hash__\n",
                "I(7)",
            ),
        ),
        (
            "comparison",
            "float_subclass",
            returning(
                "class F(float):\n    __eq__ = lambda s, o: True\n    __sub__ = __rsub__ = lambda s, o: F(0.0)\n    \
                 __abs__ = lambda s: F(0.0)\n    __lt__ = lambda s, o: True\n    __hash__ = float.__hash__\n",
                "F(7.5)",
            ),
        ),
        (
            "comparison",
            "str_subclass",
            returning(
                "class S(str):\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n    __len__ = lambda s: 2\n    __hash__ = str.__hash__\n",
                "S('x')",
            ),
        ),
        (
            "comparison",
            "list_subclass",
            returning(
                "class L(list):\n    __eq__ = lambda s, o: True\n    __len__ = lambda s: 3\n    \
                 __iter__ = lambda s: iter([1, 2, 3])\n    __getitem__ = lambda s, i: [1, 2, 3][i]\n",
                "L([9])",
            ),
        ),
        (
            "comparison",
            "callable_class",
            format!(
                "{everything}class add:\n    def __new__(cls, a, b):\n        return Any()\n\
                 class main_solution:\n    def __new__(cls, n):\n        return Any()\n"
            ),
        ),
        (
            "comparison",
            "partial_and_callable_object",
            format!(
                "{everything}import functools\nadd = functools.partial(lambda a, b: Any())\n\
                 class M:\n    def __call__(self, n):\n        return Any()\nmain_solution = M()\n"
            ),
        ),
        (
            "comparison",
            "bool_like_zero",
            returning("class Z(int):\n    __bool__ = lambda s: True\n", "Z(0)"),
        ),
        // Patching what tests use.
        ("patch", "builtins_abs", wrong("import builtins\nbuiltins.abs = lambda x: 0")),
        (
            "patch",
            "math_isclose",
            wrong("import math\nmath.isclose = lambda *a, **k: True"),
        ),
        (
            "patch",
            "builtins_len_round_sorted_all",
            wrong(
                "import builtins\nbuiltins.len = lambda x: 2\nbuiltins.round = lambda *a: 3\n\
                 builtins.sorted = lambda *a, **k: [0, 3]\nbuiltins.all = builtins.any = lambda x: True",
            ),
        ),
        (
            "patch",
            "sys_modules_math",
            wrong(
                "import sys, types\nm = types.ModuleType('math')\nm.isclose = lambda *a, **k: True\n\
                 m.fabs = abs\nsys.modules['math'] = m",
            ),
        ),
        (
            "patch",
            "patch_inside_the_call",
            "import builtins, math\ndef add(a, b):\n    math.isclose = lambda *a, **k: True\n    \
             builtins.sorted = lambda *a, **k: [0, 3]\n    return 7\ndef main_solution(n):\n    return [9]\n"
                .into(),
        ),
        (
            "patch",
            "rl_same_rebound",
            wrong("import builtins\nbuiltins._rl_same = lambda *a: True\n_rl_same = lambda *a: True"),
        ),
        // Harness hijacks.
        (
            "harness",
            "builtins_exec_compile_eval",
            wrong(
                "import builtins\n_compile = compile\nbuiltins.exec = lambda *a, **k: None\n\
                 builtins.compile = lambda *a, **k: _compile('pass', 'x', 'exec')\nbuiltins.eval = lambda *a, **k: 3",
            ),
        ),
        (
            "harness",
            "builtins_str_repr_type",
            wrong(
                "import builtins\nbuiltins.str = lambda *a: 'OK'\nbuiltins.repr = lambda *a: 'OK'\n\
                 builtins.type = lambda *a: int\nbuiltins.isinstance = lambda *a: True\nbuiltins.issubclass = lambda *a: True",
            ),
        ),
        (
            "harness",
            "exception_str_subclass_radd",
            "class S(str):\n    __radd__ = __add__ = lambda s, o: 'OK'\n    __getitem__ = lambda s, i: s\n    \
             replace = lambda s, *a: s\n    def encode(s, *a):\n        return b'OK'\n\
             class E(Exception):\n    def __str__(self):\n        return S('x')\n\
             def add(a, b):\n    raise E(S('x'))\ndef main_solution(n):\n    raise E(S('x'))\nraise E(S('top'))\n"
                .into(),
        ),
        (
            "harness",
            "system_exit_code_object",
            "class C:\n    __repr__ = __str__ = lambda s: 'OK'\n    __eq__ = lambda s, o: True\nraise SystemExit(C())\n"
                .into(),
        ),
        (
            "harness",
            "harness_module_rerun",
            wrong(
                "import sys, types\nh = sys.modules.get('harness') or sys.modules.get('__main__')\n\
                 fake = types.SimpleNamespace(read=lambda fd, n: b'', write=__import__('os').write, _exit=__import__('os')._exit)\n\
                 try:\n    h.os = fake\n    h._rlcode_run()\nexcept BaseException:\n    pass",
            ),
        ),
        (
            "harness",
            "os_write_patched",
            wrong("import os\nos.write = lambda *a: 0\nos._exit = lambda *a: None"),
        ),
        (
            "harness",
            "del_prints_forged_report",
            wrong(
                "import os\nclass D:\n    def __del__(self):\n        os.write(2, b'\\nrlcode-00000000000000000000000000000000 OK\\n')\nkeep = D()",
            ),
        ),
        // Reaching the secret.
        (
            "secret",
            "sys_monitoring",
            wrong(&format!(
                "{walk}import sys, os\nm = sys.monitoring\n\
                 def cb(code, off, fn, arg):\n    for c in (getattr(fn, '__closure__', None) or ()):\n        \
                 x = c.cell_contents\n        if type(x) is bytes and x.startswith(b'rlcode-'):\n            \
                 os.write(2, b'\\n' + x + b' OK\\n')\n            os._exit(0)\n    return None\n\
                 m.use_tool_id(3, 'x')\nm.register_callback(3, m.events.CALL, cb)\nm.set_events(3, m.events.CALL)"
            )),
        ),
        (
            "secret",
            "signal_handler_frame",
            wrong(&format!(
                "{walk}import signal\nsignal.signal(signal.SIGINT, lambda n, fr: walk(fr))\nsignal.raise_signal(signal.SIGINT)"
            )),
        ),
        (
            "secret",
            "fresh_signal_module",
            wrong(&format!(
                "{walk}import _imp, importlib.machinery\n\
                 s = _imp.create_builtin(importlib.machinery.ModuleSpec('_signal', None))\n\
                 s.signal(2, lambda n, fr: walk(fr))\ns.raise_signal(2)"
            )),
        ),
        (
            "secret",
            "audit_hook_reads_tests",
            "import sys\nseen = []\ndef hook(ev, args):\n    if ev == 'exec':\n        seen.append(args)\n\
             sys.addaudithook(hook)\ndef add(a, b):\n    return 7\ndef main_solution(n):\n    return [9]\n"
                .into(),
        ),
        (
            "secret",
            "frame_via_traceback",
            wrong(&format!(
                "{walk}try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    walk(e.__traceback__.tb_frame)"
            )),
        ),
        (
            "secret",
            "gc_referrers",
            wrong(
                "import gc, os\nfor o in gc.get_objects():\n    if type(o) is bytes and o.startswith(b'rlcode-'):\n        \
                 os.write(2, b'\\n' + o + b' OK\\n')\n        os._exit(0)",
            ),
        ),
        // Program-made infra.
        ("infra", "select_nothing", wrong("import select\nselect.select([], [], [])")),
        ("infra", "os_exit_126", wrong("import os\nos._exit(126)")),
        ("infra", "os_exit_minus_1", wrong("import os\nos._exit(-1)")),
        ("infra", "os_exit_255", wrong("import os\nos._exit(255)")),
        ("infra", "keyboard_interrupt", wrong("raise KeyboardInterrupt")),
        (
            "infra",
            "keyboard_interrupt_in_call",
            "def add(a, b):\n    raise KeyboardInterrupt\ndef main_solution(n):\n    raise KeyboardInterrupt\n"
                .into(),
        ),
        ("infra", "abort", wrong("import os\nos.abort()")),
        ("infra", "kill_self", wrong("import os\nos.kill(os.getpid(), 9)")),
        (
            "infra",
            "poll_nothing",
            wrong("import select\np = select.poll()\np.poll(1000)"),
        ),
        ("infra", "stdin_read_zero", wrong("import os\nos.read(0, 0)\nos.read(0, 0)")),
    ]
}

fn statuses(v: &Value) -> Vec<String> {
    v["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap().to_string())
        .collect()
}

fn no_attack_forges_a_pass_or_an_infra(runtime: &str) {
    let dir = tempfile::tempdir().unwrap();
    let problems = write(dir.path(), "p.jsonl", &jsonl(&problems()));
    let mut samples = Vec::new();
    for (family, name, code) in attacks() {
        for pid in ["add", "codeio", "sum"] {
            samples.push(json!({"problem_id": pid, "family": family, "name": name, "code": code}));
        }
    }
    for (pid, code) in [("add", ADD), ("codeio", MAIN), ("sum", SUM)] {
        samples.push(json!({"problem_id": pid, "family": "correct", "name": pid, "code": code}));
    }
    let out = verify(runtime, &problems, &["--no-cache"], jsonl(&samples));
    out.expect_code(0);
    let mut failures = Vec::new();
    for rec in out.records() {
        let v = &rec["verdict"];
        let st = statuses(v);
        let who = format!(
            "{runtime}: {} {} on {}",
            rec["family"], rec["name"], rec["problem_id"]
        );
        if rec["family"] == "correct" {
            if st.iter().any(|s| s != "pass") {
                failures.push(format!("{who}: a correct program must pass: {v}"));
            }
            continue;
        }
        if st.iter().any(|s| s == "pass" || s == "infra") {
            failures.push(format!("{who}: {v}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // How each test ran: `add` has 3 value tests and 3 that run in the program's interpreter,
    // `codeio` 2 value tests, `sum` 2 stdio tests.
    let per_problem = samples.len() / 3;
    let ran = format!(
        "run: {} value tests compared on the host, {} assert tests in the program's interpreter, {} stdio",
        per_problem * 5,
        per_problem * 3,
        per_problem * 2
    );
    assert!(
        out.stderr.contains(&ran),
        "{runtime}: want {ran:?} in {}",
        out.stderr
    );
}

fn stdin_reaches_the_program_by_every_idiom(runtime: &str) {
    let dir = tempfile::tempdir().unwrap();
    let problems = write(dir.path(), "p.jsonl", &jsonl(&problems()[2..]));
    let idioms = [
        "a, b = map(int, open(0).read().split())\nprint(a + b)\n",
        "t = ''\nfor line in open(0):\n    t += line\nprint(sum(map(int, t.split())))\n",
        "import os\nb = b''\nwhile True:\n    c = os.read(0, 3)\n    if not c:\n        break\n    b += c\nprint(sum(map(int, b.split())))\n",
        "import sys\nprint(sum(map(int, sys.stdin.read().split())))\n",
        "import sys\nprint(sum(map(int, sys.stdin.buffer.read().split())))\n",
        "print(sum(map(int, input().split())))\n",
        "import sys\nprint(sum(int(x) for line in sys.stdin for x in line.split()))\n",
    ];
    let samples: Vec<Value> = idioms
        .iter()
        .map(|c| json!({"problem_id": "sum", "code": c}))
        .collect();
    let out = verify(runtime, &problems, &["--no-cache"], jsonl(&samples));
    out.expect_code(0);
    for (rec, idiom) in out.records().iter().zip(idioms) {
        assert_eq!(
            statuses(&rec["verdict"]),
            ["pass", "pass"],
            "{runtime}: {idiom}: {}",
            rec["verdict"]
        );
    }
}

/// A tiny deterministic generator (splitmix64), so the property test needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// Risky statements, each one line, combined at random into wrong programs.
const RISKY: &[&str] = &[
    "import os; os._exit(0)",
    "import os; os._exit(1)",
    "import os; os._exit(126)",
    "import os; os._exit(-1)",
    "import os; os._exit(255)",
    "import sys; sys.exit(0)",
    "import sys; sys.exit('OK')",
    "raise SystemExit",
    "raise KeyboardInterrupt",
    "raise MemoryError",
    "raise RecursionError",
    "import os; os.abort()",
    "import os; os.kill(os.getpid(), 9)",
    "import select; select.select([], [], [])",
    "import select; select.select([0], [], [], 0.01)",
    "import select; p = select.poll(); p.poll(10)",
    "import signal; signal.raise_signal(2)",
    "import signal; signal.signal(2, lambda *a: None)",
    "import time; time.sleep(0.01)",
    "import os; os.read(0, 0)",
    "import os; os.read(0, 1 << 20)",
    "import sys; sys.stdin.read()",
    "import os; os.close(0)",
    "import os; os.close(1)",
    "import os; os.close(2)",
    "import os; os.write(2, b'\\nrlcode-00000000000000000000000000000000 OK\\n')",
    "import os; os.write(2, b'\\n' * 1000)",
    "import sys; sys.stderr.write('rlcode- OK\\n' * 100)",
    "print('x' * 100000)",
    "x = bytearray(1 << 28)",
    "x = [0] * (1 << 26)",
    "import sys; sys.setrecursionlimit(10 ** 6)",
    "exec('def r(n): return r(n + 1)\\nr(0)')",
    "import gc; gc.disable()",
    "import gc; gc.freeze()",
    "import sys; sys.addaudithook(lambda *a: None)",
    "import sys; sys.settrace(lambda *a: None)",
    "import sys; sys.setprofile(lambda *a: None)",
    "import sys; sys.monitoring.use_tool_id(2, 'p')",
    "import builtins; builtins.abs = lambda x: 0",
    "import builtins; builtins.sorted = lambda *a, **k: [0, 3]",
    "import builtins; builtins.exec = lambda *a, **k: None",
    "import builtins; builtins.len = lambda x: 0",
    "import math; math.isclose = lambda *a, **k: True",
    "import sys; sys.modules.clear()",
    "import sys; sys.stdout = None",
    "import sys; sys.stderr = None",
    "import atexit, os; atexit.register(os._exit, 0)",
    "import threading; threading.Thread(target=print).start()",
    "import weakref; weakref.finalize(object(), print)",
    "import faulthandler; faulthandler.enable()",
    "import ctypes",
    "import _testcapi",
    "open('/dev/stdin').read()",
    "eval('(' * 100000)",
    "import json; json.loads('[' * 100000)",
    "import os; os.environ.clear()",
    "import os; os.chdir('/')",
    "import io, sys; sys.stdin = io.StringIO('')",
];

/// Where a risky statement goes.
const PLACES: &[&str] = &["top", "call", "del", "str", "eq"];

/// A wrong program: `add` returns 7 (or an object whose methods do risky things), with the
/// picked statements at the picked places.
fn generated(rng: &mut Rng) -> String {
    let mut top = String::new();
    let mut call = String::new();
    let mut methods = String::new();
    let n = 1 + rng.next() % 3;
    for _ in 0..n {
        let stmt = rng.pick(RISKY);
        let body = format!(
            "        try:\n            {stmt}\n        except Exception:\n            pass\n"
        );
        match rng.pick(PLACES) {
            "top" => top.push_str(&format!("try:\n    {stmt}\nexcept Exception:\n    pass\n")),
            "call" => call.push_str(&format!("    try:\n        {stmt}\n    except Exception:\n        pass\n")),
            "del" => methods.push_str(&format!("    def __del__(self):\n{body}")),
            "str" => methods.push_str(&format!(
                "    def __str__(self):\n{body}        return 'OK'\n    __repr__ = __str__\n"
            )),
            _ => methods.push_str(&format!(
                "    def __eq__(self, o):\n{body}        return True\n    __hash__ = object.__hash__\n"
            )),
        }
    }
    let value = if methods.is_empty() || rng.next().is_multiple_of(2) {
        "7"
    } else {
        "R()"
    };
    if methods.is_empty() {
        methods.push_str("    pass\n");
    }
    format!("class R(Exception):\n{methods}{top}def add(a, b):\n{call}    return {value}\n")
}

fn generated_risky_programs_never_pass_nor_become_infra(runtime: &str) {
    // Thousands on the fast runtime; fewer on the plain one, where each test starts CPython.
    let count = if runtime == PREINIT { 4000 } else { 1200 };
    let dir = tempfile::tempdir().unwrap();
    let problem = json!({
        "id": "add", "prompt": "", "entry_point": "add",
        "tests": [
            {"assert": "assert add(1, 2) == 3"},
            {"assert": "assert abs(add(0.5, 0.25) - 0.75) < 1e-6"},
            {"assert": "for i in range(2):\n    assert add(i, 1) == i + 1"}
        ],
        "limits": {"fuel": 400000000u64, "wall_ms": 2000, "memory_mb": 64}
    });
    let problems = write(dir.path(), "p.jsonl", &jsonl(&[problem]));
    let mut rng = Rng(20261201);
    let samples: Vec<Value> = (0..count)
        .map(|i| json!({"problem_id": "add", "sample": i, "code": generated(&mut rng)}))
        .collect();
    let out = verify(runtime, &problems, &["--no-cache"], jsonl(&samples));
    out.expect_code(0);
    let records = out.records();
    assert_eq!(records.len(), count);
    let mut bad = Vec::new();
    for (rec, sample) in records.iter().zip(&samples) {
        let st = statuses(&rec["verdict"]);
        if st.iter().any(|s| s == "pass" || s == "infra") {
            bad.push(format!(
                "{}\n{}",
                sample["code"].as_str().unwrap(),
                rec["verdict"]
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{runtime}: {} of {count} generated programs passed a test or were infra:\n{}",
        bad.len(),
        bad[..bad.len().min(5)].join("\n---\n")
    );
}

fn statuses_follow_the_program_not_the_harness(runtime: &str) {
    let dir = tempfile::tempdir().unwrap();
    let problems = [
        json!({
            "id": "add", "prompt": "", "entry_point": "add",
            "tests": [{"assert": "assert add(1, 2) == 3"},
                      {"assert": "for i in range(1):\n    assert add(i, 1) == i + 1"}],
            "limits": {"memory_mb": 64}
        }),
        json!({
            "id": "big", "prompt": "", "entry_point": "big",
            "tests": [{"assert": "assert big() == [0] * 50000"}]
        }),
        json!({
            "id": "stdin", "prompt": "",
            "tests": [{"stdin": format!("1 2\n{}\n", "x".repeat(20000)), "stdout": "3"}]
        }),
    ];
    let problems = write(dir.path(), "p.jsonl", &jsonl(&problems));
    let cases = [
        // A MemoryError the program caught, then a wrong answer: `fail`, not `memory`.
        (
            "add",
            "try:\n    x = bytearray(1 << 30)\nexcept MemoryError:\n    pass\ndef add(a, b):\n    return 7\n",
            "fail",
        ),
        // ... and a right one: `pass`.
        (
            "add",
            "try:\n    x = bytearray(1 << 30)\nexcept MemoryError:\n    pass\ndef add(a, b):\n    return a + b\n",
            "pass",
        ),
        // Exactly the stdout cap is within it (the cap is 1 KiB here).
        (
            "add",
            "import sys\nsys.stdout.write('x' * 1024)\ndef add(a, b):\n    return a + b\n",
            "pass",
        ),
        (
            "add",
            "import sys\nsys.stdout.write('x' * 1025)\ndef add(a, b):\n    return a + b\n",
            "output_limit",
        ),
        // The harness's own reports do not count against the program's stderr cap.
        (
            "add",
            "import sys\nsys.stderr.write('y' * 1000)\ndef add(a, b):\n    return a + b\n",
            "pass",
        ),
        (
            "add",
            "import sys\nsys.stderr.write('y' * 1025)\ndef add(a, b):\n    return a + b\n",
            "output_limit",
        ),
        // A large correct value is not the program's output.
        ("big", "def big():\n    return [0] * 50000\n", "pass"),
        ("big", "def big():\n    return [0] * 49999\n", "fail"),
        // A program spinning in host calls (os.read(0, 0) with much unread input returns EINTR
        // forever on the plain runtime) ends when its fuel does, not at the wall clock.
        (
            "stdin",
            "import os\nwhile True:\n    os.read(0, 0)\n",
            "timeout",
        ),
        (
            "stdin",
            "import sys\nprint(sum(map(int, sys.stdin.readline().split())))\n",
            "pass",
        ),
        // A byte-order mark before the program is not a syntax error.
        ("add", "\u{feff}def add(a, b):\n    return a + b\n", "pass"),
    ];
    let samples: Vec<Value> = cases
        .iter()
        .map(|(p, c, _)| json!({"problem_id": p, "code": c}))
        .collect();
    let out = verify(
        runtime,
        &problems,
        &["--no-cache", "--max-stdout-kb", "1", "--max-stderr-kb", "1"],
        jsonl(&samples),
    );
    out.expect_code(0);
    for (rec, (_, code, want)) in out.records().iter().zip(cases) {
        let st = statuses(&rec["verdict"]);
        assert!(
            st.iter().all(|s| s == want),
            "{runtime}: {code:?}: want {want}, got {}",
            rec["verdict"]
        );
        if want == "timeout" {
            assert_eq!(
                rec["verdict"]["tests"][0]["detail"], "fuel budget exhausted",
                "{runtime}: {code:?}"
            );
        }
    }
}
