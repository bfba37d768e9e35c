"""From a GGUF file to a ready model runner: reads the architecture metadata, checks every tensor's
shape and format against it, computes the rope frequency table once and builds the C engine
(fastcpu._engine.Engine), which prepares the weights for the CPU's kernels.

Supported: the Llama layout (llama, mistral-style files that use it) and qwen2 (Q/K/V biases, neox
rope). GGUF files written by llama.cpp's converter permute Q/K for the llama arch so that the
normal rope layout (pairs 2i, 2i+1) applies; qwen2 files keep the neox pairing (i, i + d/2).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from . import kernels
from .gguf import GGUFFile, ModelFormatError

# architecture -> (rope neox pairing, attention biases expected)
ARCHITECTURES = {
    "llama": (False, False),
    "mistral": (False, False),
    "qwen2": (True, True),
}

DEFAULT_CTX = 4096
DEFAULT_MAX_BATCH = 256


@dataclass
class ModelConfig:
    arch: str
    n_vocab: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden: int
    ctx_train: int
    rms_eps: float
    rope_base: float
    rope_dim: int
    rope_neox: bool
    has_bias: bool
    tied: bool
    rope_scaling: dict = field(default_factory=dict)
    name: str = ""

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim


def _int(meta: dict, key: str, default=None) -> int:
    v = meta.get(key, default)
    if v is None:
        raise ModelFormatError(f"missing metadata {key!r}")
    if isinstance(v, (list, tuple)):
        vals = set(int(x) for x in v)
        if len(vals) != 1:
            raise ModelFormatError(f"{key}: per-layer values {sorted(vals)} are not supported")
        v = vals.pop()
    if isinstance(v, bool) or not isinstance(v, (int, np.integer, float)) or int(v) != v or int(v) <= 0:
        raise ModelFormatError(f"metadata {key!r} must be a positive integer, got {v!r}")
    return int(v)


def _float(meta: dict, key: str, default=None) -> float:
    v = meta.get(key, default)
    if v is None:
        raise ModelFormatError(f"missing metadata {key!r}")
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ModelFormatError(f"metadata {key!r} must be a number, got {v!r}") from None
    if not math.isfinite(v):
        raise ModelFormatError(f"metadata {key!r} is not finite")
    return v


def read_config(f: GGUFFile) -> ModelConfig:
    meta = f.metadata
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise ModelFormatError("missing metadata 'general.architecture'")
    if arch not in ARCHITECTURES:
        raise ModelFormatError(f"unsupported architecture {arch!r}; supported: {', '.join(ARCHITECTURES)}")
    neox, has_bias = ARCHITECTURES[arch]
    p = arch + "."
    if f"{p}expert_count" in meta and int(meta[f"{p}expert_count"] or 0) > 0:
        raise ModelFormatError(f"unsupported architecture {arch!r} with experts (mixture of experts)")
    dim = _int(meta, p + "embedding_length")
    n_heads = _int(meta, p + "attention.head_count")
    n_kv = _int(meta, p + "attention.head_count_kv", n_heads)
    head_dim = _int(meta, p + "attention.key_length", dim // n_heads)
    vdim = _int(meta, p + "attention.value_length", head_dim)
    if vdim != head_dim:
        raise ModelFormatError(f"key length {head_dim} != value length {vdim} is not supported")
    if n_heads % n_kv:
        raise ModelFormatError(f"head_count {n_heads} is not a multiple of head_count_kv {n_kv}")
    if head_dim % 2:
        raise ModelFormatError(f"head dimension {head_dim} is odd")
    if "token_embd.weight" not in f.tensors:
        raise ModelFormatError("missing tensor 'token_embd.weight'")
    emb_rows = f.tensors["token_embd.weight"].shape[0]
    n_vocab = int(meta.get(p + "vocab_size") or len(meta.get("tokenizer.ggml.tokens") or []) or emb_rows)
    rope_dim = _int(meta, p + "rope.dimension_count", head_dim)
    if rope_dim > head_dim or rope_dim % 2:
        raise ModelFormatError(f"rope dimension {rope_dim} does not fit head dimension {head_dim}")
    if rope_dim != head_dim and neox:
        raise ModelFormatError("partial rotary embedding with neox pairing is not supported")
    scaling = {k[len(p) + len("rope.scaling."):]: v for k, v in meta.items() if k.startswith(p + "rope.scaling.")}
    return ModelConfig(
        arch=arch,
        n_vocab=n_vocab,
        dim=dim,
        n_layers=_int(meta, p + "block_count"),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        hidden=_int(meta, p + "feed_forward_length"),
        ctx_train=_int(meta, p + "context_length", 2048),
        rms_eps=_float(meta, p + "attention.layer_norm_rms_epsilon", 1e-5),
        rope_base=_float(meta, p + "rope.freq_base", 10000.0),
        rope_dim=rope_dim,
        rope_neox=neox,
        has_bias=has_bias,
        tied="output.weight" not in f.tensors,
        rope_scaling=scaling,
        name=str(meta.get("general.name", "")),
    )


def rope_inv_freq(cfg: ModelConfig, freq_factors: np.ndarray | None = None) -> np.ndarray:
    """head_dim/2 inverse frequencies base^(-2i/rope_dim), with the file's rope scaling applied.
    Dimensions past rope_dim (partial rotary) get frequency 0: their rotation is the identity."""
    half = cfg.rope_dim // 2
    i = np.arange(half, dtype=np.float64)
    inv = cfg.rope_base ** (-2.0 * i / cfg.rope_dim)
    sc = cfg.rope_scaling
    kind = str(sc.get("type", "none") or "none").lower()
    factor = float(sc.get("factor", 1.0) or 1.0)
    if kind in ("none", ""):
        pass
    elif kind == "linear":
        if factor <= 0:
            raise ModelFormatError(f"rope scaling factor must be positive, got {factor}")
        inv = inv / factor
    elif kind == "llama3":
        low = float(sc.get("low_freq_factor", 1.0))
        high = float(sc.get("high_freq_factor", 4.0))
        orig = float(sc.get("original_context_length", 8192))
        if factor <= 0 or high <= low:
            raise ModelFormatError("llama3 rope scaling needs factor > 0 and high_freq_factor > low_freq_factor")
        wavelen = 2 * math.pi / inv
        low_wl, high_wl = orig / low, orig / high
        scaled = np.where(wavelen > low_wl, inv / factor, inv)
        smooth = (orig / wavelen - low) / (high - low)
        mid = (wavelen >= high_wl) & (wavelen <= low_wl)
        inv = np.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    else:
        raise ModelFormatError(f"unsupported rope scaling type {kind!r}")
    if freq_factors is not None:
        ff = np.asarray(freq_factors, np.float64).reshape(-1)
        if ff.shape[0] != half:
            raise ModelFormatError(f"rope_freqs.weight has {ff.shape[0]} factors, expected {half}")
        if not np.all(ff > 0):
            raise ModelFormatError("rope_freqs.weight has non-positive factors")
        inv = inv / ff
    out = np.zeros(cfg.head_dim // 2, np.float32)
    out[:half] = inv
    return out


def _vector(f: GGUFFile, name: str, n: int) -> np.ndarray:
    if name not in f.tensors:
        raise ModelFormatError(f"missing tensor {name!r}")
    t = f.tensors[name]
    if tuple(t.shape) not in ((n,), (1, n)):
        raise ModelFormatError(f"tensor {name!r} has shape {tuple(t.shape)}, expected ({n},)")
    if kernels.QTYPE_NAMES.get(t.qtype) not in ("F32", "F16", "BF16"):
        raise ModelFormatError(f"tensor {name!r}: vectors must be F32/F16/BF16, got {t.qtype_name}")
    return np.ascontiguousarray(f.array(name).reshape(-1), dtype=np.float32)


def _matrix(f: GGUFFile, name: str, rows: int, cols: int) -> tuple:
    if name not in f.tensors:
        raise ModelFormatError(f"missing tensor {name!r}")
    t = f.tensors[name]
    if tuple(t.shape) != (rows, cols):
        raise ModelFormatError(f"tensor {name!r} has shape {tuple(t.shape)}, expected ({rows}, {cols})")
    if t.qtype not in kernels.QTYPE_NAMES:
        raise ModelFormatError(f"tensor {name!r}: unsupported format {t.qtype_name}")
    data = f.data(name)
    want = kernels.row_bytes(t.qtype, cols)
    if data.shape != (rows, want):
        raise ModelFormatError(f"tensor {name!r}: data shape {data.shape}, expected ({rows}, {want})")
    return (int(t.qtype), data)


def _check_kernels(f: GGUFFile, names) -> None:
    missing = sorted({f.tensors[n].qtype_name for n in names if n in f.tensors
                      and not kernels.qtype_supported(f.tensors[n].qtype)})
    if missing:
        raise ModelFormatError(f"no matmul kernel for {', '.join(missing)} in this build "
                               f"(ISA level {kernels.isa()})")


# KV cache element types: float32 (exact), float16 (half the bytes; llama.cpp's default)
KV_TYPES = ("f32", "f16")


class Model:
    """A GGUF model loaded into the C runner. `engine.forward(tokens, pos, logits=...)` runs a step."""

    def __init__(self, path, ctx: int | None = None, threads: int | None = None, max_batch: int | None = None,
                 ram_budget=None, stream_options: dict | None = None, kv_type: str = "f32"):
        from . import _engine

        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"model file not found: {self.path}")
        self.file = GGUFFile(self.path)
        cfg = self.config = read_config(self.file)
        if ctx is None:
            ctx = min(cfg.ctx_train, DEFAULT_CTX)
        if isinstance(ctx, bool) or not isinstance(ctx, (int, np.integer)) or ctx < 1:
            raise ValueError(f"ctx must be a positive integer, got {ctx!r}")
        if ctx > cfg.ctx_train:
            raise ValueError(f"ctx {ctx} exceeds the model's context length {cfg.ctx_train}")
        self.n_ctx = int(ctx)
        threads = kernels._threads(threads)
        if max_batch is None:
            max_batch = DEFAULT_MAX_BATCH
        if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
        max_batch = int(min(max_batch, self.n_ctx))
        if kv_type not in KV_TYPES:
            raise ValueError(f"kv_type must be one of {', '.join(KV_TYPES)}, got {kv_type!r}")
        self.kv_type = kv_type

        f = self.file
        if ram_budget is not None:  # streaming: touching the norms must not read the weights around them
            from .stream import quiet_mapping

            quiet_mapping(f)
        d, qd, kd, h = cfg.dim, cfg.q_dim, cfg.kv_dim, cfg.hidden
        emb = _matrix(f, "token_embd.weight", cfg.n_vocab, d)
        out = None if cfg.tied else _matrix(f, "output.weight", cfg.n_vocab, d)
        mats = ["token_embd.weight" if cfg.tied else "output.weight"]
        layers = []
        for i in range(cfg.n_layers):
            p = f"blk.{i}."
            if p + "ffn_gate_exps.weight" in f.tensors:
                raise ModelFormatError(f"unsupported architecture {cfg.arch!r} with experts (mixture of experts)")
            L = {
                "attn_norm": _vector(f, p + "attn_norm.weight", d),
                "wq": _matrix(f, p + "attn_q.weight", qd, d),
                "wk": _matrix(f, p + "attn_k.weight", kd, d),
                "wv": _matrix(f, p + "attn_v.weight", kd, d),
                "wo": _matrix(f, p + "attn_output.weight", d, qd),
                "ffn_norm": _vector(f, p + "ffn_norm.weight", d),
                "w_gate": _matrix(f, p + "ffn_gate.weight", h, d),
                "w_up": _matrix(f, p + "ffn_up.weight", h, d),
                "w_down": _matrix(f, p + "ffn_down.weight", d, h),
            }
            for key, nm, n in (("bq", "attn_q.bias", qd), ("bk", "attn_k.bias", kd), ("bv", "attn_v.bias", kd)):
                if p + nm in f.tensors:
                    L[key] = _vector(f, p + nm, n)
                elif cfg.has_bias:
                    raise ModelFormatError(f"missing tensor {p + nm!r} ({cfg.arch} has attention biases)")
            layers.append(L)
            mats += [p + s + ".weight" for s in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate",
                                                  "ffn_up", "ffn_down")]
        _check_kernels(f, mats)
        freq_factors = f.array("rope_freqs.weight") if "rope_freqs.weight" in f.tensors else None
        self.inv_freq = rope_inv_freq(cfg, freq_factors)
        econf = {
            "n_vocab": cfg.n_vocab, "dim": d, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
            "n_kv_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim, "hidden": h, "n_ctx": self.n_ctx,
            "max_batch": max_batch, "threads": threads, "rope_neox": cfg.rope_neox, "rms_eps": cfg.rms_eps,
            "attn_scale": cfg.head_dim ** -0.5, "kv_type": kv_type,
        }
        onorm = _vector(f, "output_norm.weight", d)
        # ram_budget: weights beyond it stream from the file every token (fastcpu.stream)
        self.stream = self.stream_plan = None
        self.stream_options = stream_options
        if ram_budget is not None:
            from . import stream as _stream

            self.stream, self.stream_plan, onorm = _stream.setup(f, cfg, ram_budget, stream_options, layers, onorm)
        econf["src_mapped"] = self.stream is None and _all_mapped(f, [emb, out] + [
            L[k] for L in layers for k in ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")])
        # Embedding lookups pread their rows from the file (see _engine.embd_reader): through the
        # mapping each lookup faulted a whole fault-around window into the resident set.
        fd = _open_same_file(f) if econf["src_mapped"] else None
        if fd is not None:
            econf["embd_file"] = (fd, f.tensors["token_embd.weight"].offset)
        try:
            self.engine = _engine.Engine(econf, emb, onorm, out, layers, self.inv_freq, stream=self.stream)
        finally:
            if fd is not None:
                os.close(fd)
        # the header, metadata and norm vectors read through the mapping (with their fault-around
        # windows, ~5 MB for SmolLM2) are not needed again: out of the resident set
        f.drop_loader_pages()

    @property
    def n_vocab(self) -> int:
        return self.config.n_vocab

    def forward(self, tokens, pos: int, logits: str = "last", out=None):
        return self.engine.forward(tokens, pos, logits, out)


def _open_same_file(f):
    """A read-only descriptor of the file f mapped (None if the path now names another file)."""
    st0 = getattr(f, "stat", None)
    if st0 is None:
        return None
    try:
        fd = os.open(f.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != (st0.st_dev, st0.st_ino, st0.st_size, st0.st_mtime_ns):
        os.close(fd)
        return None
    return fd


def _all_mapped(f, mats) -> bool:
    """True when every matrix's bytes lie in the file's memory mapping (the engine may then drop
    their pages once repacked; see fc_llama_config.src_mapped)."""
    mm = getattr(f, "_mm", None)
    buf = getattr(f, "_buf", None)
    if mm is None or buf is None:
        return False
    lo = buf.ctypes.data
    hi = lo + buf.nbytes
    for m in mats:
        if m is None:
            continue
        a = m[1]
        if not (lo <= a.ctypes.data and a.ctypes.data + a.nbytes <= hi):
            return False
    return True
