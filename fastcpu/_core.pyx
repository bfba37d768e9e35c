# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin binding over the fastcpu C library. Callers (fastcpu.kernels) validate arguments first;
this layer only re-checks what would make the C code read or write out of bounds."""
from libc.stdint cimport int64_t, uint8_t

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


def membw(size_t nbytes, int threads, int passes):
    cdef double r
    with nogil:
        r = fc_membw(nbytes, threads, passes)
    if r < 0:
        raise MemoryError("could not allocate the bandwidth buffer")
    return r
