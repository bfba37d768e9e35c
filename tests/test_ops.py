"""Every per-token op (fc_ops) x every ISA level runnable here, against a float64 NumPy reference of
the same float32 inputs, at awkward sizes. Bounds: tests/tolerances.py."""
import numpy as np
import pytest

from fastcpu import _core
import tolerances as tol

SIZES = [1, 3, 31, 33, 1023]


def _level(isa):
    return _core.isa_from_name(isa)


def _rng(*key):
    return np.random.default_rng(abs(hash(key)) & 0xFFFFFFFF)


def _assert_within(got, ref, bound, what):
    err = np.abs(got.astype(np.float64) - ref)
    bad = ~(err <= bound)
    if bad.any():
        i = np.flatnonzero(bad.ravel())[0]
        raise AssertionError(f"{what}: {bad.sum()} elements out of bound; first at {i}: got "
                             f"{got.ravel()[i]!r}, want {ref.ravel()[i]!r}, err {err.ravel()[i]:.3g} "
                             f"> {np.ravel(bound)[i]:.3g}")


@pytest.mark.parametrize("n", SIZES)
def test_rmsnorm(isa, n):
    rng = _rng("rms", isa, n)
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    w = rng.uniform(-2, 2, n).astype(np.float32)
    eps = 1e-5
    xd = x.astype(np.float64)
    ref = xd / np.sqrt(np.mean(xd * xd) + eps) * w
    out = np.full(n, np.nan, np.float32)
    _core.op_rmsnorm(_level(isa), out, x, w, eps)
    _assert_within(out, ref, tol.bound_rmsnorm(ref), f"rmsnorm n={n} @ {isa}")
    # in place (out aliases x), as the model calls it
    y = x.copy()
    _core.op_rmsnorm(_level(isa), y, y, w, eps)
    np.testing.assert_array_equal(y, out)


@pytest.mark.parametrize("neox", [False, True], ids=["normal", "neox"])
@pytest.mark.parametrize("head_dim", [2, 6, 64, 130, 256])
@pytest.mark.parametrize("pos", [0, 1, 37, 4095])
def test_rope(isa, neox, head_dim, pos):
    n_heads = 3
    rng = _rng("rope", isa, neox, head_dim, pos)
    x = rng.standard_normal((n_heads, head_dim)).astype(np.float32)
    half = head_dim // 2
    inv_freq = (10000.0 ** (-2.0 * np.arange(half) / head_dim)).astype(np.float32)
    # theta is a float32 product in the kernels' specification; cos/sin of it exactly here
    theta = (np.float32(pos) * inv_freq).astype(np.float64)
    c, s = np.cos(theta), np.sin(theta)
    xd = x.astype(np.float64)
    if neox:
        i0, i1 = np.arange(half), np.arange(half) + half
    else:
        i0, i1 = 2 * np.arange(half), 2 * np.arange(half) + 1
    a, b = xd[:, i0], xd[:, i1]
    ref = xd.copy()
    ref[:, i0] = a * c - b * s
    ref[:, i1] = a * s + b * c
    bound = np.empty_like(ref)
    bound[:, i0] = bound[:, i1] = tol.bound_rope(a, b)
    y = x.copy()
    _core.op_rope(_level(isa), y, pos, inv_freq, neox)
    _assert_within(y, ref, bound, f"rope hd={head_dim} pos={pos} neox={neox} @ {isa}")


@pytest.mark.parametrize("n", SIZES)
def test_softmax(isa, n):
    rng = _rng("softmax", isa, n)
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    if n > 3:
        x[1] = -np.inf  # masked score
        x[2] = x.max() - 95.0  # underflows float32 exp
    xd = x.astype(np.float64)
    e = np.exp(xd - xd.max())
    ref = e / e.sum()
    y = x.copy()
    _core.op_softmax(_level(isa), y)
    _assert_within(y, ref, tol.bound_softmax(x, ref), f"softmax n={n} @ {isa}")


@pytest.mark.parametrize("n", SIZES)
def test_silu_mul(isa, n):
    rng = _rng("silu", isa, n)
    g = (rng.standard_normal(n) * 4).astype(np.float32)
    u = rng.standard_normal(n).astype(np.float32)
    if n >= 31:
        # exp overflow / underflow edges
        g[:6] = [-100.0, -89.5, -87.0, 88.0, 89.5, 100.0]
    gd = g.astype(np.float64)
    with np.errstate(over="ignore"):
        ref = gd / (1.0 + np.exp(-gd)) * u
    out = np.full(n, np.nan, np.float32)
    _core.op_silu_mul(_level(isa), out, g, u)
    _assert_within(out, ref, tol.bound_silu_mul(ref), f"silu_mul n={n} @ {isa}")
    # in place over the gate, as the model calls it
    y = g.copy()
    _core.op_silu_mul(_level(isa), y, y, u)
    np.testing.assert_array_equal(y, out)


@pytest.mark.parametrize("n", SIZES)
def test_add(isa, n):
    rng = _rng("add", isa, n)
    a = rng.standard_normal(n).astype(np.float32)
    b = (rng.standard_normal(n) * 100).astype(np.float32)
    ref = a.astype(np.float64) + b
    out = np.full(n, np.nan, np.float32)
    _core.op_add(_level(isa), out, a, b)
    _assert_within(out, ref, tol.bound_add(ref), f"add n={n} @ {isa}")
    y = a.copy()
    _core.op_add(_level(isa), y, y, b)
    np.testing.assert_array_equal(y, out)


@pytest.mark.parametrize("n_pos", [1, 3, 33, 1023])
@pytest.mark.parametrize("head_dim", [3, 64, 72])
def test_attn_head(isa, n_pos, head_dim):
    rng = _rng("attn", isa, n_pos, head_dim)
    kv_stride = head_dim * 3 + 5  # one head's slice of interleaved K/V rows
    q = rng.standard_normal(head_dim).astype(np.float32)
    K = rng.standard_normal((n_pos, kv_stride)).astype(np.float32)
    V = rng.standard_normal((n_pos, kv_stride)).astype(np.float32)
    scale = np.float32(1.0 / np.sqrt(head_dim))
    qd, Kd, Vd = (a.astype(np.float64) for a in (q, K[:, :head_dim], V[:, :head_dim]))
    s = float(scale) * (Kd @ qd)
    p = np.exp(s - s.max())
    p /= p.sum()
    ref = p @ Vd
    out = np.full(head_dim, np.nan, np.float32)
    scores = np.empty(n_pos, np.float32)
    _core.op_attn_head(_level(isa), out, q, K, V, scale, scores)
    _assert_within(out, ref, tol.bound_attn(qd, Kd, Vd, float(scale), s, p),
                   f"attn_head n_pos={n_pos} hd={head_dim} @ {isa}")


@pytest.mark.parametrize("n_pos", [1, 33, 1023])
@pytest.mark.parametrize("head_dim", [3, 64, 72, 128])  # 64 and 128 have their own inlined paths
@pytest.mark.parametrize("n_heads", [1, 3, 4, 5, 8])
def test_attn_group_equals_attn_head(isa, n_pos, head_dim, n_heads):
    """attn_group (a query group sharing one K/V head, each K/V row read once per group) must give
    exactly attn_head's bits per head; attn_head is checked against float64 above."""
    rng = _rng("attng", isa, n_pos, head_dim, n_heads)
    kv_stride = head_dim * 3 + 5
    q = rng.standard_normal((n_heads, head_dim)).astype(np.float32)
    K = rng.standard_normal((n_pos, kv_stride)).astype(np.float32)
    V = rng.standard_normal((n_pos, kv_stride)).astype(np.float32)
    scale = np.float32(1.0 / np.sqrt(head_dim))
    out = np.full((n_heads, head_dim), np.nan, np.float32)
    _core.op_attn_group(_level(isa), out, q, K, V, scale, np.empty(n_heads * n_pos, np.float32))
    for h in range(n_heads):
        want = np.full(head_dim, np.nan, np.float32)
        _core.op_attn_head(_level(isa), want, q[h], K, V, scale, np.empty(n_pos, np.float32))
        np.testing.assert_array_equal(out[h], want, err_msg=f"head {h} of {n_heads} @ {isa}")


@pytest.mark.parametrize("n_pos", [1, 33, 1023])
@pytest.mark.parametrize("head_dim", [3, 64, 72, 128])
@pytest.mark.parametrize("n_heads", [1, 3, 8])
def test_attn_group_f16_equals_f32(isa, n_pos, head_dim, n_heads):
    """attn_group over a float16 K/V cache gives exactly attn_group's bits over the same rows
    widened to float32 (which is exact), scores and lse included; so it inherits attn_group's
    checks against float64."""
    rng = _rng("attnf16", isa, n_pos, head_dim, n_heads)
    kv_stride = head_dim * 3 + 5
    q = rng.standard_normal((n_heads, head_dim)).astype(np.float32)
    K16 = rng.standard_normal((n_pos, kv_stride)).astype(np.float16)
    V16 = rng.standard_normal((n_pos, kv_stride)).astype(np.float16)
    scale = np.float32(1.0 / np.sqrt(head_dim))
    out = np.full((n_heads, head_dim), np.nan, np.float32)
    lse = np.full(n_heads, np.nan, np.float32)
    sc = np.full(n_heads * n_pos, np.nan, np.float32)
    _core.op_attn_group_f16(_level(isa), out, q, K16.view(np.uint16), V16.view(np.uint16), scale, sc, lse)
    want = np.full((n_heads, head_dim), np.nan, np.float32)
    want_lse = np.full(n_heads, np.nan, np.float32)
    want_sc = np.full(n_heads * n_pos, np.nan, np.float32)
    _core.op_attn_group(_level(isa), want, q, K16.astype(np.float32), V16.astype(np.float32), scale, want_sc, want_lse)
    np.testing.assert_array_equal(out, want, err_msg=f"out @ {isa}")
    np.testing.assert_array_equal(lse, want_lse, err_msg=f"lse @ {isa}")


@pytest.mark.parametrize("n", [1, 3, 15, 16, 17, 33, 1023])
def test_to_f16(isa, n):
    """float32 -> float16 rounds to nearest even like numpy, across normals, subnormals, ties,
    overflow to inf and signed zeros."""
    rng = _rng("tof16", isa, n)
    x = (rng.standard_normal(n) * np.exp2(rng.integers(-30, 20, n))).astype(np.float32)
    specials = np.array([0.0, -0.0, 65504.0, 65520.0, -1e9, np.inf, -np.inf, 6e-8, 2.98e-8, 1.0009765625,
                         1.00048828125, 3e-5], np.float32)
    x[: min(n, len(specials))] = specials[: min(n, len(specials))]
    out = np.zeros(n, np.uint16)
    _core.op_to_f16(_level(isa), out, x)
    with np.errstate(over="ignore"):  # 65520 and -1e9 overflow to inf, as they should
        want = x.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(out, want, err_msg=f"to_f16 n={n} @ {isa}")


@pytest.mark.parametrize("n_pos", [1, 33, 1023])
@pytest.mark.parametrize("n_heads", [1, 3, 8])
def test_attn_group_lse(isa, n_pos, n_heads):
    """attn_group's lse output is each head's log(sum_p e^score_p) of its scaled scores (what the
    model's split decode attention merges parts with), and asking for it changes no output bit."""
    head_dim = 64
    rng = _rng("attnlse", isa, n_pos, n_heads)
    q = rng.standard_normal((n_heads, head_dim)).astype(np.float32)
    K = rng.standard_normal((n_pos, head_dim)).astype(np.float32) * 2
    V = rng.standard_normal((n_pos, head_dim)).astype(np.float32)
    scale = np.float32(1.0 / np.sqrt(head_dim))
    out = np.full((n_heads, head_dim), np.nan, np.float32)
    lse = np.full(n_heads, np.nan, np.float32)
    _core.op_attn_group(_level(isa), out, q, K, V, scale, np.empty(n_heads * n_pos, np.float32), lse)
    plain = np.full((n_heads, head_dim), np.nan, np.float32)
    _core.op_attn_group(_level(isa), plain, q, K, V, scale, np.empty(n_heads * n_pos, np.float32))
    np.testing.assert_array_equal(out, plain)
    Kd = K.astype(np.float64)
    for h in range(n_heads):
        qd = q[h].astype(np.float64)
        s = float(scale) * (Kd @ qd)
        ref = s.max() + np.log(np.exp(s - s.max()).sum())
        # the scores' float32 dot-product error, then float32 exp and the rounding of the sum
        ds = tol.gamma(head_dim + 1) * abs(float(scale)) * (np.abs(Kd) @ np.abs(qd)) + tol.OPS_U * np.abs(s)
        bound = ds.max() + tol.OPS_U * (abs(ref) + 2 * tol.OPS_EXP_ULP + 3) + tol.gamma(n_pos + 1)
        assert abs(float(lse[h]) - ref) <= bound, f"lse head {h}: {lse[h]} vs {ref} (bound {bound:.3g}) @ {isa}"


@pytest.mark.parametrize("n", SIZES + [1 << 16])
def test_sum_read(isa, n):
    rng = _rng("sum", isa, n)
    x = rng.standard_normal(n).astype(np.float32)
    got = _core.op_sum_read(_level(isa), x)
    ref = x.astype(np.float64).sum()
    assert abs(got - ref) <= tol.bound_sum(x), f"sum_read n={n} @ {isa}: {got} vs {ref}"
    # an offset start (not vector aligned) reads exactly the given range
    if n > 3:
        got = _core.op_sum_read(_level(isa), x[1:-1])
        ref = x[1:-1].astype(np.float64).sum()
        assert abs(got - ref) <= tol.bound_sum(x[1:-1]), f"sum_read offset n={n} @ {isa}"
