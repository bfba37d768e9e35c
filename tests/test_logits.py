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

# "default" is the default model itself; the others its conversions
# The conversions start from the Q4_1 default, so Q5_0/Q5_1 are double-quantized (weights 5% RMS
# off the source, perplexity 31 and 41 against 27) and llama.cpp misses the bounds on them too.
# Measured (fastcpu / llama.cpp): Q5_0 perplexity off by 1.9% / 2.4%; Q5_1 mean KL 0.0110 / 0.0099,
# top-1 0.971 / 0.977.
# Known miss, kept visible: these files are the Q4_1 default re-quantized by gguf's quantizers (about
# 4.5% RMS on top of Q4_1's own error; reference perplexity 31 and 41 against 27), and int8 activation
# noise then costs more than the bounds allow. Measured 2026-11-30 on 3 chunks: Q5_0 KL 0.0067, top-1
# 0.976, perplexity +1.9%; Q5_1 KL 0.0110, top-1 0.971, perplexity +0.8%. llama.cpp on the same file
# and ids: Q5_0 perplexity +2.4%, Q5_1 KL 0.0099. strict: a pass would show the bounds are now met.
_DOUBLE_QUANT = pytest.mark.xfail(reason="double-quantized Q4_1 -> Q5 conversion misses the bounds (llama.cpp "
                                  "misses them on the same file too)", strict=True)
FORMATS = ["default", "F16", "BF16", "Q8_0", "Q4_0", pytest.param("Q5_0", marks=_DOUBLE_QUANT),
           pytest.param("Q5_1", marks=_DOUBLE_QUANT)]


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
