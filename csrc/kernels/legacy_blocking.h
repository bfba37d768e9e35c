/* Row and activation blocking shared by the legacy SIMD kernels: included after the including file
 * defines AI and its tile(fmt, nr, w, x, xs, nb, y, ldy) (one weight row against nr <= 4
 * activation rows), so every level walks weights and activations in the same order. */
#ifndef FC_LEGACY_BLOCKING_H
#define FC_LEGACY_BLOCKING_H

/* Activation rows per pass: their q8a rows (~4.5 KiB each at k = 4096) stay in L2 while a block
 * of weight rows runs over them. A multiple of 4, so that the grouping of activation rows (and
 * with it every result bit) is the same as without passes. */
#define ACT_ROWS_PER_PASS 64
/* Weight bytes per block of rows: re-read from L2 once per pass over the activations. */
#define W_BYTES_PER_BLOCK (128 * 1024)

AI void rows_block(const int fmt, const fc_gemm_args *a, int64_t r0, int64_t r1, int64_t j0, int64_t j1) {
    const int64_t nb = a->k / QK;
    const size_t xs = a->xq_row_bytes;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = a->w + r * a->w_row_bytes;
        float *y = a->y + r;
        int64_t j = j0;
        for (; j + 4 <= j1; j += 4) tile(fmt, 4, w, a->xq + j * xs, xs, nb, y + j * a->ldy, a->ldy);
        switch (j1 - j) {
        case 3: tile(fmt, 3, w, a->xq + j * xs, xs, nb, y + j * a->ldy, a->ldy); break;
        case 2: tile(fmt, 2, w, a->xq + j * xs, xs, nb, y + j * a->ldy, a->ldy); break;
        case 1: tile(fmt, 1, w, a->xq + j * xs, xs, nb, y + j * a->ldy, a->ldy); break;
        default: break;
        }
    }
}

AI void gemm_generic(const int fmt, const fc_gemm_args *a, int64_t r0, int64_t r1) {
    const int64_t n = a->n;
    if (n <= ACT_ROWS_PER_PASS) {
        rows_block(fmt, a, r0, r1, 0, n);
        return;
    }
    int64_t rb = (int64_t)(W_BYTES_PER_BLOCK / a->w_row_bytes);
    if (rb < 1) rb = 1;
    for (int64_t b0 = r0; b0 < r1; b0 += rb) {
        const int64_t b1 = r1 - b0 < rb ? r1 : b0 + rb;
        for (int64_t j0 = 0; j0 < n; j0 += ACT_ROWS_PER_PASS)
            rows_block(fmt, a, b0, b1, j0, n - j0 < ACT_ROWS_PER_PASS ? n : j0 + ACT_ROWS_PER_PASS);
    }
}

#endif
