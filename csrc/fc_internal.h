/* Internal kernel interface shared by the dispatcher and the per-ISA kernel files.
 *
 * Layers: model (csrc/model*.c) -> dispatch (fc_table, fc_gemm) -> kernels (csrc/kernels/<family>_<isa>.c).
 * Model code never names an ISA; it calls through fc_tab().
 *
 * Kernel files are compiled with their ISA's flags (CMakeLists.txt picks them by file suffix:
 * _scalar, _avx2, _avx512, _avx512vnni, _avx512bf16, _amx, _amxsim). Everything else is baseline x86-64.
 * Each file exports one registration function fc_register_<family>_<isa>(fc_table *) that fills the
 * entries it implements; a level starts as a copy of the level below it, so a family that has no
 * kernel at some level inherits the best lower one.
 */
#ifndef FC_INTERNAL_H
#define FC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fastcpu/fastcpu.h"

#define FC_ALIGN 64
#define FC_RESTRICT __restrict__
#define FC_UNUSED __attribute__((unused))

/* Arguments of one GEMM call. The kernel computes, for weight rows r in [r0, r1) and activation
 * rows j in [0, n):  y[j * ldy + r] = dot(W row r, activation row j).
 * xq holds the activations already converted by the same kernel entry's `quantize`. */
typedef struct {
    const uint8_t *w;     /* [rows][w_row_bytes] GGUF blocks (or a repacked layout, see `layout`) */
    size_t w_row_bytes;
    int64_t k;            /* columns (weights per row) */
    const uint8_t *xq;    /* [n][xq_row_bytes] activations in the kernel's activation format */
    size_t xq_row_bytes;
    int64_t n;            /* activation rows */
    float *y;             /* [n][ldy] */
    int64_t ldy;
    /* GGUF rows as stored (w_row_bytes each) when `w` is a repacked layout made from them, else
     * NULL. A packed kernel reads it only to hand small batches to the kernel it was built over
     * (see FC_AMX_MIN_ROWS). */
    const uint8_t *w_raw;
} fc_gemm_args;

typedef struct {
    /* Bytes of one activation row of k values in this entry's activation format. */
    size_t (*act_row_bytes)(int64_t k);
    /* Convert one float32 activation row of k values into the activation format. */
    void (*quantize)(const float *FC_RESTRICT x, void *FC_RESTRICT xq, int64_t k);
    /* Weight rows [r0, r1) against all n activation rows. */
    void (*gemm)(const fc_gemm_args *a, int64_t r0, int64_t r1);
    /* Dequantize n weights (whole blocks) to float32 (embedding lookup, tests). */
    void (*dequantize)(const void *FC_RESTRICT src, float *FC_RESTRICT dst, int64_t n);
    /* Level that filled this entry (for info/tests). */
    fc_isa isa;
    /* Layout tag of the weights gemm() reads: 0 = GGUF blocks as stored (w_row_bytes per row).
     * Any other tag is a kernel-private layout made once at load by pack() (fc_weight_prepare);
     * such entries live in fc_table.qp and gemm() must not assume anything about w_row_bytes. */
    int layout;
    size_t (*packed_bytes)(int64_t rows, int64_t k);
    void (*pack)(const uint8_t *src, size_t src_row_bytes, int64_t rows, int64_t k, uint8_t *dst);
    /* Rows handed to one thread are a multiple of this (0 means 16). */
    int64_t row_align;
    /* 1: pack() may be called once per run of rows (every run but the last a multiple of
     * row_align) into consecutive places of one buffer, packed_bytes() being additive over such
     * runs, and gemm() never reads w_raw: fused matrices (Q|K|V, gate|up) are then packed from
     * their separate tensors without an intermediate copy. */
    int pack_segments;
} fc_qkernel;

/* Per-token transformer ops. Every entry has a scalar twin in ops_scalar.c. */
typedef struct {
    /* out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]; out may alias x. */
    void (*rmsnorm)(float *out, const float *x, const float *w, int64_t n, float eps);
    /* Rotate n_heads heads of head_dim in place at position pos. inv_freq has head_dim/2 entries
     * (base^(-2i/head_dim), already rope-scaled). neox=0: pairs (2i, 2i+1) (GGML_ROPE_TYPE_NORMAL,
     * llama); neox=1: pairs (i, i + head_dim/2) (qwen2, neox). */
    void (*rope)(float *x, int64_t n_heads, int64_t head_dim, int64_t pos, const float *inv_freq, int neox);
    /* In-place softmax over n values. */
    void (*softmax)(float *x, int64_t n);
    /* out[i] = silu(gate[i]) * up[i]; out may alias either input. */
    void (*silu_mul)(float *out, const float *gate, const float *up, int64_t n);
    /* out[i] = a[i] + b[i]; out may alias either input. */
    void (*add)(float *out, const float *a, const float *b, int64_t n);
    /* Attention of one query head over n_pos cached positions:
     * out[head_dim] = softmax(scale * q . K[p]) . V[p], K/V rows p at k + p*kv_stride, v + p*kv_stride.
     * scores is scratch of n_pos floats. */
    void (*attn_head)(float *out, const float *q, const float *k, const float *v, int64_t n_pos,
                      int64_t head_dim, int64_t kv_stride, float scale, float *scores);
    /* attn_head for n_heads consecutive query heads (q, out: n_heads * head_dim) that share the
     * K/V head (grouped-query attention); scores: n_heads * n_pos scratch. Bit for bit what
     * attn_head gives per head; the SIMD levels pass over each K and V row once per group (or
     * per few heads) instead of once per head. lse, unless NULL, gets each head's
     * log(sum_p e^score_p) (scores scaled): attention over parts of the positions, each
     * normalised on its own, merges with it (the model's split decode attention). */
    void (*attn_group)(float *out, const float *q, int64_t n_heads, const float *k, const float *v,
                       int64_t n_pos, int64_t head_dim, int64_t kv_stride, float scale, float *scores,
                       float *lse);
    /* attn_group over a float16 K/V cache: bit for bit attn_group on the same rows widened to
     * float32 (the widening is exact); kv_stride in elements. */
    void (*attn_group_f16)(float *out, const float *q, int64_t n_heads, const uint16_t *k, const uint16_t *v,
                           int64_t n_pos, int64_t head_dim, int64_t kv_stride, float scale, float *scores,
                           float *lse);
    /* out[i] = x[i] as float16, rounded to nearest even (fc_fp32_to_fp16). */
    void (*to_f16)(uint16_t *out, const float *x, int64_t n);
    /* Sum of n floats (a streaming read: the yardstick fc_membw times). */
    double (*sum_read)(const float *x, int64_t n);
} fc_ops;

typedef struct {
    fc_qkernel q[FC_QTYPE_MAX];  /* kernels over GGUF blocks as stored */
    fc_qkernel qp[FC_QTYPE_MAX]; /* preferred kernels over a repacked layout (gemm NULL: none) */
    fc_ops ops;
} fc_table;

/* Table of the current level (fc_isa_current()). */
FC_API const fc_table *fc_tab(void);
/* Table of a given level (tests, benchmarks). */
FC_API const fc_table *fc_tab_for(fc_isa isa);

/* ---- AMX ----
 * Below this many activation rows the packed AMX kernels hand the work to the kernel of the level
 * below them (AVX-512 VNNI / BF16 over the GGUF rows): with fewer than a tile's worth of rows the
 * tiles sit mostly idle while the per-block store+scale work stays, and batch 1..4 was reported
 * faster on the VNNI path. benchmarks/bench_amx.py measures the crossover; tune it there.
 * fc_amx_min_rows holds the value in use (tests set it to 1 to force the tile path). */
#define FC_AMX_MIN_ROWS 5
extern int fc_amx_min_rows;
FC_API void fc_amx_set_min_rows(int n);
FC_API int fc_amx_get_min_rows(void);
/* Test hooks: run a tile program (ops: 6 int64 each, see amx_kernels.inc) on the tile model
 * (_amxsim) or the real tiles (_amx). Return NULL or the first fault the model raised. */
FC_API const char *fc_amx_test_exec_amxsim(const int64_t *ops, int nops, uint8_t *mem);
FC_API const char *fc_amx_test_exec_amx(const int64_t *ops, int nops, uint8_t *mem);

/* ---- threads ---- */
typedef void (*fc_task_fn)(void *ctx, int ith, int nth);
/* fc_parallel_chunks(nth, nth, fn, ctx). */
void fc_parallel(int nth, fc_task_fn fn, void *ctx);
/* Runs fn(ctx, i, nchunks) for i in [0, nchunks) on up to nth threads (the caller among them),
 * each chunk exactly once, by whichever thread claims it first: `i` names a chunk, not a thread
 * (per-chunk scratch indexed by i is still private). Returns when all are done. */
void fc_parallel_chunks(int nth, int nchunks, fc_task_fn fn, void *ctx);
int fc_resolve_threads(int threads);

/* ---- scalar conversions (shared; also the specification) ---- */
static inline float fc_fp16_to_fp32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) { mant <<= 1; exp--; }
            mant &= 0x3ff;
            bits = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t fc_fp32_to_fp16(float f) {
    /* round to nearest even, as numpy's float16 conversion */
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t mant = x & 0x7fffff;
    if (((x >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        mant |= 0x800000;
        const int shift = 14 - exp;
        uint32_t h = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)exp << 10) | (mant >> 13);
    const uint32_t rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

static inline float fc_bf16_to_fp32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t fc_fp32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 64); /* quiet NaN */
    return (uint16_t)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}

/* ---- registration functions (one per kernel file) ---- */
#define FC_REG(name) void fc_register_##name(fc_table *t)
FC_REG(float_scalar);
FC_REG(float_avx2);
FC_REG(float_avx512);
FC_REG(float_avx512bf16);
FC_REG(legacy_scalar);
FC_REG(legacy_avx2);
FC_REG(legacy_avx512);
FC_REG(kquant_scalar);
FC_REG(kquant_avx2);
FC_REG(kquant_avx512);
FC_REG(legacyx16_avx512vnni);
FC_REG(kquantx16_avx512vnni);
FC_REG(ops_scalar);
FC_REG(ops_avx2);
FC_REG(ops_avx512);
FC_REG(amx_amx);
FC_REG(amx_amxsim);

#endif
