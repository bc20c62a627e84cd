# rlcode's analysis of assert tests (harness mode p): which are value tests, and the others
# rewritten so that every value they compare is exact. Runs inside the sandbox, in an instance
# that runs no program (harness.py calls it), never on the host. See verify/src/split.rs and
# docs/security.md.


def _rlcode_analyse(tests, tok, write, encoded, describe, builtins):
    # Mode p: for each assert test, whether it is a value test, and if so its parts. Runs in an
    # instance that runs no program, so nothing here needs protecting.
    import ast, json
    for i, item in enumerate(json.loads(tests)):
        try:
            spec = _rlcode_split(item["code"], item["rl_same"], encoded, builtins, ast, json)
        except BaseException as e:
            spec = '{"run": %s}' % json.dumps(describe(e))
        if spec.startswith('{"run": '):
            # A test that runs in the program's interpreter: every value it compares, computes
            # with or tests the truth of goes through __rl_exact__ first (harness mode a).
            try:
                spec = spec[:-1] + ', "code": %s}' % json.dumps(_rlcode_exact(item["code"], ast))
            except BaseException as e:
                spec = '{"run": %s}' % json.dumps("cannot rewrite: " + describe(e))
        write(2, b"\n" + tok + b" SPLIT " + str(i).encode() + b" " + spec.encode() + b"\n")


# Builtins whose arguments are values they compute with (so a program's object there could decide
# the result through its own methods).
_RLCODE_VALUE_BUILTINS = frozenset((
    "abs", "all", "any", "bool", "complex", "dict", "divmod", "float", "frozenset", "hash",
    "int", "isinstance", "len", "list", "max", "min", "pow", "repr", "round", "set", "sorted",
    "str", "sum", "tuple", "type", "ascii", "format", "ord", "chr", "bin", "hex", "oct"))


def _rlcode_exact(code, ast):
    # The test with every operand of a comparison, of arithmetic, of `and`/`or`/`not`, every
    # condition (assert, if, while, conditional expression) and every argument of a builtin
    # that computes with values, or of a function of a module the test imports, wrapped in
    # __rl_exact__(...): then the test's decisions are made by the builtin types' own rules on
    # exact builtin values, whatever the program's objects would say.
    tree = ast.parse(code)
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                modules.add((a.asname or a.name).split(".")[0])

    def wrap(e):
        if e is None or isinstance(e, (ast.Constant, ast.Starred)):
            return e
        return ast.Call(ast.Name("__rl_exact__", ast.Load()), [e], [])

    class Exact(ast.NodeTransformer):
        def visit_Compare(self, node):
            self.generic_visit(node)
            node.left = wrap(node.left)
            node.comparators = [wrap(c) for c in node.comparators]
            return node

        def visit_BinOp(self, node):
            self.generic_visit(node)
            node.left, node.right = wrap(node.left), wrap(node.right)
            return node

        def visit_UnaryOp(self, node):
            self.generic_visit(node)
            node.operand = wrap(node.operand)
            return node

        def visit_BoolOp(self, node):
            self.generic_visit(node)
            node.values = [wrap(v) for v in node.values]
            return node

        def visit_AugAssign(self, node):
            self.generic_visit(node)
            node.value = wrap(node.value)
            return node

        def visit_Assert(self, node):
            self.generic_visit(node)
            node.test = wrap(node.test)
            return node

        def visit_If(self, node):
            self.generic_visit(node)
            node.test = wrap(node.test)
            return node

        visit_While = visit_IfExp = visit_If

        def visit_Call(self, node):
            self.generic_visit(node)
            f = node.func
            if (isinstance(f, ast.Name) and f.id in _RLCODE_VALUE_BUILTINS) or (
                    isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                    and f.value.id in modules):
                node.args = [wrap(a) for a in node.args]
                for k in node.keywords:
                    k.value = wrap(k.value)
            return node

    tree = ast.fix_missing_locations(Exact().visit(tree))
    return ast.unparse(tree) + "\n"


def _rlcode_split(code, rl_same, encoded, builtins, ast, json):
    # A value test is some imports, then `assert <check>` where the check is one of
    #   E == X, X == E, E != X, abs(E - X) < T (or <=, or X - E), _rl_same(E, X) (CodeI/O's
    #   comparison, when the problem's setup is the project's own), E, not E, E is C, E is not C
    # with X and T evaluable from the builtins and the imports alone (they are evaluated here,
    # before any program exists) and E a "value expression": calls, names, attributes, constant
    # subscripts and displays, where the arguments of a call to a name that is not a builtin
    # (the program's functions) are the test's inputs and may be anything, and a builtin or a
    # module's function takes only values from the program. So E hands the program the test's
    # inputs, never its expected values, and no comparison of the program's values with them
    # happens in the program's interpreter.
    def run(why):
        return '{"run": %s}' % json.dumps(why)
    body = ast.parse(code).body
    if not body or not isinstance(body[-1], ast.Assert):
        return run("not an assert")
    if not all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in body[:-1]):
        return run("statements other than imports before the assert")
    imports = "".join(ast.get_source_segment(code, s) + "\n" for s in body[:-1])
    env = {"__builtins__": dict(builtins)}
    exec(compile(imports, "<test>", "exec"), env)

    def constant(node):
        # The value of an expression needing nothing but the builtins and the imports.
        try:
            return True, eval(compile(ast.Expression(node), "<test>", "eval"), dict(env))
        except Exception:
            return False, None

    def program_valued(node):
        # An expression whose value comes from the program (not a constant).
        return spine_ok(node) and not isinstance(node, ast.Constant) and not constant(node)[0]

    def spine_ok(node):
        if isinstance(node, (ast.Constant, ast.Name)):
            return True
        if isinstance(node, ast.Attribute):
            return spine_ok(node.value)
        if isinstance(node, ast.Subscript):
            return spine_ok(node.value) and constant(node.slice)[0]
        if isinstance(node, ast.Call):
            f = node.func
            if not spine_ok(f):
                return False
            builtin = ((isinstance(f, ast.Name) and f.id in builtins)
                       or (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                           and f.value.id in env))
            if not builtin:
                # The program's function: its arguments are the test's inputs.
                return True
            # A builtin (or an imported module's function) applied to the program's values
            # only: given a constant too (math.isclose(f(x), 3), round(f(x), 2)) it would
            # decide, in the program's interpreter, what the host should.
            return all(program_valued(a.value if isinstance(a, ast.Starred) else a)
                       for a in node.args) \
                and all(program_valued(k.value) for k in node.keywords)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return all(spine_ok(e) for e in node.elts)
        return False

    def value(kind, e, **parts):
        if not spine_ok(e):
            return run("the checked expression compares or computes with the program's values")
        out = '{"kind": "%s", "imports": %s, "expr": %s' % (
            kind, json.dumps(imports), json.dumps("(" + ast.get_source_segment(code, e) + "\n)"))
        for k, x in parts.items():
            out += ', "%s": %s' % (k, encoded(x))
        return out + "}"

    t = body[-1].test
    if isinstance(t, ast.Compare) and len(t.ops) == 1:
        left, op, right = t.left, t.ops[0], t.comparators[0]
        if isinstance(op, (ast.Eq, ast.NotEq)):
            kind = "eq" if isinstance(op, ast.Eq) else "ne"
            ok, x = constant(right)
            if ok:
                return value(kind, left, want=x)
            ok, x = constant(left)
            if ok:
                return value(kind, right, want=x)
            return run("neither side is a constant")
        if isinstance(op, (ast.Is, ast.IsNot)) and isinstance(right, ast.Constant) \
                and right.value in (None, True, False) and type(right.value) in (bool, type(None)):
            return value("is" if isinstance(op, ast.Is) else "is_not", left, want=right.value)
        if isinstance(op, (ast.Lt, ast.LtE)) and isinstance(left, ast.Call) \
                and isinstance(left.func, ast.Name) and left.func.id == "abs" \
                and len(left.args) == 1 and not left.keywords \
                and isinstance(left.args[0], ast.BinOp) and isinstance(left.args[0].op, ast.Sub):
            ok_t, tol = constant(right)
            a, b = left.args[0].left, left.args[0].right
            ok_b, xb = constant(b)
            ok_a, xa = constant(a)
            if ok_t and (ok_a or ok_b):
                e, x = (a, xb) if ok_b else (b, xa)
                return value("close_le" if isinstance(op, ast.LtE) else "close", e,
                             want=x, tol=tol)
        return run("an unsupported comparison")
    if rl_same and isinstance(t, ast.Call) and isinstance(t.func, ast.Name) \
            and t.func.id == "_rl_same" and len(t.args) == 2 and not t.keywords:
        ok, x = constant(t.args[1])
        if ok:
            return value("rl_same", t.args[0], want=x)
        return run("the expected value is not a constant")
    if isinstance(t, ast.UnaryOp) and isinstance(t.op, ast.Not):
        return value("falsy", t.operand)
    if isinstance(t, (ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.IfExp)):
        return run("an unsupported check")
    return value("truthy", t)
