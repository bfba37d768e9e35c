"""Small GGUF files written with the gguf package's GGUFWriter (the independent writer), plus
helpers that locate header fields so tests can corrupt them precisely."""
from __future__ import annotations

import struct

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

ALIGNMENT = 64

# key -> (value, GGUF value type, array item type or None); order = file order after the
# writer's own general.architecture / general.alignment.
SAMPLE_META = {
    "test.u8": (200, VT.UINT8, None),
    "test.i8": (-5, VT.INT8, None),
    "test.u16": (60000, VT.UINT16, None),
    "test.i16": (-30000, VT.INT16, None),
    "test.u32": (4000000000, VT.UINT32, None),
    "test.i32": (-2000000000, VT.INT32, None),
    "test.f32": (1.5, VT.FLOAT32, None),
    "test.bool": (True, VT.BOOL, None),
    "test.str": ("h\u00e9llo \u2713", VT.STRING, None),
    "test.u64": (2 ** 63 + 5, VT.UINT64, None),
    "test.i64": (-(2 ** 62), VT.INT64, None),
    "test.f64": (3.141592653589793, VT.FLOAT64, None),
    "test.arr_str": (["a", "", "\u00fc\u00df", "tok en"], VT.ARRAY, VT.STRING),
    "test.arr_i32": ([1, -2, 3, 2 ** 31 - 1], VT.ARRAY, VT.INT32),
    "test.arr_u8": ([0, 1, 255], VT.ARRAY, VT.UINT8),
    "test.arr_f32": ([0.5, -1.25, 1e10], VT.ARRAY, VT.FLOAT32),
    "test.arr_bool": ([True, False, True], VT.ARRAY, VT.BOOL),
    "test.arr_nested": ([[1, 2], [3]], VT.ARRAY, VT.ARRAY),
    "test.dup_a": (7, VT.UINT32, None),
    "test.dup_b": (8, VT.UINT32, None),
}


def sample_tensors(seed: int = 0) -> dict:
    """name -> (array to write, raw_dtype or None)."""
    rng = np.random.default_rng(seed)
    q8 = gguf.quants.quantize(rng.standard_normal((6, 64)).astype(np.float32), QT.Q8_0)
    q2k = rng.integers(0, 256, size=(2, 84), dtype=np.uint8)
    return {
        "norm.weight": (rng.standard_normal(64).astype(np.float32), None),
        "w.q8": (q8, QT.Q8_0),
        "w.f16": (rng.standard_normal((3, 32)).astype(np.float16), None),
        "w.3d": (rng.standard_normal((2, 3, 4)).astype(np.float32), None),
        "w.q2k": (q2k, QT.Q2_K),
    }


def write_sample(path, seed: int = 0, alignment: int = ALIGNMENT, meta=SAMPLE_META, tensors=None) -> dict:
    tensors = sample_tensors(seed) if tensors is None else tensors
    w = gguf.GGUFWriter(str(path), "llama")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for k, (v, vt, st) in meta.items():
        w.add_key_value(k, v, vt, sub_type=st)
    for name, (a, raw) in tensors.items():
        w.add_tensor(name, a, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


def _gguf_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def find_key(buf: bytes, key: str) -> int:
    """Offset of the key's length field; the value type follows the key's bytes."""
    pat = _gguf_string(key)
    i = buf.find(pat)
    assert i >= 0 and buf.find(pat, i + 1) < 0, key
    return i


def value_pos(buf: bytes, key: str) -> int:
    """Offset of the u32 value type of `key`."""
    return find_key(buf, key) + 8 + len(key.encode())


def tensor_info_pos(buf: bytes, name: str) -> int:
    """Offset of the tensor's u32 n_dims (name string precedes it)."""
    pat = _gguf_string(name)
    i = buf.rfind(pat)  # tensor infos follow the metadata
    assert i >= 0, name
    return i + len(pat)


def tensor_fields(buf: bytes, name: str) -> dict:
    """Offsets of n_dims, dims[0], type and offset fields of a tensor info."""
    p = tensor_info_pos(buf, name)
    n_dims = struct.unpack_from("<I", buf, p)[0]
    return {"n_dims": p, "dims": p + 4, "type": p + 4 + 8 * n_dims, "offset": p + 4 + 8 * n_dims + 4}
