"""The AVX512_BF16 float kernel's own code, run where the CPU lacks AVX512_BF16 (vdpbf16ps modelled in
AVX-512F; see tests/c/bf16_emu.c). Where the CPU has it, test_gemm runs the real thing as well."""
import os
import shutil
import subprocess

import pytest

from fastcpu import kernels

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(os.path.dirname(HERE), "csrc")
CC = next((shutil.which(c) for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c and shutil.which(c)), None)


@pytest.mark.skipif(CC is None, reason="no C compiler")
@pytest.mark.skipif(not os.path.isdir(CSRC), reason="needs the source tree (csrc/)")
@pytest.mark.skipif(kernels.isa_missing("avx512") is not None, reason="the model needs AVX-512F/BW")
def test_avx512bf16_kernel_on_model(tmp_path):
    exe = tmp_path / "bf16_emu"
    cmd = [CC, "-std=gnu11", "-O2", "-Wall", "-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw",
           "-mavx512vl", "-mavx512dq", "-I", CSRC, "-I", os.path.join(CSRC, "include"),
           os.path.join(HERE, "c", "bf16_emu.c"), "-o", str(exe), "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 and "bf16" in r.stderr.lower() and "unknown type" in r.stderr.lower():
        pytest.skip(f"this compiler has no __m512bh type: {r.stderr.splitlines()[0]}")
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bad=0" in r.stdout
