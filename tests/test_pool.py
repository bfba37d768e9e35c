"""The thread pool's workers: pinned one per CPU of the allowed set (one physical core at a time,
the first CPU left to the calling thread), unpinned beyond it or with FASTCPU_PIN=0."""
import json
import os
import subprocess
import sys

import pytest

from childproc import CHILD_CWD, child_env

_CHILD = r"""
import json, os, sys
allowed = json.loads(sys.argv[1])
if allowed:
    os.sched_setaffinity(0, allowed)
import numpy as np
from fastcpu import kernels
w = np.zeros((4096, kernels.row_bytes("F32", 32)), np.uint8)  # enough row chunks for every thread
kernels.gemv(w, "F32", np.ones(32, np.float32), threads=int(sys.argv[2]))
workers = {}
for tid in os.listdir("/proc/self/task"):
    name = open(f"/proc/self/task/{tid}/comm").read().strip()
    if name.startswith("fastcpu-w"):
        workers[name] = sorted(os.sched_getaffinity(int(tid)))
print(json.dumps({"workers": workers, "process": sorted(os.sched_getaffinity(0))}))
"""


def _run(allowed, threads, **env):
    r = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(allowed), str(threads)], capture_output=True,
                       text=True, cwd=CHILD_CWD, env=child_env(**env), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _first_per_core(cpus):
    """The pool's order: each physical core's first allowed CPU, then the others."""
    def key(c):
        def rd(what, d):
            try:
                return int(open(f"/sys/devices/system/cpu/cpu{c}/topology/{what}").read())
            except (OSError, ValueError):
                return d
        return rd("physical_package_id", 0), rd("core_id", c)
    seen, first, rest = set(), [], []
    for c in cpus:
        (rest if key(c) in seen else first).append(c)
        seen.add(key(c))
    return first + rest


CPUS = sorted(os.sched_getaffinity(0))


@pytest.mark.skipif(len(CPUS) < 2, reason="needs two allowed CPUs")
def test_workers_pinned_one_cpu_each():
    order = _first_per_core(CPUS)
    got = _run([], 2)
    assert got["workers"] == {"fastcpu-w1": [order[1]]}


@pytest.mark.skipif(len(CPUS) < 2, reason="needs two allowed CPUs")
def test_pin_off():
    got = _run([], 2, FASTCPU_PIN="0")
    assert got["workers"] == {"fastcpu-w1": got["process"]}


def test_more_threads_than_cpus_stay_unpinned():
    """With one allowed CPU a second thread has nowhere of its own: it stays unpinned, i.e. it may
    run on the process's (single) CPU."""
    got = _run([CPUS[0]], 3)
    assert got["process"] == [CPUS[0]]
    assert got["workers"] == {"fastcpu-w1": [CPUS[0]], "fastcpu-w2": [CPUS[0]]}
