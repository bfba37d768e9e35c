/* Sampling helpers that a decode step would otherwise spend in NumPy: selecting the top-k logits
 * out of a vocabulary of ~50k took about 2% of a SmolLM2 decode step through np.argpartition
 * (a full partition of the row); a bounded heap passes over the row once and touches the heap
 * only for the few values that beat its minimum. Baseline x86-64 (no kernel dispatch).
 *
 * fc_sample runs the whole sampling chain: a decode step used to spend ~7% of a 2-thread SmolLM2
 * step in the NumPy version between C calls (a dozen array operations, each slow right after a
 * step has streamed the weights through the caches). It follows fastcpu.sampler.sample_ref
 * operation by operation, sums included (NumPy's pairwise summation), so the two agree bit for bit
 * unless exp() rounds differently by an ulp and u falls on that edge. */
#include <emmintrin.h>
#include <math.h>
#include <stdlib.h>

#include "fc_internal.h"

/* a ranks below b: smaller value, or the same value at a larger index (ties go to the lower
 * index, so the selection is deterministic) */
static inline int below(const float *x, int64_t a, int64_t b) {
    return x[a] < x[b] || (x[a] == x[b] && a > b);
}

static void sift_down(const float *x, int64_t *h, int64_t k, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, m = i;
        if (l < k && below(x, h[l], h[m])) m = l;
        if (l + 1 < k && below(x, h[l + 1], h[m])) m = l + 1;
        if (m == i) return;
        const int64_t t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

int64_t fc_topk(const float *x, int64_t n, int64_t k, int64_t *idx) {
    if (k > n) k = n;
    if (k <= 0) return 0;
    /* NaN never beats the heap's minimum, so a row with NaNs keeps its numbers where it can */
    for (int64_t i = 0; i < k; i++) idx[i] = i;
    for (int64_t i = k / 2 - 1; i >= 0; i--) sift_down(x, idx, k, i);
    /* most values lose to the heap's minimum: compare 16 at a time against it (SSE2, baseline) and
     * look closer only where one may win (a tie loses: its index is larger) */
    int64_t i = k;
    for (; i + 16 <= n; i += 16) {
        const __m128 t = _mm_set1_ps(x[idx[0]]);
        const int any = _mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(x + i), t)) |
                        _mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(x + i + 4), t)) |
                        _mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(x + i + 8), t)) |
                        _mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(x + i + 12), t));
        if (!any) continue;
        for (int64_t j = i; j < i + 16; j++)
            if (below(x, idx[0], j)) {
                idx[0] = j;
                sift_down(x, idx, k, 0);
            }
    }
    for (; i < n; i++)
        if (below(x, idx[0], i)) {
            idx[0] = i;
            sift_down(x, idx, k, 0);
        }
    /* heap order -> best first */
    for (int64_t e = k - 1; e > 0; e--) {
        const int64_t t = idx[0];
        idx[0] = idx[e];
        idx[e] = t;
        sift_down(x, idx, e, 0);
    }
    return k;
}

/* NumPy's float64 add.reduce over a contiguous row (pairwise_sum in loops_utils.h): blocks of up
 * to 128 summed by 8 interleaved accumulators, halves split at a multiple of 8 */
static double np_sum(const double *a, int64_t n) {
    if (n < 8) {
        double r = 0.0;
        for (int64_t i = 0; i < n; i++) r += a[i];
        return r;
    }
    if (n <= 128) {
        double r[8];
        for (int j = 0; j < 8; j++) r[j] = a[j];
        int64_t i = 8;
        for (; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    int64_t n2 = n / 2;
    n2 -= n2 % 8;
    return np_sum(a, n2) + np_sum(a + n2, n - n2);
}

static int cmp_i32(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

size_t fc_sample_scratch_bytes(int64_t n, int64_t n_recent) {
    if (n < 0) n = 0;
    if (n_recent < 0) n_recent = 0;
    return (size_t)n * (sizeof(double) + sizeof(int64_t) + sizeof(float)) + (size_t)n_recent * sizeof(int32_t);
}

/* The nucleus: the shortest prefix of e[0..m) (sorted, best first) whose share of z reaches top_p;
 * m when none does. NumPy: searchsorted(cumsum(e) / z, top_p, "left"). */
static int64_t nucleus(const double *e, int64_t m, double z, double top_p) {
    double acc = 0.0;
    for (int64_t j = 0; j < m; j++) {
        acc += e[j];
        if (acc / z >= top_p) return j + 1;
    }
    return m;
}

int64_t fc_sample(const float *logits, int64_t n, const fc_sampling *p, const int32_t *recent,
                  int64_t n_recent, double u, void *scratch) {
    double *e = (double *)scratch;      /* [n] exp(x - max), in candidate order */
    int64_t *idx = (int64_t *)(e + n);  /* [n] candidate token ids, best first */
    float *pen = (float *)(idx + n);    /* [n] the logits with penalties */
    int32_t *ids = (int32_t *)(pen + n); /* [n_recent] the recent tokens, sorted */
    const float *x = logits;

    if (n_recent > 0 && (p->repeat_penalty != 1.0 || p->presence_penalty != 0.0 || p->frequency_penalty != 0.0)) {
        memcpy(pen, logits, (size_t)n * sizeof(float));
        memcpy(ids, recent, (size_t)n_recent * sizeof(int32_t));
        qsort(ids, (size_t)n_recent, sizeof(int32_t), cmp_i32);
        const float rp = (float)p->repeat_penalty; /* NumPy divides the float32 row by float32(rp) */
        for (int64_t i = 0; i < n_recent;) {
            int64_t j = i;
            while (j < n_recent && ids[j] == ids[i]) j++;
            float v = pen[ids[i]];
            if (p->repeat_penalty != 1.0) v = v > 0.0f ? v / rp : v * rp;
            pen[ids[i]] = (float)(((double)v - (double)(j - i) * p->frequency_penalty) - p->presence_penalty);
            i = j;
        }
        x = pen;
    }

    if (p->temperature <= 0.0) { /* np.argmax: the first maximum, or the first NaN */
        int64_t best = 0;
        for (int64_t i = 0; i < n; i++) {
            if (x[i] != x[i]) return i;
            if (x[i] > x[best]) best = i;
        }
        return best;
    }

    int64_t m; /* candidates in idx / e */
    double z;
    if (p->top_k > 0 && p->top_k < n) {
        m = fc_topk(x, n, p->top_k, idx);
        const double top = x[idx[0]];
        for (int64_t i = 0; i < m; i++) e[i] = exp((double)x[idx[i]] - top);
        z = np_sum(e, m);
    } else {
        /* z runs over the whole row in token order, as NumPy's does */
        double top = x[0];
        for (int64_t i = 1; i < n; i++)
            if (x[i] > top) top = x[i];
        for (int64_t i = 0; i < n; i++) e[i] = exp((double)x[i] - top);
        z = np_sum(e, n);
        int64_t keep = n;
        if (p->min_p > 0.0) {
            keep = 0;
            for (int64_t i = 0; i < n; i++) keep += e[i] >= p->min_p;
        }
        /* sorting the whole row is rarely needed: the nucleus usually ends in the first 256 */
        m = keep;
        if (p->top_p < 1.0 && keep > 256) {
            m = fc_topk(x, n, 256, idx);
            for (int64_t i = 0; i < m; i++) e[i] = exp((double)x[idx[i]] - top);
            if (nucleus(e, m, z, p->top_p) == m) m = keep;
        }
        if (m == keep) {
            m = fc_topk(x, n, keep, idx);
            for (int64_t i = 0; i < m; i++) e[i] = exp((double)x[idx[i]] - top);
        }
    }
    /* min-p and top-p both keep a prefix of the sorted candidates: the shorter one survives */
    if (p->min_p > 0.0) {
        int64_t c = 0;
        while (c < m && e[c] >= p->min_p) c++;
        m = c;
    }
    if (p->top_p < 1.0) m = nucleus(e, m, z, p->top_p);
    if (m < 1) m = 1;

    /* temperature reshapes the survivors; e is reused for their weights */
    const double x0 = x[idx[0]];
    for (int64_t i = 0; i < m; i++) e[i] = exp(((double)x[idx[i]] - x0) / p->temperature);
    const double w = np_sum(e, m);
    double acc = 0.0;
    for (int64_t i = 0; i < m; i++) {
        acc += e[i] / w;
        if (acc > u) return idx[i];
    }
    return idx[m - 1];
}
