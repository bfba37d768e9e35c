"""Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 kernels at the edges that random blocks rarely reach: every weight
code at its extreme with every activation at full scale (the int16 pair sums of vpmaddubsw are
largest there), zero activation blocks, and activations whose block maximum is so small that
127 / amax would overflow. Reference: the gguf package's dequantization and a float64 product."""
import numpy as np
import pytest

from fastcpu import kernels
from kernel_ref import BLOCK, dequantize
from tolerances import gemm_bound

LEGACY = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
# byte offsets of (d, m, qh, qs) inside a block; None where the format has no such field
FIELDS = {"Q4_0": (0, None, None, 2), "Q4_1": (0, 2, None, 4), "Q5_0": (0, None, 2, 6),
          "Q5_1": (0, 2, 4, 8), "Q8_0": (0, None, None, 2)}


def _blocks(qtype, rows, cols, code_byte, qh_byte, d=0.01, m=0.05):
    bs, ts = BLOCK[qtype]
    off_d, off_m, off_qh, off_qs = FIELDS[qtype]
    b = np.zeros((rows, cols // bs, ts), np.uint8)
    b[:, :, off_d:off_d + 2] = np.array([d], np.float16).view(np.uint8)
    if off_m is not None:
        b[:, :, off_m:off_m + 2] = np.array([m], np.float16).view(np.uint8)
    if off_qh is not None:
        b[:, :, off_qh:off_qh + 4] = qh_byte
    b[:, :, off_qs:] = code_byte
    return b.reshape(rows, -1)


def _check(qtype, w, X, Y):
    Wd = dequantize(qtype, w).astype(np.float64)
    ref = X.astype(np.float64) @ Wd.T
    bound = gemm_bound(qtype, Wd, X)
    err = np.abs(Y.astype(np.float64) - ref)
    assert (err <= bound).all(), f"{qtype} @ {kernels.isa()}: max error {err.max():.3g}"


@pytest.mark.parametrize("qtype", LEGACY)
def test_extreme_codes(isa, qtype):
    cols = 96  # three blocks: one pair and a lone block on the AVX-512 path
    # (code byte, qh byte): largest codes, smallest codes, alternating nibbles / signs
    patterns = [(0xFF, 0xFF), (0x00, 0x00), (0x0F, 0x55)]
    if qtype == "Q8_0":
        patterns = [(0x80, 0), (0x7F, 0), (0x81, 0)]  # -128, 127, -127
    X = np.ones((4, cols), np.float32)
    X[1] = -1.0
    X[2, ::2] = -1.0
    X[3] = np.where(np.arange(cols) % 3 == 0, -2.5, 2.5)
    for code, qh in patterns:
        w = _blocks(qtype, 3, cols, code, qh)
        for n in (1, 4):
            Y = kernels.gemm(w, qtype, X[:n], threads=1)
            _check(qtype, w, X[:n], Y)


@pytest.mark.parametrize("qtype", LEGACY)
def test_zero_and_tiny_activation_blocks(isa, qtype):
    rng = np.random.default_rng(11)
    cols = 128
    bs, ts = BLOCK[qtype]
    scales = 4 if FIELDS[qtype][1] is not None else 2
    # random codes under unit-size scale fields (so that the tiny products below stay normal)
    w = rng.integers(0, 256, size=(5, cols // bs, ts), dtype=np.uint8)
    w[:, :, :scales] = _blocks(qtype, 5, cols, 0, 0, d=1.0, m=0.5).reshape(5, -1, ts)[:, :, :scales]
    w = w.reshape(5, -1)
    X = rng.standard_normal((2, cols)).astype(np.float32)
    X[0, :32] = 0.0  # a zero block
    X[1] = 0.0       # a zero row: exactly zero out
    Y = kernels.gemm(w, qtype, X, threads=1)
    assert (Y[1] == 0.0).all()
    _check(qtype, w, X, Y)
    # a block with amax ~ 2^-122: 127 / amax is no float32; scaled by a power of two the result
    # must match the unscaled problem's bound
    Xt = np.zeros((1, cols), np.float32)
    Xt[0, 32:64] = rng.standard_normal(32)
    yt = kernels.gemm(w, qtype, Xt * np.float32(2.0 ** -124), threads=1) * np.float32(2.0 ** 124)
    _check(qtype, w, Xt, yt)


@pytest.mark.parametrize("qtype", LEGACY)
def test_long_rows(isa, qtype):
    """Rows of 1027 blocks: long accumulations, and a partial group of blocks at the end."""
    from kernel_ref import activations, random_weights
    rng = np.random.default_rng(5)
    cols = 32 * (2 * 512 + 3)
    w = random_weights(qtype, 3, cols, rng)
    for n in (1, 5):
        X = activations(n, cols, rng)
        _check(qtype, w, X, kernels.gemm(w, qtype, X, threads=2))


@pytest.mark.parametrize("qtype", LEGACY)
def test_gemv_row_independent_of_position(isa, qtype):
    """A row's result must not depend on its position among the rows or on the thread split
    (bit for bit): kernels that group weight rows must give each row the same operations."""
    from kernel_ref import activations, random_weights
    rng = np.random.default_rng(9)
    cols = 32 * 13
    w = random_weights(qtype, 9, cols, rng)
    x = activations(1, cols, rng)[0]
    y = kernels.gemv(w, qtype, x, threads=1)
    np.testing.assert_array_equal(kernels.gemv(w[1:], qtype, x, threads=1), y[1:])
    np.testing.assert_array_equal(kernels.gemv(w[3:4], qtype, x, threads=1), y[3:4])
    np.testing.assert_array_equal(kernels.gemv(w, qtype, x, threads=3), y)


@pytest.mark.parametrize("qtype", LEGACY)
def test_gemm_many_rows_blocked(isa, qtype):
    """More activation rows than one pass (64) and more weight rows than one block (128 KiB):
    the kernels walk the product in blocks; every result bit must be the one an unblocked
    (smaller) call gives."""
    from kernel_ref import activations, random_weights
    if kernels.kernel_isa_for(qtype) == "scalar":
        pytest.skip("the scalar reference does not block")
    rng = np.random.default_rng(13)
    cols = 96
    rows = 2 * (128 * 1024 // kernels.row_bytes(qtype, cols)) + 5
    w = random_weights(qtype, rows, cols, rng)
    X = activations(70, cols, rng)
    Y = kernels.gemm(w, qtype, X, threads=1)
    _check(qtype, w, X, Y)
    np.testing.assert_array_equal(Y[:64], kernels.gemm(w, qtype, X[:64], threads=1))
    np.testing.assert_array_equal(Y[64:], kernels.gemm(w, qtype, X[64:], threads=1))
    np.testing.assert_array_equal(Y, kernels.gemm(w, qtype, X, threads=2))
