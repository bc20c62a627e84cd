import math as _rl_math


def _rl_same(got, want):
    """got equals the JSON-like expected value want: tuples count as lists, numbers are
    compared with a relative tolerance of 1e-6 (absolute 1e-9), bools and None exactly."""
    if want is None or isinstance(want, bool):
        return got is want
    if isinstance(want, (int, float)):
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return False
        if isinstance(want, int) and isinstance(got, int):
            return got == want
        try:
            return _rl_math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9)
        except OverflowError:
            return False
    if isinstance(want, str):
        return isinstance(got, str) and got == want
    if isinstance(want, list):
        return (isinstance(got, (list, tuple)) and len(got) == len(want)
                and all(_rl_same(g, w) for g, w in zip(got, want)))
    if isinstance(want, dict):
        return (isinstance(got, dict) and set(got) == set(want)
                and all(_rl_same(got[k], want[k]) for k in want))
    return False
