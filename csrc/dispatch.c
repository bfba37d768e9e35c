/* Dispatch tables, format facts and the GEMM driver. Baseline x86-64 code: it only calls kernels
 * through the table of a level the CPU supports. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "fc_internal.h"

/* ---- formats ---- */
typedef struct {
    const char *name;
    int64_t block;  /* weights per block */
    int64_t bytes;  /* bytes per block */
} fc_format;

static const fc_format formats[FC_QTYPE_MAX] = {
    [FC_F32] = {"F32", 1, 4},         [FC_F16] = {"F16", 1, 2},
    [FC_BF16] = {"BF16", 1, 2},       [FC_Q4_0] = {"Q4_0", 32, 18},
    [FC_Q4_1] = {"Q4_1", 32, 20},     [FC_Q5_0] = {"Q5_0", 32, 22},
    [FC_Q5_1] = {"Q5_1", 32, 24},     [FC_Q8_0] = {"Q8_0", 32, 34},
    [FC_Q4_K] = {"Q4_K", 256, 144},   [FC_Q5_K] = {"Q5_K", 256, 176},
    [FC_Q6_K] = {"Q6_K", 256, 210},
};

static int known(int qtype) {
    return qtype >= 0 && qtype < FC_QTYPE_MAX && formats[qtype].name != NULL;
}
int64_t fc_block_size(int qtype) { return known(qtype) ? formats[qtype].block : 0; }
int64_t fc_type_size(int qtype) { return known(qtype) ? formats[qtype].bytes : 0; }
const char *fc_qtype_name(int qtype) { return known(qtype) ? formats[qtype].name : NULL; }

size_t fc_row_bytes(int qtype, int64_t cols) {
    if (!known(qtype) || cols <= 0 || cols % formats[qtype].block) return 0;
    return (size_t)(cols / formats[qtype].block) * (size_t)formats[qtype].bytes;
}

/* ---- tables ---- */
static fc_table tables[FC_ISA_COUNT];
static int table_ok[FC_ISA_COUNT];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

typedef void (*reg_fn)(fc_table *);
/* Registration functions per level, in the order they overlay each other. A registration function
 * is compiled with its level's flags, so it is only ever called for a level the CPU supports. */
static const struct { fc_isa isa; reg_fn fn; } regs[] = {
    {FC_ISA_SCALAR, fc_register_float_scalar},   {FC_ISA_SCALAR, fc_register_legacy_scalar},
    {FC_ISA_SCALAR, fc_register_kquant_scalar},  {FC_ISA_SCALAR, fc_register_ops_scalar},
    {FC_ISA_AVX2, fc_register_float_avx2},       {FC_ISA_AVX2, fc_register_legacy_avx2},
    {FC_ISA_AVX2, fc_register_kquant_avx2},      {FC_ISA_AVX2, fc_register_ops_avx2},
    {FC_ISA_AVX512, fc_register_float_avx512},   {FC_ISA_AVX512, fc_register_legacy_avx512},
    {FC_ISA_AVX512, fc_register_kquant_avx512},  {FC_ISA_AVX512, fc_register_ops_avx512},
    /* each fills its formats' stored-row (q) and packed (qp) entries, quantizer and kernel together */
    {FC_ISA_AVX512_VNNI, fc_register_legacyx16_avx512vnni},
    {FC_ISA_AVX512_VNNI, fc_register_kquantx16_avx512vnni},
    {FC_ISA_AVX512_BF16, fc_register_float_avx512bf16},
    {FC_ISA_AMX, fc_register_amx_amx},
    {FC_ISA_AMX_SIM, fc_register_amx_amxsim},
};

static void fill_level(fc_isa isa, const fc_table *base) {
    tables[isa] = *base;
    for (size_t i = 0; i < sizeof regs / sizeof regs[0]; i++)
        if (regs[i].isa == isa) regs[i].fn(&tables[isa]);
    table_ok[isa] = 1;
}

static void build_tables(void) {
    static const fc_table empty;
    const fc_isa chain[] = {FC_ISA_SCALAR, FC_ISA_AVX2, FC_ISA_AVX512, FC_ISA_AVX512_VNNI,
                            FC_ISA_AVX512_BF16, FC_ISA_AMX};
    const fc_table *base = &empty;
    fc_isa best = FC_ISA_SCALAR;
    for (size_t i = 0; i < sizeof chain / sizeof chain[0]; i++) {
        if (!fc_isa_supported(chain[i], NULL)) break;
        fill_level(chain[i], base);
        base = &tables[chain[i]];
        if (chain[i] != FC_ISA_AMX) best = chain[i];
    }
    /* the tile model runs on the best non-AMX level's kernels for everything it does not cover */
    fill_level(FC_ISA_AMX_SIM, &tables[best]);
}

const fc_table *fc_tab_for(fc_isa isa) {
    pthread_once(&tables_once, build_tables);
    if ((unsigned)isa >= FC_ISA_COUNT || !table_ok[isa]) return NULL;
    return &tables[isa];
}

static _Atomic int g_isa = -1;

fc_isa fc_isa_current(void) {
    int cur = atomic_load(&g_isa);
    if (cur >= 0) return (fc_isa)cur;
    fc_isa pick = fc_isa_best();
    const char *env = getenv("FASTCPU_ISA");
    if (env && *env) {
        int want = fc_isa_from_name(env);
        /* an unusable override is reported by the Python layer at import; C falls back */
        if (want >= 0 && fc_isa_supported((fc_isa)want, NULL)) pick = (fc_isa)want;
    }
    int expected = -1;
    atomic_compare_exchange_strong(&g_isa, &expected, (int)pick);
    return (fc_isa)atomic_load(&g_isa);
}

int fc_isa_set(fc_isa isa) {
    if (!fc_isa_supported(isa, NULL) || !fc_tab_for(isa)) return -1;
    atomic_store(&g_isa, (int)isa);
    return 0;
}

const fc_table *fc_tab(void) { return fc_tab_for(fc_isa_current()); }

int fc_qtype_supported(int qtype) {
    return known(qtype) && fc_tab()->q[qtype].gemm != NULL;
}

/* ---- GEMM driver ---- */
/* Guided row chunks in one GEMM (see run_gemm): at most this many, each at least this many row
 * alignment units (16 rows: short enough for a small tail, long enough that the prefetchers'
 * start-up per chunk stays small). */
#define FC_GEMM_MAX_CHUNKS 64
#define FC_GEMM_MIN_CHUNK_UNITS 2

int fc_default_threads(void) { return fc_cpu()->physical_cores; }

int fc_resolve_threads(int threads) {
    if (threads <= 0) threads = fc_default_threads();
    if (threads > 256) threads = 256;
    return threads;
}

const char *fc_gemm_check(int qtype, int64_t rows, int64_t cols, int64_t n, int threads) {
    if (!known(qtype)) return "unknown qtype";
    if (!fc_qtype_supported(qtype)) return "no kernel for this qtype";
    if (rows <= 0) return "rows must be positive";
    if (cols <= 0 || cols % formats[qtype].block) return "cols must be a positive multiple of the block size";
    if (n <= 0) return "n must be positive";
    if (threads > 256) return "threads must be at most 256";
    return NULL;
}

/* Like fc_gemm_check for fc_weight_prepare: a format may have only a packed kernel. */
const char *fc_weight_check(int qtype, int64_t rows, int64_t cols) {
    if (!known(qtype)) return "unknown qtype";
    const fc_table *t = fc_tab();
    if (!t->q[qtype].gemm && !t->qp[qtype].gemm) return "no kernel for this qtype";
    if (rows <= 0) return "rows must be positive";
    if (cols <= 0 || cols % formats[qtype].block) return "cols must be a positive multiple of the block size";
    return NULL;
}

int fc_amx_min_rows = FC_AMX_MIN_ROWS;
void fc_amx_set_min_rows(int n) { fc_amx_min_rows = n < 1 ? 1 : n; }
int fc_amx_get_min_rows(void) { return fc_amx_min_rows; }

static size_t act_stride(const fc_qkernel *k, int64_t cols) {
    return (k->act_row_bytes(cols) + FC_ALIGN - 1) & ~(size_t)(FC_ALIGN - 1);
}

size_t fc_gemm_work_bytes(int qtype, int64_t cols, int64_t n) {
    return act_stride(&fc_tab()->q[qtype], cols) * (size_t)n;
}

typedef struct {
    const fc_qkernel *kern;
    fc_gemm_args a;
    const float *x;
    int64_t rows;
    int64_t chunk; /* rows per chunk (uniform chunks), or 0: bounds[] */
    int64_t *bounds; /* first row of chunk i, bounds[nchunks] = rows (guided chunks) */
    const fc_weight *seg; /* segmented weight, or NULL */
} gemm_job;

static void quantize_task(void *ctx, int ith, int nth) {
    gemm_job *j = ctx;
    for (int64_t r = ith; r < j->a.n; r += nth)
        j->kern->quantize(j->x + r * j->a.k, (uint8_t *)j->a.xq + r * j->a.xq_row_bytes, j->a.k);
}

static void gemm_task(void *ctx, int ith, int nth) {
    (void)nth;
    gemm_job *j = ctx;
    int64_t r0 = j->bounds ? j->bounds[ith] : (int64_t)ith * j->chunk;
    int64_t r1 = j->bounds ? j->bounds[ith + 1] : r0 + j->chunk;
    if (r1 > j->rows) r1 = j->rows;
    if (r0 >= r1) return;
    if (!j->seg) {
        j->kern->gemm(&j->a, r0, r1);
        return;
    }
    /* each segment's part of the chunk as a product of its own: rows counted from the segment's
     * start, outputs shifted to its first row (the same kernel call per row, so the same bits) */
    const fc_weight *w = j->seg;
    for (int s = 0; s < w->nseg; s++) {
        const int64_t s0 = w->seg_row0[s], s1 = w->seg_row0[s + 1];
        const int64_t a = r0 > s0 ? r0 : s0, b = r1 < s1 ? r1 : s1;
        if (a >= b) continue;
        fc_gemm_args sa = j->a;
        sa.w = w->seg_data[s];
        sa.y = j->a.y + s0;
        j->kern->gemm(&sa, a - s0, b - s0);
    }
}

static void gemm_task_all(gemm_job *j, int nchunks) {
    for (int i = 0; i < nchunks; i++) gemm_task(j, i, nchunks);
}

static int run_gemm(const fc_qkernel *kern, const void *w, const void *w_raw, size_t w_row_bytes, int64_t rows,
                    int64_t cols, const float *x, int64_t n, float *y, int threads, void *work,
                    const fc_weight *seg) {
    int nth = fc_resolve_threads(threads);
    void *own = NULL;
    if (!work) {
        if (posix_memalign(&own, FC_ALIGN, act_stride(kern, cols) * (size_t)n + FC_ALIGN)) return -1;
        work = own;
    }
    gemm_job j;
    j.kern = kern;
    j.x = x;
    j.rows = rows;
    j.a.w = w;
    j.a.w_row_bytes = w_row_bytes;
    j.a.k = cols;
    j.a.xq = work;
    j.a.xq_row_bytes = act_stride(kern, cols);
    j.a.n = n;
    j.a.y = y;
    j.a.ldy = rows;
    j.a.w_raw = w_raw;
    j.seg = seg;

    /* Rows go out in contiguous chunks (a multiple of the kernel's row alignment, 16 by default:
     * the AMX tile height), claimed by threads as they come free, so a thread the host descheduled
     * for a while (a busy machine) or that runs slower costs the others only its last chunk, not
     * its whole share. Chunk sizes are guided: each is 1/(2 nth) of the rows still unassigned
     * (not less than FC_GEMM_MIN_CHUNK_UNITS units), so the first chunks are long sequential
     * streams and the last ones short: the threads finish within a short chunk of each other
     * (uniform chunks of 1/(4 nth) left the first thread done waiting up to 1/8 of a 2-thread
     * GEMV, measured as ~6% of decode time spinning). Too few rows to share and one thread
     * streams them all. */
    const int64_t align = kern->row_align > 0 ? kern->row_align : 16;
    const int64_t units = (rows + align - 1) / align;
    int64_t bounds[FC_GEMM_MAX_CHUNKS + 1];
    int nchunks = 0;
    bounds[0] = 0;
    if (nth > 1) {
        int64_t done = 0;
        while (done < units && nchunks < FC_GEMM_MAX_CHUNKS - 1) {
            int64_t c = (units - done + 2 * nth - 1) / (2 * nth);
            if (c < FC_GEMM_MIN_CHUNK_UNITS) c = FC_GEMM_MIN_CHUNK_UNITS;
            if (c > units - done) c = units - done;
            done += c;
            bounds[++nchunks] = done * align;
        }
        if (done < units) bounds[++nchunks] = units * align;
    } else {
        bounds[++nchunks] = units * align;
    }
    bounds[nchunks] = rows;
    j.chunk = 0;
    j.bounds = bounds;
    if (nth > nchunks) nth = nchunks;

    if (n >= 4 && nth > 1) fc_parallel(nth, quantize_task, &j);
    else quantize_task(&j, 0, 1);
    if (nth > 1) fc_parallel_chunks(nth, nchunks, gemm_task, &j);
    else gemm_task_all(&j, nchunks);
    free(own);
    return 0;
}

int fc_gemm(int qtype, const void *w, int64_t rows, int64_t cols, const float *x, int64_t n,
            float *y, int threads, void *work) {
    return run_gemm(&fc_tab()->q[qtype], w, NULL, fc_row_bytes(qtype, cols), rows, cols, x, n, y, threads, work,
                    NULL);
}

/* A repacked copy is streamed once per token: 2 MiB pages where the kernel gives them spare the
 * TLB misses of 4 KiB pages (the file's page cache, and fc_membw, get large pages too). */
static int alloc_packed(void **p, size_t bytes) {
    const size_t huge = 2u << 20;
    if (bytes >= huge) {
        if (posix_memalign(p, huge, (bytes + huge - 1) & ~(huge - 1))) return -1;
        madvise(*p, bytes, MADV_HUGEPAGE);
        return 0;
    }
    return posix_memalign(p, FC_ALIGN, bytes) ? -1 : 0;
}

static void weight_init(fc_weight *w, const fc_qkernel *k, int qtype, const void *src, int64_t rows, int64_t cols) {
    memset(w, 0, sizeof *w);
    w->qtype = qtype;
    w->isa = (int)fc_isa_current();
    w->rows = rows;
    w->cols = cols;
    w->row_bytes = fc_row_bytes(qtype, cols);
    w->kernel = k;
    w->layout = k->layout;
    w->data = src;
    w->src = src;
}

/* Packs runs of GGUF rows one after the other into one owned copy (one run, or the runs of a
 * pack_segments kernel: packed_bytes is additive over them). */
static int pack_runs(fc_weight *w, const fc_qkernel *k, const void *const *data, const int64_t *rows, int nseg) {
    const size_t nb = k->packed_bytes(w->rows, w->cols);
    if (alloc_packed(&w->owned, nb)) return -1;
    size_t off = 0;
    for (int s = 0; s < nseg; s++) {
        k->pack(data[s], w->row_bytes, rows[s], w->cols, (uint8_t *)w->owned + off);
        off += k->packed_bytes(rows[s], w->cols);
    }
    w->owned_bytes = nb;
    w->data = w->owned;
    return 0;
}

int fc_weight_prepare(fc_weight *w, int qtype, const void *data, int64_t rows, int64_t cols) {
    const fc_table *t = fc_tab();
    const fc_qkernel *k = t->qp[qtype].gemm ? &t->qp[qtype] : &t->q[qtype];
    weight_init(w, k, qtype, data, rows, cols);
    if (!k->gemm) return -2;
    return k->layout != 0 ? pack_runs(w, k, &data, &rows, 1) : 0;
}

int fc_weight_prepare_segments(fc_weight *w, int qtype, const void *const *data, const int64_t *rows, int nseg,
                               int64_t cols) {
    const fc_table *t = fc_tab();
    memset(w, 0, sizeof *w);
    if (nseg < 1 || nseg > FC_WEIGHT_MAX_SEGS) return -2;
    int64_t total = 0;
    for (int s = 0; s < nseg; s++) total += rows[s];
    const fc_qkernel *pk = &t->qp[qtype];
    if (pk->gemm && pk->layout != 0) {
        /* a packed layout: pack each run into its place, if the kernel allows it and every run
         * but the last fills whole row groups; else the caller concatenates */
        const int64_t align = pk->row_align > 0 ? pk->row_align : 16;
        int ok = pk->pack_segments;
        for (int s = 0; s + 1 < nseg; s++) ok &= rows[s] % align == 0;
        if (!ok) return -3;
        weight_init(w, pk, qtype, data[0], total, cols);
        return pack_runs(w, pk, data, rows, nseg);
    }
    int rc = fc_weight_prepare(w, qtype, data[0], total, cols);
    if (rc) return rc;
    if (w->layout != 0) { /* cannot happen (checked above), but never read segments through a packed kernel */
        fc_weight_release(w);
        return -3;
    }
    w->nseg = nseg;
    for (int s = 0; s < nseg; s++) {
        w->seg_data[s] = data[s];
        w->seg_row0[s + 1] = w->seg_row0[s] + rows[s];
    }
    return 0;
}

void fc_weight_release(fc_weight *w) {
    free(w->owned);
    memset(w, 0, sizeof *w);
}

size_t fc_gemm_w_work_bytes(const fc_weight *w, int64_t n) {
    return act_stride(w->kernel, w->cols) * (size_t)n;
}

int fc_gemm_w(const fc_weight *w, const float *x, int64_t n, float *y, int threads, void *work) {
    return run_gemm(w->kernel, w->data, w->layout ? w->src : NULL, w->row_bytes, w->rows, w->cols, x, n, y, threads, work,
                    w->nseg ? w : NULL);
}

void fc_dequantize(int qtype, const void *src, float *dst, int64_t n) {
    fc_tab()->q[qtype].dequantize(src, dst, n);
}

/* ---- memory bandwidth yardstick ---- */
typedef struct {
    float *buf;
    int64_t n;
    double sums[256];
} membw_job;

static void span(int64_t n, int ith, int nth, int64_t *a, int64_t *b) {
    int64_t per = (n / nth + 15) & ~(int64_t)15;
    *a = per * ith;
    *b = ith == nth - 1 ? n : per * (ith + 1);
    if (*a > n) *a = n;
    if (*b > n) *b = n;
}

static void touch_task(void *ctx, int ith, int nth) {
    membw_job *j = ctx;
    int64_t a, b;
    span(j->n, ith, nth, &a, &b);
    for (int64_t i = a; i < b; i++) j->buf[i] = (float)(i & 7) * 0.125f;
}

static void read_task(void *ctx, int ith, int nth) {
    membw_job *j = ctx;
    int64_t a, b;
    span(j->n, ith, nth, &a, &b);
    j->sums[ith] = fc_tab()->ops.sum_read(j->buf + a, b - a);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double fc_membw(size_t bytes, int threads, int passes) {
    int nth = fc_resolve_threads(threads);
    if (passes < 1) passes = 1;
    const size_t huge = 2u << 20;
    bytes = (bytes + huge - 1) & ~(huge - 1);
    void *p = NULL;
    if (posix_memalign(&p, huge, bytes)) return -1.0;
    madvise(p, bytes, MADV_HUGEPAGE);
    membw_job j = {.buf = p, .n = (int64_t)(bytes / sizeof(float))};
    fc_parallel(nth, touch_task, &j);
    if (passes > 63) passes = 63;
    double bw[64], sink = 0.0;
    for (int it = 0; it < passes; it++) {
        double t0 = now_s();
        fc_parallel(nth, read_task, &j);
        double dt = now_s() - t0;
        for (int i = 0; i < nth; i++) sink += j.sums[i];
        bw[it] = (double)bytes / dt;
    }
    free(p);
    /* median: single passes swing with other tenants of the host */
    for (int a = 1; a < passes; a++)
        for (int b = a; b > 0 && bw[b - 1] > bw[b]; b--) { double t = bw[b]; bw[b] = bw[b - 1]; bw[b - 1] = t; }
    /* sink keeps the reads from being optimised away */
    return sink == -1.0 ? 0.0 : bw[passes / 2];
}
