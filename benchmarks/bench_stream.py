#!/usr/bin/env python3
"""Beyond RAM: decode speed of a model larger than its memory limit, fastcpu streaming weights
under a RAM budget vs llama.cpp (llama-cpp-python) paging its mmap, both under the same cgroup-v1
memory limit, on cold copies of the file. Prints JSON.

    python benchmarks/bench_stream.py [--model PATH] [--budget-frac 0.6] [--gen 12] [--reps 2]

- Model: default benchmarks/make_model.py's tinyllama-1.1b preset in Q4_0 (~0.76 GB, random
  weights, SmolLM2's tokenizer), from its cache.
- Cold file: a copy made with O_DIRECT on both sides (dd iflag=direct oflag=direct) has no pages
  in the page cache (dropping the cache needs privileges we do not assume); a fresh copy per run.
- Memory limit (as root, cgroup v1): /sys/fs/cgroup/memory/NAME with memory.limit_in_bytes =
  budget + overhead (overhead: Python, libraries, KV cache, activations; the same for both), the
  child process added to cgroup.procs before it imports anything, memory.max_usage_in_bytes
  (anonymous memory + page cache charged to the group) read at the end. Without cgroup v1 or
  root, runs go unlimited and the result says so.
- fastcpu: ram_budget = budget-frac x file size; reports decode tok/s, peak RSS (VmHWM) and the
  stream's own figures. The disk limit is measured with the same read method (readers, chunk,
  O_DIRECT) on a cold copy in the same run; the physical limit of decoding is
  disk_limit / streamed bytes per token (bytes per token minus pinned bytes).
- llama.cpp: the same cold file under the same limit, mmap on (its default), greedy decode of the
  same number of tokens after the same prompt length.
- The compute limit: the same fastcpu decode with every weight in memory and no memory limit
  (resident_decode_tok_s); on a loaded machine it can sit below the disk limit, and then
  pct_of_min_disk_compute_limit says how close streaming comes to the limit that binds.
Runs are interleaved (fastcpu, llama.cpp, resident, fastcpu, ...) and figures are medians.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CG_ROOT = "/sys/fs/cgroup/memory"

FASTCPU_CHILD = r"""
import json, os, sys, time, resource
import numpy as np
path, budget, n_prompt, n_gen, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
threads = threads or None
batches = [int(x) for x in sys.argv[6].split(",") if x] if len(sys.argv) > 6 else []
from fastcpu.model import Model
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
base = status("VmRSS:")
t0 = time.perf_counter()
seq_ctx = n_prompt + n_gen + 8
m = Model(path, ctx=seq_ctx * max([1] + batches), threads=threads, ram_budget=budget)
t_load = time.perf_counter() - t0
ids = np.arange(1000, 1000 + n_prompt, dtype=np.int32)
lg = m.forward(ids, 0, "last")
tok = int(np.argmax(lg))
m.forward(np.array([tok], np.int32), n_prompt, "last")  # first decode step: ring in steady state
if m.stream is not None:
    m.stream.reset_counters()
t0 = time.perf_counter()
toks = []
for i in range(n_gen):
    lg = m.forward(np.array([tok], np.int32), n_prompt + 1 + i, "last")
    tok = int(np.argmax(lg)); toks.append(tok)
dt = time.perf_counter() - t0
r = {"decode_tok_s": n_gen / dt, "load_s": t_load, "peak_rss": status("VmHWM:"), "base_rss": base,
     "engine_alloc": int(m.engine.alloc_bytes), "weight_bytes": int(m.engine.weight_bytes)}
if m.stream is not None:
    p = m.stream_plan
    nb, wait, passes = m.stream.counters()
    r.update(pinned=p.pinned_bytes + p.fixed_bytes, ring=p.ring_bytes, streamed=p.streamed_bytes,
             read_bytes=nb, wait_s=wait, passes=passes, min_budget=p.minimum)
# batched decoding: N sequences per pass over the weights (fc_llama_forward_rows)
for nb_ in batches:
    steps = max(2, n_gen // 2)
    seqs = np.arange(nb_)
    m.engine.forward_rows(np.repeat(ids[:4], nb_), np.tile(np.arange(4), nb_), np.repeat(seqs, 4), seq_ctx)
    t0 = time.perf_counter()
    for i in range(steps):
        m.engine.forward_rows(np.full(nb_, tok), np.full(nb_, 4 + i), seqs, seq_ctx)
    r[f"batch{nb_}_tok_s"] = nb_ * steps / (time.perf_counter() - t0)
print(json.dumps(r))
"""

LLAMA_CHILD = r"""
import json, sys, time, resource
import numpy as np
path, n_prompt, n_gen, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
from llama_cpp import Llama
t0 = time.perf_counter()
llm = Llama(model_path=path, n_ctx=n_prompt + n_gen + 8, n_threads=threads, n_batch=min(512, n_prompt),
            use_mmap=True, verbose=False, logits_all=False)
t_load = time.perf_counter() - t0
ids = list(range(1000, 1000 + n_prompt))
nv = llm.n_vocab()
def last():  # the last token's logits (scores are kept only with logits_all)
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(nv,))
llm.eval(ids)
tok = int(np.argmax(last()))
llm.eval([tok])
tok = int(np.argmax(last()))
t0 = time.perf_counter()
for i in range(n_gen):
    llm.eval([tok])
    tok = int(np.argmax(last()))
dt = time.perf_counter() - t0
print(json.dumps({"decode_tok_s": n_gen / dt, "load_s": t_load, "peak_rss": status("VmHWM:")}))
"""


def cold_copy(src: str, dst: str) -> None:
    """A copy with no page-cache pages: O_DIRECT on both sides."""
    if os.path.exists(dst):
        os.unlink(dst)
    subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=4M", "iflag=direct", "oflag=direct", "status=none"],
                   check=True)


class Cgroup:
    def __init__(self, limit: int):
        self.path = None
        self.limit = limit
        if os.geteuid() != 0 or not os.path.isdir(CG_ROOT):
            return
        p = os.path.join(CG_ROOT, f"fastcpu_bench_{os.getpid()}_{time.monotonic_ns()}")
        try:
            os.mkdir(p)
            with open(os.path.join(p, "memory.limit_in_bytes"), "w") as f:
                f.write(str(limit))
            try:  # no swapping around the limit
                with open(os.path.join(p, "memory.swappiness"), "w") as f:
                    f.write("0")
            except OSError:
                pass
            self.path = p
        except OSError:
            try:
                os.rmdir(p)
            except OSError:
                pass

    def enter(self):
        """preexec_fn: the child joins before it execs (every byte it touches is charged)."""
        if self.path:
            with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    def read(self, name: str) -> int | None:
        if not self.path:
            return None
        with open(os.path.join(self.path, name)) as f:
            return int(f.read().split()[0])

    def stat(self, key: str) -> int | None:
        if not self.path:
            return None
        with open(os.path.join(self.path, "memory.stat")) as f:
            for line in f:
                k, v = line.split()
                if k == key:
                    return int(v)
        return None

    def close(self):
        if self.path:
            for _ in range(50):
                try:
                    os.rmdir(self.path)
                    break
                except OSError:
                    time.sleep(0.1)
            self.path = None


def run_child(script: str, args: list, limit: int, timeout: int) -> dict:
    cg = Cgroup(limit)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    try:
        out = subprocess.run([sys.executable, "-c", script] + [str(a) for a in args], capture_output=True,
                             text=True, env=env, cwd=tempfile.gettempdir(), preexec_fn=cg.enter, timeout=timeout)
        if out.returncode != 0:
            return {"error": (out.stderr or "")[-800:], "returncode": out.returncode,
                    "failcnt": cg.read("memory.failcnt")}
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["cgroup_max_usage"] = cg.read("memory.max_usage_in_bytes")
        r["cgroup_cache_after"] = cg.stat("cache")  # page cache still charged after the child exits
        r["cgroup_limited"] = cg.path is not None
        return r
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    finally:
        cg.close()


def med(rs, key):
    v = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(v) if v else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF file (default: tinyllama-1.1b Q4_0 from make_model)")
    ap.add_argument("--budget-frac", type=float, default=0.6, help="RAM budget as a share of the file size")
    ap.add_argument("--overhead", default="160MiB",
                    help="memory limit = budget + this (Python, libraries, KV cache, activations)")
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--gen", type=int, default=12)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-llama", action="store_true", help="skip llama-cpp-python")
    ap.add_argument("--batch", default="", help="also time batched decoding of N sequences, e.g. 2,4")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per child run")
    ap.add_argument("--workdir", default=None, help="where the cold copies go (default: next to the model)")
    args = ap.parse_args(argv)

    sys.path.insert(0, ROOT)
    from fastcpu import kernels, stream

    if args.model is None:
        sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
        from make_model import synthetic_model

        args.model = synthetic_model("tinyllama-1.1b", "Q4_0")
    size = os.path.getsize(args.model)
    budget = int(size * args.budget_frac)
    limit = budget + stream.parse_size(args.overhead)
    threads = args.threads or kernels.default_threads()
    workdir = args.workdir or os.path.dirname(os.path.abspath(args.model))
    cold = os.path.join(workdir, f".bench_stream_cold_{os.getpid()}.gguf")
    opts = stream.options()

    try:
        import llama_cpp  # noqa: F401
        have_llama = not args.no_llama
    except ImportError:
        have_llama = False

    fc, lc, limits, res_runs = [], [], [], []
    try:
        for rep in range(args.reps):
            # the disk limit right before and right after each fastcpu run (the disk is shared:
            # its bandwidth drifts; each run is compared with the limit around it)
            cold_copy(args.model, cold)
            before = stream.disk_limit(cold, opts=opts)
            cold_copy(args.model, cold)
            fc.append(run_child(FASTCPU_CHILD, [cold, budget, args.prompt, args.gen, threads, args.batch], limit,
                                args.timeout))
            cold_copy(args.model, cold)
            after = stream.disk_limit(cold, opts=opts)
            limits += [before, after]
            fc[-1]["disk_limit"] = (before + after) / 2
            if have_llama:
                cold_copy(args.model, cold)
                lc.append(run_child(LLAMA_CHILD, [cold, args.prompt, args.gen, threads], limit, args.timeout))
            # the compute limit: the same decode with every weight in memory (no memory limit)
            res_runs.append(run_child(FASTCPU_CHILD, [args.model, 1 << 50, args.prompt, args.gen, threads], 1 << 50,
                                      args.timeout))
    finally:
        if os.path.exists(cold):
            os.unlink(cold)

    ok = [r for r in fc if "error" not in r]
    res = {
        "model": os.path.basename(args.model), "file_bytes": size, "ram_budget": budget, "memory_limit": limit,
        "cgroup_limited": bool(ok and ok[0].get("cgroup_limited")), "threads": threads,
        "read_method": {"direct": opts["direct"], "readers": opts["readers"], "depth": opts["depth"],
                        "chunk": opts["chunk"]},
        "n_prompt": args.prompt, "n_gen": args.gen, "reps": args.reps,
        "disk_limit_gbps": statistics.median(limits) / 1e9,
        "fastcpu_errors": [r["error"] for r in fc if "error" in r],
    }
    if ok:
        dec = med(ok, "decode_tok_s")
        streamed = ok[0].get("streamed")
        phys = statistics.median(limits) / streamed if streamed else None
        peak = med(ok, "peak_rss")
        kv_act = ok[0]["engine_alloc"]
        res.update({
            "fastcpu_decode_tok_s": dec,
            "bytes_per_token": ok[0]["weight_bytes"],
            "pinned_bytes": ok[0].get("pinned"),
            "ring_bytes": ok[0].get("ring"),
            "streamed_bytes_per_token": streamed,
            "physical_limit_tok_s": phys,
            "stream_limit_pct": 100.0 * dec / phys if phys else None,
            # per run against the limit measured around it, then the median
            "stream_limit_pct_paired": statistics.median(
                100.0 * r["decode_tok_s"] * streamed / r["disk_limit"] for r in ok) if streamed else None,
            "resident_decode_tok_s": med(res_runs, "decode_tok_s"),
            "pct_of_min_disk_compute_limit": 100.0 * dec / min(phys, med(res_runs, "decode_tok_s"))
            if phys and med(res_runs, "decode_tok_s") else None,
            "disk_gbps": dec * streamed / 1e9 if streamed else None,
            "fetch_wait_share": med(ok, "wait_s") * dec / args.gen if streamed else None,
            "fastcpu_peak_rss": peak,
            "fastcpu_base_rss": med(ok, "base_rss"),
            "kv_and_activations": kv_act,
            "rss_over_budget_and_kv": peak - budget - kv_act,
            "fastcpu_cgroup_max_usage": med(ok, "cgroup_max_usage"),
            "fastcpu_cgroup_cache_after": med(ok, "cgroup_cache_after"),
            "fastcpu_runs": [r["decode_tok_s"] for r in ok],
        })
        for k in sorted(k for k in ok[0] if k.startswith("batch")):
            res["fastcpu_" + k] = med(ok, k)
    lok = [r for r in lc if "error" not in r]
    if lc:
        res["llama_errors"] = [r["error"] for r in lc if "error" in r]
    if lok:
        res.update({
            "llama_decode_tok_s": med(lok, "decode_tok_s"),
            "llama_peak_rss": med(lok, "peak_rss"),
            "llama_cgroup_max_usage": med(lok, "cgroup_max_usage"),
            "llama_cgroup_cache_after": med(lok, "cgroup_cache_after"),
            "llama_runs": [r["decode_tok_s"] for r in lok],
        })
        if ok:
            res["speedup_vs_llama"] = res["fastcpu_decode_tok_s"] / res["llama_decode_tok_s"]
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
