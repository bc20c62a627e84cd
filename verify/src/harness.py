# rlcode's test harness: runs inside the sandbox as `python -c`, never on the host. The
# pre-initialized runtime's entry module (verify/guest/app.py) imports it and calls _rlcode_run.
# docs/security.md is the threat model this file implements; the protocol, in short:
#
# stdin: a 40-byte line "<token>\n" (a per-run random token), a 41-byte header
# "<program bytes> <setup bytes> <test bytes> <mode>\n" (12-digit decimals, one mode letter),
# the three texts, then the program's own stdin, left unread for the program (all of it is read
# with os.read, exactly, so no buffer swallows the program's input).
#
# Modes:
#   v  a value test: the test text is "<imports>\0<expression>". The harness runs the program
#      and the setup, evaluates the expression (the call the test makes) and writes its value,
#      read through the builtin types' own C accessors, as "<token> VALUE <json>". The host
#      compares it with the expected value, which never enters this interpreter: a program can
#      only pass by producing a value equal to it.
#   a  any other assert test, run here: "<token> OK" once the test code ran to completion.
#   s  a stdio test: the program as __main__ with its stdin; the host compares stdout.
#   p  analysis, in an instance that runs no program: the test text is a JSON list of assert
#      tests; for each, "<token> SPLIT <i> <json>" says whether it is a value test (its imports,
#      expression, comparison and expected value) or must run as mode a.
# Reports: "<token> OK", "<token> VALUE <json>", "<token> EXC <phase> <type> <msg>",
# "<token> EXIT <phase> <code>", each on a line of its own on fd 2.
#
# The program controls everything in this interpreter once it runs. So everything the harness
# needs afterwards is bound to locals here first (a program that patches builtins or modules
# changes nothing the harness looks up), no method of a value the program made is ever called
# (values and exception messages are read through the builtin types' slots), and an audit hook,
# which no program can remove, refuses the ways to reach a frame (where the token lives) and to
# add audit hooks or signal handlers of its own.
import sys, os


def _rlcode_run():
    read, write, hard_exit = os.read, os.write, os._exit
    _type, _exec, _eval, _compile, _issubclass = type, exec, eval, compile, issubclass
    _int, _bool, _float, _complex, _str, _bytes = int, bool, float, complex, str, bytes
    _bytearray, _list, _tuple, _dict, _set, _frozenset = bytearray, list, tuple, dict, set, frozenset
    _BaseException, _SystemExit = BaseException, SystemExit
    _ValueError, _TypeError = ValueError, TypeError
    int_format, float_repr, str_encode = _int.__format__, _float.__repr__, _str.encode
    bytes_hex, bytearray_hex, str_join = _bytes.hex, _bytearray.hex, _str.join
    str_slice, str_replace = _str.__getitem__, _str.replace
    list_copy, tuple_slice, dict_copy, dict_items = _list.copy, _tuple.__getitem__, _dict.copy, _dict.items
    dict_clear, dict_update, dict_get = _dict.clear, _dict.update, _dict.get
    set_copy, frozenset_copy, list_append = _set.copy, _frozenset.copy, _list.append
    complex_real = _complex.__dict__["real"].__get__
    complex_imag = _complex.__dict__["imag"].__get__
    exc_args = _BaseException.__dict__["args"].__get__
    type_name = _type.__dict__["__name__"].__get__
    _len, _slice = len, slice
    # The program's own output is flushed through the stream it had at the start (a C method:
    # the program can replace sys.stdout, not what this calls).
    stdout_flush, stderr_flush = sys.stdout.flush, sys.stderr.flush

    def flush():
        for f in (stdout_flush, stderr_flush):
            try:
                f()
            except _BaseException:
                pass
    _FunctionType = _type(_rlcode_run)
    exit_code = _SystemExit.__dict__["code"].__get__
    _builtins = sys.modules["builtins"]
    pristine_builtins = dict_copy(_builtins.__dict__)
    sys_modules = sys.modules
    everything = slice(None)

    def read_exact(n):
        parts = []
        while n > 0:
            b = read(0, n if n < 1048576 else 1048576)
            if not b:
                break
            list_append(parts, b)
            n -= _len(b)
        return b"".join(parts)

    tok = read_exact(40)[:39]
    head = read_exact(41)
    mode = head[39:40]
    texts = [str(read_exact(int(head[i:i + 12])), "utf-8", "surrogateescape")
             for i in (0, 13, 26)]
    sys.argv = ["main.py"]
    sys.orig_argv = ["python", "main.py"]

    def exact_str(s):
        # A str (or str subclass) as an exact str, without calling any of its methods.
        return str_slice(s, everything) if _issubclass(_type(s), _str) else "?"

    # The value encoder: JSON of tagged builtin values, read through the builtin base type's own
    # accessors, so a subclass's overrides (__eq__, __iter__, __repr__, ...) are never called: a
    # value compares as the builtin content it holds. Anything else is refused by type name.
    LIMIT = 1 << 20

    def encode(v, out, depth):
        # Each level is two JSON arrays deep and the host's JSON parser stops at 128.
        if depth > 60:
            raise _ValueError("the value is nested deeper than 60 levels")
        t = _type(v)
        if v is None:
            list_append(out, "null")
        elif t is _bool:
            list_append(out, "true" if v else "false")
        elif _issubclass(t, _int):
            list_append(out, '["i","' + int_format(v, "x") + '"]')
        elif _issubclass(t, _float):
            list_append(out, '["f","' + float_repr(v) + '"]')
        elif _issubclass(t, _complex):
            list_append(out, '["c","' + float_repr(complex_real(v)) + '","'
                        + float_repr(complex_imag(v)) + '"]')
        elif _issubclass(t, _str):
            list_append(out, '["s","' + bytes_hex(str_encode(v, "utf-8", "surrogatepass")) + '"]')
        elif _issubclass(t, _bytes):
            list_append(out, '["b","' + bytes_hex(v) + '"]')
        elif _issubclass(t, _bytearray):
            list_append(out, '["b","' + bytearray_hex(v) + '"]')
        elif _issubclass(t, (_list, _tuple, _set, _frozenset)):
            if _issubclass(t, _list):
                tag, items = "l", list_copy(v)
            elif _issubclass(t, _tuple):
                tag, items = "t", tuple_slice(v, everything)
            elif _issubclass(t, _set):
                tag, items = "S", set_copy(v)
            else:
                tag, items = "F", frozenset_copy(v)
            list_append(out, '["' + tag + '",[')
            first = True
            for x in items:
                if not first:
                    list_append(out, ",")
                first = False
                encode(x, out, depth + 1)
            list_append(out, "]]")
        elif _issubclass(t, _dict):
            list_append(out, '["d",[')
            first = True
            for k, x in dict_items(dict_copy(v)):
                list_append(out, "[" if first else ",[")
                first = False
                encode(k, out, depth + 1)
                list_append(out, ",")
                encode(x, out, depth + 1)
                list_append(out, "]")
            list_append(out, "]]")
        else:
            raise _TypeError("the value is a " + exact_str(type_name(t))
                             + ", not a builtin value the verifier can compare")
        if _len(out) > LIMIT:
            raise _ValueError("the value's encoding is over 1 MiB")

    def encoded(v):
        out = []
        encode(v, out, 0)
        s = str_join("", out)
        if _len(s) > LIMIT:
            raise _ValueError("the value's encoding is over 1 MiB")
        return s

    def describe(e):
        # "<type> <message>" of an exception without running any of its code: the message is
        # its single str argument, if it has one.
        name = exact_str(type_name(_type(e)))
        try:
            args = exc_args(e)
            msg = exact_str(args[0]) if _len(args) == 1 and _issubclass(_type(args[0]), _str) else ""
        except _BaseException:
            msg = ""
        return name + " " + str_replace(str_slice(msg, _slice(0, 300)), "\n", " ")

    if mode == b"p":
        # The analysis (rlcode_analysis.py): appended to this text on the plain runtime, a
        # bundled module on the pre-initialized one.
        analyse = globals().get("_rlcode_analyse")
        if analyse is None:
            from rlcode_analysis import _rlcode_analyse as analyse
        analyse(texts[2], tok, write, encoded, describe, pristine_builtins)
        hard_exit(0)

    # The token is the only thing that lets a mode-a test pass, so it lives in one place: the
    # closure of the audit hook below, which CPython keeps in a C list no Python code can read
    # (the local is deleted before the program runs). Reports are made by raising the audit
    # event "rlcode.report" from `report`, called by this very frame: the hook writes the
    # token and the text only then. The rest of the harness's state is in this frame, so the
    # hook also refuses every way a program could reach a frame (sys._getframe, a traceback's
    # tb_frame, a generator's or coroutine's frame, trace and profile hooks, sys.monitoring
    # callbacks, the gc module's object lists), new audit hooks (they would see what the
    # harness compiles), and a fresh `_signal` module (signal handlers are called with the
    # interrupted frame): builtin modules are created only through the hook, which refuses
    # `_signal` and CPython's `_test*` modules. It raises ValueError, which the standard
    # library's own frame lookups (logging, namedtuple, warnings) already handle.
    blocked_events = frozenset(("sys._getframe", "sys._current_frames",
                                "sys._current_exceptions", "sys.settrace", "sys.setprofile",
                                "gc.get_objects", "gc.get_referrers", "gc.get_referents",
                                "sys.addaudithook", "sys.monitoring.register_callback"))
    blocked_attrs = frozenset(("tb_frame", "gi_frame", "cr_frame", "ag_frame"))
    import _imp
    from types import SimpleNamespace

    def make_guard(tok, harness_frame, report_code, getframe, create_builtin):
        inside = [False]

        def guard(event, args):
            # Only names bound before the program ran, and exact strings: the program may have
            # patched every builtin by the time this runs.
            event = exact_str(event)
            if inside[0]:
                return
            if event == "rlcode.report":
                inside[0] = True
                try:
                    caller = getframe(1)
                    ok = caller.f_code is report_code and caller.f_back is harness_frame
                finally:
                    inside[0] = False
                if ok:
                    try:
                        write(2, b"\n" + tok + b" "
                              + str_encode(exact_str(args[0]), "utf-8", "replace") + b"\n")
                    finally:
                        hard_exit(0)
                raise _ValueError("not the harness's report")
            if event == "rlcode.create_builtin":
                name = exact_str(args[0])
                if name == "_signal" or str_slice(name, _slice(0, 5)) == "_test":
                    raise _ValueError("the module " + name + " is disabled in the rlcode sandbox")
                list_append(args[1], create_builtin(SimpleNamespace(name=name)))
                return
            if event in blocked_events or (event == "object.__getattr__" and _len(args) > 1
                                           and exact_str(args[1]) in blocked_attrs):
                raise _ValueError("frame introspection is disabled in the rlcode sandbox: "
                                  + event)
        return guard

    def report(text):
        _audit("rlcode.report", exact_str(text))
        hard_exit(0)

    def new_builtin_module(spec):
        box = []
        _audit("rlcode.create_builtin", exact_str(spec.name), box)
        return box[0]

    def refuse(*args, **kwargs):
        raise _ValueError("signal handlers are disabled in the rlcode sandbox")

    _audit = sys.audit
    # `types` reads a traceback's tb_frame while it is imported (to name FrameType), and much of
    # the standard library imports it: import it before the hook is in place.
    import types
    # The existing signal modules lose what installs or raises a handler (signal.py, imported
    # later, takes these stubs from _signal).
    for name in ("signal", "_signal"):
        mod = dict_get(sys_modules, name)
        if mod is not None:
            for attr in ("signal", "set_wakeup_fd", "setitimer", "alarm", "raise_signal",
                         "pthread_kill", "siginterrupt"):
                if hasattr(mod, attr):
                    setattr(mod, attr, refuse)
    sys.addaudithook(make_guard(tok, sys._getframe(0), report.__code__, sys._getframe,
                                _imp.create_builtin))
    _imp.create_builtin = new_builtin_module
    del tok

    stdio = mode == b"s"
    scope = {"__name__": "__main__" if stdio else "solution"}
    phase = "program"
    program = texts[0]
    if program[:1] == "\ufeff":
        program = program[1:]
    if mode == b"a":
        # Mode a runs the test's own code here: give it the modules as they were before the
        # program ran (namespaces restored, modules the program imported dropped).
        saved_modules = dict_copy(sys_modules)
        saved_namespaces = [(m.__dict__, dict_copy(m.__dict__)) for m in saved_modules.values()
                            if _type(m) is types.ModuleType]
    setup, test = texts[1], texts[2]
    texts = None

    def exact_value(v, depth):
        # A copy of a builtin value (or of a builtin subclass's content) in exact builtin
        # types, read through the base types' own accessors; anything else is refused.
        t = _type(v)
        if depth > 200:
            raise _ValueError("nested deeper than 200 levels")
        if v is None or t is _bool:
            return v
        if _issubclass(t, _int):
            return _int.__index__(v) if t is _int else _int(int_format(v, "x"), 16)
        if _issubclass(t, _float):
            return _float.__float__(v) if t is _float else _float(float_repr(v))
        if _issubclass(t, _complex):
            return _complex(complex_real(v), complex_imag(v))
        if _issubclass(t, _str):
            return str_slice(v, everything)
        if _issubclass(t, _bytes):
            return _bytes.__getitem__(v, everything)
        if _issubclass(t, _bytearray):
            return _bytearray(_bytes(v))
        if _issubclass(t, _list):
            return [exact_value(x, depth + 1) for x in list_copy(v)]
        if _issubclass(t, _tuple):
            return _tuple([exact_value(x, depth + 1) for x in tuple_slice(v, everything)])
        if _issubclass(t, _set):
            return _set([exact_value(x, depth + 1) for x in set_copy(v)])
        if _issubclass(t, _frozenset):
            return _frozenset([exact_value(x, depth + 1) for x in frozenset_copy(v)])
        if _issubclass(t, _dict):
            return {exact_value(k, depth + 1): exact_value(x, depth + 1)
                    for k, x in dict_items(dict_copy(v))}
        raise _TypeError("a test compares builtin values only, not a "
                         + exact_str(type_name(t)))

    type_flags = _type.__dict__["__flags__"].__get__
    value_types = (_int, _float, _complex, _str, _bytes, _bytearray, _list, _tuple, _set,
                   _frozenset, _dict)

    def rl_exact(v):
        # Mode a's __rl_exact__. A builtin value (or a subclass's content) becomes an exact copy.
        # An object of any other type CPython defines in C (range, map, dict views, generators,
        # functions, classes, modules) is passed as it is: its behaviour is C code no program
        # can change, and what it yields or returns is checked where the test uses it. Objects
        # of classes defined in Python (the program's) are refused.
        t = _type(v)
        if v is None or t is _bool:
            return v
        if not type_flags(t) & 512 and not _issubclass(t, value_types):  # Py_TPFLAGS_HEAPTYPE
            return v
        return exact_value(v, 0)

    try:
        _exec(_compile(program, "<program>", "exec"), scope)
        program = None
        if not stdio:
            # The test's scope: the program's names (exact str keys only), the builtins as they
            # were before the program ran. The program's functions still see their own scope.
            test_scope = {}
            for k, x in dict_items(dict_copy(scope)):
                if _type(k) is _str:
                    test_scope[k] = x
            test_scope["__builtins__"] = dict_copy(pristine_builtins)
            if mode == b"a":
                dict_clear(sys_modules)
                dict_update(sys_modules, saved_modules)
                for live, saved in saved_namespaces:
                    dict_clear(live)
                    dict_update(live, saved)
                # The test was rewritten (split.rs, mode p) so that every value it compares,
                # computes with or tests goes through this first.
                test_scope["__rl_exact__"] = rl_exact
            phase = "setup"
            if setup:
                _exec(_compile(setup, "<setup>", "exec"), test_scope)
            phase = "test"
            if mode == b"v":
                imports, _, expression = test.partition("\0")
                if imports:
                    _exec(_compile(imports, "<test>", "exec"), test_scope)
                value = _eval(_compile(expression, "<test>", "eval"), test_scope)
                phase = "value"
                value = encoded(value)
                flush()
                report("VALUE " + value)
            _exec(_compile(test, "<test>", "exec"), test_scope)
    except _SystemExit as e:
        code = exit_code(e)
        if not (stdio and (code is None or (_type(code) is _int and code == 0))):
            flush()
            report("EXIT " + phase + " " + (
                "None" if code is None else int_format(code, "d")
                if _issubclass(_type(code), _int) else exact_str(type_name(_type(code)))))
    except _BaseException as e:
        flush()
        report("EXC " + phase + " " + describe(e))
    flush()
    report("OK")


if __name__ == "__main__":
    _rlcode_run()
