/* Streaming weights from the model file: pinned tensors read once, the rest read every pass by a
 * pool of pread threads into a ring of buffers, `depth - 1` groups ahead of the one computing.
 *
 * Why pread and not the mmap: pages faulted in through a mapping stay in the page cache (and in
 * the process's RSS while mapped), so a model larger than memory would evict itself page by page
 * with a fault per 4 KiB; explicit reads of whole tensors keep the disk queue full with large
 * requests and leave memory use at what this module allocated. With O_DIRECT the reads bypass the
 * page cache altogether: buffers, file offsets and lengths are 4096-aligned, so a tensor (whose
 * offset GGUF aligns to 32 bytes only) is read as the aligned superset and pointed into. Buffered
 * mode drops each chunk from the page cache after reading it (POSIX_FADV_DONTNEED).
 *
 * Tensors of a group that lie close together in the file (a layer's matrices, with its norms in
 * between) are read as one span, so a layer is a few large sequential requests cut into `chunk`
 * bytes each, spread over the readers.
 */
#define _GNU_SOURCE
#include "model/stream.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fc_internal.h"

#define PAGE 4096u
#define SPAN_GAP (256u * 1024u) /* tensors closer than this are read as one span */
#define MAX_SPANS (2 * FC_STREAM_MAX_PER_GROUP)

static uint64_t down(uint64_t x) { return x & ~(uint64_t)(PAGE - 1); }
static uint64_t up(uint64_t x) { return (x + PAGE - 1) & ~(uint64_t)(PAGE - 1); }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    uint64_t file_off, len; /* what is read (aligned when direct) */
    uint64_t need;          /* bytes from file_off that must arrive (past them: EOF is fine) */
    size_t dst_off;         /* where in the slot */
} span_t;

typedef struct {
    int n_spans;
    span_t spans[MAX_SPANS];
    size_t slot_bytes;
    size_t off_in_slot[FC_STREAM_MAX_PER_GROUP]; /* streamed tensors */
    const void *pinned[FC_STREAM_MAX_PER_GROUP];  /* pinned tensors */
    int is_streamed[FC_STREAM_MAX_PER_GROUP];
    int order; /* index among the streamed groups, -1: fully pinned */
} group_t;

typedef struct {
    int pending; /* requests not done */
    int err;     /* first errno (EIO for short reads) */
    int short_read;
} completion;

typedef struct {
    completion *c;
    uint8_t *dst;
    uint64_t off, len, need;
} req_t;

typedef struct {
    uint8_t *buf;
    int64_t seq;
    completion c;
} slot_t;

struct fc_stream {
    fc_stream_config cfg;
    char *path;
    int fd;
    int direct;
    struct stat st0; /* the file as opened */
    group_t *groups;
    int n_streamed;  /* groups with streamed tensors */
    int depth;
    size_t slot_bytes;
    uint8_t *ring;
    slot_t *slots;
    uint8_t *pinned_mem;
    size_t pinned_bytes;
    uint8_t *bounce; /* embedding rows */
    size_t bounce_bytes;
    const uint8_t *embd_pinned;

    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    req_t *q;
    size_t q_cap, q_head, q_len;
    int stop;
    pthread_t *threads;
    int n_threads;

    int64_t next_seq, submitted;
    _Atomic uint64_t bytes_read;
    double wait_s;
    uint64_t passes;

    int failed, fail_errno, fail_changed;
    char msg[512];
    _Atomic int inject; /* tests: the next read fails with this errno */
};

static void set_fail(fc_stream *s, int err_no, int changed, const char *fmt, const char *detail) {
    if (s->failed) return;
    s->failed = 1;
    s->fail_errno = err_no;
    s->fail_changed = changed;
    snprintf(s->msg, sizeof s->msg, fmt, s->path, detail);
}

/* Reads [off, off+len) into dst; fewer than `need` bytes (EOF) is a short read. */
static int read_range(int fd, uint8_t *dst, uint64_t off, uint64_t len, uint64_t need, int *short_read) {
    uint64_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, dst + done, (size_t)(len - done), (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (r == 0) break;
        done += (uint64_t)r;
        /* O_DIRECT reads at EOF come back short of a page multiple; the next one returns 0 */
    }
    if (done < need) {
        *short_read = 1;
        return EIO;
    }
    return 0;
}

static void *reader(void *arg) {
    fc_stream *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->q_len && !s->stop) pthread_cond_wait(&s->cv_work, &s->mu);
        if (!s->q_len && s->stop) {
            pthread_mutex_unlock(&s->mu);
            return NULL;
        }
        req_t r = s->q[s->q_head];
        s->q_head = (s->q_head + 1) % s->q_cap;
        s->q_len--;
        pthread_mutex_unlock(&s->mu);

        int short_read = 0;
        int err = atomic_exchange(&s->inject, 0);
        if (!err) err = read_range(s->fd, r.dst, r.off, r.len, r.need, &short_read);
        if (!err) {
            atomic_fetch_add(&s->bytes_read, r.len);
            if (!s->direct) posix_fadvise(s->fd, (off_t)r.off, (off_t)r.len, POSIX_FADV_DONTNEED);
        }
        pthread_mutex_lock(&s->mu);
        if (err && !r.c->err) {
            r.c->err = err;
            r.c->short_read = short_read;
        }
        if (--r.c->pending == 0) pthread_cond_broadcast(&s->cv_done);
        pthread_mutex_unlock(&s->mu);
    }
}

/* Queues the spans of one read into dst; the caller holds mu. */
static int enqueue_spans(fc_stream *s, const span_t *sp, int n, uint8_t *base, completion *c) {
    const uint64_t chunk = s->cfg.chunk;
    for (int i = 0; i < n; i++) {
        for (uint64_t o = 0; o < sp[i].len; o += chunk) {
            if (s->q_len == s->q_cap) {
                size_t cap = s->q_cap * 2;
                req_t *q = malloc(cap * sizeof *q);
                if (!q) return ENOMEM;
                for (size_t k = 0; k < s->q_len; k++) q[k] = s->q[(s->q_head + k) % s->q_cap];
                free(s->q);
                s->q = q;
                s->q_cap = cap;
                s->q_head = 0;
            }
            req_t *r = &s->q[(s->q_head + s->q_len) % s->q_cap];
            r->c = c;
            r->dst = base + sp[i].dst_off + o;
            r->off = sp[i].file_off + o;
            r->len = sp[i].len - o < chunk ? sp[i].len - o : chunk;
            r->need = sp[i].need > o ? (sp[i].need - o < r->len ? sp[i].need - o : r->len) : 0;
            s->q_len++;
            c->pending++;
        }
    }
    pthread_cond_broadcast(&s->cv_work);
    return 0;
}

/* Spans covering tensors idx[0..n) (sorted by offset) and where each lands in the buffer. */
static int make_spans(const fc_stream_tensor *t, const int *idx, int n, int direct, span_t *sp, size_t *dst_of,
                      size_t *total) {
    int ns = 0;
    size_t pos = 0;
    for (int k = 0; k < n; k++) {
        const fc_stream_tensor *x = &t[idx[k]];
        uint64_t a = direct ? down(x->off) : x->off, e = direct ? up(x->off + x->bytes) : x->off + x->bytes;
        if (ns && a <= sp[ns - 1].file_off + sp[ns - 1].len + SPAN_GAP && ns <= MAX_SPANS) {
            span_t *p = &sp[ns - 1];
            if (e > p->file_off + p->len) {
                pos += e - (p->file_off + p->len);
                p->len = e - p->file_off;
            }
            if (x->off + x->bytes - p->file_off > p->need) p->need = x->off + x->bytes - p->file_off;
        } else {
            pos = up(pos);
            sp[ns].file_off = a;
            sp[ns].len = e - a;
            sp[ns].need = x->off + x->bytes - a;
            sp[ns].dst_off = pos;
            pos += e - a;
            ns++;
        }
        dst_of[k] = sp[ns - 1].dst_off + (x->off - sp[ns - 1].file_off);
    }
    *total = up(pos);
    return ns;
}

static void sort_idx(const fc_stream_tensor *t, int *idx, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && t[idx[j]].off < t[idx[j - 1]].off; j--) {
            int tmp = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = tmp;
        }
}

size_t fc_stream_group_slot_bytes(const fc_stream_tensor *t, int n, int direct) {
    int idx[FC_STREAM_MAX_PER_GROUP], m = 0;
    for (int i = 0; i < n && i < FC_STREAM_MAX_PER_GROUP; i++)
        if (t[i].bytes && !t[i].pinned) idx[m++] = i;
    if (!m) return 0;
    sort_idx(t, idx, m);
    span_t sp[MAX_SPANS + 1];
    size_t dst[FC_STREAM_MAX_PER_GROUP], total;
    make_spans(t, idx, m, direct, sp, dst, &total);
    return total;
}

static int open_file(const char *path, int *direct) {
    int fd = -1;
    if (*direct) {
        fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
        if (fd < 0 && errno == EINVAL) *direct = 0; /* file system without O_DIRECT (tmpfs) */
        else if (fd < 0) return -1;
    }
    if (fd < 0) fd = open(path, O_RDONLY | O_CLOEXEC);
    return fd;
}

static void submit(fc_stream *s, int64_t seq) {
    const int j = (int)(seq % s->n_streamed);
    int g = 0;
    while (s->groups[g].order != j) g++;
    slot_t *sl = &s->slots[seq % s->depth];
    sl->seq = seq;
    memset(&sl->c, 0, sizeof sl->c);
    if (enqueue_spans(s, s->groups[g].spans, s->groups[g].n_spans, sl->buf, &sl->c)) sl->c.err = ENOMEM;
}

fc_stream *fc_stream_open(const fc_stream_config *cfg, char *err, size_t err_len, int *err_no) {
    *err_no = 0;
    if (cfg->per_group < 1 || cfg->per_group > FC_STREAM_MAX_PER_GROUP || cfg->n_groups < 1 || cfg->depth < 2 ||
        cfg->readers < 1 || cfg->chunk < PAGE || cfg->chunk % PAGE) {
        snprintf(err, err_len, "bad stream configuration");
        return NULL;
    }
    fc_stream *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->cfg = *cfg;
    s->fd = -1;
    s->depth = cfg->depth;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv_work, NULL);
    pthread_cond_init(&s->cv_done, NULL);
    s->path = strdup(cfg->path);
    s->groups = calloc((size_t)cfg->n_groups, sizeof *s->groups);
    s->q_cap = 256;
    s->q = malloc(s->q_cap * sizeof *s->q);
    if (!s->path || !s->groups || !s->q) goto oom;
    s->direct = cfg->direct;
    s->fd = open_file(cfg->path, &s->direct);
    if (s->fd < 0 || fstat(s->fd, &s->st0)) {
        *err_no = errno;
        snprintf(err, err_len, "cannot open model file %s: %s", cfg->path, strerror(errno));
        fc_stream_close(s);
        return NULL;
    }
    const int P = cfg->per_group;
    for (int i = 0; i < cfg->n_groups * P; i++) {
        const fc_stream_tensor *x = &cfg->t[i];
        if (x->bytes && x->off + x->bytes > (uint64_t)s->st0.st_size) {
            snprintf(err, err_len, "model file %s is truncated: a tensor ends at byte %llu of %llu", cfg->path,
                     (unsigned long long)(x->off + x->bytes), (unsigned long long)s->st0.st_size);
            fc_stream_close(s);
            return NULL;
        }
    }

    /* pinned tensors: one block, each tensor's aligned superset read into it */
    int n_pin = 0;
    int *pin_idx = malloc(sizeof(int) * (size_t)(cfg->n_groups * P));
    if (!pin_idx) goto oom;
    for (int i = 0; i < cfg->n_groups * P; i++)
        if (cfg->t[i].bytes && cfg->t[i].pinned) pin_idx[n_pin++] = i;
    size_t pin_total = 0;
    for (int k = 0; k < n_pin; k++) {
        const fc_stream_tensor *x = &cfg->t[pin_idx[k]];
        pin_total += s->direct ? up(x->off + x->bytes) - down(x->off) : up(x->bytes);
    }
    if (pin_total) {
        s->pinned_mem = mmap(NULL, pin_total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (s->pinned_mem == MAP_FAILED) {
            s->pinned_mem = NULL;
            free(pin_idx);
            goto oom;
        }
        madvise(s->pinned_mem, pin_total, MADV_HUGEPAGE);
        s->pinned_bytes = pin_total;
    }

    /* ring: one slot holds the largest group's streamed tensors */
    for (int g = 0; g < cfg->n_groups; g++) {
        group_t *G = &s->groups[g];
        const fc_stream_tensor *t = cfg->t + (size_t)g * P;
        int idx[FC_STREAM_MAX_PER_GROUP], m = 0;
        for (int i = 0; i < P; i++)
            if (t[i].bytes && !t[i].pinned) idx[m++] = i;
        G->order = -1;
        if (!m) continue;
        sort_idx(t, idx, m);
        size_t dst[FC_STREAM_MAX_PER_GROUP];
        G->n_spans = make_spans(t, idx, m, s->direct, G->spans, dst, &G->slot_bytes);
        for (int k = 0; k < m; k++) {
            G->off_in_slot[idx[k]] = dst[k];
            G->is_streamed[idx[k]] = 1;
        }
        G->order = s->n_streamed++;
        if (G->slot_bytes > s->slot_bytes) s->slot_bytes = G->slot_bytes;
    }
    if (s->n_streamed) {
        s->ring = mmap(NULL, s->slot_bytes * (size_t)s->depth, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        s->slots = calloc((size_t)s->depth, sizeof *s->slots);
        if (s->ring == MAP_FAILED || !s->slots) {
            if (s->ring == MAP_FAILED) s->ring = NULL;
            free(pin_idx);
            goto oom;
        }
        for (int d = 0; d < s->depth; d++) {
            s->slots[d].buf = s->ring + (size_t)d * s->slot_bytes;
            s->slots[d].seq = -1;
        }
    }
    s->bounce_bytes = up(cfg->embd_row_bytes) + 2 * PAGE;
    if (posix_memalign((void **)&s->bounce, PAGE, s->bounce_bytes)) {
        s->bounce = NULL;
        free(pin_idx);
        goto oom;
    }

    s->threads = calloc((size_t)cfg->readers, sizeof *s->threads);
    if (!s->threads) {
        free(pin_idx);
        goto oom;
    }
    for (int i = 0; i < cfg->readers; i++) {
        if (pthread_create(&s->threads[i], NULL, reader, s)) break;
        s->n_threads++;
    }
    if (!s->n_threads) {
        free(pin_idx);
        snprintf(err, err_len, "could not start reader threads");
        fc_stream_close(s);
        return NULL;
    }

    /* read the pinned tensors with the pool */
    completion pc = {0};
    size_t pos = 0;
    pthread_mutex_lock(&s->mu);
    for (int k = 0; k < n_pin; k++) {
        const int i = pin_idx[k];
        const fc_stream_tensor *x = &cfg->t[i];
        span_t sp;
        sp.file_off = s->direct ? down(x->off) : x->off;
        sp.len = s->direct ? up(x->off + x->bytes) - sp.file_off : x->bytes;
        sp.need = x->off + x->bytes - sp.file_off;
        sp.dst_off = 0;
        if (enqueue_spans(s, &sp, 1, s->pinned_mem + pos, &pc)) pc.err = ENOMEM;
        s->groups[i / P].pinned[i % P] = s->pinned_mem + pos + (x->off - sp.file_off);
        if (cfg->embd_alias == i) s->embd_pinned = s->pinned_mem + pos + (x->off - sp.file_off);
        pos += s->direct ? sp.len : up(sp.len);
    }
    while (pc.pending) pthread_cond_wait(&s->cv_done, &s->mu);
    pthread_mutex_unlock(&s->mu);
    free(pin_idx);
    if (pc.err) {
        *err_no = pc.err;
        snprintf(err, err_len, "reading model file %s: %s", cfg->path,
                 pc.short_read ? "unexpected end of file (truncated?)" : strerror(pc.err));
        fc_stream_close(s);
        return NULL;
    }
    atomic_store(&s->bytes_read, 0);

    /* prime the ring */
    if (s->n_streamed) {
        pthread_mutex_lock(&s->mu);
        for (; s->submitted < s->depth; s->submitted++) submit(s, s->submitted);
        pthread_mutex_unlock(&s->mu);
    }
    return s;
oom:
    *err_no = ENOMEM;
    snprintf(err, err_len, "out of memory setting up weight streaming");
    fc_stream_close(s);
    return NULL;
}

void fc_stream_close(fc_stream *s) {
    if (!s) return;
    if (s->n_threads) {
        pthread_mutex_lock(&s->mu);
        s->q_len = 0; /* queued reads are dropped; running ones finish */
        s->stop = 1;
        pthread_cond_broadcast(&s->cv_work);
        pthread_mutex_unlock(&s->mu);
        for (int i = 0; i < s->n_threads; i++) pthread_join(s->threads[i], NULL);
    }
    if (s->fd >= 0) close(s->fd);
    if (s->ring) munmap(s->ring, s->slot_bytes * (size_t)s->depth);
    if (s->pinned_mem) munmap(s->pinned_mem, s->pinned_bytes);
    free(s->bounce);
    free(s->slots);
    free(s->threads);
    free(s->q);
    free(s->groups);
    free(s->path);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv_work);
    pthread_cond_destroy(&s->cv_done);
    free(s);
}

static int same_file(const struct stat *a, const struct stat *b) {
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static int check_file(fc_stream *s, int by_path) {
    struct stat st;
    if (fstat(s->fd, &st)) {
        set_fail(s, errno, 0, "model file %s: %s", strerror(errno));
        return -2;
    }
    if (!same_file(&st, &s->st0)) {
        set_fail(s, 0, 1, "model file %s changed on disk while in use (%s); reload the model",
                 st.st_size != s->st0.st_size ? "size changed" : "modified");
        return -2;
    }
    if (by_path) {
        if (stat(s->path, &st)) {
            set_fail(s, 0, 1, "model file %s changed on disk while in use (%s); reload the model",
                     "removed or renamed");
            return -2;
        }
        if (!same_file(&st, &s->st0)) {
            set_fail(s, 0, 1, "model file %s changed on disk while in use (%s); reload the model", "replaced");
            return -2;
        }
    }
    return 0;
}

int fc_stream_fetch(fc_stream *s, int g, const void **ptrs) {
    if (s->failed) return -2;
    const group_t *G = &s->groups[g];
    const int P = s->cfg.per_group;
    for (int i = 0; i < P; i++) ptrs[i] = G->pinned[i];
    if (G->order < 0) return 0;
    const int S = s->n_streamed;
    pthread_mutex_lock(&s->mu);
    if (s->next_seq % S != G->order) {
        /* out of order (a pass cut short by an error): let the reads in flight land, restart at g */
        for (int d = 0; d < s->depth; d++)
            while (s->slots[d].c.pending) pthread_cond_wait(&s->cv_done, &s->mu);
        int64_t seq = s->submitted + ((G->order - s->submitted % S) + S) % S;
        s->next_seq = s->submitted = seq;
    }
    const int64_t seq = s->next_seq;
    /* the slot of seq - 1 is free now: keep depth groups requested */
    for (; s->submitted < seq + s->depth; s->submitted++) submit(s, s->submitted);
    slot_t *sl = &s->slots[seq % s->depth];
    double t0 = now_s();
    while (sl->c.pending) pthread_cond_wait(&s->cv_done, &s->mu);
    s->wait_s += now_s() - t0;
    int err = sl->c.err, short_read = sl->c.short_read;
    s->next_seq = seq + 1;
    pthread_mutex_unlock(&s->mu);
    if (err) {
        if (short_read) set_fail(s, 0, 1, "model file %s changed on disk while in use (%s); reload the model",
                                 "truncated: a read came back short");
        else set_fail(s, err, 0, "reading model file %s: %s", strerror(err));
        return -2;
    }
    if (check_file(s, G->order == 0)) return -2;
    if (G->order == 0) s->passes++;
    for (int i = 0; i < P; i++)
        if (G->is_streamed[i]) ptrs[i] = sl->buf + G->off_in_slot[i];
    return 0;
}

int fc_stream_embd_row(fc_stream *s, int32_t token, float *dst, int64_t dim) {
    const fc_qkernel *k = &fc_tab()->q[s->cfg.embd_qtype];
    const size_t rb = s->cfg.embd_row_bytes;
    if (s->embd_pinned) {
        k->dequantize(s->embd_pinned + (size_t)token * rb, dst, dim);
        return 0;
    }
    if (s->failed) return -2;
    const uint64_t off = s->cfg.embd_off + (uint64_t)token * rb;
    const uint64_t a = s->direct ? down(off) : off, e = s->direct ? up(off + rb) : off + rb;
    int short_read = 0;
    int err = read_range(s->fd, s->bounce, a, e - a, off + rb - a, &short_read);
    if (err) {
        if (short_read) set_fail(s, 0, 1, "model file %s changed on disk while in use (%s); reload the model",
                                 "truncated: a read came back short");
        else set_fail(s, err, 0, "reading model file %s: %s", strerror(err));
        return -2;
    }
    k->dequantize(s->bounce + (off - a), dst, dim);
    return 0;
}

void fc_stream_inject_error(fc_stream *s, int err_no) { atomic_store(&s->inject, err_no); }

const char *fc_stream_error(const fc_stream *s, int *err_no, int *changed) {
    if (err_no) *err_no = s->fail_errno;
    if (changed) *changed = s->fail_changed;
    return s->failed ? s->msg : NULL;
}

size_t fc_stream_pinned_bytes(const fc_stream *s) { return s->pinned_bytes; }
size_t fc_stream_ring_bytes(const fc_stream *s) { return s->n_streamed ? s->slot_bytes * (size_t)s->depth : 0; }

void fc_stream_counters(const fc_stream *s, uint64_t *bytes_read, double *wait_s, uint64_t *passes) {
    *bytes_read = atomic_load(&((fc_stream *)s)->bytes_read);
    *wait_s = s->wait_s;
    *passes = s->passes;
}

void fc_stream_reset_counters(fc_stream *s) {
    atomic_store(&s->bytes_read, 0);
    s->wait_s = 0;
    s->passes = 0;
}

/* ---- the disk limit ---- */
typedef struct {
    int fd;
    uint64_t off, bytes;
    size_t chunk;
    _Atomic uint64_t next;
    _Atomic int err;
} bw_job;

static void *bw_reader(void *arg) {
    bw_job *j = arg;
    uint8_t *buf = NULL;
    if (posix_memalign((void **)&buf, PAGE, j->chunk)) {
        atomic_store(&j->err, ENOMEM);
        return NULL;
    }
    for (;;) {
        uint64_t o = atomic_fetch_add(&j->next, j->chunk);
        if (o >= j->bytes) break;
        uint64_t len = j->bytes - o < j->chunk ? j->bytes - o : j->chunk;
        int short_read = 0;
        int err = read_range(j->fd, buf, j->off + o, up(len), len, &short_read);
        if (err) {
            atomic_store(&j->err, err);
            break;
        }
    }
    free(buf);
    return NULL;
}

double fc_stream_read_bandwidth(const char *path, uint64_t off, uint64_t bytes, int readers, int direct,
                                size_t chunk) {
    if (readers < 1 || readers > 256 || chunk < PAGE || chunk % PAGE) return -EINVAL;
    int fd = open_file(path, &direct);
    if (fd < 0) return -(double)errno;
    bw_job j = {.fd = fd, .off = down(off), .bytes = bytes, .chunk = chunk};
    pthread_t th[256];
    int n = 0;
    double t0 = now_s();
    for (int i = 0; i < readers; i++)
        if (!pthread_create(&th[n], NULL, bw_reader, &j)) n++;
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
    double dt = now_s() - t0;
    close(fd);
    if (!n) return -EAGAIN;
    if (atomic_load(&j.err)) return -(double)atomic_load(&j.err);
    return (double)bytes / dt;
}
