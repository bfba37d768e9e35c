/* Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 weights against q8a activations (legacy_common.h), AVX2 + FMA + F16C.
 * Twin of legacy_scalar.c (the specification).
 *
 * Instructions: vpmaddubsw (u8 x s8 -> pairwise int16 sums), vpmaddwd by ones (-> int32),
 * vcvtdq2ps + vfmadd231ps per block; vpsignb/vpabsb for Q8_0; vpshufb/vpcmpeqb to spread the Q5
 * high bits; vcvtph2ps for four fp16 scales at a time, vbroadcastss for the combined scales.
 * No AVX-512 instruction anywhere in this file (it runs on AVX2-only CPUs).
 *
 * Overflow limits: vpmaddubsw saturates at int16. Its operands are an unsigned weight code and a
 * signed activation with |a| <= 127 (q8a never produces -128):
 *   Q4_0/Q4_1 codes 0..15:  |pair| <= 2 * 15 * 127  =  3810
 *   Q5_0/Q5_1 codes 0..31:  |pair| <= 2 * 31 * 127  =  7874
 *   Q8_0 |w| <= 128 (sign moved onto a): |pair| <= 2 * 128 * 127 = 32512 < 32767
 * so it never saturates. vpmaddwd adds two pairs per int32 lane (|lane| <= 65024), exact; the
 * block is then scaled in float32. The Q4_0/Q5_0 offsets (8, 16) and the Q4_1/Q5_1 mins stay out
 * of the integer product: per block they add -off * dw_b * s_b or m_b * s_b (s_b = d_b * activation
 * block sum, stored by the quantizer), accumulated in float32 next to the main sum.
 *
 * GEMM: each unpacked weight block is used for up to 4 activation rows before the next block
 * is loaded; the weight row stays in L1 while the activation rows stream from L1/L2. Blocks go
 * in groups of four so that one vcvtph2ps converts four weight scales.
 */
#include <immintrin.h>

#include "legacy_common.h"

#define AI static inline __attribute__((always_inline))

enum { F_Q4_0, F_Q4_1, F_Q5_0, F_Q5_1, F_Q8_0 };


static const size_t blk_bytes[] = {sizeof(blk_q4_0), sizeof(blk_q4_1), sizeof(blk_q5_0),
                                   sizeof(blk_q5_1), sizeof(blk_q8_0)};

AI uint64_t ld16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
}

/* fp16 field at byte off of cnt (1..4) blocks of bsz bytes -> float lanes 0..cnt-1 (rest 0) */
AI __m128 scales4(const uint8_t *p, size_t bsz, int cnt, size_t off) {
    uint64_t h = ld16(p + off);
    if (cnt > 1) h |= ld16(p + bsz + off) << 16;
    if (cnt > 2) h |= ld16(p + 2 * bsz + off) << 32;
    if (cnt > 3) h |= ld16(p + 3 * bsz + off) << 48;
    return _mm_cvtph_ps(_mm_cvtsi64_si128((long long)h));
}

/* 16 bytes of nibbles -> 32 codes: low nibbles are elements 0..15, high nibbles 16..31 */
AI __m256i nibbles(const uint8_t *qs) {
    const __m128i x = _mm_loadu_si128((const __m128i *)qs);
    const __m256i y = _mm256_inserti128_si256(_mm256_castsi128_si256(x), _mm_srli_epi16(x, 4), 1);
    return _mm256_and_si256(y, _mm256_set1_epi8(0x0F));
}

/* 32 bits -> 0x10 in byte i where bit i is set */
AI __m256i fifth_bits(const uint8_t *qh4) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32((int)qh),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

/* Unsigned codes (signed values for Q8_0) of one block. */
AI __m256i codes(const int fmt, const uint8_t *p) {
    switch (fmt) {
    case F_Q4_0: return nibbles(p + 2);
    case F_Q4_1: return nibbles(p + 4);
    case F_Q5_0: return _mm256_or_si256(nibbles(p + 6), fifth_bits(p + 2));
    case F_Q5_1: return _mm256_or_si256(nibbles(p + 8), fifth_bits(p + 4));
    default: return _mm256_loadu_si256((const __m256i *)(p + 2));
    }
}

AI float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* vbroadcastss from memory is a pure load; written as asm because GCC otherwise keeps the value
 * in a register and spends a shuffle (and a register) on every broadcast */
AI __m256 bcast_mem(const float *p) {
    __m256 r;
    __asm__("vbroadcastss %1, %0" : "=x"(r) : "m"(*p));
    return r;
}

/* acc[j] += c[j][i] (the block's combined scale) * int products of block p's codes with
 * activation row j at block b */
AI void block_rows(const int fmt, const int nr, const uint8_t *p, int64_t b, int i,
                   const int8_t *const *a, const float (*c)[4], __m256 *acc) {
    const __m256i q = codes(fmt, p);
    const __m256i qu = fmt == F_Q8_0 ? _mm256_abs_epi8(q) : q;
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++) {
        __m256i av = _mm256_loadu_si256((const __m256i *)(a[j] + b * QK));
        if (fmt == F_Q8_0) av = _mm256_sign_epi8(av, q);
        const __m256i p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(qu, av), _mm256_set1_epi16(1));
        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), bcast_mem(&c[j][i]), acc[j]);
    }
}

/* cnt (1..4) blocks from b against nr activation rows; even blocks go to accA, odd ones to accB,
 * the offset/min term (dw or m times the activation block sum) to corr. One vcvtph2ps converts
 * the four weight scales and one vmulps per row makes the four combined ones. */
AI void group(const int fmt, const int nr, const int cnt, const uint8_t *p, int64_t b, const int8_t *const *a,
              const float *const *dx, const float *const *sx, __m128 *corr, __m256 *accA, __m256 *accB) {
    const size_t bsz = blk_bytes[fmt];
    const int has_corr = fmt != F_Q8_0, has_min = fmt == F_Q4_1 || fmt == F_Q5_1;
    const __m128 dw = scales4(p, bsz, cnt, 0);
    const __m128 cw = has_corr ? has_min ? scales4(p, bsz, cnt, 2) : dw : _mm_setzero_ps();
    /* through memory: vbroadcastss from it costs no ALU slot and 16 ymm registers are few */
    float c[4][4] __attribute__((aligned(16)));
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++) {
        /* dx[j] + b + 3 may lie past the last scale: the load then reads into s[] (never past
         * the padding); those lanes are never used. Likewise sx[j] + b + 3 reads the zeroed
         * padding, and meets zero weight scales there. */
        _mm_store_ps(c[j], _mm_mul_ps(dw, _mm_loadu_ps(dx[j] + b)));
        if (has_corr) corr[j] = _mm_fmadd_ps(cw, _mm_loadu_ps(sx[j] + b), corr[j]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < cnt; i++) block_rows(fmt, nr, p + i * bsz, b + i, i, a, c, i & 1 ? accB : accA);
}

/* One weight row against nr (<= 4) activation rows at x; results to y[j * ldy].
 * With one or two rows the accumulation is split over two registers per row (even / odd blocks)
 * so that the fma latency does not bound the loop. */
/* Prefetch distance for the weight stream (bytes ahead of the block being multiplied). */
#ifndef PF_BYTES
#define PF_BYTES 8192
#endif

AI void tile(const int fmt, const int nr, const uint8_t *w, const uint8_t *x, size_t xs,
             int64_t nb, float *y, int64_t ldy) {
    const size_t bsz = blk_bytes[fmt];
    const int has_corr = fmt != F_Q8_0;
    const float cm = fmt == F_Q4_0 ? -8.0f : fmt == F_Q5_0 ? -16.0f : 1.0f;
    const int split = nr <= 2;
    __m256 acc0[4], acc1[4];
    __m128 corr[4];
    const int8_t *a[4];
    const float *dx[4], *sx[4];
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++) {
        acc0[j] = acc1[j] = _mm256_setzero_ps();
        corr[j] = _mm_setzero_ps();
        a[j] = q8a_qs(x + j * xs);
        dx[j] = q8a_d(x + j * xs, nb);
        sx[j] = q8a_s(x + j * xs, nb);
    }
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4) {
        /* as in legacy_avx512_impl.h: the hardware prefetchers alone leave GEMV at about 0.4 of
         * membw; PF_BYTES ahead (into the next, contiguous row) keeps enough lines in flight */
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
        __m256 t = split ? _mm256_add_ps(acc0[j], acc1[j]) : acc0[j];
        if (has_corr) t = _mm256_fmadd_ps(_mm256_zextps128_ps256(corr[j]), _mm256_set1_ps(cm), t);
        y[j * ldy] = hsum(t);
    }
}

#include "legacy_blocking.h"

static void gemm_q4_0_q8a_avx2(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_generic(F_Q4_0, a, r0, r1); }
static void gemm_q4_1_q8a_avx2(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_generic(F_Q4_1, a, r0, r1); }
static void gemm_q5_0_q8a_avx2(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_generic(F_Q5_0, a, r0, r1); }
static void gemm_q5_1_q8a_avx2(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_generic(F_Q5_1, a, r0, r1); }
static void gemm_q8_0_q8a_avx2(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_generic(F_Q8_0, a, r0, r1); }

/* q8a_quantize (legacy_common.h) with 8 floats per instruction; the same operations (IEEE
 * division by d, round to nearest even, clamp), so the same bytes. */
static void quantize_q8a_avx2(const float *FC_RESTRICT x, void *FC_RESTRICT xq, int64_t k) {
    const int64_t nb = k / QK;
    uint8_t *row = xq;
    float *d = (float *)(row + nb * QK), *s = d + nb;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    for (int64_t b = 0; b < nb; b++) {
        __m256 v[4];
        for (int i = 0; i < 4; i++) v[i] = _mm256_loadu_ps(x + b * QK + 8 * i);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float db = _mm_cvtss_f32(m4) / 127.0f;
        __m256i q[4];
        if (db > 0.0f) {
            const __m256 dv = _mm256_set1_ps(db);
            for (int i = 0; i < 4; i++)
                q[i] = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(_mm256_div_ps(v[i], dv)), lo), hi);
        } else {
            for (int i = 0; i < 4; i++) q[i] = _mm256_setzero_si256();
        }
        /* the packs work per 128-bit lane; the permute puts the 32 bytes back in order */
        const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)(row + b * QK),
                            _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
        const __m256i t = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i t4 = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
        t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0x4E));
        t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0xB1));
        d[b] = db;
        s[b] = db * (float)_mm_cvtsi128_si32(t4);
    }
    memset(row + q8a_row_bytes(k) - Q8A_PAD, 0, Q8A_PAD);
}

/* Keeps the inherited dequantize (the scalar one: bit-exact with gguf, never fused). */
static void set(fc_table *t, int qtype, void (*gemm)(const fc_gemm_args *, int64_t, int64_t)) {
    t->q[qtype].quantize = quantize_q8a_avx2;
    t->q[qtype].gemm = gemm;
    t->q[qtype].isa = FC_ISA_AVX2;
}

FC_REG(legacy_avx2) {
    set(t, FC_Q4_0, gemm_q4_0_q8a_avx2);
    set(t, FC_Q4_1, gemm_q4_1_q8a_avx2);
    set(t, FC_Q5_0, gemm_q5_0_q8a_avx2);
    set(t, FC_Q5_1, gemm_q5_1_q8a_avx2);
    set(t, FC_Q8_0, gemm_q8_0_q8a_avx2);
}
