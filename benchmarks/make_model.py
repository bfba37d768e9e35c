#!/usr/bin/env python3
"""Llama-shaped GGUF files with random, well-scaled weights, for benchmarks at sizes we have no
real model for (the weights are noise; speed and memory traffic are what they are for).

    python benchmarks/make_model.py --preset tinyllama-1.1b --format Q4_0 -o /tmp/tl.gguf
    python benchmarks/make_model.py --preset tiny --format Q4_K --tokenizer none --vocab 1024 -o t.gguf

Weights are written block by block straight in their GGUF format from raw random bits (no float
quantization pass, so a 1.1B model takes seconds): every block gets a scale drawn so the values
have standard deviation ~0.02 (output projections 0.02/sqrt(2*layers), like GPT-2's init) and
zero mean (Q4_0/Q5_0 scales and Q6_K sub-block scales get a random sign, Q4_1/Q5_1/Q4_K/Q5_K
mins centre the codes; Q8_0's codes are uniform int8). Scales are positive where llama.cpp's quantizers make them so. Norm weights are
~N(1, 0.02). The embedding (and the output matrix unless --tied) are Q8_0.

The tokenizer metadata is copied from a GGUF model (default: smollm2-135m, SmolLM2's gpt2
tokenizer with 49152 tokens) so the model can be tokenized; --tokenizer none writes no tokenizer
and uses --vocab.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PRESETS = {
    # TinyLlama-1.1B's shapes
    "tinyllama-1.1b": dict(dim=2048, ffn=5632, layers=22, heads=32, kv_heads=4, ctx=2048,
                           rope_base=10000.0, eps=1e-5),
    # Llama-2-7B's shapes
    "llama-7b": dict(dim=4096, ffn=11008, layers=32, heads=32, kv_heads=32, ctx=4096,
                     rope_base=10000.0, eps=1e-5),
    # SmolLM2-135M's shapes (576 columns: no K-quant formats)
    "smollm2-135m": dict(dim=576, ffn=1536, layers=30, heads=9, kv_heads=3, ctx=8192,
                         rope_base=100000.0, eps=1e-5),
    # for tests: every row length a multiple of 256
    "tiny": dict(dim=256, ffn=768, layers=2, heads=4, kv_heads=2, ctx=512, rope_base=10000.0, eps=1e-5),
}
FORMATS = ("F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")
# (ggml type id, weights per block, bytes per block)
_TYPES = {"F32": (0, 1, 4), "F16": (1, 1, 2), "BF16": (30, 1, 2), "Q4_0": (2, 32, 18),
          "Q4_1": (3, 32, 20), "Q5_0": (6, 32, 22), "Q5_1": (7, 32, 24), "Q8_0": (8, 32, 34),
          "Q4_K": (12, 256, 144), "Q5_K": (13, 256, 176), "Q6_K": (14, 256, 210)}
# general.file_type (llama_ftype) of a model mostly in each format
_FILE_TYPES = {"F16": 1, "BF16": 32, "Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q8_0": 7,
               "Q4_K": 15, "Q5_K": 17, "Q6_K": 18}


def _std_uniform(levels: int) -> float:
    """Standard deviation of integer codes uniform over `levels` consecutive values."""
    return math.sqrt((levels ** 2 - 1) / 12)


_STD_U4, _STD_U5, _STD_U6, _STD_I8 = (_std_uniform(n) for n in (16, 32, 64, 256))
# K-quant 6-bit sub-block scales are drawn uniform in [32, 63]; Q6_K's int8 ones in +-[64, 127]
_KQ_SC_LO, _KQ_SC_HI = 32, 63
_Q6K_SC_LO, _Q6K_SC_HI = 64, 127

WEIGHT_STD = 0.02


def _random_bytes(rng: np.random.Generator, n: int) -> np.ndarray:
    # raw generator output: ~10x faster than integers(0, 256) and just as uniform
    return rng.bit_generator.random_raw(-(-n // 8)).view(np.uint8)[:n]


def _block_scales(rng, nb: int, std_code: float, std: float, signed: bool = False) -> np.ndarray:
    """fp16 block scales giving values of standard deviation ~std with a +-30% spread; `signed`
    gives them a random sign (as llama.cpp's Q4_0 quantizer does), which also averages out the
    -0.5 mean of codes 0..15 around 8."""
    s = (std / std_code) * rng.uniform(0.7, 1.3, nb).astype(np.float32)
    if signed:
        s *= np.where(rng.random(nb) < 0.5, -1, 1).astype(np.float32)
    return s.astype(np.float16)


def random_blocks(fmt: str, rows: int, cols: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """GGUF blocks (rows, row_bytes) of random weights with standard deviation ~std."""
    _, bs, ts = _TYPES[fmt]
    if cols % bs:
        raise ValueError(f"{fmt} needs row lengths that are multiples of {bs}; got {cols}")
    if fmt in ("F16", "BF16"):
        # Drawing a normal per weight is ~10x slower than raw bits: index a table of 65536 normal
        # values (the codes of the float format) with 16 random bits per weight instead.
        x = rng.standard_normal(1 << 16, dtype=np.float32) * np.float32(std)
        if fmt == "F16":
            table = x.astype(np.float16).view(np.uint16)
        else:
            u = x.view(np.uint32)  # round to nearest even into the top 16 bits
            table = ((u + np.uint32(0x7FFF) + ((u >> 16) & 1)) >> 16).astype(np.uint16)
        idx = _random_bytes(rng, rows * cols * 2).view(np.uint16)
        return table[idx].view(np.uint8).reshape(rows, cols * 2)
    nb = rows * cols // bs
    b = _random_bytes(rng, nb * ts).reshape(nb, ts)
    if fmt == "Q8_0":  # d, int8 q[32]: uniform codes
        b[:, 0:2] = _block_scales(rng, nb, _STD_I8, std).view(np.uint8).reshape(nb, 2)
    elif fmt == "Q4_0":  # d, nibbles q: value d*(q-8)
        b[:, 0:2] = _block_scales(rng, nb, _STD_U4, std, signed=True).view(np.uint8).reshape(nb, 2)
    elif fmt == "Q4_1":  # d, m, nibbles q: value d*q + m; m = -7.5 d centres the codes
        d = _block_scales(rng, nb, _STD_U4, std)
        b[:, 0:2] = d.view(np.uint8).reshape(nb, 2)
        b[:, 2:4] = (d.astype(np.float32) * -7.5).astype(np.float16).view(np.uint8).reshape(nb, 2)
    elif fmt == "Q5_0":  # d, qh[4] (5th bits), nibbles: value d*(q-16)
        b[:, 0:2] = _block_scales(rng, nb, _STD_U5, std, signed=True).view(np.uint8).reshape(nb, 2)
    elif fmt == "Q5_1":  # d, m, qh[4], nibbles: value d*q + m; m = -15.5 d
        d = _block_scales(rng, nb, _STD_U5, std)
        b[:, 0:2] = d.view(np.uint8).reshape(nb, 2)
        b[:, 2:4] = (d.astype(np.float32) * -15.5).astype(np.float16).view(np.uint8).reshape(nb, 2)
    elif fmt in ("Q4_K", "Q5_K"):
        # d, dmin, 12 bytes of 6-bit (scale, min) pairs for 8 sub-blocks of 32, then the codes
        # (Q5_K: qh[32] of 5th bits, then nibbles): value = d*sc*q - dmin*m. With
        # dmin = c*d and m = sc (c = the codes' midpoint) each sub-block is d*sc*(q - c).
        mid, std_code = (7.5, _STD_U4) if fmt == "Q4_K" else (15.5, _STD_U5)
        sc = rng.integers(_KQ_SC_LO, _KQ_SC_HI + 1, size=(nb, 8), dtype=np.uint8)
        d = _block_scales(rng, nb, std_code * (_KQ_SC_LO + _KQ_SC_HI) / 2, std)
        b[:, 0:2] = d.view(np.uint8).reshape(nb, 2)
        b[:, 2:4] = (d.astype(np.float32) * mid).astype(np.float16).view(np.uint8).reshape(nb, 2)
        b[:, 4:16] = pack_q4k_scales(sc, sc)
    elif fmt == "Q6_K":
        # ql[128], qh[64], int8 scales[16] (one per 16 weights), d at the end: value
        # d*sc*(q-32) with q = 6 random bits; random scale signs centre the codes' -0.5 mean.
        mag = rng.integers(_Q6K_SC_LO, _Q6K_SC_HI + 1, size=(nb, 16), dtype=np.int16)
        sc = np.where(rng.random((nb, 16)) < 0.5, -mag, mag).astype(np.int8)
        b[:, 192:208] = sc.view(np.uint8)
        d = _block_scales(rng, nb, _STD_U6 * (_Q6K_SC_LO + _Q6K_SC_HI) / 2, std)
        b[:, 208:210] = d.view(np.uint8).reshape(nb, 2)
    else:
        raise ValueError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    return b.reshape(rows, cols // bs * ts)


def pack_q4k_scales(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """The 12-byte packing (Q4_K and Q5_K) of eight 6-bit scales and mins (n, 8) -> (n, 12):
    sub-blocks 0-3 in the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 in the
    nibbles of bytes 8-11 (scale low, min high) with their top 2 bits in the top bits of bytes 0-7."""
    sc = sc.astype(np.uint8)
    mn = mn.astype(np.uint8)
    out = np.empty((sc.shape[0], 12), np.uint8)
    out[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = (mn[:, 0:4] & 63) | ((mn[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 15) | ((mn[:, 4:8] & 15) << 4)
    return out


def _tokenizer_meta(source) -> tuple[list, int]:
    """[(key, value, vtype, subtype)] of the tokenizer.* keys of a GGUF model, and its vocab size."""
    from fastcpu.gguf import GGUFFile
    from fastcpu.hub import resolve

    path = resolve(source)
    out = []
    with GGUFFile(path) as g:
        for k, v in g.metadata.items():
            if k.startswith("tokenizer."):
                vt, st = g.metadata_types[k]
                out.append((k, _writer_value(v), vt, st))
        toks = g.metadata.get("tokenizer.ggml.tokens")
    if not isinstance(toks, list) or not toks:
        raise ValueError(f"{path} has no tokenizer.ggml.tokens to copy")
    return out, len(toks)


def _writer_value(v):
    if isinstance(v, str):
        return v.encode("utf-8", "surrogateescape")
    if isinstance(v, list):
        return [_writer_value(x) for x in v]
    return v


def model_tensors(cfg: dict):
    """(name, numpy shape, format, std) of every tensor, in llama.cpp's order."""
    dim, ffn, L = cfg["dim"], cfg["ffn"], cfg["layers"]
    hd = dim // cfg["heads"]
    kv = hd * cfg["kv_heads"]
    fmt, emb = cfg["format"], cfg["embed_format"]
    out_std = WEIGHT_STD / math.sqrt(2 * L)
    t = [("token_embd.weight", (cfg["vocab"], dim), emb, WEIGHT_STD)]
    for i in range(L):
        p = f"blk.{i}."
        t += [(p + "attn_norm.weight", (dim,), "F32", None),
              (p + "attn_q.weight", (dim, dim), fmt, WEIGHT_STD),
              (p + "attn_k.weight", (kv, dim), fmt, WEIGHT_STD),
              (p + "attn_v.weight", (kv, dim), fmt, WEIGHT_STD),
              (p + "attn_output.weight", (dim, dim), fmt, out_std),
              (p + "ffn_norm.weight", (dim,), "F32", None),
              (p + "ffn_gate.weight", (ffn, dim), fmt, WEIGHT_STD),
              (p + "ffn_up.weight", (ffn, dim), fmt, WEIGHT_STD),
              (p + "ffn_down.weight", (dim, ffn), fmt, out_std)]
    t.append(("output_norm.weight", (dim,), "F32", None))
    if not cfg["tied"]:
        t.append(("output.weight", (cfg["vocab"], dim), emb, WEIGHT_STD))
    return t


def config(preset: str = "tiny", **over) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    cfg = dict(PRESETS[preset], preset=preset, format="Q4_0", embed_format="Q8_0", tied=False,
               vocab=None, tokenizer="smollm2-135m", seed=0)
    for k, v in over.items():
        if v is not None:
            if k not in cfg:
                raise TypeError(f"unknown setting {k!r}")
            cfg[k] = v
    for k in ("dim", "ffn", "layers", "heads", "kv_heads", "ctx"):
        if int(cfg[k]) <= 0:
            raise ValueError(f"{k} must be positive, got {cfg[k]}")
    if cfg["dim"] % cfg["heads"] or (cfg["dim"] // cfg["heads"]) % 2:
        raise ValueError(f"dim {cfg['dim']} must split into {cfg['heads']} heads of even size")
    if cfg["heads"] % cfg["kv_heads"]:
        raise ValueError(f"heads {cfg['heads']} must be a multiple of kv_heads {cfg['kv_heads']}")
    cfg["format"] = cfg["format"].upper()
    cfg["embed_format"] = cfg["embed_format"].upper()
    for key in ("format", "embed_format"):
        if cfg[key] not in FORMATS:
            raise ValueError(f"unknown {key} {cfg[key]!r}; formats: {', '.join(FORMATS)}")
    bs = _TYPES[cfg["format"]][1]
    for k in ("dim", "ffn"):
        if cfg[k] % bs:
            raise ValueError(f"{cfg['format']} needs {k} to be a multiple of {bs}; got {cfg[k]}")
    if cfg["dim"] % _TYPES[cfg["embed_format"]][1]:
        raise ValueError(f"embedding format {cfg['embed_format']} needs dim to be a multiple of "
                         f"{_TYPES[cfg['embed_format']][1]}")
    return cfg


def make_model(out, preset: str = "tiny", progress: bool = False, **over) -> str:
    """Writes a random Llama GGUF file to `out` (atomically); returns its path.
    Settings: dim, ffn, layers, heads, kv_heads, ctx, rope_base, eps, format, embed_format, tied,
    vocab, tokenizer (a GGUF path/model name to copy tokenizer.* from, or 'none'), seed."""
    import gguf  # the reference writer (test extra)

    cfg = config(preset, **over)
    tok_meta = []
    tok = cfg["tokenizer"]
    if tok and str(tok).lower() != "none":
        tok_meta, n_vocab = _tokenizer_meta(tok)
        if cfg["vocab"] is not None and cfg["vocab"] != n_vocab:
            raise ValueError(f"vocab {cfg['vocab']} differs from the tokenizer's {n_vocab} tokens; "
                             f"use --tokenizer none for another vocabulary size")
        cfg["vocab"] = n_vocab
    elif cfg["vocab"] is None:
        cfg["vocab"] = 32000
    tensors = model_tensors(cfg)

    out = os.fspath(out)
    tmp = f"{out}.part-{os.getpid()}"
    w = gguf.GGUFWriter(tmp, "llama")
    try:
        hd = cfg["dim"] // cfg["heads"]
        w.add_name(f"fastcpu random {cfg['preset']} {cfg['format']}")
        w.add_uint32("general.file_type", _FILE_TYPES[cfg["format"]])
        w.add_uint32("general.quantization_version", 2)
        w.add_uint32("llama.context_length", cfg["ctx"])
        w.add_uint32("llama.embedding_length", cfg["dim"])
        w.add_uint32("llama.block_count", cfg["layers"])
        w.add_uint32("llama.feed_forward_length", cfg["ffn"])
        w.add_uint32("llama.attention.head_count", cfg["heads"])
        w.add_uint32("llama.attention.head_count_kv", cfg["kv_heads"])
        w.add_float32("llama.rope.freq_base", cfg["rope_base"])
        w.add_float32("llama.attention.layer_norm_rms_epsilon", cfg["eps"])
        w.add_uint32("llama.rope.dimension_count", hd)
        w.add_uint32("llama.vocab_size", cfg["vocab"])
        for k, v, vt, st in tok_meta:
            w.add_key_value(k, v, gguf.GGUFValueType(vt),
                            sub_type=None if st is None else gguf.GGUFValueType(st))
        for name, shape, fmt, _ in tensors:
            _, bs, ts = _TYPES[fmt]
            if fmt == "F32":
                w.add_tensor_info(name, shape, np.dtype(np.float32), shape[0] * 4)
            else:
                rows, cols = shape
                nbytes = rows * (cols // bs * ts)
                w.add_tensor_info(name, (rows, cols // bs * ts), np.dtype(np.uint8), nbytes,
                                  raw_dtype=gguf.GGMLQuantizationType(_TYPES[fmt][0]))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        seeds = np.random.SeedSequence(cfg["seed"]).spawn(len(tensors))
        items = zip(tensors, seeds)
        if progress:
            from tqdm import tqdm
            items = tqdm(items, total=len(tensors), unit="tensor", desc=os.path.basename(out))
        for (name, shape, fmt, std), ss in items:
            rng = np.random.default_rng(ss)
            if fmt == "F32":
                a = (1.0 + WEIGHT_STD * rng.standard_normal(shape[0])).astype(np.float32)
            else:
                a = random_blocks(fmt, shape[0], shape[1], std, rng)
            w.write_tensor_data(a)
        w.close()
        os.replace(tmp, out)
    except BaseException:
        w.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out


def synthetic_model(preset: str, fmt: str, progress: bool = False, **over) -> str:
    """A cached random model: <fastcpu cache>/synthetic/<preset>-<fmt>[-...].gguf."""
    from fastcpu.hub import cache_dir

    cfg = config(preset, format=fmt, **over)
    over = {k: v for k, v in over.items() if v is not None}
    # settings beyond the preset (a tokenizer path among them) go into the name as a short digest
    extra = "-" + hashlib.sha256(repr(sorted(over.items())).encode()).hexdigest()[:10] if over else ""
    out = os.path.join(cache_dir(), "synthetic", f"{preset}-{cfg['format']}{extra}.gguf")
    if not os.path.isfile(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        make_model(out, preset, progress=progress, format=fmt, **over)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--format", default="Q4_0", type=str.upper, choices=FORMATS, help="layer weight format")
    p.add_argument("--embed-format", default=None, type=str.upper, choices=FORMATS,
                   help="token embedding / output format (default Q8_0)")
    p.add_argument("--tied", action="store_true", help="no output.weight: the embedding is reused")
    for k in ("dim", "ffn", "layers", "heads", "kv-heads", "ctx", "vocab"):
        p.add_argument(f"--{k}", type=int, default=None)
    p.add_argument("--rope-base", type=float, default=None)
    p.add_argument("--tokenizer", default=None,
                   help="GGUF path or model name to copy the tokenizer from (default smollm2-135m), or 'none'")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("-o", "--out", help="output file (default: cached under the fastcpu cache dir)")
    args = p.parse_args(argv)
    over = dict(embed_format=args.embed_format, tied=args.tied or None, dim=args.dim, ffn=args.ffn,
                layers=args.layers, heads=args.heads, kv_heads=args.kv_heads, ctx=args.ctx,
                vocab=args.vocab, rope_base=args.rope_base, tokenizer=args.tokenizer, seed=args.seed)
    t0 = time.time()
    try:
        if args.out:
            path = make_model(args.out, args.preset, progress=True, format=args.format, **over)
        else:
            path = synthetic_model(args.preset, args.format, progress=True, **over)
    except ValueError as e:
        p.error(str(e))
    size = os.path.getsize(path)
    print(f"{path}  ({size / 2 ** 20:.1f} MiB, {time.time() - t0:.1f} s)", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
