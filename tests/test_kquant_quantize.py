"""fastcpu.kernels.quantize (fc_quantize): valid GGUF blocks, checked through the gguf package's
dequantizer, within the error bound the quantizer states (csrc/kernels/kquant_scalar.c)."""
import numpy as np
import pytest

from fastcpu import kernels
from kernel_ref import dequantize
from tolerances import quantize_bound


def _inputs(rng):
    x = rng.standard_normal((7, 768)).astype(np.float32)
    x[:, rng.integers(0, 768, size=12)] *= 20.0    # outliers
    x[1] = np.abs(x[1]) + 0.5                       # all positive: no min offset
    x[2] = -np.abs(x[2]) - 0.5                      # all negative
    x[3, :256] = 0.0                                # an all-zero super-block
    x[4] *= 1e-6                                    # tiny: fp16 subnormal scales
    x[5, 256:512] = 3.0                             # constant
    x[6] *= 1e4                                     # large
    return x


@pytest.mark.parametrize("qtype", kernels.QUANTIZABLE)
def test_quantize_roundtrip(qtype):
    rng = np.random.default_rng(11)
    x = _inputs(rng)
    w = kernels.quantize(x, qtype)
    assert w.shape == (x.shape[0], kernels.row_bytes(qtype, x.shape[1])) and w.dtype == np.uint8
    back = dequantize(qtype, w).astype(np.float64)
    err = np.abs(back - x.astype(np.float64))
    bound = quantize_bound(qtype, x)
    worst = np.unravel_index(np.argmax(err / bound), err.shape)
    assert (err <= bound).all(), f"{qtype}: error {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst}"
    # the bound is not vacuous: the typical error sits well under it, and the data is reproduced
    assert np.median(err / bound) < 0.5
    assert np.corrcoef(back[0], x[0])[0, 1] > 0.99
    # 1-D input is one row
    np.testing.assert_array_equal(kernels.quantize(x[0], qtype), w[:1])


@pytest.mark.parametrize("qtype", kernels.QUANTIZABLE)
def test_quantized_weights_feed_gemm(qtype):
    """A quantized matrix goes through the GEMM kernels like a file's blocks."""
    rng = np.random.default_rng(5)
    W = rng.standard_normal((19, 512)).astype(np.float32)
    X = rng.standard_normal((3, 512)).astype(np.float32)
    w = kernels.quantize(W, qtype)
    Y = kernels.gemm(w, qtype, X)
    ref = X.astype(np.float64) @ dequantize(qtype, w).astype(np.float64).T
    assert np.abs(Y - ref).max() < 0.05 * np.abs(ref).max()


def test_quantize_rejects_bad_input():
    x = np.ones((2, 256), np.float32)
    with pytest.raises(ValueError, match="no quantizer"):
        kernels.quantize(x, "Q4_0")
    with pytest.raises(ValueError, match="whole blocks"):
        kernels.quantize(np.ones((2, 100), np.float32), "Q4_K")
    with pytest.raises(TypeError, match="float32"):
        kernels.quantize(x.astype(np.float64), "Q4_K")
    with pytest.raises(ValueError, match="NaN"):
        kernels.quantize(np.full((1, 256), np.nan, np.float32), "Q6_K")
    with pytest.raises(ValueError, match="1e6"):
        kernels.quantize(np.full((1, 256), 1e7, np.float32), "Q4_K")
    with pytest.raises(ValueError, match="unknown qtype"):
        kernels.quantize(x, "Q9_K")
