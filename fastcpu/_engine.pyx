# cython: language_level=3, boundscheck=False, wraparound=False
"""Binding of the C model runner (csrc/model/llama.c). Everything the C layer trusts is checked here:
array shapes, formats with kernels, token ids and positions. The Python side (fastcpu.model) owns
the file mapping; this object keeps a reference to every array it hands to C."""
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from libc.errno cimport errno, EINTR
from posix.unistd cimport pread, close, dup

import numpy as np

cdef extern from "fastcpu/fastcpu.h" nogil:
    size_t fc_row_bytes(int qtype, int64_t cols)
    int fc_qtype_supported(int qtype)
    const char *fc_qtype_name(int qtype)
    int fc_default_threads()

cdef extern from "fc_internal.h" nogil:
    ctypedef struct fc_qkernel:
        void (*dequantize)(const void *src, float *dst, int64_t n) noexcept nogil
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
        int src_mapped
        int kv_f16
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
    ctypedef struct fc_llama_source:
        int (*fetch)(void *ctx, int group, const void **ptrs) noexcept nogil
        int (*embd_row)(void *ctx, int32_t token, float *dst, int64_t dim) noexcept nogil
        void *ctx
    fc_llama *fc_llama_create_src(const fc_llama_config *cfg, fc_llama_tensor token_embd,
                                  const float *output_norm, fc_llama_tensor output,
                                  const fc_llama_layer_src *layers, const float *inv_freq,
                                  const fc_llama_source *src, char *err, size_t err_len)
    int fc_llama_forward_rows(fc_llama *m, const int32_t *tokens, int n, const int32_t *pos, const int32_t *seq,
                              int seq_ctx, const uint8_t *want, float *logits)
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
    cdef readonly object stream
    cdef readonly int n_vocab, n_ctx, dim, n_layers, max_batch
    cdef readonly int n_past  # positions 0..n_past-1 of the cache hold keys/values
    cdef bint busy
    cdef readonly size_t weight_bytes, alloc_bytes
    cdef embd_reader *er

    def __cinit__(self, dict config, tuple token_embd, output_norm, output, list layers, inv_freq, stream=None):
        self.m = NULL
        self.er = NULL
        self.keep = []
        self.n_past = 0
        self.busy = False
        self.stream = None
        cdef fc_llama_source srcfn
        cdef Stream st = None
        if stream is not None:
            if not isinstance(stream, Stream):
                raise TypeError("stream must be a fastcpu._engine.Stream")
            st = stream
            self.stream = stream
            srcfn.fetch = _stream_fetch
            srcfn.embd_row = _stream_embd_row
            srcfn.ctx = <void *>st.s
        # config["embd_file"] = (fd, offset): token_embd's rows are also at offset in the open file fd
        # (a duplicate is kept); lookups pread them (see embd_reader) instead of reading the array.
        ef = config.get("embd_file") if stream is None else None
        cdef size_t erb
        if ef is not None:
            fd, off = ef
            q = token_embd[0] if isinstance(token_embd, tuple) and len(token_embd) == 2 else None
            erb = fc_row_bytes(q, config["dim"]) if isinstance(q, int) and fc_qtype_name(q) != NULL else 0
            if erb == 0 or off < 0:
                raise EngineError("embd_file: bad token_embd format or offset")
            self.er = <embd_reader *>malloc(sizeof(embd_reader))
            if self.er == NULL:
                raise MemoryError()
            memset(self.er, 0, sizeof(embd_reader))
            self.er.fd = -1
            self.er.buf = <uint8_t *>malloc(erb)
            if self.er.buf == NULL:
                raise MemoryError()
            self.er.fd = dup(fd)
            if self.er.fd < 0:
                raise OSError(errno, "embd_file: cannot duplicate the file descriptor")
            self.er.qtype = q
            if fc_tab().q[<int>q].dequantize == NULL:
                raise EngineError(f"token_embd: no dequantizer for {_qname(q)}")
            self.er.deq = fc_tab().q[<int>q].dequantize
            self.er.off = off
            self.er.row_bytes = erb
            srcfn.fetch = NULL
            srcfn.embd_row = _pread_embd_row
            srcfn.ctx = <void *>self.er
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
        c.src_mapped = 1 if config.get("src_mapped") and stream is None else 0
        c.rms_eps = float(config["rms_eps"])
        kv_type = config.get("kv_type", "f32")
        if kv_type not in ("f32", "f16"):
            raise EngineError(f"kv_type must be 'f32' or 'f16', got {kv_type!r}")
        c.kv_f16 = 1 if kv_type == "f16" else 0
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
            if st is None and self.er == NULL:
                with nogil:
                    self.m = fc_llama_create(&c, emb, onorm, outw, src, inv, err, sizeof(err))
            else:
                with nogil:
                    self.m = fc_llama_create_src(&c, emb, onorm, outw, src, inv, &srcfn, err, sizeof(err))
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
        if self.er != NULL:
            if self.er.fd >= 0:
                close(self.er.fd)
            free(self.er.buf)
            free(self.er)
            self.er = NULL

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
        self._check_rc(rc)
        return res

    def _check_rc(self, int rc):
        if rc == -2 and self.stream is not None:
            self.stream.raise_error()
        if rc == -3 and self.er != NULL:
            import os
            e = self.er.err_no
            raise OSError(e, "could not read a token embedding row from the model file: "
                          + (os.strerror(e) if e else "the file is shorter than when it was loaded"))
        if rc != 0:
            raise MemoryError("the forward pass could not allocate its GEMM work buffer")

    def forward_rows(self, tokens, pos, seq, int seq_ctx, want=None):
        """Independent rows: token i at position pos[i] of sequence seq[i], whose cache holds
        positions seq*seq_ctx .. +seq_ctx-1. Returns float32 logits (rows wanted, n_vocab): every
        row, or those where the boolean array `want` is set."""
        tv_a = np.ascontiguousarray(tokens, dtype=np.int64)
        pv_a = np.ascontiguousarray(pos, dtype=np.int64)
        sv_a = np.ascontiguousarray(seq, dtype=np.int64)
        if tv_a.ndim != 1 or tv_a.size == 0 or pv_a.shape != tv_a.shape or sv_a.shape != tv_a.shape:
            raise EngineError("tokens, pos and seq must be non-empty 1-D sequences of one length")
        if tv_a.min() < 0 or tv_a.max() >= self.n_vocab:
            raise EngineError(f"token id out of range: the vocabulary has {self.n_vocab} tokens")
        if seq_ctx < 1:
            raise EngineError(f"seq_ctx must be positive, got {seq_ctx}")
        if pv_a.min() < 0 or pv_a.max() >= seq_ctx:
            raise EngineError(f"positions must be in 0..{seq_ctx - 1}")
        if sv_a.min() < 0 or (sv_a.max() + 1) * seq_ctx > self.n_ctx:
            raise EngineError(f"sequence {int(sv_a.max())} with {seq_ctx} positions each exceeds the cache "
                              f"of {self.n_ctx} positions")
        cdef const int32_t[::1] tv = tv_a.astype(np.int32)
        cdef const int32_t[::1] pv = pv_a.astype(np.int32)
        cdef const int32_t[::1] sv = sv_a.astype(np.int32)
        cdef int n = tv_a.shape[0]
        cdef const uint8_t[::1] wv
        cdef const uint8_t *wp = NULL
        n_out = n
        if want is not None:
            w_a = np.ascontiguousarray(want, dtype=bool)
            if w_a.shape != tv_a.shape:
                raise EngineError("want must have one flag per row")
            n_out = int(w_a.sum())
            wv = w_a.view(np.uint8)
            wp = &wv[0]
        res = np.empty((max(n_out, 1), self.n_vocab), np.float32)
        cdef float[:, ::1] lv = res
        cdef int rc
        if self.busy:
            raise RuntimeError("this model is already running a step in another thread")
        self.busy = True
        self.n_past = 0  # the rows write regions of the cache: the single-sequence cache is gone
        try:
            with nogil:
                rc = fc_llama_forward_rows(self.m, &tv[0], n, &pv[0], &sv[0], seq_ctx, wp, &lv[0, 0])
        finally:
            self.busy = False
        self._check_rc(rc)
        return res[:n_out]


# ---- weight streaming (csrc/model/stream.c) ----
from libc.stdint cimport uint64_t

cdef extern from "model/stream.h" nogil:
    int FC_STREAM_MAX_PER_GROUP
    ctypedef struct fc_stream_tensor:
        uint64_t off, bytes
        int pinned
    ctypedef struct fc_stream_config:
        const char *path
        int n_groups, per_group
        const fc_stream_tensor *t
        uint64_t embd_off
        size_t embd_row_bytes
        int embd_qtype, embd_alias, depth, readers, direct
        size_t chunk
    ctypedef struct fc_stream:
        pass
    fc_stream *fc_stream_open(const fc_stream_config *cfg, char *err, size_t err_len, int *err_no)
    void fc_stream_close(fc_stream *s)
    int fc_stream_fetch(fc_stream *s, int g, const void **ptrs)
    int fc_stream_embd_row(fc_stream *s, int32_t token, float *dst, int64_t dim)
    const char *fc_stream_error(const fc_stream *s, int *err_no, int *changed)
    size_t fc_stream_pinned_bytes(const fc_stream *s)
    size_t fc_stream_ring_bytes(const fc_stream *s)
    void fc_stream_counters(const fc_stream *s, uint64_t *bytes_read, double *wait_s, uint64_t *passes)
    void fc_stream_reset_counters(fc_stream *s)
    void fc_stream_inject_error(fc_stream *s, int err_no)
    size_t fc_stream_group_slot_bytes(const fc_stream_tensor *t, int n, int direct)
    double fc_stream_read_bandwidth(const char *path, uint64_t off, uint64_t nbytes, int readers, int direct,
                                    size_t chunk)

cdef int _stream_fetch(void *ctx, int g, const void **ptrs) noexcept nogil:
    return fc_stream_fetch(<fc_stream *>ctx, g, ptrs)


cdef int _stream_embd_row(void *ctx, int32_t token, float *dst, int64_t dim) noexcept nogil:
    return fc_stream_embd_row(<fc_stream *>ctx, token, dst, dim)


# Embedding rows read with pread() from the model file instead of through its memory mapping: a
# lookup through the mapping faults in the whole fault-around window (16 pages) of every row it
# touches, so a prompt of a few hundred tokens pulled most of a 30 MB embedding into the resident
# set; pread copies the row's bytes only. Same bytes, same dequantizer: bit-identical rows.
cdef struct embd_reader:
    int fd
    int qtype
    int err_no
    int64_t off
    size_t row_bytes
    uint8_t *buf
    void (*deq)(const void *src, float *dst, int64_t n) noexcept nogil


cdef int _pread_embd_row(void *ctx, int32_t token, float *dst, int64_t dim) noexcept nogil:
    cdef embd_reader *r = <embd_reader *>ctx
    cdef size_t got = 0
    cdef ssize_t k
    cdef int64_t off = r.off + <int64_t>token * <int64_t>r.row_bytes
    while got < r.row_bytes:
        k = pread(r.fd, r.buf + got, r.row_bytes - got, off + <int64_t>got)
        if k < 0:
            if errno == EINTR:
                continue
            r.err_no = errno
            return -3
        if k == 0:  # the file shrank under us
            r.err_no = 0
            return -3
        got += <size_t>k
    r.deq(r.buf, dst, dim)
    return 0


def _raise_stream(str msg, int err_no, bint changed, str path):
    from .stream import ModelFileChangedError, StreamError
    if changed:
        raise ModelFileChangedError(msg)
    if err_no:
        raise StreamError(err_no, msg, path)
    raise StreamError(msg)


def group_slot_bytes(list tensors, bint direct):
    """Ring-slot bytes a group of (off, bytes, pinned) tensors needs."""
    cdef fc_stream_tensor t[8]
    if len(tensors) > FC_STREAM_MAX_PER_GROUP:
        raise EngineError("too many tensors in a group")
    for i, (off, nb, pin) in enumerate(tensors):
        t[i].off = off
        t[i].bytes = nb
        t[i].pinned = 1 if pin else 0
    return fc_stream_group_slot_bytes(t, len(tensors), direct)


def read_bandwidth(str path, uint64_t off, uint64_t nbytes, int readers, bint direct, size_t chunk):
    """Bytes/s reading nbytes of path from off with the streamer's read method."""
    b = path.encode()
    cdef const char *p = b
    cdef double r
    with nogil:
        r = fc_stream_read_bandwidth(p, off, nbytes, readers, direct, chunk)
    if r < 0:
        import os
        raise OSError(int(-r), f"reading {path}: {os.strerror(int(-r))}", path)
    return r


cdef class Stream:
    """Pinned tensors read once, the rest read per pass (see csrc/model/stream.h).

    groups: list of lists of (file offset, bytes, pinned) per group, run in order every pass;
    embd: (offset, row bytes, qtype, alias) with alias the flat index group*per_group+i of a
    pinned tensor holding the embedding, or -1 to read rows from the file."""
    cdef fc_stream *s
    cdef readonly str path
    cdef readonly int per_group, n_groups

    def __cinit__(self, str path, list groups, tuple embd, int depth, int readers, bint direct, size_t chunk):
        self.s = NULL
        self.path = path
        cdef int P = max(len(g) for g in groups)
        if P > FC_STREAM_MAX_PER_GROUP:
            raise EngineError("too many tensors in a group")
        cdef int G = len(groups)
        cdef fc_stream_tensor *t = <fc_stream_tensor *>malloc(sizeof(fc_stream_tensor) * G * P)
        if t == NULL:
            raise MemoryError()
        memset(t, 0, sizeof(fc_stream_tensor) * G * P)
        for gi, g in enumerate(groups):
            for i, (off, nb, pin) in enumerate(g):
                t[gi * P + i].off = off
                t[gi * P + i].bytes = nb
                t[gi * P + i].pinned = 1 if pin else 0
        b = path.encode()
        cdef fc_stream_config c
        memset(&c, 0, sizeof(c))
        c.path = b
        c.n_groups = G
        c.per_group = P
        c.t = t
        c.embd_off, c.embd_row_bytes, c.embd_qtype, c.embd_alias = embd
        c.depth = depth
        c.readers = readers
        c.direct = direct
        c.chunk = chunk
        cdef char err[512]
        cdef int err_no = 0
        err[0] = 0
        with nogil:
            self.s = fc_stream_open(&c, err, sizeof(err), &err_no)
        free(t)
        self.per_group = P
        self.n_groups = G
        if self.s == NULL:
            msg = err.decode(errors="replace")
            if err_no == 12:
                raise MemoryError(msg)
            if err_no:
                raise OSError(err_no, msg, path)
            from .gguf import ModelFormatError
            raise ModelFormatError(msg)

    def __dealloc__(self):
        if self.s != NULL:
            fc_stream_close(self.s)
            self.s = NULL

    @property
    def pinned_bytes(self):
        return fc_stream_pinned_bytes(self.s)

    @property
    def ring_bytes(self):
        return fc_stream_ring_bytes(self.s)

    def counters(self):
        """(bytes read by streaming, seconds fetches waited for reads, passes) since the last reset."""
        cdef uint64_t nb, passes
        cdef double w
        fc_stream_counters(self.s, &nb, &w, &passes)
        return int(nb), float(w), int(passes)

    def reset_counters(self):
        fc_stream_reset_counters(self.s)

    def _inject_error(self, int err_no):
        """Tests: the next streamed read fails with err_no."""
        fc_stream_inject_error(self.s, err_no)

    def raise_error(self):
        cdef int err_no = 0, changed = 0
        cdef const char *m = fc_stream_error(self.s, &err_no, &changed)
        if m == NULL:
            return
        _raise_stream(m.decode(errors="replace"), err_no, changed, self.path)


cdef extern from "model/vocab.h" nogil:
    ctypedef struct fc_vocab:
        pass
    fc_vocab *fc_vocab_new()
    void fc_vocab_free(fc_vocab *v)
    int64_t fc_vocab_add(fc_vocab *v, const char *s, size_t len)
    int64_t fc_vocab_find(const fc_vocab *v, const char *s, size_t len)
    int64_t fc_vocab_count(const fc_vocab *v)
    const char *fc_vocab_text(const fc_vocab *v, int64_t id, size_t *len)
    void fc_vocab_set_n_vocab(fc_vocab *v, int64_t n_vocab)
    int fc_vocab_add_merge(fc_vocab *v, const char *m, size_t len, int32_t rank)
    int64_t fc_vocab_merge_count(const fc_vocab *v)
    void fc_vocab_set_bytes(fc_vocab *v, const int32_t *byte_sym, const int32_t *ascii_id)
    int fc_vocab_set_spm(fc_vocab *v, const double *scores, const int32_t *byte_id)
    int64_t fc_vocab_bpe(const fc_vocab *v, const uint8_t *word, size_t len, int32_t *out)
    int64_t fc_vocab_spm(const fc_vocab *v, const uint8_t *text, size_t len, int32_t *out)
    size_t fc_vocab_bytes(const fc_vocab *v)
    void fc_vocab_shrink(fc_vocab *v)


cdef class Vocab:
    """Token strings (UTF-8 bytes) with ids and the BPE merge loops, in C memory (csrc/model/vocab.c).
    fastcpu.tokenizer builds it and checks what goes in; ids handed to text() must be < count."""
    cdef fc_vocab *v
    cdef readonly int64_t n_vocab
    cdef bint ready_bpe, ready_spm

    def __cinit__(self):
        self.v = fc_vocab_new()
        if self.v == NULL:
            raise MemoryError("tokenizer vocabulary")

    def __dealloc__(self):
        fc_vocab_free(self.v)

    def add(self, bytes s not None):
        """The new id of s, or -2 - id when s is already there."""
        cdef int64_t r = fc_vocab_add(self.v, <const char *>s, len(s))
        if r == -1:
            raise MemoryError("tokenizer vocabulary")
        return r

    def find(self, bytes s not None):
        """Id of s (a vocabulary id or one of the merges' own strings), -1 if absent."""
        return fc_vocab_find(self.v, <const char *>s, len(s))

    def find_token(self, bytes s not None):
        """Vocabulary id of s, or None."""
        cdef int64_t r = fc_vocab_find(self.v, <const char *>s, len(s))
        return r if 0 <= r < self.n_vocab else None

    def text(self, int64_t i):
        cdef size_t n
        if not 0 <= i < fc_vocab_count(self.v):
            raise IndexError(i)
        cdef const char *p = fc_vocab_text(self.v, i, &n)
        return p[:n]

    @property
    def count(self):
        return fc_vocab_count(self.v)

    @property
    def merge_count(self):
        return fc_vocab_merge_count(self.v)

    @property
    def nbytes(self):
        return fc_vocab_bytes(self.v)

    def set_n_vocab(self):
        """Every string added so far is a vocabulary entry; later ones (merges') are not."""
        self.n_vocab = fc_vocab_count(self.v)
        fc_vocab_set_n_vocab(self.v, self.n_vocab)

    def add_merge(self, bytes m not None, int32_t rank):
        if self.n_vocab == 0:
            raise RuntimeError("set_n_vocab() before the merges")
        if fc_vocab_add_merge(self.v, <const char *>m, len(m), rank):
            raise MemoryError("tokenizer merges")

    def set_bytes(self, byte_sym, ascii_id):
        cdef int32_t bs[256]
        cdef int32_t ai[128]
        cdef int i
        if len(byte_sym) != 256 or len(ascii_id) != 128:
            raise ValueError("256 byte symbols and 128 ASCII ids")
        for i in range(256):
            bs[i] = byte_sym[i]
            if not 0 <= bs[i] < fc_vocab_count(self.v):
                raise ValueError(f"byte {i}: symbol id {bs[i]} out of range")
        for i in range(128):
            ai[i] = ascii_id[i]
            if not -1 <= ai[i] < self.n_vocab:
                raise ValueError(f"ASCII {i}: id {ai[i]} out of range")
        fc_vocab_set_bytes(self.v, bs, ai)
        self.ready_bpe = True

    def set_spm(self, scores, byte_id):
        cdef const double[::1] sc = np.ascontiguousarray(scores, dtype=np.float64)
        cdef int32_t bi[256]
        cdef int i
        if sc.shape[0] != self.n_vocab or self.n_vocab == 0 or len(byte_id) != 256:
            raise ValueError("a score per vocabulary id and 256 byte ids")
        for i in range(256):
            bi[i] = byte_id[i]
            if not -1 <= bi[i] < self.n_vocab:
                raise ValueError(f"byte {i}: id {bi[i]} out of range")
        if fc_vocab_set_spm(self.v, &sc[0], bi):
            raise MemoryError("tokenizer scores")
        self.ready_spm = True

    def shrink(self):
        fc_vocab_shrink(self.v)

    def bpe(self, bytes word not None):
        """Ids of one pre-tokenized word (UTF-8) after byte-level BPE."""
        if not self.ready_bpe:
            raise RuntimeError("set_bytes() first")
        cdef Py_ssize_t n = len(word)
        cdef int32_t small[128]
        cdef int32_t *out = small
        cdef int64_t k
        cdef const uint8_t *w = <const uint8_t *><const char *>word
        if n > 128:
            out = <int32_t *>malloc(n * sizeof(int32_t))
            if out == NULL:
                raise MemoryError("tokenizer")
        try:
            with nogil:
                k = fc_vocab_bpe(self.v, w, n, out)
            if k < 0:
                raise MemoryError("tokenizer")
            return [out[i] for i in range(k)]
        finally:
            if out != small:
                free(out)

    def spm(self, bytes text not None):
        """Ids of a text (UTF-8, spaces as U+2581) after SentencePiece-style merges; a byte with no
        fallback token: LookupError(byte)."""
        if not self.ready_spm:
            raise RuntimeError("set_spm() first")
        cdef Py_ssize_t n = len(text)
        cdef int32_t *out = <int32_t *>malloc((n if n else 1) * sizeof(int32_t))
        cdef int64_t k
        cdef const uint8_t *t = <const uint8_t *><const char *>text
        if out == NULL:
            raise MemoryError("tokenizer")
        try:
            with nogil:
                k = fc_vocab_spm(self.v, t, n, out)
            if k == -1:
                raise MemoryError("tokenizer")
            if k < -1:
                raise LookupError(-2 - k)  # args[0]: the byte with no fallback token
            return [out[i] for i in range(k)]
        finally:
            free(out)
