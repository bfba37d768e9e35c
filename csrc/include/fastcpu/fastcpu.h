/* fastcpu public C API.
 *
 * Kernels over GGUF weight blocks, chosen at run time for the CPU they run on.
 * Weight matrices are row-major: `rows` rows of `cols` weights, each row stored
 * as consecutive GGUF blocks (fc_row_bytes(qtype, cols) bytes per row).
 * Activations are float32, row-major: n rows of `cols` values.
 * Outputs are float32, row-major: n rows of `rows` values.
 *
 * The C layer trusts its arguments (see fc_gemm_check for a validating helper);
 * the Python binding validates everything before it calls in.
 */
#ifndef FASTCPU_H
#define FASTCPU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define FC_API __declspec(dllexport)
#else
#define FC_API __attribute__((visibility("default")))
#endif

/* Weight formats: the numeric values are GGUF's ggml_type ids. */
typedef enum {
    FC_F32 = 0,
    FC_F16 = 1,
    FC_Q4_0 = 2,
    FC_Q4_1 = 3,
    FC_Q5_0 = 6,
    FC_Q5_1 = 7,
    FC_Q8_0 = 8,
    FC_Q4_K = 12,
    FC_Q5_K = 13,
    FC_Q6_K = 14,
    FC_BF16 = 30,
} fc_qtype;

#define FC_QTYPE_MAX 31 /* one past the largest ggml_type id we index by */

/* ISA levels, from the one fixed list. FC_ISA_AMX_SIM is never chosen
 * automatically: it runs the AMX kernels on a software model of the tiles. */
typedef enum {
    FC_ISA_SCALAR = 0,
    FC_ISA_AVX2 = 1,
    FC_ISA_AVX512 = 2,
    FC_ISA_AVX512_VNNI = 3,
    FC_ISA_AVX512_BF16 = 4,
    FC_ISA_AMX = 5,
    FC_ISA_AMX_SIM = 6,
    FC_ISA_COUNT = 7
} fc_isa;

/* ---- CPU features and dispatch ---- */
typedef struct {
    int sse42, avx, avx2, fma, f16c;
    int avx512f, avx512bw, avx512vl, avx512dq, avx512_vnni, avx512_bf16, avx_vnni;
    int amx_tile, amx_int8, amx_bf16;
    int os_avx;        /* xgetbv: OS saves ymm state */
    int os_avx512;     /* xgetbv: OS saves opmask/zmm state */
    int os_amx;        /* xgetbv: OS enables tile config/data (XCR0 bits 17,18) */
    int amx_permitted; /* arch_prctl(ARCH_REQ_XCOMP_PERM) granted tile data */
    int physical_cores;
    int logical_cpus;
} fc_cpu_features;

FC_API const fc_cpu_features *fc_cpu(void);
FC_API const char *fc_isa_name(fc_isa isa);
/* -1 when the name is unknown. */
FC_API int fc_isa_from_name(const char *name);
/* 1 when the CPU can run `isa` and it was compiled in. When it cannot and
 * `why` is given, a static string naming what is missing is stored there. */
FC_API int fc_isa_supported(fc_isa isa, const char **why);
/* Best supported level, never FC_ISA_AMX_SIM. */
FC_API fc_isa fc_isa_best(void);
/* Level in use. Set at first use from FASTCPU_ISA, else the best level. */
FC_API fc_isa fc_isa_current(void);
/* 0 on success, -1 if the level is not supported here. */
FC_API int fc_isa_set(fc_isa isa);

/* ---- formats ---- */
/* Weights per block (1 for float formats), bytes per block; 0 if unknown. */
FC_API int64_t fc_block_size(int qtype);
FC_API int64_t fc_type_size(int qtype);
/* Bytes in one row of `cols` weights; 0 if cols is not a whole number of blocks. */
FC_API size_t fc_row_bytes(int qtype, int64_t cols);
FC_API const char *fc_qtype_name(int qtype);
/* 1 when a GEMM kernel exists for the format. */
FC_API int fc_qtype_supported(int qtype);

/* ---- matrix kernels ---- */
/* Y[n][rows] = X[n][cols] . W[rows][cols]^T.
 * threads <= 0 means the default (physical cores).
 * work may be NULL (allocated internally) or point at fc_gemm_work_bytes() bytes
 * aligned to 64. Returns 0, or -1 on allocation failure. */
FC_API size_t fc_gemm_work_bytes(int qtype, int64_t cols, int64_t n);
FC_API int fc_gemm(int qtype, const void *w, int64_t rows, int64_t cols,
                   const float *x, int64_t n, float *y, int threads, void *work);
/* Checks fc_gemm's arguments; returns NULL if fine, else a message. */
FC_API const char *fc_weight_check(int qtype, int64_t rows, int64_t cols);
FC_API const char *fc_gemm_check(int qtype, int64_t rows, int64_t cols, int64_t n, int threads);
#define fc_gemv(qtype, w, rows, cols, x, y, threads) \
    fc_gemm((qtype), (w), (rows), (cols), (x), 1, (y), (threads), NULL)

#define FC_WEIGHT_MAX_SEGS 4

/* A weight matrix ready for the kernels of one ISA level. fc_weight_prepare repacks the GGUF
 * blocks into the layout the level's preferred kernel streams fastest (the layout tag), or keeps
 * a pointer to them when the stored layout is best. Prepare once at load; never in the hot loop.
 * The prepared weight stays tied to the level it was prepared for. */
typedef struct {
    int qtype;
    int layout;          /* 0: GGUF blocks as stored at `data`; else a kernel-private layout */
    int isa;             /* level whose kernel reads it */
    int64_t rows, cols;
    const void *data;    /* what the kernel reads */
    const void *src;     /* the GGUF blocks given to fc_weight_prepare (kept: small batches may
                            go to the kernel over the stored layout) */
    size_t row_bytes;    /* bytes per stored GGUF row */
    size_t owned_bytes;  /* bytes of the repacked copy (0 when none): the memory cost of the layout */
    const void *kernel;  /* internal */
    void *owned;         /* internal */
    /* Segmented (fc_weight_prepare_segments): rows [seg_row0[s], seg_row0[s+1]) are stored at
     * seg_data[s]; nseg 0 means one run of rows at `data`. */
    int nseg;
    const void *seg_data[FC_WEIGHT_MAX_SEGS];
    int64_t seg_row0[FC_WEIGHT_MAX_SEGS + 1];
} fc_weight;

/* Returns 0, -1 on allocation failure, -2 when no kernel serves qtype (see fc_weight_check).
 * `data` must outlive `w` (small batches may read it
 * even when a repacked copy exists). */
FC_API int fc_weight_prepare(fc_weight *w, int qtype, const void *data, int64_t rows, int64_t cols);
/* One matrix made of nseg (<= FC_WEIGHT_MAX_SEGS) runs of GGUF rows of the same format and
 * width, stored apart (Q, K, V of a layer, say), read in place: no copy. When this level's
 * preferred kernel wants a repacked layout, each run is packed straight into one repacked copy
 * where that kernel allows it (whole row groups per run); else it returns -3 (nothing prepared):
 * concatenate the rows and use fc_weight_prepare then. Else as fc_weight_prepare. The runs must
 * outlive `w` only when no repacked copy was made (layout 0). */
FC_API int fc_weight_prepare_segments(fc_weight *w, int qtype, const void *const *data, const int64_t *rows,
                                      int nseg, int64_t cols);
FC_API void fc_weight_release(fc_weight *w);
/* Y[n][rows] = X[n][cols] . W^T, as fc_gemm. */
FC_API int fc_gemm_w(const fc_weight *w, const float *x, int64_t n, float *y, int threads, void *work);
FC_API size_t fc_gemm_w_work_bytes(const fc_weight *w, int64_t n);

/* Dequantize `n` weights (a whole number of blocks) to float32. */
FC_API void fc_dequantize(int qtype, const void *src, float *dst, int64_t n);

/* Quantize `n` float32 values (a whole number of blocks) into GGUF blocks of `qtype` at `dst`
 * (fc_row_bytes(qtype, n) bytes). Formats: Q4_K, Q5_K, Q6_K. Returns 0, or -1 when qtype has no
 * quantizer. Values must be finite. */
FC_API int fc_quantize(int qtype, const float *src, void *dst, int64_t n);

/* Streaming-read bandwidth of this machine in bytes/s over `bytes` bytes
 * (first-touched by the reading threads), median of `passes` passes (at most 63). */
FC_API double fc_membw(size_t bytes, int threads, int passes);
/* Indices of the k largest of x[0..n) (k clipped to n), best first, ties to the lower index;
 * returns how many were written to idx. */
FC_API int64_t fc_topk(const float *x, int64_t n, int64_t k, int64_t *idx);

/* One next-token draw from a row of logits, llama.cpp's chain: penalties over `recent` (the last
 * tokens, each in [0, n)) -> top-k -> top-p -> min-p (top-p and min-p at temperature 1) ->
 * temperature -> the token where the cumulative probability first exceeds u (in [0, 1)).
 * temperature <= 0 is greedy (the first maximum after penalties). top_k 0 (or >= n) keeps every
 * token. `scratch` holds fc_sample_scratch_bytes(n, n_recent) bytes, 8-byte aligned. Returns the
 * token id. Bit for bit the NumPy specification fastcpu.sampler.sample_ref wherever u is not within
 * rounding of a bucket's edge. */
typedef struct {
    double temperature, top_p, min_p;
    double repeat_penalty, presence_penalty, frequency_penalty;
    int64_t top_k;
} fc_sampling;
FC_API size_t fc_sample_scratch_bytes(int64_t n, int64_t n_recent);
FC_API int64_t fc_sample(const float *logits, int64_t n, const fc_sampling *p, const int32_t *recent,
                         int64_t n_recent, double u, void *scratch);

/* Default thread count (physical cores). */
FC_API int fc_default_threads(void);

#ifdef __cplusplus
}
#endif
#endif
