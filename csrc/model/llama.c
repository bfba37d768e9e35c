/* Llama-family forward pass (llama, mistral layout, qwen2 biases), llama2.c style: one struct, every
 * buffer allocated once at create with its shape noted, one call per step.
 *
 * One step runs its tokens in blocks of at most max_batch rows, so every matmul is a batched GEMM
 * X (nb, dim) . W^T: prefill reads each weight once per block, decode is the nb = 1 case. Per layer:
 *   xb = rmsnorm(x)                   (fused into the residual add that precedes it)
 *   q|k|v = xb . Wqkv^T               (one GEMM when the three formats agree)
 *   rope(q, k); k, v -> cache
 *   att = causal attention per (token, head) over the cache    (threads over (token, head))
 *   x += att . Wo^T ; xb = rmsnorm(x)  (one pass)
 *   gate|up = xb . Wgu^T ; h = silu(gate) * up
 *   x += h . Wdown^T ; xb = rmsnorm(x) with the next layer's (or the final) norm
 * Row-wise steps of a block run across the pool when the block has more than one row; a decoded
 * token runs them on the calling thread, which saves a pool round trip per step.
 */
#define _GNU_SOURCE
#include "model/llama.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "fc_internal.h"

/* Attention work of a block goes out in this many chunks per thread (see run_stage). */
#define ATTN_CHUNKS_PER_THREAD 8
/* A decode step's attention over more positions than this is done in ceil(positions / this)
 * parts of equal length, at most this long, so none is empty (each KV head's parts are items of
 * their own, merged by their log-sum-exp): with one item per KV head, SmolLM2's 3 heads left one
 * of 2 threads waiting a third of the stage, and a 16-core machine would run a 4-KV-head model's
 * attention on 4 cores. The split depends on the position only, never on the thread count, so the
 * logits do not either. */
#define ATTN_SPLIT_POS 512

typedef struct {
    const float *attn_norm, *ffn_norm; /* [dim] */
    const float *bq, *bk, *bv;         /* [q_dim], [kv_dim], [kv_dim] or NULL */
    int fused_qkv, fused_gu;
    fc_weight wqkv;                    /* fused: [q_dim + 2*kv_dim][dim], else wq: [q_dim][dim] */
    fc_weight wk, wv;                  /* unfused only: [kv_dim][dim] */
    fc_weight wo;                      /* [dim][q_dim] */
    fc_weight wgu;                     /* fused: [2*hidden][dim], else w_gate: [hidden][dim] */
    fc_weight wup;                     /* unfused only: [hidden][dim] */
    fc_weight wdown;                   /* [dim][hidden] */
    void *cat_qkv, *cat_gu;            /* concatenated GGUF rows backing the fused weights */
} layer_t;

struct fc_llama {
    fc_llama_config c;
    int q_dim, kv_dim;
    int nth;                    /* resolved thread count */
    fc_llama_tensor embd;       /* [n_vocab][dim] GGUF rows */
    size_t embd_row_bytes;
    const float *out_norm;      /* [dim] */
    fc_weight out;              /* [n_vocab][dim] (token_embd when tied) */
    layer_t *L;                 /* [n_layers] */
    float *inv_freq;            /* [head_dim/2] */

    /* KV cache: [n_layers][n_kv_heads][n_ctx][head_dim]: one KV head's rows of a layer are one
     * contiguous run, which a decode step's attention reads as one stream (position-major rows,
     * head after head 1 KB apart, left the hardware prefetchers 4 of every 16 lines to follow) */
    void *k_cache, *v_cache; /* float32, or float16 (config kv_f16) */

    /* activations, B = max_batch rows */
    float *x;       /* (B, dim) residual stream */
    float *xb;      /* (B, dim) normed input of the next matmul */
    /* The rest share one buffer (act), each where nothing live is when it is written: a layer runs
     * qkv -> att -> y, then gu -> h -> y, and y is added into x before the next matmul writes.
     *   act: [ qkv | y | gu (one at a time, from the start) ] [ att ]  (attention half)
     *        [                                             ] [ h ]    (FFN half)
     * which holds 2/3 of what separate buffers took (SmolLM2 at B = 256: 6.6 -> 4.5 MB). */
    float *act;
    float *y;       /* (B, dim) matmul output added into x: the start of act */
    float *qkv;     /* (B, q_dim + 2*kv_dim) fused, else q (B, q_dim) | k (B, kv_dim) | v (B, kv_dim) */
    float *att;     /* (B, q_dim) attention output */
    float *gu;      /* (B, 2*hidden): fused gate|up rows, else gate (B, hidden) | up (B, hidden) */
    float *h;       /* (B, hidden) silu(gate) * up */
    float *scores;  /* (nth * ATTN_CHUNKS_PER_THREAD, n_heads / n_kv_heads, n_ctx) attention scratch per chunk */
    float *part_out; /* (n_kv_heads, max_parts, n_heads / n_kv_heads, head_dim) split attention's parts */
    float *part_lse; /* (n_kv_heads, max_parts, n_heads / n_kv_heads) their log-sum-exp per head */
    int max_parts;   /* ceil(n_ctx / ATTN_SPLIT_POS) */
    void *work;     /* GEMM activation scratch: max fc_gemm_w_work_bytes over the weights at B rows */
    size_t x_bytes, act_bytes, work_bytes; /* of x (= of xb), act, work */
    size_t alloc_bytes;
    fc_llama_source src; /* weights per pass (fetch NULL: prepared at create) */
};

static void *alloc64(fc_llama *m, size_t bytes) {
    void *p = NULL;
    bytes = (bytes + FC_ALIGN - 1) & ~(size_t)(FC_ALIGN - 1);
    if (bytes == 0) bytes = FC_ALIGN;
    if (posix_memalign(&p, FC_ALIGN, bytes)) return NULL;
    m->alloc_bytes += bytes;
    return p;
}

/* Concatenates the GGUF rows of up to three matrices (same format and width) into one. */
static void *concat_rows(fc_llama *m, const fc_llama_tensor *t, const int64_t *rows, int n, size_t row_bytes) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += (size_t)rows[i] * row_bytes;
    uint8_t *p = alloc64(m, total);
    if (!p) return NULL;
    madvise(p, total, MADV_HUGEPAGE);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        memcpy(p + off, t[i].data, (size_t)rows[i] * row_bytes);
        off += (size_t)rows[i] * row_bytes;
    }
    return p;
}

/* After a matrix was repacked from the file mapping (src_mapped): its pages leave this process's
 * resident set. Whole pages only; a page it shares with a neighbour is dropped too, harmlessly
 * (read-only file pages fault back in). */
static void drop_pages(const fc_llama *m, const void *data, size_t bytes) {
    if (!m->c.src_mapped) return;
    const uintptr_t pg = 4096, a = (uintptr_t)data & ~(pg - 1);
    const uintptr_t b = ((uintptr_t)data + bytes + pg - 1) & ~(pg - 1);
    madvise((void *)a, b - a, MADV_DONTNEED);
}

static void drop_source(const fc_llama *m, const fc_weight *w, const void *data, int64_t rows) {
    if (w->layout == 0) return;
    drop_pages(m, data, (size_t)rows * w->row_bytes);
}

/* Once every matrix is prepared, drops their sources once more: reading one matrix faulted in the
 * kernel's fault-around window (16 pages) around each page, the edges of its neighbours in the file
 * included, which were dropped before (SmolLM2: ~2.6 MB of such edges stayed resident). Sources
 * copied into a concatenation go too, whatever the layout. */
static void drop_all_sources(const fc_llama *m, const fc_llama_layer_src *layers, fc_llama_tensor out) {
    if (!m->c.src_mapped) return;
    const int64_t dim = m->c.dim, hidden = m->c.hidden;
    for (int l = 0; l < m->c.n_layers; l++) {
        const fc_llama_layer_src *s = &layers[l];
        const layer_t *L = &m->L[l];
        const fc_llama_tensor qkv[3] = {s->wq, s->wk, s->wv};
        const int64_t qkv_rows[3] = {m->q_dim, m->kv_dim, m->kv_dim};
        const fc_weight *qkv_w[3] = {&L->wqkv, &L->wk, &L->wv};
        for (int i = 0; i < 3; i++) {
            if (L->cat_qkv) drop_pages(m, qkv[i].data, (size_t)qkv_rows[i] * fc_row_bytes(qkv[i].qtype, dim));
            else drop_source(m, L->fused_qkv ? qkv_w[0] : qkv_w[i], qkv[i].data, qkv_rows[i]);
        }
        const fc_llama_tensor gu[2] = {s->w_gate, s->w_up};
        const fc_weight *gu_w[2] = {&L->wgu, &L->wup};
        for (int i = 0; i < 2; i++) {
            if (L->cat_gu) drop_pages(m, gu[i].data, (size_t)hidden * fc_row_bytes(gu[i].qtype, dim));
            else drop_source(m, L->fused_gu ? gu_w[0] : gu_w[i], gu[i].data, hidden);
        }
        drop_source(m, &L->wo, s->wo.data, dim);
        drop_source(m, &L->wdown, s->w_down.data, dim);
    }
    drop_source(m, &m->out, out.data, m->c.n_vocab);
}

/* from_file: data points into the model file's mapping (else into memory of the engine's own) */
static int prepare(fc_llama *m, fc_weight *w, int qtype, const void *data, int64_t rows, int64_t cols,
                   int from_file) {
    if (fc_weight_prepare(w, qtype, data, rows, cols)) return -1; /* -1: no memory, -2: no kernel */
    m->alloc_bytes += w->owned_bytes;
    if (from_file) drop_source(m, w, data, rows);
    return 0;
}

/* Prepares n matrices of width cols as one when their formats agree (returns 1), else each alone. */
static int prepare_group(fc_llama *m, fc_weight *ws[], const fc_llama_tensor *t, const int64_t *rows, int n,
                         int64_t cols, void **cat, int *fused) {
    int same = 1;
    for (int i = 1; i < n; i++) same &= t[i].qtype == t[0].qtype;
    *cat = NULL;
    *fused = 0;
    if (same) {
        /* read in place as one matrix of segments where the kernel takes GGUF rows as stored */
        const void *segs[3];
        for (int i = 0; i < n; i++) segs[i] = t[i].data;
        const int rc = fc_weight_prepare_segments(ws[0], t[0].qtype, segs, rows, n, cols);
        if (rc == 0) {
            m->alloc_bytes += ws[0]->owned_bytes;
            for (int i = 0; i < n; i++) drop_source(m, ws[0], t[i].data, rows[i]);
            *fused = 1;
            return 0;
        }
        if (rc != -3) return -1;
        size_t rb = fc_row_bytes(t[0].qtype, cols);
        int64_t total = 0;
        for (int i = 0; i < n; i++) total += rows[i];
        *cat = concat_rows(m, t, rows, n, rb);
        if (!*cat) return -1;
        /* kept even when the kernel repacks: small batches may read the stored layout */
        if (prepare(m, ws[0], t[0].qtype, *cat, total, cols, 0)) return -1;
        *fused = 1;
        return 0;
    }
    for (int i = 0; i < n; i++)
        if (prepare(m, ws[i], t[i].qtype, t[i].data, rows[i], cols, 1)) return -1;
    return 0;
}

void fc_llama_free(fc_llama *m) {
    if (!m) return;
    if (m->L) {
        for (int l = 0; l < m->c.n_layers; l++) {
            layer_t *L = &m->L[l];
            fc_weight_release(&L->wqkv);
            fc_weight_release(&L->wk);
            fc_weight_release(&L->wv);
            fc_weight_release(&L->wo);
            fc_weight_release(&L->wgu);
            fc_weight_release(&L->wup);
            fc_weight_release(&L->wdown);
            free(L->cat_qkv);
            free(L->cat_gu);
        }
    }
    fc_weight_release(&m->out);
    free(m->L);
    free(m->inv_freq);
    free(m->k_cache);
    free(m->v_cache);
    free(m->x);
    free(m->xb);
    free(m->act);
    free(m->scores);
    free(m->part_out);
    free(m->part_lse);
    free(m->work);
    free(m);
}

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

/* A matrix over the GGUF layout whose rows arrive per pass (data set by the source's fetch). */
static void prepare_plain(fc_weight *w, int qtype, int64_t rows, int64_t cols) {
    memset(w, 0, sizeof *w);
    w->qtype = qtype;
    w->isa = (int)fc_isa_current();
    w->rows = rows;
    w->cols = cols;
    w->row_bytes = fc_row_bytes(qtype, cols);
    w->kernel = &fc_tab()->q[qtype];
}

fc_llama *fc_llama_create(const fc_llama_config *cfg, fc_llama_tensor token_embd, const float *output_norm,
                          fc_llama_tensor output, const fc_llama_layer_src *layers, const float *inv_freq,
                          char *err, size_t err_len) {
    return fc_llama_create_src(cfg, token_embd, output_norm, output, layers, inv_freq, NULL, err, err_len);
}

fc_llama *fc_llama_create_src(const fc_llama_config *cfg, fc_llama_tensor token_embd, const float *output_norm,
                              fc_llama_tensor output, const fc_llama_layer_src *layers, const float *inv_freq,
                              const fc_llama_source *src, char *err, size_t err_len) {
    fc_llama *m = calloc(1, sizeof *m);
    if (!m) goto oom;
    if (src) m->src = *src;
    m->c = *cfg;
    if (m->c.max_batch < 1) m->c.max_batch = 1;
    const fc_llama_config *c = &m->c;
    const int64_t B = c->max_batch, dim = c->dim, hd = c->head_dim, hidden = c->hidden;
    m->q_dim = c->n_heads * c->head_dim;
    m->kv_dim = c->n_kv_heads * c->head_dim;
    m->nth = fc_resolve_threads(c->threads);
    m->c.threads = m->nth; /* 0 meant the default: the stages need the actual count */
    m->embd = token_embd;
    m->embd_row_bytes = fc_row_bytes(token_embd.qtype, dim);
    m->out_norm = output_norm;

    m->L = calloc((size_t)c->n_layers, sizeof *m->L);
    m->inv_freq = alloc64(m, (size_t)(hd / 2) * sizeof(float));
    if (!m->L || !m->inv_freq) goto oom;
    memcpy(m->inv_freq, inv_freq, (size_t)(hd / 2) * sizeof(float));

    /* The output matrix first: its whole source is resident while it is repacked (the biggest
     * matrix: SmolLM2's 29 MB embedding), so the load's high-water mark is that plus the copy,
     * not that on top of every layer already packed. */
    fc_llama_tensor o = output.data ? output : token_embd;
    if (src && src->fetch) prepare_plain(&m->out, o.qtype, c->n_vocab, dim);
    else if (prepare(m, &m->out, o.qtype, o.data, c->n_vocab, dim, 1)) goto oom;

    size_t work = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const fc_llama_layer_src *s = &layers[l];
        layer_t *L = &m->L[l];
        L->attn_norm = s->attn_norm;
        L->ffn_norm = s->ffn_norm;
        L->bq = s->bq;
        L->bk = s->bk;
        L->bv = s->bv;
        if (src && src->fetch) {
            prepare_plain(&L->wqkv, s->wq.qtype, m->q_dim, dim);
            prepare_plain(&L->wk, s->wk.qtype, m->kv_dim, dim);
            prepare_plain(&L->wv, s->wv.qtype, m->kv_dim, dim);
            prepare_plain(&L->wo, s->wo.qtype, dim, m->q_dim);
            prepare_plain(&L->wgu, s->w_gate.qtype, hidden, dim);
            prepare_plain(&L->wup, s->w_up.qtype, hidden, dim);
            prepare_plain(&L->wdown, s->w_down.qtype, dim, hidden);
            const fc_weight *all[] = {&L->wqkv, &L->wk, &L->wv, &L->wo, &L->wgu, &L->wup, &L->wdown};
            for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
                work = max_sz(work, fc_gemm_w_work_bytes(all[i], B));
            continue;
        }
        fc_llama_tensor qkv[3] = {s->wq, s->wk, s->wv};
        int64_t qkv_rows[3] = {m->q_dim, m->kv_dim, m->kv_dim};
        fc_weight *qkv_w[3] = {&L->wqkv, &L->wk, &L->wv};
        if (prepare_group(m, qkv_w, qkv, qkv_rows, 3, dim, &L->cat_qkv, &L->fused_qkv)) goto oom;
        fc_llama_tensor gu[2] = {s->w_gate, s->w_up};
        int64_t gu_rows[2] = {hidden, hidden};
        fc_weight *gu_w[2] = {&L->wgu, &L->wup};
        if (prepare_group(m, gu_w, gu, gu_rows, 2, dim, &L->cat_gu, &L->fused_gu)) goto oom;
        if (prepare(m, &L->wo, s->wo.qtype, s->wo.data, dim, m->q_dim, 1)) goto oom;
        if (prepare(m, &L->wdown, s->w_down.qtype, s->w_down.data, dim, hidden, 1)) goto oom;
        const fc_weight *all[] = {&L->wqkv, &L->wk, &L->wv, &L->wo, &L->wgu, &L->wup, &L->wdown};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            if (all[i]->kernel) work = max_sz(work, fc_gemm_w_work_bytes(all[i], B));
    }
    work = max_sz(work, fc_gemm_w_work_bytes(&m->out, B));
    if (!(src && src->fetch)) drop_all_sources(m, layers, o);

    const size_t kv = (size_t)c->n_layers * (size_t)c->n_ctx * (size_t)m->kv_dim * (c->kv_f16 ? 2 : sizeof(float));
    m->k_cache = alloc64(m, kv);
    m->v_cache = alloc64(m, kv);
    m->x = alloc64(m, (size_t)(B * dim) * sizeof(float));
    m->xb = alloc64(m, (size_t)(B * dim) * sizeof(float));
    {
        const int64_t qkv_w = m->q_dim + 2 * m->kv_dim, gu_w = 2 * hidden;
        const int64_t att_at = B * (qkv_w > dim ? qkv_w : dim), h_at = B * (gu_w > dim ? gu_w : dim);
        const int64_t end_a = att_at + B * m->q_dim, end_b = h_at + B * hidden;
        m->act_bytes = (size_t)(end_a > end_b ? end_a : end_b) * sizeof(float);
        m->act = alloc64(m, m->act_bytes);
        if (m->act) {
            m->y = m->qkv = m->gu = m->act;
            m->att = m->act + att_at;
            m->h = m->act + h_at;
        }
    }
    m->scores = alloc64(m, (size_t)m->nth * ATTN_CHUNKS_PER_THREAD * (size_t)(c->n_heads / c->n_kv_heads) *
                               (size_t)c->n_ctx * sizeof(float));
    m->max_parts = (c->n_ctx + ATTN_SPLIT_POS - 1) / ATTN_SPLIT_POS;
    m->part_out = alloc64(m, (size_t)c->n_heads * (size_t)m->max_parts * (size_t)c->head_dim * sizeof(float));
    m->part_lse = alloc64(m, (size_t)c->n_heads * (size_t)m->max_parts * sizeof(float));
    m->work = alloc64(m, work + FC_ALIGN);
    m->x_bytes = (size_t)(B * dim) * sizeof(float);
    m->work_bytes = work + FC_ALIGN;
    if (!m->k_cache || !m->v_cache || !m->x || !m->xb || !m->act ||
        !m->scores || !m->work || !m->part_out || !m->part_lse)
        goto oom;
    return m;
oom:
    if (err && err_len) snprintf(err, err_len, "out of memory building the model (KV cache for %d positions)",
                                 cfg->n_ctx);
    fc_llama_free(m);
    return NULL;
}

void fc_llama_set_threads(fc_llama *m, int threads) {
    int nth = fc_resolve_threads(threads);
    /* the attention scratch was sized for the thread count at create */
    if (nth > m->nth) nth = m->nth;
    m->c.threads = nth;
}

size_t fc_llama_alloc_bytes(const fc_llama *m) { return m->alloc_bytes; }

int fc_llama_threads(const fc_llama *m) { return m->c.threads; }

static size_t weight_bytes(const fc_weight *w) { return w->kernel ? (size_t)w->rows * w->row_bytes : 0; }

size_t fc_llama_weight_bytes(const fc_llama *m) {
    size_t b = weight_bytes(&m->out) + m->embd_row_bytes;
    for (int l = 0; l < m->c.n_layers; l++) {
        const layer_t *L = &m->L[l];
        b += weight_bytes(&L->wqkv) + weight_bytes(&L->wk) + weight_bytes(&L->wv) + weight_bytes(&L->wo) +
             weight_bytes(&L->wgu) + weight_bytes(&L->wup) + weight_bytes(&L->wdown);
        b += 2 * (size_t)m->c.dim * sizeof(float);
    }
    return b;
}

/* ---- one block ---- */
typedef struct {
    fc_llama *m;
    const layer_t *L;
    int layer;
    int nb;       /* rows in this block */
    int pos0;     /* position of row 0 */
    const int32_t *rpos, *rseq; /* independent rows (fc_llama_forward_rows): position, sequence */
    int seq_ctx;
    int stage;
    int parts;    /* STAGE_ATTN: parts of each (row, KV head)'s positions (1 unless a long decode step) */
    const float *norm; /* STAGE_ADD_NORM: weights of the norm that follows the add */
    float *q, *k, *v;  /* row 0 of q, k, v in the projection buffer */
    int64_t q_ld, k_ld, v_ld;
    float *gate, *up;
    int64_t g_ld;
} block_job;

enum { STAGE_QKV, STAGE_ATTN, STAGE_ADD_NORM, STAGE_SILU };

static inline int row_pos(const block_job *j, int i) { return j->rpos ? j->rpos[i] : j->pos0 + i; }
/* first cache position of row i's sequence */
static inline size_t row_cache0(const block_job *j, int i) {
    return j->rseq ? (size_t)j->rseq[i] * (size_t)j->seq_ctx : 0;
}

/* The source's matrices of layer l (l == n_layers: the output head) for this pass. */
static int fetch_layer(fc_llama *m, int l) {
    const void *p[8] = {0};
    int rc = m->src.fetch(m->src.ctx, l, p);
    if (rc) return rc;
    if (l == m->c.n_layers) {
        m->out.data = m->out.src = p[0];
        return 0;
    }
    layer_t *L = &m->L[l];
    fc_weight *w[7] = {&L->wqkv, &L->wk, &L->wv, &L->wo, &L->wgu, &L->wup, &L->wdown};
    for (int i = 0; i < 7; i++) w[i]->data = w[i]->src = p[i];
    return 0;
}

/* Items r0, r0 + step, ... below r1 of the current stage; ith picks the thread's scratch. */
static void rows_stage(block_job *j, int r0, int r1, int step, int ith) {
    fc_llama *m = j->m;
    const fc_ops *ops = &fc_tab()->ops;
    const fc_llama_config *c = &m->c;
    const int64_t dim = c->dim, hd = c->head_dim;
    switch (j->stage) {
    case STAGE_QKV: {
        const size_t hstride = (size_t)c->n_ctx * (size_t)hd; /* one KV head's rows in a layer */
        const size_t lbase = (size_t)j->layer * (size_t)c->n_kv_heads * hstride;
        for (int i = r0; i < r1; i += step) {
            const int p = row_pos(j, i);
            const size_t cp = row_cache0(j, i) + (size_t)p;
            float *q = j->q + i * j->q_ld, *k = j->k + i * j->k_ld, *v = j->v + i * j->v_ld;
            if (j->L->bq) ops->add(q, q, j->L->bq, m->q_dim);
            if (j->L->bk) ops->add(k, k, j->L->bk, m->kv_dim);
            if (j->L->bv) ops->add(v, v, j->L->bv, m->kv_dim);
            ops->rope(q, c->n_heads, hd, p, m->inv_freq, c->rope_neox);
            ops->rope(k, c->n_kv_heads, hd, p, m->inv_freq, c->rope_neox); /* k is not read again */
            for (int g = 0; g < c->n_kv_heads; g++) {
                const size_t at = lbase + (size_t)g * hstride + cp * (size_t)hd;
                if (c->kv_f16) {
                    ops->to_f16((uint16_t *)m->k_cache + at, k + g * hd, hd);
                    ops->to_f16((uint16_t *)m->v_cache + at, v + g * hd, hd);
                } else {
                    memcpy((float *)m->k_cache + at, k + g * hd, (size_t)hd * sizeof(float));
                    memcpy((float *)m->v_cache + at, v + g * hd, (size_t)hd * sizeof(float));
                }
            }
        }
        break;
    }
    case STAGE_ATTN: { /* r0..r1 index (row, KV head, part) triples: a query group reads its K/V once */
        const size_t hstride = (size_t)c->n_ctx * (size_t)hd;
        const size_t lbase = (size_t)j->layer * (size_t)c->n_kv_heads * hstride;
        const int group = c->n_heads / c->n_kv_heads, parts = j->parts;
        float *scores = m->scores + (size_t)ith * (size_t)group * (size_t)c->n_ctx;
        for (int t = r0; t < r1; t += step) {
            const int i = t / (c->n_kv_heads * parts), g = t / parts % c->n_kv_heads, part = t % parts;
            const int h = g * group, n_pos = row_pos(j, i) + 1, len = (n_pos + parts - 1) / parts;
            const int p0 = part * len, np = n_pos - p0 < len ? n_pos - p0 : len;
            const size_t base = lbase + (size_t)g * hstride + (row_cache0(j, i) + (size_t)p0) * (size_t)hd;
            float *out = m->att + (int64_t)i * m->q_dim + h * hd, *lse = NULL;
            if (parts > 1) { /* one row: its parts go aside, merge_parts sums them */
                const size_t slot = (size_t)g * (size_t)m->max_parts + (size_t)part;
                out = m->part_out + slot * (size_t)group * (size_t)hd;
                lse = m->part_lse + slot * (size_t)group;
            }
            const float *qh = j->q + i * j->q_ld + h * hd;
            if (c->kv_f16)
                ops->attn_group_f16(out, qh, group, (const uint16_t *)m->k_cache + base,
                                    (const uint16_t *)m->v_cache + base, np, hd, hd, c->attn_scale, scores, lse);
            else
                ops->attn_group(out, qh, group, (const float *)m->k_cache + base, (const float *)m->v_cache + base, np,
                                hd, hd, c->attn_scale, scores, lse);
        }
        break;
    }
    case STAGE_ADD_NORM:
        for (int i = r0; i < r1; i += step) {
            float *x = m->x + i * dim;
            ops->add(x, x, m->y + i * dim, dim);
            ops->rmsnorm(m->xb + i * dim, x, j->norm, dim, c->rms_eps);
        }
        break;
    case STAGE_SILU:
        for (int i = r0; i < r1; i += step)
            ops->silu_mul(m->h + (int64_t)i * c->hidden, j->gate + i * j->g_ld, j->up + i * j->g_ld, c->hidden);
        break;
    }
}

static int stage_items(const block_job *j) {
    return j->stage == STAGE_ATTN ? j->nb * j->m->c.n_kv_heads * j->parts : j->nb;
}

/* Each head's output from its parts: sum_c e^(lse_c - top) out_c / sum_c e^(lse_c - top), every
 * part normalised on its own (the same softmax over all positions, summed in another order). */
static void merge_parts(fc_llama *m, int n_parts) {
    const fc_llama_config *c = &m->c;
    const int group = c->n_heads / c->n_kv_heads, hd = c->head_dim;
    for (int g = 0; g < c->n_kv_heads; g++)
        for (int h = 0; h < group; h++) {
            const float *lse = m->part_lse + (size_t)g * (size_t)m->max_parts * (size_t)group + h;
            float top = -INFINITY;
            for (int p = 0; p < n_parts; p++) top = lse[(size_t)p * group] > top ? lse[(size_t)p * group] : top;
            double wsum = 0.0;
            float *out = m->att + (size_t)(g * group + h) * (size_t)hd;
            memset(out, 0, (size_t)hd * sizeof(float));
            for (int p = 0; p < n_parts; p++) {
                const float w = expf(lse[(size_t)p * group] - top);
                const float *o = m->part_out + (((size_t)g * (size_t)m->max_parts + (size_t)p) * (size_t)group + h) * hd;
                wsum += w;
                for (int i = 0; i < hd; i++) out[i] += w * o[i];
            }
            const float inv = (float)(1.0 / wsum);
            for (int i = 0; i < hd; i++) out[i] *= inv;
        }
}

static void stage_task(void *ctx, int ith, int nth) {
    block_job *j = ctx;
    const int n = stage_items(j);
    /* causal attention grows with the row: dealing (row, head) pairs round-robin evens it out */
    if (j->stage == STAGE_ATTN) {
        rows_stage(j, ith, n, nth, ith);
        return;
    }
    const int r0 = (int)((int64_t)n * ith / nth), r1 = (int)((int64_t)n * (ith + 1) / nth);
    if (r0 < r1) rows_stage(j, r0, r1, 1, ith);
}

/* Below this many multiply-adds a stage costs less than waking the pool. */
#define STAGE_MIN_PARALLEL_MACS 65536

static void run_stage(block_job *j, int stage) {
    j->stage = stage;
    const fc_llama_config *c = &j->m->c;
    const int n = stage_items(j);
    int nth = c->threads;
    if (nth > n) nth = n;
    int64_t macs;
    if (stage == STAGE_ATTN && j->rpos) { /* independent rows: each sees its own positions */
        int64_t pos = 0;
        for (int i = 0; i < j->nb; i++) pos += j->rpos[i] + 1;
        macs = 2 * (int64_t)c->n_heads * c->head_dim * pos;
    } else if (stage == STAGE_ATTN) /* q.k and p.v over the positions each row sees */
        macs = 2 * (int64_t)c->n_heads * c->head_dim * j->nb * (j->pos0 + (j->nb + 1) / 2);
    else
        macs = (int64_t)j->nb * (stage == STAGE_SILU ? c->hidden : c->dim + 2 * j->m->q_dim);
    if (nth <= 1 || macs < STAGE_MIN_PARALLEL_MACS) rows_stage(j, 0, n, 1, 0);
    else if (stage == STAGE_ATTN && n >= nth * ATTN_CHUNKS_PER_THREAD)
        /* causal rows grow with their position: many chunks, claimed as threads come free,
         * keep the threads even where two static halves would give one of them 3/4 of it */
        fc_parallel_chunks(nth, nth * ATTN_CHUNKS_PER_THREAD, stage_task, j);
    else fc_parallel(nth, stage_task, j);
}

static int block_forward(fc_llama *m, const int32_t *tokens, int nb, int pos0, float *logits, int logits_mode,
                         const int32_t *rpos, const int32_t *rseq, int seq_ctx, const uint8_t *want) {
    const fc_llama_config *c = &m->c;
    const fc_table *tab = fc_tab();
    const int64_t dim = c->dim;
    const int th = c->threads;
    block_job j = {.m = m, .nb = nb, .pos0 = pos0, .rpos = rpos, .rseq = rseq, .seq_ctx = seq_ctx, .parts = 1};
    if (nb == 1 && row_pos(&j, 0) + 1 > ATTN_SPLIT_POS) j.parts = (row_pos(&j, 0) + ATTN_SPLIT_POS) / ATTN_SPLIT_POS;
    int rc;

    for (int i = 0; i < nb; i++) {
        if (m->src.embd_row) {
            if ((rc = m->src.embd_row(m->src.ctx, tokens[i], m->x + i * dim, dim))) return rc;
        } else {
            tab->q[m->embd.qtype].dequantize((const uint8_t *)m->embd.data + (size_t)tokens[i] * m->embd_row_bytes,
                                             m->x + i * dim, dim);
        }
    }
    for (int i = 0; i < nb; i++) tab->ops.rmsnorm(m->xb + i * dim, m->x + i * dim, m->L[0].attn_norm, dim, c->rms_eps);

    for (int l = 0; l < c->n_layers; l++) {
        if (m->src.fetch && (rc = fetch_layer(m, l))) return rc;
        const layer_t *L = &m->L[l];
        j.L = L;
        j.layer = l;
        if (L->fused_qkv) {
            if (fc_gemm_w(&L->wqkv, m->xb, nb, m->qkv, th, m->work)) return -1;
            j.q = m->qkv;
            j.k = m->qkv + m->q_dim;
            j.v = m->qkv + m->q_dim + m->kv_dim;
            j.q_ld = j.k_ld = j.v_ld = m->q_dim + 2 * m->kv_dim;
        } else {
            j.q = m->qkv;
            j.k = m->qkv + (int64_t)nb * m->q_dim;
            j.v = j.k + (int64_t)nb * m->kv_dim;
            j.q_ld = m->q_dim;
            j.k_ld = j.v_ld = m->kv_dim;
            if (fc_gemm_w(&L->wqkv, m->xb, nb, j.q, th, m->work) || fc_gemm_w(&L->wk, m->xb, nb, j.k, th, m->work) ||
                fc_gemm_w(&L->wv, m->xb, nb, j.v, th, m->work))
                return -1;
        }
        run_stage(&j, STAGE_QKV);
        run_stage(&j, STAGE_ATTN);
        if (j.parts > 1) merge_parts(m, j.parts);
        if (fc_gemm_w(&L->wo, m->att, nb, m->y, th, m->work)) return -1;
        j.norm = L->ffn_norm;
        run_stage(&j, STAGE_ADD_NORM);

        if (L->fused_gu) {
            if (fc_gemm_w(&L->wgu, m->xb, nb, m->gu, th, m->work)) return -1;
            j.gate = m->gu;
            j.up = m->gu + c->hidden;
            j.g_ld = 2 * (int64_t)c->hidden;
        } else {
            j.gate = m->gu;
            j.up = m->gu + (int64_t)nb * c->hidden;
            j.g_ld = c->hidden;
            if (fc_gemm_w(&L->wgu, m->xb, nb, j.gate, th, m->work) ||
                fc_gemm_w(&L->wup, m->xb, nb, j.up, th, m->work))
                return -1;
        }
        run_stage(&j, STAGE_SILU);
        if (fc_gemm_w(&L->wdown, m->h, nb, m->y, th, m->work)) return -1;
        j.norm = l + 1 < c->n_layers ? m->L[l + 1].attn_norm : m->out_norm;
        run_stage(&j, STAGE_ADD_NORM);
    }
    /* xb now holds the final-normed rows */
    if (m->src.fetch && (rc = fetch_layer(m, c->n_layers))) return rc;
    if (logits_mode == FC_LOGITS_ALL && want) {
        /* only the wanted rows, moved to the front (ascending: a row never lands on one still needed) */
        int k = 0;
        for (int i = 0; i < nb; i++)
            if (want[i]) {
                if (k != i) memcpy(m->xb + k * dim, m->xb + i * dim, (size_t)dim * sizeof(float));
                k++;
            }
        if (k && fc_gemm_w(&m->out, m->xb, k, logits, th, m->work)) return -1;
    } else if (logits_mode == FC_LOGITS_ALL) {
        if (fc_gemm_w(&m->out, m->xb, nb, logits, th, m->work)) return -1;
    } else if (logits_mode == FC_LOGITS_LAST) {
        if (fc_gemm_w(&m->out, m->xb + (int64_t)(nb - 1) * dim, 1, logits, th, m->work)) return -1;
    }
    return 0;
}

/* Whole pages inside [p, p + bytes) leave the resident set (anonymous: they read back as zeros,
 * which nothing relies on; the allocation's own bookkeeping lies outside). */
static void drop_inside(void *p, size_t bytes) {
    const uintptr_t pg = 4096, a = ((uintptr_t)p + pg - 1) & ~(pg - 1), b = ((uintptr_t)p + bytes) & ~(pg - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

/* A step of at least this many rows hands its activation pages back when it ends: a prompt's
 * blocks touch all max_batch rows of them (SmolLM2 at 256 rows: 6 MB), which single-token decode
 * steps, run next and for long, would keep resident without using. Faulting them in again costs
 * the next long step well under 1% (a few thousand page faults against a 256-row GEMM pass). */
#define RELEASE_ROWS 32

static void release_activations(fc_llama *m) {
    drop_inside(m->x, m->x_bytes);
    drop_inside(m->xb, m->x_bytes);
    drop_inside(m->act, m->act_bytes);
    drop_inside(m->work, m->work_bytes);
}

int fc_llama_forward(fc_llama *m, const int32_t *tokens, int n_tokens, int pos, float *logits, int logits_mode) {
    const int B = m->c.max_batch;
    for (int b0 = 0; b0 < n_tokens; b0 += B) {
        const int nb = n_tokens - b0 < B ? n_tokens - b0 : B;
        const int last = b0 + nb == n_tokens;
        int mode = logits_mode == FC_LOGITS_ALL ? FC_LOGITS_ALL : (last ? logits_mode : FC_LOGITS_NONE);
        float *out = logits_mode == FC_LOGITS_ALL ? logits + (size_t)b0 * (size_t)m->c.n_vocab : logits;
        int rc = block_forward(m, tokens + b0, nb, pos + b0, out, mode, NULL, NULL, 0, NULL);
        if (rc) return rc;
    }
    if (n_tokens >= RELEASE_ROWS) release_activations(m);
    return 0;
}

int fc_llama_forward_rows(fc_llama *m, const int32_t *tokens, int n, const int32_t *pos, const int32_t *seq,
                          int seq_ctx, const uint8_t *want, float *logits) {
    const int B = m->c.max_batch;
    size_t out_row = 0;
    for (int b0 = 0; b0 < n; b0 += B) {
        const int nb = n - b0 < B ? n - b0 : B;
        int rc = block_forward(m, tokens + b0, nb, 0, logits + out_row * (size_t)m->c.n_vocab, FC_LOGITS_ALL,
                               pos + b0, seq + b0, seq_ctx, want ? want + b0 : NULL);
        if (rc) return rc;
        if (want) {
            for (int i = 0; i < nb; i++) out_row += want[b0 + i] != 0;
        } else {
            out_row += (size_t)nb;
        }
    }
    if (n >= RELEASE_ROWS) release_activations(m);
    return 0;
}
