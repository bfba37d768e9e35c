"""The C model runner on small random models against the float64 NumPy forward pass (model_ref.py):
llama (normal rope, tied embeddings, GQA), qwen2 (biases, neox rope, separate output matrix),
partial rotary and linear rope scaling, prefill in awkward blocks, decode after prefill, and the
errors the loader and the binding must raise."""
import zlib

import numpy as np
import pytest

pytest.importorskip("gguf")

import model_ref  # noqa: E402
import tolerances as tol  # noqa: E402
from fastcpu import kernels  # noqa: E402
from fastcpu.gguf import ModelFormatError  # noqa: E402
from fastcpu.model import Model, ModelConfig, rope_inv_freq  # noqa: E402

BASE = dict(vocab=300, dim=64, n_heads=4, n_kv_heads=2, head_dim=16, hidden=96, n_layers=2,
            rope_base=10000.0, eps=1e-5, ctx_train=128)

CASES = {
    # name: (arch, cfg changes, matrix dtype)
    "llama_f32": ("llama", {}, np.float32),
    "llama_f16_mha": ("llama", dict(n_kv_heads=4), np.float16),
    "qwen2_f32": ("qwen2", dict(bias=True, tied=False, n_kv_heads=1), np.float32),
    "llama_partial_rope": ("llama", dict(rope_dim=8, head_dim=32, n_heads=2, n_kv_heads=1), np.float32),
    "mistral_linear_rope": ("mistral", dict(rope_linear_factor=4.0, rope_base=500000.0), np.float32),
    # formats that differ inside the Q/K/V and gate/up groups (as in Q4_K_M files): no fusing
    "llama_mixed_formats": ("llama", dict(mixed=True), np.float32),
    # per-frequency divisors in a rope_freqs.weight tensor (Llama 3.1 files)
    "llama_rope_freqs": ("llama", dict(freq_factors=[1.0, 1.0, 2.0, 3.5, 6.0, 8.0, 8.0, 8.0]), np.float32),
    # contexts past the engine's split of decode attention into parts (over 512 positions)
    "llama_long": ("llama", dict(ctx_train=2048, n_heads=6, n_kv_heads=3), np.float32),
}

MIXED = {f"blk.{i}.{n}.weight": np.float16 for i in range(2) for n in ("attn_v", "ffn_up")}


def _build(tmp_path, name, **model_kw):
    arch, changes, dt = CASES[name]
    cfg = dict(BASE, **changes)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    W = model_ref.make_weights(rng, cfg)
    meta = {}
    if "rope_linear_factor" in cfg:
        meta = {f"{arch}.rope.scaling.type": "linear", f"{arch}.rope.scaling.factor": cfg["rope_linear_factor"]}
    if "freq_factors" in cfg:
        W["rope_freqs.weight"] = np.asarray(cfg["freq_factors"], np.float32)
    path = tmp_path / f"{name}.gguf"
    dtypes = MIXED if cfg.get("mixed") else None
    model_ref.write_gguf(path, arch, cfg, W, dt, meta, dtypes=dtypes)
    return Model(path, **model_kw), model_ref.stored(W, dt, dtypes), cfg, arch == "qwen2"


def _close(got, want, rtol=tol.MODEL_FLOAT_RTOL):
    err = np.abs(got.astype(np.float64) - want).max()
    scale = np.abs(want).max()
    assert err <= rtol * scale, f"max error {err:.3g} vs allowed {rtol * scale:.3g}"


@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_reference(tmp_path, isa, name):
    m, W, cfg, neox = _build(tmp_path, name, ctx=40, max_batch=7, threads=2)
    rng = np.random.default_rng(1)
    toks = rng.integers(0, cfg["vocab"], 23)
    want = model_ref.forward(W, cfg, toks, neox)
    # AMX runs F16 matmuls of several rows on bf16 tiles
    bf16 = (CASES[name][2] == np.float16 or "mixed" in name) and isa in ("amx", "amx_sim")
    rtol = tol.MODEL_BF16_RTOL if bf16 else tol.MODEL_FLOAT_RTOL
    _close(m.forward(toks, 0, "all"), want, rtol)
    # last-row logits of the same pass
    _close(m.forward(toks, 0, "last"), want[-1], rtol)


@pytest.mark.parametrize("name", ["llama_f32", "qwen2_f32", "llama_partial_rope"])
def test_kv_f16_matches_reference(tmp_path, isa, name):
    """A float16 KV cache: the logits are the reference pass's whose keys and values are rounded
    to float16 where the cache stores them (the attention arithmetic stays float32), within the
    same tolerance as the float32 cache against the plain reference."""
    m, W, cfg, neox = _build(tmp_path, name, ctx=40, max_batch=7, threads=2, kv_type="f16")
    toks = np.random.default_rng(1).integers(0, cfg["vocab"], 23)
    want = model_ref.forward(W, cfg, toks, neox, kv_f16=True)
    got = m.forward(toks, 0, "all")
    _close(got, want)
    # the cache really is float16: a float32 cache gives other bits
    m32 = _build(tmp_path, name, ctx=40, max_batch=7, threads=2)[0]
    assert not np.array_equal(got, m32.forward(toks, 0, "all"))
    # decode steps after a prefill read the rows the prefill stored
    m.forward(toks[:15], 0, "none")
    for i in range(15, 23):
        _close(m.forward(toks[i:i + 1], i, "last"), want[i])


def test_kv_f16_split_attention(tmp_path):
    """Past 512 positions (decode attention in parts) over a float16 cache, at 2 threads."""
    m, W, cfg, neox = _build(tmp_path, "llama_long", ctx=1100, max_batch=64, threads=2, kv_type="f16")
    toks = np.random.default_rng(5).integers(0, cfg["vocab"], 1100)
    want = model_ref.forward(W, cfg, toks, neox, kv_f16=True)
    m.forward(toks[:1020], 0, "none")
    for i in range(1020, 1030):
        _close(m.forward(toks[i:i + 1], i, "last"), want[i])


def test_kv_type_rejected(tmp_path):
    with pytest.raises(ValueError, match="kv_type"):
        _build(tmp_path, "llama_f32", ctx=8, kv_type="q8_0")


def test_decode_after_prefill(tmp_path):
    """Prefill in blocks then one token per step: each step's logits are the full pass's rows."""
    m, W, cfg, neox = _build(tmp_path, "qwen2_f32", ctx=32, max_batch=4)
    toks = np.random.default_rng(2).integers(0, cfg["vocab"], 17)
    want = model_ref.forward(W, cfg, toks, neox)
    _close(m.forward(toks[:11], 0, "last"), want[10])
    for i in range(11, 17):
        _close(m.forward(toks[i:i + 1], i, "last"), want[i])
    # rewinding: position 5 onward again with other tokens overwrites the cache
    toks2 = toks.copy()
    toks2[5:] = (toks2[5:] + 1) % cfg["vocab"]
    want2 = model_ref.forward(W, cfg, toks2, neox)
    _close(m.forward(toks2[5:], 5, "all"), want2[5:])


@pytest.mark.parametrize("threads", [1, 2])
def test_decode_split_attention(tmp_path, threads):
    """A decode step past 512 positions runs its attention in ceil(positions / 512) equal parts
    per KV head, merged by their log-sum-exp: its logits are the full pass's rows (1, 2 and 3
    parts), at any thread count."""
    m, W, cfg, neox = _build(tmp_path, "llama_long", ctx=1100, max_batch=64, threads=threads)
    toks = np.random.default_rng(5).integers(0, cfg["vocab"], 1100)
    want = model_ref.forward(W, cfg, toks, neox)
    m.forward(toks[:500], 0, "none")
    for i in range(500, 1100):
        got = m.forward(toks[i:i + 1], i, "last")
        if i in (500, 511, 512, 513, 700, 1023, 1024, 1025, 1099):
            _close(got, want[i])


def test_threads_agree(tmp_path):
    m, W, cfg, neox = _build(tmp_path, "llama_f32", ctx=32, threads=1)
    toks = np.arange(20) * 7 % cfg["vocab"]
    one = m.forward(toks, 0, "all")
    m.engine.set_threads(2)
    np.testing.assert_allclose(m.forward(toks, 0, "all"), one, rtol=0, atol=tol.MODEL_FLOAT_RTOL * np.abs(one).max())


def test_binding_rejects_bad_input(tmp_path):
    m, W, cfg, neox = _build(tmp_path, "llama_f32", ctx=16)
    with pytest.raises(ValueError, match="out of range"):
        m.forward([1, cfg["vocab"]], 0)
    with pytest.raises(ValueError, match="out of range"):
        m.forward([-1], 0)
    with pytest.raises(ValueError, match="prompt too long.*16"):
        m.forward(np.zeros(17, np.int32), 0)
    with pytest.raises(ValueError, match="prompt too long"):
        m.forward([1, 2], 15)
    m.engine.reset()
    with pytest.raises(ValueError, match="past the cache"):
        m.forward([1], 1)
    m.forward([1, 2, 3], 0)
    m.engine.truncate(2)
    assert m.engine.n_past == 2
    with pytest.raises(ValueError, match="past the cache"):
        m.forward([1], 3)
    m.forward([5], 2)
    assert m.engine.n_past == 3
    with pytest.raises(ValueError, match="no tokens"):
        m.forward([], 0)
    with pytest.raises(TypeError):
        m.forward([1.5], 0)
    with pytest.raises(ValueError):
        m.forward([1], -1)
    with pytest.raises(ValueError, match="logits"):
        m.forward([1], 0, "some")
    with pytest.raises(ValueError, match="out must be"):
        m.forward([1], 0, "last", np.empty(3, np.float32))
    with pytest.raises(ValueError, match="ctx"):
        Model(m.path, ctx=10_000)


def test_loader_errors(tmp_path):
    cfg = dict(BASE)
    W = model_ref.make_weights(np.random.default_rng(0), cfg)
    p = tmp_path / "gpt2.gguf"
    model_ref.write_gguf(p, "gpt2", cfg, W)
    with pytest.raises(ModelFormatError, match="unsupported architecture 'gpt2'"):
        Model(p)
    bad = dict(W)
    bad["blk.1.attn_k.weight"] = bad["blk.1.attn_k.weight"][:, :32]
    p = tmp_path / "badshape.gguf"
    model_ref.write_gguf(p, "llama", cfg, bad)
    with pytest.raises(ModelFormatError, match="blk.1.attn_k.weight"):
        Model(p)
    p = tmp_path / "missing.gguf"
    model_ref.write_gguf(p, "llama", cfg, W, skip={"blk.0.ffn_up.weight"})
    with pytest.raises(ModelFormatError, match="blk.0.ffn_up.weight"):
        Model(p)
    p = tmp_path / "nobias.gguf"
    model_ref.write_gguf(p, "qwen2", cfg, W)
    with pytest.raises(ModelFormatError, match="attn_q.bias"):
        Model(p)
    p = tmp_path / "yarn.gguf"
    model_ref.write_gguf(p, "llama", cfg, W, extra_meta={"llama.rope.scaling.type": "yarn"})
    with pytest.raises(ModelFormatError, match="yarn"):
        Model(p)


def test_llama3_rope_scaling():
    """The llama3 frequency rule: long wavelengths divided by the factor, short ones kept, the band
    between blended linearly in (original context / wavelength)."""
    cfg = ModelConfig(
        arch="llama", n_vocab=10, dim=128, n_layers=1, n_heads=1, n_kv_heads=1, head_dim=128, hidden=32,
        ctx_train=8192, rms_eps=1e-5, rope_base=500000.0, rope_dim=128, rope_neox=False, has_bias=False,
        tied=True, rope_scaling={"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_context_length": 8192})
    got = rope_inv_freq(cfg).astype(np.float64)
    base = 500000.0 ** (-np.arange(0, 128, 2) / 128)
    wl = 2 * np.pi / base
    for f, b, w in zip(got, base, wl):
        if w < 8192 / 4:
            assert f == pytest.approx(b, rel=1e-6)
        elif w > 8192 / 1:
            assert f == pytest.approx(b / 8, rel=1e-6)
        else:
            s = (8192 / w - 1) / (4 - 1)
            assert f == pytest.approx((1 - s) * b / 8 + s * b, rel=1e-6)
    assert (got < base * 0.99).any() and (np.abs(got - base) < 1e-12).any()


def test_parallel_stages(tmp_path):
    """Blocks big enough that the row-wise steps and causal attention run across the pool."""
    cfg = dict(BASE, dim=256, head_dim=64, hidden=512, n_heads=4, n_kv_heads=2, ctx_train=256)
    W = model_ref.make_weights(np.random.default_rng(5), cfg)
    path = tmp_path / "wide.gguf"
    model_ref.write_gguf(path, "llama", cfg, W)
    W = model_ref.stored(W, np.float32)
    toks = np.random.default_rng(6).integers(0, cfg["vocab"], 200)
    want = model_ref.forward(W, cfg, toks, False)
    for threads in (1, 2, 3, None):
        m = Model(path, ctx=256, max_batch=128, threads=threads)
        assert m.engine.threads == (threads or kernels.default_threads())
        _close(m.forward(toks, 0, "all"), want)
    m.engine.set_threads(1)
    assert m.engine.threads == 1
    _close(m.forward(toks, 0, "all"), want)
