# rl-data import codeio: the program that runs one CodeI/O record inside the sandbox
# (rl-verify --capture), never on the host. rl-data prepends the constants SRC (the code
# sample), GEN (the input generator), SETUP (the problems' setup code), SEED and TESTS, and reads
# back the stdout lines that start with "@rlcodeio " (one per step; a run cut off by its fuel
# budget keeps the lines written before). One run per record: compiling this driver costs more
# than most input sets.
#
# probe:    checks that every module the sample and the generator import is in the standard
#           library, that the sample defines main_solution, and that both load; reports the
#           signature of main_solution and the sample's top-level imports.
# generate: for each input set i < TESTS: generate_inputs(random.Random("rlcode-codeio/<SEED>/
#           <i>")), the inputs and main_solution's output made JSON-like (tuples become lists;
#           anything else that JSON cannot hold is refused), and the assert test built from them,
#           which is then run here against a second call of the reference, as the verifier will
#           run it.
import ast, contextlib, copy, io, json, keyword, math, random, sys

_out = sys.stdout
MAX_TEST_BYTES = 16384


def emit(kind, **fields):
    fields["kind"] = kind
    fields["step"] = STEP
    _out.write("\n@rlcodeio " + json.dumps(fields) + "\n")
    _out.flush()


def describe(e):
    return (type(e).__name__ + ": " + str(e))[:300]


class NotJsonLike(Exception):
    pass


def canon(v, depth=0):
    """v as the plain JSON-like value the tests compare against: None, bool, int, finite float,
    str, list (tuples included) and dict with str keys."""
    if depth > 100:
        raise NotJsonLike("nested too deep")
    if v is None or type(v) is bool:
        return v
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise NotJsonLike("non-finite float " + repr(float(v)))
        return float(v)
    if isinstance(v, str):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [canon(x, depth + 1) for x in v]
    if isinstance(v, dict):
        if not all(isinstance(k, str) for k in v):
            raise NotJsonLike("a dict key that is not a string")
        return {str(k): canon(x, depth + 1) for k, x in v.items()}
    raise NotJsonLike("a value of type " + type(v).__name__)


def imported_modules(tree):
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def offset(lines, lineno, col):
    return sum(len(l) for l in lines[:lineno - 1]) + len(lines[lineno - 1].encode()[:col].decode())


def signature_of(node):
    """The parameter list of a def as written (ast.unparse needs a module the pre-initialized
    sandbox lacks): the text between the parentheses, on one line; the bare names if that text
    does not parse on its own."""
    lines = SRC.splitlines(keepends=True)
    start = offset(lines, node.lineno, node.col_offset)
    end_node = node.returns if node.returns is not None else node.body[0]
    end = offset(lines, end_node.lineno, end_node.col_offset)
    header = SRC[start:end]
    text = header[header.find("(") + 1:header.rfind(")")]
    text = " ".join(part.strip() for part in text.splitlines()).strip().rstrip(",").strip()
    try:
        ast.parse("def f(" + text + "):\n    pass\n")
        return text
    except SyntaxError:
        a = node.args
        names = [x.arg for x in a.posonlyargs + a.args]
        if a.vararg:
            names.append("*" + a.vararg.arg)
        elif a.kwonlyargs:
            names.append("*")
        names += [x.arg for x in a.kwonlyargs]
        if a.kwarg:
            names.append("**" + a.kwarg.arg)
        return ", ".join(names)


def load():
    """The sample's globals and the generator's (a copy of them plus `Random`, as reasoning-gym
    runs it). The sample runs as the verifier runs a program: as module `solution`."""
    scope = {"__name__": "solution"}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(SRC, "<code_sample>", "exec"), scope)
        gscope = dict(scope)
        gscope["__name__"] = "generator"
        gscope["Random"] = random.Random
        exec(compile(GEN, "<input_generator>", "exec"), gscope)
    return scope, gscope


def probe():
    try:
        tree = ast.parse(SRC)
        gtree = ast.parse(GEN)
    except SyntaxError as e:
        return emit("broken", detail=describe(e))
    foreign = sorted(m for m in imported_modules(tree) | imported_modules(gtree)
                     if m not in sys.stdlib_module_names)
    if foreign:
        return emit("non_stdlib", modules=foreign)
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main_solution"]
    if not mains:
        return emit("broken", detail="no top-level def main_solution")
    signature = signature_of(mains[-1])
    imports = [ast.get_source_segment(SRC, n) for n in tree.body
               if isinstance(n, (ast.Import, ast.ImportFrom))]
    try:
        scope, gscope = load()
    except ModuleNotFoundError as e:
        return emit("missing_module", module=str(e.name), detail=describe(e))
    except BaseException as e:
        return emit("broken", detail=describe(e))
    if not callable(scope.get("main_solution")) or not callable(gscope.get("generate_inputs")):
        return emit("broken", detail="main_solution or generate_inputs is not callable")
    emit("ok", signature=signature, imports=imports)
    return scope, gscope


def call_text(args):
    if all(k.isidentifier() and not keyword.iskeyword(k) for k in args):
        return "main_solution(" + ", ".join(k + "=" + repr(v) for k, v in args.items()) + ")"
    return "main_solution(**" + repr(args) + ")"


def generate(scope, gscope, index):
    rng = random.Random("rlcode-codeio/%s/%s" % (SEED, index))
    main = scope["main_solution"]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            inputs = gscope["generate_inputs"](rng)
    except BaseException as e:
        return emit("error", phase="generate_inputs", detail=describe(e))
    if not isinstance(inputs, dict) or not all(isinstance(k, str) for k in inputs):
        return emit("not_json", detail="generate_inputs did not return a dict with str keys")
    try:
        args = canon(inputs)
        call = call_text(args)
    except (NotJsonLike, ValueError) as e:
        return emit("not_json", detail="inputs: " + describe(e))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            got = main(**copy.deepcopy(args))
    except BaseException as e:
        return emit("error", phase="main_solution", detail=describe(e))
    try:
        want = canon(got)
        expected = repr(want)
        key = json.dumps(want, sort_keys=True, allow_nan=False)
    except (NotJsonLike, ValueError) as e:
        return emit("not_json", detail="output: " + describe(e))
    test = "assert _rl_same(" + call + ", " + expected + ")\n"
    if len(test.encode()) > MAX_TEST_BYTES:
        return emit("too_large", detail="%d bytes" % len(test.encode()))
    # The test itself, as the verifier will run it (program, setup, test in one scope): it calls
    # the reference a second time, so a reference that disagrees with itself fails here.
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(SETUP, "<setup>", "exec"), scope)
            exec(compile(test, "<test>", "exec"), scope)
    except AssertionError:
        return emit("non_deterministic", detail="a second call returned another result")
    except BaseException as e:
        return emit("non_deterministic", detail="a second call raised " + describe(e))
    emit("ok", test=test, output=key)


STEP = "probe"
loaded = probe()
if loaded:
    for STEP in range(TESTS):
        generate(*loaded, STEP)
