"""Tokenizers built from GGUF metadata that give the same ids as llama.cpp.

Two vocabulary kinds are supported, named by ``tokenizer.ggml.model``:

* ``gpt2``: byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM, ...). The text is
  first cut into words by the pre-tokenizer named in ``tokenizer.ggml.pre``,
  every byte of a word is mapped to a printable character (the GPT-2 byte
  table), then the merges in ``tokenizer.ggml.merges`` are applied by rank.
* ``llama``: SentencePiece-style BPE (Llama 1/2, Mistral, TinyLlama, ...):
  spaces become U+2581, adjacent pieces are merged by highest score, pieces
  that are not in the vocabulary fall back to ``<0xXX>`` byte tokens.

Everything here follows llama.cpp's llama-vocab.cpp / unicode.cpp behaviour
(facts, not code, carried over), including its quirks, because the ids have to
be the ones the model was run with there:

* Special tokens (CONTROL, USER_DEFINED, UNKNOWN types) are cut out of the
  text before anything else, longest first. CONTROL and UNKNOWN tokens only
  when ``parse_special`` is true; USER_DEFINED ones always.
* Unicode categories are llama.cpp's (its Unicode 15.1 table, frozen in
  fastcpu/_unicode_classes.py), not this Python's unicodedata, which changes
  with the interpreter version.
* The regex pre-tokenizers run over a "collapsed" copy of the text where each
  non-ASCII code point is replaced by one stand-in character per category,
  as llama.cpp does, so ``\\s`` means exactly the ASCII whitespace plus the
  Unicode White_Space set and ``\\p{L}``/``\\p{N}`` mean categories L*/N*.
* Detokenization reproduces llama_detokenize, including the removal of one
  leading space when ``add_space_prefix`` is set and the "clean spaces" pass
  (`` ?`` -> ``?`` etc.) of the pre-tokenizers that enable it.
"""
from __future__ import annotations

import array
import bisect
import codecs
import numbers
import re
from typing import Iterable, Mapping

__all__ = [
    "Tokenizer",
    "StreamDecoder",
    "TokenizerError",
    "TOKEN_TYPE_NORMAL",
    "TOKEN_TYPE_UNKNOWN",
    "TOKEN_TYPE_CONTROL",
    "TOKEN_TYPE_USER_DEFINED",
    "TOKEN_TYPE_UNUSED",
    "TOKEN_TYPE_BYTE",
    "SUPPORTED_PRE_TOKENIZERS",
]


class TokenizerError(ValueError):
    """The GGUF tokenizer metadata is missing, malformed or not supported."""


# tokenizer.ggml.token_type values (GGUF)
TOKEN_TYPE_UNDEFINED = 0
TOKEN_TYPE_NORMAL = 1
TOKEN_TYPE_UNKNOWN = 2
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4
TOKEN_TYPE_UNUSED = 5
TOKEN_TYPE_BYTE = 6

# llama.cpp token attribute bits (llama_token_attr)
ATTR_UNDEFINED = 0
ATTR_UNKNOWN = 1 << 0
ATTR_UNUSED = 1 << 1
ATTR_NORMAL = 1 << 2
ATTR_CONTROL = 1 << 3
ATTR_USER_DEFINED = 1 << 4
ATTR_BYTE = 1 << 5
ATTR_LSTRIP = 1 << 7
ATTR_RSTRIP = 1 << 8

_TYPE_TO_ATTR = {
    TOKEN_TYPE_UNDEFINED: ATTR_UNDEFINED,
    TOKEN_TYPE_NORMAL: ATTR_NORMAL,
    TOKEN_TYPE_UNKNOWN: ATTR_UNKNOWN,
    TOKEN_TYPE_CONTROL: ATTR_CONTROL,
    TOKEN_TYPE_USER_DEFINED: ATTR_USER_DEFINED,
    TOKEN_TYPE_UNUSED: ATTR_UNUSED,
    TOKEN_TYPE_BYTE: ATTR_BYTE,
}

_SPECIAL_ATTRS = ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN
# isspace() in the C locale: what llama.cpp strips next to LSTRIP/RSTRIP tokens
_C_SPACES = " \t\n\x0b\x0c\r"
_SPM_SPACE = "\u2581"

# ---------------------------------------------------------------------------
# Unicode classification, as llama.cpp's collapsed-regex machinery sees it
# ---------------------------------------------------------------------------


def _load_classes():
    from ._unicode_classes import RUNS

    starts, classes = [], []
    cp = 0
    for m in re.finditer(r"([A-Z])([0-9a-z]+)", "".join(RUNS)):
        starts.append(cp)
        classes.append(m.group(1))
        cp += int(m.group(2), 36)
    if cp != 0x110000:
        raise RuntimeError("fastcpu/_unicode_classes.py is corrupt")
    return starts, classes


# llama.cpp's own classification (frozen at its Unicode 15.1 table, whatever this Python's is).
_CLASS_STARTS, _CLASSES = _load_classes()
# Stand-ins for non-ASCII code points in the collapsed text (the bytes llama.cpp uses).
_STANDIN = {"W": "\x0b", "N": "\xd1", "L": "\xd2", "P": "\xd3", "M": "\xd4", "S": "\xd5", "O": "\xd0"}


def unicode_class(cp: int) -> str:
    """llama.cpp's class of a code point: L, N, P, M, S, W (White_Space) or O (other)."""
    return _CLASSES[bisect.bisect_right(_CLASS_STARTS, cp) - 1]


class _CollapseTable(dict):
    """str.translate table: ASCII stays, everything else becomes its class stand-in."""

    def __missing__(self, cp: int):
        r = cp if cp < 128 else _STANDIN[unicode_class(cp)]
        self[cp] = r
        return r


_COLLAPSE = _CollapseTable()


def _collapse(text: str) -> str:
    return text.translate(_COLLAPSE)


# Character classes over the collapsed text.
_WS = r"\t\n\x0b\x0c\r "
_S = f"[{_WS}]"
_NS = f"[^{_WS}]"
_L = "[A-Za-z\xd2]"
_N = "[0-9\xd1]"
_OTHER = f"[^{_WS}A-Za-z\xd20-9\xd1]"  # [^\s\p{L}\p{N}]
_NOT_RN_L_N = "[^\\r\\nA-Za-z\xd20-9\xd1]"  # [^\r\n\p{L}\p{N}]
_P_BODY = "\xd3!-#%-*,-/:;?@\\[-\\]_{}"  # \p{P} for ASCII + stand-in, as llama.cpp maps it

# 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# (llama.cpp's hand-written splitter for this regex also takes a lone \s+)
_RE_GPT2 = f"'s|'t|'re|'ve|'m|'ll|'d| ?{_L}+| ?{_N}+| ?{_OTHER}+|{_S}+(?!{_NS})|{_S}+"
_LLAMA3_HEAD = "'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]|" + f"{_NOT_RN_L_N}?{_L}+|"
_LLAMA3_TAIL = f"| ?{_OTHER}+[\\r\\n]*|{_S}*[\\r\\n]+|{_S}+(?!{_NS})|{_S}+"
_RE_LLAMA3 = _LLAMA3_HEAD + _N + "{1,3}" + _LLAMA3_TAIL
_RE_QWEN2 = _LLAMA3_HEAD + _N + _LLAMA3_TAIL
_RE_DIGIT = _N
_RE_DIGITS = _N + "+"
_RE_3DIGITS = "[0-9][0-9][0-9]"
_RE_PUNCT_RUN = f"[{_P_BODY}$+<=>^~|]+"
_RE_PUNCT_RUN_FALCON = f"[{_P_BODY}$+<=>^~|`]+"


class _PreTokenizer:
    __slots__ = ("name", "patterns", "ignore_merges", "add_bos", "clean_spaces")

    def __init__(self, name, regexes, *, ignore_merges=False, add_bos=False, clean_spaces=True):
        self.name = name
        self.patterns = tuple(re.compile(r) for r in regexes)
        self.ignore_merges = ignore_merges
        self.add_bos = add_bos
        self.clean_spaces = clean_spaces

    def split(self, text: str) -> list[str]:
        """Cut text into words: every regex in turn splits every piece, keeping matches and gaps."""
        collapsed = _collapse(text)
        spans = [(0, len(text))]
        for pat in self.patterns:
            out = []
            for s, e in spans:
                pos = s
                for m in pat.finditer(collapsed, s, e):
                    a, b = m.span()
                    if a == b:
                        continue
                    if a > pos:
                        out.append((pos, a))
                    out.append((a, b))
                    pos = b
                if pos < e:
                    out.append((pos, e))
            spans = out
        return [text[s:e] for s, e in spans]


def _pre(regexes, **kw):
    return lambda name: _PreTokenizer(name, regexes, **kw)


_DEFAULT = [_RE_PUNCT_RUN, _RE_GPT2, _RE_DIGITS, _RE_3DIGITS]
# tokenizer.ggml.pre value -> pre-tokenizer, with llama.cpp's per-name flags.
_PRE_TOKENIZERS = {
    "default": _pre(_DEFAULT),
    "gpt-2": _pre([_RE_GPT2]),
    "gpt2": _pre([_RE_GPT2]),  # not a llama.cpp name; accepted as an alias of gpt-2
    "phi-2": _pre([_RE_GPT2]),
    "mpt": _pre([_RE_GPT2]),
    "olmo": _pre([_RE_GPT2]),
    "smollm": _pre([_RE_DIGIT, _RE_GPT2], clean_spaces=False),
    "starcoder": _pre([_RE_DIGIT, _RE_GPT2]),
    "refact": _pre([_RE_DIGIT, _RE_GPT2]),
    "codeshell": _pre([_RE_DIGIT, _RE_GPT2]),
    "command-r": _pre([_RE_DIGIT, _RE_GPT2], clean_spaces=False),
    "llama3": _pre([_RE_LLAMA3], ignore_merges=True, add_bos=True),
    "llama-v3": _pre([_RE_LLAMA3], ignore_merges=True, add_bos=True),
    "llama-bpe": _pre([_RE_LLAMA3], ignore_merges=True, add_bos=True),
    "falcon3": _pre([_RE_LLAMA3], ignore_merges=True, add_bos=True),
    "dbrx": _pre([_RE_LLAMA3]),
    "smaug-bpe": _pre([_RE_LLAMA3]),
    "qwen2": _pre([_RE_QWEN2], clean_spaces=False),
    "deepseek-r1-qwen": _pre([_RE_QWEN2], clean_spaces=False),
    "megrez": _pre([_RE_QWEN2]),
    "stablelm2": _pre([_RE_QWEN2]),
    "falcon": _pre([_RE_PUNCT_RUN_FALCON, _RE_GPT2, _RE_3DIGITS]),
}
SUPPORTED_PRE_TOKENIZERS = tuple(sorted(_PRE_TOKENIZERS))

# ---------------------------------------------------------------------------
# GPT-2 byte <-> printable character table
# ---------------------------------------------------------------------------


def _byte_table() -> list[str]:
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = [""] * 256
    for b in printable:
        table[b] = chr(b)
    n = 0
    for b in range(256):
        if not table[b]:
            table[b] = chr(256 + n)
            n += 1
    return table


_BYTE_TO_CHAR = _byte_table()
_CHAR_TO_BYTE = {c: b for b, c in enumerate(_BYTE_TO_CHAR)}


def _byte_encode(word: str) -> str:
    return "".join([_BYTE_TO_CHAR[b] for b in word.encode("utf-8")])


# ---------------------------------------------------------------------------
# detokenizer "clean spaces" passes (byte-level, as llama_detokenize does them)
# ---------------------------------------------------------------------------

_CLEAN1 = re.compile(rb" (?=[?!.,])")
_CLEAN2 = re.compile(rb" ' ")
_CLEAN3 = re.compile(rb" '(?=[sm]|re|ve)")


def _clean_spaces(b: bytes) -> bytes:
    b = _CLEAN1.sub(b"", b)
    b = _CLEAN2.sub(b"'", b)
    return _CLEAN3.sub(b"'", b)


# ---------------------------------------------------------------------------
# metadata helpers
# ---------------------------------------------------------------------------

_EOT_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
)
_EOM_TEXTS = ("<|eom_id|>",)
_FIM_PRE_TEXTS = ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                  "<|code_prefix|>", "<|prefix|>")
_FIM_SUF_TEXTS = ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                  "<|code_suffix|>", "<|suffix|>")
_FIM_MID_TEXTS = ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                  "<|code_middle|>", "<|middle|>")
_FIM_PAD_TEXTS = ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]")
_FIM_REP_TEXTS = ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>")
_FIM_SEP_TEXTS = ("<|file_sep|>",)
_EOG_TEXTS = frozenset((
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
))


def _none(i):
    return -1 if i is None else i


def _get(meta: Mapping, key: str, kind):
    """meta[key] checked to be of the given kind; None when absent."""
    v = meta.get(key)
    if v is None:
        return None
    if kind is bool:
        if not isinstance(v, numbers.Integral) or int(v) not in (0, 1):
            raise TokenizerError(f"GGUF key {key!r} should be a bool, got {v!r}")
        return bool(v)
    if kind is int:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TokenizerError(f"GGUF key {key!r} should be an integer, got {v!r}")
        return int(v)
    if kind is str:
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        if not isinstance(v, str):
            raise TokenizerError(f"GGUF key {key!r} should be a string, got {type(v).__name__}")
        return v
    if kind is list:
        if hasattr(v, "tolist"):
            v = v.tolist()
        if not isinstance(v, (list, tuple)):
            raise TokenizerError(f"GGUF key {key!r} should be an array, got {type(v).__name__}")
        return list(v)
    raise AssertionError(kind)


# ---------------------------------------------------------------------------
# the tokenizer
# ---------------------------------------------------------------------------


class Tokenizer:
    """llama.cpp-exact tokenizer for a GGUF vocabulary. Build with :meth:`from_gguf_metadata`."""

    def __init__(self, meta: Mapping):
        model = _get(meta, "tokenizer.ggml.model", str)
        if model is None:
            raise TokenizerError("GGUF metadata has no 'tokenizer.ggml.model' key")
        if model == "gpt2":
            self.kind = "bpe"
        elif model == "llama":
            self.kind = "spm"
        else:
            raise TokenizerError(
                f"unsupported tokenizer model {model!r} (tokenizer.ggml.model); supported: 'gpt2', 'llama'")
        self.model = model

        # The strings and merges go into C memory (fastcpu._engine.Vocab: one blob of UTF-8 bytes and
        # two hash tables, ~2 MB for SmolLM2 where Python dicts of str/tuple/int took ~15 MB), read
        # straight from the file when the metadata keeps them there (fastcpu.gguf.GGUFMetadata): no
        # list of ~50k strings that would leave the heap fragmented after it is freed.
        from ._engine import Vocab

        vocab = self._vocab = Vocab()
        iter_strings = getattr(meta, "iter_strings", None)
        tokens = iter_strings("tokenizer.ggml.tokens", raw=True) if iter_strings is not None else None
        if tokens is None:
            tokens = _get(meta, "tokenizer.ggml.tokens", list)
        n = 0
        for i, t in enumerate(tokens or ()):
            if isinstance(t, str):
                t = t.encode("utf-8", "surrogateescape")
            elif not isinstance(t, bytes):
                raise TokenizerError(f"tokenizer.ggml.tokens[{i}] is {type(t).__name__}, not a string")
            r = vocab.add(t if t else f"[EMPTY_{i}]".encode())
            if r < 0:
                t = t.decode("utf-8", "surrogateescape")
                raise TokenizerError(f"duplicate token in vocabulary: {t!r} has ids {-2 - r} and {i}")
            n += 1
        if not n:
            raise TokenizerError("GGUF metadata has no 'tokenizer.ggml.tokens' array")
        vocab.set_n_vocab()
        find = self._find

        types = _get(meta, "tokenizer.ggml.token_type", list)
        if types is not None and len(types) < n:
            raise TokenizerError(f"tokenizer.ggml.token_type has {len(types)} entries for {n} tokens")
        self._attr = array.array("H", (_TYPE_TO_ATTR.get(int(types[i]), ATTR_UNDEFINED) if types is not None
                                       else ATTR_NORMAL for i in range(n)))
        del types

        pre_name = _get(meta, "tokenizer.ggml.pre", str)
        self.clean_spaces = False
        self._pre = None
        ignore_merges = False
        if self.kind == "bpe":
            merges = iter_strings("tokenizer.ggml.merges", raw=True) if iter_strings is not None else None
            if merges is None:
                merges = _get(meta, "tokenizer.ggml.merges", list)
            if merges is None:
                raise TokenizerError("BPE vocabulary (gpt2) without 'tokenizer.ggml.merges'")
            for i, m in enumerate(merges):
                if isinstance(m, str):
                    m = m.encode("utf-8", "surrogateescape")
                elif not isinstance(m, bytes):
                    raise TokenizerError(f"tokenizer.ggml.merges[{i}] is {type(m).__name__}, not a string")
                vocab.add_merge(m, i)  # "left right"; the first rank of a pair stands
            # the symbol each byte starts as (the strings of every byte-level character get an id,
            # a vocabulary one or their own) and llama.cpp's fallback for a symbol with no token
            syms = []
            for ch in _BYTE_TO_CHAR:
                c = ch.encode("utf-8")
                j = vocab.find(c)
                syms.append(j if j >= 0 else vocab.add(c))
            vocab.set_bytes(syms, [_none(find(chr(c))) for c in range(128)])
            name = pre_name or "default"
            if name not in _PRE_TOKENIZERS:
                raise TokenizerError(
                    f"unsupported pre-tokenizer {name!r} (tokenizer.ggml.pre); supported: "
                    + ", ".join(SUPPORTED_PRE_TOKENIZERS))
            self._pre = _PRE_TOKENIZERS[name](name)
            self.pre = name
            self.add_space_prefix = False
            self.clean_spaces = self._pre.clean_spaces
            ignore_merges = self._pre.ignore_merges
            self.add_bos = self._pre.add_bos
            self.add_eos = False
            bos, eos, unk = 11, 11, None
        else:
            self.pre = pre_name or "default"
            self.add_space_prefix = True
            self.add_bos = True
            self.add_eos = False
            bos, eos, unk = 1, 2, 0
            scores = _get(meta, "tokenizer.ggml.scores", list)
            if scores is not None and len(scores) < n:
                raise TokenizerError(f"tokenizer.ggml.scores has {len(scores)} entries for {n} tokens")
            import numpy as np

            sc = np.asarray(scores[:n], dtype=np.float64) if scores is not None else np.zeros(n)
            del scores
            fallback = []
            for c in range(256):
                i = find(f"<0x{c:02X}>")
                if i is None and c < 0x80:
                    i = find(chr(c))
                fallback.append(_none(i))
            vocab.set_spm(sc, fallback)
            del sc
        vocab.shrink()
        self._ignore_merges = ignore_merges
        v = _get(meta, "tokenizer.ggml.add_space_prefix", bool)
        if v is not None:
            self.add_space_prefix = v

        def special(key, default):
            if default is not None and default >= n:
                default = None
            v = _get(meta, key, int)
            if v is None or not (0 <= v < n):
                return default
            return v

        self.bos_id = special("tokenizer.ggml.bos_token_id", bos)
        self.eos_id = special("tokenizer.ggml.eos_token_id", eos)
        self.eot_id = special("tokenizer.ggml.eot_token_id", None)
        self.eom_id = special("tokenizer.ggml.eom_token_id", None)
        self.unk_id = special("tokenizer.ggml.unknown_token_id", unk)
        self.sep_id = special("tokenizer.ggml.seperator_token_id", None)
        self.pad_id = special("tokenizer.ggml.padding_token_id", None)
        fim_pre = special("tokenizer.ggml.prefix_token_id", special("tokenizer.ggml.fim_pre_token_id", None))
        fim_suf = special("tokenizer.ggml.suffix_token_id", special("tokenizer.ggml.fim_suf_token_id", None))
        fim_mid = special("tokenizer.ggml.middle_token_id", special("tokenizer.ggml.fim_mid_token_id", None))
        fim_pad = special("tokenizer.ggml.fim_pad_token_id", None)
        fim_rep = special("tokenizer.ggml.fim_rep_token_id", None)
        fim_sep = special("tokenizer.ggml.fim_sep_token_id", None)

        v = _get(meta, "tokenizer.ggml.add_bos_token", bool)
        if v is not None:
            self.add_bos = v
        v = _get(meta, "tokenizer.ggml.add_eos_token", bool)
        if v is not None:
            self.add_eos = v
        if self.add_bos and self.bos_id is None:
            raise TokenizerError("tokenizer.ggml.add_bos_token is true, but tokenizer.ggml.bos_token_id is not set")
        if self.add_eos and self.eos_id is None:
            raise TokenizerError("tokenizer.ggml.add_eos_token is true, but tokenizer.ggml.eos_token_id is not set")

        # llama.cpp finds end-of-turn and FIM tokens by their text when the file doesn't name them.
        # It walks a hash map, so which of several candidates wins is unspecified there; here the
        # lowest id wins (which is what llama.cpp picked for SmolLM2: <|endoftext|> over <|im_end|>).
        def by_text(current, candidates):
            if current is not None:
                return current
            found = [i for i in (find(t) for t in candidates) if i is not None]
            if not found:
                return None
            i = min(found)
            self._attr[i] |= ATTR_CONTROL
            return i

        self.eot_id = by_text(self.eot_id, _EOT_TEXTS)
        self.eom_id = by_text(self.eom_id, _EOM_TEXTS)
        for cur, cands in ((fim_pre, _FIM_PRE_TEXTS), (fim_suf, _FIM_SUF_TEXTS), (fim_mid, _FIM_MID_TEXTS)):
            by_text(cur, cands)  # only for the attribute change: FIM tokens become CONTROL
        fim_pad = by_text(fim_pad, _FIM_PAD_TEXTS)
        fim_rep = by_text(fim_rep, _FIM_REP_TEXTS)
        fim_sep = by_text(fim_sep, _FIM_SEP_TEXTS)
        eog = {i for i in (fim_pad, fim_rep, fim_sep) if i is not None}
        for t in _EOG_TEXTS:
            i = find(t)
            if i is not None:
                eog.add(i)
                self._attr[i] |= ATTR_CONTROL
        for t in ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"):  # gpt-oss: always rendered
            i = find(t)
            if i is not None:
                self._attr[i] = ATTR_USER_DEFINED
        eog.update(i for i in (self.eos_id, self.eot_id, self.eom_id) if i is not None)
        eog_texts = {self._text(i) for i in eog}
        if "<|end|>" in eog_texts and ({"<|return|>", "<|call|>"} <= eog_texts
                                       or {"<|calls|>", "<|flush|>"} <= eog_texts):
            end = find("<|end|>")
            eog.discard(end)
            self._attr[end] = ATTR_USER_DEFINED
        if "<|tool_response>" in eog_texts and "</s>" in eog_texts:
            s = find("</s>")
            eog.discard(s)
            self._attr[s] = ATTR_NORMAL
        self._eog = frozenset(eog)

        # Special tokens, longest text first (ties: lower id first), matched before tokenizing.
        self._specials = sorted((i for i in range(n) if self._attr[i] & _SPECIAL_ATTRS),
                                key=lambda i: (-len(vocab.text(i)), i))
        self._special_text = {i: self._text(i) for i in self._specials}
        name_lc = (_get(meta, "general.name", str) or "").lower()
        if "phi-3" in name_lc or "phi3" in name_lc:
            for i in self._specials:
                self._attr[i] |= ATTR_RSTRIP
            for t, on in (("</s>", True), ("<unk>", False), ("<s>", False), ("<|endoftext|>", False)):
                i = find(t)
                if i is not None:
                    self._attr[i] = (self._attr[i] | ATTR_RSTRIP) if on else (self._attr[i] & ~ATTR_RSTRIP)

        self._n = n
        self._pieces: dict[int, bytes] = {}  # the tokens decoded so far
        self._word_cache: dict[str, list[int]] = {}
        self.chat_template = _get(meta, "tokenizer.chat_template", str)

    @classmethod
    def from_gguf_metadata(cls, meta: Mapping) -> "Tokenizer":
        """Build from a mapping of GGUF keys to plain Python values (str/int/float/bool/list)."""
        if not isinstance(meta, Mapping):
            raise TypeError(f"meta must be a mapping of GGUF keys to values, got {type(meta).__name__}")
        return cls(meta)

    # -- vocabulary ---------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._n

    @property
    def stop_ids(self) -> frozenset:
        """Ids that end generation (llama_vocab_is_eog): eos, eot, <|im_end|>-like tokens, ..."""
        return self._eog

    def is_eog(self, token_id: int) -> bool:
        return token_id in self._eog

    def token_text(self, token_id: int) -> str:
        """The vocabulary entry as stored in the GGUF (byte-encoded for BPE, with U+2581 for SPM)."""
        self._check_id(token_id)
        return self._text(int(token_id))

    def token_attr(self, token_id: int) -> int:
        self._check_id(token_id)
        return self._attr[token_id]

    def is_control(self, token_id: int) -> bool:
        self._check_id(token_id)
        return bool(self._attr[token_id] & ATTR_CONTROL)

    def token_id(self, text: str):
        """Id of a vocabulary entry given its stored text, or None."""
        return self._find(text) if isinstance(text, str) else None

    def _find(self, text: str):
        return self._vocab.find_token(text.encode("utf-8", "surrogateescape"))

    def _text(self, i: int) -> str:
        return self._vocab.text(i).decode("utf-8", "surrogateescape")

    def _check_id(self, token_id) -> None:
        if isinstance(token_id, bool) or not isinstance(token_id, int):
            try:
                import numpy as np
                if isinstance(token_id, np.integer):
                    token_id = int(token_id)
                else:
                    raise TypeError
            except (ImportError, TypeError):
                raise TypeError(f"token id must be an int, got {type(token_id).__name__}") from None
        if not 0 <= token_id < self._n:
            raise ValueError(f"token id {token_id} out of range for a vocabulary of {self._n} tokens")

    # -- encoding -----------------------------------------------------------

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of text, as llama_tokenize(text, add_special, parse_special).

        add_special: add BOS/EOS if the vocabulary asks for them (tokenizer.ggml.add_bos_token...).
        parse_special: recognise CONTROL tokens such as <|im_start|> written in the text.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"text is not encodable as UTF-8 (lone surrogate at {e.start})") from None
        frags: list = self._partition(text, parse_special) if text else []
        out: list[int] = []
        if self.kind == "spm":
            is_prev_special = True
            if add_special and self.add_bos:
                out.append(self.bos_id)
            for f in frags:
                if isinstance(f, int):
                    out.append(f)
                    is_prev_special = True
                else:
                    if self.add_space_prefix and is_prev_special:
                        f = " " + f
                    self._spm(f.replace(" ", _SPM_SPACE), out)
                    is_prev_special = False
        else:
            if add_special and self.add_bos:
                out.append(self.bos_id)
            for f in frags:
                if isinstance(f, int):
                    out.append(f)
                else:
                    self._bpe_text(f, out)
        if add_special and self.add_eos:
            out.append(self.eos_id)
        return out

    def _partition(self, text: str, parse_special: bool) -> list:
        """Cut special tokens out of the text: a list of str pieces and int ids."""
        frags: list = [text]
        texts, attrs = self._special_text, self._attr
        for sid in self._specials:
            a = attrs[sid]
            if not parse_special and a & (ATTR_CONTROL | ATTR_UNKNOWN):
                continue
            tok = texts[sid]
            out = []
            hit = False
            for f in frags:
                if isinstance(f, int) or tok not in f:
                    out.append(f)
                    continue
                hit = True
                start, end = 0, len(f)
                while True:
                    m = f.find(tok, start)
                    if m < 0:
                        break
                    left = f[start:m]
                    if a & ATTR_LSTRIP:
                        left = left.rstrip(_C_SPACES)
                    if left:
                        out.append(left)
                    out.append(sid)
                    start = m + len(tok)
                    if a & ATTR_RSTRIP:
                        while start < end and f[start] in _C_SPACES:
                            start += 1
                if start < end:
                    out.append(f[start:])
            if hit:
                frags = out
        return frags

    # BPE ------------------------------------------------------------------

    def _bpe_text(self, text: str, out: list[int]) -> None:
        cache = self._word_cache
        for word in self._pre.split(text):
            ids = cache.get(word)
            if ids is None:
                ids = self._bpe_word(word)
                if len(cache) >= 1 << 14:  # a bound on its memory (~150 bytes a word)
                    cache.clear()
                cache[word] = ids
            out.extend(ids)

    def _bpe_word(self, word: str) -> list[int]:
        if self._ignore_merges:
            i = self._vocab.find_token(_byte_encode(word).encode("utf-8"))
            if i is not None:
                return [i]
        return self._vocab.bpe(word.encode("utf-8"))

    # SPM ------------------------------------------------------------------

    def _spm(self, text: str, out: list[int]) -> None:
        try:
            out.extend(self._vocab.spm(text.encode("utf-8")))
        except LookupError as e:
            raise TokenizerError(
                f"SPM vocabulary has no byte-fallback token <0x{e.args[0]:02X}> for an unknown character") from None

    # -- decoding -----------------------------------------------------------

    def token_to_piece(self, token_id: int, special: bool = True) -> bytes:
        """The bytes a token stands for (llama_token_to_piece). special=False hides CONTROL/UNKNOWN tokens."""
        self._check_id(token_id)
        token_id = int(token_id)
        if not special and self._attr[token_id] & (ATTR_CONTROL | ATTR_UNKNOWN):
            return b""
        p = self._pieces.get(token_id)
        if p is None:
            p = self._pieces[token_id] = self._make_piece(token_id)
        return p

    def _make_piece(self, i: int) -> bytes:
        a, text = self._attr[i], self._text(i)
        if a & (ATTR_CONTROL | ATTR_UNKNOWN | ATTR_USER_DEFINED):
            return text.encode("utf-8", "surrogateescape")
        if a & ATTR_NORMAL:
            if self.kind == "spm":
                return text.replace(_SPM_SPACE, " ").encode("utf-8", "surrogateescape")
            out = bytearray()
            for ch in text:
                b = _CHAR_TO_BYTE.get(ch)
                if b is not None:
                    out.append(b)
                else:  # not a byte-level character: llama.cpp writes a marker with the whole token text
                    out += b"[UNK_BYTE_0x" + ch.encode("utf-8", "surrogateescape").hex().encode() \
                        + text.encode("utf-8", "surrogateescape") + b"]"
            return bytes(out)
        if a & ATTR_BYTE:  # <0xXX>; parsed like strtol: leading hex digits, else 0
            m = re.match(r"[0-9A-Fa-f]*", text[3:5])
            return bytes([int(m.group(0), 16) if m.group(0) else 0])
        return b""

    def detokenize(self, ids: Iterable[int], remove_special: bool = False, unparse_special: bool = False) -> bytes:
        """Bytes of a token sequence, exactly as llama_detokenize(ids, remove_special, unparse_special)."""
        ids = list(ids)
        remove_space = self.add_space_prefix
        if remove_special and self.add_bos and ids and ids[0] == self.bos_id:
            remove_space = False
            ids = ids[1:]
        if remove_special and self.add_eos and ids and ids[-1] == self.eos_id:
            ids = ids[:-1]
        parts = []
        for t in ids:
            p = self.token_to_piece(t, unparse_special)
            if remove_space and p[:1] == b" ":
                p = p[1:]
            remove_space = False
            parts.append(p)
        out = b"".join(parts)
        if self.clean_spaces:
            out = _clean_spaces(out)
        return out

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of a token sequence. skip_special=False renders control tokens (<|im_start|>...) as text;
        True drops them and a leading BOS / trailing EOS the vocabulary adds itself.
        Bytes that are not valid UTF-8 become U+FFFD."""
        return self.detokenize(ids, remove_special=skip_special,
                               unparse_special=not skip_special).decode("utf-8", errors="replace")

    def stream_decoder(self, skip_special: bool = False, continuation: bool = False) -> "StreamDecoder":
        """A StreamDecoder; continuation=True for text that follows a prompt (generated tokens)."""
        return StreamDecoder(self, skip_special=skip_special, continuation=continuation)

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return (f"Tokenizer(model={self.model!r}, pre={self.pre!r}, vocab_size={self._n}, "
                f"bos_id={self.bos_id}, eos_id={self.eos_id}, add_bos={self.add_bos})")


class StreamDecoder:
    """Turns ids fed one at a time into text pieces that are always whole UTF-8 characters.

    Bytes of a character split across tokens (emoji, CJK in byte-level vocabularies) are held until
    the character is complete. The concatenation of everything returned by feed() and flush() equals
    ``tokenizer.decode(all_ids, skip_special)`` (except that a trailing EOS is not removed, since the
    stream can't know it is the last token).

    continuation=True: the ids continue a prompt (e.g. generated tokens), so the first piece keeps
    its leading space; decode() of a whole sequence drops one for ``add_space_prefix`` vocabularies
    (SentencePiece), where that space was added by the tokenizer, but a generated "▁Paris" after a
    prompt really means " Paris".
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False, continuation: bool = False):
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"tokenizer must be a Tokenizer, got {type(tokenizer).__name__}")
        self._tok = tokenizer
        self._special = not skip_special
        self._skip = skip_special
        self._first = not continuation
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = b""  # raw bytes not yet cleaned (clean-spaces vocabularies only)

    def feed(self, token_id: int) -> str:
        tok = self._tok
        if self._first:
            self._first = False
            remove_space = tok.add_space_prefix
            if self._skip and tok.add_bos and token_id == tok.bos_id:
                return ""  # dropped like llama_detokenize(remove_special) does, and no space removal
            p = tok.token_to_piece(token_id, self._special)
            if remove_space and p[:1] == b" ":
                p = p[1:]
        else:
            p = tok.token_to_piece(token_id, self._special)
        if not tok.clean_spaces:
            return self._utf8.decode(p)
        # The clean-spaces rewrites all start at a space and span at most 4 bytes, so the text before
        # a point preceded by 4 non-space bytes can no longer change.
        buf = self._pending + p
        cut = len(buf)
        while cut >= 4 and b" " in buf[cut - 4:cut]:
            cut = buf.rfind(b" ", 0, cut)
        if cut < 4:
            self._pending = buf
            return ""
        self._pending = buf[cut:]
        return self._utf8.decode(_clean_spaces(buf[:cut]))

    def flush(self) -> str:
        """Whatever is held back, with incomplete UTF-8 sequences replaced by U+FFFD."""
        out = ""
        if self._pending:
            out = self._utf8.decode(_clean_spaces(self._pending))
            self._pending = b""
        return out + self._utf8.decode(b"", final=True)
