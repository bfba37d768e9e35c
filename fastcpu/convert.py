"""Re-quantize a GGUF model's weights into another format (a development tool: tests and
benchmarks use it to get the same model in every format).

Needs the gguf package (the `test` extra): its (de)quantizers and GGUFWriter do the I/O. Every
2-D weight whose row length is a multiple of the target's block size is dequantized to float32
(gguf.quants.dequantize) and re-quantized; 1-D tensors (norms), tensors with other row lengths and
tensors already in the target format are copied unchanged. All metadata (tokenizer, chat template,
...) is copied with its original value types; general.file_type is set to the target format.

How the weights are re-quantized, per target:
  F16, BF16, Q8_0   gguf.quants (llama.cpp's reference conversion), unchanged.
  Q4_0, Q5_0        per block of 32, a search over the scale (quantize below): the reference's
  Q4_1, Q5_1        one-shot choice, a few other scales and least-squares refinements, keeping
                    the smallest squared error as the file decodes it (fp16 d/m included). Never
                    worse than the reference in any block, and it keeps weights that are already
                    on a coarser grid: Q4_1 -> Q5_1 is lossless (every Q4_1 block m + q*d becomes
                    d/2, codes 2q: the values decode bit for bit the same), where the reference's
                    d = (max-min)/31 added 4.6% RMS error to the default model's Q4_1 weights.
                    Q4_1 -> Q5_0 (symmetric, no offset) cannot be exact: 3.8% RMS against 4.4%.
The block bytes are ggml's layouts (pack_blocks), the same as gguf.quants.quantize writes.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

from .gguf import GGML_TYPES, GGUFFile

# Formats the gguf package can quantize (K-quants it can only dequantize).
TARGETS = ("F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
# general.file_type (llama_ftype) per target format
FILE_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "BF16": 32}


def _gguf_pkg():
    try:
        import gguf
        import gguf.quants  # noqa: F401
    except ImportError:
        raise ImportError("format conversion needs the gguf package: pip install 'fastcpu[test]' "
                          "(or pip install gguf)") from None
    return gguf


def _target(qtype: str) -> str:
    q = str(qtype).strip().upper()
    if q not in TARGETS:
        raise ValueError(f"cannot convert to {qtype!r}; targets: {', '.join(TARGETS)}")
    return q


def _writer_value(v):
    # strings may hold raw bytes kept as surrogates by the reader: write the original bytes
    if isinstance(v, str):
        return v.encode("utf-8", "surrogateescape")
    if isinstance(v, list):
        return [_writer_value(x) for x in v]
    return v


# ---- re-quantization with a per-block scale search (Q4_0, Q4_1, Q5_0, Q5_1) ----
#
# gguf.quants (llama.cpp's reference quantizers) picks each block's scale in one shot:
# d = (max-min)/levels, m = min for Q4_1/Q5_1 (levels = 15/31); d = v_ext/-half for Q4_0/Q5_0
# (v_ext the value of largest magnitude, half = 8/16); codes are chosen with the float32 d (and
# m), which are rounded to fp16 afterwards. Here every block takes, among these candidates, the
# one with the smallest squared error:
#   - the reference's own result, bit for bit (so the search is never worse than it);
#   - asymmetric: d = (max-min)/levels and (max-min)/(levels-1), m = min;
#     symmetric: d = v_ext/k for k = -half, ..., -half/2 (_SYM_K);
#   - _LS_STEPS least-squares refinements of the best so far (d, and m, fitted to its codes).
# Candidates other than the reference's round their codes with the fp16 d/m the file stores, and
# every error is that of the float32 reconstruction d*c (+ m) exactly as ggml/gguf decode it.
# The candidates keep the grid over the block: asymmetric d within [range/levels,
# range/(levels-1)] with m in [max - levels*d, min], symmetric |d| within [amax/half,
# 2*amax/half]; so no element errs by more than range/(2*(levels-1)) (asymmetric) or amax/half
# (symmetric, the reference's own worst case), fp16 rounding aside.
# A Q4_1 block (m + q*d with codes 0 and 15 present, as Q4_1 quantizers write them) is exact in
# Q5_1 with the (max-min)/30 candidate: d' = d/2 (exact in fp16 for d >= 2^-13), m' = m, codes 2q,
# and d'*(2q) + m rounds the same as d*q + m.

BLOCK = 32
# bits per code: symmetric formats v = d*(q - 2^(bits-1)), asymmetric v = d*q + m
_SYM_BITS = {"Q4_0": 4, "Q5_0": 5}
_ASYM_BITS = {"Q4_1": 4, "Q5_1": 5}
SEARCHED = tuple(_SYM_BITS) + tuple(_ASYM_BITS)
# symmetric candidates d = v_ext / (k * half), half = 2^(bits-1): v_ext on code -half (the
# reference, k = -1) down to -half/2 in 9 steps (Q5_0: -16, -15, ..., -8; Q4_0: -8, -7.5, ..., -4).
# Chosen on the default model's Q4_1 tensors going to Q5_0: in a dense scan of k, integer codes
# for v_ext won most blocks; half-integers too gained under 0.01 point of RMS error for twice
# the time, and v_ext on the positive side never won.
_SYM_K = tuple(-(1 - j / 16) for j in range(9))
_LS_STEPS = 2
# A candidate replaces the best so far only if its float32-computed squared error is smaller by
# this relative margin, more than that computation's rounding (< 2^-18): the choice is then
# better in exact arithmetic too, so never worse than the reference's.
_MARGIN = 1.0 - 2.0 ** -16
_CHUNK_BLOCKS = 1 << 16  # blocks per vectorized pass (2M values)


def _f32(a):
    return np.asarray(a, dtype=np.float32)


class _Best:
    """The best (d, m, codes) per block so far and its squared error; codes c as float32
    (symmetric: c = q - half, asymmetric: c = q), reconstruction d*c (+ m) in float32 as
    ggml/gguf dequantize."""

    def __init__(self, x, d16, m16, c):
        self.x, self.d16, self.m16, self.c = x, d16, m16, c
        self.err = self._sse(d16, m16, c)

    def _sse(self, d16, m16, c):
        r = c * d16.astype(np.float32)
        if m16 is not None:
            r += m16.astype(np.float32)
        r -= self.x
        return np.einsum("ij,ij->i", r, r)

    def consider(self, d16, m16, c):
        e = self._sse(d16, m16, c)
        better = (e < self.err * np.float32(_MARGIN))[:, None]
        np.copyto(self.d16, d16, where=better)
        if m16 is not None:
            np.copyto(self.m16, m16, where=better)
        np.copyto(self.c, c, where=better)
        np.copyto(self.err, e, where=better[:, 0])


def _round_codes(t, lo, hi):
    c = np.rint(t)
    np.clip(c, lo, hi, out=c)
    return np.nan_to_num(c, copy=False)  # d == 0: any code decodes to 0 (m)


def _codes_sym(x, d16, half):
    """Nearest codes c in -half..half-1 for the fp16 scale d16 (0 where d16 == 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _round_codes(x / d16.astype(np.float32), -half, half - 1)


def _codes_asym(x, d16, m16, levels):
    with np.errstate(divide="ignore", invalid="ignore"):
        return _round_codes((x - m16.astype(np.float32)) / d16.astype(np.float32), 0, levels)


def _ref_sym(x, half):
    """gguf.quants Q4_0/Q5_0: (fp16 d, codes q as stored) exactly as the reference computes them,
    and v_ext."""
    imax = np.abs(x).argmax(axis=-1)[:, None]
    vmax = np.take_along_axis(x, imax, axis=-1)
    d = vmax / np.float32(-half)
    with np.errstate(divide="ignore"):
        idd = np.where(d == 0, 0, 1 / d)
    q = np.trunc(x * idd + np.float32(half + 0.5), dtype=np.float32).astype(np.uint8).clip(0, 2 * half - 1)
    return d.astype(np.float16), q, vmax


def _ref_asym(x, levels):
    """gguf.quants Q4_1/Q5_1: (fp16 d, fp16 m, codes) exactly as the reference computes them,
    and min, max."""
    hi = x.max(axis=-1, keepdims=True)
    lo = x.min(axis=-1, keepdims=True)
    d = (hi - lo) / np.float32(levels)
    with np.errstate(divide="ignore"):
        idd = np.where(d == 0, 0, 1 / d)
    q = np.trunc((x - lo) * idd + np.float32(0.5), dtype=np.float32).astype(np.uint8).clip(0, levels)
    return d.astype(np.float16), lo.astype(np.float16), q, lo, hi


def _search_sym(x, half, search=True):
    d16, q, vmax = _ref_sym(x, half)
    if not search:
        return d16, q
    best = _Best(x, d16, None, q.astype(np.float32) - np.float32(half))
    with np.errstate(over="ignore"):
        for k in _SYM_K[1:]:
            cd = (vmax / np.float32(k * half)).astype(np.float16)
            best.consider(cd, None, _codes_sym(x, cd, half))
        # least squares on the best codes: d = sum(x c) / sum(c c), |d| kept within
        # [amax/half, 2 amax/half]: no value is clipped by more than amax/half, the reference's
        # own worst case, and no rounding error exceeds that either
        amax = np.abs(vmax.astype(np.float64))
        for _ in range(_LS_STEPS):
            c = best.c
            den = np.einsum("ij,ij->i", c, c, dtype=np.float64)[:, None]
            num = np.einsum("ij,ij->i", x, c, dtype=np.float64)[:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                d = np.where(den > 0, num / den, 0.0)
            d = np.sign(d) * np.clip(np.abs(d), amax / half, 2 * amax / half)
            cd = d.astype(np.float16)
            best.consider(cd, None, _codes_sym(x, cd, half))
    return best.d16, (best.c + np.float32(half)).astype(np.uint8)


def _search_asym(x, levels, search=True):
    d16, m16, q, lo, hi = _ref_asym(x, levels)
    if not search:
        return d16, m16, q
    best = _Best(x, d16, m16, q.astype(np.float32))
    lo16 = lo.astype(np.float16)
    with np.errstate(over="ignore"):
        for k in (levels, levels - 1):  # the reference's, and the one exact for Q4_1 -> Q5_1
            cd = ((hi - lo) / np.float32(k)).astype(np.float16)
            best.consider(cd, lo16, _codes_asym(x, cd, lo16, levels))
        # least squares on the best codes: x ~ d*q + m, with d in [range/levels,
        # range/(levels-1)] and m in [max - levels*d, min] (the grid covers the block)
        lo64, hi64 = lo.astype(np.float64), hi.astype(np.float64)
        sx = x.sum(1, keepdims=True, dtype=np.float64)
        for _ in range(_LS_STEPS):
            c = best.c
            sq = c.sum(1, keepdims=True, dtype=np.float64)
            sqq = np.einsum("ij,ij->i", c, c, dtype=np.float64)[:, None]
            sqx = np.einsum("ij,ij->i", c, x, dtype=np.float64)[:, None]
            den = BLOCK * sqq - sq * sq
            with np.errstate(divide="ignore", invalid="ignore"):
                d = np.where(den > 0, (BLOCK * sqx - sq * sx) / den, 0.0)
            d = np.clip(d, (hi64 - lo64) / levels, (hi64 - lo64) / (levels - 1))
            m = np.clip((sx - d * sq) / BLOCK, hi64 - levels * d, lo64)
            cd, cm = d.astype(np.float16), m.astype(np.float16)
            best.consider(cd, cm, _codes_asym(x, cd, cm, levels))
    return best.d16, best.m16, best.c.astype(np.uint8)


def _pack_nibbles(q):
    # byte j: low nibble = code j, high nibble = code j+16 (low 4 bits of each)
    return (q[:, :BLOCK // 2] & np.uint8(0x0F)) | (q[:, BLOCK // 2:] << np.uint8(4))


def _pack_qh(q):
    # bit j of a little-endian uint32 = fifth bit of code j
    return np.packbits((q >> np.uint8(4)) & np.uint8(1), axis=-1, bitorder="little")


def _f16_bytes(a):
    return np.ascontiguousarray(a, dtype=np.float16).view(np.uint8).reshape(len(a), 2)


def pack_blocks(qtype: str, q, d, m=None) -> np.ndarray:
    """GGUF block bytes (nb, bytes per block) from codes q (nb, 32; unsigned, as stored), fp16 d and
    m (nb, 1). Layouts as ggml: Q4_0 = d, qs[16]; Q4_1 = d, m, qs[16]; Q5_0 = d, qh[4], qs[16];
    Q5_1 = d, m, qh[4], qs[16]."""
    q = np.asarray(q, dtype=np.uint8)
    parts = [_f16_bytes(d)]
    if qtype in _ASYM_BITS:
        parts.append(_f16_bytes(m))
    if qtype in ("Q5_0", "Q5_1"):
        parts.append(_pack_qh(q))
    parts.append(_pack_nibbles(q))
    return np.concatenate(parts, axis=1)


def quantize_blocks(qtype: str, x: np.ndarray, search: bool = True):
    """Blocks x (nb, 32) float32 -> (d, m or None, q) for qtype in SEARCHED; search=False gives
    the reference quantizer's choice (gguf.quants bit for bit)."""
    x = _f32(x)
    if qtype in _SYM_BITS:
        d, q = _search_sym(x, 1 << (_SYM_BITS[qtype] - 1), search)
        return d, None, q
    d, m, q = _search_asym(x, (1 << _ASYM_BITS[qtype]) - 1, search)
    return d, m, q


def dequantize_blocks(qtype: str, d, m, q) -> np.ndarray:
    """The float32 values the blocks decode to (as gguf.quants.dequantize computes them)."""
    d = np.asarray(d, dtype=np.float16).astype(np.float32)
    c = np.asarray(q).astype(np.float32)
    if qtype in _SYM_BITS:
        return d * (c - np.float32(1 << (_SYM_BITS[qtype] - 1)))
    return d * c + np.asarray(m, dtype=np.float16).astype(np.float32)


def quantize(values: np.ndarray, qtype: str, search: bool = True) -> np.ndarray:
    """values (..., n) float32 with n a multiple of 32 -> GGUF bytes (..., n/32 * bytes per
    block), as gguf.quants.quantize lays them out. Formats in SEARCHED get the per-block search
    (search=False: the reference quantizer, bit for bit); the others go to gguf.quants."""
    qtype = _target(qtype)
    if qtype not in SEARCHED:
        gguf = _gguf_pkg()
        return gguf.quants.quantize(_f32(values), gguf.GGMLQuantizationType[qtype])
    values = _f32(values)
    if values.shape[-1] % BLOCK:
        raise ValueError(f"row length {values.shape[-1]} is not a multiple of {BLOCK}")
    blocks = values.reshape(-1, BLOCK)
    nb = len(blocks)
    bpb = 2 + (2 if qtype in _ASYM_BITS else 0) + (4 if qtype in ("Q5_0", "Q5_1") else 0) + BLOCK // 2
    out = np.empty((nb, bpb), dtype=np.uint8)
    for s in range(0, nb, _CHUNK_BLOCKS):
        d, m, q = quantize_blocks(qtype, blocks[s:s + _CHUNK_BLOCKS], search)
        out[s:s + _CHUNK_BLOCKS] = pack_blocks(qtype, q, d, m)
    return out.reshape(values.shape[:-1] + (values.shape[-1] // BLOCK * bpb,))


def convert(src, dest, qtype: str, progress: bool = False) -> str:
    """Writes `src` with its weights in format `qtype` to `dest` (atomically); returns dest."""
    gguf = _gguf_pkg()
    target = _target(qtype)
    tq = gguf.GGMLQuantizationType[target]
    tbs = GGML_TYPES[int(tq)][1]
    src, dest = os.fspath(src), os.fspath(dest)
    tmp = f"{dest}.part-{os.getpid()}"
    with GGUFFile(src) as g:
        arch = g.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise ValueError(f"{src} has no general.architecture")
        w = gguf.GGUFWriter(tmp, arch)
        try:
            if "general.alignment" in g.metadata:
                w.add_custom_alignment(g.metadata["general.alignment"])
            have_ft = False
            for k, v in g.metadata.items():
                if k in ("general.architecture", "general.alignment"):
                    continue
                vt, st = g.metadata_types[k]
                if k == "general.file_type":
                    v, have_ft = FILE_TYPES[target], True
                w.add_key_value(k, _writer_value(v), gguf.GGUFValueType(vt),
                                sub_type=None if st is None else gguf.GGUFValueType(st))
            if not have_ft:
                w.add_file_type(FILE_TYPES[target])

            items = list(g.tensors.values())
            if progress:
                from tqdm import tqdm
                items = tqdm(items, desc=f"-> {target}", unit="tensor")
            for t in items:
                raw = g.raw(t.name)
                if len(t.ne) >= 2 and t.ne[0] % tbs == 0 and t.qtype != int(tq):
                    vals = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(t.qtype))
                    vals = np.asarray(vals, dtype=np.float32).reshape(t.shape)
                    if target == "F16":
                        w.add_tensor(t.name, vals.astype(np.float16))
                    else:
                        q = quantize(vals, target)  # the search for SEARCHED, else gguf.quants
                        w.add_tensor(t.name, q, raw_dtype=tq)  # byte shape: the writer derives ne
                else:  # norms, odd row lengths, already in the target format: copied as they are
                    data = raw.reshape(t.shape[:-1] + (t.row_bytes,))
                    w.add_tensor(t.name, data, raw_dtype=gguf.GGMLQuantizationType(t.qtype))
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
            w.close()
            GGUFFile(tmp).close()  # what we wrote must parse
            os.replace(tmp, dest)
        except BaseException:
            w.close()
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return dest


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 22)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


# Bumped per target whenever what convert() writes for it changes, so that a cached conversion
# made by an older converter is not reused (converted_path puts it in the file name).
# 2: the scale search (Q4_0, Q4_1, Q5_0, Q5_1), where 1 was gguf.quants' reference quantizer.
CONVERTER_VERSIONS = {"Q4_0": 2, "Q4_1": 2, "Q5_0": 2, "Q5_1": 2}


def converted_path(src, qtype: str) -> str:
    """Where the cached conversion of `src` to `qtype` lives (keyed by the source's contents and
    the converter's version for that target)."""
    from .hub import cache_dir

    src = os.fspath(src)
    stem = os.path.basename(src)
    if stem.endswith(".gguf"):
        stem = stem[:-5]
    target = _target(qtype)
    version = CONVERTER_VERSIONS.get(target, 1)
    tag = f".v{version}" if version > 1 else ""  # version 1: the names caches already hold
    return os.path.join(cache_dir(), "converted", f"{stem}-{_file_digest(src)[:12]}.{target}{tag}.gguf")


def converted(src, qtype: str, progress: bool = False, force: bool = False) -> str:
    """Path of `src` (a path or model name) converted to `qtype`, converting on first use."""
    from .hub import resolve

    src = resolve(src)
    dest = converted_path(src, qtype)
    if force or not os.path.isfile(dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        convert(src, dest, qtype, progress=progress)
    return dest
