/* The row and activation blocking of the 16-row kernels (legacyx16_avx512vnni.c,
 * kquantx16_avx512vnni.c), over packed groups (gemm_x16) and over GGUF rows as stored through
 * gathers (gemm_raw16, the twin), written once. The including file defines, before including:
 *   X16_SRC                      its source struct (fields gp, raw, idx, rm: see x16_src)
 *   X16_TILE(fmt, nr, stored, src, nb, x, xs, y, ldy, rm)   its 16-row tile
 *   X16_QK                       weights per block
 *   X16_GROUP_STRIDE(fmt, a)     bytes of one packed group of 16 rows
 * and X16_ROWS, AI; optionally X16_TILE_STREAMS(fmt, gp, nb, x, y, rm), X16_STREAMS packed groups
 * against one activation row at once (GEMV). */
#ifndef FC_X16_DRIVERS_H
#define FC_X16_DRIVERS_H

/* Activation rows per pass: their rows stay in L2 while a block of groups runs over them (a
 * multiple of 4 so that no result depends on the pass). */
#define ACT_ROWS_PER_PASS 64
#define W_BYTES_PER_BLOCK (128 * 1024)

/* One 16-row source against activation rows [j0, j1), 4 at a time. */
AI void tiles(const int fmt, const int stored, const X16_SRC *src, int64_t nb, const fc_gemm_args *a, int64_t j0,
              int64_t j1, float *y, __mmask16 rm) {
    const size_t xs = a->xq_row_bytes;
    int64_t j = j0;
    for (; j + 4 <= j1; j += 4) X16_TILE(fmt, 4, stored, src, nb, a->xq + j * xs, xs, y + j * a->ldy, a->ldy, rm);
    switch (j1 - j) {
    case 3: X16_TILE(fmt, 3, stored, src, nb, a->xq + j * xs, xs, y + j * a->ldy, a->ldy, rm); break;
    case 2: X16_TILE(fmt, 2, stored, src, nb, a->xq + j * xs, xs, y + j * a->ldy, a->ldy, rm); break;
    case 1: X16_TILE(fmt, 1, stored, src, nb, a->xq + j * xs, xs, y + j * a->ldy, a->ldy, rm); break;
    default: break;
    }
}

AI __mmask16 rows_mask(int64_t left) {
    return left >= X16_ROWS ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

AI void groups_block(const int fmt, const fc_gemm_args *a, int64_t g0, int64_t g1, int64_t j0, int64_t j1) {
    const int64_t nb = a->k / X16_QK;
    const size_t gs = X16_GROUP_STRIDE(fmt, a);
#ifdef X16_TILE_STREAMS
    if (j1 - j0 == 1 && g1 - g0 >= X16_STREAMS) {
        /* one activation row: the run cut in X16_STREAMS parts read side by side, one weight
         * stream each (see the including file) */
        const int64_t part = (g1 - g0) / X16_STREAMS;
        for (int64_t i = 0; i < part; i++) {
            const uint8_t *gp[X16_STREAMS];
            float *y[X16_STREAMS];
            __mmask16 rm[X16_STREAMS];
            for (int s = 0; s < X16_STREAMS; s++) {
                const int64_t g = g0 + s * part + i;
                gp[s] = a->w + (size_t)g * gs;
                y[s] = a->y + j0 * a->ldy + g * X16_ROWS;
                rm[s] = rows_mask(a->ldy - g * X16_ROWS);
            }
            X16_TILE_STREAMS(fmt, gp, nb, a->xq + j0 * a->xq_row_bytes, y, rm);
        }
        g0 += X16_STREAMS * part; /* fewer than X16_STREAMS groups left: one at a time below */
    }
#endif
    for (int64_t g = g0; g < g1; g++) {
        const __mmask16 rm = rows_mask(a->ldy - g * X16_ROWS); /* ldy is the row count */
        const X16_SRC src = {.gp = a->w + (size_t)g * gs};
        tiles(fmt, 0, &src, nb, a, j0, j1, a->y + g * X16_ROWS, rm);
    }
}

/* Rows [r0, r1): r0 a multiple of 16 (row_align), r1 too or the last row. */
AI void gemm_x16(const int fmt, const fc_gemm_args *a, int64_t r0, int64_t r1) {
    const int64_t g0 = r0 / X16_ROWS, g1 = (r1 + X16_ROWS - 1) / X16_ROWS, n = a->n;
    if (n <= ACT_ROWS_PER_PASS) {
        groups_block(fmt, a, g0, g1, 0, n);
        return;
    }
    int64_t gb = (int64_t)(W_BYTES_PER_BLOCK / X16_GROUP_STRIDE(fmt, a));
    if (gb < 1) gb = 1;
    for (int64_t b0 = g0; b0 < g1; b0 += gb) {
        const int64_t b1 = g1 - b0 < gb ? g1 : b0 + gb;
        for (int64_t j0 = 0; j0 < n; j0 += ACT_ROWS_PER_PASS)
            groups_block(fmt, a, b0, b1, j0, n - j0 < ACT_ROWS_PER_PASS ? n : j0 + ACT_ROWS_PER_PASS);
    }
}

/* The twin over GGUF rows as stored: rows [r0, r1) in runs of 16 from r0 (any r0: every lane's
 * result is independent of its neighbours), the blocking as above. */
AI void raw_rows(const int fmt, const fc_gemm_args *a, int64_t r0, int64_t r1, int64_t j0, int64_t j1) {
    const int64_t nb = a->k / X16_QK;
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i idx = _mm512_mullo_epi32(lane, _mm512_set1_epi32((int)a->w_row_bytes));
    for (int64_t r = r0; r < r1; r += X16_ROWS) {
        const __mmask16 rm = rows_mask(r1 - r);
        const X16_SRC src = {.raw = a->w + (size_t)r * a->w_row_bytes, .idx = idx, .rm = rm};
        tiles(fmt, 1, &src, nb, a, j0, j1, a->y + r, rm);
    }
}

AI void gemm_raw16(const int fmt, const fc_gemm_args *a, int64_t r0, int64_t r1) {
    const int64_t n = a->n;
    if (n <= ACT_ROWS_PER_PASS) {
        raw_rows(fmt, a, r0, r1, 0, n);
        return;
    }
    int64_t rb = (int64_t)(W_BYTES_PER_BLOCK / (X16_ROWS * a->w_row_bytes)) * X16_ROWS;
    if (rb < X16_ROWS) rb = X16_ROWS;
    for (int64_t b0 = r0; b0 < r1; b0 += rb) {
        const int64_t b1 = r1 - b0 < rb ? r1 : b0 + rb;
        for (int64_t j0 = 0; j0 < n; j0 += ACT_ROWS_PER_PASS)
            raw_rows(fmt, a, b0, b1, j0, n - j0 < ACT_ROWS_PER_PASS ? n : j0 + ACT_ROWS_PER_PASS);
    }
}

/* One format's kernels at this level: over the stored rows the gather twin (t->q: a matrix gives
 * the same bits packed or not, so weights streamed from disk match the same weights resident),
 * over the packed layout the 16-row kernel (t->qp). Both read what `quantize` writes, set here with
 * the kernels, never inherited; the dequantizer stays the level below's. */
static void x16_register(fc_table *t, int qtype, int layout, size_t (*act_row_bytes)(int64_t),
                         void (*quantize)(const float *FC_RESTRICT, void *FC_RESTRICT, int64_t),
                         void (*gemm)(const fc_gemm_args *, int64_t, int64_t),
                         void (*gemm_raw)(const fc_gemm_args *, int64_t, int64_t), size_t (*packed)(int64_t, int64_t),
                         void (*pack)(const uint8_t *, size_t, int64_t, int64_t, uint8_t *)) {
    t->q[qtype].act_row_bytes = act_row_bytes;
    t->q[qtype].quantize = quantize;
    t->q[qtype].gemm = gemm_raw;
    t->q[qtype].isa = FC_ISA_AVX512_VNNI;
    fc_qkernel k = t->q[qtype];
    k.gemm = gemm;
    k.layout = layout;
    k.packed_bytes = packed;
    k.pack = pack;
    k.row_align = X16_ROWS;
    k.pack_segments = 1;
    t->qp[qtype] = k;
}

#endif
