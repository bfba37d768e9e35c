/* F32, F16 and BF16 weights with float32 activations, AVX-512 (F/BW/VL).
 *
 * Instructions: vfmadd231ps zmm (products and sums in float32, one rounding per FMA),
 * vcvtph2ps zmm (F16 -> F32, exact), vpslld 16 / vpandd on bf16 pairs (BF16 -> F32, exact),
 * masked loads (vmovups/vmovdqu16 {z}) for the row tail, vreduce-style shuffles for the final sum.
 * Accumulator: float32, one vector per (weight row, activation row); no integer overflow limit.
 *
 * Spec: float_scalar.c (same products, float32 sums; only the summation order differs: 16 lanes
 * then a fixed tree; BF16's lane l takes column 32c + 2l, then 32c + 2l + 1). Every (row,
 * activation) pair is computed by the same instruction sequence whatever tile it falls in, so
 * results do not depend on how rows are split across threads.
 *
 * GEMV (n == 1) streams 8 weight rows at once (8 independent FMA chains hide the FMA latency while
 * the loads stay sequential per row), each row prefetched 1 KB ahead: with 16 streams in flight on
 * 2 cores the hardware prefetchers alone left F16/BF16 about 10% short of the read bandwidth.
 * GEMM tiles 4 weight rows x 4 activation rows, so every weight vector loaded feeds 4 FMAs, in
 * column passes that keep the weight tile and 16 activation rows in L1 (see KC below).
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
/* The formats' step: F32 and F16 go 16 columns (one vector) at a time; BF16 goes 32 at a time,
 * a 64-byte load holding 32 bf16 values as 16 dwords: the low halves (even columns) widen with one
 * shift, the high halves (odd columns) with one and, against activations stored evens first per
 * 32 columns (quantize_bf16_split). That is 2 vector-ALU uops per 16 values instead of vpmovzxwd's
 * shuffle plus the shift: the compute per weight byte is what kept BF16 at ~0.87 of the read
 * bandwidth when F32 (1 FMA per 64 bytes) streams at ~0.98. */
enum { F_F32, F_F16, F_BF16 };

static size_t act_row_bytes_pad32(int64_t k) { return (size_t)((k + 31) & ~(int64_t)31) * sizeof(float); }

static void quantize_bf16_split(const float *FC_RESTRICT x, void *FC_RESTRICT xq, int64_t k) {
    float *d = xq;
    for (int64_t c = 0; c < k; c += 32)
        for (int i = 0; i < 32; i++) {
            const int64_t col = c + i;
            d[c + (i & 1) * 16 + (i >> 1)] = col < k ? x[col] : 0.0f;
        }
}

static inline __attribute__((always_inline)) void bf16_split(__m512i v, __m512 *even, __m512 *odd) {
    *even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    *odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xFFFF0000u)));
}

/* The products of weight row w and activations x over columns [i, e) of one lane-accumulator
 * (e - i < step only at the row's end), in the one order every tile uses. */
static inline __attribute__((always_inline)) __m512 row_step(const int F, const uint8_t *w, const float *x,
                                                             int64_t i, int64_t e, __m512 acc) {
    if (F == F_BF16) {
        __m512 ev, od;
        const __m512i v = e - i >= 32 ? _mm512_loadu_si512((const void *)((const uint16_t *)w + i))
                                      : _mm512_maskz_loadu_epi16((__mmask32)((1ull << (e - i)) - 1),
                                                                 (const uint16_t *)w + i);
        bf16_split(v, &ev, &od);
        acc = _mm512_fmadd_ps(ev, _mm512_loadu_ps(x + i), acc);
        return _mm512_fmadd_ps(od, _mm512_loadu_ps(x + i + 16), acc);
    }
    __m512 wv;
    if (e - i >= LANES) wv = F == F_F32 ? load_f32(w, i) : load_f16(w, i);
    else {
        const __mmask16 m = (__mmask16)((1u << (e - i)) - 1);
        wv = F == F_F32 ? load_f32_tail(w, i, m) : load_f16_tail(w, i, m);
    }
    return _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + i), acc);
}

/* RB weight rows from r, NB activation rows from j, columns [kb, ke), accumulators in accm
 * (stride JB) or, when accm is NULL, started at zero and reduced into y. RB and NB are constants
 * at every call site, so the accumulators live in registers. A GEMV (NB == 1) prefetches each
 * row 1 KB ahead, once per 64-byte line. */
#define JB 16
static inline __attribute__((always_inline)) void tile(const int F, const fc_gemm_args *a, int64_t r, int64_t j,
                                                        int64_t kb, int64_t ke, __m512 *accm, const int RB,
                                                        const int NB) {
    const int64_t step = F == F_BF16 ? 32 : LANES;
    const int64_t esz = F == F_F32 ? 4 : 2;
    const uint8_t *w[8];
    const float *x[4];
    __m512 acc[8][4];
    for (int rb = 0; rb < RB; rb++) w[rb] = a->w + (r + rb) * a->w_row_bytes;
    for (int nb = 0; nb < NB; nb++) x[nb] = (const float *)(a->xq + (j + nb) * a->xq_row_bytes);
    for (int rb = 0; rb < RB; rb++)
        for (int nb = 0; nb < NB; nb++) acc[rb][nb] = accm ? accm[rb * JB + nb] : _mm512_setzero_ps();
    int64_t i = kb;
    for (; i + step <= ke; i += step) {
        for (int rb = 0; rb < RB; rb++) {
            if (NB == 1 && (esz * step >= 64 || (i & 31) == 0))
                _mm_prefetch((const char *)w[rb] + i * esz + 1024, _MM_HINT_T0);
            for (int nb = 0; nb < NB; nb++) acc[rb][nb] = row_step(F, w[rb], x[nb], i, i + step, acc[rb][nb]);
        }
    }
    if (i < ke)
        for (int rb = 0; rb < RB; rb++)
            for (int nb = 0; nb < NB; nb++) acc[rb][nb] = row_step(F, w[rb], x[nb], i, ke, acc[rb][nb]);
    for (int rb = 0; rb < RB; rb++)
        for (int nb = 0; nb < NB; nb++) {
            if (accm) accm[rb * JB + nb] = acc[rb][nb];
            else a->y[(j + nb) * a->ldy + r + rb] = _mm512_reduce_add_ps(acc[rb][nb]);
        }
}

/* GEMM passes: KC columns of a 4-row weight tile (4 KB as F32, 2 KB as F16/BF16) and of JB
 * activation rows (16 KB) stay in L1 while the tile's accumulators go round through memory once per
 * pass. Each (row, activation) lane still sums its products in column order, so the result is the
 * one the unblocked tile gives. */
#define KC 256

/* One weight tile of RB rows against activation rows [j0, j0 + jn), jn <= JB. */
static inline __attribute__((always_inline)) void pass(const int F, const fc_gemm_args *a, int64_t r, int64_t j0,
                                                        int64_t jn, const int RB) {
    __m512 accm[4 * JB];
    for (int q = 0; q < RB * JB; q++) accm[q] = _mm512_setzero_ps();
    for (int64_t kb = 0; kb < a->k; kb += KC) {
        const int64_t ke = kb + KC < a->k ? kb + KC : a->k;
        int64_t jj = 0;
        for (; jj + 4 <= jn; jj += 4) tile(F, a, r, j0 + jj, kb, ke, accm + jj, RB, 4);
        for (; jj < jn; jj++) tile(F, a, r, j0 + jj, kb, ke, accm + jj, RB, 1);
    }
    for (int64_t jj = 0; jj < jn; jj++)
        for (int rb = 0; rb < RB; rb++) a->y[(j0 + jj) * a->ldy + r + rb] = _mm512_reduce_add_ps(accm[rb * JB + jj]);
}

static inline __attribute__((always_inline)) void gemm_float(const int F, const fc_gemm_args *a, int64_t r0,
                                                              int64_t r1) {
    int64_t r = r0;
    if (a->n == 1) {
        for (; r + 8 <= r1; r += 8) tile(F, a, r, 0, 0, a->k, NULL, 8, 1);
        for (; r < r1; r++) tile(F, a, r, 0, 0, a->k, NULL, 1, 1);
        return;
    }
    for (; r + 4 <= r1; r += 4)
        for (int64_t j0 = 0; j0 < a->n; j0 += JB) pass(F, a, r, j0, a->n - j0 < JB ? a->n - j0 : JB, 4);
    for (; r < r1; r++)
        for (int64_t j0 = 0; j0 < a->n; j0 += JB) pass(F, a, r, j0, a->n - j0 < JB ? a->n - j0 : JB, 1);
}

static void gemm_f32_f32_avx512(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_float(F_F32, a, r0, r1); }
static void gemm_f16_f32_avx512(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_float(F_F16, a, r0, r1); }
static void gemm_bf16_f32_avx512(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_float(F_BF16, a, r0, r1); }

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
    t->q[FC_BF16].act_row_bytes = act_row_bytes_pad32;
    t->q[FC_BF16].quantize = quantize_bf16_split;
    t->q[FC_BF16].gemm = gemm_bf16_f32_avx512;
    t->q[FC_BF16].isa = FC_ISA_AVX512;
}
