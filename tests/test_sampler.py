"""The sampler against a direct, loop-based reading of its definition (llama.cpp's chain: penalties,
top-k, top-p, min-p, temperature, draw by inverse CDF of the random number)."""
import math

import numpy as np
import pytest

from fastcpu.sampler import SamplerParams, apply_penalties, sample


class FixedRng:
    """Stands in for numpy's Generator: random() returns the given numbers in turn."""

    def __init__(self, *u):
        self.u = list(u)

    def random(self):
        return self.u.pop(0)


def ref_penalties(logits, history, rep, pres, freq, last_n):
    out = [float(v) for v in logits]
    recent = list(history)[-last_n:] if last_n else []
    for t in set(recent):
        c = recent.count(t)
        v = out[t]
        if rep != 1.0:
            v = v / rep if v > 0 else v * rep
        out[t] = v - c * freq - pres
    return out


def ref_sample(logits, u, temp, top_k, top_p, min_p):
    n = len(logits)
    order = sorted(range(n), key=lambda i: (-logits[i], i))
    if 0 < top_k < n:
        order = order[:top_k]
    m = logits[order[0]]
    p = [math.exp(logits[i] - m) for i in order]
    s = sum(p)
    p = [x / s for x in p]
    if top_p < 1.0:
        acc, keep = 0.0, len(order)
        for j, x in enumerate(p):
            acc += x
            if acc >= top_p:
                keep = j + 1
                break
        order, p = order[:keep], p[:keep]
    if min_p > 0.0:
        keep = [j for j in range(len(order)) if p[j] >= min_p * p[0]] or [0]
        order = [order[j] for j in keep]
    w = [math.exp((logits[i] - m) / temp) for i in order]
    s = sum(w)
    acc = 0.0
    for i, x in zip(order, w):
        acc += x / s
        if u < acc:
            return i
    return order[-1]


@pytest.mark.parametrize("seed", range(6))
def test_matches_reference(seed):
    rng = np.random.default_rng(seed)
    # a peaked distribution, or a flat one whose nucleus holds thousands of tokens
    n, scale = (200, 3.0) if seed % 2 == 0 else (3000, 0.3)
    logits = (rng.standard_normal(n) * scale).astype(np.float32)
    for temp, k, tp, mp in [(0.8, 40, 0.95, 0.05), (1.0, 0, 1.0, 0.0), (0.5, 5, 1.0, 0.0),
                            (1.3, 0, 0.5, 0.0), (1.0, 0, 1.0, 0.2), (2.0, 100, 0.9, 0.01)]:
        for u in (0.0, 0.013, 0.37, 0.5, 0.9, 0.999999):
            p = SamplerParams(temp, k, tp, mp).validate()
            assert sample(logits, FixedRng(u), p) == ref_sample(logits.tolist(), u, temp, k, tp, mp), \
                (temp, k, tp, mp, u)


def test_greedy_and_top_k_one():
    logits = np.array([0.1, 3.0, -2.0, 2.9], np.float32)
    assert sample(logits, None, SamplerParams(temperature=0.0)) == 1
    assert sample(logits, FixedRng(0.99), SamplerParams(temperature=5.0, top_k=1)) == 1
    with pytest.raises(ValueError):
        sample(logits, None, SamplerParams(temperature=0.7))


def test_penalties():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(50).astype(np.float32)
    history = [3, 7, 7, 10, 3, 3, 49, 0]
    for rep, pres, freq, last_n in [(1.3, 0.0, 0.0, 64), (0.8, 0.5, 0.25, 64), (1.1, 0.2, 0.1, 3),
                                    (1.0, 0.0, 0.0, 64)]:
        p = SamplerParams(repeat_penalty=rep, presence_penalty=pres, frequency_penalty=freq,
                          penalty_last_n=last_n).validate()
        got = apply_penalties(logits, history, p)
        want = ref_penalties(logits.tolist(), history, rep, pres, freq, last_n)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # greedy sees the penalties
    logits = np.array([5.0, 4.9, 0.0], np.float32)
    assert sample(logits, None, SamplerParams(temperature=0, repeat_penalty=1.5), history=[0]) == 1


def test_seeded_generator_is_reproducible():
    logits = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    p = SamplerParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    a = [sample(logits, r, p) for r in [np.random.default_rng(5)] for _ in range(30)]
    r = np.random.default_rng(5)
    b = [sample(logits, r, p) for _ in range(30)]
    assert a == b and len(set(a)) > 1


@pytest.mark.parametrize("kw, err", [
    (dict(temperature=-0.1), ValueError), (dict(temperature=float("nan")), ValueError),
    (dict(top_p=1.5), ValueError), (dict(min_p=-0.1), ValueError), (dict(top_k=-1), ValueError),
    (dict(top_k=2.5), TypeError), (dict(repeat_penalty=0.0), ValueError), (dict(temperature="hot"), TypeError),
])
def test_bad_params(kw, err):
    with pytest.raises(err):
        SamplerParams(**kw).validate()


@pytest.mark.parametrize("n,k", [(1, 1), (3, 2), (17, 16), (33, 40), (1023, 1), (49152, 40), (5000, 300)])
def test_topk_matches_stable_argsort(n, k):
    """The C top-k select (fastcpu._core.topk) against NumPy: best first, ties to the lower id."""
    from fastcpu import _core

    rng = np.random.default_rng(n * 131 + k)
    for x in (rng.standard_normal(n).astype(np.float32),
              np.round(rng.standard_normal(n) * 2).astype(np.float32)):  # many ties
        want = np.argsort(-x.astype(np.float64), kind="stable")[:k]
        np.testing.assert_array_equal(_core.topk(x, k), want)


class _Draws:
    """A numpy-Generator stand-in that returns u once; remembers it."""

    def __init__(self, u):
        self.u = u

    def random(self):
        return self.u


@pytest.mark.parametrize("seed", range(8))
def test_c_chain_matches_numpy_spec(seed):
    """sample (the chain in C, fc_sample) against sample_ref (the NumPy chain it transcribes) over
    peaked and flat rows, every stage on and off, penalties with repeats. The sums are NumPy's
    pairwise order, so the two agree exactly unless exp() rounds an ulp apart right at u's bucket
    edge: then the reference itself must give C's token for a u 1e-9 away."""
    from fastcpu.sampler import sample_ref, scratch_for

    rng = np.random.default_rng(100 + seed)
    n = [49152, 5000, 300, 1, 3, 33, 1023, 257][seed]
    scale = [3.0, 0.3, 1.0, 1.0, 2.0, 0.05, 8.0, 0.5][seed]
    logits = (rng.standard_normal(n) * scale).astype(np.float32)
    if seed % 3 == 0:
        logits[rng.integers(0, n, max(1, n // 10))] = logits.max()  # ties at the top
    configs = [(0.8, 40, 0.95, 0.05), (1.0, 0, 1.0, 0.0), (0.5, 5, 1.0, 0.0), (1.3, 0, 0.5, 0.0),
               (1.0, 0, 0.99, 0.0), (1.0, 0, 1.0, 0.2), (2.0, 100, 0.9, 0.01), (0.0, 40, 0.95, 0.05),
               (0.7, 1, 1.0, 0.0), (1.0, n + 5, 0.8, 0.0)]
    history = list(rng.integers(0, n, 80))
    mismatches = 0
    for temp, k, tp, mp in configs:
        for pen in [(1.0, 0.0, 0.0, 64), (1.3, 0.0, 0.0, 64), (0.8, 0.5, 0.25, 16)]:
            p = SamplerParams(temp, k, tp, mp, *pen[:3], penalty_last_n=pen[3]).validate()
            scratch = scratch_for(n, p)
            for u in list(rng.random(6)) + [0.0, 0.999999]:
                got = sample(logits, _Draws(u), p, history, scratch)
                want = sample_ref(logits, _Draws(u), p, history)
                if got != want:
                    mismatches += 1
                    near = {sample_ref(logits, _Draws(min(max(u + d, 0.0), 0.9999999)), p, history)
                            for d in (-1e-9, 1e-9)}
                    assert got in near, (temp, k, tp, mp, pen, u, got, want)
    assert mismatches <= 2


def test_c_chain_rejects_bad_input():
    from fastcpu import _core

    x = np.zeros(10, np.float32)
    s = np.empty(_core.sample_scratch_bytes(10, 2), np.uint8)
    ok = np.array([1, 2], np.int32)
    with pytest.raises(ValueError, match="out of range"):
        _core.sample(x, 1.0, 0, 1.0, 0.0, 1.1, 0.0, 0.0, np.array([1, 10], np.int32), 0.5, s)
    with pytest.raises(ValueError, match="scratch too small"):
        _core.sample(x, 1.0, 0, 1.0, 0.0, 1.1, 0.0, 0.0, ok, 0.5, s[:16])
    with pytest.raises(ValueError, match="u must be"):
        _core.sample(x, 1.0, 0, 1.0, 0.0, 1.1, 0.0, 0.0, ok, 1.0, s)
    with pytest.raises(ValueError, match="empty"):
        sample(np.zeros(0, np.float32), None, SamplerParams(temperature=0.0))
