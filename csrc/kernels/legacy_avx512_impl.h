/* Body of legacy_avx512.c (vpmaddubsw + vpmaddwd), compiled with its flags. The AVX-512 VNNI
 * level reads these formats through legacyx16_avx512vnni.c (16-row tiles, packed or gathered). See their headers for the instructions and overflow limits.
 *
 * Two 32-value blocks fill one 512-bit register: lanes 0..7 of the int32 products belong to the
 * first block, 8..15 to the second, and the per-block scales are spread the same way
 * ([c0 x 8, c1 x 8]) so that one vfmadd231ps scales both blocks. Blocks go in groups of four so
 * that one vcvtph2ps converts four weight scales and one vmulps makes four combined scales. An odd
 * last block runs as a pair whose second half has zero codes and zero scales (its weights are
 * never read).
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

/* fp16 field at byte off of cnt (1..4) blocks of bsz bytes -> float lanes 0..cnt-1 (rest 0) */
AI __m128 scales4(const uint8_t *p, size_t bsz, int cnt, size_t off) {
    uint64_t h = ld16(p + off);
    if (cnt > 1) h |= (uint64_t)ld16(p + bsz + off) << 16;
    if (cnt > 2) h |= (uint64_t)ld16(p + 2 * bsz + off) << 32;
    if (cnt > 3) h |= (uint64_t)ld16(p + 3 * bsz + off) << 48;
    return _mm_cvtph_ps(_mm_cvtsi64_si128((long long)h));
}

/* nibbles of two blocks -> codes in the order of the activations: [b0 lo | b0 hi | b1 lo | b1 hi].
 * Broadcast loads put each block's 16 bytes into two 128-bit lanes without a shuffle. */
AI __m512i nibbles2(const uint8_t *qs0, const uint8_t *qs1) {
    const __m128i x0 = _mm_loadu_si128((const __m128i *)qs0);
    __m512i z = qs1 ? _mm512_mask_broadcast_i32x4(_mm512_broadcast_i32x4(x0), (__mmask16)0xFF00,
                                                  _mm_loadu_si128((const __m128i *)qs1))
                    : _mm512_maskz_broadcast_i32x4((__mmask16)0x00FF, x0);
    /* the copies in 128-bit lanes 1 and 3 give the high nibbles */
    z = _mm512_mask_srli_epi16(z, (__mmask32)0xFF00FF00u, z, 4);
    return _mm512_and_si512(z, _mm512_set1_epi8(0x0F));
}

AI __m512i fifth2(__m512i q, const uint8_t *qh0, const uint8_t *qh1) {
    const uint64_t bits = (uint64_t)ld32(qh0) | (qh1 ? (uint64_t)ld32(qh1) << 32 : 0);
    return _mm512_mask_add_epi8(q, _cvtu64_mask64(bits), q, _mm512_set1_epi8(0x10));
}

/* Codes of blocks p0, p1 (p1 NULL: lone block, upper half zero). */
AI __m512i codes2(const int fmt, const uint8_t *p0, const uint8_t *p1) {
    switch (fmt) {
    case F_Q4_0: return nibbles2(p0 + 2, p1 ? p1 + 2 : NULL);
    case F_Q4_1: return nibbles2(p0 + 4, p1 ? p1 + 4 : NULL);
    case F_Q5_0: return fifth2(nibbles2(p0 + 6, p1 ? p1 + 6 : NULL), p0 + 2, p1 ? p1 + 2 : NULL);
    case F_Q5_1: return fifth2(nibbles2(p0 + 8, p1 ? p1 + 8 : NULL), p0 + 4, p1 ? p1 + 4 : NULL);
    default: {
        const __m512i z = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(p0 + 2)));
        return p1 ? _mm512_mask_broadcast_i64x4(z, (__mmask8)0xF0, _mm256_loadu_si256((const __m256i *)(p1 + 2)))
                  : z;
    }
    }
}

AI __m512i idot(__m512i qu, __m512i av) {
    return _mm512_madd_epi16(_mm512_maddubs_epi16(qu, av), _mm512_set1_epi16(1));
}

/* acc[j] += per-block scales cz * int products of codes q with activation row j at block b */
AI void pair_rows(const int fmt, const int nr, __m512i q, int64_t b, const int8_t *const *a,
                  const __m512 *cz, __m512 *acc) {
    __m512i qu = q;
    __mmask64 neg = 0;
    if (fmt == F_Q8_0) {
        /* vpmaddubsw/vpdpbusd want u8 x s8: |w| times a with w's sign (AVX-512 has no vpsignb) */
        qu = _mm512_abs_epi8(q);
        neg = _mm512_movepi8_mask(q);
    }
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++) {
        __m512i av = _mm512_loadu_si512(a[j] + b * QK);
        if (fmt == F_Q8_0) av = _mm512_mask_sub_epi8(av, neg, _mm512_setzero_si512(), av);
        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(idot(qu, av)), cz[j], acc[j]);
    }
}

/* cnt (1..4) blocks from b against nr activation rows: the first pair goes to accA, the second to
 * accB; the offset/min term (dw or m times the activation block sum) goes to corr. */
AI void group(const int fmt, const int nr, const int cnt, const uint8_t *p, int64_t b, const int8_t *const *a,
              const float *const *dx, const float *const *sx, __m128 *corr, __m512 *accA, __m512 *accB) {
    const size_t bsz = blk_bytes[fmt];
    const int has_corr = fmt != F_Q8_0, has_min = fmt == F_Q4_1 || fmt == F_Q5_1;
    /* [c0 x 8, c1 x 8] and [c2 x 8, c3 x 8] from four floats */
    const __m512i spread01 = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i spread23 = _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2);
    const __m128 dw = scales4(p, bsz, cnt, 0);
    const __m128 cw = has_corr ? has_min ? scales4(p, bsz, cnt, 2) : dw : _mm_setzero_ps();
    __m512 c01[4], c23[4];
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++) {
        /* sx[j] + b + 3 may lie past the last sum: the load then reads the zeroed padding */
        if (has_corr) corr[j] = _mm_fmadd_ps(cw, _mm_loadu_ps(sx[j] + b), corr[j]);
        /* dx[j] + b + 3 may lie past the last scale: the load then reads into s[] (never past
         * the padding); those lanes meet zero weight scales */
        const __m512 c = _mm512_castps128_ps512(_mm_mul_ps(dw, _mm_loadu_ps(dx[j] + b)));
        c01[j] = _mm512_permutexvar_ps(spread01, c);
        if (cnt > 2) c23[j] = _mm512_permutexvar_ps(spread23, c);
    }
    pair_rows(fmt, nr, codes2(fmt, p, cnt > 1 ? p + bsz : NULL), b, a, c01, accA);
    if (cnt > 2) pair_rows(fmt, nr, codes2(fmt, p + 2 * bsz, cnt > 3 ? p + 3 * bsz : NULL), b + 2, a, c23, accB);
}

/* Prefetch distance for the weight stream (bytes ahead of the block being multiplied). */
#ifndef PF_BYTES
#define PF_BYTES 8192
#endif

/* One weight row against nr (<= 4) activation rows at x; results to y[j * ldy].
 * With one or two rows the accumulation is split over two registers per row (even / odd pairs)
 * so that the fma latency does not bound the loop. */
AI void tile(const int fmt, const int nr, const uint8_t *w, const uint8_t *x, size_t xs,
             int64_t nb, float *y, int64_t ldy) {
    const size_t bsz = blk_bytes[fmt];
    const int has_corr = fmt != F_Q8_0;
    const float cm = fmt == F_Q4_0 ? -8.0f : fmt == F_Q5_0 ? -16.0f : 1.0f;
    const int split = nr <= 2;
    __m512 acc0[4], acc1[4];
    __m128 corr[4];
    const int8_t *a[4];
    const float *dx[4], *sx[4];
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++) {
        acc0[j] = acc1[j] = _mm512_setzero_ps();
        corr[j] = _mm_setzero_ps();
        a[j] = q8a_qs(x + j * xs);
        dx[j] = q8a_d(x + j * xs, nb);
        sx[j] = q8a_s(x + j * xs, nb);
    }
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4) {
        /* The hardware prefetchers alone leave GEMV well short of the read bandwidth (measured:
         * about 0.6 of membw); pulling the weights PF_BYTES ahead (past the row end: the next row,
         * which is contiguous) keeps enough lines in flight. A group eats 4 blocks (72-136 bytes). */
        for (size_t o = 0; o < 4 * bsz; o += 64) _mm_prefetch((const char *)(w + b * bsz + PF_BYTES + o), _MM_HINT_T0);
        group(fmt, nr, 4, w + b * bsz, b, a, dx, sx, corr, acc0, split ? acc1 : acc0);
    }
    switch (nb - b) {
    case 3: group(fmt, nr, 3, w + b * bsz, b, a, dx, sx, corr, acc0, split ? acc1 : acc0); break;
    case 2: group(fmt, nr, 2, w + b * bsz, b, a, dx, sx, corr, acc0, split ? acc1 : acc0); break;
    case 1: group(fmt, nr, 1, w + b * bsz, b, a, dx, sx, corr, acc0, split ? acc1 : acc0); break;
    default: break;
    }
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++) {
        __m512 t = split ? _mm512_add_ps(acc0[j], acc1[j]) : acc0[j];
        if (has_corr) t = _mm512_fmadd_ps(_mm512_zextps128_ps512(corr[j]), _mm512_set1_ps(cm), t);
        y[j * ldy] = _mm512_reduce_add_ps(t);
    }
}

#include "legacy_blocking.h"

/* q8a_quantize (legacy_common.h) with 16 floats per instruction; the same operations (IEEE
 * division by d, round to nearest even, clamp), so the same bytes. */
AI void quantize_q8a_x512(const float *FC_RESTRICT x, void *FC_RESTRICT xq, int64_t k) {
    const int64_t nb = k / QK;
    uint8_t *row = xq;
    float *d = (float *)(row + nb * QK), *s = d + nb;
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    for (int64_t b = 0; b < nb; b++) {
        const __m512 v0 = _mm512_loadu_ps(x + b * QK), v1 = _mm512_loadu_ps(x + b * QK + 16);
        const float db = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1))) / 127.0f;
        __m512i q0 = _mm512_setzero_si512(), q1 = _mm512_setzero_si512();
        if (db > 0.0f) {
            const __m512 dv = _mm512_set1_ps(db);
            q0 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_div_ps(v0, dv)), lo), hi);
            q1 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_div_ps(v1, dv)), lo), hi);
        }
        _mm_storeu_si128((__m128i *)(row + b * QK), _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(row + b * QK + 16), _mm512_cvtsepi32_epi8(q1));
        d[b] = db;
        s[b] = db * (float)_mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    }
    memset(row + q8a_row_bytes(k) - Q8A_PAD, 0, Q8A_PAD);
}

#define LEGACY_ENTRY_POINTS(SUF, ISA)                                                                         \
    static void gemm_q4_0_q8a_##SUF(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_generic(F_Q4_0, a, r0, r1); } \
    static void gemm_q4_1_q8a_##SUF(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_generic(F_Q4_1, a, r0, r1); } \
    static void gemm_q5_0_q8a_##SUF(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_generic(F_Q5_0, a, r0, r1); } \
    static void gemm_q5_1_q8a_##SUF(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_generic(F_Q5_1, a, r0, r1); } \
    static void gemm_q8_0_q8a_##SUF(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_generic(F_Q8_0, a, r0, r1); } \
    static void quantize_q8a_##SUF(const float *FC_RESTRICT x, void *FC_RESTRICT xq, int64_t k) {                    \
        quantize_q8a_x512(x, xq, k);                                                                          \
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
