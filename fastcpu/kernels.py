"""Kernel API: GEMV/GEMM over raw GGUF weight blocks, from NumPy.

Weights `w` are the bytes of GGUF blocks: a uint8 array of shape (rows, row_bytes), e.g. a slice
of a memory-mapped GGUF file. F32/F16/BF16 weights may also be given as float32 / float16 arrays
of shape (rows, cols) (BF16 as uint16). Weights need no alignment (GGUF blocks have none).

Activations must be float32. Arrays that are not C-contiguous or not 4-byte aligned are copied
(weights too: a strided view of a file is copied once per call, so slice whole rows instead).
Everything else that is wrong raises ValueError or TypeError naming the problem.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

from . import _core

# GGUF ggml_type ids of the formats with kernels.
QTYPES = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8,
    "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "BF16": 30,
}
QTYPE_NAMES = {v: k for k, v in QTYPES.items()}

# Best first; amx_sim is never chosen automatically.
ISA_LEVELS = ("amx", "avx512_bf16", "avx512_vnni", "avx512", "avx2", "scalar")
ALL_ISAS = ISA_LEVELS + ("amx_sim",)

MAX_THREADS = 256


class ISAError(RuntimeError):
    """A requested ISA level cannot run on this CPU."""


def _isa_id(name: str) -> int:
    if not isinstance(name, str):
        raise TypeError(f"ISA level must be a string, got {type(name).__name__}")
    i = _core.isa_from_name(name.strip().lower())
    if i < 0:
        raise ValueError(f"unknown ISA level {name!r}; known: {', '.join(ALL_ISAS)}")
    return i


def isa_missing(name: str) -> str | None:
    """What the CPU lacks for level `name`, or None when it can run it."""
    ok, why = _core.isa_supported(_isa_id(name))
    return None if ok else why


def set_isa(name: str) -> None:
    """Force dispatch to level `name` (process-wide). Raises ISAError naming what is missing."""
    missing = isa_missing(name)
    if missing is not None:
        raise ISAError(f"ISA level {name!r} is not usable on this CPU: it lacks {missing}")
    if not _core.isa_set(_isa_id(name)):
        raise ISAError(f"ISA level {name!r} could not be selected")


def isa() -> str:
    """Name of the level in use."""
    return _core.isa_name(_core.isa_current())


def best_isa() -> str:
    return _core.isa_name(_core.isa_best())


def available_isas() -> list[str]:
    """Levels this CPU can run, best first (amx_sim last: it runs anywhere, never by default)."""
    return [n for n in ALL_ISAS if isa_missing(n) is None]


@contextlib.contextmanager
def use_isa(name: str):
    """Temporarily force a level (tests, benchmarks)."""
    prev = isa()
    set_isa(name)
    try:
        yield
    finally:
        set_isa(prev)


def _check_env_override() -> None:
    want = os.environ.get("FASTCPU_ISA", "").strip()
    if want:
        try:
            set_isa(want)  # raises with what is missing
        except (ISAError, ValueError) as e:
            raise type(e)(f"environment variable FASTCPU_ISA={want!r}: {e}") from None


def qtype_id(qtype) -> int:
    """Accepts a format name ('Q4_0', 'q4_k', ...) or a GGUF ggml_type id."""
    if isinstance(qtype, (bool, np.bool_)):
        raise TypeError("qtype must be a format name or a GGUF type id")
    if isinstance(qtype, (int, np.integer)):
        if int(qtype) not in QTYPE_NAMES:
            raise ValueError(f"unknown or unsupported qtype id {int(qtype)}; known: {sorted(QTYPES)}")
        return int(qtype)
    if isinstance(qtype, str):
        key = qtype.strip().upper()
        if key not in QTYPES:
            raise ValueError(f"unknown qtype {qtype!r}; known: {', '.join(QTYPES)}")
        return QTYPES[key]
    raise TypeError(f"qtype must be a format name or a GGUF type id, got {type(qtype).__name__}")


def qtype_supported(qtype) -> bool:
    """True when the level in use has a GEMM kernel for the format."""
    return _core.qtype_supported(qtype_id(qtype))


def kernel_isa_for(qtype) -> str:
    """The level whose kernel serves `qtype` under the level in use (levels inherit from below)."""
    return _core.kernel_isa(qtype_id(qtype))


def block_size(qtype) -> int:
    return _core.block_size(qtype_id(qtype))


def type_size(qtype) -> int:
    return _core.type_size(qtype_id(qtype))


def row_bytes(qtype, cols: int) -> int:
    q = qtype_id(qtype)
    bs = _core.block_size(q)
    if cols <= 0 or cols % bs:
        raise ValueError(f"{QTYPE_NAMES[q]} rows hold whole blocks of {bs} weights; got {cols} columns")
    return _core.row_bytes(q, cols)


def _threads(threads) -> int:
    if threads is None:
        return 0
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be an int or None, got {type(threads).__name__}")
    threads = int(threads)
    if threads < 1 or threads > MAX_THREADS:
        raise ValueError(f"threads must be between 1 and {MAX_THREADS}, got {threads}")
    return threads


_FLOAT_VIEW_DTYPES = {0: np.float32, 1: np.float16, 30: np.uint16}


def _weights(w, q: int) -> tuple[np.ndarray, int, int]:
    """Returns (uint8 view of shape (rows, row_bytes), rows, cols)."""
    if not isinstance(w, np.ndarray):
        raise TypeError(f"w must be a numpy array, got {type(w).__name__}")
    if w.ndim != 2:
        raise ValueError(f"w must be 2-D (rows, row_bytes), got shape {w.shape}")
    rows = w.shape[0]
    if rows == 0:
        raise ValueError("w has no rows")
    if w.dtype != np.uint8:
        want = _FLOAT_VIEW_DTYPES.get(q)
        if want is None or w.dtype != want:
            raise TypeError(
                f"w must be uint8 GGUF blocks"
                + (f" or {np.dtype(want).name}" if want is not None else "")
                + f" for {QTYPE_NAMES[q]}, got {w.dtype}")
        w = np.ascontiguousarray(w)
        w = w.view(np.uint8).reshape(rows, -1)
    elif not w.flags.c_contiguous:
        w = np.ascontiguousarray(w)
    nbytes = w.shape[1]
    tsize, bsize = _core.type_size(q), _core.block_size(q)
    if nbytes == 0 or nbytes % tsize:
        raise ValueError(
            f"w rows are {nbytes} bytes, not a whole number of {QTYPE_NAMES[q]} blocks ({tsize} bytes each)")
    cols = nbytes // tsize * bsize
    return w, rows, cols


def _activations(x, cols: int, ndim: int, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    if x.shape[-1] != cols:
        raise ValueError(f"{name} has {x.shape[-1]} columns but the weights have {cols}")
    if ndim == 2 and x.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return np.require(x, np.float32, ["C", "A"])


def _out(out, shape) -> np.ndarray:
    if out is None:
        return np.empty(shape, np.float32)
    if not isinstance(out, np.ndarray) or out.dtype != np.float32:
        raise TypeError("out must be a float32 numpy array")
    if out.shape != shape:
        raise ValueError(f"out must have shape {shape}, got {out.shape}")
    if not (out.flags.c_contiguous and out.flags.aligned and out.flags.writeable):
        raise ValueError("out must be C-contiguous, aligned and writeable")
    return out


def _require_kernel(q: int) -> None:
    if not _core.qtype_supported(q):
        raise ValueError(f"no {QTYPE_NAMES[q]} kernel in this build (ISA level {isa()})")


def gemm(w, qtype, X, out=None, threads=None) -> np.ndarray:
    """Y = X @ W^T for X of shape (n, cols); returns (n, rows) float32."""
    q = qtype_id(qtype)
    w2, rows, cols = _weights(w, q)
    _require_kernel(q)
    X = _activations(X, cols, 2, "X")
    y = _out(out, (X.shape[0], rows))
    _core.gemm(q, w2, rows, cols, X, y, _threads(threads))
    return y


def gemv(w, qtype, x, out=None, threads=None) -> np.ndarray:
    """y = W x for x of shape (cols,); returns (rows,) float32."""
    q = qtype_id(qtype)
    w2, rows, cols = _weights(w, q)
    _require_kernel(q)
    x = _activations(x, cols, 1, "x")
    y = _out(out, (rows,))
    _core.gemm(q, w2, rows, cols, x.reshape(1, cols), y.reshape(1, rows), _threads(threads))
    return y


class Prepared:
    """A weight matrix prepared once for the level in use (repacked behind a layout tag when that
    level's preferred kernel wants it, e.g. AMX tiles). Made by prepare(); keeps `w` alive."""

    def __init__(self, w, qtype):
        q = qtype_id(qtype)
        w2, rows, cols = _weights(w, q)
        self.qtype = QTYPE_NAMES[q]
        self.rows, self.cols = rows, cols
        self._w = _core.PreparedWeight(q, w2, rows, cols)

    @property
    def layout(self) -> int:
        """0: GGUF blocks as stored; anything else: a kernel-private layout."""
        return self._w.layout

    @property
    def isa(self) -> str:
        """The level whose kernel reads these weights."""
        return self._w.isa

    @property
    def owned_bytes(self) -> int:
        """Bytes of the repacked copy (0 when the stored blocks are used as they are)."""
        return self._w.owned_bytes

    @property
    def shape(self) -> tuple:
        return (self.rows, self.cols)

    def gemm(self, X, out=None, threads=None) -> np.ndarray:
        """Y = X @ W^T for X of shape (n, cols); returns (n, rows) float32."""
        X = _activations(X, self.cols, 2, "X")
        y = _out(out, (X.shape[0], self.rows))
        self._w.gemm(X, y, _threads(threads))
        return y

    def __repr__(self):
        return (f"Prepared({self.qtype}, {self.rows}x{self.cols}, isa={self.isa}, "
                f"layout={self.layout:#x}, owned_bytes={self.owned_bytes})")


def prepare(w, qtype) -> Prepared:
    """Prepares weights (same forms as gemm's `w`) for repeated GEMMs at the level in use."""
    return Prepared(w, qtype)


def amx_min_rows() -> int:
    """Activation rows below which the AMX kernels hand a GEMM to the level below."""
    return _core.amx_min_rows()


@contextlib.contextmanager
def amx_min_rows_set(n: int):
    """Temporarily change the AMX small-batch switch (tests, benchmarks); n=1: always tiles."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    prev = _core.amx_min_rows()
    _core.amx_set_min_rows(int(n))
    try:
        yield
    finally:
        _core.amx_set_min_rows(prev)


def dequantize(w, qtype) -> np.ndarray:
    """Float32 values of GGUF blocks: w of shape (rows, row_bytes) -> (rows, cols)."""
    q = qtype_id(qtype)
    w2, rows, cols = _weights(np.atleast_2d(w), q)
    out = np.empty((rows, cols), np.float32)
    _core.dequantize(q, w2.reshape(-1), out.reshape(-1))
    return out


# formats fc_quantize can produce from float32
QUANTIZABLE = ("Q4_K", "Q5_K", "Q6_K")


def quantize(x, qtype) -> np.ndarray:
    """GGUF blocks of `qtype` for float32 x of shape (rows, cols) (or (cols,)): uint8 of shape
    (rows, row_bytes). Not ggml's quantizer, but valid blocks whose dequantization is close to x
    (each scale rounded up so that nothing clips; see csrc/kernels/kquant_scalar.c for the bound)."""
    q = qtype_id(qtype)
    if QTYPE_NAMES[q] not in QUANTIZABLE:
        raise ValueError(f"no quantizer for {QTYPE_NAMES[q]}; can quantize: {', '.join(QUANTIZABLE)}")
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"x must be float32, got {x.dtype}")
    if x.ndim not in (1, 2):
        raise ValueError(f"x must be 1-D or 2-D, got shape {x.shape}")
    x2 = np.ascontiguousarray(x.reshape(1, -1) if x.ndim == 1 else x)
    rows, cols = x2.shape
    if rows == 0:
        raise ValueError("x has no rows")
    bs = _core.block_size(q)
    if cols == 0 or cols % bs:
        raise ValueError(f"{QTYPE_NAMES[q]} rows hold whole blocks of {bs} values; got {cols} columns")
    if not np.isfinite(x2).all():
        raise ValueError("x contains NaN or infinity")
    if np.abs(x2).max() > 1e6:
        raise ValueError("x has values beyond 1e6: the fp16 block scales could overflow")
    out = np.empty((rows, _core.row_bytes(q, cols)), np.uint8)
    _core.quantize(q, x2.reshape(-1), out.reshape(-1))
    return out


def membw(nbytes: int = 1 << 30, threads=None, passes: int = 11) -> float:
    """The machine's streaming-read bandwidth in GB/s (1e9 bytes/s), median of `passes` passes over
    a buffer first touched by the reading threads."""
    if isinstance(nbytes, (bool, np.bool_)) or not isinstance(nbytes, (int, np.integer)):
        raise TypeError(f"nbytes must be an int, got {type(nbytes).__name__}")
    if nbytes < (1 << 20):
        raise ValueError("nbytes must be at least 1 MiB")
    if isinstance(passes, (bool, np.bool_)) or not isinstance(passes, (int, np.integer)):
        raise TypeError(f"passes must be an int, got {type(passes).__name__}")
    if not 1 <= passes <= 63:
        raise ValueError(f"passes must be between 1 and 63, got {passes}")
    return _core.membw(int(nbytes), _threads(threads), int(passes)) / 1e9


def default_threads() -> int:
    return _core.default_threads()


_check_env_override()
