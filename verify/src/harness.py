# rlcode's test harness: runs inside the sandbox as `python -c`, never on the host. The
# pre-initialized runtime's entry module (verify/guest/app.py) imports it and calls _rlcode_run.
# The host feeds, on stdin, a per-run random token, a header line
# "<program bytes> <setup bytes> <test bytes> <assert|stdio>", the three texts and then the
# program's own stdin. The harness reports on fd 2 with a line starting with the token. The token
# is read before the program runs and is never part of any source text or argv, so the program
# cannot print it, and "OK" is written only after the test code ran to completion: exiting early
# (sys.exit, os._exit, exit handlers) cannot pass. (The token stays as bytes, never hashed, so the
# interpreter's work, and so the fuel count, does not depend on its value.)
import sys, os
def _rlcode_run():
    write, hard_exit, out = os.write, os._exit, sys.stdout
    src = sys.stdin.buffer
    tok = src.readline().rstrip(b"\n")
    head = src.readline().split()
    mode = head[3]
    texts = [src.read(int(n)).decode("utf-8") for n in head[:3]]
    sys.argv = ["main.py"]
    sys.orig_argv = ["python", "main.py"]
    def report(text):
        try:
            write(2, b"\n" + tok + b" " + text.encode("utf-8", "replace") + b"\n")
        finally:
            hard_exit(0)
    # The token lives in this frame and in report's closure: a program that reached either could
    # print "<token> OK" and exit, forging a pass. Frames and the objects that hold them are
    # reachable only through a few audited operations (sys._getframe, a traceback's tb_frame, a
    # generator's or coroutine's frame, trace and profile hooks, the gc module's object lists),
    # so an audit hook, which no program can remove, refuses them for the rest of the run. It
    # raises ValueError, which the standard library's own frame lookups (logging, namedtuple,
    # warnings) already handle. Everything it uses is local to this function.
    blocked_events = frozenset(("sys._getframe", "sys._current_frames", "sys.settrace",
                                "sys.setprofile", "gc.get_objects", "gc.get_referrers",
                                "gc.get_referents"))
    blocked_attrs = frozenset(("tb_frame", "gi_frame", "cr_frame", "ag_frame"))
    def guard(event, args):
        if event in blocked_events or (event == "object.__getattr__" and len(args) > 1
                                       and args[1] in blocked_attrs):
            raise ValueError("frame introspection is disabled in the rlcode sandbox: " + event)
    # `types` reads a traceback's tb_frame while it is imported (to name FrameType), and much of
    # the standard library imports it: import it before the hook is in place.
    import types
    sys.addaudithook(guard)
    scope = {"__name__": "__main__" if mode == b"stdio" else "solution"}
    phase = "program"
    try:
        exec(compile(texts[0], "<program>", "exec"), scope)
        if mode == b"assert":
            phase = "setup"
            if texts[1]:
                exec(compile(texts[1], "<setup>", "exec"), scope)
            phase = "test"
            exec(compile(texts[2], "<test>", "exec"), scope)
    except SystemExit as e:
        if not (mode == b"stdio" and e.code in (None, 0)):
            report("EXIT " + phase + " " + repr(e.code)[:80])
    except BaseException as e:
        try:
            msg = str(e)
        except BaseException:
            msg = "?"
        report("EXC " + phase + " " + type(e).__name__ + " " + msg[:300].replace("\n", " "))
    try:
        out.flush()
    except BaseException:
        pass
    report("OK")
if __name__ == "__main__":
    _rlcode_run()
