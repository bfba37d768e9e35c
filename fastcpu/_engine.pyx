# cython: language_level=3, boundscheck=False, wraparound=False
"""Binding of the C model runner (csrc/model/llama.c). Everything the C layer trusts is checked here:
array shapes, formats with kernels, token ids and positions. The Python side (fastcpu.model) owns
the file mapping; this object keeps a reference to every array it hands to C."""
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset

import numpy as np

cdef extern from "fastcpu/fastcpu.h" nogil:
    size_t fc_row_bytes(int qtype, int64_t cols)
    int fc_qtype_supported(int qtype)
    const char *fc_qtype_name(int qtype)
    int fc_default_threads()

cdef extern from "fc_internal.h" nogil:
    ctypedef struct fc_qkernel:
        void (*dequantize)(const void *src, float *dst, int64_t n)
    ctypedef struct fc_table:
        fc_qkernel q[31]
    const fc_table *fc_tab()

cdef extern from "model/llama.h" nogil:
    ctypedef struct fc_llama_tensor:
        int qtype
        const void *data
    ctypedef struct fc_llama_layer_src:
        const float *attn_norm
        fc_llama_tensor wq, wk, wv
        const float *bq
        const float *bk
        const float *bv
        fc_llama_tensor wo
        const float *ffn_norm
        fc_llama_tensor w_gate, w_up, w_down
    ctypedef struct fc_llama_config:
        int n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, hidden, n_ctx, max_batch
        int rope_neox, threads
        float rms_eps, attn_scale
    ctypedef struct fc_llama:
        pass
    int FC_LOGITS_NONE, FC_LOGITS_LAST, FC_LOGITS_ALL
    fc_llama *fc_llama_create(const fc_llama_config *cfg, fc_llama_tensor token_embd,
                              const float *output_norm, fc_llama_tensor output,
                              const fc_llama_layer_src *layers, const float *inv_freq,
                              char *err, size_t err_len)
    void fc_llama_free(fc_llama *m)
    int fc_llama_forward(fc_llama *m, const int32_t *tokens, int n_tokens, int pos, float *logits,
                         int logits_mode)
    size_t fc_llama_weight_bytes(const fc_llama *m)
    size_t fc_llama_alloc_bytes(const fc_llama *m)
    void fc_llama_set_threads(fc_llama *m, int threads)
    int fc_llama_threads(const fc_llama *m)

MAX_THREADS = 256


class EngineError(ValueError):
    """Bad input to the model runner (token ids, positions, shapes)."""


def _qname(int q):
    cdef const char *s = fc_qtype_name(q)
    return s.decode() if s != NULL else f"type {q}"


cdef class Engine:
    """The model runner: config (dict), weights as prepared by fastcpu.model.

    Matrices are (qtype, uint8 array (rows, row_bytes)); vectors float32 1-D arrays. `layers` is a
    list of dicts with keys attn_norm, wq, wk, wv, bq, bk, bv (None when absent), wo, ffn_norm,
    w_gate, w_up, w_down. output=None means tied embeddings."""
    cdef fc_llama *m
    cdef list keep
    cdef readonly int n_vocab, n_ctx, dim, n_layers, max_batch
    cdef readonly int n_past  # positions 0..n_past-1 of the cache hold keys/values
    cdef bint busy
    cdef readonly size_t weight_bytes, alloc_bytes

    def __cinit__(self, dict config, tuple token_embd, output_norm, output, list layers, inv_freq):
        self.m = NULL
        self.keep = []
        self.n_past = 0
        self.busy = False
        cdef fc_llama_config c
        memset(&c, 0, sizeof(c))
        for key in ("n_vocab", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "hidden", "n_ctx",
                    "max_batch", "threads"):
            v = config.get(key)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"config[{key!r}] must be an int, got {v!r}")
        c.n_vocab = config["n_vocab"]
        c.dim = config["dim"]
        c.n_layers = config["n_layers"]
        c.n_heads = config["n_heads"]
        c.n_kv_heads = config["n_kv_heads"]
        c.head_dim = config["head_dim"]
        c.hidden = config["hidden"]
        c.n_ctx = config["n_ctx"]
        c.max_batch = config["max_batch"]
        c.threads = config["threads"]
        c.rope_neox = 1 if config.get("rope_neox") else 0
        c.rms_eps = float(config["rms_eps"])
        c.attn_scale = float(config.get("attn_scale", c.head_dim ** -0.5))
        for name, v in (("n_vocab", c.n_vocab), ("dim", c.dim), ("n_layers", c.n_layers), ("n_heads", c.n_heads),
                        ("n_kv_heads", c.n_kv_heads), ("head_dim", c.head_dim), ("hidden", c.hidden),
                        ("n_ctx", c.n_ctx), ("max_batch", c.max_batch)):
            if v <= 0:
                raise EngineError(f"{name} must be positive, got {v}")
        if c.head_dim % 2:
            raise EngineError(f"head_dim must be even for rope, got {c.head_dim}")
        if c.n_heads % c.n_kv_heads:
            raise EngineError(f"n_heads ({c.n_heads}) must be a multiple of n_kv_heads ({c.n_kv_heads})")
        if c.threads < 0 or c.threads > MAX_THREADS:
            raise EngineError(f"threads must be between 1 and {MAX_THREADS} (0: default), got {c.threads}")
        if not (c.rms_eps > 0):
            raise EngineError(f"rms_eps must be positive, got {c.rms_eps}")
        if c.n_ctx > (1 << 24):
            raise EngineError(f"n_ctx {c.n_ctx} is too large")
        if len(layers) != c.n_layers:
            raise EngineError(f"{len(layers)} layers given, config says {c.n_layers}")
        q_dim = c.n_heads * c.head_dim
        kv_dim = c.n_kv_heads * c.head_dim

        cdef fc_llama_layer_src *src = <fc_llama_layer_src *>malloc(sizeof(fc_llama_layer_src) * c.n_layers)
        if src == NULL:
            raise MemoryError()
        memset(src, 0, sizeof(fc_llama_layer_src) * c.n_layers)
        cdef fc_llama_tensor emb, outw
        cdef const float *onorm
        cdef const float *inv
        cdef char err[256]
        err[0] = 0
        try:
            emb = self._matrix("token_embd", token_embd, c.n_vocab, c.dim, need_gemm=output is None)
            if fc_tab().q[emb.qtype].dequantize == NULL:
                raise EngineError(f"token_embd: no dequantizer for {_qname(emb.qtype)}")
            onorm = self._vector("output_norm", output_norm, c.dim)
            if output is None:
                outw.qtype = emb.qtype
                outw.data = NULL
            else:
                outw = self._matrix("output", output, c.n_vocab, c.dim)
            inv = self._vector("inv_freq", inv_freq, c.head_dim // 2)
            for i, d in enumerate(layers):
                p = f"blk.{i}."
                src[i].attn_norm = self._vector(p + "attn_norm", d["attn_norm"], c.dim)
                src[i].ffn_norm = self._vector(p + "ffn_norm", d["ffn_norm"], c.dim)
                src[i].wq = self._matrix(p + "attn_q", d["wq"], q_dim, c.dim)
                src[i].wk = self._matrix(p + "attn_k", d["wk"], kv_dim, c.dim)
                src[i].wv = self._matrix(p + "attn_v", d["wv"], kv_dim, c.dim)
                src[i].wo = self._matrix(p + "attn_output", d["wo"], c.dim, q_dim)
                src[i].w_gate = self._matrix(p + "ffn_gate", d["w_gate"], c.hidden, c.dim)
                src[i].w_up = self._matrix(p + "ffn_up", d["w_up"], c.hidden, c.dim)
                src[i].w_down = self._matrix(p + "ffn_down", d["w_down"], c.dim, c.hidden)
                src[i].bq = self._vector(p + "attn_q.bias", d.get("bq"), q_dim, optional=True)
                src[i].bk = self._vector(p + "attn_k.bias", d.get("bk"), kv_dim, optional=True)
                src[i].bv = self._vector(p + "attn_v.bias", d.get("bv"), kv_dim, optional=True)
            with nogil:
                self.m = fc_llama_create(&c, emb, onorm, outw, src, inv, err, sizeof(err))
        finally:
            free(src)
        if self.m == NULL:
            raise MemoryError(err.decode() or "could not build the model")
        self.n_vocab = c.n_vocab
        self.n_ctx = c.n_ctx
        self.dim = c.dim
        self.n_layers = c.n_layers
        self.max_batch = c.max_batch
        self.weight_bytes = fc_llama_weight_bytes(self.m)
        self.alloc_bytes = fc_llama_alloc_bytes(self.m)

    cdef fc_llama_tensor _matrix(self, str name, object t, int64_t rows, int64_t cols, bint need_gemm=True) except *:
        cdef fc_llama_tensor r
        if not isinstance(t, tuple) or len(t) != 2:
            raise TypeError(f"{name}: expected (qtype, array)")
        q, a = t
        if not isinstance(q, int) or fc_qtype_name(q) == NULL:
            raise EngineError(f"{name}: unknown format {q!r}")
        if need_gemm and not fc_qtype_supported(q):
            raise EngineError(f"{name}: no matmul kernel for {_qname(q)} on this build/CPU")
        rb = fc_row_bytes(q, cols)
        if rb == 0:
            raise EngineError(f"{name}: {cols} columns is not a whole number of {_qname(q)} blocks")
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 2:
            raise TypeError(f"{name}: expected a 2-D uint8 array of GGUF rows")
        if a.shape[0] != rows or a.shape[1] != rb:
            raise EngineError(f"{name}: array shape {a.shape}, expected ({rows}, {rb}) for {rows}x{cols} {_qname(q)}")
        if not a.flags.c_contiguous:
            raise EngineError(f"{name}: array must be C-contiguous")
        cdef const uint8_t[:, ::1] v = a
        self.keep.append(a)
        r.qtype = q
        r.data = &v[0, 0]
        return r

    cdef const float *_vector(self, str name, object a, int64_t n, bint optional=False) except? NULL:
        if a is None:
            if optional:
                return NULL
            raise EngineError(f"{name}: missing")
        if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != 1 or not a.flags.c_contiguous:
            raise TypeError(f"{name}: expected a contiguous 1-D float32 array")
        if a.shape[0] != n:
            raise EngineError(f"{name}: length {a.shape[0]}, expected {n}")
        cdef const float[::1] v = a
        self.keep.append(a)
        return &v[0]

    def __dealloc__(self):
        if self.m != NULL:
            fc_llama_free(self.m)
            self.m = NULL

    @property
    def threads(self):
        return fc_llama_threads(self.m)

    def set_threads(self, int threads):
        """Threads per step (0: default), at most the count the engine was built with."""
        if threads < 0 or threads > MAX_THREADS:
            raise EngineError(f"threads must be between 1 and {MAX_THREADS}, got {threads}")
        if self.busy:
            raise RuntimeError("this model is running a step in another thread")
        fc_llama_set_threads(self.m, threads)

    def reset(self):
        """Forgets the cache: the next step starts at position 0."""
        self.n_past = 0

    def truncate(self, int n):
        """Keeps positions 0..n-1 of the cache (the next step may start at any position <= n)."""
        if n < 0:
            raise EngineError(f"cannot truncate the cache to {n} positions")
        if n < self.n_past:
            self.n_past = n

    def forward(self, tokens, int pos, str logits="last", out=None):
        """Runs `tokens` at positions pos.. and returns float32 logits: (n_vocab,) for logits='last',
        (n, n_vocab) for 'all', None for 'none'. pos <= n_past: the cache must hold every position
        before pos; positions from pos on are overwritten and n_past becomes pos + len(tokens)."""
        arr = np.asarray(tokens)
        if arr.ndim != 1:
            raise EngineError(f"tokens must be a 1-D sequence of ids, got shape {arr.shape}")
        if arr.size == 0:
            raise EngineError("no tokens to run")
        if arr.dtype.kind not in "iu":
            raise TypeError(f"token ids must be integers, got {arr.dtype}")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= self.n_vocab:
            bad = lo if lo < 0 else hi
            raise EngineError(f"token id {bad} out of range: the vocabulary has {self.n_vocab} tokens")
        cdef int n = arr.shape[0]
        if pos < 0:
            raise EngineError(f"position must be >= 0, got {pos}")
        if pos + n > self.n_ctx:
            raise EngineError(f"prompt too long: {pos + n} tokens exceed the context of {self.n_ctx} "
                              f"(positions 0..{self.n_ctx - 1}); pass a larger ctx")
        if pos > self.n_past:
            raise EngineError(f"position {pos} is past the cache, which holds {self.n_past} positions")
        cdef int mode
        if logits == "last":
            mode = FC_LOGITS_LAST
            shape = (self.n_vocab,)
        elif logits == "all":
            mode = FC_LOGITS_ALL
            shape = (n, self.n_vocab)
        elif logits == "none":
            mode = FC_LOGITS_NONE
            shape = None
        else:
            raise EngineError(f"logits must be 'last', 'all' or 'none', got {logits!r}")
        cdef const int32_t[::1] tv = np.ascontiguousarray(arr, dtype=np.int32)
        cdef float[::1] lv
        cdef float *lp = NULL
        res = None
        if shape is not None:
            if out is None:
                res = np.empty(shape, np.float32)
            else:
                res = out
                if not isinstance(res, np.ndarray) or res.dtype != np.float32 or res.shape != shape \
                        or not res.flags.c_contiguous or not res.flags.writeable:
                    raise EngineError(f"out must be a writeable C-contiguous float32 array of shape {shape}")
            lv = res.reshape(-1)
            lp = &lv[0]
        cdef int rc
        if self.busy:
            raise RuntimeError("this model is already running a step in another thread")
        self.busy = True
        # the cache from pos on is about to change: if the step fails half-way it holds only pos
        self.n_past = pos
        try:
            with nogil:
                rc = fc_llama_forward(self.m, &tv[0], n, pos, lp, mode)
        finally:
            self.busy = False
        if rc == 0:
            self.n_past = pos + n
        if rc != 0:
            raise MemoryError("the forward pass could not allocate its GEMM work buffer")
        return res
