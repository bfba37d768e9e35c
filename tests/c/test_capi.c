/* C API smoke test: links against libfastcpu.so through the public header only.
 *
 * usage: test_capi QTYPE ROWS COLS INPUT
 *   INPUT holds ROWS rows of GGUF blocks (fc_row_bytes(QTYPE, COLS) bytes each) followed by COLS
 *   float32 activations. Prints the level in use, then two tokens drawn from y as logits by
 *   fc_sample (greedy; temperature 0.8, top-k 5, top-p 0.9, repeat penalty 1.3 over tokens 0..2,
 *   u = 0.5), then y = W x (one value per line, %.9g), computed by fc_gemv; checks that
 *   fc_weight_prepare + fc_gemm_w agree bit for bit.
 * exit: 0 ok, 1 error, 77 no kernel for QTYPE in this build (the caller skips). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fastcpu/fastcpu.h>

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s QTYPE ROWS COLS INPUT\n", argv[0]);
        return 1;
    }
    const int qtype = atoi(argv[1]);
    const int64_t rows = atoll(argv[2]), cols = atoll(argv[3]);
    if (!fc_qtype_supported(qtype)) return 77;
    const char *err = fc_gemm_check(qtype, rows, cols, 1, 0);
    if (err) {
        fprintf(stderr, "fc_gemm_check: %s\n", err);
        return 1;
    }
    const size_t rb = fc_row_bytes(qtype, cols);
    const size_t wbytes = rb * (size_t)rows;
    unsigned char *w = malloc(wbytes);
    float *x = malloc((size_t)cols * sizeof(float));
    float *y = malloc((size_t)rows * sizeof(float));
    float *y2 = malloc((size_t)rows * sizeof(float));
    FILE *f = fopen(argv[4], "rb");
    if (!w || !x || !y || !y2 || !f) {
        fprintf(stderr, "cannot allocate or open %s\n", argv[4]);
        return 1;
    }
    if (fread(w, 1, wbytes, f) != wbytes || fread(x, sizeof(float), (size_t)cols, f) != (size_t)cols) {
        fprintf(stderr, "short input file\n");
        return 1;
    }
    fclose(f);

    if (fc_gemv(qtype, w, rows, cols, x, y, 2) != 0) {
        fprintf(stderr, "fc_gemv failed\n");
        return 1;
    }
    fc_weight pw;
    if (fc_weight_prepare(&pw, qtype, w, rows, cols) != 0 || fc_gemm_w(&pw, x, 1, y2, 2, NULL) != 0) {
        fprintf(stderr, "prepared weights failed\n");
        return 1;
    }
    fc_weight_release(&pw);
    if (memcmp(y, y2, (size_t)rows * sizeof(float)) != 0) {
        fprintf(stderr, "fc_gemm_w disagrees with fc_gemv\n");
        return 1;
    }

    printf("%s\n", fc_isa_name(fc_isa_current()));
    const int32_t recent[3] = {0, 1, 2};
    void *scratch = malloc(fc_sample_scratch_bytes(rows, 3));
    if (!scratch) return 1;
    const fc_sampling greedy = {.temperature = 0.0, .top_p = 1.0, .repeat_penalty = 1.0};
    const fc_sampling chain = {.temperature = 0.8, .top_k = 5, .top_p = 0.9, .min_p = 0.0, .repeat_penalty = 1.3};
    printf("%lld %lld\n", (long long)fc_sample(y, rows, &greedy, NULL, 0, 0.0, scratch),
           (long long)fc_sample(y, rows, &chain, recent, 3, 0.5, scratch));
    free(scratch);
    for (int64_t r = 0; r < rows; r++) printf("%.9g\n", y[r]);
    free(w);
    free(x);
    free(y);
    free(y2);
    return 0;
}
