/* Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 weights repacked 16 rows at a time (layout "x16", made once at load),
 * against q8h activations (legacy_common.h: q8a with a scale per 16 values instead of 32, which
 * the two halves' separate chains below make nearly free), AVX-512 VNNI. Specification: the
 * products of legacy_scalar.c with q8h_quantize's activation values (tests/test_packed.py checks
 * the kernels against that to float32 rounding).
 *
 * Why a layout: over GGUF rows a GEMV unpacks every block of one row on its own (scale gathers,
 * shuffles to line the codes up with the activations), which ran at ~20 GB/s per core with the
 * weights in L2, too close to the ~16 GB/s per core the memory delivers to hide behind it. Here a
 * 64-byte load holds 4 consecutive codes of each of 16 rows, so one vpdpbusd against 4 broadcast
 * activation bytes advances 16 rows at once, and the 16 rows' fp16 scales arrive in one 32-byte load.
 *
 * Instructions: vpdpbusd zmm (u8 weight codes x s8 activations, each against 4 activation bytes
 * broadcast by its {1to16} memory operand: x16_asm.h), vpandd + vpsrlw to
 * split nibbles, kmovq + masked vpaddb for the fifth bit of Q5, vcvtph2ps (16 scales), vcvtdq2ps,
 * vfmadd231ps, masked vmovups for a group's last rows.
 *
 * Overflow limit: one int32 lane sums the 16 products of one half block and one row (in one or
 * two chains): |sum| <= 16 * 255 * 127 = 518160 (Q8_0 codes are stored + 128 as u8; Q5 <= 31,
 * Q4 <= 15), far inside int32, and < 2^24 so vcvtdq2ps is exact. Halves and blocks are combined
 * in float32, each half with its own activation scale.
 *
 * Layout of one group of 16 rows (rows past the end are zero: zero codes and zero scales), k
 * columns, nb = k / 32 blocks, in pairs of blocks (the last pair of an odd nb half zero) so that
 * everything a pair needs is one run of whole 64-byte lines: one stream per thread, which the
 * software prefetch below covers entirely. A pair of blocks b0, b1:
 *   codes  2 x CB bytes: register t of block b (64 bytes) holds in dword lane r the bytes
 *          4t..4t+3 of row r's qs[] (CB = 256: Q4/Q5 nibble bytes, t < 4; the low nibbles are
 *          columns 4t..4t+3, the high ones 16+4t..; CB = 512: Q8_0 codes xor 0x80, t < 8)
 *   hbits  (Q5 only) 2 x 64 bytes: 8 masks of 64 bits per block, mask u holds in bit 4r+i the
 *          fifth bit of row r's column 4u+i (u < 4) or 16+4(u-4)+i (u >= 4)
 *   d      2 x 16 fp16 scales, row r at lane r
 *   m      (Q4_1 / Q5_1) 2 x 16 fp16 mins
 * A group holds the bytes of its 16 GGUF rows (plus a half pair when nb is odd), so the layout
 * costs no more memory than the file, and it is additive over runs of whole groups (pack_segments).
 */
#include <immintrin.h>

#include "legacy_common.h"
#include "x16_asm.h"

#define AI static inline __attribute__((always_inline))

#define X16_LAYOUT 0x58313601 /* 'X16' 1 */
#define X16_ROWS 16

enum { F_Q4_0, F_Q4_1, F_Q5_0, F_Q5_1, F_Q8_0 };

static const size_t blk_bytes[] = {18, 20, 22, 24, 34};
/* offsets in a GGUF block of qs and of qh (Q5) */
static const size_t qs_off[] = {2, 4, 6, 8, 2};
static const size_t qh_off[] = {0, 0, 2, 4, 0};

AI int is_q5(int fmt) { return fmt == F_Q5_0 || fmt == F_Q5_1; }
AI int has_min(int fmt) { return fmt == F_Q4_1 || fmt == F_Q5_1; }
AI size_t code_bytes(int fmt) { return fmt == F_Q8_0 ? 512 : 256; }

/* bytes of one pair of blocks */
AI size_t pair_bytes(int fmt) {
    return 2 * code_bytes(fmt) + (is_q5(fmt) ? 128 : 0) + 64 + (has_min(fmt) ? 64 : 0);
}

static size_t group_stride(int fmt, int64_t k) { return (size_t)((k / QK + 1) / 2) * pair_bytes(fmt); }

static size_t x16_packed_bytes(int fmt, int64_t k, int64_t rows) {
    return (size_t)((rows + X16_ROWS - 1) / X16_ROWS) * group_stride(fmt, k);
}

/* Where block b's parts start in its group. */
typedef struct {
    const uint8_t *codes, *hbits, *d, *m;
} x16_blk;

AI x16_blk blk_at(int fmt, const uint8_t *gp, int64_t b) {
    const size_t cb = code_bytes(fmt), h = (size_t)(b & 1);
    const uint8_t *p = gp + (size_t)(b >> 1) * pair_bytes(fmt);
    x16_blk r;
    r.codes = p + h * cb;
    r.hbits = p + 2 * cb + h * 64;
    r.d = p + 2 * cb + (is_q5(fmt) ? 128 : 0) + h * 32;
    r.m = r.d + 64;
    return r;
}

static void pack_x16(const int fmt, const uint8_t *src, size_t rb, int64_t rows, int64_t k, uint8_t *dst) {
    const int64_t nb = k / QK;
    const size_t bsz = blk_bytes[fmt], cb = code_bytes(fmt), gs = group_stride(fmt, k);
    const int64_t groups = (rows + X16_ROWS - 1) / X16_ROWS;
    memset(dst, 0, (size_t)groups * gs);
    for (int64_t g = 0; g < groups; g++) {
        uint8_t *gp = dst + (size_t)g * gs;
        for (int r = 0; r < X16_ROWS && g * X16_ROWS + r < rows; r++) {
            const uint8_t *row = src + (size_t)(g * X16_ROWS + r) * rb;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = row + (size_t)b * bsz;
                const x16_blk o = blk_at(fmt, gp, b);
                uint8_t *codes = (uint8_t *)o.codes, *hb = (uint8_t *)o.hbits;
                memcpy((uint8_t *)o.d + 2 * r, blk, 2);
                if (has_min(fmt)) memcpy((uint8_t *)o.m + 2 * r, blk + 2, 2);
                const uint8_t *qs = blk + qs_off[fmt];
                for (size_t t = 0; t < cb / 64; t++)
                    for (int i = 0; i < 4; i++)
                        codes[64 * t + 4 * r + i] = fmt == F_Q8_0 ? qs[4 * t + i] ^ 0x80 : qs[4 * t + i];
                if (is_q5(fmt)) {
                    uint32_t qh;
                    memcpy(&qh, blk + qh_off[fmt], 4);
                    for (int u = 0; u < 8; u++) {
                        uint64_t mask;
                        memcpy(&mask, hb + 8 * u, 8);
                        for (int i = 0; i < 4; i++) {
                            const int col = u < 4 ? 4 * u + i : 16 + 4 * (u - 4) + i;
                            mask |= (uint64_t)((qh >> col) & 1) << (4 * r + i);
                        }
                        memcpy(hb + 8 * u, &mask, 8);
                    }
                }
            }
        }
    }
}

/* Software prefetch of the one weight stream, X16_PF_BYTES ahead, into L2 (T1). Measured with 2
 * threads on 256 MiB, paired with membw (Q4_0 / Q4_1 / Q8_0 ratio): no prefetch 0.58/0.58/0.58;
 * T0 at 2/4/8 KiB 0.77-0.78/0.59-0.80/0.81-0.94; T1 at 4/6/8 KiB 0.85-0.87/0.80-0.90/0.92-0.94
 * (T0 holds an L1 fill buffer per line until it arrives, which caps the lines in flight). */
#ifndef X16_PF_BYTES
#define X16_PF_BYTES 8192
#endif
#ifndef X16_PF_HINT
#define X16_PF_HINT _MM_HINT_T1
#endif

/* Where a tile's 16 rows come from: a packed group, or 16 GGUF rows as stored (the twin kernel
 * over the file's layout: the same registers, filled by gathers, so the same bits). */
typedef struct {
    const uint8_t *gp;  /* packed group, or NULL */
    const uint8_t *raw; /* GGUF row of lane 0 (gp NULL) */
    __m512i idx;        /* byte offset of lane r's row from raw: r * row bytes */
    __mmask16 rm;       /* lanes whose rows exist; the others read as zero rows */
} x16_src;

/* Register t of block b: dword lane r = bytes 4t..4t+3 of row r's qs (Q8_0: xor 0x80). */
AI __m512i src_codes(const int fmt, const x16_src *s, const x16_blk *o, int64_t b, int t) {
    if (s->gp) return _mm512_load_si512((const void *)(o->codes + 64 * t));
    const __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), s->rm, s->idx,
                                                  s->raw + b * blk_bytes[fmt] + qs_off[fmt] + 4 * t, 1);
    return fmt == F_Q8_0 ? _mm512_mask_xor_epi32(v, s->rm, v, _mm512_set1_epi8((char)0x80)) : v;
}

/* The first dword of each row's block b: d in the low half, m (Q4_1/Q5_1) in the high half. */
AI __m512i src_dm_raw(const int fmt, const x16_src *s, int64_t b) {
    return _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), s->rm, s->idx, s->raw + b * blk_bytes[fmt], 1);
}

/* Mask u of block b (layout comment); qh: the rows' fifth-bit words (raw only). */
AI __mmask64 src_hmask(const x16_src *s, const x16_blk *o, __m512i qh, int u) {
    if (s->gp) {
        uint64_t m;
        memcpy(&m, o->hbits + 8 * u, 8);
        return _cvtu64_mask64(m);
    }
    const int col = u < 4 ? 4 * u : 16 + 4 * (u - 4);
    /* the 4 bits of each lane copied to its 4 bytes, byte i keeping bit i */
    const __m512i rep = _mm512_broadcast_i32x4(_mm_set_epi8(12, 12, 12, 12, 8, 8, 8, 8, 4, 4, 4, 4, 0, 0, 0, 0));
    const __m512i v = _mm512_shuffle_epi8(_mm512_srli_epi32(qh, col), rep);
    return _mm512_test_epi8_mask(v, _mm512_set1_epi32(0x08040201));
}

/* The second half's integer sum as float: Q4 sums come out times 16 (high nibbles used in
 * place); both the conversion (< 2^24) and the division by 16 are exact. */
AI __m512 hi_half(const int fmt, __m512i s) {
    const __m512 f = _mm512_cvtepi32_ps(s);
    return fmt == F_Q4_0 || fmt == F_Q4_1 ? _mm512_mul_ps(f, _mm512_set1_ps(0.0625f)) : f;
}

/* Register t's codes of block b as vpdpbusd's unsigned operands: lo for the block's first half
 * (columns 4t..4t+3 of each row), hi for its second half (16+4t..). qh: the rows' fifth-bit words
 * (Q5 read as stored only). */
AI void codes_lohi(const int fmt, const x16_src *src, const x16_blk *o, __m512i qh, int64_t b, int t,
                   __m512i *lo, __m512i *hi) {
    if (fmt == F_Q8_0) { /* registers 0..3 hold the first half, 4..7 the second */
        *lo = src_codes(fmt, src, o, b, t);
        *hi = src_codes(fmt, src, o, b, t + 4);
        return;
    }
    const __m512i m4 = _mm512_set1_epi8(0x0F), b16 = _mm512_set1_epi8(0x10);
    const __m512i v = src_codes(fmt, src, o, b, t);
    *lo = _mm512_and_si512(v, m4);
    /* Q4: the high nibbles used in place (16 q, one instruction less per load; the second half's
     * sum comes out times 16 and is scaled back exactly in hi_half) */
    *hi = is_q5(fmt) ? _mm512_and_si512(_mm512_srli_epi16(v, 4), m4) : _mm512_andnot_si512(m4, v);
    if (is_q5(fmt)) {
        *lo = add_masked(*lo, src_hmask(src, o, qh, t), b16);
        *hi = add_masked(*hi, src_hmask(src, o, qh, t + 4), b16);
    }
}

/* One block of 16 rows into acc: c0 / c1 the integer sums of its two halves against one
 * activation row whose half scales are dx0 / dx1 and whose block sum is sxb; dw / mw the rows'
 * scales and mins. */
AI __m512 fold_block(const int fmt, __m512i c0, __m512i c1, __m512 dw, __m512 mw, float dx0, float dx1, float sxb,
                     __m512 acc) {
    const float off = fmt == F_Q4_0 ? 8.0f : fmt == F_Q5_0 ? 16.0f : fmt == F_Q8_0 ? 128.0f : 0.0f;
    if (has_min(fmt)) {
        __m512 u = _mm512_mul_ps(_mm512_cvtepi32_ps(c0), _mm512_set1_ps(dx0));
        u = _mm512_fmadd_ps(hi_half(fmt, c1), _mm512_set1_ps(dx1), u);
        acc = _mm512_fmadd_ps(dw, u, acc);
        return _mm512_fmadd_ps(mw, _mm512_set1_ps(sxb), acc);
    }
    __m512 u = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c0), _mm512_set1_ps(dx0), _mm512_set1_ps(-off * sxb));
    u = _mm512_fmadd_ps(hi_half(fmt, c1), _mm512_set1_ps(dx1), u);
    return _mm512_fmadd_ps(dw, u, acc);
}

/* 16 weight rows (see x16_src) against nr (1..4) activation rows at x; lane r of the result for
 * activation row j goes to y[j * ldy + r] for the rows in rmask. Each lane runs the same float
 * recurrence over the blocks in order whatever the source, the grouping or nr. */
AI void tile16(const int fmt, const int nr, const x16_src *src, int64_t nb, const uint8_t *x, size_t xs,
               float *y, int64_t ldy, __mmask16 rmask) {
    const uint8_t *gp = src->gp;
    const int8_t *a[4];
    const float *dx[4], *sx[4];
    __m512 acc[4];
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++) {
        a[j] = q8a_qs(x + j * xs);
        dx[j] = q8h_d(x + j * xs, nb);
        sx[j] = q8h_s(x + j * xs, nb);
        acc[j] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const x16_blk o = gp ? blk_at(fmt, gp, b) : (x16_blk){0};
        if (gp) {
            /* half a pair ahead per block: the whole stream, lines fetched twice at most */
            const uint8_t *pf = gp + (size_t)b * (pair_bytes(fmt) / 2) + X16_PF_BYTES;
            for (size_t l = 0; l < pair_bytes(fmt) / 2; l += 64) _mm_prefetch((const char *)(pf + l), X16_PF_HINT);
        }
        const __m512i qh = !gp && is_q5(fmt) ? _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), src->rm,
                                                   src->idx, src->raw + b * blk_bytes[fmt] + qh_off[fmt], 1)
                                             : _mm512_setzero_si512();
        __m512i s0[4], s1[4], s2 = _mm512_setzero_si512(), s3 = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++) s0[j] = s1[j] = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int t = 0; t < 4; t++) {
            __m512i lo, hi;
            codes_lohi(fmt, src, &o, qh, b, t, &lo, &hi);
#pragma GCC unroll 4
            for (int j = 0; j < nr; j++) {
                if (nr == 1 && (t & 1)) {
                    /* one activation row: two more chains, so that vpdpbusd's latency does not
                     * bound the block (the halves keep their own chains: their own scales) */
                    s2 = dpbusd_b(s2, lo, a[j] + b * QK + 4 * t);
                    s3 = dpbusd_b(s3, hi, a[j] + b * QK + 16 + 4 * t);
                    continue;
                }
                s0[j] = dpbusd_b(s0[j], lo, a[j] + b * QK + 4 * t);
                s1[j] = dpbusd_b(s1[j], hi, a[j] + b * QK + 16 + 4 * t);
            }
        }
        /* s0/s2: first half of the block (columns 0..15), s1/s3: second half */
        if (nr == 1) {
            s0[0] = _mm512_add_epi32(s0[0], s2);
            s1[0] = _mm512_add_epi32(s1[0], s3);
        }
        const __m512i dm = gp ? _mm512_setzero_si512() : src_dm_raw(fmt, src, b);
        const __m512 dw = _mm512_cvtph_ps(gp ? _mm256_load_si256((const __m256i *)o.d) : _mm512_cvtepi32_epi16(dm));
        const __m512 mw = !has_min(fmt) ? _mm512_setzero_ps()
                          : _mm512_cvtph_ps(gp ? _mm256_load_si256((const __m256i *)o.m)
                                               : _mm512_cvtepi32_epi16(_mm512_srli_epi32(dm, 16)));
#pragma GCC unroll 4
        for (int j = 0; j < nr; j++)
            acc[j] = fold_block(fmt, s0[j], s1[j], dw, mw, dx[j][2 * b], dx[j][2 * b + 1], sx[j][b], acc[j]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < nr; j++) _mm512_mask_storeu_ps(y + j * ldy, rmask, acc[j]);
}

/* X16_STREAMS packed groups against one activation row (a GEMV): as many weight streams in
 * flight per thread, the activation broadcasts shared. One stream per thread left Q4_0/Q4_1 at
 * ~0.88-0.90 of the read bandwidth; two (the thread's row run cut in halves read side by side)
 * measured 0.90-0.93 / 0.91-0.95 in interleaved A/B runs (Q8_0 0.95-1.0); four, no better than
 * two. Each group's lanes run exactly tile16's nr == 1 recurrence: the same bits. */
#ifndef X16_STREAMS
#define X16_STREAMS 2
#endif
AI void tile16_streams(const int fmt, const uint8_t *const *gp, int64_t nb, const uint8_t *x, float *const *y,
                       const __mmask16 *rm) {
    const int G = X16_STREAMS;
    const int8_t *a = q8a_qs(x);
    const float *dx = q8h_d(x, nb), *sx = q8h_s(x, nb);
    const __m512i zero = _mm512_setzero_si512();
    __m512 acc[X16_STREAMS];
    for (int g = 0; g < G; g++) acc[g] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        x16_blk o[X16_STREAMS];
        x16_src src[X16_STREAMS];
        __m512i s0[X16_STREAMS], s1[X16_STREAMS], s2[X16_STREAMS], s3[X16_STREAMS];
        for (int g = 0; g < G; g++) {
            src[g] = (x16_src){.gp = gp[g]};
            o[g] = blk_at(fmt, gp[g], b);
            const uint8_t *pf = gp[g] + (size_t)b * (pair_bytes(fmt) / 2) + X16_PF_BYTES;
            for (size_t l = 0; l < pair_bytes(fmt) / 2; l += 64) _mm_prefetch((const char *)(pf + l), X16_PF_HINT);
            s0[g] = s1[g] = s2[g] = s3[g] = zero;
        }
#pragma GCC unroll 4
        for (int t = 0; t < 4; t++) {
            const int8_t *a0 = a + b * QK + 4 * t, *a1 = a + b * QK + 16 + 4 * t;
            for (int g = 0; g < G; g++) {
                __m512i lo, hi;
                codes_lohi(fmt, &src[g], &o[g], zero, b, t, &lo, &hi);
                if (t & 1) {
                    s2[g] = dpbusd_b(s2[g], lo, a0);
                    s3[g] = dpbusd_b(s3[g], hi, a1);
                } else {
                    s0[g] = dpbusd_b(s0[g], lo, a0);
                    s1[g] = dpbusd_b(s1[g], hi, a1);
                }
            }
        }
        for (int g = 0; g < G; g++) {
            const __m512 dw = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)o[g].d));
            const __m512 mw = has_min(fmt) ? _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)o[g].m))
                                           : _mm512_setzero_ps();
            acc[g] = fold_block(fmt, _mm512_add_epi32(s0[g], s2[g]), _mm512_add_epi32(s1[g], s3[g]), dw, mw,
                                dx[2 * b], dx[2 * b + 1], sx[b], acc[g]);
        }
    }
    for (int g = 0; g < G; g++) _mm512_mask_storeu_ps(y[g], rm[g], acc[g]);
}

#define X16_SRC x16_src
#define X16_TILE(fmt, nr, stored, src, nb, x, xs, y, ldy, rm) tile16(fmt, nr, src, nb, x, xs, y, ldy, rm)
#define X16_TILE_STREAMS(fmt, gp, nb, x, y, rm) tile16_streams(fmt, gp, nb, x, y, rm)
#define X16_QK QK
#define X16_GROUP_STRIDE(fmt, a) group_stride(fmt, (a)->k)
#include "x16_drivers.h"

#define X16_ENTRY(NAME, FMT, QTYPE)                                                                          \
    static void gemm_##NAME##_x16(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_x16(FMT, a, r0, r1); } \
    static void gemm_##NAME##_raw16(const fc_gemm_args *a, int64_t r0, int64_t r1) { gemm_raw16(FMT, a, r0, r1); } \
    static size_t packed_##NAME##_x16(int64_t rows, int64_t k) {                                             \
        return x16_packed_bytes(FMT, k, rows);                                               \
    }                                                                                                        \
    static void pack_##NAME##_x16(const uint8_t *src, size_t rb, int64_t rows, int64_t k, uint8_t *dst) {     \
        pack_x16(FMT, src, rb, rows, k, dst);                                                                \
    }

X16_ENTRY(q4_0, F_Q4_0, FC_Q4_0)
X16_ENTRY(q4_1, F_Q4_1, FC_Q4_1)
X16_ENTRY(q5_0, F_Q5_0, FC_Q5_0)
X16_ENTRY(q5_1, F_Q5_1, FC_Q5_1)
X16_ENTRY(q8_0, F_Q8_0, FC_Q8_0)

/* q8h_quantize (legacy_common.h) 16 values per instruction: the same IEEE operations (division by
 * d, round to nearest even, clamp), so the same bytes. */
static void quantize_q8h_x512(const float *FC_RESTRICT x, void *FC_RESTRICT xq, int64_t k) {
    const int64_t nb = k / QK;
    uint8_t *row = xq;
    float *d = (float *)(row + nb * QK), *s = d + 2 * nb;
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    for (int64_t b = 0; b < nb; b++) {
        float sb = 0.0f;
        for (int h = 0; h < 2; h++) {
            const __m512 v = _mm512_loadu_ps(x + b * QK + 16 * h);
            const float dh = _mm512_reduce_max_ps(_mm512_abs_ps(v)) / 127.0f;
            __m512i q = _mm512_setzero_si512();
            if (dh > 0.0f)
                q = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_div_ps(v, _mm512_set1_ps(dh))), lo), hi);
            _mm_storeu_si128((__m128i *)(row + b * QK + 16 * h), _mm512_cvtsepi32_epi8(q));
            d[2 * b + h] = dh;
            const float part = dh * (float)_mm512_reduce_add_epi32(q);
            sb = h ? sb + part : part;
        }
        s[b] = sb;
    }
    memset(row + q8h_row_bytes(k) - Q8A_PAD, 0, Q8A_PAD);
}

#define REG_X16(NAME, QTYPE)                                                                           \
    x16_register(t, QTYPE, X16_LAYOUT, q8h_row_bytes, quantize_q8h_x512, gemm_##NAME##_x16, gemm_##NAME##_raw16, \
                 packed_##NAME##_x16, pack_##NAME##_x16)

FC_REG(legacyx16_avx512vnni) {
    REG_X16(q4_0, FC_Q4_0);
    REG_X16(q4_1, FC_Q4_1);
    REG_X16(q5_0, FC_Q5_0);
    REG_X16(q5_1, FC_Q5_1);
    REG_X16(q8_0, FC_Q8_0);
}
