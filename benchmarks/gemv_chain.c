/* The GEMVs of one decode step and nothing else: a model's matrices, from its GGUF file, prepared
 * as the runner prepares them (fused Q/K/V and gate/up as segments, repacked per the ISA level),
 * multiplied in the step's order against one activation row, with no attention, norms or other
 * row-wise work between them. Its bytes / time over the machine's read bandwidth (fc_membw, same
 * threads, measured right before and after) bound what a whole decode step can reach with these
 * kernels. Driven by gemv_chain.py, which builds it and lists the matrices on stdin, one per line:
 *     qtype cols nseg offset_0 rows_0 ... offset_{nseg-1} rows_{nseg-1}
 * (offsets into the file). Prints one JSON object. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fastcpu/fastcpu.h"

#define MAX_MATS 4096

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: gemv_chain MODEL.gguf THREADS STEPS < matrices\n");
        return 2;
    }
    const int threads = atoi(argv[2]), steps = atoi(argv[3]);
    const int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        perror(argv[1]);
        return 1;
    }
    const unsigned char *file = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (file == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    static fc_weight w[MAX_MATS];
    int nw = 0;
    int64_t max_dim = 0;
    size_t bytes = 0; /* weight bytes a step reads, as the file stores them (the runner's count, less
                         its embedding row and norm weights) */
    int qtype, nseg;
    long long cols;
    while (nw < MAX_MATS && scanf("%d %lld %d", &qtype, &cols, &nseg) == 3) {
        if (!fc_qtype_supported(qtype) || cols < 1)
            return fprintf(stderr, "matrix %d: no kernel for type %d x %lld columns\n", nw, qtype, cols), 1;
        if (nseg < 1 || nseg > FC_WEIGHT_MAX_SEGS) return fprintf(stderr, "bad segment count %d\n", nseg), 1;
        const void *data[FC_WEIGHT_MAX_SEGS];
        int64_t rows[FC_WEIGHT_MAX_SEGS], total = 0;
        for (int s = 0; s < nseg; s++) {
            long long off, r;
            if (scanf("%lld %lld", &off, &r) != 2) return fprintf(stderr, "short matrix line\n"), 1;
            if (off < 0 || r < 1 || off >= st.st_size || r > st.st_size || cols > st.st_size)
                return fprintf(stderr, "matrix %d outside the file\n", nw), 1;
            const size_t need = fc_row_bytes(qtype, cols) * (size_t)r; /* both factors < file size */
            if (need > (size_t)st.st_size - (size_t)off)
                return fprintf(stderr, "matrix %d outside the file\n", nw), 1;
            data[s] = file + off;
            rows[s] = r;
            total += r;
        }
        const char *why = fc_weight_check(qtype, total, cols);
        if (why) return fprintf(stderr, "matrix %d: %s\n", nw, why), 1;
        int rc = fc_weight_prepare_segments(&w[nw], qtype, data, rows, nseg, cols);
        if (rc == -3) { /* the runner concatenates then */
            unsigned char *cat = malloc(fc_row_bytes(qtype, cols) * (size_t)total), *p = cat;
            if (!cat) return 1;
            for (int s = 0; s < nseg; s++) {
                const size_t n = fc_row_bytes(qtype, cols) * (size_t)rows[s];
                memcpy(p, data[s], n);
                p += n;
            }
            rc = fc_weight_prepare(&w[nw], qtype, cat, total, cols); /* cat stays: data must outlive w */
        }
        if (rc) return fprintf(stderr, "matrix %d: prepare failed (%d)\n", nw, rc), 1;
        bytes += fc_row_bytes(qtype, cols) * (size_t)total;
        if (cols > max_dim) max_dim = cols;
        if (total > max_dim) max_dim = total;
        nw++;
    }
    if (nw == 0) return fprintf(stderr, "no matrices\n"), 1;
    size_t work_bytes = 0;
    for (int i = 0; i < nw; i++) {
        const size_t b = fc_gemm_w_work_bytes(&w[i], 1);
        if (b > work_bytes) work_bytes = b;
    }
    float *x = malloc(sizeof(float) * (size_t)max_dim), *y = malloc(sizeof(float) * (size_t)max_dim);
    void *work = aligned_alloc(64, (work_bytes + 63) & ~(size_t)63);
    if (!x || !y || !work) return 1;
    for (int64_t i = 0; i < max_dim; i++) x[i] = (float)((i * 37) % 17 - 8) * 0.125f;

    for (int i = 0; i < nw; i++) fc_gemm_w(&w[i], x, 1, y, threads, work); /* page in, wake the pool */
    const double bw0 = fc_membw((size_t)512 << 20, threads, 5);
    double *t = malloc(sizeof(double) * (size_t)steps);
    if (!t) return 1;
    for (int s = 0; s < steps; s++) {
        const double t0 = now_s();
        /* each output feeds nothing: the inputs stay fixed, so only the reads and the kernels count */
        for (int i = 0; i < nw; i++) fc_gemm_w(&w[i], x, 1, y, threads, work);
        t[s] = now_s() - t0;
    }
    const double bw1 = fc_membw((size_t)512 << 20, threads, 5);
    qsort(t, (size_t)steps, sizeof(double), cmp_double);
    const double med = t[steps / 2], bw = 0.5 * (bw0 + bw1);
    printf("{\"matrices\": %d, \"threads\": %d, \"steps\": %d, \"bytes_per_step\": %zu, \"step_ms_median\": %.4f, "
           "\"step_ms_min\": %.4f, \"chain_gbps\": %.3f, \"membw_gbps\": %.3f, \"membw_before_after_gbps\": [%.3f, %.3f], "
           "\"chain_roofline_pct\": %.2f}\n",
           nw, threads, steps, bytes, med * 1e3, t[0] * 1e3, bytes / med / 1e9, bw / 1e9, bw0 / 1e9, bw1 / 1e9,
           100.0 * bytes / med / bw);
    return 0;
}
