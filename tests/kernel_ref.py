"""Independent reference for the kernels: random GGUF blocks and the `gguf` package's dequantizer.

Blocks are random bytes (every bit pattern of the quantized values occurs, extremes included) with
their scale fields overwritten by well-scaled fp16 values, so the kernels see realistic magnitudes.
"""
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

BLOCK = {"F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q4_0": (32, 18), "Q4_1": (32, 20),
         "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34), "Q4_K": (256, 144),
         "Q5_K": (256, 176), "Q6_K": (256, 210)}

# byte offsets of fp16 scale fields inside a block, and the range of their magnitude
_SCALES = {
    "Q4_0": [(0, 1e-3, 2e-2)],
    "Q4_1": [(0, 1e-3, 2e-2), (2, 1e-2, 0.2)],
    "Q5_0": [(0, 1e-3, 2e-2)],
    "Q5_1": [(0, 1e-3, 2e-2), (2, 1e-2, 0.2)],
    "Q8_0": [(0, 1e-4, 1e-3)],
    "Q4_K": [(0, 1e-4, 2e-3), (2, 1e-4, 2e-3)],
    "Q5_K": [(0, 1e-4, 2e-3), (2, 1e-4, 2e-3)],
    "Q6_K": [(208, 1e-4, 2e-3)],
}
# formats whose min fields are subtracted (keep them positive like a quantizer does)
_POSITIVE = {("Q4_1", 2), ("Q5_1", 2), ("Q4_K", 0), ("Q4_K", 2), ("Q5_K", 0), ("Q5_K", 2)}


def random_weights(qtype: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 array (rows, row_bytes) of valid GGUF blocks."""
    bs, ts = BLOCK[qtype]
    assert cols % bs == 0
    if qtype == "F32":
        return rng.standard_normal((rows, cols)).astype(np.float32).view(np.uint8)
    if qtype == "F16":
        return rng.standard_normal((rows, cols)).astype(np.float16).view(np.uint8)
    if qtype == "BF16":
        f = rng.standard_normal((rows, cols)).astype(np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(rows, -1)
    nb = cols // bs
    blocks = rng.integers(0, 256, size=(rows, nb, ts), dtype=np.uint8)
    for off, lo, hi in _SCALES[qtype]:
        mag = rng.uniform(lo, hi, size=(rows, nb))
        sign = 1.0 if (qtype, off) in _POSITIVE else rng.choice([-1.0, 1.0], size=(rows, nb))
        blocks[:, :, off:off + 2] = (mag * sign).astype(np.float16).view(np.uint8).reshape(rows, nb, 2)
    return blocks.reshape(rows, nb * ts)


def dequantize(qtype: str, w: np.ndarray) -> np.ndarray:
    """Float32 (rows, cols) through the gguf package, not through fastcpu."""
    rows = w.shape[0]
    if qtype == "F32":
        return w.view(np.float32).reshape(rows, -1).copy()
    if qtype == "F16":
        return w.view(np.float16).reshape(rows, -1).astype(np.float32)
    return quants.dequantize(w, getattr(T, qtype)).astype(np.float32).reshape(rows, -1)


def reference_gemm(qtype: str, w: np.ndarray, X: np.ndarray) -> np.ndarray:
    """float64 X @ W.T."""
    return X.astype(np.float64) @ dequantize(qtype, w).astype(np.float64).T


def activations(n: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    # heavy-ish tails, as real hidden states have
    x = rng.standard_normal((n, cols)).astype(np.float32)
    x[:, rng.integers(0, cols, size=max(1, cols // 64))] *= 8.0
    return x


def cols_for(qtype: str) -> list:
    """The smallest and a few non-power-of-two column counts that the format allows."""
    bs = BLOCK[qtype][0]
    if bs == 1:
        return [1, 3, 31, 33, 1023, 4160]
    if bs == 32:
        return [32, 96, 1056, 4128]
    return [256, 768, 2816]


def q8h_values(X: np.ndarray) -> np.ndarray:
    """The activation values the q8h kernels multiply (legacy_common.h, q8h_quantize): per 16
    values d = amax / 127 in float32, q = round-half-even(x / d) in float32, clipped to +-127;
    returned as d * q in float64 (exact)."""
    X = np.asarray(X, np.float32)
    n, k = X.shape
    h = X.reshape(n, k // 16, 16)
    d = (np.abs(h).max(axis=2, keepdims=True) / np.float32(127.0)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d > 0, np.rint(h / np.where(d > 0, d, np.float32(1))), 0)
    q = np.clip(q, -127, 127)
    return (q.astype(np.float64) * d.astype(np.float64)).reshape(n, k)
