/* K-quant block layouts (GGUF, bit-exact with ggml's block_q4_K / block_q5_K / block_q6_K) and the
 * activation format of the K-quant kernels (kq_act; the avx512 level's Q4_K/Q5_K entries store
 * its values in a swapped order, see kq_quantize_act_swapped_avx2). An entry's quantize and gemm
 * always go together: never feed one level's activations to another level's gemm. Plain C (the
 * AVX2 helpers at the end are compiled only into the SIMD files). */
#ifndef FC_KQUANT_COMMON_H
#define FC_KQUANT_COMMON_H

#include <math.h>

#include "fc_internal.h"

#define KQ_QK 256 /* weights per super-block */

/* Q4_K: 8 sub-blocks of 32 weights; w = d*sc[s]*q - dmin*m[s], q in [0,15], sc/m 6-bit. */
typedef struct {
    uint16_t d, dmin;     /* fp16 */
    uint8_t scales[12];   /* 8 scales + 8 mins, 6 bits each, packed (see kq_scale_min) */
    uint8_t qs[128];      /* byte l of 32-byte group j: low nibble = weight 64j+l, high = 64j+32+l */
} kq_block_q4_K;

/* Q5_K: as Q4_K with a fifth bit per weight: bit s of qh[l] is the high bit of weight 32s+l. */
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[32];
    uint8_t qs[128];
} kq_block_q5_K;

/* Q6_K: 16 groups of 16 weights; w = d*sc[g]*(q-32), q in [0,63], sc int8. In each half h of 128
 * weights (ql += 64h, qh += 32h), for l < 32:
 *   weight l    : ql[l]    & 15 | (qh[l]      & 3) << 4
 *   weight l+32 : ql[l+32] & 15 | (qh[l] >> 2 & 3) << 4
 *   weight l+64 : ql[l]    >> 4 | (qh[l] >> 4 & 3) << 4
 *   weight l+96 : ql[l+32] >> 4 | (qh[l] >> 6 & 3) << 4 */
typedef struct {
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    uint16_t d;
} kq_block_q6_K;

_Static_assert(sizeof(kq_block_q4_K) == 144, "Q4_K block is 144 bytes");
_Static_assert(sizeof(kq_block_q5_K) == 176, "Q5_K block is 176 bytes");
_Static_assert(sizeof(kq_block_q6_K) == 210, "Q6_K block is 210 bytes");

/* Activation block ("Q8_K-like"): 256 int8 values q with scale d = amax/127 (float32), so
 * x ~= d*q with |x - d*q| <= d/2; bsums[g] = sum of q over values 16g..16g+15, which turns the
 * min/offset terms of the weights into 8 or 16 multiply-adds per super-block. qs comes first so
 * that it is 64-byte aligned (the row stride is a multiple of 64 and the block 320 bytes). */
typedef struct {
    int8_t qs[KQ_QK];
    int16_t bsums[16];
    float d;
    uint8_t pad_[28];
} kq_act;

_Static_assert(sizeof(kq_act) == 320, "activation block is 320 bytes");

/* Unpack the 12 packed bytes of Q4_K/Q5_K into 8 scales sc[0..7] and 8 mins m[0..7]:
 * s < 4: sc = b[s] & 63,                    m = b[s+4] & 63
 * s >= 4: sc = b[s+4] & 15 | (b[s-4] >> 6) << 4,  m = b[s+4] >> 4 | (b[s] >> 6) << 4
 * Done on 32-bit words so that it costs a dozen integer ops for all 16 values. */
static inline void kq_scale_min(const uint8_t *b, uint8_t sc[8], uint8_t m[8]) {
    uint32_t w0, w1, w2;
    memcpy(&w0, b, 4);
    memcpy(&w1, b + 4, 4);
    memcpy(&w2, b + 8, 4);
    const uint32_t lo6 = 0x3f3f3f3fu, lo4 = 0x0f0f0f0fu, top2 = 0x03030303u;
    const uint32_t sc_lo = w0 & lo6, m_lo = w1 & lo6;
    const uint32_t sc_hi = (w2 & lo4) | (((w0 >> 6) & top2) << 4);
    const uint32_t m_hi = ((w2 >> 4) & lo4) | (((w1 >> 6) & top2) << 4);
    memcpy(sc, &sc_lo, 4);
    memcpy(sc + 4, &sc_hi, 4);
    memcpy(m, &m_lo, 4);
    memcpy(m + 4, &m_hi, 4);
}

static inline size_t kq_act_row_bytes(int64_t k) { return (size_t)(k / KQ_QK) * sizeof(kq_act); }

/* Round-to-nearest activation quantization: d = amax/127, q = nearest(x/d) (ties to even). */
static inline void kq_quantize_act(const float *FC_RESTRICT x, void *FC_RESTRICT xq, int64_t k) {
    kq_act *a = xq;
    for (int64_t b = 0; b < k / KQ_QK; b++, x += KQ_QK, a++) {
        float amax = 0.0f;
        for (int i = 0; i < KQ_QK; i++) {
            const float v = fabsf(x[i]);
            amax = v > amax ? v : amax;
        }
        const float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
        for (int i = 0; i < KQ_QK; i++) {
            float q = nearbyintf(x[i] * id);
            q = q > 127.0f ? 127.0f : (q < -127.0f ? -127.0f : q);
            a->qs[i] = (int8_t)q;
        }
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int i = 0; i < 16; i++) s += a->qs[16 * g + i];
            a->bsums[g] = (int16_t)s;
        }
        a->d = d;
        memset(a->pad_, 0, sizeof a->pad_);
    }
}

#ifdef __AVX2__
#include <immintrin.h>
/* kq_quantize_act with AVX2 (same result: vcvtps2dq rounds to nearest even like nearbyintf, and
 * |x*id| <= 127 after rounding, so the int16/int8 packs never saturate). Compiled into every SIMD
 * level: the scalar version calls libm's nearbyintf per value (no SSE4.1 at baseline). */
static inline __attribute__((always_inline)) void kq_quantize_act_avx2_(const float *FC_RESTRICT x,
                                                                        void *FC_RESTRICT xq, int64_t k,
                                                                        int swap_mid) {
    kq_act *a = xq;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t b = 0; b < k / KQ_QK; b++, x += KQ_QK, a++) {
        __m256 m = _mm256_setzero_ps();
        for (int i = 0; i < KQ_QK; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
        const __m256 vid = _mm256_set1_ps(id);
        for (int i = 0; i < KQ_QK; i += 32) {
            const __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vid));
            const __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vid));
            const __m256i q2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 16), vid));
            const __m256i q3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 24), vid));
            /* group sums of 16: (q0+q1) and (q2+q3), reduced to two scalars */
            const __m256i s01 = _mm256_add_epi32(q0, q1), s23 = _mm256_add_epi32(q2, q3);
            __m256i h = _mm256_hadd_epi32(s01, s23);                 /* [01 01 23 23 | 01 01 23 23] */
            h = _mm256_hadd_epi32(h, h);                             /* [01 23 01 23 | ...] */
            const __m128i t = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
            a->bsums[i / 16] = (int16_t)_mm_cvtsi128_si32(t);
            a->bsums[i / 16 + 1] = (int16_t)_mm_extract_epi32(t, 1);
            /* packs work per 128-bit lane: restore the order with one dword permute */
            const __m256i p16 = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
            /* swap_mid: 32-value groups stored in the order 0,2,1,3 within each 128 (see below) */
            const int at = swap_mid && ((i >> 5) & 1) != ((i >> 6) & 1) ? i ^ 96 : i;
            _mm256_storeu_si256((__m256i *)(a->qs + at), _mm256_permutevar8x32_epi32(p16, perm));
        }
        a->d = d;
        memset(a->pad_, 0, sizeof a->pad_);
    }
}

/* [d, dmin, 0, 0] of a Q4_K/Q5_K block (the two fp16 at its start) */
static inline __m128 kq_d_dmin(const uint16_t *d) {
    int32_t v;
    memcpy(&v, d, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128(v));
}

/* kq_scale_min in one xmm: bytes 0-7 = the 8 scales, 8-15 = the 8 mins. Reads 16 bytes from
 * `packed` (the 12 scale bytes are followed by at least 4 more bytes of the same block). */
static inline __m128i kq_scale_min_sse(const uint8_t *packed) {
    const __m128i v = _mm_loadu_si128((const __m128i *)packed);
    /* A: the byte holding each value's low bits; B: the byte holding its top 2 bits (hi half) */
    const __m128i a = _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
    const __m128i b = _mm_shuffle_epi8(v, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
    const __m128i m_lo = _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0);
    const __m128i m_sh = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15);
    const __m128i top = _mm_and_si128(_mm_srli_epi16(b, 2), _mm_set1_epi8(0x30));
    return _mm_or_si128(_mm_or_si128(_mm_and_si128(a, m_lo), _mm_and_si128(_mm_srli_epi16(a, 4), m_sh)), top);
}

static inline void kq_quantize_act_avx2(const float *FC_RESTRICT x, void *FC_RESTRICT xq, int64_t k) {
    kq_quantize_act_avx2_(x, xq, k, 0);
}

/* The AVX-512 Q4_K/Q5_K activation layout ("kq_act, sub-blocks swapped"): as kq_act, but in each
 * 128 values the 32-value groups are stored in the order 0, 2, 1, 3 (bsums stay in natural order),
 * so that one 64-byte nibble load of the weights (low nibbles = sub-blocks 0 and 2, high = 1 and 3)
 * meets its activations in one 64-byte load. */
static inline void kq_quantize_act_swapped_avx2(const float *FC_RESTRICT x, void *FC_RESTRICT xq, int64_t k) {
    kq_quantize_act_avx2_(x, xq, k, 1);
}
#endif

#endif
