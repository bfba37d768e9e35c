/* The AVX512_BF16 float kernel (csrc/kernels/float_avx512bf16.c) run on a CPU without AVX512_BF16:
 * vdpbf16ps is replaced by a model of it in AVX-512F (per float32 lane: acc += odd product, then
 * += even product, each bf16 product exact in float32, as Intel's pseudo-code orders it; the
 * hardware's denormal flushing is not modelled, and the inputs here have no denormals).
 * Everything else (activation rounding and padding, tiles, column passes, row tails, masks) is the
 * kernel file's own code. Checked against a double sum of the same bf16 products.
 * Built and run by tests/test_bf16_emu.py; exits 0 when every output is within bound. */
#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static inline __m512 dpbf16_model(__m512 acc, __m512i a, __m512i b) {
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000);
    const __m512 ae = _mm512_castsi512_ps(_mm512_slli_epi32(a, 16)), be = _mm512_castsi512_ps(_mm512_slli_epi32(b, 16));
    const __m512 ao = _mm512_castsi512_ps(_mm512_and_si512(a, hi)), bo = _mm512_castsi512_ps(_mm512_and_si512(b, hi));
    acc = _mm512_add_ps(acc, _mm512_mul_ps(ao, bo));
    return _mm512_add_ps(acc, _mm512_mul_ps(ae, be));
}
#define _mm512_dpbf16_ps(acc, a, b) dpbf16_model((acc), (__m512i)(a), (__m512i)(b))
#include "kernels/float_avx512bf16.c"

static uint64_t rng = 88172645463325252ull;
static float urand(void) { /* xorshift64 -> [-1, 1) */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / (1 << 23)) - 1.0);
}

int main(void) {
    static fc_table t;
    fc_register_float_avx512bf16(&t);
    const fc_qkernel *kq = &t.q[FC_BF16];
    const int64_t ks[] = {1, 3, 31, 32, 33, 255, 256, 257, 1023, 4160};
    const int64_t ns[] = {1, 2, 5, 18, 33};
    const int64_t rows = 23;
    long bad = 0, checked = 0;
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            const int64_t k = ks[ki], n = ns[ni];
            uint16_t *w = malloc((size_t)(rows * k) * 2);
            float *x = malloc((size_t)(n * k) * 4), *y = malloc((size_t)(n * rows) * 4);
            const size_t st = (kq->act_row_bytes(k) + 63) & ~(size_t)63;
            uint8_t *xq = NULL;
            if (!w || !x || !y || posix_memalign((void **)&xq, 64, st * (size_t)n)) return 2;
            for (int64_t i = 0; i < rows * k; i++) w[i] = fc_fp32_to_bf16(urand());
            for (int64_t i = 0; i < n * k; i++) x[i] = urand() * 4.0f;
            for (int64_t j = 0; j < n; j++) kq->quantize(x + j * k, xq + (size_t)j * st, k);
            fc_gemm_args a = {.w = (const uint8_t *)w, .w_row_bytes = (size_t)k * 2, .k = k, .xq = xq,
                              .xq_row_bytes = st, .n = n, .y = y, .ldy = rows};
            /* two row ranges, as two threads get them */
            kq->gemm(&a, 0, 16);
            kq->gemm(&a, 16, rows);
            for (int64_t j = 0; j < n; j++)
                for (int64_t r = 0; r < rows; r++) {
                    double ref = 0.0, mag = 0.0;
                    for (int64_t i = 0; i < k; i++) {
                        const double p = (double)fc_bf16_to_fp32(w[r * k + i]) *
                                         (double)fc_bf16_to_fp32(fc_fp32_to_bf16(x[j * k + i]));
                        ref += p;
                        mag += fabs(p);
                    }
                    /* float32 sums of at most 2*4160/16 + 16 terms per lane: well under 2^-14 * mag */
                    const double err = fabs((double)y[j * rows + r] - ref);
                    checked++;
                    if (!(err <= mag * 0x1p-14 + 1e-30)) {
                        if (bad++ < 5)
                            printf("k=%ld n=%ld row=%ld act=%ld: got %.9g want %.9g\n", (long)k, (long)n,
                                   (long)r, (long)j, y[j * rows + r], ref);
                    }
                }
            free(w); free(x); free(y); free(xq);
        }
    printf("checked=%ld bad=%ld\n", checked, bad);
    return bad != 0;
}
