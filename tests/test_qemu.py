"""Run-time dispatch on CPUs this machine is not: under qemu-user, an emulated Haswell must get the avx2
level and an emulated Nehalem the scalar one, with correct GEMV results for every format and no
illegal instruction anywhere (import, CPU detection, table set-up, kernels).

One emulated process per CPU model (qemu is slow); it loads inputs made here, runs the kernels and
writes the outputs back, which are checked here against the gguf reference."""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from childproc import CHILD_CWD, child_env

import fastcpu
from kernel_ref import BLOCK, activations, cols_for, dequantize, random_weights
from tolerances import gemm_bound

QEMU = shutil.which("qemu-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 not installed (Debian: qemu-user)")

FORMATS = list(BLOCK)
CPU_MODELS = {"Haswell": "avx2", "Nehalem": "scalar"}

CHILD = r"""
import json, sys
import numpy as np
import fastcpu
from fastcpu import kernels
inp = np.load(sys.argv[1])
out = {}
report = {"isa": kernels.isa(), "best": kernels.best_isa(), "available": kernels.available_isas(),
          "kernel_isa": {}}
for q in json.loads(sys.argv[3]):
    if not kernels.qtype_supported(q):
        continue
    report["kernel_isa"][q] = kernels.kernel_isa_for(q)
    out["y_" + q] = kernels.gemv(inp["w_" + q], q, inp["x_" + q], threads=2)
    out["Y_" + q] = kernels.gemm(inp["w_" + q], q, inp["X_" + q], threads=2)
np.savez(sys.argv[2], **out)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    rng = np.random.default_rng(2024)
    data = {}
    for q in FORMATS:
        cols = cols_for(q)[1]
        data["w_" + q] = random_weights(q, 19, cols, rng)
        data["x_" + q] = activations(1, cols, rng)[0]
        data["X_" + q] = activations(3, cols, rng)
    path = tmp_path_factory.mktemp("qemu") / "inputs.npz"
    np.savez(path, **data)
    return path, data


@pytest.fixture(scope="module", params=list(CPU_MODELS))
def emulated(request, inputs, tmp_path_factory):
    cpu = request.param
    path, data = inputs
    out = tmp_path_factory.mktemp("qemu_" + cpu) / "out.npz"
    env = dict(os.environ)
    env.pop("FASTCPU_ISA", None)
    env = child_env(env)
    env["QEMU_CPU"] = cpu
    r = subprocess.run([QEMU, "-cpu", cpu, sys.executable, "-c", CHILD, str(path), str(out),
                        json.dumps(FORMATS)], env=env, cwd=CHILD_CWD, capture_output=True, text=True, timeout=600)
    if r.returncode < 0 or r.returncode == 128 + signal.SIGILL:
        sig = -r.returncode if r.returncode < 0 else signal.SIGILL
        pytest.fail(f"-cpu {cpu}: killed by {signal.Signals(sig).name}\n{r.stderr[-3000:]}")
    assert r.returncode == 0, f"-cpu {cpu}: exit {r.returncode}\n{r.stderr[-3000:]}"
    report = json.loads(r.stdout.strip().splitlines()[-1])
    return cpu, report, dict(np.load(out)), data


def test_level_picked(emulated):
    cpu, report, _, _ = emulated
    assert report["isa"] == report["best"] == CPU_MODELS[cpu], report
    assert report["available"][0] == CPU_MODELS[cpu]
    assert not any(lv.startswith("avx512") or lv == "amx" for lv in report["available"])


@pytest.mark.parametrize("qtype", FORMATS)
def test_gemv_every_format(emulated, qtype):
    cpu, report, out, data = emulated
    if qtype not in report["kernel_isa"]:
        pytest.skip(f"no {qtype} kernel yet")
    order = ["scalar", "avx2"]
    assert report["kernel_isa"][qtype] in order[:order.index(CPU_MODELS[cpu]) + 1]
    w = data["w_" + qtype]
    Wd = dequantize(qtype, w).astype(np.float64)
    for X, Y in ((data["x_" + qtype][None, :], out["y_" + qtype][None, :]),
                 (data["X_" + qtype], out["Y_" + qtype])):
        ref = X.astype(np.float64) @ Wd.T
        bound = gemm_bound(qtype, Wd, X)
        err = np.abs(Y.astype(np.float64) - ref)
        assert (err <= bound).all(), f"{qtype} under -cpu {cpu}: max err/bound {(err / bound).max():.3g}"
