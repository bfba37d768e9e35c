/* Per-token transformer ops, AVX-512F (+DQ for 256-bit halves).
 *
 * Instructions: vfmadd*ps zmm, masked loads/stores for tails (no scalar tail loops), vscalefps to
 * build 2^n in exp (handles overflow to inf and underflow to 0 without extra blends), vcvtps2pd for
 * double-precision sums, vpermilps for the interleaved rope layout.
 * Accumulators: float32 lanes, except the rmsnorm sum of squares and the softmax denominator, which
 * accumulate in float64 lanes like their scalar twins (no overflow limit to speak of).
 *
 * Spec: ops_scalar.c. exp is a polynomial approximation (exp_ps below, within a few ulp); rope takes
 * its cos/sin from libm exactly like the scalar twin, so only the rotation is vectorised.
 */
#include <immintrin.h>
#include <math.h>

#include "fc_internal.h"

#define L 16

static inline __mmask16 tail(int64_t left) { return (__mmask16)((1u << left) - 1); }

/* e^x for float32 lanes. x = n ln2 + r with |r| <= ln2/2 (ln2 split in a part exact in float and a
 * correction so that n*ln2_hi has no rounding error for |n| <= 150); e^r by its Taylor series to
 * degree 7 (truncation < 2^-27 relative on that interval), Horner in FMA; 2^n applied by vscalefps.
 * Inputs are clamped to [-104, 89]: beyond them float32 e^x is 0 or inf anyway, and the clamp keeps
 * r small. Error: a few ulp. */
static inline __m512 exp_ps(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* float32 lanes -> sum into two float64 accumulators */
static inline void acc_pd(__m512d *lo, __m512d *hi, __m512 v) {
    *lo = _mm512_add_pd(*lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    *hi = _mm512_add_pd(*hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
}

static void rmsnorm_avx512(float *out, const float *x, const float *w, int64_t n, float eps) {
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i + L <= n; i += L) {
        const __m512 v = _mm512_loadu_ps(x + i);
        const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        const __m512d hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
        s0 = _mm512_fmadd_pd(lo, lo, s0);
        s1 = _mm512_fmadd_pd(hi, hi, s1);
    }
    if (i < n) {
        const __m512 v = _mm512_maskz_loadu_ps(tail(n - i), x + i);
        const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        const __m512d hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
        s0 = _mm512_fmadd_pd(lo, lo, s0);
        s1 = _mm512_fmadd_pd(hi, hi, s1);
    }
    const double ss = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    const __m512 scale = _mm512_set1_ps((float)(1.0 / sqrt(ss / (double)n + (double)eps)));
    for (i = 0; i + L <= n; i += L)
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), scale), _mm512_loadu_ps(w + i)));
    if (i < n) {
        const __mmask16 m = tail(n - i);
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), scale),
                                                        _mm512_maskz_loadu_ps(m, w + i)));
    }
}

#define ROPE_CHUNK 64 /* pairs whose cos/sin are computed at once, then applied to every head */

static void rope_avx512(float *x, int64_t n_heads, int64_t head_dim, int64_t pos, const float *inv_freq, int neox) {
    const int64_t half = head_dim / 2;
    /* neox: c/s per pair index; normal: duplicated per element, s signed (-s, +s) to match (a, b) */
    float c[2 * ROPE_CHUNK], s[2 * ROPE_CHUNK];
    for (int64_t i0 = 0; i0 < half; i0 += ROPE_CHUNK) {
        const int64_t m = half - i0 < ROPE_CHUNK ? half - i0 : ROPE_CHUNK;
        for (int64_t i = 0; i < m; i++) {
            const float theta = (float)pos * inv_freq[i0 + i];
            const float ci = cosf(theta), si = sinf(theta);
            if (neox) {
                c[i] = ci;
                s[i] = si;
            } else {
                c[2 * i] = c[2 * i + 1] = ci;
                s[2 * i] = -si;
                s[2 * i + 1] = si;
            }
        }
        for (int64_t h = 0; h < n_heads; h++) {
            float *v = x + h * head_dim;
            if (neox) {
                float *pa = v + i0, *pb = v + half + i0;
                for (int64_t i = 0; i < m; i += L) {
                    const __mmask16 k = m - i >= L ? (__mmask16)0xffff : tail(m - i);
                    const __m512 a = _mm512_maskz_loadu_ps(k, pa + i), b = _mm512_maskz_loadu_ps(k, pb + i);
                    const __m512 cv = _mm512_maskz_loadu_ps(k, c + i), sv = _mm512_maskz_loadu_ps(k, s + i);
                    _mm512_mask_storeu_ps(pa + i, k, _mm512_fmsub_ps(a, cv, _mm512_mul_ps(b, sv)));
                    _mm512_mask_storeu_ps(pb + i, k, _mm512_fmadd_ps(a, sv, _mm512_mul_ps(b, cv)));
                }
            } else {
                float *p = v + 2 * i0;
                const int64_t e = 2 * m;
                for (int64_t i = 0; i < e; i += L) {
                    const __mmask16 k = e - i >= L ? (__mmask16)0xffff : tail(e - i);
                    const __m512 ab = _mm512_maskz_loadu_ps(k, p + i);
                    const __m512 ba = _mm512_permute_ps(ab, 0xB1); /* swap within pairs */
                    const __m512 cv = _mm512_maskz_loadu_ps(k, c + i), sv = _mm512_maskz_loadu_ps(k, s + i);
                    /* (a c - b s, b c + a s) */
                    _mm512_mask_storeu_ps(p + i, k, _mm512_fmadd_ps(ba, sv, _mm512_mul_ps(ab, cv)));
                }
            }
        }
    }
}

static float max_ps(const float *x, int64_t n) {
    __m512 m = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + L <= n; i += L) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
    if (i < n) m = _mm512_mask_max_ps(m, tail(n - i), m, _mm512_maskz_loadu_ps(tail(n - i), x + i));
    return _mm512_reduce_max_ps(m);
}

/* Returns log(sum_i e^x_i) of the input, as softmax_lse_ref */
static double softmax_lse_avx512(float *x, int64_t n) {
    const float top = max_ps(x, n);
    const __m512 mx = _mm512_set1_ps(top);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i + L <= n; i += L) {
        const __m512 e = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), mx));
        _mm512_storeu_ps(x + i, e);
        acc_pd(&s0, &s1, e);
    }
    if (i < n) {
        const __mmask16 m = tail(n - i);
        const __m512 e = _mm512_maskz_mov_ps(m, exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mx)));
        _mm512_mask_storeu_ps(x + i, m, e);
        acc_pd(&s0, &s1, e);
    }
    const double sum = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    const __m512 inv = _mm512_set1_ps((float)(1.0 / sum));
    for (i = 0; i + L <= n; i += L) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
    if (i < n) {
        const __mmask16 k = tail(n - i);
        _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), inv));
    }
    return top + log(sum);
}

static void softmax_avx512(float *x, int64_t n) { (void)softmax_lse_avx512(x, n); }

static inline __m512 silu_mul_v(__m512 g, __m512 u) {
    /* g / (1 + e^-g): e^-g overflows to inf for g < -89, giving -0 like the scalar twin */
    const __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), g)));
    return _mm512_mul_ps(_mm512_div_ps(g, d), u);
}

static void silu_mul_avx512(float *out, const float *gate, const float *up, int64_t n) {
    int64_t i = 0;
    for (; i + L <= n; i += L)
        _mm512_storeu_ps(out + i, silu_mul_v(_mm512_loadu_ps(gate + i), _mm512_loadu_ps(up + i)));
    if (i < n) {
        const __mmask16 m = tail(n - i);
        _mm512_mask_storeu_ps(out + i, m, silu_mul_v(_mm512_maskz_loadu_ps(m, gate + i), _mm512_maskz_loadu_ps(m, up + i)));
    }
}

static void add_avx512(float *out, const float *a, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + L <= n; i += L) _mm512_storeu_ps(out + i, _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
    if (i < n) {
        const __mmask16 m = tail(n - i);
        _mm512_mask_storeu_ps(out + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i)));
    }
}

/* 16 (masked: m) K/V elements from element i of a row of float32 (F16 = 0) or float16 (F16 = 1):
 * float16 widens exactly, so either gives the same float32 arithmetic after it. */
static inline __attribute__((always_inline)) __m512 kv_load(const int F16, const void *row, int64_t i, __mmask16 m) {
    if (F16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)row + i));
    return _mm512_maskz_loadu_ps(m, (const float *)row + i);
}

/* a . b before its horizontal sum (b a K row of either type): 16 lanes of partial sums */
static inline __attribute__((always_inline)) __m512 dot_lanes_kv(const int F16, const float *a, const void *b,
                                                                 int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 2 * L <= n; i += 2 * L) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), kv_load(F16, b, i, 0xffff), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + L), kv_load(F16, b, i + L, 0xffff), s1);
    }
    for (; i < n; i += L) {
        const __mmask16 m = n - i >= L ? (__mmask16)0xffff : tail(n - i);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), kv_load(F16, b, i, m), s0);
    }
    return _mm512_add_ps(s0, s1);
}


/* The horizontal sum of one vector by a fixed tree: lane i + (i + 8), then + 4, + 2, + 1 (spelt
 * out rather than _mm512_reduce_add_ps, whose tree is the compiler's: hsum16 must match it). */
static inline float hsum_ps(__m512 v) {
    const __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b)); /* lanes 0, 1: b0 + b2, b1 + b3 */
    return _mm_cvtss_f32(c) + _mm_cvtss_f32(_mm_movehdup_ps(c));
}

static inline float dot_ps(const float *a, const float *b, int64_t n) { return hsum_ps(dot_lanes_kv(0, a, b, n)); }

/* Lane s of the result is hsum_ps(v[slot(s)]), slot(s) = 4 (s % 4) + s / 4, for 16 vectors at once:
 * the same tree of additions level by level (each shuffle pairs the lanes hsum_ps pairs), so the
 * same bits, in 46 instructions where 16 hsum_ps take ~130. */
#define HSUM16_SLOT(s) (4 * ((s) % 4) + (s) / 4)
static inline __m512 hsum16(const __m512 v[16]) {
    __m512 w[8], x[4], y[2];
    for (int k = 0; k < 8; k++) /* lanes i + (i + 8): v[2k] in lanes 0..7, v[2k+1] in 8..15 */
        w[k] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0xEE));
    for (int k = 0; k < 4; k++) /* + 4: 128-bit lane j holds v[4k + j] */
        x[k] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * k], w[2 * k + 1], 0x88),
                             _mm512_shuffle_f32x4(w[2 * k], w[2 * k + 1], 0xDD));
    for (int k = 0; k < 2; k++) { /* + 2: lane j holds v[8k + j] in 0, 1 and v[8k + 4 + j] in 2, 3 */
        const __m512d a = _mm512_castps_pd(x[2 * k]), b = _mm512_castps_pd(x[2 * k + 1]);
        y[k] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    /* + 1: lane j holds v[j], v[4 + j], v[8 + j], v[12 + j] */
    return _mm512_add_ps(_mm512_shuffle_ps(y[0], y[1], 0x88), _mm512_shuffle_ps(y[0], y[1], 0xDD));
}

static void attn_head_avx512(float *out, const float *q, const float *k, const float *v, int64_t n_pos,
                             int64_t head_dim, int64_t kv_stride, float scale, float *scores) {
    for (int64_t p = 0; p < n_pos; p++) scores[p] = dot_ps(q, k + p * kv_stride, head_dim) * scale;
    softmax_avx512(scores, n_pos);
    /* 4 vectors of the output stay in registers while every position's V row passes over them */
    for (int64_t i = 0; i < head_dim; i += 4 * L) {
        __mmask16 m[4];
        for (int u = 0; u < 4; u++) {
            const int64_t left = head_dim - i - u * L;
            m[u] = left >= L ? (__mmask16)0xffff : left > 0 ? tail(left) : 0;
        }
        __m512 o0 = _mm512_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
        for (int64_t p = 0; p < n_pos; p++) {
            const float *vp = v + p * kv_stride + i;
            const __m512 s = _mm512_set1_ps(scores[p]);
            o0 = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m[0], vp), o0);
            o1 = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m[1], vp + L), o1);
            o2 = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m[2], vp + 2 * L), o2);
            o3 = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m[3], vp + 3 * L), o3);
        }
        _mm512_mask_storeu_ps(out + i, m[0], o0);
        _mm512_mask_storeu_ps(out + i + L, m[1], o1);
        _mm512_mask_storeu_ps(out + i + 2 * L, m[2], o2);
        _mm512_mask_storeu_ps(out + i + 3 * L, m[3], o3);
    }
}

/* p . V for NH heads of a group: each V row is loaded once for the NH heads (4 output vectors per
 * head in registers: 16 accumulators at NH = 4); each accumulator sees the same fused
 * multiply-adds in the same order as in attn_head, so the bits are attn_head's. */
static inline __attribute__((always_inline)) void attn_pv_heads(const int F16, const int NH, float *out,
                                                                const float *scores, int64_t n_pos, const void *v,
                                                                int64_t head_dim, int64_t kv_stride) {
    for (int64_t i = 0; i < head_dim; i += 4 * L) {
        __mmask16 m[4];
        for (int u = 0; u < 4; u++) {
            const int64_t left = head_dim - i - u * L;
            m[u] = left >= L ? (__mmask16)0xffff : left > 0 ? tail(left) : 0;
        }
        __m512 o[4][4];
#pragma GCC unroll 4
        for (int h = 0; h < NH; h++)
            for (int u = 0; u < 4; u++) o[h][u] = _mm512_setzero_ps();
        for (int64_t p = 0; p < n_pos; p++) {
            const int64_t at = p * kv_stride + i;
            __m512 vv[4];
            for (int u = 0; u < 4; u++) vv[u] = kv_load(F16, v, at + u * L, m[u]);
#pragma GCC unroll 4
            for (int h = 0; h < NH; h++) {
                const __m512 s = _mm512_set1_ps(scores[h * n_pos + p]);
                for (int u = 0; u < 4; u++) o[h][u] = _mm512_fmadd_ps(s, vv[u], o[h][u]);
            }
        }
#pragma GCC unroll 4
        for (int h = 0; h < NH; h++)
            for (int u = 0; u < 4; u++) _mm512_mask_storeu_ps(out + h * head_dim + i + u * L, m[u], o[h][u]);
    }
}

/* Positions ahead whose K and V rows the score loop prefetches. A decode step meets a layer's cache
 * long evicted by the weights' stream, one head's rows kv_stride apart (1 KB on TinyLlama: 4 of
 * every 16 lines), which the hardware prefetchers barely follow: without this a 1.1B decode at
 * position 512 spent ~12% of its step waiting on the cache (42.5 -> 37.9 tok/s from position 64). */
#define ATTN_PF_POS 16
/* float16 K rows up to this head_dim widen into a float32 block on the stack (16 rows: 16 KiB) */
#define ATTN_WIDE_MAX 256

/* The lines of n elements of 4 (F16 = 0) or 2 bytes from element i of base */
static inline __attribute__((always_inline)) void prefetch_row(const int F16, const void *base, int64_t i, int64_t n) {
    const int64_t es = F16 ? 2 : 4;
    const char *p = (const char *)base + i * es;
    for (int64_t b = 0; b < n * es; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
}

/* Grouped-query attention: each K row is read once for all the group's heads (their scores), each
 * V row once per 4 heads, where attn_head per head read both once per head. Inlined per head_dim
 * (below), so that the loops over a row unroll and a head's q stays in registers. */
static inline __attribute__((always_inline)) void attn_group_hd(const int F16, const int64_t head_dim, float *out,
                                                                const float *q, int64_t n_heads, const void *k,
                                                                const void *v, int64_t n_pos, int64_t kv_stride,
                                                                float scale, float *scores, float *lse) {
    const int64_t es = F16 ? 2 : 4;
    for (int64_t p = 0; p < n_pos && p < ATTN_PF_POS; p++) prefetch_row(F16, k, p * kv_stride, head_dim);
    int64_t p = 0;
    /* 16 positions at a time: their K rows (4 KB at head_dim 64) stay in L1 while each head's 16
     * dot products run, and one hsum16 sums them. With the K/V rows in cache (prefill) a group of 8
     * heads at head_dim 64 took ~118 cycles a position; hsum16 made it ~110, and inlining per
     * head_dim ~76. A decode step, which finds the rows in memory, is bound by their reads
     * (~10 GB/s on one core with these T0 prefetches, no better with T1 or none) either way. */
    for (; p + 16 <= n_pos; p += 16) {
        const char *kp = (const char *)k + p * kv_stride * es;
        for (int64_t i = 0; i < 16; i++) {
            if (p + i + ATTN_PF_POS < n_pos) prefetch_row(F16, k, (p + i + ATTN_PF_POS) * kv_stride, head_dim);
            /* V waits for the softmax: ask for it now, it is read once the scores are done */
            prefetch_row(F16, v, (p + i) * kv_stride, head_dim);
        }
        /* float16 rows widen once here, not once per head (vcvtph2ps is 2 uops: per head it made
         * the group ~1.5x slower than float32 with the rows in cache) */
        float wide[F16 ? 16 * ATTN_WIDE_MAX : 1] __attribute__((aligned(64)));
        const int widen = F16 && head_dim <= ATTN_WIDE_MAX;
        if (widen)
            for (int s = 0; s < 16; s++)
                for (int64_t i = 0; i < head_dim; i += L) {
                    const __mmask16 m = head_dim - i >= L ? (__mmask16)0xffff : tail(head_dim - i);
                    _mm512_mask_storeu_ps(wide + s * head_dim + i, m, kv_load(1, kp + s * kv_stride * es, i, m));
                }
        for (int64_t h = 0; h < n_heads; h++) {
            __m512 lanes[16];
#pragma GCC unroll 16
            for (int s = 0; s < 16; s++)
                lanes[HSUM16_SLOT(s)] = widen ? dot_lanes_kv(0, q + h * head_dim, wide + s * head_dim, head_dim)
                                              : dot_lanes_kv(F16, q + h * head_dim, kp + s * kv_stride * es, head_dim);
            _mm512_storeu_ps(scores + h * n_pos + p, _mm512_mul_ps(hsum16(lanes), _mm512_set1_ps(scale)));
        }
    }
    for (; p < n_pos; p++) {
        const char *kp = (const char *)k + p * kv_stride * es;
        if (p + ATTN_PF_POS < n_pos) prefetch_row(F16, k, (p + ATTN_PF_POS) * kv_stride, head_dim);
        prefetch_row(F16, v, p * kv_stride, head_dim);
        for (int64_t h = 0; h < n_heads; h++)
            scores[h * n_pos + p] = hsum_ps(dot_lanes_kv(F16, q + h * head_dim, kp, head_dim)) * scale;
    }
    for (int64_t h = 0; h < n_heads; h++) {
        const double l = softmax_lse_avx512(scores + h * n_pos, n_pos);
        if (lse) lse[h] = (float)l;
    }
    for (int64_t h0 = 0; h0 < n_heads; h0 += 4) {
        float *o = out + h0 * head_dim;
        const float *sc = scores + h0 * n_pos;
        switch (n_heads - h0 < 4 ? n_heads - h0 : 4) {
        case 4: attn_pv_heads(F16, 4, o, sc, n_pos, v, head_dim, kv_stride); break;
        case 3: attn_pv_heads(F16, 3, o, sc, n_pos, v, head_dim, kv_stride); break;
        case 2: attn_pv_heads(F16, 2, o, sc, n_pos, v, head_dim, kv_stride); break;
        default: attn_pv_heads(F16, 1, o, sc, n_pos, v, head_dim, kv_stride); break;
        }
    }
}

/* head_dim 64 and 128 (most models) get loops unrolled for their width */
static inline __attribute__((always_inline)) void attn_group_kv(const int F16, float *out, const float *q,
                                                                int64_t n_heads, const void *k, const void *v,
                                                                int64_t n_pos, int64_t head_dim, int64_t kv_stride,
                                                                float scale, float *scores, float *lse) {
    if (head_dim == 64) attn_group_hd(F16, 64, out, q, n_heads, k, v, n_pos, kv_stride, scale, scores, lse);
    else if (head_dim == 128) attn_group_hd(F16, 128, out, q, n_heads, k, v, n_pos, kv_stride, scale, scores, lse);
    else attn_group_hd(F16, head_dim, out, q, n_heads, k, v, n_pos, kv_stride, scale, scores, lse);
}

static void attn_group_avx512(float *out, const float *q, int64_t n_heads, const float *k, const float *v,
                              int64_t n_pos, int64_t head_dim, int64_t kv_stride, float scale, float *scores,
                              float *lse) {
    attn_group_kv(0, out, q, n_heads, k, v, n_pos, head_dim, kv_stride, scale, scores, lse);
}

static void attn_group_f16_avx512(float *out, const float *q, int64_t n_heads, const uint16_t *k, const uint16_t *v,
                                  int64_t n_pos, int64_t head_dim, int64_t kv_stride, float scale, float *scores,
                                  float *lse) {
    attn_group_kv(1, out, q, n_heads, k, v, n_pos, head_dim, kv_stride, scale, scores, lse);
}

/* float16 by vcvtps2ph, round to nearest even: fc_fp32_to_fp16's bits */
static void to_f16_avx512(uint16_t *out, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + L <= n; i += L)
        _mm256_storeu_si256((__m256i *)(out + i), _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    if (i < n) {
        const __mmask16 m = tail(n - i);
        _mm256_mask_storeu_epi16(out + i, m, _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), _MM_FROUND_TO_NEAREST_INT));
    }
}

/* The bandwidth yardstick: 8 independent accumulators (8 cache lines in flight per iteration) so
 * that the add latency never limits the read rate; float32 lanes, summed in double at the end. */
static double sum_read_avx512(const float *x, int64_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    int64_t i = 0;
    for (; i + 8 * L <= n; i += 8 * L) {
        a0 = _mm512_add_ps(a0, _mm512_loadu_ps(x + i));
        a1 = _mm512_add_ps(a1, _mm512_loadu_ps(x + i + L));
        a2 = _mm512_add_ps(a2, _mm512_loadu_ps(x + i + 2 * L));
        a3 = _mm512_add_ps(a3, _mm512_loadu_ps(x + i + 3 * L));
        a4 = _mm512_add_ps(a4, _mm512_loadu_ps(x + i + 4 * L));
        a5 = _mm512_add_ps(a5, _mm512_loadu_ps(x + i + 5 * L));
        a6 = _mm512_add_ps(a6, _mm512_loadu_ps(x + i + 6 * L));
        a7 = _mm512_add_ps(a7, _mm512_loadu_ps(x + i + 7 * L));
    }
    for (; i < n; i += L) a0 = _mm512_add_ps(a0, _mm512_maskz_loadu_ps(n - i >= L ? (__mmask16)0xffff : tail(n - i), x + i));
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    acc_pd(&s0, &s1, a0); acc_pd(&s0, &s1, a1); acc_pd(&s0, &s1, a2); acc_pd(&s0, &s1, a3);
    acc_pd(&s0, &s1, a4); acc_pd(&s0, &s1, a5); acc_pd(&s0, &s1, a6); acc_pd(&s0, &s1, a7);
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

FC_REG(ops_avx512) {
    t->ops.rmsnorm = rmsnorm_avx512;
    t->ops.rope = rope_avx512;
    t->ops.softmax = softmax_avx512;
    t->ops.silu_mul = silu_mul_avx512;
    t->ops.add = add_avx512;
    t->ops.attn_head = attn_head_avx512;
    t->ops.attn_group = attn_group_avx512;
    t->ops.attn_group_f16 = attn_group_f16_avx512;
    t->ops.to_f16 = to_f16_avx512;
    t->ops.sum_read = sum_read_avx512;
}
