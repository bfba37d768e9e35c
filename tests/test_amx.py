"""AMX: the software tile model against hand-computed cases from Intel's specification, every AMX
kernel on the model (level amx_sim) x every format x awkward shapes against the gguf-package
reference, the small-batch switch, dispatch, and (only where the CPU has AMX) the same kernels on
real tiles plus the model against the hardware, bit for bit."""
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from childproc import CHILD_CWD, child_env

import fastcpu
from fastcpu import _core, kernels
from kernel_ref import activations, cols_for, dequantize, random_weights
from tolerances import gemm_bound

AMX_FORMATS = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K", "BF16", "F16"]
BF16_PATH = {"BF16", "F16"}
NS = [1, 3, 15, 16, 17, 33, 64, 65]
ROWS = [1, 15, 17, 33]
HAVE_AMX = kernels.isa_missing("amx") is None
NO_AMX_REASON = f"this CPU cannot run AMX: it lacks {kernels.isa_missing('amx')}"


# ---------------------------------------------------------------- tile programs

class Prog:
    """A tile program for the test hook: ops {code, t, a, b, offset, stride} over one byte arena."""
    CFG, ZERO, LOAD, STORE, SSD, SUD, USD, UUD, BF16, RELEASE = range(1, 11)

    def __init__(self, nbytes=1 << 14):
        self.mem = np.zeros(nbytes, np.uint8)
        self.ops = []
        self._free = 0

    def alloc(self, nbytes):
        off = self._free
        self._free += (nbytes + 63) // 64 * 64
        assert self._free <= self.mem.size
        return off

    def put(self, data):
        data = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        off = self.alloc(data.size + 16 * 64)  # slack: tile reads are bounds-checked at 16 rows
        self.mem[off:off + data.size] = data
        return off

    def cfg(self, tiles, palette=1, start_row=0, raw=None):
        """tiles: {tile: (rows, colsb)}."""
        c = np.zeros(64, np.uint8)
        c[0], c[1] = palette, start_row
        for t, (r, cb) in tiles.items():
            c[16 + 2 * t:18 + 2 * t] = np.frombuffer(struct.pack("<H", cb), np.uint8)
            c[48 + t] = r
        for i, v in (raw or {}).items():
            c[i] = v
        self.ops.append((self.CFG, 0, 0, 0, self.put(c), 0))

    def op(self, code, t=0, a=0, b=0, off=0, stride=0):
        self.ops.append((code, t, a, b, off, stride))

    def run(self, hardware=False):
        ops = np.array(self.ops, np.int64).reshape(-1, 6)
        return _core.amx_test_exec(hardware, ops, self.mem)

    def get(self, off, nbytes):
        return self.mem[off:off + nbytes].copy()


def dp_program(code, c_init, A, B, hardware_tiles=False):
    """C (M x N int32/fp32 as bytes) += A (M x 4K bytes) . B (K x 4N bytes); returns (fault, C)."""
    M, N4 = c_init.shape[0], c_init.view(np.uint8).reshape(c_init.shape[0], -1).shape[1]
    K4 = A.shape[1]
    p = Prog()
    tc, ta, tb = (0, 1, 2) if hardware_tiles else (3, 6, 1)
    p.cfg({tc: (M, N4), ta: (M, K4), tb: (K4 // 4, N4)})
    oc = p.put(c_init)
    oa, ob = p.put(A), p.put(B)
    p.op(Prog.LOAD, tc, off=oc, stride=N4)
    p.op(Prog.LOAD, ta, off=oa, stride=K4)
    p.op(Prog.LOAD, tb, off=ob, stride=N4)
    p.op(code, tc, ta, tb)
    out = p.alloc(16 * 64)
    p.op(Prog.STORE, tc, off=out, stride=N4)
    p.op(Prog.RELEASE)
    return p, out, M * N4


def run_dp(code, c_init, A, B, hardware=False):
    p, out, nb = dp_program(code, c_init, A, B, hardware_tiles=hardware)
    fault = p.run(hardware)
    return fault, p.get(out, nb).view(c_init.dtype).reshape(c_init.shape)


def bf16(x):
    """float32 values that are exact bf16 -> their bf16 bit patterns."""
    b = np.asarray(x, np.float32).view(np.uint32)
    assert ((b & 0xFFFF) == 0).all(), "not exactly representable in bf16"
    return (b >> 16).astype(np.uint16)


def f32(bits):
    return np.array(bits, np.uint32).view(np.float32)


def int_dp_reference(c, A, B, a_signed, b_signed):
    a = A.view(np.int8) if a_signed else A
    b = B.view(np.int8) if b_signed else B
    M, K = A.shape[0], A.shape[1] // 4
    N = B.shape[1] // 4
    a = a.astype(np.int64).reshape(M, K, 4)
    b = b.astype(np.int64).reshape(K, N, 4)
    s = np.einsum("mki,kni->mn", a, b) + c.astype(np.int64)
    return ((s + 2**31) % 2**32 - 2**31).astype(np.int32)


# ---------------------------------------------------------------- the model: integer dot products

SIGNS = {Prog.SSD: (1, 1), Prog.SUD: (1, 0), Prog.USD: (0, 1), Prog.UUD: (0, 0)}


def test_model_int8_sign_handling_hand_computed():
    # one dword each: A bytes (as stored) 0xFF, 0x02, 0x80, 0x7F; B bytes 0xFF, 0xFF, 0x80, 0x7F
    A = np.array([[0xFF, 0x02, 0x80, 0x7F]], np.uint8)
    B = np.array([[0xFF, 0xFF, 0x80, 0x7F]], np.uint8)
    c = np.zeros((1, 1), np.int32)
    want = {
        Prog.SSD: (-1) * (-1) + 2 * (-1) + (-128) * (-128) + 127 * 127,  # 32512
        Prog.USD: 255 * (-1) + 2 * (-1) + 128 * (-128) + 127 * 127,      # -512
        Prog.SUD: (-1) * 255 + 2 * 255 + (-128) * 128 + 127 * 127,       # 0
        Prog.UUD: 255 * 255 + 2 * 255 + 128 * 128 + 127 * 127,           # 98048
    }
    assert want == {Prog.SSD: 32512, Prog.USD: -512, Prog.SUD: 0, Prog.UUD: 98048}
    for code, w in want.items():
        fault, C = run_dp(code, c, A, B)
        assert fault is None
        assert C[0, 0] == w, (code, C[0, 0], w)


def test_model_int32_wraps_around():
    # 0x7FFFFFF0 + 32512 wraps past INT32_MAX (no saturation)
    A = np.array([[0xFF, 0x02, 0x80, 0x7F]], np.uint8)
    B = np.array([[0xFF, 0xFF, 0x80, 0x7F]], np.uint8)
    fault, C = run_dp(Prog.SSD, np.array([[0x7FFFFFF0]], np.int32), A, B)
    assert fault is None and C[0, 0] == 0x7FFFFFF0 + 32512 - 2**32
    # and downwards: INT32_MIN + (-512) (tdpbusd)
    fault, C = run_dp(Prog.USD, np.array([[-2**31]], np.int32), A, B)
    assert fault is None and C[0, 0] == 2**31 - 512
    # the largest sum one instruction adds (K = 16 dwords of 4 x 255 x 255) wraps as well
    A = np.full((16, 64), 255, np.uint8)
    B = np.full((16, 64), 255, np.uint8)
    start = 2**31 - 10**6
    fault, C = run_dp(Prog.UUD, np.full((16, 16), start, np.int32), A, B)
    assert fault is None and (C == start + 16 * 4 * 255 * 255 - 2**32).all()


@pytest.mark.parametrize("code", list(SIGNS))
def test_model_int8_random_against_numpy(code):
    rng = np.random.default_rng(code)
    for M, K, N in [(16, 16, 16), (1, 1, 1), (3, 5, 2), (16, 7, 13), (9, 16, 1)]:
        A = rng.integers(0, 256, (M, 4 * K), dtype=np.uint8)
        B = rng.integers(0, 256, (K, 4 * N), dtype=np.uint8)
        c = rng.integers(-2**31, 2**31, (M, N), dtype=np.int64).astype(np.int32)
        fault, C = run_dp(code, c, A, B)
        assert fault is None
        np.testing.assert_array_equal(C, int_dp_reference(c, A, B, *SIGNS[code]))


# ---------------------------------------------------------------- the model: bf16

def bf16_case(c0, a_pairs, b_pairs):
    """One output element: C = c0 (fp32) + sum over k of A pair k . B pair k."""
    A = bf16(np.array(a_pairs, np.float32).reshape(1, -1)).view(np.uint8).reshape(1, -1)
    B = bf16(np.array(b_pairs, np.float32).reshape(-1, 2)).view(np.uint8).reshape(-1, 4)
    fault, C = run_dp(Prog.BF16, np.array([[c0]], np.float32), A, B)
    assert fault is None
    return C[0, 0]


def test_model_bf16_round_to_nearest_even():
    # even lane: 1 + 2^-24 is a tie between 1 and 1 + 2^-23: nearest even is 1
    assert bf16_case(0.0, [1.0, 0.0, 2.0**-24, 0.0], [1.0, 1.0, 1.0, 1.0]) == np.float32(1.0)
    # (1 + 2^-7)^2 = 1 + 2^-6 + 2^-14 (exact), + 1.5 ulp: rounds to + 2 ulp
    a = np.float32(1 + 2.0**-7)
    got = bf16_case(0.0, [a, 0.0, 1.5 * 2.0**-23, 0.0], [a, 1.0, 1.0, 1.0])
    assert got == np.float32(1 + 2.0**-6 + 2.0**-14 + 2.0**-22)


def test_model_bf16_pair_sum_order():
    # SDM: even and odd products accumulate separately from zero, then (even + odd) is added to C.
    # 2^-24 + 2^-24 = 2^-23 first, so 1 + 2^-23 survives; adding each product to C in turn
    # (1 + 2^-24 -> 1, twice) would give exactly 1.
    assert bf16_case(1.0, [2.0**-24, 2.0**-24], [1.0, 1.0]) == np.float32(1 + 2.0**-23)


def test_model_bf16_denormals():
    # DAZ on bf16 inputs: 0x0001 is 2^-133; times 2^100 would be 2^-33, but reads as zero
    A = np.array([[0x01, 0x00, 0x00, 0x00]], np.uint8)
    B = bf16([[2.0**100, 0.0]]).view(np.uint8).reshape(1, 4)
    fault, C = run_dp(Prog.BF16, np.zeros((1, 1), np.float32), A, B)
    assert fault is None and C[0, 0] == 0.0
    # FTZ: 2^-100 * 2^-30 = 2^-130 is a float32 denormal: flushed
    assert bf16_case(0.0, [2.0**-100, 0.0], [2.0**-30, 0.0]) == 0.0
    got = bf16_case(0.0, [-(2.0**-100), 0.0], [2.0**-30, 0.0])
    assert got == 0.0  # -0 from the flush, then -0 + (+0) = +0 (RNE) in the pair sum
    # a denormal accumulator reads as zero
    c = f32([1]).reshape(1, 1)
    A = bf16([[0.0, 0.0]]).view(np.uint8).reshape(1, 4)
    B = bf16([[0.0, 0.0]]).view(np.uint8).reshape(1, 4)
    fault, C = run_dp(Prog.BF16, c, A, B)
    assert fault is None and C.view(np.uint32)[0, 0] == 0
    # the smallest normal product is not flushed
    assert bf16_case(0.0, [2.0**-63, 0.0], [2.0**-63, 0.0]) == np.float32(2.0**-126)


def test_model_bf16_random_against_float64():
    """Exactly representable cases: small integers, where every order of summation is exact."""
    rng = np.random.default_rng(5)
    M, K, N = 7, 11, 9
    a = rng.integers(-8, 9, (M, 2 * K)).astype(np.float32)
    b = rng.integers(-8, 9, (K, 2 * N)).astype(np.float32)
    c = rng.integers(-100, 100, (M, N)).astype(np.float32)
    A = bf16(a).view(np.uint8).reshape(M, -1)
    B = bf16(b).view(np.uint8).reshape(K, -1)
    fault, C = run_dp(Prog.BF16, c, A, B)
    assert fault is None
    ref = c + np.einsum("mki,kni->mn", a.reshape(M, K, 2), b.reshape(K, N, 2))
    np.testing.assert_array_equal(C, ref)


# ---------------------------------------------------------------- the model: tiles and memory

def test_model_partial_tiles_and_strides():
    rng = np.random.default_rng(1)
    p = Prog()
    src = rng.integers(1, 256, 3 * 100, dtype=np.uint8)
    osrc = p.put(src)
    p.cfg({2: (3, 12)})
    p.op(Prog.LOAD, 2, off=osrc, stride=100)         # 3 rows of 12 bytes, 100 apart
    dst = p.alloc(16 * 64)
    p.mem[dst:dst + 16 * 64] = 0xAB
    p.op(Prog.STORE, 2, off=dst, stride=20)          # written back 20 apart
    p.op(Prog.RELEASE)
    assert p.run() is None
    out = p.get(dst, 16 * 64)
    want = np.full(16 * 64, 0xAB, np.uint8)
    for m in range(3):
        want[20 * m:20 * m + 12] = src[100 * m:100 * m + 12]
    np.testing.assert_array_equal(out, want)  # nothing past colsb or rows is written


def test_model_stride_zero_and_tilezero():
    p = Prog()
    row = np.arange(1, 65, dtype=np.uint8)
    o = p.put(row)
    p.cfg({0: (16, 64), 5: (16, 64)})
    p.op(Prog.LOAD, 0, off=o, stride=0)  # every row is the same row
    p.op(Prog.LOAD, 5, off=o, stride=0)
    p.op(Prog.ZERO, 5)
    d0, d5 = p.alloc(1024), p.alloc(1024)
    p.mem[d5:d5 + 1024] = 7
    p.op(Prog.STORE, 0, off=d0, stride=64)
    p.op(Prog.STORE, 5, off=d5, stride=64)
    assert p.run() is None
    np.testing.assert_array_equal(p.get(d0, 1024).reshape(16, 64), np.tile(row, (16, 1)))
    assert (p.get(d5, 1024) == 0).all()


def test_model_config_zeroes_tiles_and_start_row():
    p = Prog()
    src = np.arange(1, 4 * 8 + 1, dtype=np.uint8)
    o = p.put(src)
    p.cfg({1: (4, 8)})
    p.op(Prog.LOAD, 1, off=o, stride=8)
    p.cfg({1: (4, 8)}, start_row=2)  # reloading zeroes the tile; loads restart at row 2
    p.op(Prog.LOAD, 1, off=o, stride=8)
    d = p.alloc(64)
    p.op(Prog.STORE, 1, off=d, stride=8)  # start_row was cleared by the load: all rows stored
    assert p.run() is None
    want = src.copy()
    want[:16] = 0
    np.testing.assert_array_equal(p.get(d, 32), want)


@pytest.mark.parametrize("build,msg", [
    (lambda p: p.cfg({0: (16, 64)}, palette=2), "palette"),
    (lambda p: p.cfg({0: (17, 64)}), "rows > 16"),
    (lambda p: p.cfg({0: (16, 65)}), "colsb > 64"),
    (lambda p: p.cfg({0: (16, 0)}), "only one zero"),
    (lambda p: p.cfg({0: (1, 4)}, raw={5: 1}), "reserved"),
    (lambda p: p.cfg({0: (1, 4), 9: (1, 4)}), "beyond palette"),
    (lambda p: (p.cfg({0: (1, 4)}), p.op(Prog.ZERO, 1)), "not configured"),
    (lambda p: (p.op(Prog.ZERO, 0)), "not configured"),
    (lambda p: (p.cfg({0: (2, 8), 1: (2, 8), 2: (1, 8)}), p.op(Prog.SSD, 0, 1, 2)), "A.colsb/4 != B.rows"),
    (lambda p: (p.cfg({0: (2, 8), 1: (2, 8), 2: (2, 4)}), p.op(Prog.SSD, 0, 1, 2)), "C.colsb != B.colsb"),
    (lambda p: (p.cfg({0: (3, 8), 1: (2, 8), 2: (2, 8)}), p.op(Prog.BF16, 0, 1, 2)), "C.rows != A.rows"),
    (lambda p: (p.cfg({0: (2, 8), 1: (2, 8)}), p.op(Prog.SSD, 0, 1, 1)), "not distinct"),
    (lambda p: (p.cfg({0: (2, 6), 1: (2, 8), 2: (2, 6)}), p.op(Prog.SSD, 0, 1, 2)), "multiple of 4"),
])
def test_model_faults(build, msg):
    p = Prog()
    build(p)
    fault = p.run()
    assert fault is not None and msg in fault, fault


def test_model_fault_leaves_destination_alone():
    p = Prog()
    c = np.arange(4, dtype=np.int32).reshape(2, 2)
    oc = p.put(c)
    p.cfg({0: (2, 8), 1: (2, 8), 2: (1, 8)})  # A.colsb/4 = 2 != B.rows = 1
    p.op(Prog.LOAD, 0, off=oc, stride=8)
    p.op(Prog.SSD, 0, 1, 2)
    d = p.alloc(64)
    p.op(Prog.STORE, 0, off=d, stride=8)
    assert "A.colsb/4" in p.run()
    np.testing.assert_array_equal(p.get(d, 16).view(np.int32).reshape(2, 2), c)


# ---------------------------------------------------------------- kernels on the model

def _check(qtype, w, X, Y):
    Wd = dequantize(qtype, w).astype(np.float64)
    ref = X.astype(np.float64) @ Wd.T
    bound = gemm_bound(qtype, Wd, X, bf16_acts=qtype in BF16_PATH, bf16_weights=qtype == "F16")
    err = np.abs(Y.astype(np.float64) - ref)
    worst = np.unravel_index(np.argmax(err / bound), err.shape)
    assert (err <= bound).all(), (
        f"{qtype} @ {kernels.isa()} n={X.shape[0]} rows={w.shape[0]}: "
        f"error {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst}")


def _cols(qtype):
    c = cols_for(qtype)
    # bf16 path: K not a multiple of 32 (tile chunk) and of 64 bytes, and a multi-chunk one
    return [3, 33, 1023] if qtype in BF16_PATH else c[:2] if c[0] == 256 else [32, 96, 1056]


@pytest.fixture
def amx_sim():
    with kernels.use_isa("amx_sim"), kernels.amx_min_rows_set(1):
        yield


@pytest.mark.parametrize("qtype", AMX_FORMATS)
@pytest.mark.parametrize("n", NS)
def test_sim_gemm(amx_sim, qtype, n):
    rng = np.random.default_rng(zlib.crc32(f"{qtype}/{n}".encode()))  # reproducible across runs
    for cols in _cols(qtype):
        for rows in ROWS:
            w = random_weights(qtype, rows, cols, rng)
            X = activations(n, cols, rng)
            p = kernels.prepare(w, qtype)
            assert p.isa == "amx_sim" and p.layout != 0 and p.owned_bytes > 0
            _check(qtype, w, X, p.gemm(X, threads=2))


@pytest.mark.parametrize("qtype", AMX_FORMATS)
def test_sim_gemm_large(amx_sim, qtype):
    rng = np.random.default_rng(11)
    cols = _cols(qtype)[-1]
    w = random_weights(qtype, 33, cols, rng)
    X = activations(65, cols, rng)
    _check(qtype, w, X, kernels.prepare(w, qtype).gemm(X, threads=2))


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_K", "BF16"])
def test_sim_threads_agree(amx_sim, qtype):
    """Row chunks go to threads in multiples of 16; no result bit may depend on the split."""
    rng = np.random.default_rng(2)
    cols = _cols(qtype)[1]
    w = random_weights(qtype, 81, cols, rng)
    X = activations(17, cols, rng)
    p = kernels.prepare(w, qtype)
    ys = [p.gemm(X, threads=t) for t in (1, 2, 3, 5)]
    for y in ys[1:]:
        np.testing.assert_array_equal(ys[0], y)


def test_sim_out_argument_and_validation(amx_sim):
    rng = np.random.default_rng(3)
    w = random_weights("Q8_0", 17, 64, rng)
    p = kernels.prepare(w, "Q8_0")
    X = activations(3, 64, rng)
    out = np.empty((3, 17), np.float32)
    assert p.gemm(X, out=out) is out
    with pytest.raises(ValueError, match="columns"):
        p.gemm(activations(3, 32, rng))
    with pytest.raises(TypeError, match="float32"):
        p.gemm(X.astype(np.float64))
    bad = X.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        p.gemm(bad)
    with pytest.raises(ValueError, match="shape"):
        p.gemm(X, out=np.empty((3, 16), np.float32))
    with pytest.raises(ValueError, match="threads"):
        p.gemm(X, threads=0)
    with pytest.raises(ValueError, match="whole number"):
        kernels.prepare(w[:, :33], "Q8_0")
    with pytest.raises(TypeError):
        kernels.prepare(w.astype(np.float32), "Q8_0")
    with pytest.raises(ValueError, match="unknown qtype"):
        kernels.prepare(w, "Q9_9")


@pytest.mark.parametrize("qtype", AMX_FORMATS)
def test_sim_small_batch_switch(qtype):
    """Below the switch the prepared weight runs the level below's kernel on the GGUF rows: same
    bits as kernels.gemm at that level. From the switch on it runs on tiles."""
    rng = np.random.default_rng(4)
    cols = _cols(qtype)[1]
    w = random_weights(qtype, 33, cols, rng)
    with kernels.use_isa("amx_sim"):
        assert kernels.amx_min_rows() == _core.amx_default_min_rows() > 1
        p = kernels.prepare(w, qtype)
        n_small = kernels.amx_min_rows() - 1
        X = activations(n_small, cols, rng)
        Y = p.gemm(X)
        _check(qtype, w, X, Y)
        if not kernels.qtype_supported(qtype):
            return  # no kernel below yet: the tiles serve every batch
        np.testing.assert_array_equal(Y, kernels.gemm(w, qtype, X))
        with kernels.amx_min_rows_set(1):
            Yt = p.gemm(X)
        _check(qtype, w, X, Yt)


@pytest.mark.parametrize("qtype", ["F32", "F16", "BF16", "Q8_0", "Q4_0"])
def test_prepare_at_every_level(isa, qtype):
    """prepare() works at every level; where it keeps the GGUF layout it is kernels.gemm exactly."""
    if not kernels.qtype_supported(qtype) and isa != "amx_sim":
        pytest.skip(f"no {qtype} kernel at {isa} yet")
    rng = np.random.default_rng(9)
    cols = 96
    w = random_weights(qtype, 19, cols, rng)
    X = activations(6, cols, rng)
    p = kernels.prepare(w, qtype)
    assert p.isa in kernels.ALL_ISAS and p.shape == (19, cols)
    Y = p.gemm(X)
    if p.layout == 0:
        assert p.owned_bytes == 0
        np.testing.assert_array_equal(Y, kernels.gemm(w, qtype, X))
    _check(qtype, w, X, Y)


# ---------------------------------------------------------------- dispatch

def _run_py(code, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], env=child_env(e), cwd=CHILD_CWD, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.skipif(HAVE_AMX, reason="this CPU has AMX")
def test_dispatch_refuses_amx_here():
    r = _run_py("import fastcpu", FASTCPU_ISA="amx")
    assert r.returncode != 0
    missing = kernels.isa_missing("amx")
    assert "ISAError" in r.stderr and missing in r.stderr, r.stderr
    assert fastcpu.cpu_info()["unavailable_isas"]["amx"] == missing
    assert kernels.best_isa() != "amx"


def test_dispatch_accepts_amx_sim():
    r = _run_py("import fastcpu; from fastcpu import kernels; print(kernels.isa());"
                "print(kernels.prepare(__import__('numpy').zeros((16, 34), 'uint8'), 'Q8_0').isa)",
                FASTCPU_ISA="amx_sim")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["amx_sim", "amx_sim"]
    assert kernels.best_isa() != "amx_sim"  # never chosen by itself


# ---------------------------------------------------------------- real tiles (AMX CPUs only)

@pytest.mark.skipif(not HAVE_AMX, reason=NO_AMX_REASON)
@pytest.mark.parametrize("qtype", AMX_FORMATS)
def test_native_gemm(qtype):
    rng = np.random.default_rng(21)
    with kernels.use_isa("amx"), kernels.amx_min_rows_set(1):
        for cols in _cols(qtype):
            for rows in ROWS:
                for n in NS:
                    w = random_weights(qtype, rows, cols, rng)
                    X = activations(n, cols, rng)
                    p = kernels.prepare(w, qtype)
                    assert p.isa == "amx" and p.layout != 0
                    _check(qtype, w, X, p.gemm(X))


@pytest.mark.skipif(not HAVE_AMX, reason=NO_AMX_REASON)
@pytest.mark.parametrize("code", [Prog.SSD, Prog.SUD, Prog.USD, Prog.UUD, Prog.BF16])
def test_model_matches_hardware(code):
    """The model against the real tiles, bit for bit, on random bytes (int8) and on bf16 values
    chosen to hit ties, cancellation, denormals and overflow."""
    rng = np.random.default_rng(code)
    for M, K, N in [(16, 16, 16), (3, 5, 2), (16, 7, 13), (1, 1, 1)]:
        for _ in range(20):
            if code == Prog.BF16:
                # exponents kept low enough that nothing overflows: NaN payloads are not modelled
                e = rng.integers(-140, 60, (M * 4 * K + K * 4 * N) // 2)
                e[rng.random(e.size) < 0.7] = rng.integers(-30, 30)
                v = (rng.choice([-1, 1], e.size) * (1 + rng.integers(0, 128, e.size) / 128.0)
                     * np.exp2(e.astype(np.float64))).astype(np.float32)
                bits = (v.view(np.uint32) >> 16).astype(np.uint16)
                bits[rng.random(bits.size) < 0.05] = rng.integers(0, 0x80, 1)  # bf16 denormals
                raw = bits.view(np.uint8)
                A, B = raw[:M * 4 * K].reshape(M, -1), raw[M * 4 * K:].reshape(K, -1)
                c = (rng.standard_normal((M, N)) * np.exp2(rng.integers(-30, 30, (M, N)))).astype(np.float32)
            else:
                A = rng.integers(0, 256, (M, 4 * K), dtype=np.uint8)
                B = rng.integers(0, 256, (K, 4 * N), dtype=np.uint8)
                c = rng.integers(-2**31, 2**31, (M, N), dtype=np.int64).astype(np.int32)
            f_sim, c_sim = run_dp(code, c, A, B, hardware=False)
            f_hw, c_hw = run_dp(code, c, A, B, hardware=True)
            assert f_sim is None and f_hw is None
            np.testing.assert_array_equal(c_sim.view(np.uint32), c_hw.view(np.uint32))


# ---------------------------------------------------------------- whole model

def test_model_amx_sim_same_tokens(model_path):
    """The real model under amx_sim (prefill through the tile kernels on the model, decode below
    the small-batch switch) gives the same greedy tokens as under the best non-AMX level.

    The levels quantize activations in different blocks and sum in different orders, which moves
    logits by a few tenths (as between avx2 and avx512_vnni), so a prompt whose continuation the
    model is sure of is used; the test reports the margins if it ever stops being one."""
    import numpy as np

    from fastcpu import LLM

    prompt = "Counting in English: one, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve,"
    base = kernels.best_isa()
    out, margins = {}, {}
    for level in (base, "amx_sim"):
        with kernels.use_isa(level):
            llm = LLM(model_path, ctx=128, threads=2)
            ids = llm.tokenize(prompt)
            assert len(ids) >= 2 * kernels.amx_min_rows()  # prefill really takes the tile path
            llm.generate(prompt, max_tokens=10, temperature=0)
            out[level] = gen = llm.last_stats["tokens"]
            lg = np.sort(llm.eval(ids + gen)[len(ids) - 1:len(ids) - 1 + len(gen)], axis=1)
            margins[level] = (lg[:, -1] - lg[:, -2]).round(2).tolist()
            del llm
    assert out["amx_sim"] == out[base], (out, margins)
