/* Llama-family decoder (llama, mistral-style, qwen2) over GGUF weights: the whole forward pass of one
 * step (n tokens) in one C call. The Python side parses the file, checks shapes against the
 * architecture metadata and hands in pointers into the mmap (it keeps the mmap alive); this layer
 * trusts them. Model code never names an ISA: matmuls go through fc_gemm_w, the rest through
 * fc_tab()->ops.
 */
#ifndef FC_MODEL_LLAMA_H
#define FC_MODEL_LLAMA_H

#include <stddef.h>
#include <stdint.h>

#include "fastcpu/fastcpu.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A weight matrix as stored in the file: `rows` rows of `cols` weights (fc_row_bytes per row). */
typedef struct {
    int qtype;
    const void *data;
} fc_llama_tensor;

typedef struct {
    const float *attn_norm;               /* [dim] */
    fc_llama_tensor wq;                   /* [n_heads*head_dim][dim] */
    fc_llama_tensor wk;                   /* [n_kv_heads*head_dim][dim] */
    fc_llama_tensor wv;                   /* [n_kv_heads*head_dim][dim] */
    const float *bq, *bk, *bv;            /* [q_dim], [kv_dim], [kv_dim] or NULL (qwen2 has them) */
    fc_llama_tensor wo;                   /* [dim][n_heads*head_dim] */
    const float *ffn_norm;                /* [dim] */
    fc_llama_tensor w_gate;               /* [hidden][dim] */
    fc_llama_tensor w_up;                 /* [hidden][dim] */
    fc_llama_tensor w_down;               /* [dim][hidden] */
} fc_llama_layer_src;

typedef struct {
    int n_vocab;
    int dim;
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int hidden;     /* feed-forward width */
    int n_ctx;      /* positions the KV cache holds */
    int max_batch;  /* tokens per prefill block (rows of X in the batched GEMMs) */
    int rope_neox;  /* 0: pairs (2i, 2i+1) (llama GGUF, Q/K permuted by the converter); 1: (i, i+d/2) */
    int threads;    /* <= 0: physical cores */
    float rms_eps;
    float attn_scale; /* usually 1/sqrt(head_dim) */
    /* 1: every weight pointer lies in a read-only mapping of the model file: once a matrix is
     * repacked into memory of the engine's own, its pages are dropped from the mapping (they
     * fault back in from the page cache if read again), so that the file is not resident twice
     * while loading. Never set it for anonymous memory (the drop would zero it). */
    int src_mapped;
    /* 1: the KV cache holds float16 (half the bytes a decode step reads and keeps; llama.cpp's
     * default), rounded to nearest even as the rows are stored; attention computes in float32. */
    int kv_f16;
} fc_llama_config;

typedef struct fc_llama fc_llama;

enum { FC_LOGITS_NONE = 0, FC_LOGITS_LAST = 1, FC_LOGITS_ALL = 2 };

/* Builds the model: prepares every weight for the current ISA level (fusing Q/K/V and gate/up
 * into one matrix each when their formats agree), allocates the KV cache for n_ctx positions and
 * every activation buffer once. inv_freq: head_dim/2 rope frequencies, already scaled.
 * `output` with data NULL means tied embeddings (token_embd is the output matrix).
 * Returns NULL on allocation failure, with a message in err. */
FC_API fc_llama *fc_llama_create(const fc_llama_config *cfg, fc_llama_tensor token_embd,
                                 const float *output_norm, fc_llama_tensor output,
                                 const fc_llama_layer_src *layers, const float *inv_freq,
                                 char *err, size_t err_len);
FC_API void fc_llama_free(fc_llama *m);

/* Runs tokens[0..n) at positions pos..pos+n-1 (the cache must hold positions < pos already;
 * pos + n <= n_ctx). logits_mode FC_LOGITS_LAST writes n_vocab floats for the last token,
 * FC_LOGITS_ALL writes n * n_vocab (row-major), FC_LOGITS_NONE only fills the cache.
 * Returns 0, or -1 on failure. */
FC_API int fc_llama_forward(fc_llama *m, const int32_t *tokens, int n_tokens, int pos, float *logits,
                            int logits_mode);

/* Weights supplied per pass instead of at create (csrc/model/stream.c streams them from the file).
 * With a source, create prepares every matrix over the GGUF layout unfused, touching no weight
 * data (the tensors' data pointers may be NULL), and each forward pass asks fetch() for group l
 * (l < n_layers: ptrs[0..7) = q, k, v, o, gate, up, down; l == n_layers: ptrs[0] = output head)
 * before it uses them, and embd_row() for each token's embedding. A nonzero return aborts the
 * pass: the forward call returns it (use a value other than -1, which means out of memory).
 * fetch NULL: the matrices are prepared at create as without a source, and only embd_row() is
 * asked for (embedding rows read without touching the file mapping: fastcpu._engine). */
typedef struct {
    int (*fetch)(void *ctx, int group, const void **ptrs);
    int (*embd_row)(void *ctx, int32_t token, float *dst, int64_t dim);
    void *ctx;
} fc_llama_source;

FC_API fc_llama *fc_llama_create_src(const fc_llama_config *cfg, fc_llama_tensor token_embd,
                                     const float *output_norm, fc_llama_tensor output,
                                     const fc_llama_layer_src *layers, const float *inv_freq,
                                     const fc_llama_source *src, char *err, size_t err_len);

/* Independent rows, one token each (batched decoding of several sequences): row i is token[i] at
 * position pos[i] of sequence seq[i], whose keys/values live in cache positions
 * seq[i]*seq_ctx .. seq[i]*seq_ctx + seq_ctx - 1 (pos[i] < seq_ctx; the sequence's earlier
 * positions must be cached, or come earlier in the same call). Writes n_vocab logits for each
 * row with want[i] set (every row when want is NULL), packed in row order.
 * Rows run in blocks of max_batch: each block is one pass over the weights. */
FC_API int fc_llama_forward_rows(fc_llama *m, const int32_t *tokens, int n, const int32_t *pos, const int32_t *seq,
                                 int seq_ctx, const uint8_t *want, float *logits);

/* Weight bytes one decoded token reads (every matrix once, plus one embedding row). */
FC_API size_t fc_llama_weight_bytes(const fc_llama *m);
/* Bytes this model allocated (repacked weights, KV cache, activations). */
FC_API size_t fc_llama_alloc_bytes(const fc_llama *m);
/* Threads a step uses; set_threads cannot go above the count at create (scratch is sized for it). */
FC_API void fc_llama_set_threads(fc_llama *m, int threads);
FC_API int fc_llama_threads(const fc_llama *m);

#ifdef __cplusplus
}
#endif
#endif
