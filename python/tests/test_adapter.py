"""Tests of rlcode_reward. The parsing tests run anywhere; the others need a live server
(``RLCODE_TEST_LIVE=1`` and ``RLCODE_SERVE_URLS``; tests/tests/serve.rs starts one and runs
these)."""

import json
import math
import os
import unittest

import rlcode_reward as rr

LIVE = os.environ.get("RLCODE_TEST_LIVE") == "1"

ADD_TESTS = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 0) == -1"]
CORRECT = "def add(a, b):\n    return a + b\n"


class Parsing(unittest.TestCase):
    def test_the_last_python_block_is_the_program(self):
        text = "Try:\n```\nx = 1\n```\nthen\n```python\ndef f():\n    return 2\n```\nDone."
        self.assertEqual(rr.extract_code(text), "def f():\n    return 2\n")
        self.assertEqual(rr.extract_code("```\nprint(1)\n```"), "print(1)\n")
        self.assertEqual(rr.extract_code("print(3)"), "print(3)")

    def test_ground_truth_shapes(self):
        stdio = rr.problem_from_ground_truth(json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]}))
        self.assertEqual(stdio["tests"], [{"stdin": "1 2\n", "stdout": "3\n"}])
        self.assertTrue(stdio["id"].startswith("gt/"))
        call = rr.problem_from_ground_truth({"fn_name": "add", "inputs": [[1, 2], [None, True]],
                                             "outputs": [[3], {"a": 1.5}]})
        self.assertEqual(call["tests"][0]["assert"], "assert add(1, 2) == 3")
        self.assertEqual(call["tests"][1]["assert"], 'assert add(None, True) == {"a": 1.5}')
        asserts = rr.problem_from_ground_truth(ADD_TESTS, {"setup": "import math"})
        self.assertEqual(len(asserts["tests"]), 3)
        self.assertEqual(asserts["setup"], "import math")
        record = rr.problem_from_ground_truth({"id": "p", "tests": [{"assert": "assert 1"}]})
        self.assertEqual(record["id"], "p")
        with self.assertRaises(ValueError):
            rr.problem_from_ground_truth({"inputs": [1], "outputs": []})

    def test_an_unreachable_server_raises_not_scores(self):
        c = rr.Client(["http://127.0.0.1:9"], retries=1, backoff=0.01, timeout=2)
        with self.assertRaises(rr.RewardUnavailable):
            rr.compute_score("x", CORRECT, ADD_TESTS, client=c)


@unittest.skipUnless(LIVE, "needs a live rl-verify serve (tests/tests/serve.rs)")
class Live(unittest.TestCase):
    def test_verl_compute_score(self):
        completion = "Here it is:\n```python\n" + CORRECT + "```"
        self.assertEqual(rr.compute_score("rlcode", completion, ADD_TESTS), 1.0)
        wrong = "```python\ndef add(a, b):\n    return a + b if a > 0 else 99\n```"
        self.assertEqual(rr.compute_score("rlcode", wrong, ADD_TESTS), 0.0)
        partial = rr.compute_score("rlcode", wrong, ADD_TESTS, reward="pass_rate")
        self.assertAlmostEqual(partial, 2 / 3)
        gt = {"inputs": ["2 3\n", "1 1\n"], "outputs": ["5\n", "2\n"]}
        stdio = "a, b = map(int, input().split())\nprint(a + b)\n"
        self.assertEqual(rr.compute_score("codecontests", stdio, json.dumps(gt)), 1.0)

    def test_a_server_error_is_not_a_failed_program(self):
        with self.assertRaises(rr.BadRequest):
            rr.compute_score("rlcode", CORRECT, ADD_TESTS, reward="no_such_design")

    def test_trl_reward_scores_groups(self):
        f = rr.make_trl_reward("pass_rate")
        self.assertEqual(f.__name__, "rlcode_pass_rate")
        half = "def add(a, b):\n    return a + b if a > 0 else 99\n"
        completions = [
            [{"role": "assistant", "content": "```python\n" + CORRECT + "```"}],
            [{"role": "assistant", "content": half}],
            [{"role": "assistant", "content": "print(1)"}],
        ]
        scores = f(completions, ground_truth=[ADD_TESTS] * 3, prompt=["p"] * 3)
        self.assertEqual(scores[0], 1.0)
        self.assertAlmostEqual(scores[1], 2 / 3)
        self.assertEqual(scores[2], 0.0)
        # Two problems in one batch: grouped per problem, rewards back in batch order.
        other = [{"assert": "assert 1 + 1 == 2"}]
        g = rr.make_trl_reward("binary")
        self.assertEqual(g(["x = 1", CORRECT], ground_truth=[{"tests": other}, ADD_TESTS]),
                         [1.0, 1.0])

    def test_run_code_is_sandbox_fusion(self):
        r = rr.Client().run_code("print(input()[::-1])", "abc\n")
        self.assertEqual(r["status"], "Success")
        self.assertEqual(r["run_result"]["stdout"], "cba\n")

    def test_infra_is_none_or_nan(self):
        self.assertIsNone(rr._infra(None))
        self.assertTrue(math.isnan(rr._infra("nan")))
        with self.assertRaises(rr.RewardUnavailable):
            rr._infra("raise")


if __name__ == "__main__":
    unittest.main()
