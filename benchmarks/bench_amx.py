"""AMX vs the AVX-512 VNNI level: GEMM over prepared weights for n = 1, 4, 16, 32, 64 activation rows.

For each format and n: median wall time of `--reps` calls, weight streaming rate (GB/s over the
bytes the kernel reads: the repacked copy when there is one, else the GGUF rows) and GFLOP/s
(2 * n * rows * cols). The machine's streaming bandwidth (fastcpu.kernels.membw) is measured in
the same run so that rates can be read as fractions of it. The AMX level runs with the small-batch
switch off (every n on tiles) and, separately, with it at its default, so the output shows where
the crossover lies (FC_AMX_MIN_ROWS in csrc/fc_internal.h).

    python benchmarks/bench_amx.py                      # AMX machine: amx vs avx512_vnni
    python benchmarks/bench_amx.py --isa amx_sim --rows 64 --cols 256 --reps 1   # smoke test anywhere
    python benchmarks/bench_amx.py --json out.json

Output: JSON (stdout, or --json PATH) with one record per (isa, mode, format, n).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from fastcpu import kernels  # noqa: E402
from kernel_ref import activations, random_weights  # noqa: E402

FORMATS = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q4_K", "Q6_K", "BF16", "F16"]
NS = [1, 4, 16, 32, 64]


def bench_one(p, X, threads, reps):
    out = np.empty((X.shape[0], p.rows), np.float32)
    p.gemm(X, out=out, threads=threads)  # warm: pages, caches, tile permission
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        p.gemm(X, out=out, threads=threads)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--isa", action="append", help="levels to compare (default: amx and avx512_vnni)")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--ns", default=",".join(map(str, NS)))
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--membw-mib", type=int, default=1024)
    ap.add_argument("--json", help="write the JSON here instead of stdout")
    args = ap.parse_args(argv)

    isas = args.isa or ["amx", "avx512_vnni"]
    usable, skipped = [], {}
    for isa in isas:
        why = kernels.isa_missing(isa)
        if why is None:
            usable.append(isa)
        else:
            skipped[isa] = why
            print(f"skipping {isa}: this CPU lacks {why}", file=sys.stderr)
    formats = [f.strip().upper() for f in args.formats.split(",") if f.strip()]
    ns = [int(v) for v in args.ns.split(",")]
    rng = np.random.default_rng(0)

    result = {
        "machine": platform.machine(), "processor": platform.processor(),
        "cpu": {k: v for k, v in __import__("fastcpu").cpu_info().items() if k != "unavailable_isas"},
        "membw_gbs": kernels.membw(args.membw_mib << 20, threads=args.threads),
        "rows": args.rows, "cols": args.cols, "threads": args.threads or kernels.default_threads(),
        "reps": args.reps, "amx_default_min_rows": kernels.amx_min_rows(), "skipped_isas": skipped,
        "records": [],
    }
    for q in formats:
        bs = kernels.block_size(q)
        cols = (args.cols + bs - 1) // bs * bs
        w = random_weights(q, args.rows, cols, rng)
        gguf_bytes = int(w.nbytes)
        X_all = activations(max(ns), cols, rng)
        for isa in usable:
            modes = [("tiles", 1), ("default", kernels.amx_min_rows())] if isa.startswith("amx") else [("-", None)]
            with kernels.use_isa(isa):
                try:
                    p = kernels.prepare(w, q)
                except ValueError as e:
                    print(f"{isa} {q}: {e}", file=sys.stderr)
                    continue
                streamed = p.owned_bytes or gguf_bytes
                for mode, min_rows in modes:
                    for n in ns:
                        X = X_all[:n]
                        if min_rows is not None:
                            with kernels.amx_min_rows_set(min_rows):
                                t = bench_one(p, X, args.threads, args.reps)
                        else:
                            t = bench_one(p, X, args.threads, args.reps)
                        rec = {
                            "isa": isa, "mode": mode, "kernel_isa": p.isa, "layout": p.layout, "format": q,
                            "n": n, "seconds": t, "gguf_bytes": gguf_bytes, "streamed_bytes": streamed,
                            "gbs": streamed / t / 1e9, "gflops": 2.0 * n * args.rows * cols / t / 1e9,
                        }
                        rec["membw_fraction"] = rec["gbs"] / result["membw_gbs"]
                        result["records"].append(rec)
                        print(f"{isa:12s} {mode:8s} {q:5s} n={n:3d} {t * 1e3:9.3f} ms "
                              f"{rec['gbs']:7.2f} GB/s {rec['gflops']:8.1f} GFLOP/s", file=sys.stderr)

    # crossover: smallest n from which the tiles beat the VNNI level for this and every larger n
    cross = {}
    recs = result["records"]
    tiles_isa = next((i for i in usable if i.startswith("amx")), None)
    for q in formats:
        amx = {r["n"]: r["seconds"] for r in recs
               if r["format"] == q and r["isa"] == tiles_isa and r["mode"] == "tiles"}
        vnni = {r["n"]: r["seconds"] for r in recs if r["format"] == q and r["isa"] == "avx512_vnni"}
        common = sorted(set(amx) & set(vnni))
        if common:
            wins = [n for n in common if all(amx[m] < vnni[m] for m in common if m >= n)]
            cross[q] = wins[0] if wins else None
    result["amx_crossover_n"] = cross

    text = json.dumps(result, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
