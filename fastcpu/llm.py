"""fastcpu.LLM: text in, text out, on the C model runner.

    llm = fastcpu.LLM()                      # default model, pulled by fastcpu.hub
    llm.generate("Once upon a time", max_tokens=64, seed=1)
    for piece in llm.chat([{"role": "user", "content": "Hi"}], stream=True): print(piece, end="")

The KV cache is kept between calls: a prompt that starts with what the cache already holds (the
next chat turn, say) only runs its new tokens.
"""
from __future__ import annotations

import codecs
import math
import os
import threading
import time
from typing import Iterator, Sequence

import numpy as np

from .model import Model
from .sampler import SamplerParams, sample, scratch_for


def _resolve_model(model) -> str:
    """A GGUF path, a known name or hf:OWNER/REPO/FILE.gguf (fastcpu.hub); None: the default model."""
    from .hub import resolve

    if model is not None:
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError(f"model must be a path or a name, got {type(model).__name__}")
        p = os.path.expanduser(os.fspath(model))
        if not p.startswith("hf:") and (os.sep in p or p.endswith(".gguf")) and not os.path.isfile(p):
            raise FileNotFoundError(f"model file not found: {p}")
    return os.fspath(resolve(model))


class _StopScanner:
    """Holds back text that might be the start of a stop string, so that a stop string is never
    streamed out, not even in part."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.hit = False

    def feed(self, text: str) -> str:
        if not self.stops:
            return text
        self.pending += text
        cut = -1
        for s in self.stops:
            i = self.pending.find(s)
            if i >= 0 and (cut < 0 or i < cut):
                cut = i
        if cut >= 0:
            self.hit = True
            out, self.pending = self.pending[:cut], ""
            return out
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(self.pending) - hold:]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class LLM:
    """A model ready to generate. model: a GGUF path or a name fastcpu.hub knows (None: the
    default model); threads: compute threads (None: physical cores); ctx: positions the KV cache
    holds (None: min(model's context, 4096)); ram_budget: bytes (or "4GiB", "512MiB", ...) of
    weights to keep in memory, the rest streamed from the file every token (fastcpu.stream);
    stream_options: read settings for streaming (direct, readers, depth, chunk); kv_type: "f32"
    (default, exact) or "f16" (the KV cache in float16: half its memory and of the bytes a decode
    step reads from it, as llama.cpp's default cache)."""

    def __init__(self, model=None, threads: int | None = None, ctx: int | None = None,
                 max_batch: int | None = None, ram_budget=None, stream_options: dict | None = None,
                 kv_type: str = "f32"):
        from .tokenizer import Tokenizer

        self.model_path = _resolve_model(model)
        self.model = Model(self.model_path, ctx=ctx, threads=threads, max_batch=max_batch, ram_budget=ram_budget,
                           stream_options=stream_options, kv_type=kv_type)
        self.config = self.model.config
        self.n_ctx = self.model.n_ctx
        self.n_vocab = self.model.n_vocab
        self.tokenizer = Tokenizer.from_gguf_metadata(self.model.file.metadata)
        self.model.file.drop_pages(0, self.model.file.data_offset)  # the metadata the tokenizer read
        self.metadata = self.model.file.metadata
        self._template = None
        self._reused = 0
        self._cached: list[int] = []  # tokens whose keys/values the cache holds, positions 0..
        self._lock = threading.RLock()
        self.last_stats: dict = {}
        stop = set(int(i) for i in self.tokenizer.stop_ids)
        eos = getattr(self.tokenizer, "eos_id", None)
        if eos is not None and eos >= 0:
            stop.add(int(eos))
        self.stop_ids = frozenset(stop)

    # ---- tokens ----
    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return list(self.tokenizer.encode(text, add_special=add_special, parse_special=parse_special))

    def detokenize(self, ids) -> str:
        return self.tokenizer.decode(self._check_ids(ids))

    def _check_ids(self, ids) -> list[int]:
        if isinstance(ids, np.ndarray):
            if ids.ndim != 1 or ids.dtype.kind not in "iu":
                raise TypeError(f"token ids must be a 1-D integer sequence, got {ids.dtype} shape {ids.shape}")
            ids = ids.tolist()
        out = []
        for t in ids:
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
                raise TypeError(f"token ids must be ints, got {type(t).__name__}")
            t = int(t)
            if t < 0 or t >= self.n_vocab:
                raise ValueError(f"token id {t} out of range: the vocabulary has {self.n_vocab} tokens")
            out.append(t)
        return out

    # ---- the cache ----
    def reset(self) -> None:
        """Forgets the cached prompt (the next call runs its whole prompt)."""
        with self._lock:
            self._cached = []
            self.model.engine.reset()

    def _prefill(self, ids: list[int]) -> np.ndarray:
        """Logits after `ids` (positions 0..), reusing the longest cached prefix."""
        if len(ids) > self.n_ctx:
            raise ValueError(f"prompt too long: {len(ids)} tokens exceed the context of {self.n_ctx}; "
                             f"pass a larger ctx (the model allows {self.config.ctx_train})")
        common = 0
        lim = min(len(self._cached), len(ids) - 1)  # at least one token runs, to get its logits
        while common < lim and self._cached[common] == ids[common]:
            common += 1
        self._cached = self._cached[:common]
        self._reused = common
        logits = self.model.forward(np.asarray(ids[common:], np.int32), common, "last")
        self._cached = list(ids)
        return logits

    # ---- generation ----
    def generate(self, prompt, max_tokens: int = 128, temperature: float = 0.8, top_k: int = 40,
                 top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
                 presence_penalty: float = 0.0, frequency_penalty: float = 0.0, seed: int | None = None,
                 stop=None, stream: bool = False, add_special: bool = True, parse_special: bool = False):
        """Continues `prompt` (a str, or a list of token ids). Returns the new text, or with
        stream=True an iterator of text pieces (whole UTF-8 characters) whose join is that text.
        Stops at an end-of-generation token, a stop string (not included), max_tokens, or a full
        context."""
        if isinstance(prompt, str):
            ids = self.tokenize(prompt, add_special=add_special, parse_special=parse_special)
        elif isinstance(prompt, (list, tuple, np.ndarray)):
            ids = self._check_ids(prompt)
        else:
            raise TypeError(f"prompt must be a str or a list of token ids, got {type(prompt).__name__}")
        if not ids:
            raise ValueError("empty prompt")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) or max_tokens < 0:
            raise ValueError(f"max_tokens must be a non-negative int, got {max_tokens!r}")
        if len(ids) > self.n_ctx:
            raise ValueError(f"prompt too long: {len(ids)} tokens exceed the context of {self.n_ctx}; "
                             f"pass a larger ctx (the model allows {self.config.ctx_train})")
        params = SamplerParams(temperature, top_k, top_p, min_p, repeat_penalty, presence_penalty,
                               frequency_penalty).validate()
        if stop is None:
            stops = []
        elif isinstance(stop, str):
            stops = [stop]
        else:
            stops = list(stop)
            if not all(isinstance(s, str) for s in stops):
                raise TypeError("stop must be a str or a list of str")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        rng = np.random.default_rng(seed)
        it = self._generate(ids, int(max_tokens), params, rng, stops)
        if stream:
            return it
        return "".join(it)

    def _generate(self, ids, max_tokens, params, rng, stops) -> Iterator[str]:
        with self._lock:
            t0 = time.perf_counter()
            logits = self._prefill(ids)
            t1 = time.perf_counter()
            history = list(ids)
            dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
            scan = _StopScanner(stops)
            n_gen = 0
            reason = "length"
            # one logits row reused by every step: a fresh 200 KB array per token is an mmap, page
            # faults and zeroing in the kernel, a visible share of a SmolLM2 step
            out = np.empty(self.n_vocab, np.float32)
            tok_arr = np.empty(1, np.int32)
            scratch = scratch_for(self.n_vocab, params)
            while n_gen < max_tokens:
                tok = sample(logits, rng, params, history, scratch)
                if tok in self.stop_ids:
                    reason = "stop"
                    break
                n_gen += 1
                history.append(tok)
                text = scan.feed(dec.decode(self.tokenizer.token_to_piece(tok)))
                if text:
                    yield text
                if scan.hit:
                    reason = "stop"
                    break
                if n_gen >= max_tokens:
                    break
                pos = len(self._cached)
                if pos >= self.n_ctx:
                    reason = "context"
                    break
                tok_arr[0] = tok
                logits = self.model.forward(tok_arr, pos, "last", out)
                self._cached.append(tok)
            if not scan.hit:
                tail = scan.feed(dec.decode(b"", final=True))
                tail += "" if scan.hit else scan.flush()
                if tail:
                    yield tail
            t2 = time.perf_counter()
            self.last_stats = {
                "prompt_tokens": len(ids), "cached_prompt_tokens": self._reused, "generated_tokens": n_gen,
                "finish_reason": reason,
                "tokens": history[len(ids):],
                "prefill_s": t1 - t0, "decode_s": t2 - t1,
            }

    def generate_batch(self, prompts, max_tokens: int = 128, **kw) -> list:
        """Continues each prompt, decoding all of them together: one pass over the weights per
        step serves every sequence (what makes streaming from disk pay). See fastcpu.batch."""
        from .batch import generate_batch

        return generate_batch(self, prompts, max_tokens=max_tokens, **kw)

    # ---- chat ----
    @property
    def chat_template(self):
        """The file's chat template (ChatML when it has none)."""
        if self._template is None:
            from .chat import ChatTemplate

            self._template = ChatTemplate.from_tokenizer(self.tokenizer, self.metadata.get("tokenizer.chat_template"))
        return self._template

    def render_chat(self, messages, add_generation_prompt: bool = True) -> str:
        return self.chat_template.render(messages, add_generation_prompt)

    def chat(self, messages, max_tokens: int = 256, **kw):
        """Replies to `messages` ([{"role": ..., "content": ...}, ...]) through the model's chat
        template, with the generation prompt. Same options as generate()."""
        from .chat import encode_chat

        if not isinstance(messages, (list, tuple)) or not messages:
            raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
        ids = encode_chat(self.tokenizer, self.chat_template, list(messages), add_generation_prompt=True)
        return self.generate(ids, max_tokens=max_tokens, **kw)

    # ---- scoring ----
    def eval(self, ids) -> np.ndarray:
        """Teacher-forced logits: float32 (len(ids), vocab); row i predicts token i+1."""
        ids = self._check_ids(ids)
        if not ids:
            raise ValueError("no tokens to evaluate")
        if len(ids) > self.n_ctx:
            raise ValueError(f"prompt too long: {len(ids)} tokens exceed the context of {self.n_ctx}")
        with self._lock:
            self._cached = []
            out = self.model.forward(np.asarray(ids, np.int32), 0, "all")
            self._cached = list(ids)
            return out

    def perplexity(self, text: str, ctx: int = 512, details: bool = False, chunks: int | None = None):
        """Perplexity of `text` as llama.cpp's perplexity tool measures it: the tokens in chunks of
        `ctx` (each starting with BOS when the vocabulary adds one), scored on the second half of
        each chunk. chunks: score only the first this many chunks (None: all)."""
        if chunks is not None and (isinstance(chunks, bool) or not isinstance(chunks, (int, np.integer))
                                   or chunks < 1):
            raise ValueError(f"chunks must be a positive int or None, got {chunks!r}")
        if isinstance(ctx, bool) or not isinstance(ctx, (int, np.integer)) or ctx < 4:
            raise ValueError(f"ctx must be an int >= 4, got {ctx!r}")
        if ctx > self.n_ctx:
            raise ValueError(f"ctx {ctx} exceeds the model context {self.n_ctx} this LLM was built with")
        ids = self.tokenize(text, add_special=True)
        n_chunks = len(ids) // ctx
        if chunks is not None:
            n_chunks = min(n_chunks, int(chunks))
        if n_chunks == 0:
            raise ValueError(f"text too short: {len(ids)} tokens, perplexity needs at least ctx={ctx}")
        bos = self.tokenizer.bos_id if self.tokenizer.add_bos else None
        nll, count = 0.0, 0
        first = ctx // 2
        for c in range(n_chunks):
            chunk = ids[c * ctx:(c + 1) * ctx]
            if bos is not None:
                chunk[0] = bos
            lg = self.eval(chunk)
            nll += float(token_nll(lg[first:ctx - 1], chunk[first + 1:ctx]).sum())
            count += ctx - 1 - first
        ppl = math.exp(nll / count)
        if details:
            return {"perplexity": ppl, "nll": nll / count, "tokens_scored": count, "chunks": n_chunks, "ctx": ctx}
        return ppl


def token_nll(logits: np.ndarray, targets) -> np.ndarray:
    """-log softmax(logits)[target] per row, in float64."""
    lg = logits.astype(np.float64)
    m = lg.max(axis=1, keepdims=True)
    lse = np.log(np.exp(lg - m).sum(axis=1)) + m[:, 0]
    return lse - lg[np.arange(len(lg)), np.asarray(targets)]
