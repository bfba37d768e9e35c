"""benchmarks/gemv_chain.py and .c: the decode step's GEMVs replayed from a model file. What is
checked: the program builds warning-free against the installed C API, replays exactly the weight
bytes the runner reads per token (less the embedding row and norm weights the runner also counts),
and refuses a bad matrix list with a message instead of reading out of bounds. No timing is
asserted."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fastcpu.gguf import GGUFFile
from fastcpu.model import Model

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import gemv_chain  # noqa: E402
from test_capi import CC  # noqa: E402

pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc/gcc/clang) on PATH")


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
    return gemv_chain.build(str(tmp_path_factory.mktemp("chain")), cc=CC, flags=("-O1", "-Wall", "-Werror"))


def run(exe, model, spec, steps=2):
    return subprocess.run([exe, model, "1", str(steps)], input=spec, capture_output=True, text=True, timeout=300)


def test_chain_reads_the_runners_bytes(exe, model_path):
    lines, n_layers = gemv_chain.matrices(model_path)
    g = GGUFFile(model_path)
    assert n_layers == sum(1 for n in g.tensors if n.endswith(".attn_q.weight"))
    # the runner also counts the embedding row it reads and the norm weights
    others = g.tensors["token_embd.weight"].row_bytes + sum(
        t.nbytes for n, t in g.tensors.items() if n.endswith((".attn_norm.weight", ".ffn_norm.weight")))
    g.close()
    assert len(lines) == 4 * n_layers + 1  # fused q/k/v, o, fused gate/up, down; the head
    r = run(exe, model_path, "\n".join(lines) + "\n")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["matrices"] == len(lines) and d["steps"] == 2
    m = Model(model_path, threads=1, ctx=64)
    assert d["bytes_per_step"] == m.engine.weight_bytes - others
    assert d["step_ms_median"] > 0 and d["chain_roofline_pct"] > 0


def test_chain_refuses_bad_lists(exe, model_path):
    size = os.path.getsize(model_path)
    first = gemv_chain.matrices(model_path)[0][0].split()
    qtype, cols, off, rows = first[0], first[1], first[3], first[4]
    cases = {
        f"{qtype} {cols} 1 {size - 10} {rows}\n": "outside the file",
        f"{qtype} {cols} 1 -5 {rows}\n": "outside the file",
        f"{qtype} {cols} 0\n": "bad segment count",
        f"{qtype} {cols} 2 {off} {rows}\n": "short matrix line",
        f"16 {cols} 1 {off} 1\n": "no kernel for type 16",  # IQ2_XXS: GGUF readers parse it, no kernel here
        f"999 {cols} 1 {off} 1\n": "no kernel for type 999",
        "": "no matrices",
    }
    for spec, msg in cases.items():
        r = run(exe, model_path, spec, steps=1)
        assert r.returncode != 0 and msg in r.stderr, (spec, r.returncode, r.stderr)
