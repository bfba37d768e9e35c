/* BF16 weights with bf16 activations, AVX512_BF16.
 *
 * Instructions: vdpbf16ps zmm (per float32 lane: acc += w[2i]*x[2i] + w[2i+1]*x[2i+1]; the bf16
 * products are exact in float32, the sums round to nearest even with denormal inputs/outputs
 * flushed to zero), vmovdqu16 {z} for the row tail, shuffles for the final sum.
 * Accumulator: float32, one vector per (weight row, activation row); no integer overflow limit.
 *
 * Activation format: the float32 row rounded to bf16 (nearest even, as fc_fp32_to_bf16), zero-padded
 * to whole 32-value vectors. That rounding is the only error beyond float32 summation: at most
 * 2^-9 relative per activation (tests/tolerances.py: REL_BF16_ACT bounds it by 2^-8).
 *
 * Spec: float_scalar.c's gemm_bf16_ref with x rounded to bf16 first. Every (row, activation) pair is
 * computed by the same instruction sequence whatever tile it falls in (thread splits agree bit for
 * bit). Tiling as float_avx512.c: GEMV 8 weight rows at once; GEMM 4 weight rows x 4 activation
 * rows in column passes, each weight vector loaded once per 4 activation rows.
 */
#include <immintrin.h>

#include "fc_internal.h"

#define PAIRS 32 /* bf16 values per zmm */

static int64_t padded(int64_t k) { return (k + PAIRS - 1) & ~(int64_t)(PAIRS - 1); }

static size_t act_row_bytes_bf16(int64_t k) { return (size_t)padded(k) * sizeof(uint16_t); }

static void quantize_bf16(const float *FC_RESTRICT x, void *FC_RESTRICT xq, int64_t k) {
    uint16_t *d = xq;
    int64_t i = 0;
    for (; i < k; i++) d[i] = fc_fp32_to_bf16(x[i]);
    for (; i < padded(k); i++) d[i] = 0;
}

static inline __m512bh as_bh(__m512i v) { return (__m512bh)v; }


static inline __attribute__((always_inline)) void tile_bf16(const fc_gemm_args *a, int64_t r, int64_t j,
                                                             const int RB, const int NB) {
    const int64_t k = a->k;
    const uint16_t *w[8];
    const uint16_t *x[4];
    __m512 acc[8][4];
    for (int rb = 0; rb < RB; rb++) w[rb] = (const uint16_t *)(a->w + (r + rb) * a->w_row_bytes);
    for (int nb = 0; nb < NB; nb++) x[nb] = (const uint16_t *)(a->xq + (j + nb) * a->xq_row_bytes);
    for (int rb = 0; rb < RB; rb++)
        for (int nb = 0; nb < NB; nb++) acc[rb][nb] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + PAIRS <= k; i += PAIRS) {
        __m512i xv[4];
        for (int nb = 0; nb < NB; nb++) xv[nb] = _mm512_loadu_si512((const void *)(x[nb] + i));
        for (int rb = 0; rb < RB; rb++) {
            if (NB == 1) _mm_prefetch((const char *)(w[rb] + i) + 1024, _MM_HINT_T0); /* as float_avx512.c */
            const __m512i wv = _mm512_loadu_si512((const void *)(w[rb] + i));
            for (int nb = 0; nb < NB; nb++) acc[rb][nb] = _mm512_dpbf16_ps(acc[rb][nb], as_bh(wv), as_bh(xv[nb]));
        }
    }
    if (i < k) {
        /* weights past the row end are masked to zero; the activation padding is zero too */
        const __mmask32 m = (__mmask32)((1u << (k - i)) - 1);
        __m512i xv[4];
        for (int nb = 0; nb < NB; nb++) xv[nb] = _mm512_loadu_si512((const void *)(x[nb] + i));
        for (int rb = 0; rb < RB; rb++) {
            const __m512i wv = _mm512_maskz_loadu_epi16(m, w[rb] + i);
            for (int nb = 0; nb < NB; nb++) acc[rb][nb] = _mm512_dpbf16_ps(acc[rb][nb], as_bh(wv), as_bh(xv[nb]));
        }
    }
    for (int nb = 0; nb < NB; nb++)
        for (int rb = 0; rb < RB; rb++) a->y[(j + nb) * a->ldy + r + rb] = _mm512_reduce_add_ps(acc[rb][nb]);
}

/* GEMM passes, as float_avx512.c: KC columns of the 4-row weight tile (2 KB) and of JB activation
 * rows (8 KB of bf16) stay in L1 while the accumulators go round through memory once per pass; each
 * lane still sums in column order, so results equal the unblocked tile's. */
#define KC 256
#define JB 16

static inline __attribute__((always_inline)) void tile_acc_bf16(const fc_gemm_args *a, int64_t r, int64_t j,
                                                                 int64_t kb, int64_t ke, __m512 *accm,
                                                                 const int RB, const int NB) {
    const uint16_t *w[4];
    const uint16_t *x[4];
    __m512 acc[4][4];
    for (int rb = 0; rb < RB; rb++) w[rb] = (const uint16_t *)(a->w + (r + rb) * a->w_row_bytes);
    for (int nb = 0; nb < NB; nb++) x[nb] = (const uint16_t *)(a->xq + (j + nb) * a->xq_row_bytes);
    for (int rb = 0; rb < RB; rb++)
        for (int nb = 0; nb < NB; nb++) acc[rb][nb] = accm[rb * JB + nb];
    int64_t i = kb;
    for (; i + PAIRS <= ke; i += PAIRS) {
        __m512i xv[4];
        for (int nb = 0; nb < NB; nb++) xv[nb] = _mm512_loadu_si512((const void *)(x[nb] + i));
        for (int rb = 0; rb < RB; rb++) {
            const __m512i wv = _mm512_loadu_si512((const void *)(w[rb] + i));
            for (int nb = 0; nb < NB; nb++) acc[rb][nb] = _mm512_dpbf16_ps(acc[rb][nb], as_bh(wv), as_bh(xv[nb]));
        }
    }
    if (i < ke) {
        const __mmask32 m = (__mmask32)((1u << (ke - i)) - 1);
        __m512i xv[4];
        for (int nb = 0; nb < NB; nb++) xv[nb] = _mm512_loadu_si512((const void *)(x[nb] + i));
        for (int rb = 0; rb < RB; rb++) {
            const __m512i wv = _mm512_maskz_loadu_epi16(m, w[rb] + i);
            for (int nb = 0; nb < NB; nb++) acc[rb][nb] = _mm512_dpbf16_ps(acc[rb][nb], as_bh(wv), as_bh(xv[nb]));
        }
    }
    for (int rb = 0; rb < RB; rb++)
        for (int nb = 0; nb < NB; nb++) accm[rb * JB + nb] = acc[rb][nb];
}

/* One weight tile of RB rows against activation rows [j0, j0 + jn), jn <= JB. */
static inline __attribute__((always_inline)) void pass_bf16(const fc_gemm_args *a, int64_t r, int64_t j0,
                                                             int64_t jn, const int RB) {
    __m512 accm[4 * JB];
    for (int q = 0; q < RB * JB; q++) accm[q] = _mm512_setzero_ps();
    for (int64_t kb = 0; kb < a->k; kb += KC) {
        const int64_t ke = kb + KC < a->k ? kb + KC : a->k;
        int64_t jj = 0;
        for (; jj + 4 <= jn; jj += 4) tile_acc_bf16(a, r, j0 + jj, kb, ke, accm + jj, RB, 4);
        for (; jj < jn; jj++) tile_acc_bf16(a, r, j0 + jj, kb, ke, accm + jj, RB, 1);
    }
    for (int64_t jj = 0; jj < jn; jj++)
        for (int rb = 0; rb < RB; rb++) a->y[(j0 + jj) * a->ldy + r + rb] = _mm512_reduce_add_ps(accm[rb * JB + jj]);
}

static void gemm_bf16_bf16_avx512bf16(const fc_gemm_args *a, int64_t r0, int64_t r1) {
    int64_t r = r0;
    if (a->n == 1) {
        for (; r + 8 <= r1; r += 8) tile_bf16(a, r, 0, 8, 1);
        for (; r < r1; r++) tile_bf16(a, r, 0, 1, 1);
        return;
    }
    for (; r + 4 <= r1; r += 4)
        for (int64_t j0 = 0; j0 < a->n; j0 += JB) pass_bf16(a, r, j0, a->n - j0 < JB ? a->n - j0 : JB, 4);
    for (; r < r1; r++)
        for (int64_t j0 = 0; j0 < a->n; j0 += JB) pass_bf16(a, r, j0, a->n - j0 < JB ? a->n - j0 : JB, 1);
}

FC_REG(float_avx512bf16) {
    /* dequantize stays the scalar one */
    t->q[FC_BF16].act_row_bytes = act_row_bytes_bf16;
    t->q[FC_BF16].quantize = quantize_bf16;
    t->q[FC_BF16].gemm = gemm_bf16_bf16_avx512bf16;
    t->q[FC_BF16].isa = FC_ISA_AVX512_BF16;
}
