/* F32, F16 and BF16 weights with float32 activations, AVX2 + FMA + F16C.
 *
 * Instructions: vfmadd231ps ymm (products and sums in float32), vcvtph2ps ymm (F16 -> F32, exact),
 * vpmovzxwd + vpslld 16 (BF16 -> F32, exact), vmaskmovps for the F32 row tail (masked-out lanes
 * never fault); F16/BF16 tails go through a zeroed 8-element buffer (AVX2 has no 16-bit masked load).
 * Accumulator: float32, one vector per (weight row, activation row); no integer overflow limit.
 *
 * Spec: float_scalar.c (same products, float32 sums; only the summation order differs: 8 lanes
 * then a fixed tree). Every (row, activation) pair is computed by the same instruction sequence
 * whatever tile it falls in, so results do not depend on how rows are split across threads.
 *
 * GEMV (n == 1) streams 4 weight rows at once (4 FMA chains), each prefetched 1 KB ahead (as in
 * float_avx512.c); GEMM tiles 4 weight rows x 3
 * activation rows (12 accumulators + 3 activation vectors + 1 weight vector: the 16 ymm registers),
 * so every weight vector loaded feeds 3 FMAs and every activation vector 4.
 */
#include <immintrin.h>

#include "fc_internal.h"

#define LANES 8

/* Activation rows are padded with zeros to whole vectors: the tail needs no masked activation
 * load (the weight tail is zero, and 0 * 0 adds nothing). */
static size_t act_row_bytes_pad8(int64_t k) { return (size_t)((k + LANES - 1) & ~(int64_t)(LANES - 1)) * sizeof(float); }

static void quantize_pad8(const float *FC_RESTRICT x, void *FC_RESTRICT xq, int64_t k) {
    float *d = xq;
    memcpy(d, x, (size_t)k * sizeof(float));
    for (int64_t i = k; i < ((k + LANES - 1) & ~(int64_t)(LANES - 1)); i++) d[i] = 0.0f;
}

static inline __m256i tail_mask(int64_t left) {
    static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(m + 8 - left));
}

static inline __m256 load_f32(const void *p, int64_t i) { return _mm256_loadu_ps((const float *)p + i); }
static inline __m256 load_f32_tail(const void *p, int64_t i, int64_t left) {
    return _mm256_maskload_ps((const float *)p + i, tail_mask(left));
}
static inline __m128i load16_tail(const void *p, int64_t i, int64_t left) {
    uint16_t buf[8] = {0};
    memcpy(buf, (const uint16_t *)p + i, (size_t)left * 2);
    return _mm_loadu_si128((const __m128i *)buf);
}
static inline __m256 load_f16(const void *p, int64_t i) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
}
static inline __m256 load_f16_tail(const void *p, int64_t i, int64_t left) {
    return _mm256_cvtph_ps(load16_tail(p, i, left));
}
static inline __m256 bf16_widen(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
static inline __m256 load_bf16(const void *p, int64_t i) {
    return bf16_widen(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
}
static inline __m256 load_bf16_tail(const void *p, int64_t i, int64_t left) {
    return bf16_widen(load16_tail(p, i, left));
}

/* fixed reduction tree: ((0+4)+(2+6)) + ((1+5)+(3+7)) */
static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* RB weight rows from r, NB activation rows from j; RB and NB are constants at every call site,
 * so the accumulators live in registers. */
#define FLOAT_TILE(NAME, LOAD, LOAD_TAIL, ESZ)                                                         \
    static inline __attribute__((always_inline)) void NAME(const fc_gemm_args *a, int64_t r,         \
                                                           int64_t j, const int RB, const int NB) { \
        const int64_t k = a->k;                                                                     \
        const uint8_t *w[4];                                                                        \
        const float *x[4];                                                                          \
        __m256 acc[4][4];                                                                           \
        for (int rb = 0; rb < RB; rb++) w[rb] = a->w + (r + rb) * a->w_row_bytes;                  \
        for (int nb = 0; nb < NB; nb++) x[nb] = (const float *)(a->xq + (j + nb) * a->xq_row_bytes);\
        for (int rb = 0; rb < RB; rb++)                                                             \
            for (int nb = 0; nb < NB; nb++) acc[rb][nb] = _mm256_setzero_ps();                      \
        int64_t i = 0;                                                                              \
        for (; i + LANES <= k; i += LANES) {                                                        \
            __m256 xv[4];                                                                           \
            for (int nb = 0; nb < NB; nb++) xv[nb] = _mm256_loadu_ps(x[nb] + i);                    \
            for (int rb = 0; rb < RB; rb++) {                                                       \
                if (NB == 1) _mm_prefetch((const char *)w[rb] + i * ESZ + 1024, _MM_HINT_T0);        \
                const __m256 wv = LOAD(w[rb], i);                                                   \
                for (int nb = 0; nb < NB; nb++) acc[rb][nb] = _mm256_fmadd_ps(wv, xv[nb], acc[rb][nb]); \
            }                                                                                       \
        }                                                                                           \
        if (i < k) {                                                                                \
            __m256 xv[4];                                                                           \
            for (int nb = 0; nb < NB; nb++) xv[nb] = _mm256_loadu_ps(x[nb] + i);                    \
            for (int rb = 0; rb < RB; rb++) {                                                       \
                const __m256 wv = LOAD_TAIL(w[rb], i, k - i);                                       \
                for (int nb = 0; nb < NB; nb++) acc[rb][nb] = _mm256_fmadd_ps(wv, xv[nb], acc[rb][nb]); \
            }                                                                                       \
        }                                                                                           \
        for (int nb = 0; nb < NB; nb++)                                                             \
            for (int rb = 0; rb < RB; rb++) a->y[(j + nb) * a->ldy + r + rb] = hsum8(acc[rb][nb]);  \
    }

/* GEMM passes: KC columns of a 4-row weight tile (4 KB as F32) and of JB activation rows (16 KB)
 * stay in L1 while the tile's accumulators go round through memory once per pass. Each
 * (row, activation) lane still sums its products in column order: the result is the one the
 * unblocked tile gives. */
#define KC 256
#define JB 16

#define FLOAT_TILE_ACC(NAME, LOAD, LOAD_TAIL)                                                       \
    static inline __attribute__((always_inline)) void NAME(const fc_gemm_args *a, int64_t r,         \
                                                           int64_t j, int64_t kb, int64_t ke,       \
                                                           __m256 *accm, const int RB, const int NB) { \
        const uint8_t *w[4];                                                                        \
        const float *x[4];                                                                          \
        __m256 acc[4][4];                                                                           \
        for (int rb = 0; rb < RB; rb++) w[rb] = a->w + (r + rb) * a->w_row_bytes;                  \
        for (int nb = 0; nb < NB; nb++) x[nb] = (const float *)(a->xq + (j + nb) * a->xq_row_bytes);\
        for (int rb = 0; rb < RB; rb++)                                                             \
            for (int nb = 0; nb < NB; nb++) acc[rb][nb] = accm[rb * JB + nb];                        \
        int64_t i = kb;                                                                             \
        for (; i + LANES <= ke; i += LANES) {                                                       \
            __m256 xv[4];                                                                           \
            for (int nb = 0; nb < NB; nb++) xv[nb] = _mm256_loadu_ps(x[nb] + i);                    \
            for (int rb = 0; rb < RB; rb++) {                                                       \
                const __m256 wv = LOAD(w[rb], i);                                                   \
                for (int nb = 0; nb < NB; nb++) acc[rb][nb] = _mm256_fmadd_ps(wv, xv[nb], acc[rb][nb]); \
            }                                                                                       \
        }                                                                                           \
        if (i < ke) {                                                                               \
            __m256 xv[4];                                                                           \
            for (int nb = 0; nb < NB; nb++) xv[nb] = _mm256_loadu_ps(x[nb] + i);                    \
            for (int rb = 0; rb < RB; rb++) {                                                       \
                const __m256 wv = LOAD_TAIL(w[rb], i, ke - i);                                      \
                for (int nb = 0; nb < NB; nb++) acc[rb][nb] = _mm256_fmadd_ps(wv, xv[nb], acc[rb][nb]); \
            }                                                                                       \
        }                                                                                           \
        for (int rb = 0; rb < RB; rb++)                                                             \
            for (int nb = 0; nb < NB; nb++) accm[rb * JB + nb] = acc[rb][nb];                        \
    }

/* One weight tile of RB rows against activation rows [j0, j0 + jn), jn <= JB. */
#define FLOAT_PASS(NAME, TILE_ACC)                                                                  \
    static inline __attribute__((always_inline)) void NAME(const fc_gemm_args *a, int64_t r,         \
                                                           int64_t j0, int64_t jn, const int RB) {  \
        __m256 accm[4 * JB];                                                                        \
        for (int q = 0; q < RB * JB; q++) accm[q] = _mm256_setzero_ps();                            \
        for (int64_t kb = 0; kb < a->k; kb += KC) {                                                 \
            const int64_t ke = kb + KC < a->k ? kb + KC : a->k;                                     \
            int64_t jj = 0;                                                                         \
            for (; jj + 3 <= jn; jj += 3) TILE_ACC(a, r, j0 + jj, kb, ke, accm + jj, RB, 3);        \
            for (; jj < jn; jj++) TILE_ACC(a, r, j0 + jj, kb, ke, accm + jj, RB, 1);                \
        }                                                                                           \
        for (int64_t jj = 0; jj < jn; jj++)                                                         \
            for (int rb = 0; rb < RB; rb++) a->y[(j0 + jj) * a->ldy + r + rb] = hsum8(accm[rb * JB + jj]); \
    }

#define FLOAT_GEMM(NAME, TILE, PASS)                                                                \
    static void NAME(const fc_gemm_args *a, int64_t r0, int64_t r1) {                                \
        int64_t r = r0;                                                                             \
        if (a->n == 1) {                                                                            \
            for (; r + 4 <= r1; r += 4) TILE(a, r, 0, 4, 1);                                        \
            for (; r < r1; r++) TILE(a, r, 0, 1, 1);                                                \
            return;                                                                                 \
        }                                                                                           \
        for (; r + 4 <= r1; r += 4)                                                                 \
            for (int64_t j0 = 0; j0 < a->n; j0 += JB) PASS(a, r, j0, a->n - j0 < JB ? a->n - j0 : JB, 4); \
        for (; r < r1; r++)                                                                         \
            for (int64_t j0 = 0; j0 < a->n; j0 += JB) PASS(a, r, j0, a->n - j0 < JB ? a->n - j0 : JB, 1); \
    }

FLOAT_TILE(tile_f32, load_f32, load_f32_tail, 4)
FLOAT_TILE(tile_f16, load_f16, load_f16_tail, 2)
FLOAT_TILE(tile_bf16, load_bf16, load_bf16_tail, 2)
FLOAT_TILE_ACC(tacc_f32, load_f32, load_f32_tail)
FLOAT_TILE_ACC(tacc_f16, load_f16, load_f16_tail)
FLOAT_TILE_ACC(tacc_bf16, load_bf16, load_bf16_tail)
FLOAT_PASS(pass_f32, tacc_f32)
FLOAT_PASS(pass_f16, tacc_f16)
FLOAT_PASS(pass_bf16, tacc_bf16)
FLOAT_GEMM(gemm_f32_f32_avx2, tile_f32, pass_f32)
FLOAT_GEMM(gemm_f16_f32_avx2, tile_f16, pass_f16)
FLOAT_GEMM(gemm_bf16_f32_avx2, tile_bf16, pass_bf16)

FC_REG(float_avx2) {
    /* dequantize stays the scalar one (exact conversions; not on a hot path) */
    t->q[FC_F32].act_row_bytes = act_row_bytes_pad8;
    t->q[FC_F32].quantize = quantize_pad8;
    t->q[FC_F32].gemm = gemm_f32_f32_avx2;
    t->q[FC_F32].isa = FC_ISA_AVX2;
    t->q[FC_F16].act_row_bytes = act_row_bytes_pad8;
    t->q[FC_F16].quantize = quantize_pad8;
    t->q[FC_F16].gemm = gemm_f16_f32_avx2;
    t->q[FC_F16].isa = FC_ISA_AVX2;
    t->q[FC_BF16].act_row_bytes = act_row_bytes_pad8;
    t->q[FC_BF16].quantize = quantize_pad8;
    t->q[FC_BF16].gemm = gemm_bf16_f32_avx2;
    t->q[FC_BF16].isa = FC_ISA_AVX2;
}
