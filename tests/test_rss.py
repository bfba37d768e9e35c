"""Mechanisms that keep the resident set small: metadata arrays left in the file, the tokenizer's
shared strings and ints, embedding rows read with pread. Each must give exactly what the plain
path gives."""
from __future__ import annotations

import os

import numpy as np
import pytest

from gguf_meta import model_path
from fastcpu import gguf, model as model_mod
from fastcpu.gguf import GGUFFile, GGUFMetadata
from fastcpu.tokenizer import Tokenizer

SMOL = model_path()
needs_smol = pytest.mark.skipif(not os.path.isfile(SMOL), reason=f"model file {SMOL} not present")
DATA = os.path.join(os.path.dirname(__file__), "data")


def _eager(monkeypatch, path):
    with monkeypatch.context() as m:
        m.setattr(gguf, "LAZY_ARRAY_MIN", 1 << 62)
        g = GGUFFile(path)
    assert not any(type(v) is gguf._LazyArray for v in g.metadata._d.values())
    return g


@needs_smol
def test_lazy_metadata_same_values(monkeypatch):
    ref = _eager(monkeypatch, SMOL)
    g = GGUFFile(SMOL)
    assert isinstance(g.metadata, GGUFMetadata)
    lazy = [k for k, v in g.metadata._d.items() if type(v) is gguf._LazyArray]
    assert "tokenizer.ggml.tokens" in lazy and "tokenizer.ggml.merges" in lazy
    assert list(g.metadata) == list(ref.metadata)
    assert g.metadata_types == ref.metadata_types
    for k in ref.metadata:
        got, want = g.metadata[k], ref.metadata[k]
        assert type(got) is type(want) and got == want, k
        if isinstance(want, list):
            assert [type(x) for x in got] == [type(x) for x in want], k
    assert g.metadata == ref.metadata and g.metadata.copy() == dict(ref.metadata)
    assert list(g.metadata.iter_strings("tokenizer.ggml.merges")) == ref.metadata["tokenizer.ggml.merges"]
    assert g.metadata.iter_strings("general.architecture") is None
    assert g.metadata.iter_strings("no.such.key") is None
    # still readable once the mapping is gone
    g.close()
    ref.close()
    for k in ref.metadata:
        assert g.metadata[k] == ref.metadata[k], k
    assert list(g.metadata.iter_strings("tokenizer.ggml.tokens")) == ref.metadata["tokenizer.ggml.tokens"]
    # a mutable mapping like the dict it replaced
    g.metadata["x.new"] = 1
    g.metadata["tokenizer.ggml.tokens"] = ["a"]
    assert g.metadata["x.new"] == 1 and g.metadata["tokenizer.ggml.tokens"] == ["a"]
    del g.metadata["x.new"]
    assert "x.new" not in g.metadata


@needs_smol
def test_lazy_metadata_rejects_truncated_arrays(tmp_path):
    """Lazy arrays are still walked at open: a string array cut short is refused there."""
    g = GGUFFile(SMOL)
    v = g.metadata._d["tokenizer.ggml.merges"]
    g.close()
    p = tmp_path / "cut.gguf"
    with open(SMOL, "rb") as f:
        p.write_bytes(f.read((v.start + v.end) // 2))
    with pytest.raises(gguf.ModelFormatError, match="merges"):
        GGUFFile(p)


@needs_smol
def test_tokenizer_from_lazy_metadata_roundtrip():
    g = GGUFFile(SMOL)
    tok = Tokenizer.from_gguf_metadata(g.metadata)  # tokens and merges streamed from the file
    plain = Tokenizer.from_gguf_metadata(g.metadata.copy())  # from lists of str
    n = tok.vocab_size
    assert n == plain.vocab_size == 49152
    assert tok._vocab.merge_count == plain._vocab.merge_count == len(plain_merges(g))
    assert [tok.token_text(i) for i in range(n)] == g.metadata["tokenizer.ggml.tokens"]
    text = open(os.path.join(DATA, "declaration.txt"), encoding="utf-8").read()
    text += "\n  naïve café, 東京 🙂 x=1234567 <|im_start|>user\n"
    ids = tok.encode(text, parse_special=True)
    assert ids == plain.encode(text, parse_special=True)
    assert tok.decode(ids) == text
    g.close()


def plain_merges(g):
    return {tuple(m.split(" ", 1)) for m in g.metadata["tokenizer.ggml.merges"]}


@needs_smol
def test_tokenizer_memory():
    """The vocabulary and merges live in C memory (~2 MB for SmolLM2's 49152 tokens and 48900 merges;
    Python dicts of str/tuple/int objects took ~15 MB), and building it from the file leaves almost
    no Python objects behind."""
    import gc
    import tracemalloc

    g = GGUFFile(SMOL)
    gc.collect()
    tracemalloc.start()
    try:
        tok = Tokenizer.from_gguf_metadata(g.metadata)
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current < 512 << 10, current  # measured 0.16 MB
    assert peak < 2 << 20, peak  # measured 0.8 MB: no list of every string at once
    assert tok._vocab.nbytes < 3 << 20, tok._vocab.nbytes  # measured 2.04 MiB
    # the encode cache is bounded
    words = " ".join("".join(chr(97 + i // 26 ** k % 26) for k in range(4)) for i in range(40000))
    tok.encode(words)
    assert len(tok._word_cache) <= 1 << 14
    g.close()


@needs_smol
def test_embedding_rows_by_pread_bit_identical(monkeypatch):
    ids = np.asarray([1, 504, 2364, 48000, 49151, 17, 17, 300], np.int32)
    m = model_mod.Model(SMOL, ctx=32, threads=1, max_batch=4)
    got = m.forward(ids, 0, "all")
    del m
    monkeypatch.setattr(model_mod, "_open_same_file", lambda f: None)  # rows through the mapping
    ref = model_mod.Model(SMOL, ctx=32, threads=1, max_batch=4)
    want = ref.forward(ids, 0, "all")
    assert np.array_equal(got, want)


@needs_smol
def test_embedding_reader_only_for_the_same_file(tmp_path):
    p = tmp_path / "m.gguf"
    p.write_bytes(open(SMOL, "rb").read(4096))
    g = GGUFFile.__new__(GGUFFile)
    g.path = str(p)
    g.stat = os.stat(p)
    fd = model_mod._open_same_file(g)
    assert fd is not None
    os.close(fd)
    os.utime(p, ns=(g.stat.st_atime_ns, g.stat.st_mtime_ns + 10**9))  # rewritten since it was mapped
    assert model_mod._open_same_file(g) is None


def _mapping_rss(addr: int) -> int:
    """Resident bytes of the one mapping that holds address addr (/proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(maxsplit=1)[0]
            if "-" in head and ":" not in head:
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= addr < hi
            elif inside and line.startswith("Rss:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no mapping holds {addr:#x}")


needs_smaps = pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs /proc/self/smaps")


@needs_smol
@needs_smaps
def test_model_file_pages_dropped_after_load():
    """Once loaded, the model file's mapping holds no resident pages: the repacked matrices' sources
    (and their neighbours' edges that fault-around brought back), the header, the metadata and the
    norm vectors are all dropped, and running the model does not read through the mapping."""
    from fastcpu.llm import LLM

    m = model_mod.Model(SMOL, ctx=64, threads=1, max_batch=8)
    addr = m.file._buf.ctypes.data
    assert _mapping_rss(addr) <= 64 << 10
    m.forward(np.arange(100, 120, dtype=np.int32), 0, "last")
    assert _mapping_rss(addr) <= 64 << 10
    del m
    llm = LLM(SMOL, ctx=64, threads=1)  # the tokenizer reads its arrays from the mapping, then lets go
    assert _mapping_rss(llm.model.file._buf.ctypes.data) <= 64 << 10
    assert llm.tokenize("Hello world") == llm.tokenizer.encode("Hello world")


@needs_smol
def test_activation_buffers_shared():
    """The per-row activation buffers share one allocation where their lives don't overlap
    (llama.c, fc_llama.act): x and xb, then max(qkv|y + att, gu|y + h) floats a row, plus the
    GEMM's quantized-activation scratch (measured 2176 bytes a row for SmolLM2)."""
    cfg = model_mod.read_config(GGUFFile(SMOL))
    big = model_mod.Model(SMOL, ctx=256, threads=1, max_batch=256).engine.alloc_bytes
    one = model_mod.Model(SMOL, ctx=256, threads=1, max_batch=1).engine.alloc_bytes
    per_row = (big - one) / 255
    d, q, h = cfg.dim, cfg.q_dim, cfg.hidden
    qkv = q + 2 * cfg.kv_dim
    want = 4 * (2 * d + max(max(qkv, d) + q, max(2 * h, d) + h))
    # separate buffers took 4 * (2d + qkv + q + 3h + d) = 4 * 7872 here: more than the bound
    assert want <= per_row <= want + 4096, (per_row, want)


_LOAD_CHILD = r"""
import json, sys
import numpy as np
import fastcpu.model
def status():
    return {l.split(":")[0]: int(l.split()[1]) << 10 for l in open("/proc/self/status")
            if l.startswith(("VmRSS:", "VmHWM:"))}
base = status()["VmRSS"]
m = fastcpu.model.Model(sys.argv[1], ctx=64, threads=1, max_batch=8)
s = status()
print(json.dumps({"base": base, "rss": s["VmRSS"], "hwm": s["VmHWM"], "out": m.engine.alloc_bytes}))
"""


@needs_smol
@needs_smaps
def test_load_high_water_mark():
    """Loading does not hold a matrix's source and its repacked copy on top of everything packed
    before it: the output matrix (SmolLM2's 29 MB embedding, its biggest) is packed first, and each
    source leaves the resident set once packed, so the load's peak is the loaded model plus a few
    MB (it was +29 MB when the output matrix came last)."""
    import json
    import subprocess
    import sys

    from childproc import CHILD_CWD, child_env

    r = subprocess.run([sys.executable, "-c", _LOAD_CHILD, SMOL], capture_output=True, text=True,
                       env=child_env(), cwd=CHILD_CWD, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    over = got["hwm"] - got["rss"]
    assert over < 12 << 20, got  # measured 5.5 MB
    assert got["rss"] - got["base"] < 110 << 20, got  # measured 95 MB: ~ the 92 MB of packed weights


_PREFILL_CHILD = r"""
import json, sys
import numpy as np
import fastcpu.model
def anon():
    return [int(l.split()[1]) << 10 for l in open("/proc/self/status") if l.startswith("RssAnon:")][0]
m = fastcpu.model.Model(sys.argv[1], ctx=320, threads=1, max_batch=256)
out = np.empty(m.n_vocab, np.float32)
m.engine.forward(np.arange(5, 6, dtype=np.int32), 0, "last", out)  # the logits row, 1-row pages
a0 = anon()
m.engine.forward(np.arange(100, 356, dtype=np.int32), 1, "last", out)
a1 = anon()
m.engine.forward(np.arange(7, 8, dtype=np.int32), 257, "last", out)
print(json.dumps({"prefill": a1 - a0, "decode": anon() - a1}))
"""


@needs_smol
@needs_smaps
def test_prefill_hands_activations_back():
    """A 256-row step leaves only the KV cache rows it wrote resident: its activation pages (6 MB at
    256 rows for SmolLM2) go back when it ends, and a decode step after it faults in next to nothing."""
    import json
    import subprocess
    import sys

    from childproc import CHILD_CWD, child_env

    cfg = model_mod.read_config(GGUFFile(SMOL))
    r = subprocess.run([sys.executable, "-c", _PREFILL_CHILD, SMOL], capture_output=True, text=True,
                       env=child_env(), cwd=CHILD_CWD, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    kv = 2 * cfg.n_layers * 256 * cfg.kv_dim * 4  # the 256 positions written: 11.8 MB
    assert got["prefill"] < kv + (1 << 20), (got, kv)  # activations kept: kv + 6 MB
    assert got["decode"] < 1 << 20, got
