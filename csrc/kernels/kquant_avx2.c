/* Q4_K, Q5_K, Q6_K x kq_act, AVX2 + FMA + F16C (no AVX-512 instruction may appear here).
 *
 * Weights are unpacked in natural order, 32 per ymm (one Q4_K/Q5_K sub-block, two Q6_K groups):
 * vpmaddubsw(u8 weights, s8 activations) -> int16 pair sums, |pair| <= 2*63*127 = 16002 < 2^15
 * (no saturation for unsigned weights up to 6 bits); vpmaddwd by the scale as int16 -> int32.
 * Per super-block the int32 sum is bounded by 256*63*127*128 < 2^30; across super-blocks the sum
 * is float32 (scaled by d*dx, the mins by dmin*dx). Q6_K's offset -32 comes out of the activation
 * group sums: isum - 32*sum_g sc[g]*bsums[g].
 *
 * GEMM: each weight super-block is unpacked once (to the stack: 16 ymm registers do not hold it)
 * per tile of up to KQ_JT activation rows. */
#include <immintrin.h>

#include "kquant_common.h"

#define KQ_JT 4
/* software prefetch distance in weight bytes (see kquant_avx512_impl.h) */
#define KQ_PF 4096
#define KQ_INLINE static inline __attribute__((always_inline))

typedef struct {
    __m256i w[8];   /* 256 unsigned weights */
    __m256i sc[8];  /* int16 scale per word for each ymm of weights */
    __m256i mdup;   /* Q4_K/Q5_K: the 8 mins, each twice; Q6_K: the 16 scales */
    __m128 dd;     /* [d, dmin, 0, 0] (Q6_K: dmin = 0) */
} kq_sb;

/* vpshufb control: word `i` of each 128-bit lane, in every word of the lane */
static inline __m256i word_splat(int lo, int hi) {
    return _mm256_setr_epi8(2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1,
                            2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1, 2 * lo, 2 * lo + 1,
                            2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1,
                            2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1, 2 * hi, 2 * hi + 1);
}

KQ_INLINE void kq_scales_q45(kq_sb *s, const uint8_t *packed) {
    const __m128i scm = kq_scale_min_sse(packed);
    const __m256i both = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scm));
    for (int i = 0; i < 8; i++) s->sc[i] = _mm256_shuffle_epi8(both, word_splat(i, i));
    s->mdup = _mm256_cvtepu8_epi16(
        _mm_shuffle_epi8(scm, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
}

KQ_INLINE void kq_unpack_q4_K(kq_sb *s, const kq_block_q4_K *b) {
    const __m256i lo4 = _mm256_set1_epi8(0x0F);
    for (int c = 0; c < 4; c++) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * c));
        s->w[2 * c] = _mm256_and_si256(v, lo4);
        s->w[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
    }
    kq_scales_q45(s, b->scales);
    s->dd = kq_d_dmin(&b->d);
}

KQ_INLINE void kq_unpack_q5_K(kq_sb *s, const kq_block_q5_K *b) {
    const __m256i lo4 = _mm256_set1_epi8(0x0F), b10 = _mm256_set1_epi8(0x10);
    const __m256i qh = _mm256_loadu_si256((const __m256i *)b->qh);
    /* bit s of each qh byte moved to bit 4 (shifts under 8 keep it inside its byte) */
    const __m256i hb[8] = {_mm256_slli_epi16(qh, 4), _mm256_slli_epi16(qh, 3), _mm256_slli_epi16(qh, 2),
                           _mm256_slli_epi16(qh, 1), qh,                       _mm256_srli_epi16(qh, 1),
                           _mm256_srli_epi16(qh, 2), _mm256_srli_epi16(qh, 3)};
    for (int c = 0; c < 4; c++) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * c));
        s->w[2 * c] = _mm256_or_si256(_mm256_and_si256(v, lo4), _mm256_and_si256(hb[2 * c], b10));
        s->w[2 * c + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), lo4),
                                          _mm256_and_si256(hb[2 * c + 1], b10));
    }
    kq_scales_q45(s, b->scales);
    s->dd = kq_d_dmin(&b->d);
}

KQ_INLINE void kq_unpack_q6_K(kq_sb *s, const kq_block_q6_K *b) {
    const __m256i lo4 = _mm256_set1_epi8(0x0F), b30 = _mm256_set1_epi8(0x30);
    for (int h = 0; h < 2; h++) {
        const __m256i ql0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
        const __m256i ql1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
        __m256i *w = s->w + 4 * h;
        w[0] = _mm256_or_si256(_mm256_and_si256(ql0, lo4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), b30));
        w[1] = _mm256_or_si256(_mm256_and_si256(ql1, lo4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), b30));
        w[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), lo4), _mm256_and_si256(qh, b30));
        w[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), lo4),
                               _mm256_and_si256(_mm256_srli_epi16(qh, 2), b30));
    }
    /* ymm i holds groups 2i (low lane) and 2i+1 (high lane) */
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
    const __m256i lo = _mm256_permute2x128_si256(sc16, sc16, 0x00); /* scales 0..7 in both lanes */
    const __m256i hi = _mm256_permute2x128_si256(sc16, sc16, 0x11); /* scales 8..15 */
    for (int i = 0; i < 8; i++) s->sc[i] = _mm256_shuffle_epi8(i < 4 ? lo : hi, word_splat((2 * i) & 7, (2 * i + 1) & 7));
    s->mdup = sc16;
    s->dd = _mm_cvtph_ps(_mm_cvtsi32_si128(b->d));
}

KQ_INLINE __m256i kq_isum(const kq_sb *s, const kq_act *a) {
    __m256i acc = _mm256_setzero_si256();
    for (int i = 0; i < 8; i++) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)(a->qs + 32 * i));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(s->w[i], x), s->sc[i]));
    }
    return acc;
}

KQ_INLINE void kq_row_q45(const kq_sb *s, const kq_act *a, __m256 *acc, __m256 *accm) {
    const __m256i is = kq_isum(s, a);
    const __m128 f = _mm_mul_ps(s->dd, _mm_set1_ps(a->d)); /* [d*dx, dmin*dx] */
    const __m256i im = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a->bsums), s->mdup);
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_broadcastss_ps(f), *acc);
    *accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(im), _mm256_broadcastss_ps(_mm_movehdup_ps(f)), *accm);
}

KQ_INLINE void kq_row_q6(const kq_sb *s, const kq_act *a, __m256 *acc, __m256 *accm) {
    (void)accm;
    const __m256i is = kq_isum(s, a);
    const __m128 f = _mm_mul_ps(s->dd, _mm_set1_ps(a->d)); /* [d*dx, dmin*dx] */
    const __m256i im = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a->bsums), s->mdup);
    const __m256i t = _mm256_sub_epi32(is, _mm256_slli_epi32(im, 5));
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), _mm256_broadcastss_ps(f), *acc);
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#define KQ_ROWS(FMT, BLOCK, UNPACK, ROW)                                                          \
    KQ_INLINE void kq_rows_##FMT(const BLOCK *w, int64_t nb, const uint8_t *xq, size_t xs, int JT, \
                                 float *out) {                                                    \
        __m256 acc[KQ_JT], accm[KQ_JT];                                                           \
        for (int j = 0; j < JT; j++) acc[j] = accm[j] = _mm256_setzero_ps();                      \
        for (int64_t b = 0; b < nb; b++) {                                                        \
            kq_sb s;                                                                              \
            const char *pf = (const char *)(w + b) + KQ_PF;                                       \
            for (size_t o = 0; o < sizeof(BLOCK); o += 64) _mm_prefetch(pf + o, _MM_HINT_T1);          \
            UNPACK(&s, w + b);                                                                    \
            for (int j = 0; j < JT; j++) ROW(&s, (const kq_act *)(xq + j * xs) + b, &acc[j], &accm[j]); \
        }                                                                                         \
        for (int j = 0; j < JT; j++) out[j] = hsum8(acc[j]) - hsum8(accm[j]);                     \
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

KQ_ROWS(q4_K, kq_block_q4_K, kq_unpack_q4_K, kq_row_q45)
KQ_ROWS(q5_K, kq_block_q5_K, kq_unpack_q5_K, kq_row_q45)
KQ_ROWS(q6_K, kq_block_q6_K, kq_unpack_q6_K, kq_row_q6)

/* Dequantizers come from the level below (the entry is copied); the activation quantizer is
 * kquant_common.h's AVX2 one (the AVX-512 levels inherit it). */
FC_REG(kquant_avx2) {
    t->q[FC_Q4_K].quantize = t->q[FC_Q5_K].quantize = t->q[FC_Q6_K].quantize = kq_quantize_act_avx2;
    t->q[FC_Q4_K].gemm = gemm_q4_K_q8_K_avx2;
    t->q[FC_Q5_K].gemm = gemm_q5_K_q8_K_avx2;
    t->q[FC_Q6_K].gemm = gemm_q6_K_q8_K_avx2;
    t->q[FC_Q4_K].isa = t->q[FC_Q5_K].isa = t->q[FC_Q6_K].isa = FC_ISA_AVX2;
}
