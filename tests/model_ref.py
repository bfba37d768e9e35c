"""Independent reference for the model runner: tiny random Llama/qwen2 GGUF files written with the
gguf package, and the forward pass in float64 NumPy, written from the architecture's definition
(not from the C code)."""
from __future__ import annotations

import numpy as np
from gguf import GGUFWriter


def make_weights(rng, cfg: dict) -> dict:
    """Random weights, scaled so activations stay of order one through the layers."""
    d, h, hd = cfg["dim"], cfg["hidden"], cfg["head_dim"]
    qd, kd, V = cfg["n_heads"] * hd, cfg["n_kv_heads"] * hd, cfg["vocab"]

    def mat(r, c):
        return (rng.standard_normal((r, c)) / np.sqrt(c)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    W = {"token_embd.weight": rng.standard_normal((V, d)).astype(np.float32),
         "output_norm.weight": norm(d)}
    if not cfg.get("tied", True):
        W["output.weight"] = mat(V, d)
    for i in range(cfg["n_layers"]):
        p = f"blk.{i}."
        W[p + "attn_norm.weight"] = norm(d)
        W[p + "attn_q.weight"] = mat(qd, d)
        W[p + "attn_k.weight"] = mat(kd, d)
        W[p + "attn_v.weight"] = mat(kd, d)
        W[p + "attn_output.weight"] = mat(d, qd)
        W[p + "ffn_norm.weight"] = norm(d)
        W[p + "ffn_gate.weight"] = mat(h, d)
        W[p + "ffn_up.weight"] = mat(h, d)
        W[p + "ffn_down.weight"] = mat(d, h)
        if cfg.get("bias"):
            W[p + "attn_q.bias"] = (0.3 * rng.standard_normal(qd)).astype(np.float32)
            W[p + "attn_k.bias"] = (0.3 * rng.standard_normal(kd)).astype(np.float32)
            W[p + "attn_v.bias"] = (0.3 * rng.standard_normal(kd)).astype(np.float32)
    return W


def write_gguf(path, arch: str, cfg: dict, W: dict, matrix_dtype=np.float32, extra_meta=None,
               skip=(), dtypes=None) -> None:
    """Writes W as a GGUF file of architecture `arch`; 2-D tensors in matrix_dtype (float32/float16)
    unless `dtypes` names another for a tensor."""
    w = GGUFWriter(str(path), arch)
    p = arch + "."
    w.add_uint32(p + "block_count", cfg["n_layers"])
    w.add_uint32(p + "context_length", cfg.get("ctx_train", 256))
    w.add_uint32(p + "embedding_length", cfg["dim"])
    w.add_uint32(p + "feed_forward_length", cfg["hidden"])
    w.add_uint32(p + "attention.head_count", cfg["n_heads"])
    w.add_uint32(p + "attention.head_count_kv", cfg["n_kv_heads"])
    w.add_float32(p + "attention.layer_norm_rms_epsilon", cfg.get("eps", 1e-5))
    w.add_float32(p + "rope.freq_base", cfg.get("rope_base", 10000.0))
    if cfg["head_dim"] != cfg["dim"] // cfg["n_heads"]:
        w.add_uint32(p + "attention.key_length", cfg["head_dim"])
        w.add_uint32(p + "attention.value_length", cfg["head_dim"])
    if "rope_dim" in cfg:
        w.add_uint32(p + "rope.dimension_count", cfg["rope_dim"])
    w.add_uint32(p + "vocab_size", cfg["vocab"])
    for k, v in (extra_meta or {}).items():
        if isinstance(v, str):
            w.add_string(k, v)
        else:
            w.add_float32(k, float(v))
    for name, a in W.items():
        if name in skip:
            continue
        if a.ndim == 2:
            a = a.astype((dtypes or {}).get(name, matrix_dtype))
        w.add_tensor(name, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def stored(W: dict, matrix_dtype, dtypes=None) -> dict:
    """The float64 values a runner sees after the file's rounding."""
    dt = dtypes or {}
    return {k: (v.astype(dt.get(k, matrix_dtype)) if v.ndim == 2 else v).astype(np.float64) for k, v in W.items()}


def inv_freq(cfg: dict) -> np.ndarray:
    rd = cfg.get("rope_dim", cfg["head_dim"])
    f = cfg.get("rope_base", 10000.0) ** (-np.arange(0, rd, 2, dtype=np.float64) / rd)
    if "freq_factors" in cfg:  # llama3 files from llama.cpp's converter: rope_freqs.weight divides
        f = f / np.asarray(cfg["freq_factors"], np.float64)
    return f / cfg.get("rope_linear_factor", 1.0)


def _rope(x, pos, cfg, neox):
    """x: (n, heads, hd) rotated at positions pos (n,)."""
    hd = x.shape[-1]
    rd = cfg.get("rope_dim", hd)
    f = inv_freq(cfg)
    out = x.copy()
    ang = pos[:, None].astype(np.float64) * f[None, :]          # (n, rd/2)
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if neox:
        a, b = x[..., : rd // 2], x[..., rd // 2: rd]
        out[..., : rd // 2] = a * c - b * s
        out[..., rd // 2: rd] = a * s + b * c
    else:
        a, b = x[..., 0:rd:2], x[..., 1:rd:2]
        out[..., 0:rd:2] = a * c - b * s
        out[..., 1:rd:2] = a * s + b * c
    return out


def _rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def forward(W: dict, cfg: dict, tokens, neox: bool, kv_f16: bool = False) -> np.ndarray:
    """Logits (n, vocab) of a causal pass over tokens from position 0, float64. kv_f16: the keys
    (after rope) and values are rounded to float16, as a float16 KV cache stores them."""
    eps = cfg.get("eps", 1e-5)
    H, KV, hd = cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"]
    tokens = np.asarray(tokens)
    n = len(tokens)
    pos = np.arange(n)
    x = W["token_embd.weight"][tokens].copy()
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(cfg["n_layers"]):
        p = f"blk.{i}."
        h = _rmsnorm(x, W[p + "attn_norm.weight"], eps)
        q = h @ W[p + "attn_q.weight"].T + W.get(p + "attn_q.bias", 0)
        k = h @ W[p + "attn_k.weight"].T + W.get(p + "attn_k.bias", 0)
        v = h @ W[p + "attn_v.weight"].T + W.get(p + "attn_v.bias", 0)
        q = _rope(q.reshape(n, H, hd), pos, cfg, neox)
        k = _rope(k.reshape(n, KV, hd), pos, cfg, neox)
        v = v.reshape(n, KV, hd)
        if kv_f16:
            k = k.astype(np.float32).astype(np.float16).astype(np.float64)
            v = v.astype(np.float32).astype(np.float16).astype(np.float64)
        att = np.empty((n, H, hd))
        for hh in range(H):
            g = hh // (H // KV)
            s = q[:, hh] @ k[:, g].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(1, keepdims=True))
            s /= s.sum(1, keepdims=True)
            att[:, hh] = s @ v[:, g]
        x = x + att.reshape(n, H * hd) @ W[p + "attn_output.weight"].T
        h = _rmsnorm(x, W[p + "ffn_norm.weight"], eps)
        g = h @ W[p + "ffn_gate.weight"].T
        u = h @ W[p + "ffn_up.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ W[p + "ffn_down.weight"].T
    x = _rmsnorm(x, W["output_norm.weight"], eps)
    out = W.get("output.weight", W["token_embd.weight"])
    return x @ out.T
