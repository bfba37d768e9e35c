#!/usr/bin/env python3
"""How close can a decode step come to the bandwidth roofline with these kernels? The GEMVs of a
step alone (gemv_chain.c: the model's own matrices from its GGUF file, fused and repacked as the
runner does, in the step's order, nothing between them) against the whole decode step of
`fastcpu bench` (the same weight bytes, plus attention, norms, rope, the KV cache), interleaved,
each with the machine's read bandwidth measured in the same run. Prints JSON.

    python benchmarks/gemv_chain.py [--model PATH] [--threads 2] [--reps 3] [--steps 24] [--kv-type f32]

The chain's roofline is an upper bound for the step's: the step runs the same calls and more.
The model defaults to make_model.py's tinyllama-1.1b preset in Q4_0 (from its cache). Needs a C
compiler (cc); the program links the installed fastcpu's libfastcpu.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(out_dir: str, cc: str | None = None, flags=("-O2",)) -> str:
    """Compiles gemv_chain.c against the installed fastcpu's header and library; returns the program."""
    import fastcpu

    inc, lib = fastcpu.get_include(), fastcpu.get_library_dir()
    cc = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise SystemExit("no C compiler (cc) to build gemv_chain.c")
    exe = os.path.join(out_dir, "gemv_chain")
    subprocess.run([cc, *flags, "-o", exe, os.path.join(ROOT, "benchmarks", "gemv_chain.c"), f"-I{inc}",
                    f"-L{lib}", "-lfastcpu", f"-Wl,-rpath,{lib}"], check=True)
    return exe


def matrices(path: str) -> tuple[list[str], int]:
    """The decode step's GEMVs as gemv_chain.c reads them, and the number of layers."""
    from fastcpu.gguf import GGUFFile

    g = GGUFFile(path)
    t = g.tensors
    n_layers = 0
    while f"blk.{n_layers}.attn_q.weight" in t:
        n_layers += 1
    if n_layers == 0:
        raise SystemExit(f"{path}: no Llama-style blk.N.attn_q.weight tensors")

    def line(names):
        ts = [t[n] for n in names]
        # the runner fuses runs of one format; else each is its own call
        if len({x.qtype for x in ts}) > 1:
            return [line([n])[0] for n in names]
        segs = " ".join(f"{x.offset} {x.rows}" for x in ts)
        return [f"{ts[0].qtype} {ts[0].ne[0]} {len(ts)} {segs}"]

    out = []
    for i in range(n_layers):
        p = f"blk.{i}."
        out += line([p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"])
        out += line([p + "attn_output.weight"])
        out += line([p + "ffn_gate.weight", p + "ffn_up.weight"])
        out += line([p + "ffn_down.weight"])
    out += line(["output.weight" if "output.weight" in t else "token_embd.weight"])
    g.close()
    return out, n_layers


def run_chain(exe: str, model: str, threads: int, steps: int, spec: str) -> dict:
    r = subprocess.run([exe, model, str(threads), str(steps)], input=spec, capture_output=True, text=True,
                       check=True)
    return json.loads(r.stdout)


def run_decode(model: str, threads: int, kv_type: str) -> dict:
    """`fastcpu bench --prompt 512 --gen 64` in a child process."""
    code = ("import json, sys; from fastcpu import LLM; from fastcpu.cli import run_bench; "
            "llm = LLM(sys.argv[1], threads=int(sys.argv[2]), ctx=1024, kv_type=sys.argv[3]); "
            "print(json.dumps(run_bench(llm, 512, 64)))")
    r = subprocess.run([sys.executable, "-c", code, model, str(threads), kv_type], capture_output=True, text=True,
                       check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="GGUF file (default: make_model.py's tinyllama-1.1b Q4_0)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=24, help="timed passes over the chain per rep (median)")
    ap.add_argument("--kv-type", choices=("f32", "f16"), default="f32", help="the decode runs' KV cache")
    ap.add_argument("--no-decode", action="store_true", help="the chain only")
    a = ap.parse_args(argv)
    model = a.model
    if model is None:
        sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
        import make_model

        model = make_model.synthetic_model("tinyllama-1.1b", "Q4_0", progress=True)
    spec_lines, n_layers = matrices(model)
    spec = "\n".join(spec_lines) + "\n"
    chains, decodes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(tmp)
        for _ in range(a.reps):
            chains.append(run_chain(exe, model, a.threads, a.steps, spec))
            if not a.no_decode:
                decodes.append(run_decode(model, a.threads, a.kv_type))
    res = {
        "model": os.path.basename(model),
        "threads": a.threads,
        "layers": n_layers,
        "calls_per_step": len(spec_lines),
        "bytes_per_step": chains[0]["bytes_per_step"],
        "chain_roofline_pct": [round(c["chain_roofline_pct"], 2) for c in chains],
        "chain_roofline_pct_median": round(statistics.median(c["chain_roofline_pct"] for c in chains), 2),
        "chain_membw_gbps": [round(c["membw_gbps"], 2) for c in chains],
    }
    if decodes:
        res["decode_kv_type"] = a.kv_type
        res["decode_roofline_pct"] = [round(d["roofline_pct"], 2) for d in decodes]
        res["decode_roofline_pct_median"] = round(statistics.median(d["roofline_pct"] for d in decodes), 2)
        res["decode_tok_s"] = [round(d["decode_tok_s"], 2) for d in decodes]
        res["decode_bytes_per_token"] = decodes[0]["bytes_per_token"]
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
