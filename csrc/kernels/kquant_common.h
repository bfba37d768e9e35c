/* K-quant block layouts (GGUF, bit-exact with ggml's block_q4_K / block_q5_K / block_q6_K) and the
 * activation format every K-quant kernel of every level reads (so a level may inherit another's
 * quantize). Plain C: included by the scalar file and by the SIMD files alike. */
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

#endif
