/* Q4_K, Q5_K, Q6_K weights repacked 16 rows at a time (layout "K16", made once at load), against
 * kq_act activations in their standard order (kquant_common.h; quantized by kq_quantize_act_avx2,
 * the same values as the scalar kq_quantize_act), AVX-512 VNNI. Specification: kquant_scalar.c
 * (the same integer products per sub-block; only the order of the float additions differs).
 *
 * Why a layout: over GGUF rows a GEMV unpacks every super-block of one row on its own (scale
 * decoding, shuffles to line the codes up with the activations), which ran at ~20 GB/s per core
 * with the weights in L2, too close to the ~16 GB/s per core the memory delivers to hide behind
 * it. Here, as in legacyx16_avx512vnni.c, a 64-byte load holds 4 consecutive codes of each of 16
 * rows (dword lane r = row r), so one vpdpbusd against 4 broadcast activation bytes advances 16
 * rows at once, and the 16 rows' scales are decoded together with dword-lane operations.
 *
 * The twin over GGUF rows as stored (t->q[], registered here too): the NumPy API's
 * kernels.gemv/gemm and, above all, weight streaming (fastcpu/stream.py, csrc/model/stream.c)
 * read the rows as the file stores them, and a streamed model must give the resident (packed)
 * model's logits bit for bit. So the stored-row kernel is the packed one with another source
 * (k16_src): per super-block it gathers each row's bytes (vpgatherdd, dword lane r at r * row
 * bytes, lanes past the last row masked to zero) and builds the very register values the packed
 * record loads (Q4_K/Q5_K: the same codes, scale words, d and dmin, and for Q5_K the same 5-bit
 * codes; Q6_K: the same codes, D as 4q, from GGUF's nibbles and 2-bit crumbs, and the same int8
 * scales), then runs the same code: every row gets the same integer sub-block sums and the same
 * float operations on the same values, in the same order. Each lane's recurrence is its own, so
 * the twin's runs of 16 rows may start at any row, and GEMV equals each row of a GEMM. One
 * gather per 64 bytes of weights (exactly the block's bytes: nothing is read twice, nothing past
 * the matrix) costs it ~0.4-0.55x the packed kernel's speed in L2 (GEMV, ~15-18 GB/s against
 * ~30-38, one core, noisy host), far above disk speed; a software prefetch of the 16 rows'
 * next blocks measured no gain (the hardware prefetchers follow 16 streams).
 *
 * Instructions: vpdpbusd zmm (u8 weight codes x s8 activations, each against 4 activation bytes
 * broadcast by its {1to16} memory operand: x16_asm.h), vpandd / vpandnd /
 * vpsrlw / vpternlogd to split the codes, kmovq + masked vpaddb for the fifth bit of Q5_K,
 * vpsrld / vpternlogd / vpshufb to decode and pick one 6-bit scale or min per row, vpdpwssd for
 * the mins (its {1to16} form as well), vpmovsxbd for Q6_K's int8 scales, vpmovsxwd + vpsllvd
 * for its chain starts, vcvtph2ps (16 fp16 scales), vcvtdq2ps, vfmadd231ps, masked vmovups for
 * a group's last rows; the twin: masked vpgatherdd, vpmovdw for d and dmin, vpslld + vpsrad for Q6_K's scales.
 * Software prefetch (X16_PF_BYTES ahead into L2, one per 64-byte load as it is issued): a burst of a
 * record's 35-52 prefetches at the top of each super-block cost ~8% in L2.
 *
 * Arithmetic per super-block b, row r, activation row j (dx = the activation's d):
 *   Q4_K/Q5_K: y += dx*d * sum_s sc[s] * S_s  -  dx*dmin * sum_s m[s] * (bsums[2s] + bsums[2s+1])
 *              S_s = sum_{i in sub-block s} q_i * a_i as int32 from vpdpbusd; the min term as int32
 *              from vpdpwssd of (m[s], m[s]) against the dword (bsums[2s], bsums[2s+1]).
 *              Q4_K's high nibbles are used in place (v & 0xF0 = 16 q: one instruction less per
 *              load), so odd sub-blocks' S_s come out times 16 and their scale is taken /16
 *              (exact in float).
 *   Q6_K:      y += dx*d * sum_g sc[g] * S_g,  S_g = sum_{i in g} (q_i - 32) * a_i: the -32 enters
 *              as the start value -32*bsums[g] of the group's vpdpbusd chain (one broadcast);
 *              a quarter of the groups is read as 4q (see the layout) with start -128*bsums[g]
 *              and scale sc/4.
 * Overflow limit: one int32 lane holds the sum of one sub-block (Q4_K/Q5_K: 32 products) or group
 * (Q6_K: 16) of one row: |S| <= 32*240*127 = 975360 (Q4_K odd sub-blocks, 16 q <= 240; even:
 * 32*15*127; Q5_K 32*31*127), Q6_K |start| + sum <= 16*127*128 + 16*252*127 = 772160 along the
 * chain and |S| <= 16*128*127 at its end; the min sum |sum m*bsums| <= 8*63*32*127 = 2048256. All
 * far inside int32 and < 2^24, so every vcvtdq2ps is exact. Sub-blocks are combined in float32.
 *
 * Layout of one group of 16 rows (rows past the end are zero: zero codes, scales and d), k
 * columns, nb = k / 256 super-blocks: nb records of R bytes, then the d section; the group padded
 * to 64 bytes. A record holds all of a super-block's codes and sub-scales so that one stream,
 * prefetched once, brings everything but the fp16 d (R is a multiple of 64; d is not):
 *   Q4_K (R = 2240) / Q5_K (R = 2752):
 *     codes   2048 bytes: register t (64 bytes, t < 32) holds in dword lane r the bytes
 *             4t..4t+3 of row r's qs[]: with j = t / 8 and l = 4(t % 8) + i, the low nibble of
 *             byte i is column 64j + l (sub-block 2j), the high one 64j + 32 + l (sub-block 2j+1)
 *     hbits   (Q5_K only) 512 bytes: two 64-bit masks per register t (low nibbles, then high):
 *             bit 4r + i is the fifth bit of row r's column in byte i of that half
 *     scales  192 bytes: 3 registers, register u holds in dword lane r the packed scale bytes
 *             4u..4u+3 of row r (GGUF's 12 bytes, see kq_scale_min)
 *     d section, nb x 64 bytes: 16 fp16 d (row r at lane r), then 16 fp16 dmin
 *   Q6_K (R = 3328):
 *     codes   3072 bytes: 16 triples of registers; triple p holds, for row r in dword lane r and
 *             i < 4, the 6-bit codes q of columns A = 4p + i, B = 64 + 4p + i, C = 128 + 4p + i
 *             and D = 192 + 4p + i as
 *               byte i of register 0: q_A | (q_D >> 4) << 6
 *               byte i of register 1: q_B | (q_D >> 2 & 3) << 6
 *               byte i of register 2: q_C | (q_D & 3) << 6
 *             (A, B, C come out with one vpandd each, 4 q_D with two shifts, two vpternlogd
 *             and one vpandd: 2 instructions per 64 codes, where GGUF's nibbles + 2-bit crumbs
 *             take about 3.3)
 *     scales  256 bytes: 16 x 16 int8, group g of rows 0..15 at bytes 16g..16g+15 (one
 *             vpmovsxbd gives a group's scale for the 16 rows)
 *     d section, nb x 32 bytes: 16 fp16 d
 * A group holds exactly the bytes of its 16 GGUF rows (plus padding to 64 bytes), so the layout
 * costs no more memory than the file, and it is additive over runs of whole groups
 * (pack_segments).
 */
#include <immintrin.h>

#include "kquant_common.h"
#include "x16_asm.h"

#define AI static inline __attribute__((always_inline))

#define K16_LAYOUT 0x4b313601 /* 'K16' 1 */
#define X16_ROWS 16

enum { F_Q4_K, F_Q5_K, F_Q6_K };

static const size_t blk_bytes[] = {144, 176, 210};
/* per super-block: bytes of a group's record, offset of its scales, bytes of its d entry */
static const size_t rec_bytes[] = {2240, 2752, 3328};
static const size_t sc_off[] = {2048, 2560, 3072};
static const size_t d_bytes[] = {64, 64, 32};

_Static_assert(2240 + 64 == X16_ROWS * 144 && 2752 + 64 == X16_ROWS * 176 && 3328 + 32 == X16_ROWS * 210,
               "a record and its d entry hold exactly 16 GGUF blocks");

static size_t group_stride(size_t row_bytes) {
    return (X16_ROWS * row_bytes + FC_ALIGN - 1) & ~(size_t)(FC_ALIGN - 1);
}

static size_t x16_packed_bytes(size_t row_bytes, int64_t rows) {
    return (size_t)((rows + X16_ROWS - 1) / X16_ROWS) * group_stride(row_bytes);
}

/* Q6_K code of weight i (0..255) of a GGUF block, 0..63 (kquant_common.h) */
static int q6_code(const kq_block_q6_K *b, int i) {
    const int h = i / 128, t = i % 128, quarter = t / 32, l = t % 32;
    const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
    const int lo = (quarter & 1) ? ql[l + 32] : ql[l];
    const int nib = (quarter & 2) ? lo >> 4 : lo & 15;
    return nib | (((qh[l] >> (2 * quarter)) & 3) << 4);
}

static void pack_block_q45(const int fmt, const uint8_t *blk, int r, uint8_t *rp, uint8_t *dp) {
    const uint8_t *qs = blk + (fmt == F_Q5_K ? 48 : 16);
    memcpy(dp + 2 * r, blk, 2);      /* d */
    memcpy(dp + 32 + 2 * r, blk + 2, 2); /* dmin */
    for (int t = 0; t < 32; t++) memcpy(rp + 64 * t + 4 * r, qs + 4 * t, 4);
    for (int u = 0; u < 3; u++) memcpy(rp + sc_off[fmt] + 64 * u + 4 * r, blk + 4 + 4 * u, 4);
    if (fmt == F_Q5_K) {
        const uint8_t *qh = blk + 16;
        for (int t = 0; t < 32; t++)
            for (int h = 0; h < 2; h++) {
                uint8_t *mp = rp + 2048 + 16 * t + 8 * h;
                uint64_t mask;
                memcpy(&mask, mp, 8);
                for (int i = 0; i < 4; i++)
                    mask |= (uint64_t)((qh[4 * (t % 8) + i] >> (2 * (t / 8) + h)) & 1) << (4 * r + i);
                memcpy(mp, &mask, 8);
            }
    }
}

static void pack_block_q6(const kq_block_q6_K *blk, int r, uint8_t *rp, uint8_t *dp) {
    memcpy(dp + 2 * r, &blk->d, 2);
    for (int p = 0; p < 16; p++)
        for (int i = 0; i < 4; i++) {
            const int c = 4 * p + i, qd = q6_code(blk, 192 + c);
            rp[192 * p + 4 * r + i] = (uint8_t)(q6_code(blk, c) | (qd >> 4) << 6);
            rp[192 * p + 64 + 4 * r + i] = (uint8_t)(q6_code(blk, 64 + c) | ((qd >> 2) & 3) << 6);
            rp[192 * p + 128 + 4 * r + i] = (uint8_t)(q6_code(blk, 128 + c) | (qd & 3) << 6);
        }
    for (int g = 0; g < 16; g++) rp[3072 + 16 * g + r] = (uint8_t)blk->scales[g];
}

static void pack_x16(const int fmt, const uint8_t *src, size_t rb, int64_t rows, int64_t k, uint8_t *dst) {
    const int64_t nb = k / KQ_QK;
    const size_t bsz = blk_bytes[fmt], rec = rec_bytes[fmt], gs = group_stride(rb);
    const int64_t groups = (rows + X16_ROWS - 1) / X16_ROWS;
    memset(dst, 0, (size_t)groups * gs);
    for (int64_t g = 0; g < groups; g++) {
        uint8_t *recs = dst + (size_t)g * gs;
        uint8_t *ds = recs + (size_t)nb * rec;
        for (int r = 0; r < X16_ROWS && g * X16_ROWS + r < rows; r++) {
            const uint8_t *row = src + (size_t)(g * X16_ROWS + r) * rb;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = row + (size_t)b * bsz;
                if (fmt == F_Q6_K)
                    pack_block_q6((const kq_block_q6_K *)blk, r, recs + b * rec, ds + b * d_bytes[fmt]);
                else
                    pack_block_q45(fmt, blk, r, recs + b * rec, ds + b * d_bytes[fmt]);
            }
        }
    }
}

/* vpshufb controls, per dword lane: byte s of the lane to byte 0 (the rest zero), or to bytes 0
 * and 2 (an int16 pair for vpdpwssd) */
AI __m512i pick_ctrl(int s) {
    return _mm512_add_epi32(_mm512_set1_epi32((int32_t)(0x80808000u | (unsigned)s)),
                            _mm512_set4_epi32(12, 8, 4, 0));
}
AI __m512i dup_ctrl(int s) {
    return _mm512_add_epi32(_mm512_set1_epi32((int32_t)(0x80008000u | (unsigned)s * 0x10001u)),
                            _mm512_set4_epi32(12 * 0x10001, 8 * 0x10001, 4 * 0x10001, 0));
}

/* Software prefetch on the record stream, X16_PF_BYTES ahead, into L2 (T1) as in legacy x16 (the
 * codes' lines through PF_L2_INORDER, x16_asm.h; the few scale lines at a super-block's top as
 * plain _mm_prefetch: kept in order too they measured no better):
 * 2 threads, 256 MiB, paired with membw (Q4_K / Q5_K / Q6_K ratio), one quiet-ish session:
 * T0 4 KiB 0.77/0.75/0.76, T0 8 KiB 0.76/0.68/0.78, T1 4 KiB 0.81/0.77/0.83, T1 8 KiB
 * 0.91/0.74/0.83 (single runs swing by +-0.05 on this shared host). */
#ifndef X16_PF_BYTES
#define X16_PF_BYTES 8192
#endif

/* K ? X : Y per bit. vpternlogd overwrites its first operand: Y goes there (at every use a
 * temporary that dies here), so that no constant K is copied to a new register first. */
#define SELECT(K, X, Y) _mm512_ternarylogic_epi32((Y), (K), (X), 0xB8)
/* (A & B) | C per bit */
#define AND_OR(A, B, C) _mm512_ternarylogic_epi32((A), (B), (C), 0xEA)

/* Where a tile's 16 rows come from: a packed group, or 16 GGUF rows as stored (the twin, see the
 * top). `stored` is a constant at every call site, so each source is compiled on its own and the
 * packed kernel carries no test of it. */
typedef struct {
    const uint8_t *gp;  /* packed group (packed source) */
    const uint8_t *raw; /* GGUF row of lane 0 (stored source) */
    __m512i idx;        /* byte offset of lane r's row from raw: r * row bytes */
    __mmask16 rm;       /* lanes whose rows exist; the others read as zero rows */
} k16_src;

/* Dword lane r: the 4 bytes at p + r * row bytes (p inside lane 0's super-block b, so every lane
 * reads inside its own row's block b: never past the matrix) */
AI __m512i gather4(const k16_src *s, const uint8_t *p) {
    return _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), s->rm, s->idx, p, 1);
}

/* Bit k of each byte to bit 4 of the same byte (16-bit shifts: bit 4 only ever comes from its own
 * byte; the caller keeps bit 4 alone). */
AI __m512i bit_to_4(__m512i v, int k) {
    return k < 4 ? _mm512_slli_epi16(v, 4 - k) : k > 4 ? _mm512_srli_epi16(v, k - 4) : v;
}

/* 16 Q4_K/Q5_K weight rows (see k16_src) against nr (1..4) activation rows at x; lane r of the
 * result for activation row j goes to y[j * ldy + r] for the rows in rmask. The stored source
 * gathers the same bytes into the same registers (codes, the 3 scale words, d and dmin), and
 * Q5_K's fifth bits into the same code values; everything after that is shared. */
AI void tile16_q45(const int fmt, const int nr, const int stored, const k16_src *src, int64_t nb,
                   const uint8_t *x, size_t xs, float *y, int64_t ldy, __mmask16 rmask) {
    const size_t rec = rec_bytes[fmt], qs_off = fmt == F_Q5_K ? 48 : 16;
    const uint8_t *ds = stored ? NULL : src->gp + (size_t)nb * rec;
    const __m512i m4 = _mm512_set1_epi8(0x0F), b16 = _mm512_set1_epi8(0x10), lo6 = _mm512_set1_epi8(0x3F);
    /* Q4_K's odd sub-blocks are summed as 16 q (see the top) */
    const __m512 hi_scale = _mm512_set1_ps(fmt == F_Q4_K ? 1.0f / 16.0f : 1.0f);
    const kq_act *xa[4];
    __m512 acc[4];
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++) {
        xa[j] = (const kq_act *)(x + j * xs);
        acc[j] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *rp = stored ? NULL : src->gp + (size_t)b * rec;
        const uint8_t *blk = stored ? src->raw + (size_t)b * blk_bytes[fmt] : NULL;
        __m512i w0, w1, w2;
        __m512 dw, mw;
        if (stored) {
            w0 = gather4(src, blk + 4);
            w1 = gather4(src, blk + 8);
            w2 = gather4(src, blk + 12);
            const __m512i dm = gather4(src, blk); /* d in the low half, dmin in the high one */
            dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dm));
            mw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16)));
        } else {
            for (size_t o = 2048; o < rec; o += 64) _mm_prefetch((const char *)(rp + X16_PF_BYTES + o), _MM_HINT_T1);
            _mm_prefetch((const char *)(ds + (b + 4) * 64), _MM_HINT_T0);
            w0 = _mm512_load_si512((const void *)(rp + sc_off[fmt]));
            w1 = _mm512_load_si512((const void *)(rp + sc_off[fmt] + 64));
            w2 = _mm512_load_si512((const void *)(rp + sc_off[fmt] + 128));
            dw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(ds + b * 64)));
            mw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(ds + b * 64 + 32)));
        }
        /* kq_scale_min on 16 rows: bytes s of m03 / m47 are m[s] / m[4+s] (sc likewise) */
        const __m512i m03 = _mm512_and_si512(w1, lo6);
        const __m512i m47 = _mm512_and_si512(SELECT(m4, _mm512_srli_epi32(w2, 4), _mm512_srli_epi32(w1, 2)), lo6);
        const __m512i sc03 = _mm512_and_si512(w0, lo6);
        const __m512i sc47 = _mm512_and_si512(SELECT(m4, w2, _mm512_srli_epi32(w0, 2)), lo6);
        /* mn: sum_s m[s] * (bsums[2s] + bsums[2s+1]), one vpdpwssd per sub-block, done along
         * with the sub-block's codes (as one block of 8 in a chain it cost ~10%; with one
         * activation row the odd sub-blocks go to a second chain, mn2) */
        __m512i mn[4], mn2 = _mm512_setzero_si512();
        __m512 f[4];
        /* Q5_K stored: qh[u] holds in lane r bytes 4u..4u+3 of row r's qh, the fifth bits of
         * register t = 8c + u (bit 2c for its low nibbles, 2c+1 for its high ones) */
        __m512i qh[8];
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++) {
            mn[j] = _mm512_setzero_si512();
            f[j] = _mm512_setzero_ps();
        }
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) { /* 32-byte chunk c of qs: sub-blocks 2c (low) and 2c+1 (high) */
            const int s = 2 * c;
            const __m512i mdl = _mm512_shuffle_epi8(s < 4 ? m03 : m47, dup_ctrl(s & 3));
            const __m512i mdh = _mm512_shuffle_epi8(s < 4 ? m03 : m47, dup_ctrl((s + 1) & 3));
#pragma GCC unroll 4
            for (int j = 0; j < nr; j++) {
                mn[j] = dpwssd_b(mn[j], mdl, xa[j][b].bsums + 2 * s);
                if (nr == 1) mn2 = dpwssd_b(mn2, mdh, xa[j][b].bsums + 2 * s + 2);
                else mn[j] = dpwssd_b(mn[j], mdh, xa[j][b].bsums + 2 * s + 2);
            }
            __m512i s0[4], s1[4], s2 = _mm512_setzero_si512(), s3 = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int j = 0; j < nr; j++) s0[j] = s1[j] = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int t = 0; t < 8; t++) {
                __m512i v;
                if (stored) {
                    v = gather4(src, blk + qs_off + 4 * (8 * c + t));
                    if (fmt == F_Q5_K && c == 0) qh[t] = gather4(src, blk + 16 + 4 * t);
                } else {
                    PF_L2_INORDER(rp + X16_PF_BYTES + 64 * (8 * c + t));
                    v = _mm512_load_si512((const void *)(rp + 64 * (8 * c + t)));
                }
                __m512i lo = _mm512_and_si512(v, m4), hi;
                if (fmt == F_Q5_K) {
                    hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                    if (stored) {
                        /* the nibbles' bit 4 is clear: the fifth bit goes in with a select */
                        lo = SELECT(b16, bit_to_4(qh[t], s), lo);
                        hi = SELECT(b16, bit_to_4(qh[t], s + 1), hi);
                    } else {
                        /* kmovq k, m64 takes a port-5 uop (measured, as vpshufb does): these 64
                         * per super-block are most of why Q5_K needs ~1.6x Q4_K's cycles in L2 */
                        uint64_t ml, mh;
                        memcpy(&ml, rp + 2048 + 16 * (8 * c + t), 8);
                        memcpy(&mh, rp + 2048 + 16 * (8 * c + t) + 8, 8);
                        lo = add_masked(lo, _cvtu64_mask64(ml), b16);
                        hi = add_masked(hi, _cvtu64_mask64(mh), b16);
                    }
                } else {
                    hi = _mm512_andnot_si512(m4, v);
                }
#pragma GCC unroll 4
                for (int j = 0; j < nr; j++) {
                    const int8_t *q = xa[j][b].qs + 64 * c + 4 * t;
                    if (nr == 1 && (t & 1)) {
                        /* one activation row: two more chains, so that vpdpbusd's latency does
                         * not bound the chunk */
                        s2 = dpbusd_b(s2, lo, q);
                        s3 = dpbusd_b(s3, hi, q + 32);
                        continue;
                    }
                    s0[j] = dpbusd_b(s0[j], lo, q);
                    s1[j] = dpbusd_b(s1[j], hi, q + 32);
                }
            }
            if (nr == 1) {
                s0[0] = _mm512_add_epi32(s0[0], s2);
                s1[0] = _mm512_add_epi32(s1[0], s3);
            }
            const __m512 scl = _mm512_cvtepi32_ps(_mm512_shuffle_epi8(s < 4 ? sc03 : sc47, pick_ctrl(s & 3)));
            const __m512 sch = _mm512_mul_ps(
                _mm512_cvtepi32_ps(_mm512_shuffle_epi8(s < 4 ? sc03 : sc47, pick_ctrl((s + 1) & 3))), hi_scale);
#pragma GCC unroll 4
            for (int j = 0; j < nr; j++) {
                f[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s0[j]), scl, f[j]);
                f[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s1[j]), sch, f[j]);
            }
        }
        if (nr == 1) mn[0] = _mm512_add_epi32(mn[0], mn2);
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++) {
            const __m512 dx = _mm512_set1_ps(xa[j][b].d);
            acc[j] = _mm512_fnmadd_ps(_mm512_mul_ps(mw, dx), _mm512_cvtepi32_ps(mn[j]), acc[j]);
            acc[j] = _mm512_fmadd_ps(_mm512_mul_ps(dw, dx), f[j], acc[j]);
        }
    }
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++) _mm512_mask_storeu_ps(y + j * ldy, rmask, acc[j]);
}

/* The same for Q6_K. The stored source builds the packed registers' values from GGUF's nibbles
 * and crumbs: the same codes (D as 4q, so that the chain starts and scales below are shared). */
AI void tile16_q6(const int nr, const int stored, const k16_src *src, int64_t nb, const uint8_t *x, size_t xs,
                  float *y, int64_t ldy, __mmask16 rmask) {
    const size_t rec = rec_bytes[F_Q6_K];
    const uint8_t *ds = stored ? NULL : src->gp + (size_t)nb * rec;
    const __m512i lo6 = _mm512_set1_epi8(0x3F), top6 = _mm512_set1_epi8((char)0xFC);
    const __m512i k_c0 = _mm512_set1_epi8((char)0xC0), k_f0 = _mm512_set1_epi8((char)0xF0);
    const __m512i m4 = _mm512_set1_epi8(0x0F), k_30 = _mm512_set1_epi8(0x30), k_3c = _mm512_set1_epi8(0x3C);
    /* chain starts: -32 * bsums[g] (groups of A, B, C), -128 * bsums[g] (D, read as 4q) */
    const __m512i start_shift = _mm512_set_epi32(7, 7, 7, 7, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5);
    const __m512 quarter = _mm512_set1_ps(0.25f);
    const kq_act *xa[4];
    __m512 acc[4];
    int32_t start[4][16] __attribute__((aligned(64)));
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++) {
        xa[j] = (const kq_act *)(x + j * xs);
        acc[j] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *rp = stored ? NULL : src->gp + (size_t)b * rec;
        const uint8_t *blk = stored ? src->raw + (size_t)b * blk_bytes[F_Q6_K] : NULL;
        __m512 dw;
        /* stored: sw[u] holds in lane r the int8 scales 4u..4u+3 of row r; hq[0][u] / hq[1][u] its
         * qh bytes 4u..4u+3 / 32+4u.., gathered once for triples u and 8+u */
        __m512i sw[4], hq[2][8];
        if (stored) {
            /* d is the block's last 2 bytes: the dword ending there, high half (a dword at d
             * would read 2 bytes past the block, past the matrix in its last row) */
            dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(gather4(src, blk + 206), 16)));
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++) sw[u] = gather4(src, blk + 192 + 4 * u);
        } else {
            for (size_t o = 3072; o < rec; o += 64) _mm_prefetch((const char *)(rp + X16_PF_BYTES + o), _MM_HINT_T1);
            _mm_prefetch((const char *)(ds + (b + 8) * 32), _MM_HINT_T0);
            dw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(ds + b * 32)));
        }
        __m512 f[4];
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++) {
            const __m512i bs = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)xa[j][b].bsums));
            _mm512_store_si512((void *)start[j],
                               _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_sllv_epi32(bs, start_shift)));
            f[j] = _mm512_setzero_ps();
        }
#pragma GCC unroll 4
        for (int qt = 0; qt < 4; qt++) { /* triples 4qt..4qt+3: groups qt, 4+qt, 8+qt, 12+qt */
            __m512i ca[4], cb[4], cc[4], cd[4];
#pragma GCC unroll 4
            for (int j = 0; j < nr; j++) {
                ca[j] = _mm512_set1_epi32(start[j][qt]);
                cb[j] = _mm512_set1_epi32(start[j][4 + qt]);
                cc[j] = _mm512_set1_epi32(start[j][8 + qt]);
                cd[j] = _mm512_set1_epi32(start[j][12 + qt]);
            }
#pragma GCC unroll 4
            for (int pp = 0; pp < 4; pp++) {
                const int p = 4 * qt + pp;
                __m512i qa, qb, qc, qd;
                if (stored) {
                    /* columns A = 4p+i, B = 64+A: ql[4p+i] low / high nibble, qh[4(p%8)+i] bits
                     * sh+1..sh / sh+5..sh+4; C = 128+A, D = 192+A: the same from ql[64+4p+i] and
                     * qh[32+4(p%8)+i] (sh = 2 (p / 8), kquant_common.h) */
                    const int sh = p < 8 ? 0 : 2;
                    const __m512i la = gather4(src, blk + 4 * p), lc = gather4(src, blk + 64 + 4 * p);
                    if (p < 8) {
                        hq[0][p] = gather4(src, blk + 128 + 4 * p);
                        hq[1][p] = gather4(src, blk + 160 + 4 * p);
                    }
                    const __m512i ha = hq[0][p & 7], hc = hq[1][p & 7];
                    qa = AND_OR(la, m4, _mm512_and_si512(_mm512_slli_epi16(ha, 4 - sh), k_30));
                    qb = AND_OR(_mm512_srli_epi16(la, 4), m4, _mm512_and_si512(_mm512_srli_epi16(ha, sh), k_30));
                    qc = AND_OR(lc, m4, _mm512_and_si512(_mm512_slli_epi16(hc, 4 - sh), k_30));
                    qd = AND_OR(_mm512_srli_epi16(lc, 2), k_3c, _mm512_and_si512(_mm512_slli_epi16(hc, 2 - sh), k_c0));
                } else {
                    PF_L2_INORDER(rp + X16_PF_BYTES + 192 * p);
                    PF_L2_INORDER(rp + X16_PF_BYTES + 192 * p + 64);
                    PF_L2_INORDER(rp + X16_PF_BYTES + 192 * p + 128);
                    const __m512i r0 = _mm512_load_si512((const void *)(rp + 192 * p));
                    const __m512i r1 = _mm512_load_si512((const void *)(rp + 192 * p + 64));
                    const __m512i r2 = _mm512_load_si512((const void *)(rp + 192 * p + 128));
                    qa = _mm512_and_si512(r0, lo6);
                    qb = _mm512_and_si512(r1, lo6);
                    qc = _mm512_and_si512(r2, lo6);
                    /* 4 q_D: bits 6-7 from r0, 4-5 from r1 (>> 2), 2-3 from r2 (>> 4), 0-1 cleared */
                    const __m512i t = SELECT(k_c0, r0, _mm512_srli_epi16(r1, 2));
                    qd = _mm512_and_si512(SELECT(k_f0, t, _mm512_srli_epi16(r2, 4)), top6);
                }
#pragma GCC unroll 4
                for (int j = 0; j < nr; j++) {
                    const int8_t *q = xa[j][b].qs + 4 * p;
                    ca[j] = dpbusd_b(ca[j], qa, q);
                    cb[j] = dpbusd_b(cb[j], qb, q + 64);
                    cc[j] = dpbusd_b(cc[j], qc, q + 128);
                    cd[j] = dpbusd_b(cd[j], qd, q + 192);
                }
            }
            __m512i ia, ib, ic, id; /* group scales, int32 */
            if (stored) {
                /* byte qt of sw[u] is group 4u + qt's scale, sign-extended in place */
                ia = _mm512_srai_epi32(_mm512_slli_epi32(sw[0], 24 - 8 * qt), 24);
                ib = _mm512_srai_epi32(_mm512_slli_epi32(sw[1], 24 - 8 * qt), 24);
                ic = _mm512_srai_epi32(_mm512_slli_epi32(sw[2], 24 - 8 * qt), 24);
                id = _mm512_srai_epi32(_mm512_slli_epi32(sw[3], 24 - 8 * qt), 24);
            } else {
                const uint8_t *sp = rp + 3072;
                ia = _mm512_cvtepi8_epi32(_mm_load_si128((const __m128i *)(sp + 16 * qt)));
                ib = _mm512_cvtepi8_epi32(_mm_load_si128((const __m128i *)(sp + 16 * (4 + qt))));
                ic = _mm512_cvtepi8_epi32(_mm_load_si128((const __m128i *)(sp + 16 * (8 + qt))));
                id = _mm512_cvtepi8_epi32(_mm_load_si128((const __m128i *)(sp + 16 * (12 + qt))));
            }
            const __m512 sa = _mm512_cvtepi32_ps(ia), sb = _mm512_cvtepi32_ps(ib), sc = _mm512_cvtepi32_ps(ic);
            const __m512 sd = _mm512_mul_ps(_mm512_cvtepi32_ps(id), quarter);
#pragma GCC unroll 4
            for (int j = 0; j < nr; j++) {
                f[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ca[j]), sa, f[j]);
                f[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(cb[j]), sb, f[j]);
                f[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(cc[j]), sc, f[j]);
                f[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(cd[j]), sd, f[j]);
            }
        }
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++) acc[j] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(xa[j][b].d)), f[j], acc[j]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++) _mm512_mask_storeu_ps(y + j * ldy, rmask, acc[j]);
}

AI void tile16(const int fmt, const int nr, const int stored, const k16_src *src, int64_t nb, const uint8_t *x,
               size_t xs, float *y, int64_t ldy, __mmask16 rmask) {
    if (fmt == F_Q6_K) tile16_q6(nr, stored, src, nb, x, xs, y, ldy, rmask);
    else tile16_q45(fmt, nr, stored, src, nb, x, xs, y, ldy, rmask);
}

#define X16_SRC k16_src
#define X16_TILE(fmt, nr, stored, src, nb, x, xs, y, ldy, rm) tile16(fmt, nr, stored, src, nb, x, xs, y, ldy, rm)
#define X16_QK KQ_QK
#define X16_GROUP_STRIDE(fmt, a) group_stride((a)->w_row_bytes)
#include "x16_drivers.h"

#define X16_ENTRY(NAME, FMT, QTYPE)                                                                          \
    static void gemm_##NAME##_x16(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_x16(FMT, a, r0, r1); } \
    static void gemm_##NAME##_raw16(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_raw16(FMT, a, r0, r1); } \
    static size_t packed_##NAME##_x16(int64_t rows, int64_t k) {                                             \
        return x16_packed_bytes(fc_row_bytes(QTYPE, k), rows);                                               \
    }                                                                                                        \
    static void pack_##NAME##_x16(const uint8_t *src, size_t rb, int64_t rows, int64_t k, uint8_t *dst) {     \
        pack_x16(FMT, src, rb, rows, k, dst);                                                                \
    }

X16_ENTRY(q4_K, F_Q4_K, FC_Q4_K)
X16_ENTRY(q5_K, F_Q5_K, FC_Q5_K)
X16_ENTRY(q6_K, F_Q6_K, FC_Q6_K)

/* kq_act in the standard order: the avx512 level below stores Q4_K/Q5_K activations swapped
 * (kq_quantize_act_swapped_avx2), hence the quantizer set with the kernels */
#define REG_K16(NAME, QTYPE)                                                                            \
    x16_register(t, QTYPE, K16_LAYOUT, kq_act_row_bytes, kq_quantize_act_avx2, gemm_##NAME##_x16,       \
                 gemm_##NAME##_raw16, packed_##NAME##_x16, pack_##NAME##_x16)

FC_REG(kquantx16_avx512vnni) {
    REG_K16(q4_K, FC_Q4_K);
    REG_K16(q5_K, FC_Q5_K);
    REG_K16(q6_K, FC_Q6_K);
}
