"""The `fastcpu` command line."""
from __future__ import annotations

import argparse
import json
import os
import sys


def _cmd_info(args) -> int:
    import fastcpu

    print(json.dumps(fastcpu.cpu_info(), indent=2))
    return 0


# ---- model cache commands (fastcpu.hub) ----

def _fmt_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _cmd_pull(args) -> int:
    from . import hub

    try:
        path = hub.pull(args.name, progress=not args.quiet, force=args.force)
    except (hub.HubError, hub.UnknownModelError) as e:
        print(f"fastcpu pull: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _cmd_models(args) -> int:
    from . import hub

    cached = hub.list_models()
    if args.json:
        print(json.dumps({"cache_dir": hub.cache_dir(), "known": {
            n: {"description": m.description, "path": hub.model_path(n)} for n, m in hub.KNOWN_MODELS.items()},
            "cached": cached}, indent=2))
        return 0
    print(f"cache: {hub.cache_dir()}")
    print("known models:")
    for n, m in sorted(hub.KNOWN_MODELS.items()):
        state = "cached" if any(c["name"] == n for c in cached) else "not pulled"
        print(f"  {n:<16} {state:<11} {m.description}")
    print("cached files:" if cached else "cached files: none")
    for c in cached:
        print(f"  {_fmt_size(c['size']):>10}  {c['name'] or '-':<16} {c['path']}")
    return 0


def add_hub_commands(sub) -> None:
    s = sub.add_parser("pull", help="download a known model (or hf:OWNER/REPO/FILE.gguf) into the cache")
    s.add_argument("name", help="known model name (see `fastcpu models`) or hf:OWNER/REPO/FILE.gguf")
    s.add_argument("--force", action="store_true", help="fetch again even if cached")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=_cmd_pull)
    s = sub.add_parser("models", help="list known models and the cached model files")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(fn=_cmd_models)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastcpu", description="LLM inference on CPUs")
    sub = p.add_subparsers(dest="cmd", required=True)
    add_runner_commands(sub)
    s = sub.add_parser("info", help="print detected CPU features and ISA levels as JSON")
    s.set_defaults(fn=_cmd_info)
    add_hub_commands(sub)
    return p


# ---- model runner commands (fastcpu.LLM) ----

def _load_llm(args, ctx=None):
    from .hub import HubError
    from .llm import LLM

    try:
        return LLM(args.model, threads=args.threads, ctx=ctx if ctx is not None else args.ctx,
                   ram_budget=getattr(args, "ram_budget", None), kv_type=getattr(args, "kv_type", "f32"))
    except HubError as e:  # could not fetch the model: a message, not a traceback
        raise OSError(str(e)) from e


def _sampling_kw(args) -> dict:
    return {"temperature": args.temp, "top_k": args.top_k, "top_p": args.top_p, "min_p": args.min_p,
            "repeat_penalty": args.repeat_penalty, "seed": args.seed}


def _cmd_generate(args) -> int:
    llm = _load_llm(args)
    out = sys.stdout
    for piece in llm.generate(args.prompt, max_tokens=args.n, stream=True, stop=args.stop or None,
                              **_sampling_kw(args)):
        out.write(piece)
        out.flush()
    out.write("\n")
    st = llm.last_stats
    if args.verbose and st:
        dec = st["generated_tokens"] / st["decode_s"] if st["decode_s"] > 0 else 0.0
        print(f"[{st['prompt_tokens']} prompt tokens in {st['prefill_s']:.2f} s, {st['generated_tokens']} "
              f"generated at {dec:.1f} tok/s, {st['finish_reason']}]", file=sys.stderr)
    return 0


def _cmd_chat(args) -> int:
    llm = _load_llm(args)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    tty = sys.stdin.isatty()
    while True:
        if tty:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        line = line.rstrip("\n")
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        reply = []
        for piece in llm.chat(messages, max_tokens=args.n, stream=True, **_sampling_kw(args)):
            reply.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        messages.append({"role": "assistant", "content": "".join(reply)})
    return 0


def _cmd_perplexity(args) -> int:
    with open(args.file, encoding="utf-8") as fh:
        text = fh.read()
    llm = _load_llm(args, ctx=args.ctx)
    r = llm.perplexity(text, ctx=args.ctx, details=True, chunks=args.chunks)
    r["model"] = llm.model_path
    if args.json:
        print(json.dumps(r))
    else:
        print(f"perplexity {r['perplexity']:.4f} over {r['tokens_scored']} tokens "
              f"({r['chunks']} chunks of {r['ctx']})")
    return 0


def run_bench(llm, n_prompt: int = 512, n_gen: int = 128, membw: bool = True) -> dict:
    """Prefill and decode speed of the runner, with the weight bytes a decoded token reads and the
    machine's streaming bandwidth measured in the same run."""
    import time

    import numpy as np

    from . import kernels

    if n_prompt < 1 or n_gen < 1:
        raise ValueError("prompt and gen must be at least 1 token")
    if n_prompt + n_gen > llm.n_ctx:
        raise ValueError(f"prompt + gen = {n_prompt + n_gen} tokens exceed the context of {llm.n_ctx}")
    eng = llm.model.engine
    rng = np.random.default_rng(0)
    # ordinary text-like ids, away from the special tokens at the start of most vocabularies
    ids = rng.integers(min(1000, llm.n_vocab // 2), llm.n_vocab, size=n_prompt).astype(np.int32)
    llm.reset()
    eng.forward(ids[: min(16, n_prompt)], 0, "last")  # warm the pool and the page cache
    # the host's bandwidth drifts (other tenants): measured right before and right after the
    # timed runs, with the same threads and the library's own streaming read
    bws = [kernels.membw(nbytes=512 << 20, threads=eng.threads, passes=5)] if membw else []
    t0 = time.perf_counter()
    logits = eng.forward(ids, 0, "last")
    t1 = time.perf_counter()
    tok = int(np.argmax(logits))
    out = np.empty(llm.n_vocab, np.float32)
    t2 = time.perf_counter()
    for i in range(n_gen):
        eng.forward(np.array([tok], np.int32), n_prompt + i, "last", out)
        tok = int(np.argmax(out))
    t3 = time.perf_counter()
    llm.reset()
    cfg = llm.config
    wbytes = int(eng.weight_bytes)
    kv_elt = 2 if llm.model.kv_type == "f16" else 4
    kv_bytes = 2 * cfg.n_layers * cfg.kv_dim * kv_elt * (n_prompt + n_gen / 2)
    decode = n_gen / (t3 - t2)
    r = {
        "model": os.path.basename(llm.model_path),
        "threads": eng.threads,
        "isa": kernels.isa(),
        "kv_type": llm.model.kv_type,
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        "prefill_tok_s": n_prompt / (t1 - t0),
        "decode_tok_s": decode,
        "bytes_per_token": wbytes,
        "kv_bytes_per_token": int(kv_bytes),
        "decode_gbps": wbytes * decode / 1e9,
    }
    # the KV cache a decoded token reads (keys and values of every earlier position)
    r["decode_gbps_with_kv"] = (wbytes + kv_bytes) * decode / 1e9
    if membw:
        bws.append(kernels.membw(nbytes=512 << 20, threads=eng.threads, passes=5))
        bw = sum(bws) / len(bws)
        r["membw_gbps"] = bw
        r["membw_before_after_gbps"] = bws
        r["roofline_pct"] = 100.0 * r["decode_gbps"] / bw
        r["roofline_pct_with_kv"] = 100.0 * r["decode_gbps_with_kv"] / bw
    if llm.model.stream is not None:
        r.update(stream_bench(llm, decode))
    return r


def stream_bench(llm, decode_tok_s: float) -> dict:
    """Figures of a run under a RAM budget: bytes streamed per token, the disk bandwidth decoding
    achieved, the disk limit of the same read method (readers, chunk, O_DIRECT) on the same file,
    and decode speed as a share of what that limit allows."""
    from . import stream

    p = llm.model.stream_plan
    opts = stream.options(llm.model.stream_options)
    per_tok = int(p.streamed_bytes)
    limit = stream.disk_limit(llm.model_path, nbytes=min(os.path.getsize(llm.model_path), 1 << 30), opts=opts)
    achieved = per_tok * decode_tok_s
    return {
        "ram_budget": p.budget,
        "pinned_bytes": p.pinned_bytes + p.fixed_bytes,
        "ring_bytes": p.ring_bytes,
        "streamed_bytes_per_token": per_tok,
        "stream_direct": bool(opts["direct"]),
        "disk_gbps": achieved / 1e9,
        "disk_limit_gbps": limit / 1e9,
        "stream_limit_pct": 100.0 * decode_tok_s / (limit / per_tok) if per_tok else None,
    }


def _cmd_bench(args) -> int:
    ctx = max(args.ctx or 0, args.prompt + args.gen)
    llm = _load_llm(args, ctx=ctx)
    r = run_bench(llm, args.prompt, args.gen)
    if args.json:
        print(json.dumps(r))
    else:
        print(json.dumps(r, indent=2))
    return 0


def add_runner_commands(sub) -> None:
    def common(s, sampling=False):
        s.add_argument("-m", "--model", default=None, help="GGUF path or known model name (default model if omitted)")
        s.add_argument("--threads", type=int, default=None, help="compute threads (default: physical cores)")
        s.add_argument("--ctx", type=int, default=None, help="context positions (default: min(model, 4096))")
        s.add_argument("--kv-type", choices=("f32", "f16"), default="f32",
                       help="KV cache element type (f16: half the cache's memory and reads, llama.cpp's default)")
        s.add_argument("--ram-budget", default=None,
                       help="memory for weights, e.g. 4GiB: the rest streams from the file every token")
        if sampling:
            s.add_argument("-n", type=int, default=128, help="most tokens to generate")
            s.add_argument("--temp", type=float, default=0.8, help="temperature (0: greedy)")
            s.add_argument("--top-k", type=int, default=40)
            s.add_argument("--top-p", type=float, default=0.95)
            s.add_argument("--min-p", type=float, default=0.05)
            s.add_argument("--repeat-penalty", type=float, default=1.0)
            s.add_argument("--seed", type=int, default=None)

    s = sub.add_parser("generate", help="continue a prompt, streaming to stdout")
    common(s, sampling=True)
    s.add_argument("-p", "--prompt", required=True)
    s.add_argument("--stop", action="append", help="stop string (repeatable)")
    s.add_argument("-v", "--verbose", action="store_true", help="speed summary on stderr")
    s.set_defaults(fn=_cmd_generate)

    s = sub.add_parser("chat", help="chat through the model's template; one user message per stdin line")
    common(s, sampling=True)
    s.add_argument("--system", default=None, help="system message")
    s.set_defaults(fn=_cmd_chat)

    s = sub.add_parser("perplexity", help="perplexity of a text file (llama.cpp's method)")
    common(s)
    s.set_defaults(ctx=512)
    s.add_argument("-f", "--file", required=True)
    s.add_argument("--chunks", type=int, default=None, help="score only the first N chunks")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_cmd_perplexity)

    s = sub.add_parser("bench", help="prefill/decode speed and decode bandwidth vs the machine's (JSON)")
    common(s)
    s.add_argument("--prompt", type=int, default=512, help="prompt tokens")
    s.add_argument("--gen", type=int, default=128, help="decoded tokens")
    s.add_argument("--json", action="store_true", help="one line")
    s.set_defaults(fn=_cmd_bench)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, TypeError, OSError) as e:  # bad input, missing file, bad model file
        print(f"fastcpu {args.cmd}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
