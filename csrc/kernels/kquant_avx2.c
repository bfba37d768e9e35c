/* Q4_K, Q5_K, Q6_K x kq_act, AVX2 + FMA + F16C (no AVX-512 instruction may appear here).
 *
 * Weights are unpacked in natural order, 32 per ymm (one Q4_K/Q5_K sub-block, two Q6_K groups):
 * vpmaddubsw(u8 weights, s8 activations) -> int16 pair sums, |pair| <= 2*63*127 = 16002 < 2^15
 * (no saturation for unsigned weights up to 6 bits); vpmaddwd by the scale as int16 -> int32.
 * Per super-block the int32 sum is bounded by 256*63*127*128 < 2^30; across super-blocks the sum
 * is float32 (scaled by d*dx, the mins by dmin*dx). Q6_K's offset -32 comes out of the activation
 * group sums: isum - 32*sum_g sc[g]*bsums[g].
 *
 * With 16 ymm registers a whole unpacked super-block does not fit, so each ymm of weights is
 * unpacked right before use and applied to the whole tile of up to KQ_JT activation rows (GEMM
 * reuse without spilling the unpacked block). */
#include <immintrin.h>

#include "kquant_common.h"

#define KQ_JT 4
/* software prefetch distance in weight bytes (see kquant_avx512_impl.h) */
#define KQ_PF 4096
#define KQ_INLINE static inline __attribute__((always_inline))

/* per super-block values shared by its 8 ymm of weights */
typedef struct {
    __m256i slo, shi; /* int16 scales: Q4_K/Q5_K: the 8 in both lanes (slo); Q6_K: 0..7, 8..15 */
    __m256i mdup;     /* Q4_K/Q5_K: the 8 mins, each twice; Q6_K: the 16 scales */
    __m128 dd;        /* [d, dmin, 0, 0] (Q6_K: dmin = 0) */
} kq_pre;

/* vpshufb control: word `lo` of the low lane and word `hi` of the high lane, in every word */
static inline __m256i word_splat(int lo, int hi) {
    return _mm256_setr_epi8(2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1,
                            2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1,
                            2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1,
                            2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1);
}

static inline __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

KQ_INLINE void kq_pre_q45(kq_pre *p, const uint16_t *d_dmin, const uint8_t *packed) {
    const __m128i scm = kq_scale_min_sse(packed);
    p->slo = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scm));
    p->shi = p->slo;
    p->mdup = _mm256_cvtepu8_epi16(
        _mm_shuffle_epi8(scm, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
    p->dd = kq_d_dmin(d_dmin);
}

KQ_INLINE void kq_pre_q4_K(kq_pre *p, const kq_block_q4_K *b) { kq_pre_q45(p, &b->d, b->scales); }
KQ_INLINE void kq_pre_q5_K(kq_pre *p, const kq_block_q5_K *b) { kq_pre_q45(p, &b->d, b->scales); }

KQ_INLINE void kq_pre_q6_K(kq_pre *p, const kq_block_q6_K *b) {
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
    p->slo = _mm256_permute2x128_si256(sc16, sc16, 0x00);
    p->shi = _mm256_permute2x128_si256(sc16, sc16, 0x11);
    p->mdup = sc16;
    p->dd = _mm_cvtph_ps(_mm_cvtsi32_si128(b->d));
}

/* ymm i (weights 32i..32i+31) and its scale vector */
KQ_INLINE __m256i kq_w_q4_K(const kq_block_q4_K *b, int i) {
    const __m256i v = load32(b->qs + 32 * (i / 2));
    return _mm256_and_si256(i & 1 ? _mm256_srli_epi16(v, 4) : v, _mm256_set1_epi8(0x0F));
}

KQ_INLINE __m256i kq_w_q5_K(const kq_block_q5_K *b, int i) {
    const __m256i v = load32(b->qs + 32 * (i / 2)), qh = load32(b->qh);
    const __m256i nib = _mm256_and_si256(i & 1 ? _mm256_srli_epi16(v, 4) : v, _mm256_set1_epi8(0x0F));
    /* bit i of each qh byte to bit 4 (shifts under 8 keep it inside its byte) */
    const __m256i hb = i < 4 ? _mm256_slli_epi16(qh, 4 - i) : (i == 4 ? qh : _mm256_srli_epi16(qh, i - 4));
    return _mm256_or_si256(nib, _mm256_and_si256(hb, _mm256_set1_epi8(0x10)));
}

KQ_INLINE __m256i kq_w_q6_K(const kq_block_q6_K *b, int i) {
    const int h = i / 4, t = i % 4;
    const __m256i ql = load32(b->ql + 64 * h + 32 * (t & 1)), qh = load32(b->qh + 32 * h);
    const __m256i nib = _mm256_and_si256(t & 2 ? _mm256_srli_epi16(ql, 4) : ql, _mm256_set1_epi8(0x0F));
    const __m256i hb = t == 0 ? _mm256_slli_epi16(qh, 4)
                     : t == 1 ? _mm256_slli_epi16(qh, 2)
                     : t == 2 ? qh
                              : _mm256_srli_epi16(qh, 2);
    return _mm256_or_si256(nib, _mm256_and_si256(hb, _mm256_set1_epi8(0x30)));
}

KQ_INLINE __m256i kq_sc_q4_K(const kq_pre *p, int i) { return _mm256_shuffle_epi8(p->slo, word_splat(i, i)); }
#define kq_sc_q5_K kq_sc_q4_K
/* ymm i holds groups 2i (low lane) and 2i+1 (high lane) */
KQ_INLINE __m256i kq_sc_q6_K(const kq_pre *p, int i) {
    return _mm256_shuffle_epi8(i < 4 ? p->slo : p->shi, word_splat((2 * i) & 7, (2 * i + 1) & 7));
}

/* Q4_K/Q5_K: acc += dx*d*isum - dx*dmin*sum_s m[s]*bsum(s) (one accumulator: registers are
 * scarce with 16 ymm) */
KQ_INLINE void kq_fin_q45(const kq_pre *p, const kq_act *a, __m256i is, __m256 *acc) {
    const __m128 f = _mm_mul_ps(p->dd, _mm_set1_ps(a->d)); /* [d*dx, dmin*dx] */
    const __m256i im = _mm256_madd_epi16(load32(a->bsums), p->mdup);
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_broadcastss_ps(f), *acc);
    *acc = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(im), _mm256_broadcastss_ps(_mm_movehdup_ps(f)), *acc);
}
#define kq_fin_q4_K kq_fin_q45
#define kq_fin_q5_K kq_fin_q45

/* Q6_K: acc += dx*d*(isum - 32*sum_g sc[g]*bsum[g]) */
KQ_INLINE void kq_fin_q6_K(const kq_pre *p, const kq_act *a, __m256i is, __m256 *acc) {
    const __m128 f = _mm_mul_ps(p->dd, _mm_set1_ps(a->d));
    const __m256i im = _mm256_madd_epi16(load32(a->bsums), p->mdup);
    const __m256i t = _mm256_sub_epi32(is, _mm256_slli_epi32(im, 5));
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), _mm256_broadcastss_ps(f), *acc);
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#define KQ_ROWS(FMT, BLOCK)                                                                       \
    KQ_INLINE void kq_rows_##FMT(const BLOCK *w, int64_t nb, const uint8_t *xq, size_t xs, int JT, \
                                 float *out) {                                                    \
        __m256 acc[KQ_JT];                                                                        \
        for (int j = 0; j < JT; j++) acc[j] = _mm256_setzero_ps();                                \
        for (int64_t b = 0; b < nb; b++) {                                                        \
            const char *pf = (const char *)(w + b) + KQ_PF;                                       \
            for (size_t o = 0; o < sizeof(BLOCK); o += 64) _mm_prefetch(pf + o, _MM_HINT_T1);      \
            kq_pre p;                                                                             \
            kq_pre_##FMT(&p, w + b);                                                              \
            __m256i is[KQ_JT];                                                                    \
            for (int j = 0; j < JT; j++) is[j] = _mm256_setzero_si256();                          \
            /* unrolled: i selects shifts and masks at compile time */                           \
            _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) {                                 \
                const __m256i wv = kq_w_##FMT(w + b, i), sv = kq_sc_##FMT(&p, i);                \
                for (int j = 0; j < JT; j++) {                                                    \
                    const kq_act *a = (const kq_act *)(xq + j * xs) + b;                          \
                    const __m256i pr = _mm256_maddubs_epi16(wv, load32(a->qs + 32 * i));          \
                    is[j] = _mm256_add_epi32(is[j], _mm256_madd_epi16(pr, sv));                   \
                }                                                                                 \
            }                                                                                     \
            for (int j = 0; j < JT; j++)                                                          \
                kq_fin_##FMT(&p, (const kq_act *)(xq + j * xs) + b, is[j], &acc[j]);              \
        }                                                                                         \
        for (int j = 0; j < JT; j++) out[j] = hsum8(acc[j]);                                      \
    }                                                                                             \
    static void gemm_##FMT##_q8_K_avx2(const fc_gemm_args *a, int64_t r0, int64_t r1) {           \
        const int64_t nb = a->k / KQ_QK;                                                          \
        for (int64_t r = r0; r < r1; r++) {                                                       \
            const BLOCK *w = (const BLOCK *)(a->w + r * a->w_row_bytes);                          \
            for (int64_t j0 = 0; j0 < a->n; j0 += KQ_JT) {                                        \
                float out[KQ_JT];                                                                 \
                const uint8_t *xq = a->xq + j0 * a->xq_row_bytes;                                 \
                const int64_t left = a->n - j0;                                                   \
                switch (left >= KQ_JT ? KQ_JT : (int)left) {                                      \
                case 1: kq_rows_##FMT(w, nb, xq, a->xq_row_bytes, 1, out); break;                 \
                case 2: kq_rows_##FMT(w, nb, xq, a->xq_row_bytes, 2, out); break;                 \
                case 3: kq_rows_##FMT(w, nb, xq, a->xq_row_bytes, 3, out); break;                 \
                default: kq_rows_##FMT(w, nb, xq, a->xq_row_bytes, 4, out); break;                \
                }                                                                                 \
                const int64_t jn = left >= KQ_JT ? KQ_JT : left;                                  \
                for (int64_t j = 0; j < jn; j++) a->y[(j0 + j) * a->ldy + r] = out[j];            \
            }                                                                                     \
        }                                                                                         \
    }

KQ_ROWS(q4_K, kq_block_q4_K)
KQ_ROWS(q5_K, kq_block_q5_K)
KQ_ROWS(q6_K, kq_block_q6_K)

/* Dequantizers come from the level below (the entry is copied); the activation quantizer is
 * kquant_common.h's AVX2 one (the AVX-512 levels inherit it). */
FC_REG(kquant_avx2) {
    t->q[FC_Q4_K].quantize = t->q[FC_Q5_K].quantize = t->q[FC_Q6_K].quantize = kq_quantize_act_avx2;
    t->q[FC_Q4_K].gemm = gemm_q4_K_q8_K_avx2;
    t->q[FC_Q5_K].gemm = gemm_q5_K_q8_K_avx2;
    t->q[FC_Q6_K].gemm = gemm_q6_K_q8_K_avx2;
    t->q[FC_Q4_K].isa = t->q[FC_Q5_K].isa = t->q[FC_Q6_K].isa = FC_ISA_AVX2;
}
