"""Every kernel tolerance in one place.

Integer formats quantize the float32 activations to int8 blocks (block of 32 values for the
Q4_0..Q8_0 family, 256 for K-quants) with scale d = amax/127, so each activation carries an error of
at most d/2 = amax/254. That gives a rigorous bound on a dot product's error:

    |y - y_exact| <= sum over activation blocks b of  (sum_{i in b} |w_i|) * amax_b / 254

plus float32 accumulation/rounding of scales, bounded by REL_FLOAT * sum_i |w_i x_i|.
Float formats have no activation quantization; BF16 activations (vdpbf16ps) round x to 8 bits of
mantissa: |error| <= 2^-8 * sum_i |w_i x_i|.
"""
import numpy as np

# activation block length per weight format (0: activations stay float32)
ACT_BLOCK = {
    "F32": 0, "F16": 0, "BF16": 0,
    "Q4_0": 32, "Q4_1": 32, "Q5_0": 32, "Q5_1": 32, "Q8_0": 32,
    "Q4_K": 256, "Q5_K": 256, "Q6_K": 256,
}

# float32 accumulation over up to ~16k terms, fp16/fp32 scale products
REL_FLOAT = 2e-4
# bf16 activations: 8-bit mantissa, round to nearest
REL_BF16_ACT = 2.0 ** -8


def gemm_bound(qtype: str, W: np.ndarray, X: np.ndarray, bf16_acts: bool = False) -> np.ndarray:
    """Per-element error bound for Y = X @ W.T given dequantized W (rows, k) and exact X (n, k)."""
    W = np.abs(W.astype(np.float64))
    Xa = np.abs(X.astype(np.float64))
    bound = REL_FLOAT * (Xa @ W.T) + 1e-6
    if bf16_acts:
        bound += REL_BF16_ACT * (Xa @ W.T)
    blk = ACT_BLOCK[qtype]
    if blk:
        n, k = X.shape
        amax = Xa.reshape(n, k // blk, blk).max(axis=2)            # (n, nb)
        wsum = W.reshape(W.shape[0], k // blk, blk).sum(axis=2)    # (rows, nb)
        bound += (amax / 254.0) @ wsum.T * 1.0001
    return bound


# ops (float32 SIMD vs scalar twin / float64 reference)
OPS_RTOL = 1e-5
OPS_ATOL = 1e-6
# exp/sin/cos approximations in SIMD ops
OPS_TRANSCENDENTAL_RTOL = 2e-6


# ---- re-quantization (fastcpu.convert): error of quantizing exact float32 values once ----
# Per block of 32 (amax = max |x|, lo/hi = min/max): round-to-nearest gives d/2, except that the
# symmetric formats put the largest-magnitude value at -8d (Q4_0) / -16d (Q5_0), so a value of
# the opposite sign and equal magnitude clips to +7d / +15d: error up to d. The fp16 scale d
# (and min m) add |q| * |d - fp16(d)| <= amax * 2^-11 (+ |m| * 2^-11), and fp16 subnormals an
# absolute 2^-25 per unit of |q|.
REQUANT_FP16_REL = 2.0 ** -11
FP16_SUBNORMAL_ULP = 2.0 ** -24


def requant_bound(qtype: str, x: np.ndarray) -> np.ndarray:
    """Per-element bound on |dequant(quant(x)) - x| for x of shape (rows, cols)."""
    x = x.astype(np.float64)
    if qtype == "F16":
        return np.abs(x) * REQUANT_FP16_REL + FP16_SUBNORMAL_ULP / 2
    if qtype == "BF16":
        return np.abs(x) * 2.0 ** -8 + 1e-38
    rows, cols = x.shape
    b = x.reshape(rows, cols // 32, 32)
    amax = np.abs(b).max(axis=2, keepdims=True)
    lo, hi = b.min(axis=2, keepdims=True), b.max(axis=2, keepdims=True)
    if qtype == "Q8_0":
        e = amax / 254 + amax * REQUANT_FP16_REL + 127 * FP16_SUBNORMAL_ULP / 2
    elif qtype == "Q4_0":
        e = amax / 8 + amax * REQUANT_FP16_REL + 8 * FP16_SUBNORMAL_ULP / 2
    elif qtype == "Q5_0":
        e = amax / 16 + amax * REQUANT_FP16_REL + 16 * FP16_SUBNORMAL_ULP / 2
    elif qtype in ("Q4_1", "Q5_1"):
        levels = 15 if qtype == "Q4_1" else 31
        e = ((hi - lo) / (2 * levels) + ((hi - lo) + np.abs(lo)) * REQUANT_FP16_REL
             + (levels + 1) * FP16_SUBNORMAL_ULP / 2)
    else:
        raise KeyError(qtype)
    e = e * (1 + 1e-5) + amax * 1e-6  # float32 arithmetic in the quantizer
    return np.broadcast_to(e, b.shape).reshape(rows, cols)
