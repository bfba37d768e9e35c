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


# weight quantizer (fastcpu.kernels.quantize): the bound it states in csrc/kernels/kquant_scalar.c,
# with 1% slack for the float32 arithmetic of its scales. fp16 scales rounded up grow by at most a
# relative 2^-10 (inside the slack) plus the smallest subnormal step 2^-24 (tiny inputs).
FP16_STEP_MIN = 2.0 ** -24

def quantize_bound(qtype: str, X: np.ndarray) -> np.ndarray:
    """Per-element bound on |dequantize(quantize(X)) - X| for X of shape (rows, cols)."""
    X = X.astype(np.float64)
    rows, k = X.shape
    amax = np.abs(X).reshape(rows, k // 256, 256).max(axis=2)
    amax = np.repeat(amax, 256, axis=1)
    if qtype in ("Q4_K", "Q5_K"):
        steps = 15.0 if qtype == "Q4_K" else 31.0
        s = X.reshape(rows, k // 32, 32)
        lo = np.minimum(s.min(axis=2), 0.0)
        hi = s.max(axis=2)
        rng_s = np.repeat(hi - lo, 32, axis=1)
        dmin = amax / 63.0 + FP16_STEP_MIN
        d = (2.0 * amax + dmin) / (steps * 63.0) + FP16_STEP_MIN
        return 1.01 * (rng_s / (2 * steps) + dmin / (2 * steps) + d / 2.0) + 1e-30
    if qtype == "Q6_K":
        a = np.repeat(np.abs(X).reshape(rows, k // 16, 16).max(axis=2), 16, axis=1)
        d = amax / (31.0 * 127.0) + FP16_STEP_MIN
        return 1.01 * (a / 62.0 + d / 2.0) + 1e-30
    raise ValueError(qtype)
