# rlcode's pre-initialized sandbox: the entry module of the WASI preview-2 component that
# scripts/setup.sh builds with componentize-py (CPython 3.14). Runs inside the sandbox, never on
# the host.
#
# At build time this module's top level runs once and the interpreter's whole state is
# snapshotted: CPython's start-up and the imports below are paid for then, not per test. Only
# modules imported here (and what they import) are bundled: a program importing anything else
# gets ModuleNotFoundError, which rl-verify reports as an `error` verdict.
#
# At run time the host calls `wasi:cli/run`, and Run.run below executes one test with the same
# stdin/stderr protocol as harness.py (it is that file's code), so the host classifies both
# runtimes' runs alike. Before the test, `random` is reseeded from the sandbox's random source,
# which the host derives from the test's seed (problem id, code, test index): the same material
# that seeds the plain runtime, so every test's randomness is reproducible. The str/bytes hash
# secret cannot be reseeded: it is the one frozen in the snapshot, fixed for a given build (and
# so for a given runtime id in verdicts).

# Bundled standard-library modules, by purpose (keep docs/formats.md in step).
# Text and data formats.
import string, re, textwrap, unicodedata, difflib, json, csv, base64, binascii, struct, codecs
import html, html.parser, pprint, reprlib, keyword, tokenize, token, shlex, fnmatch, locale
# Numbers.
import math, cmath, decimal, fractions, numbers, random, statistics
# Data structures and functional tools.
import collections, collections.abc, heapq, bisect, array, queue, copy, copyreg, enum
import graphlib, weakref, dataclasses, types, typing, abc, operator, functools, itertools
import contextlib
# Time, hashing, identifiers, compression.
import time, datetime, calendar, hashlib, hmac, secrets, uuid, zlib
# Language services and the rest of what programs commonly import.
import sys, os, io, errno, gc, atexit, warnings, traceback, inspect, ast, dis, pickle, timeit
import argparse, ipaddress, threading, unittest, doctest, pathlib, xml.etree.ElementTree
import urllib.parse, string.templatelib, annotationlib
# The harness's analysis of tests (ast.unparse) imports it lazily.
import _ast_unparse

import harness, rlcode_analysis
from wit_world import exports

# Everything allocated so far lives in the snapshot: move it out of the garbage collector's
# generations so that a collection during a test never walks (and so never faults in and dirties)
# the snapshot's pages. Objects a test creates are collected as usual.
gc.collect()
gc.freeze()


class Run(exports.Run):
    def run(self) -> None:
        random.seed(int.from_bytes(os.urandom(32), "little"))
        harness._rlcode_run()
