/* Body of legacy_avx512.c (LEGACY_VNNI 0: vpmaddubsw + vpmaddwd) and legacy_avx512vnni.c
 * (LEGACY_VNNI 1: vpdpbusd). Included only by those two files, so it is compiled with their
 * flags. See their headers for the instructions and overflow limits.
 *
 * Two 32-value blocks fill one 512-bit register: lanes 0..7 of the int32 products belong to the
 * first block, 8..15 to the second, and the per-block scales are spread the same way
 * ([c0 x 8, c1 x 8]) so that one vfmadd231ps scales both blocks. An odd last block runs as a pair
 * whose second half has zero codes and zero scales (its weights are never read).
 */
#include <immintrin.h>

#include "legacy_common.h"

#define AI static inline __attribute__((always_inline))

enum { F_Q4_0, F_Q4_1, F_Q5_0, F_Q5_1, F_Q8_0 };

static const size_t blk_bytes[] = {sizeof(blk_q4_0), sizeof(blk_q4_1), sizeof(blk_q5_0),
                                   sizeof(blk_q5_1), sizeof(blk_q8_0)};

AI uint32_t ld16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
}

AI uint32_t ld32(const uint8_t *p) {
    uint32_t h;
    memcpy(&h, p, 4);
    return h;
}

/* two floats at p into lanes 0, 1 */
AI __m128 ld2f(const float *p) {
    int64_t v;
    memcpy(&v, p, 8);
    return _mm_castsi128_ps(_mm_cvtsi64_si128(v));
}

/* fp16 scales of the two blocks (second 0 for a lone block) -> lanes 0, 1 */
AI __m128 scales2(const uint8_t *p0, const uint8_t *p1, size_t off) {
    const uint32_t h = ld16(p0 + off) | (p1 ? ld16(p1 + off) << 16 : 0);
    return _mm_cvtph_ps(_mm_cvtsi32_si128((int)h));
}

/* nibbles of the two blocks -> codes in the order of the activations: [b0 lo | b0 hi | b1 lo | b1 hi] */
AI __m512i nibbles2(const uint8_t *qs0, const uint8_t *qs1) {
    const __m128i x0 = _mm_loadu_si128((const __m128i *)qs0);
    const __m256i y = qs1 ? _mm256_inserti128_si256(_mm256_castsi128_si256(x0),
                                                    _mm_loadu_si128((const __m128i *)qs1), 1)
                          : _mm256_zextsi128_si256(x0);
    __m512i z = _mm512_castsi256_si512(y);
    z = _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(1, 1, 0, 0));
    /* the copies in 128-bit lanes 1 and 3 give the high nibbles */
    z = _mm512_mask_srli_epi16(z, (__mmask32)0xFF00FF00u, z, 4);
    return _mm512_and_si512(z, _mm512_set1_epi8(0x0F));
}

AI __m512i fifth2(__m512i q, const uint8_t *qh0, const uint8_t *qh1) {
    const uint64_t bits = (uint64_t)ld32(qh0) | (qh1 ? (uint64_t)ld32(qh1) << 32 : 0);
    return _mm512_mask_add_epi8(q, _cvtu64_mask64(bits), q, _mm512_set1_epi8(0x10));
}

/* Codes of blocks p0, p1 (p1 NULL: lone block); scale pair, and min pair for Q4_1/Q5_1. */
AI __m512i unpack2(const int fmt, const uint8_t *p0, const uint8_t *p1, __m128 *dw, __m128 *mw) {
    *dw = scales2(p0, p1, 0);
    switch (fmt) {
    case F_Q4_0: return nibbles2(p0 + 2, p1 ? p1 + 2 : NULL);
    case F_Q4_1:
        *mw = scales2(p0, p1, 2);
        return nibbles2(p0 + 4, p1 ? p1 + 4 : NULL);
    case F_Q5_0: return fifth2(nibbles2(p0 + 6, p1 ? p1 + 6 : NULL), p0 + 2, p1 ? p1 + 2 : NULL);
    case F_Q5_1:
        *mw = scales2(p0, p1, 2);
        return fifth2(nibbles2(p0 + 8, p1 ? p1 + 8 : NULL), p0 + 4, p1 ? p1 + 4 : NULL);
    default: {
        const __m256i y0 = _mm256_loadu_si256((const __m256i *)(p0 + 2));
        return p1 ? _mm512_inserti64x4(_mm512_castsi256_si512(y0), _mm256_loadu_si256((const __m256i *)(p1 + 2)), 1)
                  : _mm512_zextsi256_si512(y0);
    }
    }
}

AI __m512i idot(__m512i qu, __m512i av) {
#if LEGACY_VNNI
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), qu, av);
#else
    return _mm512_madd_epi16(_mm512_maddubs_epi16(qu, av), _mm512_set1_epi16(1));
#endif
}

/* One pair of blocks (p1 NULL: a lone last block) against nr activation rows; its min/scale pair
 * for the offset/min term goes to cw[b], cw[b + 1]. */
AI void pair(const int fmt, const int nr, const uint8_t *p0, const uint8_t *p1, int64_t b,
             const int8_t *const *a, const float *const *dx, float *cw, __m512 *acc) {
    const int has_corr = fmt != F_Q8_0, has_min = fmt == F_Q4_1 || fmt == F_Q5_1;
    /* [c0 x 8, c1 x 8] from two consecutive floats */
    const __m512i spread = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    __m128 dw, mw = _mm_setzero_ps();
    const __m512i q = unpack2(fmt, p0, p1, &dw, &mw);
    __m512i qu = q;
    __mmask64 neg = 0;
    if (fmt == F_Q8_0) {
        /* vpmaddubsw/vpdpbusd want u8 x s8: |w| times a with w's sign (AVX-512 has no vpsignb) */
        qu = _mm512_abs_epi8(q);
        neg = _mm512_movepi8_mask(q);
    }
    if (has_corr) _mm_storel_pi((__m64 *)(cw + b), has_min ? mw : dw);
    const __m512 dwz = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(dw));
    #pragma GCC unroll 4
    for (int j = 0; j < nr; j++) {
        __m512i av = _mm512_loadu_si512(a[j] + b * QK);
        if (fmt == F_Q8_0) av = _mm512_mask_sub_epi8(av, neg, _mm512_setzero_si512(), av);
        /* dx[j] + b may be the last scale: the 16-float load then reads into s[] and the padding */
        const __m512 dxz = _mm512_permutexvar_ps(spread, _mm512_loadu_ps(dx[j] + b));
        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(idot(qu, av)), _mm512_mul_ps(dwz, dxz), acc[j]);
    }
}

/* sum_b cw[b] * s[b] over nb (+1 zero) entries */
AI float dot_cw(const float *cw, const float *s, int64_t nb) {
    __m512 acc = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 16 <= nb; b += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(cw + b), _mm512_loadu_ps(s + b), acc);
    if (b < nb) {
        const __mmask16 m = (__mmask16)((1u << (nb - b)) - 1);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, cw + b), _mm512_maskz_loadu_ps(m, s + b), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

/* One weight row against nr (<= 4) activation rows at x; results to y[j * ldy].
 * cw: scratch of nb + 2 floats. With one or two rows the accumulation is split over two
 * registers per row (even / odd pairs) so that the fma latency does not bound the loop. */
AI void tile(const int fmt, const int nr, const uint8_t *w, const uint8_t *x, size_t xs,
             int64_t nb, float *y, int64_t ldy, float *cw) {
    const size_t bsz = blk_bytes[fmt];
    const int has_corr = fmt != F_Q8_0;
    const float cm = fmt == F_Q4_0 ? -8.0f : fmt == F_Q5_0 ? -16.0f : 1.0f;
    const int split = nr <= 2;
    __m512 acc0[4], acc1[4];
    const int8_t *a[4];
    const float *dx[4];
    #pragma GCC unroll 4
    for (int j = 0; j < nr; j++) {
        acc0[j] = acc1[j] = _mm512_setzero_ps();
        a[j] = q8a_qs(x + j * xs);
        dx[j] = q8a_d(x + j * xs, nb);
    }
    int64_t b = 0;
    if (split)
        for (; b + 4 <= nb; b += 4) {
            pair(fmt, nr, w + b * bsz, w + (b + 1) * bsz, b, a, dx, cw, acc0);
            pair(fmt, nr, w + (b + 2) * bsz, w + (b + 3) * bsz, b + 2, a, dx, cw, acc1);
        }
    for (; b + 2 <= nb; b += 2) pair(fmt, nr, w + b * bsz, w + (b + 1) * bsz, b, a, dx, cw, acc0);
    if (b < nb) pair(fmt, nr, w + b * bsz, NULL, b, a, dx, cw, split ? acc1 : acc0);
    #pragma GCC unroll 4
    for (int j = 0; j < nr; j++) {
        float r = _mm512_reduce_add_ps(split ? _mm512_add_ps(acc0[j], acc1[j]) : acc0[j]);
        if (has_corr) r += cm * dot_cw(cw, q8a_s(x + j * xs, nb), nb);
        y[j * ldy] = r;
    }
}

AI void gemm_generic(const int fmt, const fc_gemm_args *a, int64_t r0, int64_t r1) {
    const int64_t nb = a->k / QK, n = a->n;
    const size_t xs = a->xq_row_bytes;
    float cw[nb + 2];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = a->w + r * a->w_row_bytes;
        float *y = a->y + r;
        int64_t j = 0;
        for (; j + 4 <= n; j += 4) tile(fmt, 4, w, a->xq + j * xs, xs, nb, y + j * a->ldy, a->ldy, cw);
        switch (n - j) {
        case 3: tile(fmt, 3, w, a->xq + j * xs, xs, nb, y + j * a->ldy, a->ldy, cw); break;
        case 2: tile(fmt, 2, w, a->xq + j * xs, xs, nb, y + j * a->ldy, a->ldy, cw); break;
        case 1: tile(fmt, 1, w, a->xq + j * xs, xs, nb, y + j * a->ldy, a->ldy, cw); break;
        default: break;
        }
    }
}

#define LEGACY_ENTRY_POINTS(SUF, ISA)                                                                         \
    static void gemm_q4_0_q8a_##SUF(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_generic(F_Q4_0, a, r0, r1); } \
    static void gemm_q4_1_q8a_##SUF(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_generic(F_Q4_1, a, r0, r1); } \
    static void gemm_q5_0_q8a_##SUF(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_generic(F_Q5_0, a, r0, r1); } \
    static void gemm_q5_1_q8a_##SUF(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_generic(F_Q5_1, a, r0, r1); } \
    static void gemm_q8_0_q8a_##SUF(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_generic(F_Q8_0, a, r0, r1); } \
    static void quantize_q8a_##SUF(const float *FC_RESTRICT x, void *FC_RESTRICT xq, int64_t k) {                    \
        q8a_quantize(x, xq, k);                                                                               \
    }                                                                                                         \
    /* keeps the inherited dequantize (the scalar one: bit-exact with gguf, never fused) */                   \
    static void set_##SUF(fc_table *t, int qtype, void (*gemm)(const fc_gemm_args *, int64_t, int64_t)) {    \
        t->q[qtype].quantize = quantize_q8a_##SUF;                                                            \
        t->q[qtype].gemm = gemm;                                                                              \
        t->q[qtype].isa = ISA;                                                                                \
    }                                                                                                         \
    FC_REG(legacy_##SUF) {                                                                                    \
        set_##SUF(t, FC_Q4_0, gemm_q4_0_q8a_##SUF);                                                           \
        set_##SUF(t, FC_Q4_1, gemm_q4_1_q8a_##SUF);                                                           \
        set_##SUF(t, FC_Q5_0, gemm_q5_0_q8a_##SUF);                                                           \
        set_##SUF(t, FC_Q5_1, gemm_q5_1_q8a_##SUF);                                                           \
        set_##SUF(t, FC_Q8_0, gemm_q8_0_q8a_##SUF);                                                           \
    }
