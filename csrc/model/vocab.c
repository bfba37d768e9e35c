/* Compact tokenizer vocabulary and the BPE merge loops (see vocab.h). The merge orders are
 * llama.cpp's (llama-vocab.cpp, facts not code): byte-level BPE takes the lowest merge rank first,
 * SentencePiece-style the highest score first, ties to the leftmost pair; a queued pair whose sides
 * have changed since is skipped. */
#include "model/vocab.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t a, b;      /* symbol ids of the halves; a = -1: empty slot */
    int32_t rank, res; /* merge rank, id of the merged string */
} merge_slot;

struct fc_vocab {
    char *blob;             /* every string's bytes, back to back */
    size_t blob_len, blob_cap;
    uint32_t *off;          /* [count + 1]: string i is blob[off[i], off[i+1]) */
    int64_t count, off_cap;
    int32_t *tab;           /* string hash: ids, -1 empty; tab_mask + 1 slots (a power of two) */
    uint32_t tab_mask;
    int64_t n_vocab;
    merge_slot *mt;         /* pair hash: mt_mask + 1 slots */
    uint32_t mt_mask;
    int64_t n_merges;
    int32_t byte_sym[256];
    int32_t ascii_id[128];
    double *scores;         /* [n_vocab] (SentencePiece-style only) */
    int32_t spm_byte[256];
};

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a murmur finalizer for the low bits */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static uint64_t hash_pair(int32_t a, int32_t b) {
    uint64_t h = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

fc_vocab *fc_vocab_new(void) {
    fc_vocab *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->off = malloc(sizeof *v->off);
    v->tab = malloc(64 * sizeof *v->tab);
    if (!v->off || !v->tab) {
        fc_vocab_free(v);
        return NULL;
    }
    v->off[0] = 0;
    v->off_cap = 1;
    memset(v->tab, 0xff, 64 * sizeof *v->tab);
    v->tab_mask = 63;
    for (int i = 0; i < 256; i++) v->byte_sym[i] = v->spm_byte[i] = -1;
    for (int i = 0; i < 128; i++) v->ascii_id[i] = -1;
    return v;
}

void fc_vocab_free(fc_vocab *v) {
    if (!v) return;
    free(v->blob);
    free(v->off);
    free(v->tab);
    free(v->mt);
    free(v->scores);
    free(v);
}

static inline const char *str_at(const fc_vocab *v, int64_t id, size_t *len) {
    *len = v->off[id + 1] - v->off[id];
    return v->blob + v->off[id];
}

int64_t fc_vocab_find(const fc_vocab *v, const char *s, size_t len) {
    for (uint32_t i = (uint32_t)hash_bytes(s, len) & v->tab_mask;; i = (i + 1) & v->tab_mask) {
        const int32_t id = v->tab[i];
        if (id < 0) return -1;
        size_t n;
        const char *t = str_at(v, id, &n);
        if (n == len && memcmp(t, s, len) == 0) return id;
    }
}

static int grow_tab(fc_vocab *v) {
    const uint32_t size = (v->tab_mask + 1) * 2;
    if (size == 0) return -1;
    int32_t *t = malloc((size_t)size * sizeof *t);
    if (!t) return -1;
    memset(t, 0xff, (size_t)size * sizeof *t);
    for (int64_t id = 0; id < v->count; id++) {
        size_t n;
        const char *s = str_at(v, id, &n);
        uint32_t i = (uint32_t)hash_bytes(s, n) & (size - 1);
        while (t[i] >= 0) i = (i + 1) & (size - 1);
        t[i] = (int32_t)id;
    }
    free(v->tab);
    v->tab = t;
    v->tab_mask = size - 1;
    return 0;
}

int64_t fc_vocab_add(fc_vocab *v, const char *s, size_t len) {
    const int64_t have = fc_vocab_find(v, s, len);
    if (have >= 0) return -2 - have;
    if (v->count >= INT32_MAX - 1 || len > UINT32_MAX - v->blob_len) return -1;
    if ((uint64_t)(v->count + 1) * 2 > (uint64_t)v->tab_mask + 1 && grow_tab(v)) return -1;
    if (v->blob_len + len > v->blob_cap) {
        size_t cap = v->blob_cap ? v->blob_cap : 4096;
        while (cap < v->blob_len + len) cap *= 2;
        char *b = realloc(v->blob, cap);
        if (!b) return -1;
        v->blob = b;
        v->blob_cap = cap;
    }
    if (v->count + 2 > v->off_cap) {
        int64_t cap = v->off_cap * 2 > 1024 ? v->off_cap * 2 : 1024;
        uint32_t *o = realloc(v->off, (size_t)cap * sizeof *o);
        if (!o) return -1;
        v->off = o;
        v->off_cap = cap;
    }
    if (len) memcpy(v->blob + v->blob_len, s, len);
    v->blob_len += len;
    const int64_t id = v->count++;
    v->off[id + 1] = (uint32_t)v->blob_len;
    uint32_t i = (uint32_t)hash_bytes(s, len) & v->tab_mask;
    while (v->tab[i] >= 0) i = (i + 1) & v->tab_mask;
    v->tab[i] = (int32_t)id;
    return id;
}

int64_t fc_vocab_count(const fc_vocab *v) { return v->count; }

const char *fc_vocab_text(const fc_vocab *v, int64_t id, size_t *len) { return str_at(v, id, len); }

void fc_vocab_set_n_vocab(fc_vocab *v, int64_t n_vocab) { v->n_vocab = n_vocab; }

static const merge_slot *find_merge(const fc_vocab *v, int32_t a, int32_t b) {
    if (!v->mt) return NULL;
    for (uint32_t i = (uint32_t)hash_pair(a, b) & v->mt_mask;; i = (i + 1) & v->mt_mask) {
        const merge_slot *e = &v->mt[i];
        if (e->a < 0) return NULL;
        if (e->a == a && e->b == b) return e;
    }
}

static int grow_merges(fc_vocab *v) {
    const uint32_t size = v->mt ? (v->mt_mask + 1) * 2 : 1024;
    if (size == 0) return -1;
    merge_slot *t = malloc((size_t)size * sizeof *t);
    if (!t) return -1;
    for (uint32_t i = 0; i < size; i++) t[i].a = -1;
    for (uint32_t j = 0; v->mt && j <= v->mt_mask; j++) {
        const merge_slot *e = &v->mt[j];
        if (e->a < 0) continue;
        uint32_t i = (uint32_t)hash_pair(e->a, e->b) & (size - 1);
        while (t[i].a >= 0) i = (i + 1) & (size - 1);
        t[i] = *e;
    }
    free(v->mt);
    v->mt = t;
    v->mt_mask = size - 1;
    return 0;
}

static int64_t find_or_add(fc_vocab *v, const char *s, size_t len) {
    int64_t id = fc_vocab_find(v, s, len);
    return id >= 0 ? id : fc_vocab_add(v, s, len);
}

int fc_vocab_add_merge(fc_vocab *v, const char *m, size_t len, int32_t rank) {
    size_t p = 1;
    while (p < len && m[p] != ' ') p++;
    if (p >= len || p + 1 == len) return 0;
    const int64_t a = find_or_add(v, m, p);
    if (a < 0) return -1;
    const int64_t b = find_or_add(v, m + p + 1, len - p - 1);
    if (b < 0) return -1;
    if (find_merge(v, (int32_t)a, (int32_t)b)) return 0; /* the first rank of a pair stands */
    char small[256];
    char *cat = len - 1 <= sizeof small ? small : malloc(len - 1);
    if (!cat) return -1;
    memcpy(cat, m, p);
    memcpy(cat + p, m + p + 1, len - p - 1);
    const int64_t r = find_or_add(v, cat, len - 1);
    if (cat != small) free(cat);
    if (r < 0) return -1;
    if ((uint64_t)(v->n_merges + 1) * 4 > ((uint64_t)v->mt_mask + 1) * 3 || !v->mt)
        if (grow_merges(v)) return -1;
    uint32_t i = (uint32_t)hash_pair((int32_t)a, (int32_t)b) & v->mt_mask;
    while (v->mt[i].a >= 0) i = (i + 1) & v->mt_mask;
    v->mt[i] = (merge_slot){(int32_t)a, (int32_t)b, rank, (int32_t)r};
    v->n_merges++;
    return 0;
}

int64_t fc_vocab_merge_count(const fc_vocab *v) { return v->n_merges; }

void fc_vocab_set_bytes(fc_vocab *v, const int32_t byte_sym[256], const int32_t ascii_id[128]) {
    memcpy(v->byte_sym, byte_sym, sizeof v->byte_sym);
    memcpy(v->ascii_id, ascii_id, sizeof v->ascii_id);
}

int fc_vocab_set_spm(fc_vocab *v, const double *scores, const int32_t byte_id[256]) {
    double *s = malloc((size_t)(v->n_vocab ? v->n_vocab : 1) * sizeof *s);
    if (!s) return -1;
    memcpy(s, scores, (size_t)v->n_vocab * sizeof *s);
    free(v->scores);
    v->scores = s;
    memcpy(v->spm_byte, byte_id, sizeof v->spm_byte);
    return 0;
}

/* ---- merge queue: a binary min-heap of candidate pairs, the smallest key first, ties to the
 * leftmost pair (byte-level BPE: key = merge rank; SentencePiece-style: key = -score, so the
 * highest score first) ---- */

typedef struct {
    double key;
    int32_t left, right; /* the pair's symbols */
    int32_t a, b;        /* BPE: their ids when queued; SPM: a = the merged byte length */
} pair_item;

static inline int comes_first(const pair_item *x, const pair_item *y) {
    return x->key < y->key || (x->key == y->key && x->left < y->left);
}

static void heap_push(pair_item *h, int *n, pair_item it) {
    int i = (*n)++;
    while (i > 0) {
        const int p = (i - 1) / 2;
        if (!comes_first(&it, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = it;
}

static pair_item heap_pop(pair_item *h, int *n) {
    const pair_item top = h[0], last = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && comes_first(&h[c + 1], &h[c])) c++;
        if (!comes_first(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

static inline void bpe_try(const fc_vocab *v, pair_item *h, int *nh, const int32_t *sym, int left, int right) {
    const merge_slot *e = find_merge(v, sym[left], sym[right]);
    if (e) heap_push(h, nh, (pair_item){e->rank, left, right, sym[left], sym[right]});
}

int64_t fc_vocab_bpe(const fc_vocab *v, const uint8_t *word, size_t len, int32_t *out) {
    if (len == 0) return 0;
    if (len > (size_t)INT32_MAX / 4) return -1;
    const int n = (int)len;
    /* symbols: sym (id, -1 once merged into its left neighbour), prev, next; queue of up to 3n pairs
     * (n - 1 at the start, at most two per merge) */
    enum { SMALL = 48 };
    int32_t small_s[3 * SMALL];
    pair_item small_h[3 * SMALL];
    int32_t *s3 = small_s;
    pair_item *heap = small_h;
    if (n > SMALL) {
        s3 = malloc((size_t)n * 3 * sizeof *s3);
        heap = malloc((size_t)n * 3 * sizeof *heap);
        if (!s3 || !heap) {
            free(s3);
            free(heap);
            return -1;
        }
    }
    int32_t *sym = s3, *prev = s3 + n, *next = s3 + 2 * n;
    for (int i = 0; i < n; i++) {
        sym[i] = v->byte_sym[word[i]];
        prev[i] = i - 1;
        next[i] = i + 1 < n ? i + 1 : -1;
    }
    int nh = 0;
    for (int i = 0; i + 1 < n; i++) bpe_try(v, heap, &nh, sym, i, i + 1);
    while (nh) {
        const pair_item it = heap_pop(heap, &nh);
        if (sym[it.left] != it.a || sym[it.right] != it.b) continue; /* a side merged since */
        const merge_slot *e = find_merge(v, it.a, it.b);
        sym[it.left] = e->res;
        sym[it.right] = -1;
        const int nr = next[it.right];
        next[it.left] = nr;
        if (nr >= 0) prev[nr] = it.left;
        if (prev[it.left] >= 0) bpe_try(v, heap, &nh, sym, prev[it.left], it.left);
        if (nr >= 0) bpe_try(v, heap, &nh, sym, it.left, nr);
    }
    int64_t k = 0;
    for (int i = 0; i >= 0; i = next[i]) {
        const int32_t id = sym[i];
        if (id < v->n_vocab) {
            out[k++] = id;
            continue;
        }
        /* not a vocabulary entry: llama.cpp looks up its single bytes; only ASCII ones can exist */
        size_t tl;
        const char *t = str_at(v, id, &tl);
        for (size_t j = 0; j < tl; j++) {
            const uint8_t c = (uint8_t)t[j];
            if (c < 0x80 && v->ascii_id[c] >= 0) out[k++] = v->ascii_id[c];
        }
    }
    if (s3 != small_s) {
        free(s3);
        free(heap);
    }
    return k;
}

int64_t fc_vocab_spm(const fc_vocab *v, const uint8_t *text, size_t len, int32_t *out) {
    if (len == 0) return 0;
    if (len > (size_t)INT32_MAX / 4) return -1;
    /* symbols: one per UTF-8 character: start, byte length (0 once merged away), prev, next */
    int32_t *s4 = malloc(len * 4 * sizeof *s4);
    pair_item *heap = malloc(len * 3 * sizeof *heap);
    if (!s4 || !heap) {
        free(s4);
        free(heap);
        return -1;
    }
    int32_t *start = s4, *slen = s4 + len, *prev = s4 + 2 * len, *next = s4 + 3 * len;
    int n = 0;
    for (size_t p = 0; p < len;) {
        size_t q = p + 1;
        while (q < len && (text[q] & 0xc0) == 0x80) q++;
        start[n] = (int32_t)p;
        slen[n] = (int32_t)(q - p);
        prev[n] = n - 1;
        next[n] = -1;
        if (n) next[n - 1] = n;
        n++;
        p = q;
    }
    int nh = 0;
#define SPM_TRY(l, r)                                                                                   \
    do {                                                                                                \
        const int32_t sz_ = slen[l] + slen[r];                                                          \
        const int64_t id_ = fc_vocab_find(v, (const char *)text + start[l], (size_t)sz_);                \
        if (id_ >= 0 && id_ < v->n_vocab) heap_push(heap, &nh, (pair_item){-v->scores[id_], (l), (r), sz_, 0}); \
    } while (0)
    for (int i = 0; i + 1 < n; i++) SPM_TRY(i, i + 1);
    while (nh) {
        const pair_item it = heap_pop(heap, &nh);
        const int l = it.left, r = it.right;
        if (slen[l] == 0 || slen[r] == 0 || slen[l] + slen[r] != it.a) continue;
        slen[l] += slen[r];
        slen[r] = 0;
        const int nr = next[r];
        next[l] = nr;
        if (nr >= 0) prev[nr] = l;
        if (prev[l] >= 0) SPM_TRY(prev[l], l);
        if (nr >= 0) SPM_TRY(l, nr);
    }
#undef SPM_TRY
    int64_t k = 0;
    for (int i = 0; i >= 0; i = next[i]) {
        const int64_t id = fc_vocab_find(v, (const char *)text + start[i], (size_t)slen[i]);
        if (id >= 0 && id < v->n_vocab) {
            out[k++] = (int32_t)id;
            continue;
        }
        for (int j = 0; j < slen[i]; j++) {
            const uint8_t c = text[start[i] + j];
            if (v->spm_byte[c] < 0) {
                k = -2 - (int64_t)c;
                goto done;
            }
            out[k++] = v->spm_byte[c];
        }
    }
done:
    free(s4);
    free(heap);
    return k;
}

size_t fc_vocab_bytes(const fc_vocab *v) {
    return sizeof *v + v->blob_cap + (size_t)v->off_cap * sizeof *v->off + ((size_t)v->tab_mask + 1) * sizeof *v->tab +
           (v->mt ? ((size_t)v->mt_mask + 1) * sizeof *v->mt : 0) + (v->scores ? (size_t)v->n_vocab * sizeof(double) : 0);
}

void fc_vocab_shrink(fc_vocab *v) {
    if (v->blob_len && v->blob_len < v->blob_cap) {
        char *b = realloc(v->blob, v->blob_len);
        if (b) {
            v->blob = b;
            v->blob_cap = v->blob_len;
        }
    }
    if (v->count + 1 < v->off_cap) {
        uint32_t *o = realloc(v->off, (size_t)(v->count + 1) * sizeof *o);
        if (o) {
            v->off = o;
            v->off_cap = v->count + 1;
        }
    }
}
