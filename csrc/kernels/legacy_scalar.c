/* Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 weights against q8a activations (legacy_common.h), scalar
 * reference: the specification the AVX2 / AVX-512 / AVX-512 VNNI versions are tested against.
 *
 * Instructions: plain C (baseline x86-64).
 * Per block the integer inner product sum (q_i - off) * a_i is exact in int32
 * (|.| <= 32 * 128 * 127 = 520192); blocks are combined in float32:
 *     y = sum_b dw_b * d_b * isum_b  (+ mw_b * s_b for the formats with a min).
 * Dequantization follows the gguf package operation for operation (float32 d * q, then + m, no
 * fused multiply-add) so that it is bit-exact with it.
 */
#include "legacy_common.h"

/* ---- unpack one block to its 32 codes (element order of the format) ---- */
static inline void codes_q4(const uint8_t *qs, int off, int q[QK]) {
    for (int j = 0; j < QK / 2; j++) {
        q[j] = (qs[j] & 0x0F) - off;
        q[j + QK / 2] = (qs[j] >> 4) - off;
    }
}

static inline void codes_q5(const uint8_t *qh4, const uint8_t *qs, int off, int q[QK]) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    for (int j = 0; j < QK / 2; j++) {
        q[j] = ((qs[j] & 0x0F) | (int)(((qh >> j) & 1) << 4)) - off;
        q[j + QK / 2] = ((qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4)) - off;
    }
}

static inline int32_t idot(const int q[QK], const int8_t *a) {
    int32_t s = 0;
    for (int i = 0; i < QK; i++) s += q[i] * a[i];
    return s;
}

/* ---- dot products of one weight row with one activation row ---- */
static float dot_q4_0_ref(const uint8_t *w, const uint8_t *xa, int64_t nb) {
    const blk_q4_0 *b = (const blk_q4_0 *)w;
    const int8_t *a = q8a_qs(xa);
    const float *d = q8a_d(xa, nb);
    float y = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int q[QK];
        codes_q4(b[i].qs, 8, q);
        y += fc_fp16_to_fp32(b[i].d) * d[i] * (float)idot(q, a + i * QK);
    }
    return y;
}

static float dot_q4_1_ref(const uint8_t *w, const uint8_t *xa, int64_t nb) {
    const blk_q4_1 *b = (const blk_q4_1 *)w;
    const int8_t *a = q8a_qs(xa);
    const float *d = q8a_d(xa, nb), *s = q8a_s(xa, nb);
    float y = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int q[QK];
        codes_q4(b[i].qs, 0, q);
        y += fc_fp16_to_fp32(b[i].d) * d[i] * (float)idot(q, a + i * QK) + fc_fp16_to_fp32(b[i].m) * s[i];
    }
    return y;
}

static float dot_q5_0_ref(const uint8_t *w, const uint8_t *xa, int64_t nb) {
    const blk_q5_0 *b = (const blk_q5_0 *)w;
    const int8_t *a = q8a_qs(xa);
    const float *d = q8a_d(xa, nb);
    float y = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int q[QK];
        codes_q5(b[i].qh, b[i].qs, 16, q);
        y += fc_fp16_to_fp32(b[i].d) * d[i] * (float)idot(q, a + i * QK);
    }
    return y;
}

static float dot_q5_1_ref(const uint8_t *w, const uint8_t *xa, int64_t nb) {
    const blk_q5_1 *b = (const blk_q5_1 *)w;
    const int8_t *a = q8a_qs(xa);
    const float *d = q8a_d(xa, nb), *s = q8a_s(xa, nb);
    float y = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int q[QK];
        codes_q5(b[i].qh, b[i].qs, 0, q);
        y += fc_fp16_to_fp32(b[i].d) * d[i] * (float)idot(q, a + i * QK) + fc_fp16_to_fp32(b[i].m) * s[i];
    }
    return y;
}

static float dot_q8_0_ref(const uint8_t *w, const uint8_t *xa, int64_t nb) {
    const blk_q8_0 *b = (const blk_q8_0 *)w;
    const int8_t *a = q8a_qs(xa);
    const float *d = q8a_d(xa, nb);
    float y = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int q[QK];
        for (int j = 0; j < QK; j++) q[j] = b[i].qs[j];
        y += fc_fp16_to_fp32(b[i].d) * d[i] * (float)idot(q, a + i * QK);
    }
    return y;
}

#define LEGACY_GEMM(NAME, DOT)                                                            \
    static void NAME(const fc_gemm_args *a, int64_t r0, int64_t r1) {                    \
        const int64_t nb = a->k / QK;                                                     \
        for (int64_t r = r0; r < r1; r++)                                                 \
            for (int64_t j = 0; j < a->n; j++)                                            \
                a->y[j * a->ldy + r] =                                                    \
                    DOT(a->w + r * a->w_row_bytes, a->xq + j * a->xq_row_bytes, nb);     \
    }

LEGACY_GEMM(gemm_q4_0_q8a_ref, dot_q4_0_ref)
LEGACY_GEMM(gemm_q4_1_q8a_ref, dot_q4_1_ref)
LEGACY_GEMM(gemm_q5_0_q8a_ref, dot_q5_0_ref)
LEGACY_GEMM(gemm_q5_1_q8a_ref, dot_q5_1_ref)
LEGACY_GEMM(gemm_q8_0_q8a_ref, dot_q8_0_ref)

/* ---- dequantization, bit-exact with gguf.quants (float32 ops in its order, never fused) ---- */
#define NOFMA __attribute__((optimize("fp-contract=off")))

NOFMA static void dequant_q4_0(const void *FC_RESTRICT src, float *FC_RESTRICT dst, int64_t n) {
    const blk_q4_0 *b = src;
    for (int64_t i = 0; i < n / QK; i++) {
        int q[QK];
        codes_q4(b[i].qs, 8, q);
        const float d = fc_fp16_to_fp32(b[i].d);
        for (int j = 0; j < QK; j++) dst[i * QK + j] = d * (float)q[j];
    }
}

NOFMA static void dequant_q4_1(const void *FC_RESTRICT src, float *FC_RESTRICT dst, int64_t n) {
    const blk_q4_1 *b = src;
    for (int64_t i = 0; i < n / QK; i++) {
        int q[QK];
        codes_q4(b[i].qs, 0, q);
        const float d = fc_fp16_to_fp32(b[i].d), m = fc_fp16_to_fp32(b[i].m);
        for (int j = 0; j < QK; j++) {
            const float v = d * (float)q[j];
            dst[i * QK + j] = v + m;
        }
    }
}

NOFMA static void dequant_q5_0(const void *FC_RESTRICT src, float *FC_RESTRICT dst, int64_t n) {
    const blk_q5_0 *b = src;
    for (int64_t i = 0; i < n / QK; i++) {
        int q[QK];
        codes_q5(b[i].qh, b[i].qs, 16, q);
        const float d = fc_fp16_to_fp32(b[i].d);
        for (int j = 0; j < QK; j++) dst[i * QK + j] = d * (float)q[j];
    }
}

NOFMA static void dequant_q5_1(const void *FC_RESTRICT src, float *FC_RESTRICT dst, int64_t n) {
    const blk_q5_1 *b = src;
    for (int64_t i = 0; i < n / QK; i++) {
        int q[QK];
        codes_q5(b[i].qh, b[i].qs, 0, q);
        const float d = fc_fp16_to_fp32(b[i].d), m = fc_fp16_to_fp32(b[i].m);
        for (int j = 0; j < QK; j++) {
            const float v = d * (float)q[j];
            dst[i * QK + j] = v + m;
        }
    }
}

NOFMA static void dequant_q8_0(const void *FC_RESTRICT src, float *FC_RESTRICT dst, int64_t n) {
    const blk_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK; i++) {
        const float d = fc_fp16_to_fp32(b[i].d);
        for (int j = 0; j < QK; j++) dst[i * QK + j] = (float)b[i].qs[j] * d;
    }
}

static void quantize_q8a(const float *FC_RESTRICT x, void *FC_RESTRICT xq, int64_t k) { q8a_quantize(x, xq, k); }

#define ENTRY(GEMM, DEQ)                                                                   \
    (fc_qkernel) {                                                                         \
        .act_row_bytes = q8a_row_bytes, .quantize = quantize_q8a, .gemm = GEMM,            \
        .dequantize = DEQ, .isa = FC_ISA_SCALAR                                            \
    }

FC_REG(legacy_scalar) {
    t->q[FC_Q4_0] = ENTRY(gemm_q4_0_q8a_ref, dequant_q4_0);
    t->q[FC_Q4_1] = ENTRY(gemm_q4_1_q8a_ref, dequant_q4_1);
    t->q[FC_Q5_0] = ENTRY(gemm_q5_0_q8a_ref, dequant_q5_0);
    t->q[FC_Q5_1] = ENTRY(gemm_q5_1_q8a_ref, dequant_q5_1);
    t->q[FC_Q8_0] = ENTRY(gemm_q8_0_q8a_ref, dequant_q8_0);
}
