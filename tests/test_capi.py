"""The C ABI as a C program sees it: tests/c/test_capi.c, compiled against fastcpu.get_include() and
linked with libfastcpu.so from fastcpu.get_library_dir(), runs one GEMV whose result is checked here."""
import os
import shutil
import subprocess
import sysconfig

import numpy as np
import pytest

import fastcpu
from fastcpu import kernels
from kernel_ref import activations, dequantize, random_weights
from tolerances import gemm_bound

SRC = os.path.join(os.path.dirname(__file__), "c", "test_capi.c")


def _compiler():
    for cand in (os.environ.get("CC"), "cc", "gcc", "clang", (sysconfig.get_config_var("CC") or "").split(" ")[0]):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


CC = _compiler()
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc/gcc/clang) on PATH")


def test_paths():
    inc, lib = fastcpu.get_include(), fastcpu.get_library_dir()
    assert os.path.isfile(os.path.join(inc, "fastcpu", "fastcpu.h"))
    assert os.path.isfile(os.path.join(lib, "libfastcpu.so"))


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
    out = tmp_path_factory.mktemp("capi") / "test_capi"
    lib = fastcpu.get_library_dir()
    cmd = [CC, "-std=c11", "-O1", "-Wall", "-Werror", "-I", fastcpu.get_include(), SRC, "-o", str(out),
           "-L", lib, "-lfastcpu", f"-Wl,-rpath,{lib}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    return out


@pytest.mark.parametrize("qtype", ["F32", "Q8_0"])
def test_capi_gemv(exe, tmp_path, qtype):
    rows, cols = 37, 160
    rng = np.random.default_rng(9)
    w = random_weights(qtype, rows, cols, rng)
    x = activations(1, cols, rng)
    path = tmp_path / "input.bin"
    path.write_bytes(w.tobytes() + x.tobytes())
    env = dict(os.environ)
    env.pop("FASTCPU_ISA", None)
    r = subprocess.run([str(exe), str(kernels.qtype_id(qtype)), str(rows), str(cols), str(path)],
                       capture_output=True, text=True, env=env, timeout=60)
    if r.returncode == 77:
        pytest.skip(f"no {qtype} kernel in this build yet")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert lines[0] == kernels.best_isa()
    drawn = [int(lines[1]), int(lines[2])]
    y = np.array([float(v) for v in lines[3:]])
    assert y.shape == (rows,)
    Wd = dequantize(qtype, w).astype(np.float64)
    ref = x.astype(np.float64) @ Wd.T
    assert (np.abs(y - ref) <= gemm_bound(qtype, Wd, x)).all()
    # the same library call from Python gives the same bits (%.9g round-trips float32)
    with kernels.use_isa(kernels.best_isa()):  # the level the C program ran at
        np.testing.assert_array_equal(y.astype(np.float32)[None, :], kernels.gemm(w, qtype, x))
    # fc_sample from C: the tokens the NumPy specification draws from the same logits
    from fastcpu.sampler import SamplerParams, sample_ref

    class U:
        def random(self):
            return 0.5

    logits = y.astype(np.float32)
    assert drawn[0] == sample_ref(logits, None, SamplerParams(temperature=0.0))
    p = SamplerParams(temperature=0.8, top_k=5, top_p=0.9, min_p=0.0, repeat_penalty=1.3).validate()
    assert drawn[1] == sample_ref(logits, U(), p, history=[0, 1, 2])
