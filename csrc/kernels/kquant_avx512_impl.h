/* Body of the AVX-512 K-quant kernels (AVX-512BW vpmaddubsw + vpmaddwd), included by
 * kquant_avx512.c and compiled with its flags. The AVX-512 VNNI level reads these formats through
 * kquantx16_avx512vnni.c (16-row tiles, packed or gathered, the same bits either way).
 *
 * Weights are unpacked 64 per zmm (one "chunk"). Q4_K/Q5_K: one 64-byte nibble load gives two
 * chunks, low nibbles = sub-blocks {0,2} and high = {1,3} (then {4,6}, {5,7}); their activations
 * are stored in that order by kq_quantize_act_swapped_avx2, so each chunk meets one aligned
 * 64-byte activation load. Q6_K chunks are in natural order. The integer dot product is scaled per
 * sub-block in the integer domain:
 *   BW:   vpmaddubsw(u, a) -> int16 pairs, |pair| <= 2*63*127 = 16002 < 2^15 (no saturation for
 *         unsigned weights up to 6 bits), then vpmaddwd with the sub-block scale as int16 -> int32.
 * Per super-block the int32 sum is bounded by 256*63*127*128 < 2^30 (Q6_K: |scale| <= 128), then
 * scaled in float32 by d*dx (and the mins by dmin*dx) into a float accumulator per output.
 * Q6_K is stored as q-32 with q in [0,63]: the kernel multiplies q and subtracts 32*sc[g]*bsum[g].
 *
 * GEMM: each weight super-block is unpacked once per tile of up to KQ_JT = 8 activation rows
 * (8 vs 4: about 10% more GFLOP/s at n >= 16; 32 zmm registers hold the tile). */
#include <immintrin.h>

#include "kquant_common.h"

#define KQ_NAME(x) x##_avx512
#define KQ_ISA FC_ISA_AVX512

#define KQ_JT 8
/* Software prefetch (to L2, 4 KiB ahead). Measured on the loaded 2-vCPU dev VM, Q4_K GEMV over
 * 256 MB, 1 thread, as a fraction of a plain streaming read of the same array (median of 3x4
 * alternating runs): none 0.50; T0 2 KiB 0.76; T0 4 KiB 0.79; NTA 2 KiB 0.65; T1 2 KiB 0.73;
 * T1 4 KiB 0.87; T1 8 KiB 0.82. The hardware prefetchers alone do not keep the stream ahead. */
#ifndef KQ_PF
#define KQ_PF 4096
#endif
#define KQ_INLINE static inline __attribute__((always_inline))

/* Which scale serves byte p (0..63) of chunk c (64 weights): Q4_K/Q5_K chunks are the
 * sub-block pairs {0,2} {1,3} {4,6} {5,7} (the swapped activation layout, kquant_common.h);
 * Q6_K chunks are in natural order, 16 weights per scale. */
static inline int kq_scale_of(int fmt6, int c, int p) {
    return fmt6 ? (64 * c + p) / 16 : 4 * (c / 2) + (c % 2) + 2 * (p / 32);
}

/* BW: vpmaddubsw pairs, word p of chunk c covers bytes 2p, 2p+1. */
static inline __m512i kq_scale_index(int fmt6, int c) {
    uint16_t idx[32];
    for (int p = 0; p < 32; p++) idx[p] = (uint16_t)kq_scale_of(fmt6, c, 2 * p);
    return _mm512_loadu_si512(idx);
}

typedef struct {
    __m512i sidx[4];       /* scale index per chunk */
    __m512i lo4, b10;      /* byte masks */
    __m512i q5_shift[4];   /* Q5_K: moves the chunk's qh bits to bit 4 */
    __m512i q6_shl, q6_shr, m3f;
} kq_consts;

static inline void kq_consts_init(kq_consts *k, int fmt6) {
    for (int c = 0; c < 4; c++) k->sidx[c] = kq_scale_index(fmt6, c);
    k->lo4 = _mm512_set1_epi8(0x0F);
    k->b10 = _mm512_set1_epi8(0x10);
    k->m3f = _mm512_set1_epi8(0x3F);
    /* chunk c holds sub-blocks s (low 256 bits) and s+2 (high): bit s of qh -> bit 4 is a left
     * shift by 4-s for s < 4, right by s-4 after */
    k->q5_shift[0] = _mm512_set_epi64(2, 2, 2, 2, 4, 4, 4, 4); /* s = 0, 2: left */
    k->q5_shift[1] = _mm512_set_epi64(1, 1, 1, 1, 3, 3, 3, 3); /* s = 1, 3: left */
    k->q5_shift[2] = _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0); /* s = 4, 6: right */
    k->q5_shift[3] = _mm512_set_epi64(3, 3, 3, 3, 1, 1, 1, 1); /* s = 5, 7: right */
    k->q6_shl = _mm512_set_epi64(2, 2, 2, 2, 4, 4, 4, 4);
    k->q6_shr = _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0);
}

static inline float kq_hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

/* ---- one super-block, unpacked ---- */
typedef struct {
    __m512i w[4];  /* 256 unsigned weights, chunk order as kq_scale_of */
    __m512i sc[4]; /* scale vectors, one per chunk */
    __m256i mdup;  /* Q4_K/Q5_K: mins, each twice (one per 16-value bsum); Q6_K: the 16 scales */
    __m128 dd;     /* [d, dmin, 0, 0] (Q6_K: dmin = 0) */
} kq_sb;

KQ_INLINE void kq_scales_q45(kq_sb *s, const kq_consts *k, const uint8_t *packed) {
    const __m128i scm = kq_scale_min_sse(packed);
    const __m512i sc16 = _mm512_zextsi128_si512(_mm_cvtepu8_epi16(scm));
    for (int c = 0; c < 4; c++) s->sc[c] = _mm512_permutexvar_epi16(k->sidx[c], sc16);
    s->mdup = _mm256_cvtepu8_epi16(
        _mm_shuffle_epi8(scm, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
}

KQ_INLINE void kq_unpack_q4_K(kq_sb *s, const kq_consts *k, const kq_block_q4_K *b) {
    for (int h = 0; h < 2; h++) {
        const __m512i v = _mm512_loadu_si512(b->qs + 64 * h);
        s->w[2 * h] = _mm512_and_si512(v, k->lo4);
        s->w[2 * h + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), k->lo4);
    }
    kq_scales_q45(s, k, b->scales);
    s->dd = kq_d_dmin(&b->d);
}

KQ_INLINE void kq_unpack_q5_K(kq_sb *s, const kq_consts *k, const kq_block_q5_K *b) {
    const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)b->qh));
    for (int h = 0; h < 2; h++) {
        const __m512i v = _mm512_loadu_si512(b->qs + 64 * h);
        const __m512i lo = _mm512_and_si512(v, k->lo4);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), k->lo4);
        const __m512i hb0 = h == 0 ? _mm512_sllv_epi64(qh, k->q5_shift[0]) : _mm512_srlv_epi64(qh, k->q5_shift[2]);
        const __m512i hb1 = h == 0 ? _mm512_sllv_epi64(qh, k->q5_shift[1]) : _mm512_srlv_epi64(qh, k->q5_shift[3]);
        /* lo | (hb & 0x10) */
        s->w[2 * h] = _mm512_ternarylogic_epi32(lo, hb0, k->b10, 0xF8);
        s->w[2 * h + 1] = _mm512_ternarylogic_epi32(hi, hb1, k->b10, 0xF8);
    }
    kq_scales_q45(s, k, b->scales);
    s->dd = kq_d_dmin(&b->d);
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
    s->dd = _mm_cvtph_ps(_mm_cvtsi32_si128(b->d));
}

/* ---- per activation row ---- */
KQ_INLINE __m512i kq_isum(const kq_sb *s, const kq_act *a) {
    __m512i x[4];
    for (int c = 0; c < 4; c++) x[c] = _mm512_loadu_si512(a->qs + 64 * c);
    __m512i acc = _mm512_madd_epi16(_mm512_maddubs_epi16(s->w[0], x[0]), s->sc[0]);
    for (int c = 1; c < 4; c++)
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(s->w[c], x[c]), s->sc[c]));
    return acc;
}

/* Q4_K/Q5_K: acc += dx*d*isum, accm += dx*dmin*sum_s m[s]*bsum(s) */
KQ_INLINE void kq_row_q45(const kq_sb *s, const kq_act *a, __m512 *acc, __m256 *accm) {
    const __m512i is = kq_isum(s, a);
    const __m128 f = _mm_mul_ps(s->dd, _mm_set1_ps(a->d)); /* [d*dx, dmin*dx] */
    const __m256i im = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a->bsums), s->mdup);
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_broadcastss_ps(f), *acc);
    *accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(im), _mm256_broadcastss_ps(_mm_movehdup_ps(f)), *accm);
}

/* Q6_K: acc += dx*d*(isum - 32*sum_g sc[g]*bsum[g]) */
KQ_INLINE void kq_row_q6(const kq_sb *s, const kq_act *a, __m512 *acc, __m256 *accm) {
    (void)accm;
    const __m512i is = kq_isum(s, a);
    const __m128 f = _mm_mul_ps(s->dd, _mm_set1_ps(a->d)); /* [d*dx, dmin*dx] */
    const __m256i im = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)a->bsums), s->mdup);
    const __m512i t = _mm512_sub_epi32(is, _mm512_zextsi256_si512(_mm256_slli_epi32(im, 5)));
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), _mm512_broadcastss_ps(f), *acc);
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
            if (KQ_PF > 0) {                                                                      \
                const char *pf = (const char *)(w + b) + KQ_PF;                                   \
                for (size_t o = 0; o < sizeof(BLOCK); o += 64) _mm_prefetch(pf + o, _MM_HINT_T1);      \
            }                                                                                     \
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
                                 int64_t j0, int64_t j1) {                                        \
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
                case 4: kq_rows_##FMT(w, nb, k, xq, a->xq_row_bytes, 4, out); break;              \
                case 5: kq_rows_##FMT(w, nb, k, xq, a->xq_row_bytes, 5, out); break;              \
                case 6: kq_rows_##FMT(w, nb, k, xq, a->xq_row_bytes, 6, out); break;              \
                case 7: kq_rows_##FMT(w, nb, k, xq, a->xq_row_bytes, 7, out); break;              \
                default: kq_rows_##FMT(w, nb, k, xq, a->xq_row_bytes, 8, out); break;             \
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
        kq_consts_init(&k, KQ_FMT6_##FMT);                                                        \
        const int64_t n = a->n;                                                                   \
        if (n <= KQ_ACT_ROWS_PER_PASS) {                                                          \
            kq_pass_##FMT(a, &k, r0, r1, 0, n);                                                   \
            return;                                                                               \
        }                                                                                         \
        int64_t rb = (int64_t)(KQ_W_BYTES_PER_BLOCK / a->w_row_bytes);                            \
        if (rb < 1) rb = 1;                                                                       \
        for (int64_t b0 = r0; b0 < r1; b0 += rb) {                                                \
            const int64_t b1 = r1 - b0 < rb ? r1 : b0 + rb;                                       \
            for (int64_t j0 = 0; j0 < n; j0 += KQ_ACT_ROWS_PER_PASS)                              \
                kq_pass_##FMT(a, &k, b0, b1, j0,                                                  \
                              n - j0 < KQ_ACT_ROWS_PER_PASS ? n : j0 + KQ_ACT_ROWS_PER_PASS);     \
        }                                                                                         \
    }

/* A multiple of KQ_JT (see above). */
#define KQ_ACT_ROWS_PER_PASS 64
#define KQ_W_BYTES_PER_BLOCK (128 * 1024)

#define KQ_FMT6_q4_K 0
#define KQ_FMT6_q5_K 0
#define KQ_FMT6_q6_K 1

KQ_ROWS(q4_K, kq_block_q4_K, kq_unpack_q4_K, kq_row_q45)
KQ_ROWS(q5_K, kq_block_q5_K, kq_unpack_q5_K, kq_row_q45)
KQ_ROWS(q6_K, kq_block_q6_K, kq_unpack_q6_K, kq_row_q6)

/* Dequantizers come from the level below (the entry is copied); Q4_K/Q5_K read activations in
 * the swapped layout (kquant_common.h). */
static void KQ_NAME(kq_register)(fc_table *t) {
    t->q[FC_Q4_K].quantize = t->q[FC_Q5_K].quantize = kq_quantize_act_swapped_avx2;
    t->q[FC_Q6_K].quantize = kq_quantize_act_avx2;
    t->q[FC_Q4_K].gemm = KQ_NAME(gemm_q4_K_q8_K);
    t->q[FC_Q5_K].gemm = KQ_NAME(gemm_q5_K_q8_K);
    t->q[FC_Q6_K].gemm = KQ_NAME(gemm_q6_K_q8_K);
    t->q[FC_Q4_K].isa = t->q[FC_Q5_K].isa = t->q[FC_Q6_K].isa = KQ_ISA;
}
