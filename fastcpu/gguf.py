"""Our own GGUF reader: validates the whole header, then serves tensor bytes as zero-copy views of
a read-only memory map.

Everything read from the file is checked before it is used (counts against the bytes left, string
lengths, value types, alignment, tensor shapes/types/offsets), so a truncated or hostile file gives
a ModelFormatError naming the problem and never a crash, a huge allocation or an out-of-bounds read.

Layout (little-endian; GGUF versions 2 and 3):
    magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
    n_kv x (string key, u32 value type, value)
    n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)
    padding to `general.alignment` (default 32) | tensor data (offsets relative to its start)
A string is a u64 byte length followed by UTF-8 bytes; an array is (u32 type, u64 count, items).
"""
from __future__ import annotations

import mmap
import os
import struct
from collections.abc import MutableMapping
from dataclasses import dataclass

import numpy as np

__all__ = ["ModelFormatError", "GGUFFile", "TensorInfo", "GGML_TYPES", "SUPPORTED_QTYPES", "qtype_id"]


class ModelFormatError(ValueError):
    """The model file is not a valid (or not a supported) GGUF file."""


GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
# Arrays of arrays are legal but nothing real nests deeply; the bound keeps recursion finite.
MAX_ARRAY_DEPTH = 8
MAX_ALIGNMENT = 1 << 30

# ggml type id -> (name, weights per block, bytes per block)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
}
GGML_TYPE_IDS = {v[0]: k for k, v in GGML_TYPES.items()}
# The formats fastcpu has kernels for; the others parse but are refused when their data is used.
SUPPORTED_QTYPES = frozenset(GGML_TYPE_IDS[n] for n in (
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"))

# GGUF metadata value types
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY, \
    T_UINT64, T_INT64, T_FLOAT64 = range(13)
VALUE_TYPE_NAMES = ("UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL",
                    "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64")
_SCALAR_FMT = {T_UINT8: "<B", T_INT8: "<b", T_UINT16: "<H", T_INT16: "<h", T_UINT32: "<I",
               T_INT32: "<i", T_FLOAT32: "<f", T_BOOL: "<B", T_UINT64: "<Q", T_INT64: "<q",
               T_FLOAT64: "<d"}
_SCALAR_DTYPE = {T_UINT8: "<u1", T_INT8: "<i1", T_UINT16: "<u2", T_INT16: "<i2", T_UINT32: "<u4",
                 T_INT32: "<i4", T_FLOAT32: "<f4", T_BOOL: "<u1", T_UINT64: "<u8", T_INT64: "<i8",
                 T_FLOAT64: "<f8"}
_INT_TYPES = (T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_UINT64, T_INT64)
# Fewest bytes one item of each type takes (a string: its length; an array: type + count).
_MIN_SIZE = {t: struct.calcsize(f) for t, f in _SCALAR_FMT.items()}
_MIN_SIZE[T_STRING] = 8
_MIN_SIZE[T_ARRAY] = 12
# Smallest possible key/value pair (empty key + type + 1-byte value) and tensor info
# (empty name + n_dims + one dim + type + offset): they bound the counts by the file size.
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8


def qtype_id(qtype) -> int:
    """A ggml type id from a name ('Q4_0', 'q4_k') or an id."""
    if isinstance(qtype, (int, np.integer)) and not isinstance(qtype, (bool, np.bool_)):
        if int(qtype) not in GGML_TYPES:
            raise ValueError(f"unknown ggml type id {int(qtype)}")
        return int(qtype)
    if isinstance(qtype, str):
        key = qtype.strip().upper()
        if key not in GGML_TYPE_IDS:
            raise ValueError(f"unknown ggml type {qtype!r}")
        return GGML_TYPE_IDS[key]
    raise TypeError(f"qtype must be a type name or id, got {type(qtype).__name__}")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple  # numpy order: reversed `ne`, e.g. (rows, cols)
    ne: tuple  # GGUF order: ne[0] is the row length (contiguous dimension)
    qtype: int  # ggml type id
    qtype_name: str
    offset: int  # absolute file offset of the first byte
    nbytes: int

    @property
    def supported(self) -> bool:
        """Whether fastcpu has kernels for this tensor's format."""
        return self.qtype in SUPPORTED_QTYPES

    @property
    def block_size(self) -> int:
        return GGML_TYPES[self.qtype][1]

    @property
    def type_size(self) -> int:
        return GGML_TYPES[self.qtype][2]

    @property
    def rows(self) -> int:
        r = 1
        for d in self.ne[1:]:
            r *= d
        return r

    @property
    def row_bytes(self) -> int:
        return self.ne[0] // self.block_size * self.type_size


class _Cursor:
    """Bounds-checked sequential reads from a buffer; every read names what it was reading."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf, pos: int = 0):
        self.buf = buf
        self.pos = pos
        self.end = len(buf)

    def need(self, n: int, what: str) -> None:
        if n < 0 or n > self.end - self.pos:
            raise ModelFormatError(
                f"file truncated or corrupt: {what} needs {n} bytes at offset {self.pos}, "
                f"but only {self.end - self.pos} remain")

    def scalar(self, fmt: str, size: int, what: str):
        self.need(size, what)
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return v

    def u32(self, what: str) -> int:
        return self.scalar("<I", 4, what)

    def u64(self, what: str) -> int:
        return self.scalar("<Q", 8, what)

    def raw(self, n: int, what: str) -> bytes:
        self.need(n, what)
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return bytes(b)

    def string_bytes(self, what: str) -> bytes:
        n = self.u64(f"length of {what}")
        if n > self.end - self.pos:
            raise ModelFormatError(
                f"{what}: string length {n} at offset {self.pos - 8} runs past the end of the file")
        return self.raw(n, what)


def _decode_name(b: bytes, what: str) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelFormatError(f"{what} is not valid UTF-8: {b[:64]!r} ({e.reason})") from None


def _decode_value(b: bytes) -> str:
    # Values are specified as UTF-8 but some converters wrote raw token bytes; keep them
    # losslessly (s.encode('utf-8', 'surrogateescape') gives the original bytes back).
    return b.decode("utf-8", "surrogateescape")


# Arrays with more items than this are kept in the file and decoded on each access (see _LazyArray).
LAZY_ARRAY_MIN = 64


class _LazyArray:
    """A validated array value left in the file: item type, count and where its items lie."""

    __slots__ = ("etype", "n", "start", "end")

    def __init__(self, etype: int, n: int, start: int, end: int):
        self.etype, self.n, self.start, self.end = etype, n, start, end

    def decode(self, buf, base: int = 0) -> list:
        """The list the eager reader built (buf holds the file, or only this array's bytes at base)."""
        if self.etype == T_STRING:
            return list(self.strings(buf, base))
        a = np.frombuffer(buf, dtype=_SCALAR_DTYPE[self.etype], count=self.n, offset=self.start - base)
        return (a.astype(bool) if self.etype == T_BOOL else a).tolist()

    def strings(self, buf, base: int = 0, raw: bool = False):
        """The items of a string array, one at a time (raw: their bytes, not decoded)."""
        pos = self.start - base
        unpack = struct.Struct("<Q").unpack_from
        for _ in range(self.n):
            ln = unpack(buf, pos)[0]
            pos += 8
            b = buf[pos:pos + ln]
            yield bytes(b) if raw else b.decode("utf-8", "surrogateescape")
            pos += ln


class GGUFMetadata(MutableMapping):
    """The metadata of a GGUFFile: a mapping of keys to plain Python values, in file order.

    Long arrays (a vocabulary's 49152 token strings, its ~50000 merges, token types, scores) are
    not held as Python lists, which cost ~10 MB for a small model, for the whole life of the model,
    after the tokenizer has read them once. They stay in the file's mapping, validated at open, and
    every access decodes a new list with the same values the eager reader gave. When the file is
    closed, their raw bytes are copied so that the mapping keeps working."""

    def __init__(self, buf):
        self._d: dict = {}
        self._buf = buf

    def __getitem__(self, key):
        v = self._d[key]
        if type(v) is _LazyArray:
            buf = self._buf
            if isinstance(buf, dict):  # detached: each array's bytes alone
                return v.decode(buf[key], v.start)
            return v.decode(buf)
        return v

    def iter_strings(self, key, raw: bool = False):
        """An iterator over the items of a string array kept in the file, decoded one at a time (no
        list of them all at once; raw: their bytes); None when key holds anything else."""
        v = self._d.get(key)
        if type(v) is not _LazyArray or v.etype != T_STRING:
            return None
        buf = self._buf
        if isinstance(buf, dict):
            return v.strings(buf[key], v.start, raw)
        return v.strings(buf, 0, raw)

    def __setitem__(self, key, value):
        self._d[key] = value

    def __delitem__(self, key):
        del self._d[key]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)

    def __contains__(self, key):
        return key in self._d

    def copy(self) -> dict:
        """A plain dict with every value decoded."""
        return dict(self.items())

    def _detach(self) -> None:
        """Copies the bytes of the lazy arrays out of the mapping, which is about to close."""
        buf = self._buf
        if buf is None or isinstance(buf, dict):
            return
        self._buf = {k: bytes(buf[v.start:v.end]) for k, v in self._d.items() if type(v) is _LazyArray}

    def __repr__(self):
        return f"GGUFMetadata({len(self._d)} keys: {', '.join(list(self._d)[:8])}{', ...' if len(self._d) > 8 else ''})"


class GGUFFile:
    """A parsed, validated GGUF file whose tensor data is memory-mapped read-only."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._mm = None
        self._buf = None
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            raise FileNotFoundError(f"model file not found: {self.path}") from None
        with f:
            # identity of the mapped file (dev, inode, size, mtime): a reader that reopens the
            # path checks it is still the same file (fastcpu.model's embedding reader)
            self.stat = os.fstat(f.fileno())
            size = self.stat.st_size
            if size < 24:
                raise ModelFormatError(
                    f"{self.path}: not a GGUF file ({size} bytes, too short for a GGUF header)")
            try:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as e:
                raise ModelFormatError(f"{self.path}: cannot memory-map the file: {e}") from None
        try:
            self._parse()
        except ModelFormatError as e:
            self.close()
            msg = str(e)
            if not msg.startswith(self.path):
                msg = f"{self.path}: {msg}"
            raise ModelFormatError(msg) from None
        except BaseException:
            self.close()
            raise
        self._buf = np.frombuffer(self._mm, dtype=np.uint8)

    # ---- parsing ----

    def _parse(self) -> None:
        mm = self._mm
        size = len(mm)
        c = _Cursor(mm)
        magic = c.raw(4, "magic")
        if magic != GGUF_MAGIC:
            raise ModelFormatError(f"not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
        version = c.u32("version")
        if version not in (2, 3):
            swapped = struct.unpack("<I", struct.pack(">I", version))[0]
            if swapped in (2, 3):
                raise ModelFormatError("big-endian GGUF files are not supported")
            if version == 1:
                raise ModelFormatError("GGUF version 1 is obsolete and not supported (need 2 or 3)")
            raise ModelFormatError(f"unsupported GGUF version {version} (need 2 or 3)")
        self.version = version
        n_tensors = c.u64("tensor count")
        n_kv = c.u64("metadata count")
        if n_kv > (size - c.pos) // _MIN_KV_BYTES:
            raise ModelFormatError(f"metadata count {n_kv} is impossible for a file of {size} bytes")
        if n_tensors > (size - c.pos) // _MIN_TENSOR_INFO_BYTES:
            raise ModelFormatError(f"tensor count {n_tensors} is impossible for a file of {size} bytes")

        meta = GGUFMetadata(mm)
        mtypes: dict[str, tuple] = {}
        for i in range(n_kv):
            key = _decode_name(c.string_bytes(f"metadata key #{i}"), f"metadata key #{i}")
            if key in meta:
                raise ModelFormatError(f"duplicate metadata key {key!r}")
            vtype = c.u32(f"value type of {key!r}")
            if vtype == T_ARRAY:
                c.need(4, f"array item type of {key!r}")
                mtypes[key] = (vtype, struct.unpack_from("<I", mm, c.pos)[0])
            else:
                mtypes[key] = (vtype, None)
            meta[key] = self._value(c, vtype, key, 0, lazy=True)
        self.metadata = meta
        # key -> (GGUF value type, array item type or None): what a writer needs to copy a value
        self.metadata_types = mtypes

        align = meta.get("general.alignment", DEFAULT_ALIGNMENT)
        if isinstance(align, bool) or not isinstance(align, int):
            raise ModelFormatError(f"general.alignment must be an integer, got {align!r}")
        if align <= 0 or align & (align - 1) or align > MAX_ALIGNMENT:
            raise ModelFormatError(f"general.alignment must be a power of two <= {MAX_ALIGNMENT}, got {align}")
        self.alignment = align

        infos = []
        names = set()
        for i in range(n_tensors):
            name = _decode_name(c.string_bytes(f"name of tensor #{i}"), f"name of tensor #{i}")
            if not name:
                raise ModelFormatError(f"tensor #{i} has an empty name")
            if name in names:
                raise ModelFormatError(f"duplicate tensor name {name!r}")
            names.add(name)
            n_dims = c.u32(f"dimension count of tensor {name!r}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise ModelFormatError(f"tensor {name!r} has {n_dims} dimensions (must be 1..{MAX_DIMS})")
            c.need(8 * n_dims, f"dimensions of tensor {name!r}")
            ne = struct.unpack_from(f"<{n_dims}Q", mm, c.pos)
            c.pos += 8 * n_dims
            n_el = 1
            for d in ne:
                if d <= 0 or d >= 1 << 62:
                    raise ModelFormatError(f"tensor {name!r} has invalid dimensions {list(ne)}")
                n_el *= d
            if n_el >= 1 << 62:
                raise ModelFormatError(f"tensor {name!r} element count {n_el} overflows")
            qt = c.u32(f"type of tensor {name!r}")
            if qt not in GGML_TYPES:
                raise ModelFormatError(f"tensor {name!r} has unknown ggml type id {qt}")
            qname, bsz, tsz = GGML_TYPES[qt]
            if ne[0] % bsz:
                raise ModelFormatError(
                    f"tensor {name!r}: row length {ne[0]} is not a multiple of the {qname} block size {bsz}")
            rel = c.u64(f"data offset of tensor {name!r}")
            if rel % align:
                raise ModelFormatError(
                    f"tensor {name!r}: data offset {rel} is not a multiple of the alignment {align}")
            nbytes = n_el // bsz * tsz
            infos.append((name, ne, qt, qname, rel, nbytes))

        self.data_offset = data_offset = -(-c.pos // align) * align
        tensors: dict[str, TensorInfo] = {}
        for name, ne, qt, qname, rel, nbytes in infos:
            start = data_offset + rel
            if start > size or nbytes > size - start:
                raise ModelFormatError(
                    f"tensor {name!r}: data [{start}, {start + nbytes}) lies outside the file ({size} bytes)")
            tensors[name] = TensorInfo(name=name, shape=tuple(reversed(ne)), ne=tuple(ne), qtype=qt,
                                       qtype_name=qname, offset=start, nbytes=nbytes)
        prev = None
        for t in sorted(tensors.values(), key=lambda t: (t.offset, t.nbytes)):
            if prev is not None and t.offset < prev.offset + prev.nbytes:
                raise ModelFormatError(f"tensors {prev.name!r} and {t.name!r} overlap in the file")
            prev = t
        self.tensors = tensors

    def _value(self, c: _Cursor, vtype: int, key: str, depth: int, lazy: bool = False):
        if vtype in _SCALAR_FMT:
            v = c.scalar(_SCALAR_FMT[vtype], _MIN_SIZE[vtype], f"value of {key!r}")
            if vtype == T_BOOL:
                if v > 1:
                    raise ModelFormatError(f"metadata {key!r}: boolean byte {v} is not 0 or 1")
                return bool(v)
            return v
        if vtype == T_STRING:
            return _decode_value(c.string_bytes(f"value of {key!r}"))
        if vtype == T_ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise ModelFormatError(f"metadata {key!r}: arrays nested more than {MAX_ARRAY_DEPTH} deep")
            etype = c.u32(f"array item type of {key!r}")
            if etype not in _MIN_SIZE:
                raise ModelFormatError(f"metadata {key!r}: unknown array item type {etype}")
            n = c.u64(f"array length of {key!r}")
            if n > (c.end - c.pos) // _MIN_SIZE[etype]:
                raise ModelFormatError(
                    f"metadata {key!r}: array of {n} {VALUE_TYPE_NAMES[etype]} items runs past the end of the file")
            lazy = lazy and n >= LAZY_ARRAY_MIN and etype != T_ARRAY
            if etype in _SCALAR_DTYPE:
                nb = n * _MIN_SIZE[etype]
                if lazy and etype != T_BOOL:
                    c.pos += nb
                    return _LazyArray(etype, n, c.pos - nb, c.pos)
                a = np.frombuffer(c.buf, dtype=_SCALAR_DTYPE[etype], count=n, offset=c.pos)
                c.pos += nb
                if etype == T_BOOL:
                    if n and a.max() > 1:
                        raise ModelFormatError(f"metadata {key!r}: boolean array holds a byte other than 0 or 1")
                    if lazy:
                        return _LazyArray(etype, n, c.pos - nb, c.pos)
                    return a.astype(bool).tolist()
                return a.tolist()
            if etype == T_STRING:
                if lazy:
                    start = c.pos
                    self._strings(c, n, key, decode=False)
                    return _LazyArray(etype, n, start, c.pos)
                return self._strings(c, n, key)
            return [self._value(c, T_ARRAY, f"{key}[{j}]", depth + 1) for j in range(n)]
        raise ModelFormatError(f"metadata {key!r}: unknown value type {vtype}")

    @staticmethod
    def _strings(c: _Cursor, n: int, key: str, decode: bool = True) -> list:
        # Token lists hold ~1e5 strings: a tight loop, with the message built only on failure.
        buf, pos, end = c.buf, c.pos, c.end
        unpack = struct.Struct("<Q").unpack_from
        out = []
        append = out.append
        for j in range(n):
            if end - pos < 8:
                c.pos = pos
                c.need(8, f"length of item {j} of {key!r}")
            ln = unpack(buf, pos)[0]
            pos += 8
            if ln > end - pos:
                raise ModelFormatError(
                    f"metadata {key!r}: item {j} has length {ln} at offset {pos - 8}, past the end of the file")
            if decode:
                append(buf[pos:pos + ln].decode("utf-8", "surrogateescape"))
            pos += ln
        c.pos = pos
        return out

    # ---- access ----

    def _info(self, name: str) -> TensorInfo:
        if self._buf is None:
            raise ValueError(f"{self.path} is closed")
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"no tensor {name!r} in {self.path}") from None

    def raw(self, name: str) -> np.ndarray:
        """Like data() but for any known type, including those fastcpu has no kernels for."""
        t = self._info(name)
        rows = t.rows
        return self._buf[t.offset:t.offset + t.nbytes].reshape(rows, t.nbytes // rows)

    def data(self, name: str) -> np.ndarray:
        """Zero-copy read-only uint8 view (rows, row_bytes) of the tensor's GGUF blocks."""
        t = self._info(name)
        if not t.supported:
            raise ModelFormatError(
                f"{self.path}: tensor {name!r} is {t.qtype_name}, a format fastcpu does not support "
                f"(supported: {', '.join(GGML_TYPES[q][0] for q in sorted(SUPPORTED_QTYPES))})")
        return self.raw(name)

    def array(self, name: str) -> np.ndarray:
        """Float32 values (numpy shape) of an F32, F16 or BF16 tensor, e.g. a norm weight."""
        t = self._info(name)
        raw = self._buf[t.offset:t.offset + t.nbytes]
        if t.qtype == 0:
            a = raw.view("<f4").astype(np.float32)
        elif t.qtype == 1:
            a = raw.view("<f2").astype(np.float32)
        elif t.qtype == 30:
            a = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ModelFormatError(
                f"{self.path}: tensor {name!r} is {t.qtype_name}; array() reads only F32/F16/BF16 tensors")
        return a.reshape(t.shape)

    # the kernel maps file pages in windows of this size around a faulting one (fault_around_bytes)
    _FAULT_AROUND = 1 << 16

    def drop_pages(self, start: int = 0, end: int | None = None) -> None:
        """Takes the mapping's pages in [start, end) (whole fault-around windows that touch it) out
        of this process's resident set. They are clean pages of a read-only file: a later read just
        maps them again from the page cache. No-op when closed or when the OS can't."""
        mm = self._mm
        if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        size = len(mm)
        end = size if end is None else min(end, size)
        w = self._FAULT_AROUND
        lo = start // w * w
        hi = min(-(-end // w) * w, size)
        if hi <= lo:
            return
        try:
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        except (OSError, ValueError):
            pass

    def drop_loader_pages(self) -> None:
        """Drops what a loader reads through the mapping besides the weight matrices: the header
        with the metadata (the tokenizer's arrays), and the vectors (norms, biases) it copied, each
        with the fault-around window the kernel mapped with it."""
        self.drop_pages(0, self.data_offset)
        for t in self.tensors.values():
            if len(t.ne) == 1 or t.rows == 1:
                self.drop_pages(t.offset, t.offset + t.nbytes)

    def close(self) -> None:
        """Drops the mapping. Views handed out earlier keep it alive until they are gone."""
        self._buf = None
        mm, self._mm = self._mm, None
        meta = getattr(self, "metadata", None)
        if mm is not None and isinstance(meta, GGUFMetadata):
            meta._detach()
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # views still exported: the map is unmapped when the last one dies

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self._buf is None else f"{len(self.tensors)} tensors"
        return f"GGUFFile({self.path!r}, v{getattr(self, 'version', '?')}, {state})"
