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


# ---- ops (float32 SIMD and scalar twins vs a float64 reference of the same float32 inputs) ----
# Bounds are element-wise and derived from the operations each op performs; u is the float32 unit
# roundoff, gamma(n) the classic bound n*u/(1-n*u) on an n-term float32 sum or dot product.
OPS_U = 2.0 ** -24
# the SIMD exp (ops_avx2.c / ops_avx512.c exp_ps) and libm's expf are within this many ulp
OPS_EXP_ULP = 4
# results below this are flushed to 0 by the AVX2 exp (true value < 2.4e-38), and tiny softmax /
# silu outputs are compared absolutely
OPS_TINY = 1e-30
# earlier op-agnostic bounds, kept for tests elsewhere that import them (the per-op bounds
# below are tighter)
OPS_RTOL = 1e-5
OPS_ATOL = 1e-6
OPS_TRANSCENDENTAL_RTOL = 2e-6


def gamma(n):
    return n * OPS_U / (1.0 - n * OPS_U)


def bound_add(ref):
    # one rounding
    return OPS_U * np.abs(ref) + OPS_TINY


def bound_rmsnorm(ref):
    # scale rounded to float32 once (sum of squares in float64), then x*scale and *w: 3 roundings
    return 3.01 * OPS_U * np.abs(ref) + OPS_TINY


def bound_silu_mul(ref):
    # e^-g (OPS_EXP_ULP), 1 + e (1: both terms positive), g/d, *up: relative errors add
    return (OPS_EXP_ULP + 3.01) * OPS_U * np.abs(ref) + OPS_TINY


def bound_softmax(x, ref):
    """x: float32 input. x - max is rounded (relative u), which e^ turns into a relative error of
    u*|x - max|; each output also carries that of the sum (at most the largest, weighted) plus the
    exp itself, the float64 sum's rounding to float32 of 1/sum, and the final product."""
    d = np.abs(x.astype(np.float64) - x.max())
    d = np.where(ref > 0, d, 0.0)  # -inf inputs: exact zeros
    rel = OPS_U * (d + (ref * d).sum() + OPS_EXP_ULP * 2 + 3.01)
    return rel * ref + OPS_TINY


def bound_rope(a, b):
    """Per rotated pair (a, b) with float32 theta given: cosf/sinf (1 ulp each), two products and
    a sum or difference (FMA or not): |err| <= 4u (|a| + |b|)."""
    return 4.01 * OPS_U * (np.abs(a) + np.abs(b)) + OPS_TINY


def bound_attn(q, K, V, scale, ref_scores, probs):
    """q (hd,), K/V (n_pos, hd) float64 copies of the float32 inputs; ref_scores = scale*K@q;
    probs = softmax(ref_scores). Score p carries a float32 dot-product error
    ds_p <= gamma(hd+1) * scale * sum|q k_p| (+ rounding of the scale product); a softmax output's
    relative error is at most ds_p + max ds + its exp/normalisation error as in bound_softmax;
    the weighted sum of V rows adds gamma(n_pos) * sum p|v|."""
    n_pos, hd = K.shape
    ds = gamma(hd + 1) * abs(scale) * (np.abs(K) @ np.abs(q)) + OPS_U * np.abs(ref_scores)
    d = ref_scores.max() - ref_scores
    rel = ds + ds.max() + OPS_U * (d + (probs * d).sum() + OPS_EXP_ULP * 2 + 3.01)
    pv = probs[:, None] * np.abs(V)
    return (rel[:, None] * pv).sum(0) + gamma(n_pos + 1) * pv.sum(0) + OPS_TINY


def bound_sum(x):
    # recursive float32 summation (the scalar twin); SIMD lanes only shorten the chains
    return gamma(len(x)) * np.abs(x.astype(np.float64)).sum() + OPS_TINY


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

# ---- re-quantization (fastcpu.convert): error of quantizing exact float32 values once ----
# Per block of 32 (amax = max |x|, lo/hi = min/max). Symmetric formats: the scale search keeps
# |d| within [amax/half, 2*amax/half] (half = 8 for Q4_0, 16 for Q5_0), so round-to-nearest errs
# by at most d/2 <= amax/half and a clipped value (the largest magnitude at -half*d, one of the
# opposite sign at most at (half-1)*d) by at most amax/half too: the reference quantizer's own
# worst case. Asymmetric formats (levels = 15 / 31): d within [range/levels, range/(levels-1)]
# with the grid over the block (m in [hi - levels*d, lo], so |m| <= |lo| + range/(levels-1)):
# d/2 <= range/(2*(levels-1)). The fp16 scale d (and min m) add |q| * |d - fp16(d)| <=
# amax * 2^-11 (+ |m| * 2^-11; asymmetric: (levels*d + |m|) * 2^-11), and fp16 subnormals an
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
        e = ((hi - lo) / (2 * (levels - 1))
             + ((hi - lo) * (levels + 2) / (levels - 1) + np.abs(lo)) * REQUANT_FP16_REL
             + (levels + 1) * FP16_SUBNORMAL_ULP / 2)
    else:
        raise KeyError(qtype)
    e = e * (1 + 1e-5) + amax * 1e-6  # float32 arithmetic in the quantizer
    return np.broadcast_to(e, b.shape).reshape(rows, cols)

# Model runner on float weights (F32/F16, float32 activations) vs the float64 NumPy forward pass of
# a small random model: float32 rounding through a few layers, attention and norms; relative to the
# largest reference logit.
MODEL_FLOAT_RTOL = 1e-4
# The same where the level's F16/BF16 GEMM runs on bf16 tiles (AMX and its model): weights and
# activations rounded to 8-bit mantissas (REL_BF16_ACT each) in every matmul, over a few layers.
MODEL_BF16_RTOL = 2e-2
