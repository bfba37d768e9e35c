"""Beyond RAM: run a model larger than the memory it may use by streaming weights from the file.

    llm = fastcpu.LLM("big.gguf", ram_budget="4GiB")

A RAM budget bounds the weight bytes the engine keeps in memory of its own: pinned tensors
(read once at load) plus a ring of buffers the rest are read into every token (see
csrc/model/stream.c). Every matrix is read once per token, so whatever is pinned saves its bytes
on every token whichever tensor it is: the planner pins the output head and the norms first
(they must stay), then whole layers spread evenly over the pass (so that reads of the streamed
layers overlap the compute of the pinned ones), then single tensors while they fit, and streams the rest with pread (O_DIRECT by default), never through the mmap.

    budget >= min_budget = pinned head and norms + depth * (largest layer's streamed bytes)

A smaller budget is refused (BudgetError names the minimum); a budget that holds the whole model
runs the ordinary in-memory path.

Read settings (environment, or LLM(..., stream_options={...})):
    FASTCPU_STREAM_DIRECT  1: O_DIRECT (default), 0: buffered pread (pages dropped after use)
    FASTCPU_STREAM_READERS reader threads (default 4)
    FASTCPU_STREAM_DEPTH   ring buffers, >= 2 (default 3: two layers read ahead)
    FASTCPU_STREAM_CHUNK   bytes per read request (default 1 MiB, a multiple of 4096)
"""
from __future__ import annotations

import mmap
import os
import re
from dataclasses import dataclass, field

import numpy as np

PAGE = 4096
LAYER_TENSORS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
DEFAULTS = {"direct": True, "readers": 4, "depth": 3, "chunk": 1 << 20}


class StreamError(OSError):
    """Reading streamed weights failed (an I/O error: errno set when the OS gave one)."""


class ModelFileChangedError(StreamError):
    """The model file was truncated, modified, replaced or removed while weights streamed from it."""


class BudgetError(ValueError):
    """The RAM budget is too small for the minimum working set."""

    def __init__(self, msg: str, minimum: int):
        super().__init__(msg)
        self.minimum = minimum


_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024 ** 2, "mb": 1000 ** 2, "mib": 1024 ** 2,
          "g": 1024 ** 3, "gb": 1000 ** 3, "gib": 1024 ** 3, "t": 1024 ** 4, "tb": 1000 ** 4, "tib": 1024 ** 4}


def parse_size(value) -> int:
    """Bytes from an int or a string such as "4GiB", "512MiB", "1.5GB", "800M" (K/M/G alone:
    binary units; KB/MB/GB decimal; KiB/MiB/GiB binary)."""
    if isinstance(value, bool):
        raise TypeError("ram_budget must be a number of bytes or a size string, got a bool")
    if isinstance(value, (int, np.integer)):
        n = int(value)
    elif isinstance(value, float):
        if not np.isfinite(value):
            raise ValueError(f"ram_budget must be finite, got {value}")
        n = int(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"cannot read size {value!r}: use bytes or a number with a unit "
                             f"such as 512MiB, 1.5GB, 4GiB")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    else:
        raise TypeError(f"ram_budget must be an int (bytes) or a size string, got {type(value).__name__}")
    if n <= 0:
        raise ValueError(f"ram_budget must be positive, got {value!r}")
    return n


def fmt_size(n: int) -> str:
    for unit, f in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= f:
            return f"{n / f:.2f} {unit}"
    return f"{n} B"


def options(opts: dict | None = None) -> dict:
    """Read settings: defaults < environment < opts."""
    o = dict(DEFAULTS)
    env = {"direct": "FASTCPU_STREAM_DIRECT", "readers": "FASTCPU_STREAM_READERS",
           "depth": "FASTCPU_STREAM_DEPTH", "chunk": "FASTCPU_STREAM_CHUNK"}
    for k, var in env.items():
        v = os.environ.get(var)
        if v not in (None, ""):
            o[k] = v
    for k, v in (opts or {}).items():
        if k not in DEFAULTS:
            raise ValueError(f"unknown stream option {k!r}; options: {', '.join(DEFAULTS)}")
        o[k] = v
    if isinstance(o["direct"], str):
        o["direct"] = o["direct"].strip().lower() not in ("0", "false", "no", "off")
    o["direct"] = bool(o["direct"])
    try:
        o["readers"], o["depth"] = int(o["readers"]), int(o["depth"])
        o["chunk"] = parse_size(o["chunk"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad stream option: {e}") from None
    if not 1 <= o["readers"] <= 64:
        raise ValueError(f"stream readers must be in 1..64, got {o['readers']}")
    if not 2 <= o["depth"] <= 64:
        raise ValueError(f"stream depth must be in 2..64, got {o['depth']}")
    if o["chunk"] % PAGE or not PAGE <= o["chunk"] <= (1 << 30):
        raise ValueError(f"stream chunk must be a multiple of {PAGE} up to 1 GiB, got {o['chunk']}")
    return o


def _span(off: int, nbytes: int, direct: bool) -> int:
    """Bytes a tensor takes when read on its own (the aligned superset with O_DIRECT)."""
    if direct:
        return (-(-(off + nbytes) // PAGE) * PAGE) - (off // PAGE * PAGE)
    return -(-nbytes // PAGE) * PAGE


@dataclass
class StreamPlan:
    budget: int
    direct: bool
    depth: int
    groups: list                 # per group: [(name, off, nbytes, pinned)]
    fixed_bytes: int             # norms/biases copied out of the file
    pinned_bytes: int            # pinned tensors (aligned)
    ring_bytes: int              # depth x largest streamed slot
    minimum: int                 # the smallest budget that runs
    weight_bytes: int            # all matrices
    streamed_bytes: int          # matrix bytes read per pass
    pinned_names: list = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return self.fixed_bytes + self.pinned_bytes + self.ring_bytes


def plan(f, cfg, budget: int, opts: dict, fixed_bytes: int) -> StreamPlan | None:
    """Which tensors to pin under `budget` bytes; None when the whole model fits (no streaming)."""
    from . import _engine

    direct, depth = opts["direct"], opts["depth"]
    out_name = "token_embd.weight" if cfg.tied else "output.weight"
    layers = []
    for i in range(cfg.n_layers):
        g = []
        for t in LAYER_TENSORS:
            ti = f.tensors[f"blk.{i}.{t}.weight"]
            g.append([f"blk.{i}.{t}.weight", ti.offset, ti.nbytes, False])
        layers.append(g)
    out = f.tensors[out_name]
    head = [[out_name, out.offset, out.nbytes, True]]
    weight_bytes = sum(t[2] for g in layers for t in g) + out.nbytes
    if fixed_bytes + weight_bytes <= budget:
        return None

    def slot(g):
        return _engine.group_slot_bytes([(t[1], t[2], t[3]) for t in g], direct)

    head_bytes = _span(out.offset, out.nbytes, direct)
    full_slot = max(slot(g) for g in layers)
    minimum = fixed_bytes + head_bytes + depth * full_slot
    if budget < minimum:
        raise BudgetError(
            f"ram_budget {fmt_size(budget)} ({budget} bytes) is below the minimum working set of "
            f"{fmt_size(minimum)} ({minimum} bytes): output head {fmt_size(head_bytes)} + norms "
            f"{fmt_size(fixed_bytes)} + {depth} ring buffers of {fmt_size(full_slot)} (the largest layer); "
            f"the whole model needs {fmt_size(fixed_bytes + weight_bytes)}", minimum)
    free = budget - minimum
    # Whole layers first (what stays streamed is then whole layers: few, large reads), spread
    # evenly over the pass: the ring reads ahead only `depth - 1` streamed layers, so the disk
    # keeps busy while a pinned layer computes only when a streamed one comes soon after it (a
    # block of consecutive pinned layers would leave the disk idle for its whole length).
    need = [sum(_span(t[1], t[2], direct) for t in g) for g in layers]
    k = 0
    for n in sorted(need):
        if n > free - sum(sorted(need)[:k]):
            break
        k += 1
    L = len(layers)
    chosen = sorted({min(L - 1, int((i + 0.5) * L / k)) for i in range(k)}) if k else []
    for i in chosen:
        if need[i] <= free:
            for t in layers[i]:
                t[3] = True
            free -= need[i]
    for i in range(L):  # equal-size layers all fit by now; others take what is left
        if not layers[i][0][3] and need[i] <= free:
            for t in layers[i]:
                t[3] = True
            free -= need[i]
    # then single tensors of the streamed layers, largest first
    for g in layers:
        for t in sorted((t for t in g if not t[3]), key=lambda t: -t[2]):
            need = _span(t[1], t[2], direct)
            if need <= free:
                t[3] = True
                free -= need
    groups = layers + [head]
    streamed_slots = [slot(g) for g in layers]
    ring = depth * max(streamed_slots) if any(streamed_slots) else 0
    pinned = sum(_span(t[1], t[2], direct) for g in groups for t in g if t[3])
    return StreamPlan(budget=budget, direct=direct, depth=depth, groups=groups, fixed_bytes=fixed_bytes,
                      pinned_bytes=pinned, ring_bytes=ring, minimum=minimum, weight_bytes=weight_bytes,
                      streamed_bytes=sum(t[2] for g in groups for t in g if not t[3]),
                      pinned_names=[t[0] for g in groups for t in g if t[3]])


def open_stream(f, cfg, p: StreamPlan, opts: dict):
    """The C streamer for plan p (pinned tensors read now, the ring primed)."""
    from . import _engine
    from .kernels import row_bytes

    emb = f.tensors["token_embd.weight"]
    alias = -1
    P = len(LAYER_TENSORS)
    flat = [t for g in p.groups for t in (g + [None] * (P - len(g)))]
    for i, t in enumerate(flat):
        if t is not None and t[0] == "token_embd.weight" and t[3]:
            alias = i
    embd = (emb.offset, row_bytes(emb.qtype, cfg.dim), int(emb.qtype), alias)
    return _engine.Stream(f.path, [[(t[1], t[2], t[3]) for t in g] for g in p.groups], embd, opts["depth"],
                          opts["readers"], opts["direct"], opts["chunk"])


def disk_limit(path: str, nbytes: int | None = None, opts: dict | None = None, off: int = 0) -> float:
    """Bytes/s reading `path` sequentially with the streamer's read method (readers, chunk,
    O_DIRECT): the disk limit for the same method. Read a cold file for a true figure (buffered
    reads of cached pages measure memory)."""
    from . import _engine

    o = options(opts)
    size = os.path.getsize(path)
    if nbytes is None or nbytes > size - off:
        nbytes = size - off
    return _engine.read_bandwidth(os.fspath(path), off, nbytes, o["readers"], o["direct"], o["chunk"])


def setup(f, cfg, ram_budget, stream_options, layers: list, output_norm: np.ndarray):
    """Plans and opens streaming for Model: copies the norm/bias vectors out of the mapping (a
    truncated file must not fault under them), returns (stream or None, plan or None, output_norm).
    None: the whole model fits the budget and runs the in-memory path."""
    budget = parse_size(ram_budget)
    opts = options(stream_options)
    output_norm = np.array(output_norm, dtype=np.float32, copy=True)
    fixed = output_norm.nbytes
    for L in layers:
        for k, v in list(L.items()):
            if isinstance(v, np.ndarray):
                L[k] = np.array(v, dtype=np.float32, copy=True)
                fixed += L[k].nbytes
    p = plan(f, cfg, budget, opts, fixed)
    if p is None:  # the in-memory path reads every weight through the mapping: readahead back on
        mm = getattr(f, "_mm", None)
        if mm is not None and hasattr(mm, "madvise"):
            try:
                mm.madvise(mmap.MADV_NORMAL)
            except (OSError, ValueError):
                pass
        return None, None, output_norm
    s = open_stream(f, cfg, p, opts)
    release_mapping(f)
    return s, p, output_norm


def quiet_mapping(f) -> None:
    """No read-around on the file mapping: a fault on a norm vector would otherwise read the
    device's readahead window around it (read_ahead_kb, often megabytes) into the page cache,
    weights included, which a budget run must not do. Only the pages touched are read."""
    mm = getattr(f, "_mm", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        try:
            mm.madvise(mmap.MADV_RANDOM)
        except (OSError, ValueError):
            pass


def release_mapping(f) -> None:
    """Drops the pages the loader faulted in through the file mapping (header, metadata, the norm
    vectors now copied, with the kernel's fault-around) from this process: streaming never reads
    through the mapping, so they would only sit in RSS. They are clean file pages: touching them
    again just reads them back."""
    mm = getattr(f, "_mm", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass
