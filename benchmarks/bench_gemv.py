"""GEMV / GEMM speed per weight format per ISA level, as weight bytes streamed per second next to the
machine's read bandwidth (fastcpu.kernels.membw(), measured in the same run).

GEMV (one token) should be memory-bound: its ratio to membw is the figure of merit (goal >= 0.9).
GEMM (n=16 rows, a prompt chunk) reuses each weight load across rows, so its weight GB/s may exceed
membw once the kernel is compute-efficient.

Two ways to run (see benchmarks/README.md):
    pytest benchmarks --benchmark-only            # pytest-benchmark table (make bench)
    python benchmarks/bench_gemv.py [--json] [--threads 2] [--mb 256]
Weights are random valid GGUF blocks (tests/kernel_ref.py makes a block of rows, tiled to size).
Formats without a kernel at a level are skipped.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from fastcpu import _core, kernels  # noqa: E402
from kernel_ref import BLOCK, random_weights  # noqa: E402

FORMATS = list(BLOCK)
COLS = 4096          # a whole number of blocks for every format (256 | 4096)
GEMM_N = 16
DEFAULT_MB = int(os.environ.get("FASTCPU_BENCH_MB", "256"))
DEFAULT_THREADS = int(os.environ.get("FASTCPU_BENCH_THREADS", "2"))
# amx_sim is a software model of the tiles (a correctness tool), not a speed target
BENCH_ISAS = [i for i in kernels.available_isas() if i != "amx_sim"]


@functools.lru_cache(maxsize=1)  # one format's weights in memory at a time
def weights(qtype: str, mb: int) -> np.ndarray:
    """uint8 (rows, row_bytes) of valid blocks, >= mb MiB: 256 random rows tiled."""
    rb = kernels.row_bytes(qtype, COLS)
    rows = -(-(mb << 20) // rb)
    rows = -(-rows // 256) * 256
    base = random_weights(qtype, 256, COLS, np.random.default_rng(1))
    return np.tile(base, (rows // 256, 1))


def prepared(qtype: str, w: np.ndarray):
    """The weight as the model holds it (repacked for the level in use when its kernel wants)."""
    return _core.PreparedWeight(kernels.qtype_id(qtype), w, w.shape[0], COLS)


def measure(isa: str, qtype: str, n: int, mb: int, threads: int, reps: int) -> dict | None:
    """Timed calls paired with membw passes: each call right after a read pass of the yardstick, so
    that on a shared host, whose bandwidth on offer drifts by 2x within a minute, every ratio
    compares like with like. Reported: medians of the calls, of the passes, and of the per-pair
    ratios (the figure of merit)."""
    with kernels.use_isa(isa):
        if not kernels.qtype_supported(qtype):
            return None
        w = weights(qtype, mb)
        pw = prepared(qtype, w)
        x = np.random.default_rng(2).standard_normal((n, COLS)).astype(np.float32)
        y = np.empty((n, w.shape[0]), np.float32)
        pw.gemm(x, y, threads)  # warm: page faults, thread pool start
        ts, bws = [], []
        for _ in range(reps):
            bws.append(kernels.membw(256 << 20, threads=threads, passes=1))
            t0 = time.perf_counter()
            pw.gemm(x, y, threads)
            ts.append(time.perf_counter() - t0)
        gbs = [w.nbytes / t / 1e9 for t in ts]
        return {"isa": isa, "kernel_isa": kernels.kernel_isa_for(qtype), "qtype": qtype, "n": n,
                "rows": w.shape[0], "cols": COLS, "weight_bytes": int(w.nbytes),
                "layout": pw.layout, "seconds": statistics.median(ts),
                "weight_gbs": statistics.median(gbs), "membw_gbs": statistics.median(bws),
                "ratio": statistics.median(g / b for g, b in zip(gbs, bws))}


def run(mb: int, threads: int, reps: int, isas, formats, ns) -> dict:
    bw = kernels.membw(max(mb, 256) << 20, threads=threads, passes=7)
    results = []
    for qtype in formats:
        for isa in isas:
            for n in ns:
                r = measure(isa, qtype, n, mb, threads, reps)
                if r is not None:
                    results.append(r)
    weights.cache_clear()
    # measured again at the end: a big drift means the numbers above are noisy (shared host)
    bw_end = kernels.membw(max(mb, 256) << 20, threads=threads, passes=7)
    return {"membw_gbs": bw, "membw_end_gbs": bw_end, "threads": threads, "mb": mb,
            "cpu_isa": kernels.best_isa(), "results": results}


# ---- pytest-benchmark ----
try:
    import pytest
except ImportError:  # script mode needs no pytest
    pytest = None

if pytest is not None:
    @pytest.fixture
    def membw_gbs():
        # per case: the bandwidth on offer drifts within a run on a shared host
        return kernels.membw(256 << 20, threads=DEFAULT_THREADS, passes=3)

    @pytest.mark.parametrize("n", [1, GEMM_N], ids=["gemv", f"gemm{GEMM_N}"])
    @pytest.mark.parametrize("isa", BENCH_ISAS)
    @pytest.mark.parametrize("qtype", FORMATS)
    def test_bench(benchmark, membw_gbs, qtype, isa, n):
        if isa == "scalar" and n > 1 and not os.environ.get("FASTCPU_BENCH_SCALAR_GEMM"):
            pytest.skip("scalar GEMM takes seconds per call (FASTCPU_BENCH_SCALAR_GEMM=1 runs it)")
        with kernels.use_isa(isa):
            if not kernels.qtype_supported(qtype):
                pytest.skip(f"no {qtype} kernel at {isa}")
            w = weights(qtype, DEFAULT_MB)
            pw = prepared(qtype, w)
            x = np.random.default_rng(2).standard_normal((n, COLS)).astype(np.float32)
            y = np.empty((n, w.shape[0]), np.float32)
            benchmark.pedantic(pw.gemm, args=(x, y, DEFAULT_THREADS), rounds=5, iterations=1,
                               warmup_rounds=1)
            gbs = w.nbytes / benchmark.stats.stats.median / 1e9
            benchmark.extra_info.update(
                weight_gbs=round(gbs, 2), membw_gbs=round(membw_gbs, 2),
                ratio=round(gbs / membw_gbs, 3), kernel_isa=kernels.kernel_isa_for(qtype),
                weight_mb=w.nbytes >> 20, threads=DEFAULT_THREADS)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    p.add_argument("--mb", type=int, default=DEFAULT_MB, help="weight MiB per format (default 256)")
    p.add_argument("--reps", type=int, default=5, help="timed calls per case (median reported)")
    p.add_argument("--isa", action="append", choices=BENCH_ISAS, help="level(s) to run (default: all here)")
    p.add_argument("--format", action="append", choices=FORMATS, dest="formats",
                   help="format(s) to run (default: all with a kernel)")
    p.add_argument("--n", action="append", type=int, help=f"activation rows (default: 1 and {GEMM_N})")
    a = p.parse_args(argv)
    if a.threads < 1 or a.mb < 1 or a.reps < 1:
        p.error("--threads, --mb and --reps must be positive")
    out = run(a.mb, a.threads, a.reps, a.isa or BENCH_ISAS, a.formats or FORMATS, a.n or [1, GEMM_N])
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"membw ({a.threads} threads): {out['membw_gbs']:.2f} GB/s at start, "
          f"{out['membw_end_gbs']:.2f} GB/s at end; weights {a.mb} MiB per format")
    print(f"{'format':6} {'isa':12} {'kernel':12} {'n':>3} {'ms':>8} {'weight GB/s':>12} {'membw':>7} {'ratio':>6}"
          "   (medians; ratio: median of call/membw pairs)")
    for r in out["results"]:
        print(f"{r['qtype']:6} {r['isa']:12} {r['kernel_isa']:12} {r['n']:3d} {r['seconds'] * 1e3:8.2f} "
              f"{r['weight_gbs']:12.2f} {r['membw_gbs']:7.2f} {r['ratio']:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
