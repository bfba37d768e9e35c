"""The Python API refuses bad input with ValueError/TypeError naming what is wrong (never a crash or
garbage), and copies arrays it cannot pass to C as they are (results checked)."""
import numpy as np
import pytest

from fastcpu import kernels
from kernel_ref import activations, random_weights, reference_gemm
from tolerances import gemm_bound
from kernel_ref import dequantize as ref_dequantize

# F32 always has a kernel in this branch; the quantized checks use Q8_0 when it has one
ROWS, COLS = 5, 64


@pytest.fixture
def f32():
    rng = np.random.default_rng(11)
    return random_weights("F32", ROWS, COLS, rng), activations(3, COLS, rng)


def _close(qtype, w, X, Y):
    Wd = ref_dequantize(qtype, w).astype(np.float64)
    ref = X.astype(np.float64) @ Wd.T
    assert (np.abs(Y - ref) <= gemm_bound(qtype, Wd, X)).all()


# ---- qtype ----
@pytest.mark.parametrize("bad", ["Q9_9", "", "IQ2_XXS", 99, -1, 4])
def test_unknown_qtype(f32, bad):
    w, X = f32
    with pytest.raises(ValueError, match="unknown"):
        kernels.gemv(w, bad, X[0])


@pytest.mark.parametrize("bad", [2.0, None, b"F32", True, ["F32"]])
def test_qtype_wrong_type(f32, bad):
    w, X = f32
    with pytest.raises(TypeError, match="qtype"):
        kernels.gemv(w, bad, X[0])


def test_qtype_names_and_ids_agree(f32):
    w, X = f32
    np.testing.assert_array_equal(kernels.gemv(w, "f32", X[0]), kernels.gemv(w, 0, X[0]))
    np.testing.assert_array_equal(kernels.gemv(w, " F32 ", X[0]), kernels.gemv(w, np.int64(0), X[0]))


def test_format_without_kernel_is_named():
    missing = [q for q in kernels.QTYPES if not kernels.qtype_supported(q)]
    if not missing:
        pytest.skip("every format has a kernel")
    q = missing[0]
    bs, ts = kernels.block_size(q), kernels.type_size(q)
    w = np.zeros((2, 4 * ts), np.uint8)
    with pytest.raises(ValueError, match=q):
        kernels.gemv(w, q, np.zeros(4 * bs, np.float32))


# ---- weight shape / bytes ----
def test_row_not_whole_blocks():
    # Q4_0 blocks are 18 bytes: a 19-byte row is not a whole number of them
    with pytest.raises(ValueError, match="whole number of Q4_0 blocks"):
        kernels.gemv(np.zeros((4, 19), np.uint8), "Q4_0", np.zeros(32, np.float32))
    with pytest.raises(ValueError, match="whole blocks of 32"):
        kernels.row_bytes("Q4_0", 33)
    with pytest.raises(ValueError, match="whole blocks of 256"):
        kernels.row_bytes("Q4_K", 512 + 32)
    assert kernels.row_bytes("Q4_K", 512) == 288


def test_byte_size_disagrees(f32):
    w, X = f32
    # F32 rows of 6 bytes hold 1.5 weights
    with pytest.raises(ValueError, match="not a whole number of F32 blocks"):
        kernels.gemv(np.zeros((3, 6), np.uint8), "F32", np.zeros(1, np.float32))
    # float16 values handed in as F32 (or the reverse): the element size disagrees with the format
    with pytest.raises(TypeError, match="float16"):
        kernels.gemv(w.view(np.float32).astype(np.float16), "F32", X[0])
    with pytest.raises(TypeError, match="F16"):
        kernels.gemv(w.view(np.float32), "F16", X[0])
    # uint8 bytes of F32 weights read as F16 give twice the columns: x no longer matches
    with pytest.raises(ValueError, match="columns"):
        kernels.gemv(w, "F16", X[0])


@pytest.mark.parametrize("bad, exc", [
    (np.zeros((0, 256), np.uint8), ValueError),  # no rows
    (np.zeros(256, np.uint8), ValueError),       # 1-D
    (np.zeros((2, 2, 64), np.uint8), ValueError),
    (np.zeros((4, 64), np.int32), TypeError),
    (np.zeros((4, 64), np.float64), TypeError),
    ([[0.0] * 64] * 4, TypeError),               # not an array
    (b"\0" * 256, TypeError),
])
def test_bad_weights(bad, exc):
    with pytest.raises(exc, match="w "):
        kernels.gemv(bad, "F32", np.zeros(64, np.float32))


# ---- activations ----
def test_x_length_mismatch(f32):
    w, X = f32
    with pytest.raises(ValueError, match=f"x has {COLS - 1} columns but the weights have {COLS}"):
        kernels.gemv(w, "F32", X[0, :-1].copy())
    with pytest.raises(ValueError, match="columns"):
        kernels.gemm(w, "F32", np.zeros((2, COLS + 1), np.float32))


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
def test_x_wrong_dtype(f32, dtype):
    w, X = f32
    with pytest.raises(TypeError, match="float32"):
        kernels.gemv(w, "F32", X[0].astype(dtype))
    with pytest.raises(TypeError, match="float32"):
        kernels.gemm(w, "F32", X.astype(dtype))


def test_x_wrong_shape(f32):
    w, X = f32
    with pytest.raises(ValueError, match="1-D"):
        kernels.gemv(w, "F32", X)
    with pytest.raises(ValueError, match="2-D"):
        kernels.gemm(w, "F32", X[0])
    with pytest.raises(ValueError, match="no rows"):
        kernels.gemm(w, "F32", X[:0])
    with pytest.raises(TypeError, match="numpy array"):
        kernels.gemv(w, "F32", list(X[0]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_x_not_finite(f32, bad):
    w, X = f32
    x = X[0].copy()
    x[7] = bad
    with pytest.raises(ValueError, match="NaN or infinity"):
        kernels.gemv(w, "F32", x)


# ---- copies of arrays C cannot take as they are ----
def test_noncontiguous_inputs_copied(f32):
    w, X = f32
    want = kernels.gemm(w, "F32", X)
    _close("F32", w, X, want)
    # strided rows of a bigger array, Fortran-ordered activations, every other element
    big = np.zeros((2 * ROWS, w.shape[1]), np.uint8)
    big[::2] = w
    np.testing.assert_array_equal(kernels.gemm(big[::2], "F32", X), want)
    np.testing.assert_array_equal(kernels.gemm(w, "F32", np.asfortranarray(X)), want)
    wide = np.zeros((3, 2 * COLS), np.float32)
    wide[:, ::2] = X
    np.testing.assert_array_equal(kernels.gemm(w, "F32", wide[:, ::2]), want)
    np.testing.assert_array_equal(kernels.gemv(w, "F32", wide[1, ::2]), want[1])
    # float32 weights given as a transposed view
    wf = w.view(np.float32)
    np.testing.assert_array_equal(kernels.gemm(np.asfortranarray(wf), "F32", X), want)
    # the inputs are left as they were
    np.testing.assert_array_equal(big[::2], w)


def test_unaligned_activations_copied(f32):
    w, X = f32
    buf = np.zeros(COLS * 4 + 1, np.uint8)
    x = np.frombuffer(buf.data, dtype=np.float32, count=COLS, offset=1)
    assert not x.flags.aligned
    buf[1:] = X[0].view(np.uint8)
    np.testing.assert_array_equal(kernels.gemv(w, "F32", x), kernels.gemv(w, "F32", X[0]))


def test_quantized_strided_weights():
    if not kernels.qtype_supported("Q8_0"):
        pytest.skip("no Q8_0 kernel yet")
    rng = np.random.default_rng(5)
    w = random_weights("Q8_0", 6, 96, rng)
    X = activations(2, 96, rng)
    big = np.zeros((12, w.shape[1]), np.uint8)
    big[1::2] = w
    np.testing.assert_array_equal(kernels.gemm(big[1::2], "Q8_0", X), kernels.gemm(w, "Q8_0", X))
    _close("Q8_0", w, X, kernels.gemm(w, "Q8_0", X))


# ---- threads ----
@pytest.mark.parametrize("bad", [0, -1, 257, 10**9])
def test_threads_out_of_range(f32, bad):
    w, X = f32
    with pytest.raises(ValueError, match="threads must be between 1 and 256"):
        kernels.gemv(w, "F32", X[0], threads=bad)


@pytest.mark.parametrize("bad", [1.5, "2", True, [2]])
def test_threads_wrong_type(f32, bad):
    w, X = f32
    with pytest.raises(TypeError, match="threads"):
        kernels.gemm(w, "F32", X, threads=bad)


def test_threads_valid(f32):
    w, X = f32
    want = kernels.gemm(w, "F32", X, threads=None)
    for t in (1, np.int32(2), 256):
        np.testing.assert_array_equal(kernels.gemm(w, "F32", X, threads=t), want)


# ---- out= ----
def test_out_used_and_returned(f32):
    w, X = f32
    out = np.full((3, ROWS), np.nan, np.float32)
    y = kernels.gemm(w, "F32", X, out=out)
    assert y is out
    np.testing.assert_array_equal(out, kernels.gemm(w, "F32", X))
    o1 = np.full(ROWS, np.nan, np.float32)
    assert kernels.gemv(w, "F32", X[0], out=o1) is o1
    np.testing.assert_array_equal(o1, out[0])


def test_out_misuse(f32):
    w, X = f32
    with pytest.raises(ValueError, match=r"out must have shape \(3, 5\)"):
        kernels.gemm(w, "F32", X, out=np.empty((5, 3), np.float32))
    with pytest.raises(ValueError, match=r"out must have shape \(5,\)"):
        kernels.gemv(w, "F32", X[0], out=np.empty((1, ROWS), np.float32))
    with pytest.raises(TypeError, match="float32"):
        kernels.gemm(w, "F32", X, out=np.empty((3, ROWS), np.float64))
    with pytest.raises(TypeError, match="float32"):
        kernels.gemm(w, "F32", X, out=[[0.0] * ROWS] * 3)
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.gemm(w, "F32", X, out=np.empty((ROWS, 3), np.float32).T)
    ro = np.empty((3, ROWS), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        kernels.gemm(w, "F32", X, out=ro)


# ---- other entry points ----
def test_dequantize_errors():
    with pytest.raises(ValueError, match="whole number of Q8_0 blocks"):
        kernels.dequantize(np.zeros((2, 35), np.uint8), "Q8_0")
    with pytest.raises(ValueError, match="unknown qtype"):
        kernels.dequantize(np.zeros((2, 34), np.uint8), "Q8_9")
    with pytest.raises(TypeError):
        kernels.dequantize(np.zeros((2, 34), np.int8), "Q8_0")


def test_membw_arguments():
    with pytest.raises(ValueError, match="1 MiB"):
        kernels.membw(1000)
    with pytest.raises(ValueError, match="passes"):
        kernels.membw(1 << 20, passes=0)
    with pytest.raises(ValueError, match="threads"):
        kernels.membw(1 << 20, threads=0)
    assert kernels.membw(1 << 20, threads=1, passes=1) > 0
