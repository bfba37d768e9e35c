/* Q4_K, Q5_K, Q6_K weights x kq_act activations (kquant_common.h), scalar reference: the
 * specification the SIMD versions are tested against.
 *
 * Per super-block b of weight row r and activation row j the integer part is exact:
 *   Q4_K/Q5_K: isum = sum_s sc[s] * sum_{i in s} q_i*a_i,  imin = sum_s m[s] * (bsums[2s] + bsums[2s+1])
 *              y += dx * (d * isum - dmin * imin)
 *   Q6_K:      isum = sum_g sc[g] * sum_{i in g} (q_i - 32)*a_i
 *              y += dx * d * isum
 * int32 is ample: |isum| <= 256 * 63 * 127 * 128 < 2^29.
 * Also here: dequantizers (bit-exact with ggml / the gguf package: (d*sc)*q - dmin*m in float32)
 * and the weight quantizers behind fc_quantize (Q4_K, Q5_K, Q6_K). */
#include <math.h>

#include "kquant_common.h"

/* ---- dequantize ---- */
static void dequant_q4_K(const void *FC_RESTRICT src, float *FC_RESTRICT dst, int64_t n) {
    const kq_block_q4_K *b = src;
    for (int64_t i = 0; i < n / KQ_QK; i++, b++) {
        const float d = fc_fp16_to_fp32(b->d), dmin = fc_fp16_to_fp32(b->dmin);
        uint8_t sc[8], m[8];
        kq_scale_min(b->scales, sc, m);
        for (int s = 0; s < 8; s++) {
            const float ds = d * (float)sc[s], dm = dmin * (float)m[s];
            const uint8_t *q = b->qs + 32 * (s / 2);
            const int shift = 4 * (s & 1);
            for (int l = 0; l < 32; l++) *dst++ = ds * (float)((q[l] >> shift) & 15) - dm;
        }
    }
}

static void dequant_q5_K(const void *FC_RESTRICT src, float *FC_RESTRICT dst, int64_t n) {
    const kq_block_q5_K *b = src;
    for (int64_t i = 0; i < n / KQ_QK; i++, b++) {
        const float d = fc_fp16_to_fp32(b->d), dmin = fc_fp16_to_fp32(b->dmin);
        uint8_t sc[8], m[8];
        kq_scale_min(b->scales, sc, m);
        for (int s = 0; s < 8; s++) {
            const float ds = d * (float)sc[s], dm = dmin * (float)m[s];
            const uint8_t *q = b->qs + 32 * (s / 2);
            const int shift = 4 * (s & 1);
            for (int l = 0; l < 32; l++) {
                const int v = ((q[l] >> shift) & 15) | (((b->qh[l] >> s) & 1) << 4);
                *dst++ = ds * (float)v - dm;
            }
        }
    }
}

static inline int q6_value(const kq_block_q6_K *b, int i) {
    const int h = i / 128, t = i % 128, quarter = t / 32, l = t % 32;
    const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
    const int lo = (quarter & 1) ? ql[l + 32] : ql[l];
    const int nib = (quarter & 2) ? lo >> 4 : lo & 15;
    return (nib | (((qh[l] >> (2 * quarter)) & 3) << 4)) - 32;
}

static void dequant_q6_K(const void *FC_RESTRICT src, float *FC_RESTRICT dst, int64_t n) {
    const kq_block_q6_K *b = src;
    for (int64_t i = 0; i < n / KQ_QK; i++, b++) {
        const float d = fc_fp16_to_fp32(b->d);
        for (int g = 0; g < 16; g++) {
            const float ds = d * (float)b->scales[g];
            for (int l = 0; l < 16; l++) *dst++ = ds * (float)q6_value(b, 16 * g + l);
        }
    }
}

/* ---- GEMM references ---- */
static float dot_q4_K(const kq_block_q4_K *w, const kq_act *a, int64_t nb) {
    float y = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        uint8_t sc[8], m[8];
        kq_scale_min(w[b].scales, sc, m);
        int32_t isum = 0, imin = 0;
        for (int s = 0; s < 8; s++) {
            const uint8_t *q = w[b].qs + 32 * (s / 2);
            const int shift = 4 * (s & 1);
            int32_t dot = 0;
            for (int l = 0; l < 32; l++) dot += ((q[l] >> shift) & 15) * a[b].qs[32 * s + l];
            isum += sc[s] * dot;
            imin += m[s] * (a[b].bsums[2 * s] + a[b].bsums[2 * s + 1]);
        }
        const float dx = a[b].d;
        y += dx * (fc_fp16_to_fp32(w[b].d) * (float)isum - fc_fp16_to_fp32(w[b].dmin) * (float)imin);
    }
    return y;
}

static float dot_q5_K(const kq_block_q5_K *w, const kq_act *a, int64_t nb) {
    float y = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        uint8_t sc[8], m[8];
        kq_scale_min(w[b].scales, sc, m);
        int32_t isum = 0, imin = 0;
        for (int s = 0; s < 8; s++) {
            const uint8_t *q = w[b].qs + 32 * (s / 2);
            const int shift = 4 * (s & 1);
            int32_t dot = 0;
            for (int l = 0; l < 32; l++) {
                const int v = ((q[l] >> shift) & 15) | (((w[b].qh[l] >> s) & 1) << 4);
                dot += v * a[b].qs[32 * s + l];
            }
            isum += sc[s] * dot;
            imin += m[s] * (a[b].bsums[2 * s] + a[b].bsums[2 * s + 1]);
        }
        const float dx = a[b].d;
        y += dx * (fc_fp16_to_fp32(w[b].d) * (float)isum - fc_fp16_to_fp32(w[b].dmin) * (float)imin);
    }
    return y;
}

static float dot_q6_K(const kq_block_q6_K *w, const kq_act *a, int64_t nb) {
    float y = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        int32_t isum = 0;
        for (int g = 0; g < 16; g++) {
            int32_t dot = 0;
            for (int l = 0; l < 16; l++) dot += q6_value(&w[b], 16 * g + l) * a[b].qs[16 * g + l];
            isum += w[b].scales[g] * dot;
        }
        y += a[b].d * fc_fp16_to_fp32(w[b].d) * (float)isum;
    }
    return y;
}

#define KQ_GEMM_REF(NAME, BLOCK, DOT)                                                       \
    static void NAME(const fc_gemm_args *a, int64_t r0, int64_t r1) {                       \
        const int64_t nb = a->k / KQ_QK;                                                    \
        for (int64_t r = r0; r < r1; r++) {                                                 \
            const BLOCK *w = (const BLOCK *)(a->w + r * a->w_row_bytes);                   \
            for (int64_t j = 0; j < a->n; j++)                                              \
                a->y[j * a->ldy + r] = DOT(w, (const kq_act *)(a->xq + j * a->xq_row_bytes), nb); \
        }                                                                                   \
    }

KQ_GEMM_REF(gemm_q4_K_q8_K_ref, kq_block_q4_K, dot_q4_K)
KQ_GEMM_REF(gemm_q5_K_q8_K_ref, kq_block_q5_K, dot_q5_K)
KQ_GEMM_REF(gemm_q6_K_q8_K_ref, kq_block_q6_K, dot_q6_K)

/* ---- weight quantizers (fc_quantize) ----
 * Not ggml's search-based quantizer: a direct one whose error has a simple bound, so that models
 * can be generated for tests. Every scale is rounded *up* (fp16 super-scale, 6/8-bit sub-scale) so
 * that the chosen range always covers the values and no quantized value clips:
 *   Q4_K, sub-block s of 32 with lo = min(0, min x), hi = max x:
 *     m[s] = ceil(-lo / dmin) so the offset dmin*m[s] >= -lo; step ds = d*sc[s] >= (hi + dmin*m[s])/15;
 *     |x - w| <= ds/2 < (hi - lo)/30 + dmin/30 + d/2, with dmin ~ amax/63, d ~ 2*amax/945.
 *   Q5_K: the same with 31 steps: |x - w| < (hi - lo)/62 + dmin/62 + d/2, d ~ 2*amax/1953.
 *   Q6_K, group g of 16 with a = max |x|: step ds = d*sc[g] >= a/31, q - 32 in [-31, 31];
 *     |x - w| <= ds/2 < a/62 + d/2, with d ~ amax/(31*127).
 * (amax: the super-block's largest |x|; "~": rounding fp16 up adds at most a relative 2^-10 and
 * the smallest subnormal step 2^-24; tests/test_kquant_quantize.py checks these bounds.) */

/* Smallest fp16 >= v (v >= 0, finite). */
static uint16_t fp16_up(float v) {
    uint16_t h = fc_fp32_to_fp16(v);
    if (fc_fp16_to_fp32(h) < v) h++;
    return h;
}

static int ceil_ratio(float num, float den, int hi) {
    if (den <= 0.0f || num <= 0.0f) return 0;
    int q = (int)ceilf(num / den);
    /* num/den rounded in float may sit one step under the exact ratio */
    while (q < hi && (float)q * den < num) q++;
    return q > hi ? hi : q;
}

/* One Q4_K/Q5_K super-block: fills d, dmin and the packed scales at d16 (the shared block head),
 * and q[256] in [0, qmax] (15 or 31). */
static void choose_q45(const float *x, int qmax, uint16_t *d16_out, uint16_t *dmin16_out, uint8_t scales[12],
                       uint8_t q[KQ_QK]) {
    float lo[8], hi[8], maxmin = 0.0f;
    for (int s = 0; s < 8; s++) {
        float l = 0.0f, h = -INFINITY;
        for (int t = 0; t < 32; t++) {
            const float v = x[32 * s + t];
            l = v < l ? v : l;
            h = v > h ? v : h;
        }
        lo[s] = l;
        hi[s] = h;
        maxmin = -l > maxmin ? -l : maxmin;
    }
    const uint16_t dmin16 = fp16_up(maxmin / 63.0f);
    const float dmin = fc_fp16_to_fp32(dmin16);
    uint8_t m[8], sc[8];
    float step[8], off[8], maxstep = 0.0f;
    for (int s = 0; s < 8; s++) {
        m[s] = (uint8_t)ceil_ratio(-lo[s], dmin, 63);
        off[s] = dmin * (float)m[s];
        step[s] = (hi[s] + off[s]) / (float)qmax;
        if (step[s] < 0.0f) step[s] = 0.0f;
        maxstep = step[s] > maxstep ? step[s] : maxstep;
    }
    const uint16_t d16 = fp16_up(maxstep / 63.0f);
    const float d = fc_fp16_to_fp32(d16);
    for (int s = 0; s < 8; s++) sc[s] = (uint8_t)ceil_ratio(step[s], d, 63);
    *d16_out = d16;
    *dmin16_out = dmin16;
    /* pack: inverse of kq_scale_min */
    for (int s = 0; s < 4; s++) {
        scales[s] = (uint8_t)((sc[s] & 63) | ((sc[s + 4] >> 4) << 6));
        scales[s + 4] = (uint8_t)((m[s] & 63) | ((m[s + 4] >> 4) << 6));
        scales[s + 8] = (uint8_t)((sc[s + 4] & 15) | ((m[s + 4] & 15) << 4));
    }
    for (int s = 0; s < 8; s++) {
        const float ds = d * (float)sc[s], dm = dmin * (float)m[s];
        const float ids = ds > 0.0f ? 1.0f / ds : 0.0f;
        for (int t = 0; t < 32; t++) {
            const int v = (int)nearbyintf((x[32 * s + t] + dm) * ids);
            q[32 * s + t] = (uint8_t)(v < 0 ? 0 : (v > qmax ? qmax : v));
        }
    }
}

static void quantize_q4_K(const float *x, void *dst, int64_t n) {
    kq_block_q4_K *b = dst;
    for (int64_t i = 0; i < n / KQ_QK; i++, b++, x += KQ_QK) {
        uint8_t q[KQ_QK];
        choose_q45(x, 15, &b->d, &b->dmin, b->scales, q);
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++) b->qs[32 * j + l] = (uint8_t)(q[64 * j + l] | (q[64 * j + 32 + l] << 4));
    }
}

static void quantize_q5_K(const float *x, void *dst, int64_t n) {
    kq_block_q5_K *b = dst;
    for (int64_t i = 0; i < n / KQ_QK; i++, b++, x += KQ_QK) {
        uint8_t q[KQ_QK];
        choose_q45(x, 31, &b->d, &b->dmin, b->scales, q);
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++)
                b->qs[32 * j + l] = (uint8_t)((q[64 * j + l] & 15) | ((q[64 * j + 32 + l] & 15) << 4));
        for (int l = 0; l < 32; l++) {
            uint8_t h = 0;
            for (int s = 0; s < 8; s++) h |= (uint8_t)((q[32 * s + l] >> 4) << s);
            b->qh[l] = h;
        }
    }
}

static void quantize_q6_K(const float *x, void *dst, int64_t n) {
    kq_block_q6_K *b = dst;
    for (int64_t i = 0; i < n / KQ_QK; i++, b++, x += KQ_QK) {
        float step[16], maxstep = 0.0f;
        for (int g = 0; g < 16; g++) {
            float a = 0.0f;
            for (int t = 0; t < 16; t++) {
                const float v = fabsf(x[16 * g + t]);
                a = v > a ? v : a;
            }
            step[g] = a / 31.0f;
            maxstep = step[g] > maxstep ? step[g] : maxstep;
        }
        const uint16_t d16 = fp16_up(maxstep / 127.0f);
        const float d = fc_fp16_to_fp32(d16);
        b->d = d16;
        memset(b->ql, 0, sizeof b->ql);
        memset(b->qh, 0, sizeof b->qh);
        for (int g = 0; g < 16; g++) {
            const int sc = ceil_ratio(step[g], d, 127);
            b->scales[g] = (int8_t)sc;
            const float ds = d * (float)sc, ids = ds > 0.0f ? 1.0f / ds : 0.0f;
            for (int t = 0; t < 16; t++) {
                const int idx = 16 * g + t;
                int q = (int)nearbyintf(x[idx] * ids);
                q = (q < -32 ? -32 : (q > 31 ? 31 : q)) + 32;
                const int h = idx / 128, tt = idx % 128, quarter = tt / 32, l = tt % 32;
                uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
                ql[(quarter & 1) ? l + 32 : l] |= (uint8_t)((q & 15) << ((quarter & 2) ? 4 : 0));
                qh[l] |= (uint8_t)((q >> 4) << (2 * quarter));
            }
        }
    }
}

/* Quantize `n` float32 values (a whole number of blocks) into GGUF blocks of `qtype`.
 * Returns 0, or -1 when there is no quantizer for qtype. */
FC_API int fc_quantize(int qtype, const float *src, void *dst, int64_t n) {
    switch (qtype) {
    case FC_Q4_K: quantize_q4_K(src, dst, n); return 0;
    case FC_Q5_K: quantize_q5_K(src, dst, n); return 0;
    case FC_Q6_K: quantize_q6_K(src, dst, n); return 0;
    default: return -1;
    }
}

FC_REG(kquant_scalar) {
    t->q[FC_Q4_K] = (fc_qkernel){.act_row_bytes = kq_act_row_bytes, .quantize = kq_quantize_act,
                                 .gemm = gemm_q4_K_q8_K_ref, .dequantize = dequant_q4_K,
                                 .isa = FC_ISA_SCALAR};
    t->q[FC_Q5_K] = (fc_qkernel){.act_row_bytes = kq_act_row_bytes, .quantize = kq_quantize_act,
                                 .gemm = gemm_q5_K_q8_K_ref, .dequantize = dequant_q5_K,
                                 .isa = FC_ISA_SCALAR};
    t->q[FC_Q6_K] = (fc_qkernel){.act_row_bytes = kq_act_row_bytes, .quantize = kq_quantize_act,
                                 .gemm = gemm_q6_K_q8_K_ref, .dequantize = dequant_q6_K,
                                 .isa = FC_ISA_SCALAR};
}
