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


def sample(logits: np.ndarray, rng: np.random.Generator | None, p: SamplerParams, history=()) -> int:
    """One token id from a 1-D float32 logits row. rng may be None only when greedy."""
    logits = apply_penalties(logits, history, p)
    if p.temperature <= 0.0:
        return int(np.argmax(logits))
    if rng is None:
        raise ValueError("sampling with temperature > 0 needs a random generator")
    n = logits.shape[0]
    # candidates, best first
    k = p.top_k if 0 < p.top_k < n else n
    if k < n:
        idx = np.argpartition(-logits, k - 1)[:k]
    else:
        idx = np.arange(n)
    vals = logits[idx].astype(np.float64)
    order = np.argsort(-vals, kind="stable")
    idx, vals = idx[order], vals[order]
    # probabilities at temperature 1 for top-p / min-p
    probs = np.exp(vals - vals[0])
    probs /= probs.sum()
    keep = len(idx)
    if p.top_p < 1.0:
        cum = np.cumsum(probs)
        keep = min(keep, int(np.searchsorted(cum, p.top_p, side="left")) + 1)
    if p.min_p > 0.0:
        keep = min(keep, max(1, int(np.count_nonzero(probs[:keep] >= p.min_p * probs[0]))))
    idx, vals = idx[:keep], vals[:keep]
    w = np.exp((vals - vals[0]) / p.temperature)
    w /= w.sum()
    u = rng.random()
    j = int(np.searchsorted(np.cumsum(w), u, side="right"))
    return int(idx[min(j, keep - 1)])
