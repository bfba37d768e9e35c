# C declarations of the fastcpu library (csrc/include/fastcpu/fastcpu.h, csrc/fc_internal.h).
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t

cdef extern from "fastcpu/fastcpu.h" nogil:
    ctypedef struct fc_cpu_features:
        int sse42, avx, avx2, fma, f16c
        int avx512f, avx512bw, avx512vl, avx512dq, avx512_vnni, avx512_bf16, avx_vnni
        int amx_tile, amx_int8, amx_bf16
        int os_avx, os_avx512, os_amx, amx_permitted
        int physical_cores, logical_cpus
    ctypedef int fc_isa
    int FC_ISA_COUNT
    const fc_cpu_features *fc_cpu()
    const char *fc_isa_name(fc_isa isa)
    int fc_isa_from_name(const char *name)
    int fc_isa_supported(fc_isa isa, const char **why)
    fc_isa fc_isa_best()
    fc_isa fc_isa_current()
    int fc_isa_set(fc_isa isa)
    int64_t fc_block_size(int qtype)
    int64_t fc_type_size(int qtype)
    size_t fc_row_bytes(int qtype, int64_t cols)
    const char *fc_qtype_name(int qtype)
    int fc_qtype_supported(int qtype)
    size_t fc_gemm_work_bytes(int qtype, int64_t cols, int64_t n)
    int fc_gemm(int qtype, const void *w, int64_t rows, int64_t cols, const float *x, int64_t n,
                float *y, int threads, void *work)
    const char *fc_gemm_check(int qtype, int64_t rows, int64_t cols, int64_t n, int threads)
    const char *fc_weight_check(int qtype, int64_t rows, int64_t cols)
    void fc_dequantize(int qtype, const void *src, float *dst, int64_t n)
    int fc_quantize(int qtype, const float *src, void *dst, int64_t n)
    double fc_membw(size_t nbytes, int threads, int passes)
    int64_t fc_topk(const float *x, int64_t n, int64_t k, int64_t *idx)
    ctypedef struct fc_sampling:
        double temperature, top_p, min_p
        double repeat_penalty, presence_penalty, frequency_penalty
        int64_t top_k
    size_t fc_sample_scratch_bytes(int64_t n, int64_t n_recent)
    int64_t fc_sample(const float *logits, int64_t n, const fc_sampling *p, const int32_t *recent,
                      int64_t n_recent, double u, void *scratch)
    ctypedef struct fc_weight:
        int qtype
        int layout
        int isa
        int64_t rows, cols
        const void *data
        size_t row_bytes
        size_t owned_bytes
    int fc_weight_prepare(fc_weight *w, int qtype, const void *data, int64_t rows, int64_t cols)
    void fc_weight_release(fc_weight *w)
    int fc_gemm_w(const fc_weight *w, const float *x, int64_t n, float *y, int threads, void *work)
    size_t fc_gemm_w_work_bytes(const fc_weight *w, int64_t n)
    int fc_default_threads()

cdef extern from "fc_internal.h" nogil:
    ctypedef struct fc_ops:
        void (*rmsnorm)(float *out, const float *x, const float *w, int64_t n, float eps)
        void (*rope)(float *x, int64_t n_heads, int64_t head_dim, int64_t pos, const float *inv_freq, int neox)
        void (*softmax)(float *x, int64_t n)
        void (*silu_mul)(float *out, const float *gate, const float *up, int64_t n)
        void (*add)(float *out, const float *a, const float *b, int64_t n)
        void (*attn_head)(float *out, const float *q, const float *k, const float *v, int64_t n_pos,
                          int64_t head_dim, int64_t kv_stride, float scale, float *scores)
        void (*attn_group)(float *out, const float *q, int64_t n_heads, const float *k, const float *v,
                           int64_t n_pos, int64_t head_dim, int64_t kv_stride, float scale, float *scores,
                           float *lse)
        void (*attn_group_f16)(float *out, const float *q, int64_t n_heads, const uint16_t *k,
                               const uint16_t *v, int64_t n_pos, int64_t head_dim, int64_t kv_stride, float scale,
                               float *scores, float *lse)
        void (*to_f16)(uint16_t *out, const float *x, int64_t n)
        double (*sum_read)(const float *x, int64_t n)
    ctypedef struct fc_qkernel:
        size_t (*act_row_bytes)(int64_t k)
        void (*quantize)(const float *x, void *xq, int64_t k)
        void (*dequantize)(const void *src, float *dst, int64_t n)
        void (*gemm)(const void *a, int64_t r0, int64_t r1)
        fc_isa isa
        int layout
    ctypedef struct fc_table:
        fc_qkernel q[31]
        fc_qkernel qp[31]
        fc_ops ops
    const fc_table *fc_tab()
    void fc_amx_set_min_rows(int n)
    int fc_amx_get_min_rows()
    int FC_AMX_MIN_ROWS
    const char *fc_amx_test_exec_amxsim(const int64_t *ops, int nops, uint8_t *mem)
    const char *fc_amx_test_exec_amx(const int64_t *ops, int nops, uint8_t *mem)
    const fc_table *fc_tab_for(fc_isa isa)
