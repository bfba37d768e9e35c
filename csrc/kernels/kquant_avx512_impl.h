/* Body of the AVX-512 K-quant kernels, included by kquant_avx512.c (KQ_VNNI 0: AVX-512BW
 * vpmaddubsw + vpmaddwd) and kquant_avx512vnni.c (KQ_VNNI 1: vpdpbusd + vpdpwssd). Not a kernel
 * file of its own: it is compiled with the flags of the file that includes it.
 *
 * Weights are unpacked in their natural order, 64 per zmm (one "chunk"): a 32-byte nibble group
 * is broadcast to both halves of a zmm and shifted by 0 / 4 per half (vpsrlvq), so the int8
 * activations are used as stored. A chunk's integer dot product is scaled per sub-block in the
 * integer domain:
 *   BW:   vpmaddubsw(u, a) -> int16 pairs, |pair| <= 2*63*127 = 16002 < 2^15 (no saturation for
 *         unsigned weights up to 6 bits), then vpmaddwd with the sub-block scale as int16 -> int32.
 *   VNNI: vpdpbusd(0, u, a) -> int32 quads, |quad| <= 4*63*127 = 32004 < 2^15, so a quad fits
 *         the low int16 of its lane; vpdpwssd with the scale in the low word (high word 0) then
 *         multiplies and accumulates it exactly.
 * Per super-block the int32 sum is bounded by 256*63*127*128 < 2^30 (Q6_K: |scale| <= 128), then
 * scaled in float32 by d*dx (and the mins by dmin*dx) into a float accumulator per output.
 * Q6_K is stored as q-32 with q in [0,63]: the kernel multiplies q and subtracts 32*sc[g]*bsum[g].
 *
 * GEMM: each weight super-block is unpacked once per tile of up to KQ_JT activation rows. */
#include <immintrin.h>

#include "kquant_common.h"

#if KQ_VNNI
#define KQ_NAME(x) x##_avx512vnni
#define KQ_ISA FC_ISA_AVX512_VNNI
#else
#define KQ_NAME(x) x##_avx512
#define KQ_ISA FC_ISA_AVX512
#endif

#define KQ_JT 4
#define KQ_INLINE static inline __attribute__((always_inline))

/* acc += (dot of 64 u8 weights with 64 s8 activations, per 32-bit lane) * scale vector */
KQ_INLINE __m512i kq_dot(__m512i acc, __m512i w, __m512i x, __m512i sc) {
#if KQ_VNNI
    return _mm512_dpwssd_epi32(acc, _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, x), sc);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(w, x), sc));
#endif
}

/* vpermw indices that spread the int16 scales (words 0..15 of a zmm, words >= 16 zero) over
 * one chunk's lanes. VNNI wants a scale per dword in its low word (index 31 = a zero word);
 * BW wants it in every word. `per` = weights per scale (32 for Q4_K/Q5_K, 16 for Q6_K). */
static inline __m512i kq_scale_index(int c, int per) {
    uint16_t idx[32];
    for (int i = 0; i < 32; i++) {
#if KQ_VNNI
        idx[i] = (i & 1) ? 31 : (uint16_t)((64 * c + 4 * (i / 2)) / per);
#else
        idx[i] = (uint16_t)((64 * c + 2 * i) / per);
#endif
    }
    return _mm512_loadu_si512(idx);
}

typedef struct {
    __m512i sidx[4];       /* scale spread per chunk */
    __m512i qs_shift;      /* 0 for the low 256 bits, 4 for the high: nibble select */
    __m512i lo4, b10, m3f; /* byte masks */
    __m512i q5_shift[4];   /* Q5_K: moves the chunk's qh bits to bit 4 */
    __m512i q6_shl, q6_shr;
} kq_consts;

static inline void kq_consts_init(kq_consts *k, int per) {
    for (int c = 0; c < 4; c++) k->sidx[c] = kq_scale_index(c, per);
    k->qs_shift = _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0);
    k->lo4 = _mm512_set1_epi8(0x0F);
    k->b10 = _mm512_set1_epi8(0x10);
    k->m3f = _mm512_set1_epi8(0x3F);
    /* bit s of qh -> bit 4, s = 2c (low half), 2c+1 (high half): left by 4-s for c < 2, right
     * by s-4 after */
    k->q5_shift[0] = _mm512_set_epi64(3, 3, 3, 3, 4, 4, 4, 4);
    k->q5_shift[1] = _mm512_set_epi64(1, 1, 1, 1, 2, 2, 2, 2);
    k->q5_shift[2] = _mm512_set_epi64(1, 1, 1, 1, 0, 0, 0, 0);
    k->q5_shift[3] = _mm512_set_epi64(3, 3, 3, 3, 2, 2, 2, 2);
    k->q6_shl = _mm512_set_epi64(2, 2, 2, 2, 4, 4, 4, 4);
    k->q6_shr = _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0);
}

static inline float kq_hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

/* ---- one super-block, unpacked ---- */
typedef struct {
    __m512i w[4];  /* 256 unsigned weights */
    __m512i sc[4]; /* scale vectors per chunk */
    __m256i mdup;  /* Q4_K/Q5_K: mins, each twice (one per 16-value bsum); Q6_K: the 16 scales */
    float d, dmin;
} kq_sb;

KQ_INLINE void kq_scales_q45(kq_sb *s, const kq_consts *k, const uint8_t *packed) {
    uint8_t sc[8], m[8];
    kq_scale_min(packed, sc, m);
    uint64_t sc64, m64;
    memcpy(&sc64, sc, 8);
    memcpy(&m64, m, 8);
    const __m512i sc16 = _mm512_zextsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc64)));
    for (int c = 0; c < 4; c++) s->sc[c] = _mm512_permutexvar_epi16(k->sidx[c], sc16);
    const __m128i m8 = _mm_cvtsi64_si128((long long)m64);
    s->mdup = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
}

KQ_INLINE void kq_unpack_q4_K(kq_sb *s, const kq_consts *k, const kq_block_q4_K *b) {
    for (int c = 0; c < 4; c++) {
        const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qs + 32 * c)));
        s->w[c] = _mm512_and_si512(_mm512_srlv_epi64(v, k->qs_shift), k->lo4);
    }
    kq_scales_q45(s, k, b->scales);
    s->d = _cvtsh_ss(b->d);
    s->dmin = _cvtsh_ss(b->dmin);
}

KQ_INLINE void kq_unpack_q5_K(kq_sb *s, const kq_consts *k, const kq_block_q5_K *b) {
    const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)b->qh));
    for (int c = 0; c < 4; c++) {
        const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qs + 32 * c)));
        const __m512i lo = _mm512_and_si512(_mm512_srlv_epi64(v, k->qs_shift), k->lo4);
        const __m512i hb = c < 2 ? _mm512_sllv_epi64(qh, k->q5_shift[c]) : _mm512_srlv_epi64(qh, k->q5_shift[c]);
        /* lo | (hb & 0x10) */
        s->w[c] = _mm512_ternarylogic_epi32(lo, hb, k->b10, 0xF8);
    }
    kq_scales_q45(s, k, b->scales);
    s->d = _cvtsh_ss(b->d);
    s->dmin = _cvtsh_ss(b->dmin);
}

KQ_INLINE void kq_unpack_q6_K(kq_sb *s, const kq_consts *k, const kq_block_q6_K *b) {
    for (int h = 0; h < 2; h++) {
        const __m512i ql = _mm512_loadu_si512(b->ql + 64 * h);
        const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)));
        /* bits 0-3 from the nibble (C = 0x0F selects A), bits 4-7 from the shifted qh, then 0x3F */
        const __m512i a0 = _mm512_ternarylogic_epi32(ql, _mm512_sllv_epi64(qh, k->q6_shl), k->lo4, 0xE4);
        const __m512i a1 = _mm512_ternarylogic_epi32(_mm512_srli_epi16(ql, 4), _mm512_srlv_epi64(qh, k->q6_shr),
                                                     k->lo4, 0xE4);
        s->w[2 * h] = _mm512_and_si512(a0, k->m3f);
        s->w[2 * h + 1] = _mm512_and_si512(a1, k->m3f);
    }
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
    const __m512i sc = _mm512_zextsi256_si512(sc16);
    for (int c = 0; c < 4; c++) s->sc[c] = _mm512_permutexvar_epi16(k->sidx[c], sc);
    s->mdup = sc16;
    s->d = _cvtsh_ss(b->d);
    s->dmin = 0.0f;
}

/* ---- per activation row ---- */
KQ_INLINE __m512i kq_isum(const kq_sb *s, const kq_act *a) {
    __m512i acc = _mm512_setzero_si512();
    for (int c = 0; c < 4; c++) acc = kq_dot(acc, s->w[c], _mm512_loadu_si512(a->qs + 64 * c), s->sc[c]);
    return acc;
}

/* Q4_K/Q5_K: acc += dx*d*isum, accm += dx*dmin*sum_s m[s]*bsum(s) */
KQ_INLINE void kq_row_q45(const kq_sb *s, const kq_act *a, __m512 *acc, __m256 *accm) {
    const __m512i is = kq_isum(s, a);
    const __m256i im = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a->bsums), s->mdup);
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_set1_ps(s->d * a->d), *acc);
    *accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(im), _mm256_set1_ps(s->dmin * a->d), *accm);
}

/* Q6_K: acc += dx*d*(isum - 32*sum_g sc[g]*bsum[g]) */
KQ_INLINE void kq_row_q6(const kq_sb *s, const kq_act *a, __m512 *acc, __m256 *accm) {
    (void)accm;
    const __m512i is = kq_isum(s, a);
    const __m256i im = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a->bsums), s->mdup);
    const __m512i t = _mm512_sub_epi32(is, _mm512_zextsi256_si512(_mm256_slli_epi32(im, 5)));
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), _mm512_set1_ps(s->d * a->d), *acc);
}

/* One weight row against JT activation rows (JT a compile-time constant after inlining). */
#define KQ_ROWS(FMT, BLOCK, UNPACK, ROW)                                                          \
    KQ_INLINE void kq_rows_##FMT(const BLOCK *w, int64_t nb, const kq_consts *k,                  \
                                 const uint8_t *xq, size_t xs, int JT, float *out) {              \
        __m512 acc[KQ_JT];                                                                        \
        __m256 accm[KQ_JT];                                                                       \
        for (int j = 0; j < JT; j++) {                                                            \
            acc[j] = _mm512_setzero_ps();                                                         \
            accm[j] = _mm256_setzero_ps();                                                        \
        }                                                                                         \
        for (int64_t b = 0; b < nb; b++) {                                                        \
            kq_sb s;                                                                              \
            UNPACK(&s, k, w + b);                                                                 \
            for (int j = 0; j < JT; j++) ROW(&s, (const kq_act *)(xq + j * xs) + b, &acc[j], &accm[j]); \
        }                                                                                         \
        for (int j = 0; j < JT; j++) {                                                            \
            __m256 m = accm[j];                                                                   \
            __m128 m4 = _mm_add_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));       \
            m4 = _mm_add_ps(m4, _mm_movehl_ps(m4, m4));                                           \
            m4 = _mm_add_ss(m4, _mm_movehdup_ps(m4));                                             \
            out[j] = kq_hsum(acc[j]) - _mm_cvtss_f32(m4);                                         \
        }                                                                                         \
    }                                                                                             \
    KQ_INLINE void kq_pass_##FMT(const fc_gemm_args *a, const kq_consts *k, int64_t r0, int64_t r1,        \
                                  int64_t j0, int64_t j1) {                                       \
        const int64_t nb = a->k / KQ_QK;                                                          \
        for (int64_t r = r0; r < r1; r++) {                                                       \
            const BLOCK *w = (const BLOCK *)(a->w + r * a->w_row_bytes);                          \
            for (int64_t jt = j0; jt < j1; jt += KQ_JT) {                                         \
                float out[KQ_JT];                                                                 \
                const uint8_t *xq = a->xq + jt * a->xq_row_bytes;                                 \
                const int64_t left = j1 - jt;                                                     \
                switch (left >= KQ_JT ? KQ_JT : (int)left) {                                      \
                case 1: kq_rows_##FMT(w, nb, k, xq, a->xq_row_bytes, 1, out); break;              \
                case 2: kq_rows_##FMT(w, nb, k, xq, a->xq_row_bytes, 2, out); break;              \
                case 3: kq_rows_##FMT(w, nb, k, xq, a->xq_row_bytes, 3, out); break;              \
                default: kq_rows_##FMT(w, nb, k, xq, a->xq_row_bytes, 4, out); break;             \
                }                                                                                 \
                const int64_t jn = left >= KQ_JT ? KQ_JT : left;                                  \
                for (int64_t j = 0; j < jn; j++) a->y[(jt + j) * a->ldy + r] = out[j];            \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
    /* Beyond KQ_ACT_ROWS_PER_PASS activation rows: blocks of ~KQ_W_BYTES_PER_BLOCK weight rows   \
     * x passes of that many activation rows, so that both stay in L2 (the whole activation      \
     * matrix of a 512-token block is ~1.3 MiB at k = 2048). Every output is computed as without  \
     * the blocking (same activation tiles of KQ_JT), so the results are bit-identical. */         \
    static void KQ_NAME(gemm_##FMT##_q8_K)(const fc_gemm_args *a, int64_t r0, int64_t r1) {       \
        kq_consts k;                                                                              \
        kq_consts_init(&k, KQ_PER_##FMT);                                                         \
        const int64_t n = a->n;                                                                   \
        if (n <= KQ_ACT_ROWS_PER_PASS) {                                                          \
            kq_pass_##FMT(a, &k, r0, r1, 0, n);                                                  \
            return;                                                                               \
        }                                                                                         \
        int64_t rb = (int64_t)(KQ_W_BYTES_PER_BLOCK / a->w_row_bytes);                            \
        if (rb < 1) rb = 1;                                                                       \
        for (int64_t b0 = r0; b0 < r1; b0 += rb) {                                                \
            const int64_t b1 = r1 - b0 < rb ? r1 : b0 + rb;                                       \
            for (int64_t j0 = 0; j0 < n; j0 += KQ_ACT_ROWS_PER_PASS)                              \
                kq_pass_##FMT(a, &k, b0, b1, j0,                                                 \
                               n - j0 < KQ_ACT_ROWS_PER_PASS ? n : j0 + KQ_ACT_ROWS_PER_PASS);    \
        }                                                                                         \
    }

/* A multiple of KQ_JT (see above). */
#define KQ_ACT_ROWS_PER_PASS 64
#define KQ_W_BYTES_PER_BLOCK (128 * 1024)

#define KQ_PER_q4_K 32
#define KQ_PER_q5_K 32
#define KQ_PER_q6_K 16

KQ_ROWS(q4_K, kq_block_q4_K, kq_unpack_q4_K, kq_row_q45)
KQ_ROWS(q5_K, kq_block_q5_K, kq_unpack_q5_K, kq_row_q45)
KQ_ROWS(q6_K, kq_block_q6_K, kq_unpack_q6_K, kq_row_q6)

/* Dequantizers and the activation quantizer come from the level below (the entry is copied). */
static void KQ_NAME(kq_register)(fc_table *t) {
    t->q[FC_Q4_K].gemm = KQ_NAME(gemm_q4_K_q8_K);
    t->q[FC_Q5_K].gemm = KQ_NAME(gemm_q5_K_q8_K);
    t->q[FC_Q6_K].gemm = KQ_NAME(gemm_q6_K_q8_K);
    t->q[FC_Q4_K].isa = t->q[FC_Q5_K].isa = t->q[FC_Q6_K].isa = KQ_ISA;
}
