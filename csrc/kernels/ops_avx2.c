/* Per-token transformer ops, AVX2 + FMA.
 *
 * Instructions: vfmadd*ps ymm, vmaskmovps for tails (masked-out lanes never fault, so no scalar
 * tail loops), integer exponent arithmetic (vpaddd/vpslld) to build 2^n in exp, vcvtps2pd for
 * double-precision sums, vpermilps for the interleaved rope layout, vperm2f128 + vshufps for 8
 * attention scores' horizontal sums at once, vcvtph2ps (F16C) to widen a float16 KV cache.
 * Accumulators: float32 lanes, except the rmsnorm sum of squares and the softmax denominator, which
 * accumulate in float64 lanes like their scalar twins.
 *
 * Spec: ops_scalar.c. exp is a polynomial approximation (exp_ps below, within a few ulp); rope takes
 * its cos/sin from libm exactly like the scalar twin, so only the rotation is vectorised.
 */
#include <immintrin.h>
#include <math.h>

#include "fc_internal.h"

#define L 8

static inline __m256i mask(int64_t left) {
    static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(m + 8 - (left > 8 ? 8 : left)));
}

/* e^x for float32 lanes. x = n ln2 + r with |r| <= ln2/2 (ln2 split so that n*ln2_hi is exact);
 * e^r by its Taylor series to degree 7 (truncation < 2^-27 relative), Horner in FMA. 2^n is built
 * in the exponent field as 2^(n-1) * 2 so that n = 128 (x up to ln(FLT_MAX)) still fits; n = -126
 * (x < -86.99, true results below 2.4e-38) is flushed to 0, and above 88.72 the result is inf.
 * Error: a few ulp on normal results. */
static inline __m256 exp_ps(__m256 x) {
    const __m256 hi_lim = _mm256_set1_ps(88.7228394f), lo_lim = _mm256_set1_ps(-87.3365479f);
    const __m256 over = _mm256_cmp_ps(x, hi_lim, _CMP_GT_OQ), under = _mm256_cmp_ps(x, lo_lim, _CMP_LT_OQ);
    const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo_lim), hi_lim);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* n in [-126, 128] here; 2^(n-1) has a biased exponent n + 126 in [0, 254] */
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(126)), 23);
    __m256 y = _mm256_mul_ps(_mm256_add_ps(p, p), _mm256_castsi256_ps(e));
    y = _mm256_andnot_ps(under, y);
    return _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), over);
}

static inline double hsum_pd(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
static inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* float32 lanes -> sum into two float64 accumulators */
static inline void acc_pd(__m256d *lo, __m256d *hi, __m256 v) {
    *lo = _mm256_add_pd(*lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    *hi = _mm256_add_pd(*hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

static inline __m256 ld(const float *p, int64_t left) {
    return left >= L ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask(left));
}
static inline void st(float *p, int64_t left, __m256 v) {
    if (left >= L) _mm256_storeu_ps(p, v);
    else _mm256_maskstore_ps(p, mask(left), v);
}

static void rmsnorm_avx2(float *out, const float *x, const float *w, int64_t n, float eps) {
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    for (int64_t i = 0; i < n; i += L) {
        const __m256 v = ld(x + i, n - i);
        const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        s0 = _mm256_fmadd_pd(lo, lo, s0);
        s1 = _mm256_fmadd_pd(hi, hi, s1);
    }
    const double ss = hsum_pd(_mm256_add_pd(s0, s1));
    const __m256 scale = _mm256_set1_ps((float)(1.0 / sqrt(ss / (double)n + (double)eps)));
    for (int64_t i = 0; i < n; i += L)
        st(out + i, n - i, _mm256_mul_ps(_mm256_mul_ps(ld(x + i, n - i), scale), ld(w + i, n - i)));
}

#define ROPE_CHUNK 64 /* pairs whose cos/sin are computed at once, then applied to every head */

static void rope_avx2(float *x, int64_t n_heads, int64_t head_dim, int64_t pos, const float *inv_freq, int neox) {
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
                    const int64_t left = m - i;
                    const __m256 a = ld(pa + i, left), b = ld(pb + i, left);
                    const __m256 cv = ld(c + i, left), sv = ld(s + i, left);
                    st(pa + i, left, _mm256_fmsub_ps(a, cv, _mm256_mul_ps(b, sv)));
                    st(pb + i, left, _mm256_fmadd_ps(a, sv, _mm256_mul_ps(b, cv)));
                }
            } else {
                float *p = v + 2 * i0;
                const int64_t e = 2 * m;
                for (int64_t i = 0; i < e; i += L) {
                    const int64_t left = e - i;
                    const __m256 ab = ld(p + i, left);
                    const __m256 ba = _mm256_permute_ps(ab, 0xB1); /* swap within pairs */
                    const __m256 cv = ld(c + i, left), sv = ld(s + i, left);
                    /* (a c - b s, b c + a s) */
                    st(p + i, left, _mm256_fmadd_ps(ba, sv, _mm256_mul_ps(ab, cv)));
                }
            }
        }
    }
}

/* Returns log(sum_i e^x_i) of the input, as softmax_lse_ref */
static double softmax_lse_avx2(float *x, int64_t n) {
    __m256 mv = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + L <= n; i += L) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
    float m = -INFINITY;
    {
        __m128 t = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
        t = _mm_max_ps(t, _mm_movehl_ps(t, t));
        t = _mm_max_ss(t, _mm_movehdup_ps(t));
        m = _mm_cvtss_f32(t);
    }
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    const __m256 mx = _mm256_set1_ps(m);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    for (i = 0; i < n; i += L) {
        const int64_t left = n - i;
        __m256 e = exp_ps(_mm256_sub_ps(ld(x + i, left), mx));
        if (left < L) e = _mm256_and_ps(e, _mm256_castsi256_ps(mask(left)));
        st(x + i, left, e);
        acc_pd(&s0, &s1, e);
    }
    const double sum = hsum_pd(_mm256_add_pd(s0, s1));
    const __m256 inv = _mm256_set1_ps((float)(1.0 / sum));
    for (i = 0; i < n; i += L) st(x + i, n - i, _mm256_mul_ps(ld(x + i, n - i), inv));
    return m + log(sum);
}

static void softmax_avx2(float *x, int64_t n) { (void)softmax_lse_avx2(x, n); }

static void silu_mul_avx2(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i += L) {
        const __m256 g = ld(gate + i, n - i);
        /* g / (1 + e^-g): e^-g is inf for g < -88.7, giving -0 like the scalar twin */
        const __m256 d = _mm256_add_ps(_mm256_set1_ps(1.0f), exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), g)));
        st(out + i, n - i, _mm256_mul_ps(_mm256_div_ps(g, d), ld(up + i, n - i)));
    }
}

static void add_avx2(float *out, const float *a, const float *b, int64_t n) {
    int64_t i = 0;
    for (; i + L <= n; i += L) _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    if (i < n) st(out + i, n - i, _mm256_add_ps(ld(a + i, n - i), ld(b + i, n - i)));
}

/* Positions ahead whose K rows the score loop prefetches (V is asked for along the way): a decode
 * step meets a layer's cache evicted by the weights' stream, one head's rows kv_stride apart, which
 * the hardware prefetchers barely follow (see ops_avx512.c). */
#define ATTN_PF_POS 16

/* The lines of n elements of 4 (f16 = 0) or 2 bytes from element i of base */
static inline __attribute__((always_inline)) void prefetch_row(const int f16, const void *base, int64_t i, int64_t n) {
    const int64_t es = f16 ? 2 : 4;
    const char *p = (const char *)base + i * es;
    for (int64_t b = 0; b < n * es; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
}

/* 8 (fewer: left, the rest zero) K/V elements from element i of a float32 or float16 row, as float32
 * (float16 widens exactly: the arithmetic after it is the float32 path's) */
static inline __attribute__((always_inline)) __m256 kv_ld(const int f16, const void *row, int64_t i, int64_t left) {
    if (!f16) return ld((const float *)row + i, left);
    const uint16_t *h = (const uint16_t *)row + i;
    if (left >= L) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
    uint16_t t[L] = {0};
    memcpy(t, h, (size_t)left * sizeof *t);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)t));
}

/* a . b before its horizontal sum (b a K row of either type): two chains over alternate 8-lane
 * chunks, the tail into the first, then added; hsum_ps of it is the dot product. */
static inline __attribute__((always_inline)) __m256 dot_lanes_kv(const int f16, const float *a, const void *b,
                                                                 int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 2 * L <= n; i += 2 * L) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), kv_ld(f16, b, i, L), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + L), kv_ld(f16, b, i + L, L), s1);
    }
    for (; i < n; i += L) s0 = _mm256_fmadd_ps(ld(a + i, n - i), kv_ld(f16, b, i, n - i), s0);
    return _mm256_add_ps(s0, s1);
}

/* Lane s of the result is hsum_ps(v[HSUM8_SLOT(s)]) for 8 vectors at once: each level pairs the
 * lanes hsum_ps pairs (i + (i + 4), then + 2, then + 1), so the same bits, in 14 instructions
 * where 8 hsum_ps take ~40. */
#define HSUM8_SLOT(s) ((s) < 4 ? 2 * (s) : 2 * ((s) - 4) + 1)
static inline __m256 hsum8(const __m256 v[8]) {
    __m256 w[4], x[2];
    for (int k = 0; k < 4; k++) /* v[2k]'s four sums in lanes 0..3, v[2k+1]'s in 4..7 */
        w[k] = _mm256_add_ps(_mm256_permute2f128_ps(v[2 * k], v[2 * k + 1], 0x20),
                             _mm256_permute2f128_ps(v[2 * k], v[2 * k + 1], 0x31));
    for (int k = 0; k < 2; k++) /* + 2: each 128-bit half holds two vectors' pairs */
        x[k] = _mm256_add_ps(_mm256_shuffle_ps(w[2 * k], w[2 * k + 1], 0x44),
                             _mm256_shuffle_ps(w[2 * k], w[2 * k + 1], 0xEE));
    /* + 1: lanes 0..3 hold v[0], v[2], v[4], v[6]; lanes 4..7 v[1], v[3], v[5], v[7] */
    return _mm256_add_ps(_mm256_shuffle_ps(x[0], x[1], 0x88), _mm256_shuffle_ps(x[0], x[1], 0xDD));
}

/* p . V for NH (1..4) heads of a group: each V row is loaded (and, float16, widened) once for the
 * NH heads, 2 output vectors per head in registers (AVX2 has 16). Every output element is the
 * same chain of fused multiply-adds over the positions in order whatever NH or the chunking, so
 * the bits do not depend on them. */
static inline __attribute__((always_inline)) void pv_heads(const int f16, const int NH, float *out,
                                                           const float *scores, int64_t n_pos, const void *v,
                                                           int64_t head_dim, int64_t kv_stride) {
    for (int64_t i = 0; i < head_dim; i += 2 * L) {
        const int64_t l0 = head_dim - i, l1 = l0 - L;
        __m256 o[4][2];
        for (int h = 0; h < NH; h++) o[h][0] = o[h][1] = _mm256_setzero_ps();
        for (int64_t p = 0; p < n_pos; p++) {
            const int64_t at = p * kv_stride + i;
            const __m256 v0 = kv_ld(f16, v, at, l0);
            const __m256 v1 = l1 > 0 ? kv_ld(f16, v, at + L, l1) : _mm256_setzero_ps();
#pragma GCC unroll 4
            for (int h = 0; h < NH; h++) {
                const __m256 s = _mm256_set1_ps(scores[h * n_pos + p]);
                o[h][0] = _mm256_fmadd_ps(s, v0, o[h][0]);
                o[h][1] = _mm256_fmadd_ps(s, v1, o[h][1]);
            }
        }
        for (int h = 0; h < NH; h++) {
            st(out + h * head_dim + i, l0, o[h][0]);
            if (l1 > 0) st(out + h * head_dim + i + L, l1, o[h][1]);
        }
    }
}

/* One head (the specification of the group kernel below: one hsum_ps per score) */
static void attn_head_avx2(float *out, const float *q, const float *k, const float *v, int64_t n_pos,
                           int64_t head_dim, int64_t kv_stride, float scale, float *scores) {
    for (int64_t p = 0; p < n_pos; p++) scores[p] = hsum_ps(dot_lanes_kv(0, q, k + p * kv_stride, head_dim)) * scale;
    (void)softmax_lse_avx2(scores, n_pos);
    pv_heads(0, 1, out, scores, n_pos, v, head_dim, kv_stride);
}

/* float16 K rows up to this head_dim widen into a float32 block on the stack (8 rows: 8 KiB) */
#define ATTN_WIDE_MAX 256

/* Grouped-query attention: each K row is read (and widened) once for all the group's heads, 8
 * positions at a time whose 8 K rows stay in L1 while each head's 8 dot products run, summed by
 * one hsum8; each V row once per 4 heads. Same bits as attn_head per head (tested). Inlined per
 * head_dim (below) so that the loops over a row unroll. 8 heads at head_dim 64, rows in cache:
 * head after head took ~330 cycles a position (float16 ~250), grouped ~114 (float16 ~127). */
static inline __attribute__((always_inline)) void group_hd(const int f16, const int64_t head_dim, float *out,
                                                           const float *q, int64_t n_heads, const void *k,
                                                           const void *v, int64_t n_pos, int64_t kv_stride,
                                                           float scale, float *scores, float *lse) {
    const int64_t es = f16 ? 2 : 4;
    for (int64_t p = 0; p < n_pos && p < ATTN_PF_POS; p++) prefetch_row(f16, k, p * kv_stride, head_dim);
    const int widen = f16 && head_dim <= ATTN_WIDE_MAX;
    int64_t p = 0;
    for (; p + 8 <= n_pos; p += 8) {
        const char *kp = (const char *)k + p * kv_stride * es;
        for (int64_t i = 0; i < 8; i++) {
            if (p + i + ATTN_PF_POS < n_pos) prefetch_row(f16, k, (p + i + ATTN_PF_POS) * kv_stride, head_dim);
            /* V waits for the softmax: ask for it now, it is read once the scores are done */
            prefetch_row(f16, v, (p + i) * kv_stride, head_dim);
        }
        float wide[f16 ? 8 * ATTN_WIDE_MAX : 1] __attribute__((aligned(32)));
        if (widen)
            for (int s = 0; s < 8; s++)
                for (int64_t i = 0; i < head_dim; i += L)
                    st(wide + s * head_dim + i, head_dim - i, kv_ld(1, kp + s * kv_stride * es, i, head_dim - i));
        for (int64_t h = 0; h < n_heads; h++) {
            __m256 lanes[8];
#pragma GCC unroll 8
            for (int s = 0; s < 8; s++)
                lanes[HSUM8_SLOT(s)] = widen ? dot_lanes_kv(0, q + h * head_dim, wide + s * head_dim, head_dim)
                                             : dot_lanes_kv(f16, q + h * head_dim, kp + s * kv_stride * es, head_dim);
            _mm256_storeu_ps(scores + h * n_pos + p, _mm256_mul_ps(hsum8(lanes), _mm256_set1_ps(scale)));
        }
    }
    for (; p < n_pos; p++) {
        const char *kp = (const char *)k + p * kv_stride * es;
        if (p + ATTN_PF_POS < n_pos) prefetch_row(f16, k, (p + ATTN_PF_POS) * kv_stride, head_dim);
        prefetch_row(f16, v, p * kv_stride, head_dim);
        for (int64_t h = 0; h < n_heads; h++)
            scores[h * n_pos + p] = hsum_ps(dot_lanes_kv(f16, q + h * head_dim, kp, head_dim)) * scale;
    }
    for (int64_t h = 0; h < n_heads; h++) {
        const double l = softmax_lse_avx2(scores + h * n_pos, n_pos);
        if (lse) lse[h] = (float)l;
    }
    for (int64_t h0 = 0; h0 < n_heads; h0 += 4) {
        float *o = out + h0 * head_dim;
        const float *sc = scores + h0 * n_pos;
        switch (n_heads - h0 < 4 ? n_heads - h0 : 4) {
        case 4: pv_heads(f16, 4, o, sc, n_pos, v, head_dim, kv_stride); break;
        case 3: pv_heads(f16, 3, o, sc, n_pos, v, head_dim, kv_stride); break;
        case 2: pv_heads(f16, 2, o, sc, n_pos, v, head_dim, kv_stride); break;
        default: pv_heads(f16, 1, o, sc, n_pos, v, head_dim, kv_stride); break;
        }
    }
}

/* head_dim 64 and 128 (most models) get loops unrolled for their width */
static inline __attribute__((always_inline)) void group_kv(const int f16, float *out, const float *q, int64_t n_heads,
                                                           const void *k, const void *v, int64_t n_pos,
                                                           int64_t head_dim, int64_t kv_stride, float scale,
                                                           float *scores, float *lse) {
    if (head_dim == 64) group_hd(f16, 64, out, q, n_heads, k, v, n_pos, kv_stride, scale, scores, lse);
    else if (head_dim == 128) group_hd(f16, 128, out, q, n_heads, k, v, n_pos, kv_stride, scale, scores, lse);
    else group_hd(f16, head_dim, out, q, n_heads, k, v, n_pos, kv_stride, scale, scores, lse);
}

/* The bandwidth yardstick: 8 independent accumulators (4 cache lines per iteration) so that the add
 * latency never limits the read rate; float32 lanes, summed in double at the end. */
static double sum_read_avx2(const float *x, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    int64_t i = 0;
    for (; i + 8 * L <= n; i += 8 * L) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + i));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(x + i + L));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(x + i + 2 * L));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(x + i + 3 * L));
        a4 = _mm256_add_ps(a4, _mm256_loadu_ps(x + i + 4 * L));
        a5 = _mm256_add_ps(a5, _mm256_loadu_ps(x + i + 5 * L));
        a6 = _mm256_add_ps(a6, _mm256_loadu_ps(x + i + 6 * L));
        a7 = _mm256_add_ps(a7, _mm256_loadu_ps(x + i + 7 * L));
    }
    for (; i < n; i += L) a0 = _mm256_add_ps(a0, ld(x + i, n - i));
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    acc_pd(&s0, &s1, a0); acc_pd(&s0, &s1, a1); acc_pd(&s0, &s1, a2); acc_pd(&s0, &s1, a3);
    acc_pd(&s0, &s1, a4); acc_pd(&s0, &s1, a5); acc_pd(&s0, &s1, a6); acc_pd(&s0, &s1, a7);
    return hsum_pd(_mm256_add_pd(s0, s1));
}

static void attn_group_f16_avx2(float *out, const float *q, int64_t n_heads, const uint16_t *k, const uint16_t *v,
                                int64_t n_pos, int64_t head_dim, int64_t kv_stride, float scale, float *scores,
                                float *lse) {
    group_kv(1, out, q, n_heads, k, v, n_pos, head_dim, kv_stride, scale, scores, lse);
}

/* float16 by vcvtps2ph, round to nearest even: fc_fp32_to_fp16's bits */
static void to_f16_avx2(uint16_t *out, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + L <= n; i += L)
        _mm_storeu_si128((__m128i *)(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) out[i] = fc_fp32_to_fp16(x[i]);
}

static void attn_group_avx2(float *out, const float *q, int64_t n_heads, const float *k, const float *v,
                            int64_t n_pos, int64_t head_dim, int64_t kv_stride, float scale, float *scores,
                            float *lse) {
    group_kv(0, out, q, n_heads, k, v, n_pos, head_dim, kv_stride, scale, scores, lse);
}

FC_REG(ops_avx2) {
    t->ops.rmsnorm = rmsnorm_avx2;
    t->ops.rope = rope_avx2;
    t->ops.softmax = softmax_avx2;
    t->ops.silu_mul = silu_mul_avx2;
    t->ops.add = add_avx2;
    t->ops.attn_head = attn_head_avx2;
    t->ops.attn_group = attn_group_avx2;
    t->ops.attn_group_f16 = attn_group_f16_avx2;
    t->ops.to_f16 = to_f16_avx2;
    t->ops.sum_read = sum_read_avx2;
}
