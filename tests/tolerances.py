"""Every kernel tolerance in one place.

Integer formats quantize the float32 activations to int8 blocks (block of 32 values for the
Q4_0..Q8_0 family, 256 for K-quants) with scale d = amax/127, so each activation carries an error of
at most d/2 = amax/254. That gives a rigorous bound on a dot product's error:

    |y - y_exact| <= sum over activation blocks b of  (sum_{i in b} |w_i|) * amax_b / 254

plus float32 accumulation/rounding of scales, bounded by REL_FLOAT * sum_i |w_i x_i|.
Float formats have no activation quantization; BF16 activations (vdpbf16ps) round x to 8 bits of
mantissa: |error| <= 2^-8 * sum_i |w_i x_i|. F16 weights on the AMX-BF16 path are rounded to bf16 at
load as well (bf16_weights): another 2^-8 * sum_i |w_i x_i| (the cross term 2^-16 is inside
REL_FLOAT).
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


def gemm_bound(qtype: str, W: np.ndarray, X: np.ndarray, bf16_acts: bool = False,
               bf16_weights: bool = False) -> np.ndarray:
    """Per-element error bound for Y = X @ W.T given dequantized W (rows, k) and exact X (n, k)."""
    W = np.abs(W.astype(np.float64))
    Xa = np.abs(X.astype(np.float64))
    bound = REL_FLOAT * (Xa @ W.T) + 1e-6
    if bf16_acts:
        bound += REL_BF16_ACT * (Xa @ W.T)
    if bf16_weights:
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
