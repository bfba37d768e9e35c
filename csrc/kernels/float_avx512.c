/* F32, F16 and BF16 weights with float32 activations, AVX-512 (F/BW/VL).
 *
 * Instructions: vfmadd231ps zmm (products and sums in float32, one rounding per FMA),
 * vcvtph2ps zmm (F16 -> F32, exact), vpmovzxwd + vpslld 16 (BF16 -> F32, exact),
 * masked loads (vmovups/vmovdqu16 {z}) for the row tail, vreduce-style shuffles for the final sum.
 * Accumulator: float32, one vector per (weight row, activation row); no integer overflow limit.
 *
 * Spec: float_scalar.c (same products, float32 sums; only the summation order differs: 16 lanes
 * then a fixed tree). Every (row, activation) pair is computed by the same instruction sequence
 * whatever tile it falls in, so results do not depend on how rows are split across threads.
 *
 * GEMV (n == 1) streams 8 weight rows at once (8 independent FMA chains hide the FMA latency while
 * the loads stay sequential per row); GEMM tiles 4 weight rows x 4 activation rows so that every
 * weight vector loaded feeds 4 FMAs, with the weight tile's rows staying in L1/L2 while all
 * activation rows pass over it.
 */
#include <immintrin.h>

#include "fc_internal.h"

#define LANES 16

/* Activation rows are padded with zeros to whole vectors so that the tail needs no masked
 * activation load (the weight tail is masked to zero, and 0 * 0 adds nothing). */
static size_t act_row_bytes_pad16(int64_t k) { return (size_t)((k + LANES - 1) & ~(int64_t)(LANES - 1)) * sizeof(float); }

static void quantize_pad16(const float *FC_RESTRICT x, void *FC_RESTRICT xq, int64_t k) {
    float *d = xq;
    memcpy(d, x, (size_t)k * sizeof(float));
    for (int64_t i = k; i < ((k + LANES - 1) & ~(int64_t)(LANES - 1)); i++) d[i] = 0.0f;
}

static inline __m512 load_f32(const void *p, int64_t i) { return _mm512_loadu_ps((const float *)p + i); }
static inline __m512 load_f32_tail(const void *p, int64_t i, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, (const float *)p + i);
}
static inline __m512 load_f16(const void *p, int64_t i) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
}
static inline __m512 load_f16_tail(const void *p, int64_t i, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i));
}
static inline __m512 bf16_widen(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
static inline __m512 load_bf16(const void *p, int64_t i) {
    return bf16_widen(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
}
static inline __m512 load_bf16_tail(const void *p, int64_t i, __mmask16 m) {
    return bf16_widen(_mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i));
}

/* RB weight rows from r, NB activation rows from j. RB and NB are constants at every call site, so
 * the accumulator arrays live in registers. */
#define FLOAT_TILE(NAME, LOAD, LOAD_TAIL)                                                           \
    static inline __attribute__((always_inline)) void NAME(const fc_gemm_args *a, int64_t r,         \
                                                           int64_t j, const int RB, const int NB) { \
        const int64_t k = a->k;                                                                     \
        const uint8_t *w[8];                                                                        \
        const float *x[4];                                                                          \
        __m512 acc[8][4];                                                                           \
        for (int rb = 0; rb < RB; rb++) w[rb] = a->w + (r + rb) * a->w_row_bytes;                  \
        for (int nb = 0; nb < NB; nb++) x[nb] = (const float *)(a->xq + (j + nb) * a->xq_row_bytes);\
        for (int rb = 0; rb < RB; rb++)                                                             \
            for (int nb = 0; nb < NB; nb++) acc[rb][nb] = _mm512_setzero_ps();                      \
        int64_t i = 0;                                                                              \
        for (; i + LANES <= k; i += LANES) {                                                        \
            __m512 xv[4];                                                                           \
            for (int nb = 0; nb < NB; nb++) xv[nb] = _mm512_loadu_ps(x[nb] + i);                    \
            for (int rb = 0; rb < RB; rb++) {                                                       \
                const __m512 wv = LOAD(w[rb], i);                                                   \
                for (int nb = 0; nb < NB; nb++) acc[rb][nb] = _mm512_fmadd_ps(wv, xv[nb], acc[rb][nb]); \
            }                                                                                       \
        }                                                                                           \
        if (i < k) {                                                                                \
            const __mmask16 m = (__mmask16)((1u << (k - i)) - 1);                                   \
            __m512 xv[4];                                                                           \
            for (int nb = 0; nb < NB; nb++) xv[nb] = _mm512_loadu_ps(x[nb] + i);                    \
            for (int rb = 0; rb < RB; rb++) {                                                       \
                const __m512 wv = LOAD_TAIL(w[rb], i, m);                                           \
                for (int nb = 0; nb < NB; nb++) acc[rb][nb] = _mm512_fmadd_ps(wv, xv[nb], acc[rb][nb]); \
            }                                                                                       \
        }                                                                                           \
        for (int nb = 0; nb < NB; nb++)                                                             \
            for (int rb = 0; rb < RB; rb++)                                                         \
                a->y[(j + nb) * a->ldy + r + rb] = _mm512_reduce_add_ps(acc[rb][nb]);               \
    }

#define FLOAT_GEMM(NAME, TILE)                                                                      \
    static void NAME(const fc_gemm_args *a, int64_t r0, int64_t r1) {                                \
        int64_t r = r0;                                                                             \
        if (a->n == 1) {                                                                            \
            for (; r + 8 <= r1; r += 8) TILE(a, r, 0, 8, 1);                                        \
            for (; r < r1; r++) TILE(a, r, 0, 1, 1);                                                \
            return;                                                                                 \
        }                                                                                           \
        for (; r + 4 <= r1; r += 4) {                                                               \
            int64_t j = 0;                                                                          \
            for (; j + 4 <= a->n; j += 4) TILE(a, r, j, 4, 4);                                      \
            for (; j < a->n; j++) TILE(a, r, j, 4, 1);                                              \
        }                                                                                           \
        for (; r < r1; r++) {                                                                       \
            int64_t j = 0;                                                                          \
            for (; j + 4 <= a->n; j += 4) TILE(a, r, j, 1, 4);                                      \
            for (; j < a->n; j++) TILE(a, r, j, 1, 1);                                              \
        }                                                                                           \
    }

FLOAT_TILE(tile_f32, load_f32, load_f32_tail)
FLOAT_TILE(tile_f16, load_f16, load_f16_tail)
FLOAT_TILE(tile_bf16, load_bf16, load_bf16_tail)
FLOAT_GEMM(gemm_f32_f32_avx512, tile_f32)
FLOAT_GEMM(gemm_f16_f32_avx512, tile_f16)
FLOAT_GEMM(gemm_bf16_f32_avx512, tile_bf16)

FC_REG(float_avx512) {
    /* dequantize stays the scalar one (exact conversions; not on a hot path) */
    t->q[FC_F32].act_row_bytes = act_row_bytes_pad16;
    t->q[FC_F32].quantize = quantize_pad16;
    t->q[FC_F32].gemm = gemm_f32_f32_avx512;
    t->q[FC_F32].isa = FC_ISA_AVX512;
    t->q[FC_F16].act_row_bytes = act_row_bytes_pad16;
    t->q[FC_F16].quantize = quantize_pad16;
    t->q[FC_F16].gemm = gemm_f16_f32_avx512;
    t->q[FC_F16].isa = FC_ISA_AVX512;
    t->q[FC_BF16].act_row_bytes = act_row_bytes_pad16;
    t->q[FC_BF16].quantize = quantize_pad16;
    t->q[FC_BF16].gemm = gemm_bf16_f32_avx512;
    t->q[FC_BF16].isa = FC_ISA_AVX512;
}
