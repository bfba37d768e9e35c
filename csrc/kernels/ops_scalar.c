/* Per-token transformer ops, scalar reference. The SIMD versions (ops_<isa>.c) are tested
 * against these. */
#include <math.h>

#include "fc_internal.h"

static void rmsnorm_ref(float *out, const float *x, const float *w, int64_t n, float eps) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const float scale = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

static void rope_ref(float *x, int64_t n_heads, int64_t head_dim, int64_t pos, const float *inv_freq, int neox) {
    const int64_t half = head_dim / 2;
    for (int64_t i = 0; i < half; i++) {
        const float theta = (float)pos * inv_freq[i];
        const float c = cosf(theta), s = sinf(theta);
        for (int64_t h = 0; h < n_heads; h++) {
            float *v = x + h * head_dim;
            const int64_t i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
            const float a = v[i0], b = v[i1];
            v[i0] = a * c - b * s;
            v[i1] = a * s + b * c;
        }
    }
}

/* Returns log(sum_i e^x_i) of the input (max + log of the sum): what attention over a part of
 * the positions needs to be merged with the other parts. */
static double softmax_lse_ref(float *x, int64_t n) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        sum += x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
    return m + log(sum);
}

static void softmax_ref(float *x, int64_t n) { (void)softmax_lse_ref(x, n); }

static void silu_mul_ref(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

static void add_ref(float *out, const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* Element i of a K/V cache of float32 (f16 = 0) or float16 (f16 = 1), as float32 (exact). */
static inline float kv_at(const int f16, const void *base, int64_t i) {
    return f16 ? fc_fp16_to_fp32(((const uint16_t *)base)[i]) : ((const float *)base)[i];
}

static inline void head_kv(const int f16, float *out, const float *q, const void *k, const void *v, int64_t n_pos,
                           int64_t head_dim, int64_t kv_stride, float scale, float *scores, float *lse) {
    for (int64_t p = 0; p < n_pos; p++) {
        float s = 0.0f;
        for (int64_t i = 0; i < head_dim; i++) s += q[i] * kv_at(f16, k, p * kv_stride + i);
        scores[p] = s * scale;
    }
    const double l = softmax_lse_ref(scores, n_pos);
    if (lse) *lse = (float)l;
    for (int64_t i = 0; i < head_dim; i++) out[i] = 0.0f;
    for (int64_t p = 0; p < n_pos; p++) {
        const float s = scores[p];
        for (int64_t i = 0; i < head_dim; i++) out[i] += s * kv_at(f16, v, p * kv_stride + i);
    }
}

static void head_ref(float *out, const float *q, const float *k, const float *v, int64_t n_pos, int64_t head_dim,
                     int64_t kv_stride, float scale, float *scores, float *lse) {
    head_kv(0, out, q, k, v, n_pos, head_dim, kv_stride, scale, scores, lse);
}

static void attn_head_ref(float *out, const float *q, const float *k, const float *v, int64_t n_pos,
                          int64_t head_dim, int64_t kv_stride, float scale, float *scores) {
    head_ref(out, q, k, v, n_pos, head_dim, kv_stride, scale, scores, NULL);
}

/* Eight independent sums so that the add latency does not cap the read rate: this is what membw
 * times at the scalar level. */
static double sum_read_ref(const float *x, int64_t n) {
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int u = 0; u < 8; u++) s[u] += x[i + u];
    for (; i < n; i++) s[0] += x[i];
    double t = 0.0;
    for (int u = 0; u < 8; u++) t += s[u];
    return t;
}

/* Grouped-query heads one after the other (the specification of attn_group). */
static void attn_group_ref(float *out, const float *q, int64_t n_heads, const float *k, const float *v,
                             int64_t n_pos, int64_t head_dim, int64_t kv_stride, float scale, float *scores,
                             float *lse) {
    for (int64_t h = 0; h < n_heads; h++)
        head_ref(out + h * head_dim, q + h * head_dim, k, v, n_pos, head_dim, kv_stride, scale, scores + h * n_pos,
                 lse ? lse + h : NULL);
}

/* attn_group over a float16 cache: the same heads over the widened rows */
static void attn_group_f16_ref(float *out, const float *q, int64_t n_heads, const uint16_t *k, const uint16_t *v,
                               int64_t n_pos, int64_t head_dim, int64_t kv_stride, float scale, float *scores,
                               float *lse) {
    for (int64_t h = 0; h < n_heads; h++)
        head_kv(1, out + h * head_dim, q + h * head_dim, k, v, n_pos, head_dim, kv_stride, scale, scores + h * n_pos,
                lse ? lse + h : NULL);
}

static void to_f16_ref(uint16_t *out, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = fc_fp32_to_fp16(x[i]);
}

FC_REG(ops_scalar) {
    t->ops.rmsnorm = rmsnorm_ref;
    t->ops.rope = rope_ref;
    t->ops.softmax = softmax_ref;
    t->ops.silu_mul = silu_mul_ref;
    t->ops.add = add_ref;
    t->ops.attn_head = attn_head_ref;
    t->ops.attn_group = attn_group_ref;
    t->ops.attn_group_f16 = attn_group_f16_ref;
    t->ops.to_f16 = to_f16_ref;
    t->ops.sum_read = sum_read_ref;
}
