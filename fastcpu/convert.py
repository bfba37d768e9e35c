"""Re-quantize a GGUF model's weights into another format (a development tool: tests and
benchmarks use it to get the same model in every format).

Needs the gguf package (the `test` extra): its reference (de)quantizers and GGUFWriter do the
work, so the output is what llama.cpp's own Python tooling would write. Every 2-D weight whose row
length is a multiple of the target's block size is dequantized to float32 and re-quantized;
1-D tensors (norms) and tensors with other row lengths are copied unchanged. All metadata
(tokenizer, chat template, ...) is copied with its original value types; general.file_type is
set to the target format.
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
                        q = gguf.quants.quantize(vals, tq)
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


def converted_path(src, qtype: str) -> str:
    """Where the cached conversion of `src` to `qtype` lives (keyed by the source's contents)."""
    from .hub import cache_dir

    src = os.fspath(src)
    stem = os.path.basename(src)
    if stem.endswith(".gguf"):
        stem = stem[:-5]
    return os.path.join(cache_dir(), "converted", f"{stem}-{_file_digest(src)[:12]}.{_target(qtype)}.gguf")


def converted(src, qtype: str, progress: bool = False, force: bool = False) -> str:
    """Path of `src` (a path or model name) converted to `qtype`, converting on first use."""
    from .hub import resolve

    src = resolve(src)
    dest = converted_path(src, qtype)
    if force or not os.path.isfile(dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        convert(src, dest, qtype, progress=progress)
    return dest
