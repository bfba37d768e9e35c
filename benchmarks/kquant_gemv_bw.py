"""K-quant GEMV/GEMM throughput as a fraction of the machine's streaming-read bandwidth.

    PYTHONPATH=. python benchmarks/kquant_gemv_bw.py [--mb 256] [--threads 2] [--isa avx512_vnni,...]

GEMV (n=1) should be memory-bound: GB/s of weights streamed / fastcpu.kernels.membw() on the same
threads, measured in the same run (ratios survive a noisy host better than absolute numbers).
GEMM rows report GFLOP/s (2*rows*cols*n, fastest of --reps runs) for batched prefill.
Weights are random valid blocks (the values do not matter for speed)."""
import argparse
import time

import numpy as np

from fastcpu import kernels

FORMATS = ("Q4_K", "Q5_K", "Q6_K")


def weights(qtype, rows, cols, rng):
    bs, ts = kernels.block_size(qtype), kernels.type_size(qtype)
    w = rng.integers(0, 256, size=(rows, cols // bs * ts), dtype=np.uint8)
    blocks = w.reshape(rows, cols // bs, ts)
    off = 208 if qtype == "Q6_K" else 0  # fp16 d: keep it finite
    blocks[:, :, off:off + 2] = np.array([1e-3], np.float16).view(np.uint8)
    if qtype != "Q6_K":
        blocks[:, :, 2:4] = np.array([1e-3], np.float16).view(np.uint8)
    return w


def timings(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return np.array(ts)


def median_time(fn, reps):
    """GEMV: median, like membw's median of passes, so the ratio compares like with like."""
    return float(np.median(timings(fn, reps)))


def min_time(fn, reps):
    """GEMM (compute-bound): the fastest run is the kernel's capability on a shared host."""
    return float(timings(fn, reps).min())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=256, help="weight bytes per matrix (MB)")
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--isa", default=None, help="comma-separated levels (default: all runnable)")
    ap.add_argument("--gemm-n", default="16,64", help="batch sizes for the GEMM rows ('' for none)")
    args = ap.parse_args()
    isas = args.isa.split(",") if args.isa else [i for i in kernels.available_isas() if i != "amx_sim"]
    rng = np.random.default_rng(0)
    bw = kernels.membw(args.mb << 20, threads=args.threads)
    print(f"membw: {bw:.1f} GB/s on {args.threads} threads ({args.mb} MB)")
    for qtype in FORMATS:
        rb = kernels.row_bytes(qtype, args.cols)
        rows = (args.mb << 20) // rb
        w = weights(qtype, rows, args.cols, rng)
        x = rng.standard_normal(args.cols).astype(np.float32)
        for isa in isas:
            with kernels.use_isa(isa):
                if isa == "scalar":
                    # the reference is far from memory-bound: a slice keeps the run short
                    ws = w[: max(1, rows // 32)]
                    t = median_time(lambda: kernels.gemv(ws, qtype, x, threads=args.threads), 3)
                    gbs = ws.nbytes / t / 1e9
                else:
                    # the yardstick again right before: on a shared host the bandwidth drifts
                    bw = kernels.membw(args.mb << 20, threads=args.threads, passes=5)
                    t = median_time(lambda: kernels.gemv(w, qtype, x, threads=args.threads), args.reps)
                    gbs = w.nbytes / t / 1e9
                print(f"{qtype} {isa:12s} gemv  {gbs:6.1f} GB/s  {gbs / bw:5.2f} x membw ({bw:.1f} GB/s)")
                for n in [int(v) for v in args.gemm_n.split(",") if v] if isa != "scalar" else []:
                    sub = w[: max(64, rows // 16)]
                    X = rng.standard_normal((n, args.cols)).astype(np.float32)
                    t = min_time(lambda: kernels.gemm(sub, qtype, X, threads=args.threads), args.reps)
                    flops = 2.0 * sub.shape[0] * args.cols * n
                    print(f"{qtype} {isa:12s} gemm n={n:<3d} {flops / t / 1e9:7.1f} GFLOP/s")


if __name__ == "__main__":
    main()
