/* F32, F16 and BF16 weights, scalar reference: the specification the SIMD versions are tested
 * against. Activations stay float32; products accumulate in float32. */
#include "fc_internal.h"

static size_t act_row_bytes_f32(int64_t k) { return (size_t)k * sizeof(float); }

static void quantize_copy(const float *FC_RESTRICT x, void *FC_RESTRICT xq, int64_t k) {
    memcpy(xq, x, (size_t)k * sizeof(float));
}

#define FLOAT_GEMM(NAME, WT, LOAD)                                                  \
    static void NAME(const fc_gemm_args *a, int64_t r0, int64_t r1) {               \
        for (int64_t r = r0; r < r1; r++) {                                         \
            const WT *w = (const WT *)(a->w + r * a->w_row_bytes);                 \
            for (int64_t j = 0; j < a->n; j++) {                                    \
                const float *x = (const float *)(a->xq + j * a->xq_row_bytes);     \
                float s = 0.0f;                                                     \
                for (int64_t i = 0; i < a->k; i++) s += LOAD(w[i]) * x[i];          \
                a->y[j * a->ldy + r] = s;                                           \
            }                                                                       \
        }                                                                           \
    }

#define LOAD_F32(v) (v)
FLOAT_GEMM(gemm_f32_ref, float, LOAD_F32)
FLOAT_GEMM(gemm_f16_ref, uint16_t, fc_fp16_to_fp32)
FLOAT_GEMM(gemm_bf16_ref, uint16_t, fc_bf16_to_fp32)

static void dequant_f32(const void *FC_RESTRICT src, float *FC_RESTRICT dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}
static void dequant_f16(const void *FC_RESTRICT src, float *FC_RESTRICT dst, int64_t n) {
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = fc_fp16_to_fp32(s[i]);
}
static void dequant_bf16(const void *FC_RESTRICT src, float *FC_RESTRICT dst, int64_t n) {
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = fc_bf16_to_fp32(s[i]);
}

FC_REG(float_scalar) {
    t->q[FC_F32] = (fc_qkernel){.act_row_bytes = act_row_bytes_f32, .quantize = quantize_copy,
                                .gemm = gemm_f32_ref, .dequantize = dequant_f32, .isa = FC_ISA_SCALAR};
    t->q[FC_F16] = (fc_qkernel){.act_row_bytes = act_row_bytes_f32, .quantize = quantize_copy,
                                .gemm = gemm_f16_ref, .dequantize = dequant_f16, .isa = FC_ISA_SCALAR};
    t->q[FC_BF16] = (fc_qkernel){.act_row_bytes = act_row_bytes_f32, .quantize = quantize_copy,
                                 .gemm = gemm_bf16_ref, .dequantize = dequant_bf16, .isa = FC_ISA_SCALAR};
}
