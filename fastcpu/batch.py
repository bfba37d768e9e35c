"""Batched decoding: N sequences advance together, one row each per step, so every pass over the
weights (from memory, or streamed from disk under a RAM budget) serves N tokens.

    llm.generate_batch(["Once upon a time", "The capital of France"], max_tokens=32, temperature=0)

The KV cache is split into N regions of n_ctx // N positions (sequence i in region i); prompts
are prefilled together (their rows share passes too), then each step runs one row per sequence
still going (fc_llama_forward_rows). Sequence i samples with its own generator, seeded seed + i
(or seeds[i] when seed is a list), so with N = 1 it draws like generate(prompt, seed=seed).
At the scalar ISA level, where one loop serves one or many activation rows, greedy tokens equal
generating each prompt alone; SIMD levels block rows differently for n > 1 (activation
re-quantization noise), which may flip near-ties.
"""
from __future__ import annotations

import codecs
import time

import numpy as np

from .sampler import SamplerParams, sample, scratch_for


def generate_batch(llm, prompts, max_tokens: int = 128, temperature: float = 0.8, top_k: int = 40,
                   top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
                   presence_penalty: float = 0.0, frequency_penalty: float = 0.0, seed=None, stop=None,
                   add_special: bool = True, parse_special: bool = False) -> list:
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, (list, tuple)) or not prompts:
        raise TypeError("prompts must be a non-empty list of prompts (str or lists of token ids)")
    ids = []
    for p in prompts:
        if isinstance(p, str):
            t = llm.tokenize(p, add_special=add_special, parse_special=parse_special)
        elif isinstance(p, (list, tuple, np.ndarray)):
            t = llm._check_ids(p)
        else:
            raise TypeError(f"each prompt must be a str or a list of token ids, got {type(p).__name__}")
        if not t:
            raise ValueError("empty prompt")
        ids.append(t)
    n = len(ids)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) or max_tokens < 0:
        raise ValueError(f"max_tokens must be a non-negative int, got {max_tokens!r}")
    seq_ctx = llm.n_ctx // n
    longest = max(len(t) for t in ids)
    if seq_ctx < 1 or longest + max_tokens > seq_ctx:
        raise ValueError(f"{n} sequences of up to {longest} prompt + {max_tokens} new tokens need "
                         f"{n * (longest + max_tokens)} cache positions; the context holds {llm.n_ctx} "
                         f"({seq_ctx} per sequence): pass a larger ctx or fewer/shorter prompts")
    params = SamplerParams(temperature, top_k, top_p, min_p, repeat_penalty, presence_penalty,
                           frequency_penalty).validate()
    stops = [] if stop is None else ([stop] if isinstance(stop, str) else list(stop))
    if not all(isinstance(s, str) for s in stops):
        raise TypeError("stop must be a str or a list of str")
    stops = [s for s in stops if s]
    if seed is None:
        seeds = [None] * n
    elif isinstance(seed, (list, tuple)):
        if len(seed) != n:
            raise ValueError(f"{len(seed)} seeds for {n} prompts")
        seeds = list(seed)
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        seeds = [int(seed) + i for i in range(n)]
    else:
        raise TypeError(f"seed must be an int, a list of ints or None, got {type(seed).__name__}")
    rngs = [np.random.default_rng(s) for s in seeds]
    eng = llm.model.engine

    with llm._lock:
        llm._cached = []  # the regions overwrite what the single-sequence cache held
        t0 = time.perf_counter()
        tok = np.concatenate([np.asarray(t, np.int64) for t in ids])
        pos = np.concatenate([np.arange(len(t)) for t in ids])
        seq = np.concatenate([np.full(len(t), i) for i, t in enumerate(ids)])
        want = np.zeros(len(tok), bool)
        want[np.cumsum([len(t) for t in ids]) - 1] = True
        logits = eng.forward_rows(tok, pos, seq, seq_ctx, want)
        t1 = time.perf_counter()

        history = [list(t) for t in ids]
        out_ids = [[] for _ in range(n)]
        texts = [""] * n
        decs = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in range(n)]
        reasons = ["length"] * n
        active = list(range(n))
        rows = {i: logits[i] for i in range(n)}
        steps = 0
        scratch = scratch_for(llm.n_vocab, params)
        while active and max_tokens > 0:
            nxt = []
            for i in active:
                t = sample(rows[i], rngs[i], params, history[i], scratch)
                if t in llm.stop_ids:
                    reasons[i] = "stop"
                    continue
                out_ids[i].append(t)
                history[i].append(t)
                texts[i] += decs[i].decode(llm.tokenizer.token_to_piece(t))
                cut = min((texts[i].find(s) for s in stops if s in texts[i]), default=-1)
                if cut >= 0:
                    texts[i] = texts[i][:cut]
                    reasons[i] = "stop"
                    continue
                if len(out_ids[i]) >= max_tokens:
                    continue
                nxt.append(i)
            active = nxt
            if not active:
                break
            lg = eng.forward_rows([history[i][-1] for i in active], [len(history[i]) - 1 for i in active],
                                  active, seq_ctx)
            rows = {i: lg[k] for k, i in enumerate(active)}
            steps += 1
        for i in range(n):
            if reasons[i] != "stop" or not stops:
                texts[i] += decs[i].decode(b"", final=True)
        t2 = time.perf_counter()
        llm.last_stats = {
            "sequences": n, "prompt_tokens": [len(t) for t in ids], "generated_tokens": sum(map(len, out_ids)),
            "tokens": out_ids, "finish_reasons": reasons, "decode_steps": steps,
            "prefill_s": t1 - t0, "decode_s": t2 - t1,
        }
    return texts
