# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin binding over the fastcpu C library. Callers (fastcpu.kernels) validate arguments first;
this layer only re-checks what would make the C code read or write out of bounds."""
from libc.stdint cimport int32_t, int64_t, uint8_t

import numpy as np

FEATURE_NAMES = ("sse42", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                 "avx512dq", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8",
                 "amx_bf16", "os_avx", "os_avx512", "os_amx", "amx_permitted")


def cpu_features():
    cdef const fc_cpu_features *f = fc_cpu()
    d = {
        "sse42": f.sse42, "avx": f.avx, "avx2": f.avx2, "fma": f.fma, "f16c": f.f16c,
        "avx512f": f.avx512f, "avx512bw": f.avx512bw, "avx512vl": f.avx512vl,
        "avx512dq": f.avx512dq, "avx512_vnni": f.avx512_vnni, "avx512_bf16": f.avx512_bf16,
        "avx_vnni": f.avx_vnni, "amx_tile": f.amx_tile, "amx_int8": f.amx_int8,
        "amx_bf16": f.amx_bf16, "os_avx": f.os_avx, "os_avx512": f.os_avx512,
        "os_amx": f.os_amx, "amx_permitted": f.amx_permitted,
    }
    d = {k: bool(v) for k, v in d.items()}
    d["physical_cores"] = f.physical_cores
    d["logical_cpus"] = f.logical_cpus
    return d


def isa_count():
    return FC_ISA_COUNT


def isa_name(int isa):
    return fc_isa_name(isa).decode()


def isa_from_name(str name):
    return fc_isa_from_name(name.encode())


def isa_supported(int isa):
    """(supported, reason_if_not)"""
    cdef const char *why = NULL
    ok = fc_isa_supported(isa, &why)
    return bool(ok), (why.decode() if why != NULL else None)


def isa_best():
    return fc_isa_best()


def isa_current():
    return fc_isa_current()


def isa_set(int isa):
    return fc_isa_set(isa) == 0


def block_size(int qtype):
    return fc_block_size(qtype)


def type_size(int qtype):
    return fc_type_size(qtype)


def row_bytes(int qtype, int64_t cols):
    return fc_row_bytes(qtype, cols)


def qtype_supported(int qtype):
    return bool(fc_qtype_supported(qtype))


def kernel_isa(int qtype):
    """Name of the level whose kernel serves qtype at the current level."""
    cdef const fc_table *t = fc_tab()
    if qtype < 0 or qtype >= 31:
        return None
    return fc_isa_name(t.q[qtype].isa).decode()


def default_threads():
    return fc_default_threads()


def gemm(int qtype, const uint8_t[:, ::1] w, int64_t rows, int64_t cols,
         const float[:, ::1] x, float[:, ::1] y, int threads):
    cdef const char *err = fc_gemm_check(qtype, rows, cols, x.shape[0], threads)
    if err != NULL:
        raise ValueError(err.decode())
    if w.shape[0] != rows or <size_t>w.shape[1] != fc_row_bytes(qtype, cols):
        raise ValueError("weight array shape disagrees with rows/cols/qtype")
    if x.shape[1] != cols or y.shape[0] != x.shape[0] or y.shape[1] != rows:
        raise ValueError("activation/output shape mismatch")
    cdef int rc
    cdef int64_t n = x.shape[0]
    with nogil:
        rc = fc_gemm(qtype, &w[0, 0], rows, cols, &x[0, 0], n, &y[0, 0], threads, NULL)
    if rc != 0:
        raise MemoryError("fc_gemm could not allocate its work buffer")


def dequantize(int qtype, const uint8_t[::1] src, float[::1] dst):
    cdef int64_t n = dst.shape[0]
    cdef size_t nb = fc_row_bytes(qtype, n)
    if nb == 0 or <size_t>src.shape[0] < nb:
        raise ValueError("source too small or count not a whole number of blocks")
    if fc_tab().q[qtype].dequantize == NULL:
        raise ValueError("no dequantizer for this qtype")
    with nogil:
        fc_dequantize(qtype, &src[0], &dst[0], n)


def quantize(int qtype, const float[::1] src, uint8_t[::1] dst):
    cdef int64_t n = src.shape[0]
    cdef size_t nb = fc_row_bytes(qtype, n)
    if nb == 0 or <size_t>dst.shape[0] < nb:
        raise ValueError("destination too small or count not a whole number of blocks")
    cdef int rc
    with nogil:
        rc = fc_quantize(qtype, &src[0], &dst[0], n)
    if rc != 0:
        raise ValueError("no quantizer for this qtype")


def membw(size_t nbytes, int threads, int passes):
    cdef double r
    with nogil:
        r = fc_membw(nbytes, threads, passes)
    if r < 0:
        raise MemoryError("could not allocate the bandwidth buffer")
    return r


def topk(const float[::1] x, int64_t k):
    """int64 indices of the k largest values of x, best first (ties: lower index first)."""
    if k < 0:
        raise ValueError("k must be >= 0")
    cdef int64_t n = x.shape[0]
    if k > n:
        k = n
    out = np.empty(k, dtype=np.int64)
    cdef int64_t[::1] o = out
    if k > 0:
        with nogil:
            fc_topk(&x[0], n, k, &o[0])
    return out


def sample_scratch_bytes(int64_t n, int64_t n_recent):
    """Bytes of the scratch buffer that sample() needs for a row of n logits."""
    if n < 1 or n_recent < 0:
        raise ValueError("n must be >= 1 and n_recent >= 0")
    return fc_sample_scratch_bytes(n, n_recent)


def sample(const float[::1] logits, double temperature, int64_t top_k, double top_p, double min_p,
           double repeat_penalty, double presence_penalty, double frequency_penalty,
           const int32_t[::1] recent, double u, uint8_t[::1] scratch):
    """One token id drawn from logits by fc_sample (see fastcpu.sampler.sample for the chain).
    recent: the tokens the penalties look at (each in [0, n)); u: the random number in [0, 1);
    scratch: sample_scratch_bytes(n, len(recent)) bytes, 8-byte aligned."""
    cdef int64_t n = logits.shape[0]
    cdef int64_t nr = recent.shape[0]
    cdef int64_t i
    if n < 1:
        raise ValueError("empty logits row")
    if not (0.0 <= u < 1.0):
        raise ValueError(f"u must be in [0, 1), got {u}")
    if not (temperature >= 0.0 and 0.0 <= top_p <= 1.0 and 0.0 <= min_p <= 1.0 and repeat_penalty > 0.0
            and top_k >= 0):
        raise ValueError("sampling parameters out of range")
    if <size_t>scratch.shape[0] < fc_sample_scratch_bytes(n, nr):
        raise ValueError(f"scratch too small: {scratch.shape[0]} bytes, need {fc_sample_scratch_bytes(n, nr)}")
    if (<size_t>&scratch[0]) % 8:
        raise ValueError("scratch must be 8-byte aligned")
    for i in range(nr):
        if recent[i] < 0 or recent[i] >= n:
            raise ValueError(f"recent token {recent[i]} out of range for {n} logits")
    cdef fc_sampling p
    p.temperature = temperature
    p.top_k = top_k
    p.top_p = top_p
    p.min_p = min_p
    p.repeat_penalty = repeat_penalty
    p.presence_penalty = presence_penalty
    p.frequency_penalty = frequency_penalty
    cdef int64_t t
    cdef const int32_t *rp = &recent[0] if nr > 0 else NULL
    with nogil:
        t = fc_sample(&logits[0], n, &p, rp, nr, u, &scratch[0])
    return t


cdef class PreparedWeight:
    """A weight matrix prepared (possibly repacked behind a layout tag) for the level in use when
    it was made. Keeps the source array alive while the kernel may read it."""
    cdef fc_weight w
    cdef object src
    cdef bint ready

    def __cinit__(self, int qtype, const uint8_t[:, ::1] data, int64_t rows, int64_t cols):
        self.ready = False
        cdef const char *err = fc_weight_check(qtype, rows, cols)
        if err != NULL:
            raise ValueError(err.decode())
        if data.shape[0] != rows or <size_t>data.shape[1] != fc_row_bytes(qtype, cols):
            raise ValueError("weight array shape disagrees with rows/cols/qtype")
        self.src = data
        cdef int rc = fc_weight_prepare(&self.w, qtype, &data[0, 0], rows, cols)
        if rc == -2:
            raise ValueError("no kernel for this qtype")
        if rc != 0:
            raise MemoryError("could not allocate the repacked weights")
        self.ready = True

    def __dealloc__(self):
        if self.ready:
            fc_weight_release(&self.w)

    @property
    def layout(self):
        return self.w.layout

    @property
    def isa(self):
        return fc_isa_name(self.w.isa).decode()

    @property
    def owned_bytes(self):
        return self.w.owned_bytes

    @property
    def shape(self):
        return (self.w.rows, self.w.cols)

    def gemm(self, const float[:, ::1] x, float[:, ::1] y, int threads):
        if x.shape[1] != self.w.cols or y.shape[0] != x.shape[0] or y.shape[1] != self.w.rows:
            raise ValueError("activation/output shape mismatch")
        if x.shape[0] < 1:
            raise ValueError("no activation rows")
        cdef int rc
        cdef int64_t n = x.shape[0]
        with nogil:
            rc = fc_gemm_w(&self.w, &x[0, 0], n, &y[0, 0], threads, NULL)
        if rc != 0:
            raise MemoryError("fc_gemm_w could not allocate its work buffer")


# ---- AMX: small-batch switch and tile-program test hooks ----
def amx_min_rows():
    return fc_amx_get_min_rows()


def amx_default_min_rows():
    return FC_AMX_MIN_ROWS


def amx_set_min_rows(int n):
    fc_amx_set_min_rows(n)


def amx_test_exec(bint hardware, const int64_t[:, ::1] ops, uint8_t[::1] mem):
    """Runs a tile program (rows of {code, t, a, b, offset, stride}, see amx_kernels.inc) on the tile
    model, or on the real tiles when `hardware`. Returns the model's first fault or None."""
    cdef int64_t i, off, stride
    cdef Py_ssize_t nbytes = mem.shape[0]
    if ops.shape[1] != 6:
        raise ValueError("ops must have 6 columns")
    for i in range(ops.shape[0]):
        off, stride = ops[i, 4], ops[i, 5]
        if ops[i, 0] in (1, 3, 4):
            # a tile spans at most 16 rows of 64 bytes; the configuration is 64 bytes
            if off < 0 or stride < 0 or off + 15 * stride + 64 > nbytes:
                raise ValueError(f"op {i}: memory operand out of the arena")
    if hardware:
        ok = fc_isa_supported(5, NULL)
        if not ok:
            raise RuntimeError("this CPU cannot run AMX")
    cdef const char *f
    cdef int n = <int>ops.shape[0]
    if n == 0:
        return None
    if hardware:
        f = fc_amx_test_exec_amx(&ops[0, 0], n, &mem[0])
    else:
        f = fc_amx_test_exec_amxsim(&ops[0, 0], n, &mem[0])
    return None if f == NULL else f.decode()


# ---- ops of one level, for tests and benchmarks (the model calls them from C) ----
cdef const fc_table *_table(int isa) except NULL:
    cdef const fc_table *t = fc_tab_for(isa)
    if t == NULL:
        raise ValueError("ISA level not usable here")
    return t


def op_rmsnorm(int isa, float[::1] out, const float[::1] x, const float[::1] w, float eps):
    assert out.shape[0] == x.shape[0] == w.shape[0]
    _table(isa).ops.rmsnorm(&out[0], &x[0], &w[0], x.shape[0], eps)


def op_rope(int isa, float[:, ::1] x, int64_t pos, const float[::1] inv_freq, bint neox):
    assert inv_freq.shape[0] * 2 == x.shape[1]
    _table(isa).ops.rope(&x[0, 0], x.shape[0], x.shape[1], pos, &inv_freq[0], neox)


def op_softmax(int isa, float[::1] x):
    _table(isa).ops.softmax(&x[0], x.shape[0])


def op_silu_mul(int isa, float[::1] out, const float[::1] gate, const float[::1] up):
    assert out.shape[0] == gate.shape[0] == up.shape[0]
    _table(isa).ops.silu_mul(&out[0], &gate[0], &up[0], out.shape[0])


def op_add(int isa, float[::1] out, const float[::1] a, const float[::1] b):
    assert out.shape[0] == a.shape[0] == b.shape[0]
    _table(isa).ops.add(&out[0], &a[0], &b[0], out.shape[0])


def op_attn_head(int isa, float[::1] out, const float[::1] q, const float[:, ::1] k,
                 const float[:, ::1] v, float scale, float[::1] scores):
    """k, v: (n_pos, kv_stride) with the head's values in the first head_dim columns."""
    cdef int64_t hd = q.shape[0]
    assert out.shape[0] == hd and k.shape[1] >= hd and k.shape[0] == v.shape[0]
    assert k.shape[1] == v.shape[1] and scores.shape[0] >= k.shape[0]
    _table(isa).ops.attn_head(&out[0], &q[0], &k[0, 0], &v[0, 0], k.shape[0], hd, k.shape[1],
                              scale, &scores[0])


def op_attn_group(int isa, float[:, ::1] out, const float[:, ::1] q, const float[:, ::1] k,
                  const float[:, ::1] v, float scale, float[::1] scores, float[::1] lse=None):
    """q, out: (n_heads, head_dim); k, v: (n_pos, kv_stride), the shared head in the first
    head_dim columns; scores: n_heads * n_pos; lse (optional, n_heads): each head's
    log-sum-exp of its scaled scores."""
    cdef int64_t nh = q.shape[0], hd = q.shape[1]
    assert out.shape[0] == nh and out.shape[1] == hd and k.shape[1] >= hd and k.shape[0] == v.shape[0]
    assert k.shape[1] == v.shape[1] and scores.shape[0] >= nh * k.shape[0]
    assert lse is None or lse.shape[0] >= nh
    _table(isa).ops.attn_group(&out[0, 0], &q[0, 0], nh, &k[0, 0], &v[0, 0], k.shape[0], hd, k.shape[1],
                               scale, &scores[0], NULL if lse is None else &lse[0])


def op_attn_group_f16(int isa, float[:, ::1] out, const float[:, ::1] q, const uint16_t[:, ::1] k,
                      const uint16_t[:, ::1] v, float scale, float[::1] scores, float[::1] lse=None):
    """op_attn_group over float16 K/V rows (given as their uint16 bit patterns)."""
    cdef int64_t nh = q.shape[0], hd = q.shape[1]
    assert out.shape[0] == nh and out.shape[1] == hd and k.shape[1] >= hd and k.shape[0] == v.shape[0]
    assert k.shape[1] == v.shape[1] and scores.shape[0] >= nh * k.shape[0]
    assert lse is None or lse.shape[0] >= nh
    _table(isa).ops.attn_group_f16(&out[0, 0], &q[0, 0], nh, &k[0, 0], &v[0, 0], k.shape[0], hd, k.shape[1],
                                   scale, &scores[0], NULL if lse is None else &lse[0])


def op_to_f16(int isa, uint16_t[::1] out, const float[::1] x):
    assert out.shape[0] == x.shape[0]
    _table(isa).ops.to_f16(&out[0], &x[0], x.shape[0])


def op_sum_read(int isa, const float[::1] x):
    return _table(isa).ops.sum_read(&x[0], x.shape[0])
