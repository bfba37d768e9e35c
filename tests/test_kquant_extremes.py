"""K-quant kernels at the edges of their integer ranges: every quantized value at its maximum and
every activation at +-127 after quantization, which random blocks almost never produce together.
This is where int16 intermediates (vpmaddubsw pairs, packed vpdpbusd quads) would saturate."""
import numpy as np
import pytest

from fastcpu import kernels
from kernel_ref import dequantize
from tolerances import gemm_bound

FORMATS = ("Q4_K", "Q5_K", "Q6_K")


def _extreme_weights(qtype, rows, cols, rng):
    """All quantized values at their maximum (all bits set), scales at their extremes."""
    nb = cols // 256
    size = kernels.type_size(qtype)
    blocks = np.full((rows, nb, size), 0xFF, np.uint8)
    d = rng.uniform(1e-4, 2e-3, size=(rows, nb)).astype(np.float16).view(np.uint8).reshape(rows, nb, 2)
    if qtype == "Q6_K":
        blocks[:, :, 208:210] = d
        # int8 scales: -128 and 127 (the largest magnitudes of both signs)
        blocks[:, :, 192:208] = np.where(rng.random((rows, nb, 16)) < 0.5, 0x80, 0x7F).astype(np.uint8)
        # some rows with every value 0 (q - 32 = -32, the most negative)
        blocks[::2, :, :192] = 0
    else:
        blocks[:, :, 0:2] = d
        blocks[:, :, 2:4] = d  # dmin; scales/mins bytes 0xFF: every 6-bit scale and min = 63
    return blocks.reshape(rows, nb * size)


@pytest.mark.parametrize("qtype", FORMATS)
@pytest.mark.parametrize("n", [1, 9])
def test_extremes(isa, qtype, n):
    rng = np.random.default_rng(17)
    cols, rows = 768, 21
    w = _extreme_weights(qtype, rows, cols, rng)
    # every activation of a block has the same magnitude (so each quantizes to +-127); rows with
    # all signs equal make every pair/quad sum maximal
    X = np.ones((n, cols), np.float32) * rng.uniform(0.5, 4.0, size=(n, 1)).astype(np.float32)
    X[1::2] *= -1.0
    if n > 2:
        X[2] *= np.where(rng.random(cols) < 0.5, -1.0, 1.0).astype(np.float32)
    Y = kernels.gemm(w, qtype, X, threads=2)
    Wd = dequantize(qtype, w).astype(np.float64)
    ref = X.astype(np.float64) @ Wd.T
    bound = gemm_bound(qtype, Wd, X)
    err = np.abs(Y - ref)
    worst = np.unravel_index(np.argmax(err / bound), err.shape)
    assert (err <= bound).all(), (
        f"{qtype} @ {isa}: error {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst}")
