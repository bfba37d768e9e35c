"""Next-token sampling from one row of logits.

The chain follows llama.cpp's order: penalties (repetition, presence, frequency over the last
`penalty_last_n` tokens) -> top-k -> top-p -> min-p -> temperature -> draw. top-p and min-p see the
probabilities at temperature 1, temperature only reshapes what survives. temperature <= 0 is
greedy (argmax after penalties). The random number comes from a numpy Generator owned by the caller,
so the same seed gives the same tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _core


@dataclass
class SamplerParams:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64

    def validate(self) -> "SamplerParams":
        def num(name, lo=None, hi=None):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"{name} must be a number, got {type(v).__name__}")
            v = float(v)
            if not np.isfinite(v):
                raise ValueError(f"{name} must be finite, got {v}")
            if lo is not None and v < lo:
                raise ValueError(f"{name} must be >= {lo}, got {v}")
            if hi is not None and v > hi:
                raise ValueError(f"{name} must be <= {hi}, got {v}")
            return v

        self.temperature = num("temperature", 0.0)
        self.top_p = num("top_p", 0.0, 1.0)
        self.min_p = num("min_p", 0.0, 1.0)
        self.repeat_penalty = num("repeat_penalty", 0.0)
        if self.repeat_penalty == 0.0:
            raise ValueError("repeat_penalty must be > 0 (1.0 disables it)")
        self.presence_penalty = num("presence_penalty")
        self.frequency_penalty = num("frequency_penalty")
        for name in ("top_k", "penalty_last_n"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
            if v < 0:
                raise ValueError(f"{name} must be >= 0 (0 disables it), got {v}")
        return self


def apply_penalties(logits: np.ndarray, history, p: SamplerParams) -> np.ndarray:
    """Returns logits (a copy when anything changes) with the penalties over the recent history."""
    if p.penalty_last_n == 0 or len(history) == 0:
        return logits
    if p.repeat_penalty == 1.0 and p.presence_penalty == 0.0 and p.frequency_penalty == 0.0:
        return logits
    recent = np.asarray(history[-p.penalty_last_n:], dtype=np.int64)
    ids, counts = np.unique(recent, return_counts=True)
    out = logits.astype(np.float32, copy=True)
    v = out[ids]
    if p.repeat_penalty != 1.0:
        v = np.where(v > 0, v / p.repeat_penalty, v * p.repeat_penalty)
    v = v - counts * p.frequency_penalty - (counts > 0) * p.presence_penalty
    out[ids] = v
    return out


_NO_TOKENS = np.empty(0, np.int32)


def scratch_for(n_vocab: int, p: SamplerParams) -> np.ndarray:
    """A work buffer for sample() over rows of n_vocab logits: make one per generation and pass it
    to every step (a fresh one per token would be an mmap and page faults each time)."""
    return np.empty(_core.sample_scratch_bytes(n_vocab, p.penalty_last_n), np.uint8)


def _penalised(p: SamplerParams) -> bool:
    return p.penalty_last_n > 0 and (p.repeat_penalty != 1.0 or p.presence_penalty != 0.0
                                     or p.frequency_penalty != 0.0)


def sample(logits: np.ndarray, rng: np.random.Generator | None, p: SamplerParams, history=(),
           scratch: np.ndarray | None = None) -> int:
    """One token id from a 1-D float32 logits row. rng may be None only when greedy.

    The chain runs in C (fastcpu._core.sample, one call instead of a dozen NumPy passes over the
    row); sample_ref below is its specification, operation by operation."""
    if p.temperature > 0.0 and rng is None:
        raise ValueError("sampling with temperature > 0 needs a random generator")
    x = np.ascontiguousarray(logits, dtype=np.float32)
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError(f"logits must be a non-empty 1-D row, got shape {x.shape}")
    recent = _NO_TOKENS
    if _penalised(p) and len(history):
        recent = np.asarray(history[-p.penalty_last_n:], dtype=np.int32)
    need = _core.sample_scratch_bytes(x.shape[0], recent.shape[0])
    if scratch is None or scratch.nbytes < need:
        scratch = np.empty(need, np.uint8)
    u = rng.random() if p.temperature > 0.0 else 0.0
    return _core.sample(x, p.temperature, p.top_k, p.top_p, p.min_p, p.repeat_penalty, p.presence_penalty,
                        p.frequency_penalty, recent, u, scratch)


def sample_ref(logits: np.ndarray, rng: np.random.Generator | None, p: SamplerParams, history=()) -> int:
    """The sampling chain in NumPy: the specification of sample()."""
    logits = apply_penalties(logits, history, p)
    if p.temperature <= 0.0:
        return int(np.argmax(logits))
    if rng is None:
        raise ValueError("sampling with temperature > 0 needs a random generator")
    n = logits.shape[0]
    idx = None  # candidate i is token idx[i] (None: token i)
    if 0 < p.top_k < n:
        # one pass over the float32 row in C (np.argpartition partitioned the whole vocabulary:
        # 2% of a SmolLM2 decode step); ties at the cut go to the lower token id
        idx = _core.topk(np.ascontiguousarray(logits, dtype=np.float32), p.top_k)
        x = logits[idx].astype(np.float64)
    else:
        x = logits.astype(np.float64)
    # e[i] = p_i / p_best at temperature 1; z normalises over the top-k set
    e = np.exp(x - x.max())
    z = e.sum()
    # min-p keeps the tokens at least min_p times as likely as the best: a prefix of the sorted
    # order, as top-p's nucleus is, so the chain keeps the shorter of the two prefixes
    cand = np.flatnonzero(e >= p.min_p) if p.min_p > 0.0 else np.arange(len(x))
    if p.top_p < 1.0:
        # the nucleus is usually short: sort a bounded head of the candidates first
        # (ids ascending before the stable sort: ties go to the lower id, as in the top-k path)
        head = cand if len(cand) <= 256 else np.sort(cand[np.argpartition(-e[cand], 255)[:256]])
        order = head[np.argsort(-e[head], kind="stable")]
        cum = np.cumsum(e[order]) / z
        j = int(np.searchsorted(cum, p.top_p, side="left"))
        if j >= len(order) and len(head) < len(cand):
            order = cand[np.argsort(-e[cand], kind="stable")]
            cum = np.cumsum(e[order]) / z
            j = int(np.searchsorted(cum, p.top_p, side="left"))
        order = order[: j + 1]
    else:
        order = cand[np.argsort(-e[cand], kind="stable")]
    w = np.exp((x[order] - x[order[0]]) / p.temperature)
    w /= w.sum()
    u = rng.random()
    j = min(int(np.searchsorted(np.cumsum(w), u, side="right")), len(order) - 1)
    t = order[j]
    return int(idx[t] if idx is not None else t)
