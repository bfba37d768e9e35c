/* Software model of the AMX tile unit (palette 1), for running the AMX kernels on any CPU.
 *
 * Plain C, no intrinsics: included only by amx_amxsim.c (baseline flags). It models, per thread,
 * the architectural state that LDTILECFG, TILEZERO, TILELOADD, TILESTORED, TDPBSSD, TDPBSUD,
 * TDPBUSD, TDPBUUD, TDPBF16PS and TILERELEASE read and write, following the Intel SDM
 * (vol. 2, "TILELOADD", "TDPBSSD/...", "TDPBF16PS" and vol. 1 ch. 18 "Intel AMX"):
 *
 *  - palette 1: 8 tiles, each up to 16 rows x 64 bytes. LDTILECFG reads a 64-byte block
 *    (byte 0 palette, byte 1 start_row, bytes 2..15 reserved = 0, bytes 16..47 colsb[16] as
 *    uint16, bytes 48..63 rows[16]). Palette 0 returns to the init state. Palette 1 with any
 *    tile >= 8 configured, rows > 16, colsb > 64, a reserved byte set, or a tile with exactly one
 *    of rows/colsb zero is #GP. Loading a configuration zeroes every tile.
 *  - a tile is configured when rows != 0; touching an unconfigured tile is #UD.
 *  - TILELOADD writes rows [start_row, rows) from base + m*stride (colsb bytes each), zeroes the
 *    bytes past colsb in each row and every row >= rows; TILESTORED writes rows x colsb bytes.
 *    Both then clear start_row (the restart point after a fault, which the model never takes).
 *  - TILEZERO zeroes the whole tile.
 *  - TDPB[SU][SU]D: C[m][n] += sum over k < A.colsb/4 of the 4-byte dot product of A row m and
 *    B row k's dword n, bytes sign- or zero-extended per the mnemonic (first letter: A, second:
 *    B), int32 wrap-around (no saturation). Exceptions (#UD): any operand unconfigured, operands
 *    not distinct, A.colsb/4 != B.rows, C.colsb != B.colsb, C.rows != A.rows, C.colsb, A.colsb or
 *    B.colsb not a multiple of 4 (the SDM's bound checks on K and N are written in dwords).
 *  - TDPBF16PS, the current SDM pseudo-code: per row m, the even and the odd bf16 products are
 *    accumulated separately over k into two fp32 temporaries that start at zero (FMA, DAZ=FTZ=1,
 *    round to nearest even; a bf16 x bf16 product is exact in fp32 except on underflow, which the
 *    FMA covers); then tmp = even + odd, and C[m][n] = C[m][n] + tmp, each add with DAZ/FTZ/RNE.
 *    Denormal inputs (bf16 values, the C elements) read as signed zero; denormal results are
 *    flushed to signed zero. MXCSR is neither read nor written (the model uses C's default
 *    round-to-nearest-even float arithmetic and flushes by hand).
 *    NOTE: the older Intel intrinsics guide writes the accumulation as two sequential
 *    "dst += a*b" steps per k; the rounding differs in the last bit. The native test
 *    (tests/test_amx.py::test_model_matches_hardware) compares the model with real tiles.
 *    Not modelled: NaN payload/sign rules (C's are used; the kernels never feed NaN or Inf).
 *  - TILERELEASE returns to the init state (unconfigured, zero).
 *
 * A fault does not execute the instruction; it records a message in fcsim.fault (the first one
 * since the last fcsim_take_fault()) so that tests can check the exception conditions, and the
 * kernels check it after each call (a fault there is a kernel bug: it aborts loudly).
 */
#ifndef FC_AMX_TILE_MODEL_H
#define FC_AMX_TILE_MODEL_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define FCSIM_TILES 8
#define FCSIM_ROWS 16
#define FCSIM_COLSB 64

typedef struct {
    int palette;          /* 0: init state (nothing configured) */
    int start_row;
    int rows[FCSIM_TILES];
    int colsb[FCSIM_TILES];
    uint8_t t[FCSIM_TILES][FCSIM_ROWS][FCSIM_COLSB];
    const char *fault;    /* first fault since the last fcsim_take_fault() */
} fcsim_state;

static __thread fcsim_state fcsim;

static inline void fcsim_raise(const char *msg) {
    if (!fcsim.fault) fcsim.fault = msg;
}

static inline const char *fcsim_take_fault(void) {
    const char *f = fcsim.fault;
    fcsim.fault = NULL;
    return f;
}

static inline void fcsim_tilerelease(void) {
    const char *keep = fcsim.fault;
    memset(&fcsim, 0, sizeof fcsim);
    fcsim.fault = keep;
}

static inline void fcsim_ldtilecfg(const void *cfg64) {
    const uint8_t *c = cfg64;
    if (c[0] == 0) { fcsim_tilerelease(); return; }
    if (c[0] != 1) { fcsim_raise("#GP ldtilecfg: palette not supported"); return; }
    for (int i = 2; i < 16; i++)
        if (c[i]) { fcsim_raise("#GP ldtilecfg: reserved byte set"); return; }
    int rows[16], colsb[16];
    for (int i = 0; i < 16; i++) {
        colsb[i] = c[16 + 2 * i] | (c[17 + 2 * i] << 8);
        rows[i] = c[48 + i];
    }
    for (int i = 0; i < 16; i++) {
        if (i >= FCSIM_TILES) {
            if (rows[i] || colsb[i]) { fcsim_raise("#GP ldtilecfg: tile beyond palette 1 configured"); return; }
            continue;
        }
        if (rows[i] > FCSIM_ROWS) { fcsim_raise("#GP ldtilecfg: rows > 16"); return; }
        if (colsb[i] > FCSIM_COLSB) { fcsim_raise("#GP ldtilecfg: colsb > 64"); return; }
        if ((rows[i] == 0) != (colsb[i] == 0)) { fcsim_raise("#GP ldtilecfg: rows/colsb only one zero"); return; }
    }
    memset(fcsim.t, 0, sizeof fcsim.t);
    fcsim.palette = 1;
    fcsim.start_row = c[1];
    for (int i = 0; i < FCSIM_TILES; i++) { fcsim.rows[i] = rows[i]; fcsim.colsb[i] = colsb[i]; }
}

static inline int fcsim_valid(int t) {
    return t >= 0 && t < FCSIM_TILES && fcsim.palette == 1 && fcsim.rows[t] != 0;
}

static inline void fcsim_tilezero(int t) {
    if (!fcsim_valid(t)) { fcsim_raise("#UD tilezero: tile not configured"); return; }
    memset(fcsim.t[t], 0, sizeof fcsim.t[t]);
}

static inline void fcsim_tileloadd(int t, const void *base, int64_t stride) {
    if (!fcsim_valid(t)) { fcsim_raise("#UD tileloadd: tile not configured"); return; }
    const int rows = fcsim.rows[t], colsb = fcsim.colsb[t];
    for (int m = fcsim.start_row; m < FCSIM_ROWS; m++) {
        if (m < rows) {
            memcpy(fcsim.t[t][m], (const uint8_t *)base + (int64_t)m * stride, (size_t)colsb);
            memset(fcsim.t[t][m] + colsb, 0, (size_t)(FCSIM_COLSB - colsb));
        } else {
            memset(fcsim.t[t][m], 0, FCSIM_COLSB);
        }
    }
    fcsim.start_row = 0;
}

static inline void fcsim_tilestored(int t, void *base, int64_t stride) {
    if (!fcsim_valid(t)) { fcsim_raise("#UD tilestored: tile not configured"); return; }
    for (int m = fcsim.start_row; m < fcsim.rows[t]; m++)
        memcpy((uint8_t *)base + (int64_t)m * stride, fcsim.t[t][m], (size_t)fcsim.colsb[t]);
    fcsim.start_row = 0;
}

/* Checks shared by every TDP* instruction; 0 when it may run. */
static inline int fcsim_dp_check(int c, int a, int b, const char *name) {
    (void)name;
    if (!fcsim_valid(c) || !fcsim_valid(a) || !fcsim_valid(b)) { fcsim_raise("#UD tdp: operand not configured"); return -1; }
    if (c == a || c == b || a == b) { fcsim_raise("#UD tdp: operands not distinct"); return -1; }
    if ((fcsim.colsb[c] | fcsim.colsb[a] | fcsim.colsb[b]) & 3) { fcsim_raise("#UD tdp: colsb not a multiple of 4"); return -1; }
    if (fcsim.colsb[a] / 4 != fcsim.rows[b]) { fcsim_raise("#UD tdp: A.colsb/4 != B.rows"); return -1; }
    if (fcsim.colsb[c] != fcsim.colsb[b]) { fcsim_raise("#UD tdp: C.colsb != B.colsb"); return -1; }
    if (fcsim.rows[c] != fcsim.rows[a]) { fcsim_raise("#UD tdp: C.rows != A.rows"); return -1; }
    return 0;
}

static inline void fcsim_finish_dst(int c) {
    /* write_row_and_zero / zero_upper_rows: bytes past colsb and rows past rows read as zero */
    for (int m = 0; m < FCSIM_ROWS; m++) {
        if (m < fcsim.rows[c]) memset(fcsim.t[c][m] + fcsim.colsb[c], 0, (size_t)(FCSIM_COLSB - fcsim.colsb[c]));
        else memset(fcsim.t[c][m], 0, FCSIM_COLSB);
    }
    fcsim.start_row = 0;
}

/* a_signed / b_signed: sign-extend the bytes of A / B (TDPBSSD: 1,1; TDPBUSD: 0,1; ...). */
static inline void fcsim_tdpb_d(int c, int a, int b, int a_signed, int b_signed) {
    if (fcsim_dp_check(c, a, b, "tdpb*d")) return;
    const int K = fcsim.colsb[a] / 4, N = fcsim.colsb[c] / 4;
    for (int m = 0; m < fcsim.rows[c]; m++) {
        for (int n = 0; n < N; n++) {
            uint32_t acc;
            memcpy(&acc, fcsim.t[c][m] + 4 * n, 4);
            for (int k = 0; k < K; k++) {
                int32_t dot = 0;
                for (int i = 0; i < 4; i++) {
                    const uint8_t x = fcsim.t[a][m][4 * k + i], y = fcsim.t[b][k][4 * n + i];
                    const int32_t xv = a_signed ? (int32_t)(int8_t)x : (int32_t)x;
                    const int32_t yv = b_signed ? (int32_t)(int8_t)y : (int32_t)y;
                    dot += xv * yv; /* |4 * 255 * 255| fits easily */
                }
                acc += (uint32_t)dot; /* modulo 2^32: the architectural wrap-around */
            }
            memcpy(fcsim.t[c][m] + 4 * n, &acc, 4);
        }
    }
    fcsim_finish_dst(c);
}

static inline void fcsim_tdpbssd(int c, int a, int b) { fcsim_tdpb_d(c, a, b, 1, 1); }
static inline void fcsim_tdpbsud(int c, int a, int b) { fcsim_tdpb_d(c, a, b, 1, 0); }
static inline void fcsim_tdpbusd(int c, int a, int b) { fcsim_tdpb_d(c, a, b, 0, 1); }
static inline void fcsim_tdpbuud(int c, int a, int b) { fcsim_tdpb_d(c, a, b, 0, 0); }

/* DAZ: denormal fp32 reads as zero of the same sign. */
static inline float fcsim_daz(float x) {
    return (x != 0.0f && fabsf(x) < FLT_MIN) ? copysignf(0.0f, x) : x;
}
/* FTZ: denormal result becomes zero of the same sign. */
static inline float fcsim_ftz(float x) { return fcsim_daz(x); }

static inline float fcsim_bf16(const uint8_t *p) {
    uint32_t bits = (uint32_t)(p[0] | (p[1] << 8)) << 16;
    float f;
    memcpy(&f, &bits, 4);
    return fcsim_daz(f);
}

static inline void fcsim_tdpbf16ps(int c, int a, int b) {
    if (fcsim_dp_check(c, a, b, "tdpbf16ps")) return;
    const int K = fcsim.colsb[a] / 4, N = fcsim.colsb[c] / 4;
    for (int m = 0; m < fcsim.rows[c]; m++) {
        float even[16] = {0}, odd[16] = {0};
        for (int k = 0; k < K; k++) {
            const float a0 = fcsim_bf16(fcsim.t[a][m] + 4 * k), a1 = fcsim_bf16(fcsim.t[a][m] + 4 * k + 2);
            for (int n = 0; n < N; n++) {
                const float b0 = fcsim_bf16(fcsim.t[b][k] + 4 * n), b1 = fcsim_bf16(fcsim.t[b][k] + 4 * n + 2);
                /* fmaf: one rounding (RNE), as the FMA the SDM names */
                even[n] = fcsim_ftz(fmaf(a0, b0, even[n]));
                odd[n] = fcsim_ftz(fmaf(a1, b1, odd[n]));
            }
        }
        for (int n = 0; n < N; n++) {
            float d;
            memcpy(&d, fcsim.t[c][m] + 4 * n, 4);
            const float tmp = fcsim_ftz(even[n] + odd[n]);
            d = fcsim_ftz(fcsim_daz(d) + tmp);
            memcpy(fcsim.t[c][m] + 4 * n, &d, 4);
        }
    }
    fcsim_finish_dst(c);
}

#endif
