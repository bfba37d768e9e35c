#!/usr/bin/env python3
"""Write the tokenizer test vectors, using llama.cpp (through llama-cpp-python) as the oracle.

    PYTHONPATH=tests /work/venv/bin/python tools/make_tokenizer_vectors.py [--model SmolLM2.gguf]

Writes
  tests/data/tokenizer_smollm2.json   ids/text from the SmolLM2 vocabulary (pre-tokenizer 'smollm'),
                                      and the same vocabulary re-labelled with other pre-tokenizers
                                      (llama-bpe, qwen2, default, gpt-2) to pin those regexes down.
  tests/data/tokenizer_spm_small.json a hand-built SentencePiece-style ('llama') vocabulary: its GGUF
                                      metadata (so the tests need no GGUF) and the ids llama.cpp gives.

Every GGUF is opened with llama_cpp.Llama(path, vocab_only=True); ids come from llama_tokenize,
text from llama_detokenize, pieces from llama_token_to_piece, stop ids from llama_vocab_is_eog.
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from gguf_meta import model_path, read_metadata  # noqa: E402

# Strings that exercise the pre-tokenizers, byte-level BPE and the special-token splitter.
STRINGS = [
    "",
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\n\n",
    "\n\n\n",
    "\r\n",
    " \n",
    "\n ",
    "\n\n  0",
    "Hello",
    "Hello world",
    " Hello world",
    "Hello world ",
    "  Hello  world  ",
    "hello\tworld\t\ttabs",
    "line one\nline two\n\nline four\n",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure you'll say it's what they'd've done, we're fine, I've seen it.",
    "I'M SURE YOU'LL SAY IT'S FINE",
    "don't ' quote ' it ? ! . , ok",
    "Hello , world ! How are you ? Fine .",
    "0",
    "7 8 9",
    "12",
    "123",
    "1234",
    "12345678901234567890",
    "3.14159265358979",
    "1,000,000 and 2.5e-3 and -42",
    "in 2024 there were 365 days",
    "abc123def456",
    "v1.2.3-rc4",
    "١٢٣ ٤٥٦",  # Arabic-Indic digits
    "Ⅻ ½ ²",  # number forms, fractions, superscripts
    "café naïve résumé",
    "Größe Straße",
    "日本語のテキスト",
    "中文测试，你好世界！",
    "한국어 텍스트",
    "Привет, мир!",
    "Γειά σου Κόσμε",
    "مرحبا بالعالم",
    "שלום עולם",
    "हिन्दी पाठ",
    "ไทยภาษา",
    "😀",
    "😀😃😄",
    "👨‍👩‍👧‍👦 family",
    "🇫🇷 flag",
    "👍🏽 ok",
    "emoji at end 🎉",
    "\u00a0non-breaking\u00a0spaces\u3000ideographic",
    "zero\u200bwidth\u200djoiner",
    "tab\u000bvt\u000cff",
    "\u0085next line",
    "def f(x):\n    return x * 2  # comment\n",
    "if (a && b) { return a->c[0]; } else { x += 1; }",
    "for i in range(10):\n\tprint(i)\n",
    "<div class=\"x\">Hi &amp; bye</div>",
    "https://example.com/path?q=1&r=two#frag",
    "user@example.com",
    "$100 + 5% = ~ | ^ <=> `code`",
    "!!!???...,,,;;;:::",
    "a-b_c.d/e\\f",
    "    indented four",
    "        eight spaces then text",
    "trailing spaces    ",
    "mixed \t \n whitespace \r\n end",
    "<|im_start|>",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "<|im_end|>",
    "text<|endoftext|>more",
    "<|im_start|><|im_end|><|im_start|>",
    "not special: <|im_sta rt|> <im_end>",
    "<repo_name>name<file_sep>",
    " <|im_start|> spaced <|im_end|> ",
    "<s>Hello</s>",
    "<|user|>hi there",
    "<unk> unknown",
    "the cat sat on the mat",
    "it is the world, is it?",
    "Hello Hello Hello",
    "Hell Hel He H",
    "世界 hello 世界",
    "123 1234 12 00",
    "a\u0301 combining",
    "x" * 300,
    "ab " * 100,
    ("The rain in Spain stays mainly in the plain. " * 8).strip(),
]

# Pre-tokenizers checked on the SmolLM2 vocabulary besides its own.
PRE_VARIANTS = ["llama-bpe", "qwen2", "default", "gpt-2"]


class Oracle:
    """One GGUF opened in llama.cpp (vocabulary only)."""

    def __init__(self, path: str):
        import llama_cpp

        self.lc = llama_cpp
        self.llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.n = llama_cpp.llama_vocab_n_tokens(self.vocab)

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        b = text.encode("utf-8")
        cap = len(b) + 16
        arr = (self.lc.llama_token * cap)()
        n = self.lc.llama_tokenize(self.vocab, b, len(b), arr, cap, add_special, parse_special)
        if n < 0:
            raise RuntimeError(f"llama_tokenize failed ({n}) for {text!r}")
        return list(arr[:n])

    def detokenize(self, ids, remove_special: bool, unparse_special: bool) -> bytes:
        arr = (self.lc.llama_token * max(1, len(ids)))(*ids)
        cap = 64 + 64 * len(ids)
        buf = ctypes.create_string_buffer(cap)
        n = self.lc.llama_detokenize(self.vocab, arr, len(ids), buf, cap, remove_special, unparse_special)
        if n < 0:
            raise RuntimeError("llama_detokenize buffer too small")
        return buf.raw[:n]

    def piece(self, tid: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(512)
        n = self.lc.llama_token_to_piece(self.vocab, tid, buf, 512, 0, special)
        if n < 0:
            raise RuntimeError("piece too long")
        return buf.raw[:n]

    def info(self) -> dict:
        lc, v = self.lc, self.vocab

        def opt(x):
            return None if x < 0 else int(x)

        return {
            "vocab_size": self.n,
            "bos_id": opt(lc.llama_vocab_bos(v)),
            "eos_id": opt(lc.llama_vocab_eos(v)),
            "eot_id": opt(lc.llama_vocab_eot(v)),
            "add_bos": bool(lc.llama_vocab_get_add_bos(v)),
            "add_eos": bool(lc.llama_vocab_get_add_eos(v)),
            "stop_ids": [i for i in range(self.n) if lc.llama_vocab_is_eog(v, i)],
            "control_ids": [i for i in range(self.n) if lc.llama_vocab_is_control(v, i)],
        }

    def pieces_digest(self, special: bool) -> str:
        h = hashlib.sha256()
        for i in range(self.n):
            p = self.piece(i, special)
            h.update(len(p).to_bytes(4, "little") + p)
        return h.hexdigest()


def vectors(oracle: Oracle, strings, decode=True) -> list[dict]:
    out = []
    for s in strings:
        rec = {"text": s}
        for add in (True, False):
            for parse in (False, True):
                rec[f"ids_add{int(add)}_parse{int(parse)}"] = oracle.tokenize(s, add, parse)
        if decode:
            dec = {}
            for key in ("ids_add1_parse1", "ids_add1_parse0"):
                ids = rec[key]
                for rm, un in ((False, True), (True, False), (False, False)):
                    b = oracle.detokenize(ids, rm, un)
                    try:
                        val = b.decode("utf-8")
                    except UnicodeDecodeError:
                        val = {"hex": b.hex()}
                    dec[f"{key}|rm{int(rm)}_un{int(un)}"] = val
            rec["decoded"] = dec
        out.append(rec)
    return out


def _slim(rec: dict) -> dict:
    """Pre-tokenizer variants: special-token parsing is covered by the main vectors already."""
    out = {"text": rec["text"], "ids_add1_parse0": rec["ids_add1_parse0"], "ids_add0_parse0": rec["ids_add0_parse0"]}
    out["decoded"] = {k: v for k, v in rec["decoded"].items()
                      if k in ("ids_add1_parse0|rm0_un1", "ids_add1_parse0|rm1_un0")}
    return out


# --- GGUF writing ---------------------------------------------------------------------------------


def _write_gguf(path: str, meta: dict, types: dict) -> None:
    """Write a tensor-less GGUF holding meta (types: key -> (GGUFValueType, sub_type or None))."""
    from gguf import GGUFWriter

    w = GGUFWriter(path, meta["general.architecture"])
    for k, v in meta.items():
        if k == "general.architecture":
            continue
        vt, st = types[k]
        w.add_key_value(k, v, vt, sub_type=st)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _types_of(path: str) -> dict:
    from gguf import GGUFReader, GGUFValueType

    r = GGUFReader(path)
    out = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        vt = f.types[0]
        out[k] = (vt, f.types[1] if vt == GGUFValueType.ARRAY else None)
    return out


# --- the small SentencePiece-style vocabulary ------------------------------------------------------

SPM_NORMAL = [
    # (piece, score); ties on purpose (▁t/he, in/er, th/▁s) to pin the left-first tie break
    ("▁", -1.0), ("e", -2.0), ("t", -2.5), ("a", -3.0), ("o", -3.0), ("i", -3.5), ("n", -3.5),
    ("s", -4.0), ("h", -4.0), ("r", -4.5), ("l", -4.5), ("d", -5.0), ("u", -5.5), ("c", -5.5),
    ("w", -6.0), ("m", -6.0), ("f", -6.5), ("y", -6.5), ("H", -7.0), ("W", -7.0), ("T", -7.0), ("I", -7.5),
    ("!", -8.0), (",", -8.0), (".", -8.0), ("?", -8.5), ("'", -8.5), ("0", -9.0), ("1", -9.0),
    ("2", -9.0), ("3", -9.0), ("é", -9.5), ("世", -10.0), ("界", -10.0),
    ("▁t", -3.1), ("he", -3.1), ("▁the", -2.2), ("th", -3.3), ("▁th", -3.9), ("in", -3.7), ("er", -3.7),
    ("▁a", -2.9), ("▁w", -4.1), ("or", -4.2), ("ld", -4.3), ("▁wor", -4.4), ("▁world", -1.5),
    ("ll", -4.6), ("lo", -4.7), ("el", -4.8), ("He", -5.1), ("Hel", -5.2), ("Hell", -5.3),
    ("Hello", -2.1), ("▁H", -5.4), ("▁He", -5.6), ("▁Hel", -5.7), ("▁Hell", -5.8), ("▁Hello", -1.2),
    ("▁in", -3.6), ("an", -4.9), ("at", -5.05), ("on", -5.15), ("▁s", -3.3), ("is", -3.4),
    ("▁is", -2.6), ("it", -3.45), ("▁it", -2.65), ("▁o", -4.05), ("▁of", -3.05), ("ca", -6.1),
    ("caf", -6.2), ("▁ca", -6.3), ("▁caf", -6.4), ("▁café", -2.05), ("12", -7.1), ("123", -7.2),
    ("00", -7.3), ("世界", -3.95), ("▁世界", -2.95), ("▁▁", -5.0), ("▁▁▁▁", -4.0), ("▁c", -5.9),
    ("▁ca", -6.3), ("▁cat", -3.8), ("▁m", -6.05), ("▁mat", -3.85), ("▁sat", -3.87), ("sa", -6.6),
    ("ma", -6.7), ("▁sa", -6.8), ("▁ma", -6.9), ("▁on", -3.45),
]
SPM_SPECIAL = [
    ("<|user|>", 4),  # USER_DEFINED: split out even with parse_special off
    ("<|im_start|>", 3),
    ("<|im_end|>", 3),  # CONTROL, end of generation by its text
    ("<unused0>", 5),  # UNUSED
]

SPM_STRINGS = [
    "", " ", "  ", "    ", "\n", "\n\n", "a\tb",
    "Hello", "Hello world", " Hello world", "Hello  world", "Hello world!", "hello world",
    "the cat sat on the mat", "it is the world, is it?", "Hell Hel He H", "Hello Hello",
    "the", "th", "▁the", "café", "caf é", "世界", "世界 hello 世界", "世", "😀", "😀 ok",
    "I'm here.", "123 1234 12 00 0", "zzz qqq", "ÿ", "\u00a0x",
    "<s>Hello</s>", "<s> Hello", "Hello</s>", "<|user|>hi", "hi <|user|> there", "<|user|><|user|>",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<unk>", "<unused0>", "<0x41>",
    "a<|im_end|>", "<|im_end|> b",
]


def spm_metadata() -> dict:
    tokens, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [2, 3, 3]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        scores.append(0.0)
        types.append(6)
    seen = set(tokens)
    for p, s in SPM_NORMAL:
        if p in seen:
            continue
        seen.add(p)
        tokens.append(p)
        scores.append(float(np.float32(s)))
        types.append(1)
    for p, t in SPM_SPECIAL:
        tokens.append(p)
        scores.append(0.0)
        types.append(t)
    return {
        "general.architecture": "llama",
        "general.name": "spm-small-test",
        "llama.context_length": 128,
        "llama.embedding_length": 64,
        "llama.block_count": 1,
        "llama.feed_forward_length": 128,
        "llama.attention.head_count": 2,
        "llama.attention.head_count_kv": 2,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
        "llama.rope.dimension_count": 32,
        "llama.vocab_size": len(tokens),
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
    }


def spm_types(meta: dict) -> dict:
    from gguf import GGUFValueType as T

    out = {}
    for k, v in meta.items():
        if isinstance(v, bool):
            out[k] = (T.BOOL, None)
        elif isinstance(v, int):
            out[k] = (T.UINT32, None)
        elif isinstance(v, float):
            out[k] = (T.FLOAT32, None)
        elif isinstance(v, str):
            out[k] = (T.STRING, None)
        elif k == "tokenizer.ggml.tokens":
            out[k] = (T.ARRAY, T.STRING)
        elif k == "tokenizer.ggml.scores":
            out[k] = (T.ARRAY, T.FLOAT32)
        elif k == "tokenizer.ggml.token_type":
            out[k] = (T.ARRAY, T.INT32)
        else:
            raise KeyError(k)
    return out


# SPM metadata variants: key overrides (None removes the key).
SPM_VARIANTS = {
    "base": {},
    "no_space_prefix": {"tokenizer.ggml.add_space_prefix": False},
    "eos_no_bos": {"tokenizer.ggml.add_bos_token": False, "tokenizer.ggml.add_eos_token": True},
}


def apply_overrides(meta: dict, overrides: dict) -> dict:
    m = dict(meta)
    for k, v in overrides.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    return m


# --- a vocabulary of every byte pair: its ids show exactly where the pre-tokenizer cut -------------


def gpt2_byte_chars() -> list[str]:
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return [out[b] for b in range(256)]


def bytepair_metadata(pre: str) -> dict:
    chars = gpt2_byte_chars()
    tokens = chars + [a + b for a in chars for b in chars]
    return {
        "general.architecture": "llama", "llama.context_length": 128, "llama.embedding_length": 64,
        "llama.block_count": 1, "llama.feed_forward_length": 128, "llama.attention.head_count": 2,
        "llama.attention.head_count_kv": 2, "llama.attention.layer_norm_rms_epsilon": 1e-5,
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [1] * len(tokens),
        "tokenizer.ggml.merges": [f"{a} {b}" for a in chars for b in chars],
        "tokenizer.ggml.bos_token_id": 0, "tokenizer.ggml.eos_token_id": 0, "tokenizer.ggml.add_bos_token": False,
    }


def bytepair_types(meta: dict) -> dict:
    from gguf import GGUFValueType as T

    out = spm_types({k: v for k, v in meta.items() if k != "tokenizer.ggml.merges"})
    out["tokenizer.ggml.merges"] = (T.ARRAY, T.STRING)
    return out


# Code points whose class llama.cpp and an older unicodedata disagree on (see tools/gen_unicode_classes.py),
# and one of each general category.
BYTEPAIR_CPS = [
    0x1123F, 0x11B00, 0x11B09, 0x11F02, 0x11F04, 0x11F43, 0x11F50, 0x1342F, 0x13441, 0x1B132, 0x1B155, 0x1D2C0,
    0x1DF25, 0x1E030, 0x1E4D0, 0x1E4F0, 0x2B739, 0x2EBF0, 0x31350, 0x323AF,
    0xE9, 0x1C5, 0x2B0, 0x5D0, 0x301, 0x903, 0x20DD, 0x663, 0x16EE, 0xB2, 0x5F, 0x2010, 0x28, 0x29, 0xAB, 0xBB,
    0x3002, 0x20AC, 0x2192, 0x2C2, 0x1F600, 0xA0, 0x2028, 0x2029, 0x3000, 0x85, 0x1C, 0x200B, 0xE0001, 0xE000,
    0xD7FF, 0x10FFFF, 0x1FAE8, 0x1FA77,
]


def bytepair_strings() -> list[str]:
    per_cp = [f"a{c}a 1{c}1 {c}{c}\n{c} '{c} ,{c}, \n {c}a{c}" for c in map(chr, BYTEPAIR_CPS)]
    return per_cp + [t for t in STRINGS if 0 < len(t) <= 80]


BYTEPAIR_PRES = ["smollm", "gpt-2", "default", "llama-bpe", "qwen2", "falcon", "stablelm2", "dbrx", "starcoder",
                 "command-r", "megrez", "mpt", "olmo"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--model", default=model_path())
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data"))
    args = ap.parse_args()
    import llama_cpp

    os.makedirs(args.out, exist_ok=True)
    version = getattr(llama_cpp, "__version__", "?")

    # SmolLM2 and pre-tokenizer variants of its vocabulary
    o = Oracle(args.model)
    doc = {
        "oracle": f"llama-cpp-python {version} (llama.cpp vocab_only)",
        "model": os.path.basename(args.model),
        "info": o.info(),
        "pieces_sha256": {"special": o.pieces_digest(True), "plain": o.pieces_digest(False)},
        "pieces_sample": {str(i): o.piece(i, True).hex() for i in list(range(0, 40)) + [198, 216, 1000, 20000, 49151]},
        "vectors": vectors(o, STRINGS),
        "pre_variants": {},
    }
    del o
    meta = read_metadata(args.model)
    types = _types_of(args.model)
    with tempfile.TemporaryDirectory() as td:
        for pre in PRE_VARIANTS:
            overrides = {"tokenizer.ggml.pre": pre}
            if pre == "llama-bpe":  # let llama.cpp's per-pre-tokenizer add_bos default apply
                overrides["tokenizer.ggml.add_bos_token"] = None
            m = apply_overrides(meta, overrides)
            p = os.path.join(td, f"v_{pre}.gguf")
            _write_gguf(p, m, types)
            ov = Oracle(p)
            doc["pre_variants"][pre] = {
                "overrides": overrides,
                "info": {k: v for k, v in ov.info().items() if k != "control_ids"},
                "vectors": [_slim(r) for r in vectors(ov, STRINGS, decode=True)],
            }
            del ov
    path = os.path.join(args.out, "tokenizer_smollm2.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
    print("wrote", path, os.path.getsize(path), "bytes")

    # the byte-pair vocabulary under each pre-tokenizer
    bdoc = {"oracle": doc["oracle"], "pre": {}}
    strings = bytepair_strings()
    with tempfile.TemporaryDirectory() as td:
        for pre in BYTEPAIR_PRES:
            m = bytepair_metadata(pre)
            p = os.path.join(td, f"bp_{pre}.gguf")
            _write_gguf(p, m, bytepair_types(m))
            ov = Oracle(p)
            bdoc["pre"][pre] = [ov.tokenize(t, False, False) for t in strings]
            del ov
    bdoc["strings"] = strings
    path = os.path.join(args.out, "tokenizer_bytepairs.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(bdoc, f, ensure_ascii=False, separators=(",", ":"))
    print("wrote", path, os.path.getsize(path), "bytes")

    # the small SPM vocabulary
    base = spm_metadata()
    sdoc = {"oracle": doc["oracle"], "metadata": base, "variants": {}}
    with tempfile.TemporaryDirectory() as td:
        for name, overrides in SPM_VARIANTS.items():
            m = apply_overrides(base, overrides)
            p = os.path.join(td, f"spm_{name}.gguf")
            _write_gguf(p, m, spm_types(m))
            ov = Oracle(p)
            sdoc["variants"][name] = {
                "overrides": overrides,
                "info": ov.info(),
                "pieces": {str(i): ov.piece(i, True).hex() for i in range(ov.n)},
                "pieces_plain": {str(i): ov.piece(i, False).hex() for i in range(ov.n)},
                "vectors": vectors(ov, SPM_STRINGS),
            }
            del ov
    path = os.path.join(args.out, "tokenizer_spm_small.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(sdoc, f, ensure_ascii=False, separators=(",", ":"))
    print("wrote", path, os.path.getsize(path), "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
