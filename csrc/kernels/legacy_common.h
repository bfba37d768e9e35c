/* Shared by the legacy_*.c kernel files (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 weights): GGUF block
 * structs (bit-exact with ggml-common.h) and the int8 activation format all of them read.
 *
 * Activation format "q8a" (one row of k values, k a multiple of 32, nb = k / 32 blocks):
 *     int8  qs[nb * 32]   q_i = round_to_nearest_even(x_i / d_b), |q_i| <= 127
 *     float d[nb]         d_b = amax_b / 127 (float32, not fp16: tests/tolerances.py bounds the
 *                         activation error by amax_b / 254 per value, which fp16 would exceed)
 *     float s[nb]         s_b = d_b * sum_{i in b} q_i (the block sum, like ggml's Q8_1, so the
 *                         min term of Q4_1/Q5_1 and the offset of Q4_0/Q5_0 cost one multiply
 *                         per block instead of a pass over the block)
 *     64 bytes of padding (SIMD kernels may read a few floats past d[]/s[])
 * The quantized values come first so that they start on the row's 64-byte alignment
 * (dispatch.c rounds the activation row stride to 64 bytes).
 *
 * Every weight block here is 32 values; a kernel computes per block
 *     dot_b = dw_b * d_b * sum_i (q_i - off) * a_i   (+ mw_b * s_b for Q4_1 / Q5_1)
 * where q_i is the stored unsigned code (Q4: 0..15, Q5: 0..31) and off = 8 (Q4_0), 16 (Q5_0),
 * 0 (Q4_1, Q5_1); Q8_0 codes are signed and have no offset. The SIMD kernels take the offset out
 * of the integer product as - off * dw_b * s_b, so their integer inner products only ever see
 * unsigned weight codes (vpmaddubsw / vpdpbusd want u8 x s8).
 */
#ifndef FC_LEGACY_COMMON_H
#define FC_LEGACY_COMMON_H

#include <math.h>

#include "fc_internal.h"

#define QK 32

typedef struct {
    uint16_t d;
    uint8_t qs[QK / 2];
} blk_q4_0;

typedef struct {
    uint16_t d, m;
    uint8_t qs[QK / 2];
} blk_q4_1;

typedef struct {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[QK / 2];
} blk_q5_0;

typedef struct {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[QK / 2];
} blk_q5_1;

typedef struct {
    uint16_t d;
    int8_t qs[QK];
} blk_q8_0;

_Static_assert(sizeof(blk_q4_0) == 18, "Q4_0 block is 18 bytes");
_Static_assert(sizeof(blk_q4_1) == 20, "Q4_1 block is 20 bytes");
_Static_assert(sizeof(blk_q5_0) == 22, "Q5_0 block is 22 bytes");
_Static_assert(sizeof(blk_q5_1) == 24, "Q5_1 block is 24 bytes");
_Static_assert(sizeof(blk_q8_0) == 34, "Q8_0 block is 34 bytes");

/* ---- activation format ---- */
#define Q8A_PAD 64

static inline size_t q8a_row_bytes(int64_t k) {
    const size_t nb = (size_t)(k / QK);
    return nb * QK + 2 * nb * sizeof(float) + Q8A_PAD;
}

static inline const int8_t *q8a_qs(const uint8_t *row) { return (const int8_t *)row; }
static inline const float *q8a_d(const uint8_t *row, int64_t nb) {
    return (const float *)(row + nb * QK);
}
static inline const float *q8a_s(const uint8_t *row, int64_t nb) {
    return (const float *)(row + nb * QK) + nb;
}

/* Quantize one row: the specification of the format. The SIMD levels have their own copies
 * (quantize_q8a_avx2, quantize_q8a_x512) doing the same IEEE operations, so they write the same
 * bytes. lrintf rounds half to even in the default rounding mode (cvtss2si). */
static inline void q8a_quantize(const float *FC_RESTRICT x, void *FC_RESTRICT out, int64_t k) {
    const int64_t nb = k / QK;
    uint8_t *row = out;
    int8_t *qs = (int8_t *)row;
    float *d = (float *)(row + nb * QK);
    float *s = d + nb;
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + b * QK;
        float amax = 0.0f;
        for (int i = 0; i < QK; i++) {
            const float v = fabsf(xb[i]);
            amax = v > amax ? v : amax;
        }
        const float db = amax / 127.0f;
        int sum = 0;
        for (int i = 0; i < QK; i++) {
            /* x / d, not x * (127 / amax): the reciprocal overflows for subnormal amax */
            int q = db > 0.0f ? (int)lrintf(xb[i] / db) : 0;
            q = q > 127 ? 127 : (q < -127 ? -127 : q);
            qs[b * QK + i] = (int8_t)q;
            sum += q;
        }
        d[b] = db;
        s[b] = db * (float)sum;
    }
    memset(row + q8a_row_bytes(k) - Q8A_PAD, 0, Q8A_PAD);
}

/* ---- activation format "q8h": q8a with a scale per half block (16 values) ----
 * Read by the 16-row kernels (legacyx16_avx512vnni.c), whose two halves of a block go through
 * separate integer chains anyway, so the finer scale costs one multiply-add per block. Why: int8
 * activation rounding is most of the difference between fastcpu's logits and float32 ones, and an
 * outlier now coarsens the rounding of 15 neighbours instead of 31 (Gaussian values: about a
 * quarter less rounding error; heavy-tailed ones, such as the FFN's gated products, more).
 *     int8  qs[nb * 32]   q_i = round_to_nearest_even(x_i / d_h), |q_i| <= 127, h = i / 16
 *     float d[2 * nb]     d_h = amax_h / 127 over the 16 values of half h
 *     float s[nb]         s_b = d_{2b} * sum q (first half) + d_{2b+1} * sum q (second half)
 *     64 bytes of padding */
static inline size_t q8h_row_bytes(int64_t k) {
    const size_t nb = (size_t)(k / QK);
    return nb * QK + 3 * nb * sizeof(float) + Q8A_PAD;
}
static inline const float *q8h_d(const uint8_t *row, int64_t nb) { return (const float *)(row + nb * QK); }
static inline const float *q8h_s(const uint8_t *row, int64_t nb) { return (const float *)(row + nb * QK) + 2 * nb; }

/* The specification of q8h (the SIMD quantizers do the same IEEE operations). */
static inline void q8h_quantize(const float *FC_RESTRICT x, void *FC_RESTRICT out, int64_t k) {
    const int64_t nb = k / QK;
    uint8_t *row = out;
    int8_t *qs = (int8_t *)row;
    float *d = (float *)(row + nb * QK), *s = d + 2 * nb;
    for (int64_t b = 0; b < nb; b++) {
        float sb = 0.0f;
        for (int h = 0; h < 2; h++) {
            const float *xh = x + b * QK + 16 * h;
            float amax = 0.0f;
            for (int i = 0; i < 16; i++) {
                const float v = fabsf(xh[i]);
                amax = v > amax ? v : amax;
            }
            const float dh = amax / 127.0f;
            int sum = 0;
            for (int i = 0; i < 16; i++) {
                int q = dh > 0.0f ? (int)lrintf(xh[i] / dh) : 0;
                q = q > 127 ? 127 : (q < -127 ? -127 : q);
                qs[b * QK + 16 * h + i] = (int8_t)q;
                sum += q;
            }
            d[2 * b + h] = dh;
            sb = h ? sb + dh * (float)sum : dh * (float)sum;
        }
        s[b] = sb;
    }
    memset(row + q8h_row_bytes(k) - Q8A_PAD, 0, Q8A_PAD);
}

#endif
