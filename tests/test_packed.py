"""Packed kernels (weights repacked once at load behind a layout tag: the x16 kernels at AVX-512
VNNI, the AMX tiles and their model) at every level this CPU runs, for every format that has one
there; a (format, level) whose prepared weight keeps the GGUF layout is skipped. Against the gguf
package's reference within tests/tolerances.py's bound; thread counts and batch sizes must not
change a bit; fused matrices packed per segment through the C API (fc_weight_prepare_segments)
must equal the concatenated matrix. AMX levels run with the small-batch switch at 1, so that the
tiles, not the level below, serve every batch."""
import contextlib
import ctypes
import os
import zlib

import numpy as np
import pytest

import fastcpu
from fastcpu import kernels
from kernel_ref import activations, cols_for, dequantize, q8h_values, random_weights
from tolerances import gemm_bound

QTYPES = [q for q in kernels.QTYPES if q != "F32"]
ROWS = [1, 3, 16, 17, 33]
NS = [1, 2, 3, 5, 70]
BF16_PATH = {"BF16", "F16"}  # packed only where the level runs bf16 tiles


def _rng(*key):
    return np.random.default_rng(zlib.crc32("/".join(map(str, key)).encode()))


@contextlib.contextmanager
def _tiles_always(isa):
    if isa in ("amx", "amx_sim"):
        with kernels.amx_min_rows_set(1):
            yield
    else:
        yield


@pytest.fixture
def packed(isa, request):
    """(isa, qtype) of a level and format with a packed kernel, else skip."""
    qtype = request.param
    w = random_weights(qtype, 16, cols_for(qtype)[0], _rng("probe", qtype))
    try:
        p = kernels.prepare(w, qtype)
    except ValueError as e:
        pytest.skip(f"{qtype} at {isa}: {e}")
    if p.layout == 0:
        pytest.skip(f"{qtype} at {isa} keeps the GGUF layout")
    with _tiles_always(isa):
        yield isa, qtype


def _params():
    return pytest.mark.parametrize("packed", QTYPES, indirect=True)


def _check(qtype, w, X, Y, what):
    Wd = dequantize(qtype, w).astype(np.float64)
    ref = X.astype(np.float64) @ Wd.T
    bf16 = qtype in BF16_PATH
    bound = gemm_bound(qtype, Wd, X, bf16_acts=bf16, bf16_weights=qtype == "F16")
    err = np.abs(Y.astype(np.float64) - ref)
    worst = np.unravel_index(np.argmax(err / bound), err.shape)
    assert (err <= bound).all(), f"{what}: error {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst}"


@_params()
def test_packed_gemm(packed):
    isa, qtype = packed
    for cols in cols_for(qtype):
        rng = _rng(qtype, cols)
        for rows in ROWS:
            w = random_weights(qtype, rows, cols, rng)
            p = kernels.prepare(w, qtype)
            assert p.layout != 0 and p.isa == isa and p.owned_bytes > 0
            for n in NS:
                X = activations(n, cols, rng)
                _check(qtype, w, X, p.gemm(X, threads=2), f"{qtype} @ {isa} rows={rows} cols={cols} n={n}")


# Packed layouts and the activation values their kernels read: "scalar" = the scalar
# specification's quantizer (the same values, only stored in another order), "q8h" = int8 with a
# scale per 16 values (legacy_common.h, q8h_quantize; kernel_ref.q8h_values models it). Their
# integer products are then exact, so they must agree with the spec up to float32 rounding of the
# scale products and block sums, far tighter than the reference bound above (which a wrong bit in
# a few codes can hide in).
SPEC_ACTIVATIONS = {0x58313601: "q8h", 0x4b313601: "scalar"}
SPEC_RTOL = 2e-6  # measured <= 1e-7 of sum |w x|


@_params()
def test_packed_matches_spec(packed):
    isa, qtype = packed
    rng = _rng("spec", qtype)
    for cols in cols_for(qtype):
        w = random_weights(qtype, 33, cols, rng)
        X = activations(5, cols, rng)
        p = kernels.prepare(w, qtype)
        if p.layout not in SPEC_ACTIVATIONS:
            pytest.skip(f"{qtype} at {isa}: layout {p.layout:#x} quantizes activations its own way")
        Y = p.gemm(X, threads=2)
        Wd = dequantize(qtype, w).astype(np.float64)
        if SPEC_ACTIVATIONS[p.layout] == "q8h":
            R = q8h_values(X) @ Wd.T
        else:
            with kernels.use_isa("scalar"):
                R = kernels.gemm(w, qtype, X, threads=1)
        scale = np.abs(X.astype(np.float64)) @ np.abs(Wd).T
        rel = np.abs(Y.astype(np.float64) - R) / scale
        assert rel.max() <= SPEC_RTOL, f"{qtype} @ {isa} cols={cols}: {rel.max():.3g} of sum |w x| off the spec"


@_params()
def test_packed_threads_agree(packed):
    """Rows go to threads in whole row groups; no bit may depend on the split."""
    isa, qtype = packed
    rng = _rng("threads", qtype)
    cols = cols_for(qtype)[1]
    w = random_weights(qtype, 81, cols, rng)
    X = activations(6, cols, rng)
    p = kernels.prepare(w, qtype)
    ys = [p.gemm(X, threads=t) for t in (1, 2, 3)]
    for y in ys[1:]:
        np.testing.assert_array_equal(ys[0], y)


@_params()
def test_packed_batch_invariant(packed):
    """An activation row gives the same bits alone as inside a batch (decode vs prefill)."""
    isa, qtype = packed
    rng = _rng("batch", qtype)
    cols = cols_for(qtype)[-1]
    w = random_weights(qtype, 33, cols, rng)
    X = activations(5, cols, rng)
    p = kernels.prepare(w, qtype)
    Y = p.gemm(X, threads=1)
    for j in range(X.shape[0]):
        np.testing.assert_array_equal(p.gemm(X[j:j + 1], threads=1)[0], Y[j], err_msg=f"row {j}")


# Levels whose kernel over stored GGUF rows is not the packed kernel's twin: the AMX tiles' stored-row
# fallback is the level below, which rounds differently.
NOT_TWINS = {"amx", "amx_sim"}


@_params()
def test_packed_equals_stored(packed):
    """The kernel over the GGUF rows as stored (kernels.gemm/gemv, and weight streaming, which always
    reads stored rows) is the packed kernel's gather twin: the same bits for any rows, batch and
    thread split, so a streamed model gives the resident model's logits exactly; and a GEMV equals
    its row of a GEMM."""
    isa, qtype = packed
    if isa in NOT_TWINS:
        pytest.skip(f"{isa}: the stored-row fallback is the level below, not a twin")
    for cols in cols_for(qtype):
        rng = _rng("twin", qtype, cols)
        for rows in ROWS:
            w = random_weights(qtype, rows, cols, rng)
            p = kernels.prepare(w, qtype)
            for n in NS:
                X = activations(n, cols, rng)
                what = f"{qtype} @ {isa} rows={rows} cols={cols} n={n}"
                for threads in (1, 3):
                    Y = p.gemm(X, threads=threads)
                    np.testing.assert_array_equal(kernels.gemm(w, qtype, X, threads=threads), Y,
                                                  err_msg=f"{what} threads={threads}")
                if n == 5:
                    for i in range(n):
                        np.testing.assert_array_equal(kernels.gemv(w, qtype, X[i], threads=1), Y[i],
                                                      err_msg=f"{what} gemv row {i}")

@pytest.mark.parametrize("packed", ["Q4_K", "Q5_K", "Q6_K"], indirect=True)
@pytest.mark.parametrize("n", [1, 9])
def test_packed_kquant_extremes(packed, n):
    """Every code and sub-scale at its extreme against activations at +-127: the integer sums at
    their bounds (see test_kquant_extremes.py, which covers the GGUF-layout kernels); the stored-row
    twin gives the same bits there too."""
    from test_kquant_extremes import _extreme_weights

    isa, qtype = packed
    rng = np.random.default_rng(17)
    cols = 768
    w = _extreme_weights(qtype, 21, cols, rng)
    X = np.ones((n, cols), np.float32) * rng.uniform(0.5, 4.0, size=(n, 1)).astype(np.float32)
    X[1::2] *= -1.0
    if n > 2:
        X[2] *= np.where(rng.random(cols) < 0.5, -1.0, 1.0).astype(np.float32)
    Y = kernels.prepare(w, qtype).gemm(X, threads=2)
    _check(qtype, w, X, Y, f"{qtype} @ {isa} n={n}")
    if isa not in NOT_TWINS:
        np.testing.assert_array_equal(kernels.gemm(w, qtype, X, threads=2), Y, err_msg=f"{qtype} @ {isa} n={n}")


# ---------------------------------------------------------------- segments (C API)

_MAX_SEGS = 4  # FC_WEIGHT_MAX_SEGS


class _Weight(ctypes.Structure):
    """fc_weight (csrc/include/fastcpu/fastcpu.h)."""
    _fields_ = [("qtype", ctypes.c_int), ("layout", ctypes.c_int), ("isa", ctypes.c_int),
                ("rows", ctypes.c_int64), ("cols", ctypes.c_int64), ("data", ctypes.c_void_p),
                ("src", ctypes.c_void_p), ("row_bytes", ctypes.c_size_t), ("owned_bytes", ctypes.c_size_t),
                ("kernel", ctypes.c_void_p), ("owned", ctypes.c_void_p), ("nseg", ctypes.c_int),
                ("seg_data", ctypes.c_void_p * _MAX_SEGS), ("seg_row0", ctypes.c_int64 * (_MAX_SEGS + 1))]


def _capi():
    """libfastcpu.so as the extension modules loaded it (the same ISA state)."""
    lib = ctypes.CDLL(os.path.join(fastcpu.get_library_dir(), "libfastcpu.so"))
    lib.fc_weight_prepare_segments.argtypes = [ctypes.POINTER(_Weight), ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                                               ctypes.POINTER(ctypes.c_int64), ctypes.c_int, ctypes.c_int64]
    lib.fc_weight_prepare.argtypes = [ctypes.POINTER(_Weight), ctypes.c_int, ctypes.c_void_p, ctypes.c_int64,
                                      ctypes.c_int64]
    lib.fc_gemm_w.argtypes = [ctypes.POINTER(_Weight), ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                              ctypes.c_int, ctypes.c_void_p]
    lib.fc_weight_release.argtypes = [ctypes.POINTER(_Weight)]
    return lib


def _gemm_w(lib, w, X, threads):
    Y = np.zeros((X.shape[0], w.rows), np.float32)
    assert lib.fc_gemm_w(ctypes.byref(w), X.ctypes.data, X.shape[0], Y.ctypes.data, threads, None) == 0
    return Y


@_params()
def test_packed_segments(packed):
    """Q|K|V-like runs packed straight into one copy read as one matrix: the same bits as packing
    the concatenated rows (packed_bytes additive over whole row groups), or -3 (nothing prepared)
    where the kernel cannot pack runs apart or a run but the last is not whole row groups."""
    isa, qtype = packed
    lib = _capi()
    q = kernels.QTYPES[qtype]
    rng = _rng("segments", qtype)
    cols = cols_for(qtype)[1]
    runs = [random_weights(qtype, r, cols, rng) for r in (32, 16, 5)]
    whole = np.ascontiguousarray(np.concatenate(runs))
    X = activations(3, cols, rng)
    ref = kernels.prepare(whole, qtype).gemm(X, threads=1)

    def prepare(parts):
        w = _Weight()
        ptrs = (ctypes.c_void_p * len(parts))(*[p.ctypes.data for p in parts])
        rows = (ctypes.c_int64 * len(parts))(*[p.shape[0] for p in parts])
        return w, lib.fc_weight_prepare_segments(ctypes.byref(w), q, ptrs, rows, len(parts), cols)

    w, rc = prepare(runs)
    if rc == -3:
        pytest.skip(f"{qtype} at {isa}: this packed kernel does not pack runs apart")
    assert rc == 0 and w.layout != 0 and w.nseg == 0 and w.rows == whole.shape[0]
    try:
        np.testing.assert_array_equal(_gemm_w(lib, w, X, 1), ref)
        np.testing.assert_array_equal(_gemm_w(lib, w, X, 3), ref)
        single = _Weight()
        assert lib.fc_weight_prepare(ctypes.byref(single), q, whole.ctypes.data, whole.shape[0], cols) == 0
        assert single.owned_bytes == w.owned_bytes
        assert ctypes.string_at(single.owned, single.owned_bytes) == ctypes.string_at(w.owned, w.owned_bytes)
        lib.fc_weight_release(ctypes.byref(single))
    finally:
        lib.fc_weight_release(ctypes.byref(w))
    # a run that is not whole row groups before the last one: refused, nothing prepared
    odd = [runs[2], runs[0]]
    w, rc = prepare(odd)
    assert rc == -3 and w.owned is None
