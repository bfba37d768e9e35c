"""Every GEMM/GEMV kernel x every ISA level runnable here x every format x awkward shapes, against
the gguf package's dequantization and a float64 product."""
import numpy as np
import pytest

from fastcpu import kernels
from kernel_ref import BLOCK, activations, cols_for, dequantize, random_weights
from tolerances import gemm_bound

FORMATS = list(BLOCK)
ROWS = [1, 3, 17, 33]


def _check(qtype, w, X, Y):
    Wd = dequantize(qtype, w).astype(np.float64)
    ref = X.astype(np.float64) @ Wd.T
    bf16 = qtype == "BF16" and kernels.kernel_isa_for(qtype) in ("avx512_bf16", "amx", "amx_sim")
    bound = gemm_bound(qtype, Wd, X, bf16_acts=bf16)
    err = np.abs(Y.astype(np.float64) - ref)
    worst = np.unravel_index(np.argmax(err / bound), err.shape)
    assert (err <= bound).all(), (
        f"{qtype} @ {kernels.isa()}: error {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst}")


@pytest.mark.parametrize("qtype", FORMATS)
def test_gemv(isa, qtype):
    if not kernels.qtype_supported(qtype):
        pytest.skip(f"no {qtype} kernel yet")
    rng = np.random.default_rng(hash((qtype, isa)) & 0xFFFF)
    for cols in cols_for(qtype):
        for rows in ROWS:
            w = random_weights(qtype, rows, cols, rng)
            x = activations(1, cols, rng)
            y = kernels.gemv(w, qtype, x[0], threads=2)
            _check(qtype, w, x, y[None, :])


@pytest.mark.parametrize("qtype", FORMATS)
@pytest.mark.parametrize("n", [2, 3, 7, 16, 33, 64])
def test_gemm(isa, qtype, n):
    if not kernels.qtype_supported(qtype):
        pytest.skip(f"no {qtype} kernel yet")
    rng = np.random.default_rng(hash((qtype, isa, n)) & 0xFFFF)
    cols = cols_for(qtype)[1]
    for rows in (17, 67):
        w = random_weights(qtype, rows, cols, rng)
        X = activations(n, cols, rng)
        Y = kernels.gemm(w, qtype, X, threads=2)
        _check(qtype, w, X, Y)


@pytest.mark.parametrize("qtype", FORMATS)
def test_threads_agree(qtype):
    """Splitting rows across threads must not change any result bit."""
    if not kernels.qtype_supported(qtype):
        pytest.skip(f"no {qtype} kernel yet")
    rng = np.random.default_rng(7)
    cols = cols_for(qtype)[1]
    w = random_weights(qtype, 133, cols, rng)
    X = activations(3, cols, rng)
    ys = [kernels.gemm(w, qtype, X, threads=t) for t in (1, 2, 3, 5)]
    for y in ys[1:]:
        np.testing.assert_array_equal(ys[0], y)


@pytest.mark.parametrize("qtype", FORMATS)
def test_dequantize_matches_gguf(qtype):
    if not kernels.qtype_supported(qtype):
        pytest.skip(f"no {qtype} kernel yet")
    rng = np.random.default_rng(3)
    w = random_weights(qtype, 5, cols_for(qtype)[1], rng)
    np.testing.assert_array_equal(kernels.dequantize(w, qtype), dequantize(qtype, w))


@pytest.mark.parametrize("qtype", FORMATS)
def test_gemm_long_rows(isa, qtype):
    """Rows long enough for kernels that block the columns into passes (and activation counts that
    leave partial activation tiles)."""
    if not kernels.qtype_supported(qtype):
        pytest.skip(f"no {qtype} kernel yet")
    rng = np.random.default_rng(hash((qtype, isa, "long")) & 0xFFFF)
    for cols in cols_for(qtype)[-2:]:
        for n in (5, 18):
            w = random_weights(qtype, 21, cols, rng)
            X = activations(n, cols, rng)
            _check(qtype, w, X, kernels.gemm(w, qtype, X, threads=2))


@pytest.mark.parametrize("qtype", ["Q4_K", "Q5_K", "Q6_K"])
def test_kquant_gemm_many_rows_blocked(isa, qtype):
    """K-quant GEMM with more activation rows than one pass (64) and more weight rows than one
    128 KiB block: every result bit must be the one an unblocked (smaller) call gives."""
    if not kernels.qtype_supported(qtype):
        pytest.skip(f"no {qtype} kernel yet")
    rng = np.random.default_rng(17)
    cols = 256
    rows = 128 * 1024 // kernels.row_bytes(qtype, cols) + 37
    w = random_weights(qtype, rows, cols, rng)
    X = activations(70, cols, rng)
    Y = kernels.gemm(w, qtype, X, threads=1)
    _check(qtype, w, X, Y)
    np.testing.assert_array_equal(Y[:64], kernels.gemm(w, qtype, X[:64], threads=1))
    np.testing.assert_array_equal(Y[64:], kernels.gemm(w, qtype, X[64:], threads=1))
    np.testing.assert_array_equal(Y, kernels.gemm(w, qtype, X, threads=2))
