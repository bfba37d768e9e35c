"""Run-time dispatch: the level picked matches what the CPU reports, FASTCPU_ISA overrides are honoured
or refused with the missing feature named, and `fastcpu info` reports it all."""
import json
import os
import subprocess
import sys

import pytest

import fastcpu
from fastcpu import kernels
from childproc import CHILD_CWD, child_env



def _cpuinfo_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


FLAGS = _cpuinfo_flags()
needs_cpuinfo = pytest.mark.skipif(FLAGS is None, reason="no /proc/cpuinfo flags line")

# cpuinfo flags each level needs, on top of the level below it (the kernel lists a flag only when
# the OS also enables the state it needs, so these match cpuid + xgetbv)
LEVEL_FLAGS = [
    ("avx2", {"avx", "avx2", "fma", "f16c"}),
    ("avx512", {"avx512f", "avx512bw", "avx512vl", "avx512dq"}),
    ("avx512_vnni", {"avx512_vnni"}),
    ("avx512_bf16", {"avx512_bf16"}),
    ("amx", {"amx_tile", "amx_int8", "amx_bf16"}),
]


def _expected_best(flags):
    best = "scalar"
    for level, need in LEVEL_FLAGS:
        if not need <= flags:
            break
        best = level
    return best


def _run(code, isa_env=None, args=None):
    env = dict(os.environ)
    env.pop("FASTCPU_ISA", None)
    if isa_env is not None:
        env["FASTCPU_ISA"] = isa_env
    env = child_env(env)
    cmd = [sys.executable] + (args if args is not None else ["-c", code])
    return subprocess.run(cmd, env=env, cwd=CHILD_CWD, capture_output=True, text=True, timeout=120)


@needs_cpuinfo
def test_best_level_matches_cpuinfo():
    want = _expected_best(FLAGS)
    if want == "amx" and kernels.isa_missing("amx") is not None:
        # the flags are there but Linux refused tile data (arch_prctl); the level below is the best
        assert "permission" in kernels.isa_missing("amx").lower()
        want = "avx512_bf16"
    assert kernels.best_isa() == want, f"cpuinfo flags imply {want}, dispatch picked {kernels.best_isa()}"


@needs_cpuinfo
def test_features_match_cpuinfo():
    feats = fastcpu.cpu_info()
    for name in ["avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq",
                 "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]:
        # cpuinfo hides AVX-512 when the OS does not save its state; cpuid still reports it
        if name.startswith("avx512") and not feats["os_avx512"]:
            continue
        assert feats[name] == (name in FLAGS), f"{name}: cpuid says {feats[name]}, cpuinfo disagrees"


def test_default_level_is_best():
    r = _run("from fastcpu import kernels; print(kernels.isa(), kernels.best_isa())")
    assert r.returncode == 0, r.stderr
    cur, best = r.stdout.split()
    assert cur == best == kernels.best_isa()


@pytest.mark.parametrize("level", kernels.available_isas())
def test_env_override_honoured(level):
    r = _run("from fastcpu import kernels, _core; import json; "
             "print(json.dumps([kernels.isa(), kernels.kernel_isa_for('F32'), "
             "_core.isa_name(_core.isa_current())]))", isa_env=level)
    assert r.returncode == 0, r.stderr
    cur, f32_level, c_level = json.loads(r.stdout)
    assert cur == level and c_level == level
    # a level only serves kernels of itself or the levels it inherits from
    order = list(reversed(kernels.ISA_LEVELS))
    if level != "amx_sim":
        assert order.index(f32_level) <= order.index(level)


def test_env_override_case_and_spaces():
    r = _run("from fastcpu import kernels; print(kernels.isa())", isa_env=" Scalar ")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "scalar"


@pytest.mark.parametrize("level", [lv for lv in kernels.ALL_ISAS if kernels.isa_missing(lv) is not None]
                         or [pytest.param("none", marks=pytest.mark.skip("this CPU runs every level"))])
def test_env_override_unsupported_refused(level):
    missing = kernels.isa_missing(level)
    r = _run("import fastcpu", isa_env=level)
    assert r.returncode != 0, f"FASTCPU_ISA={level} was accepted on a CPU lacking {missing}"
    assert "ISAError" in r.stderr
    assert level in r.stderr and missing in r.stderr, r.stderr[-2000:]


def test_env_override_unknown_refused():
    r = _run("import fastcpu", isa_env="avx9000")
    assert r.returncode != 0
    assert "ValueError" in r.stderr and "unknown ISA level 'avx9000'" in r.stderr
    assert "avx2" in r.stderr  # lists the known ones


def test_set_isa_in_process():
    for level in kernels.ALL_ISAS:
        missing = kernels.isa_missing(level)
        if missing is None:
            with kernels.use_isa(level):
                assert kernels.isa() == level
        else:
            with pytest.raises(kernels.ISAError, match=missing.split(" (")[0]):
                kernels.set_isa(level)
    with pytest.raises(ValueError, match="unknown ISA level"):
        kernels.set_isa("sse9")
    with pytest.raises(TypeError):
        kernels.set_isa(2)


def test_cli_info_json():
    r = _run(None, args=["-m", "fastcpu.cli", "info"])
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    here = fastcpu.cpu_info()
    for key in ["avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile",
                "physical_cores", "best_isa", "available_isas"]:
        assert info[key] == here[key], key
    assert info["isa"] == kernels.best_isa()  # the child runs without FASTCPU_ISA
    assert set(info["unavailable_isas"]) == set(kernels.ALL_ISAS) - set(info["available_isas"])
    assert all(isinstance(v, str) and v for v in info["unavailable_isas"].values())


def test_available_isas_sane():
    avail = kernels.available_isas()
    assert avail[0] == kernels.best_isa()
    assert "scalar" in avail and avail[-1] == "amx_sim"
    assert set(avail) <= set(kernels.ALL_ISAS)
    # best first, and every level below an available one is available too
    levels = [lv for lv in avail if lv != "amx_sim"]
    chain = list(kernels.ISA_LEVELS)
    assert levels == chain[chain.index(levels[0]):]
    for lv in kernels.ALL_ISAS:
        assert (lv in avail) == (kernels.isa_missing(lv) is None)
    assert kernels.default_threads() >= 1
