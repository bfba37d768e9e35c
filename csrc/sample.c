/* Sampling helpers that a decode step would otherwise spend in NumPy: selecting the top-k logits
 * out of a vocabulary of ~50k took about 2% of a SmolLM2 decode step through np.argpartition
 * (a full partition of the row); a bounded heap passes over the row once and touches the heap
 * only for the few values that beat its minimum. Baseline x86-64 (no kernel dispatch). */
#include <emmintrin.h>

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
