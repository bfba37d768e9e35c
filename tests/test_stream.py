"""Beyond RAM (fastcpu.stream): weights streamed from the file under a RAM budget give the same
logits as the resident model (same kernels, bitwise), the budget holds (the engine's own
accounting, and the file mapping stays untouched in a subprocess), a file changed or failing
under a running model raises, a too-small budget is refused naming the minimum, and batched
decoding gives each sequence the tokens it gets alone."""
import errno
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastcpu
from fastcpu import kernels, stream
from fastcpu.model import Model
from childproc import CHILD_CWD, child_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import make_model as mm  # noqa: E402

TOKS = np.array([1, 5, 7, 9, 11, 3, 2, 17, 40], np.int32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """4 layers, untied Q8_0 output (embedding rows read from the file)."""
    d = tmp_path_factory.mktemp("stream")
    return mm.make_model(str(d / "untied.gguf"), "tiny", format="Q4_0", tokenizer="none", vocab=320, seed=3,
                         layers=4)


@pytest.fixture(scope="module")
def tiny_tied(tmp_path_factory):
    """Tied Q4_1 model (the pinned output head serves the embedding)."""
    d = tmp_path_factory.mktemp("stream")
    return mm.make_model(str(d / "tied.gguf"), "tiny", format="Q4_1", tokenizer="none", vocab=256, seed=5,
                         layers=6, tied=True)


def _minimum(path, **opts):
    with pytest.raises(stream.BudgetError) as e:
        Model(path, ctx=64, ram_budget=1, stream_options=opts or None)
    return e.value.minimum


def _run(m):
    """Prefill logits of every row, then three decoded tokens' logits."""
    out = [m.forward(TOKS, 0, "all")]
    for i, t in enumerate((4, 8, 15)):
        out.append(m.forward(np.array([t], np.int32), len(TOKS) + i, "last"))
    return out


@pytest.fixture(scope="module", params=["Q4_K", "Q5_K"])
def tiny_kq(request, tmp_path_factory):
    """K-quant layers with a Q6_K embedding and output: the three formats of the K16 kernels."""
    d = tmp_path_factory.mktemp("stream")
    return mm.make_model(str(d / f"{request.param}.gguf"), "tiny", format=request.param, embed_format="Q6_K",
                         tokenizer="none", vocab=320, seed=7, layers=4)


@pytest.mark.parametrize("extra", [0, 150_000, 400_000])
def test_streamed_logits_equal_resident(isa, tiny, extra):
    _check_streamed(isa, tiny, extra)


def test_streamed_kquant_logits_equal_resident(isa, tiny_kq):
    _check_streamed(isa, tiny_kq, 150_000)


# The AMX levels run tiles on resident weights; weights read as stored (streamed) go to the kernels
# of the best level below, which the tiles were built over.
_BELOW_TILES = [i for i in ("avx512_bf16", "avx512_vnni", "avx512", "avx2", "scalar")
                if i in kernels.available_isas()][0]


def _check_streamed(isa, path, extra):
    """Streamed matrices are read as stored, and every level's kernel over stored rows computes the
    same bits as its packed twin (x16 and K16 at avx512_vnni): streamed == resident, bit for bit.
    At the AMX levels streamed matrices run the level below, so there the resident reference is
    that level's."""
    ref_isa = _BELOW_TILES if isa in ("amx", "amx_sim") else isa
    with kernels.use_isa(ref_isa):
        ref = _run(Model(path, ctx=64))
    lo = _minimum(path)
    m = Model(path, ctx=64, ram_budget=lo + extra)
    assert m.stream is not None and m.stream_plan.streamed_bytes > 0
    got = _run(m)
    for a, b in zip(ref, got):
        assert np.array_equal(a, b)
    nbytes, _, passes = m.stream.counters()
    assert passes >= 4 and nbytes >= 4 * m.stream_plan.streamed_bytes


@pytest.mark.parametrize("opts", [dict(direct=False, depth=2, readers=1, chunk=4096),
                                  dict(direct=True, depth=3, readers=3, chunk=8192)])
def test_streamed_tied_and_read_settings(tiny_tied, opts):
    ref = _run(Model(tiny_tied, ctx=64))
    lo = _minimum(tiny_tied, **opts)
    m = Model(tiny_tied, ctx=64, ram_budget=lo, stream_options=opts)
    assert "token_embd.weight" in m.stream_plan.pinned_names
    for a, b in zip(ref, _run(m)):
        assert np.array_equal(a, b)


def test_budget_accounting(tiny):
    total = os.path.getsize(tiny)
    lo = _minimum(tiny)
    for budget in (lo, lo + 100_000, lo + 333_333):
        m = Model(tiny, ctx=64, ram_budget=budget)
        p = m.stream_plan
        # what C allocated is what the plan counted, and it fits the budget
        assert m.stream.pinned_bytes == p.pinned_bytes
        assert m.stream.ring_bytes == p.ring_bytes
        assert p.total_bytes <= budget
        # the engine itself holds no weights: KV cache and activations only, no more than the
        # resident engine (which reads fused Q/K/V and gate/up in place, so it holds none either
        # unless a level repacks)
        assert m.engine.alloc_bytes <= Model(tiny, ctx=64).engine.alloc_bytes
        assert p.streamed_bytes + sum(Model(tiny, ctx=64).file.tensors[n].nbytes for n in p.pinned_names) \
            == p.weight_bytes
    # the whole model fits: the in-memory path, no streaming
    m = Model(tiny, ctx=64, ram_budget=2 * total)
    assert m.stream is None and m.stream_plan is None


def test_budget_too_small(tiny):
    lo = _minimum(tiny)
    with pytest.raises(stream.BudgetError, match=f"minimum working set .*{lo} bytes") as e:
        Model(tiny, ctx=64, ram_budget=lo - 1)
    assert e.value.minimum == lo
    with pytest.raises(ValueError, match="minimum"):
        fastcpu.LLM(tiny, ctx=64, ram_budget="1KiB") if False else Model(tiny, ctx=64, ram_budget="1KiB")
    Model(tiny, ctx=64, ram_budget=lo)  # exactly the minimum runs


def test_parse_size():
    assert stream.parse_size("4GiB") == 4 << 30
    assert stream.parse_size("512MiB") == 512 << 20
    assert stream.parse_size("1.5GB") == 1_500_000_000
    assert stream.parse_size(" 800 M ") == 800 << 20
    assert stream.parse_size(12345) == 12345
    assert stream.parse_size("100kb") == 100_000
    for bad in ("", "4 GiBs", "abc", "-1GB", "0"):
        with pytest.raises(ValueError):
            stream.parse_size(bad)
    for bad in (True, None, [1]):
        with pytest.raises(TypeError):
            stream.parse_size(bad)
    with pytest.raises(ValueError, match="depth"):
        stream.options({"depth": 1})
    with pytest.raises(ValueError, match="unknown stream option"):
        stream.options({"speed": 1})
    with pytest.raises(ValueError, match="multiple of 4096"):
        stream.options({"chunk": 1000})


def _copy(src, tmp_path):
    dst = str(tmp_path / "m.gguf")
    shutil.copyfile(src, dst)
    return dst


def _streamed(path):
    m = Model(path, ctx=64, ram_budget=_minimum(path))
    m.forward(TOKS, 0, "last")
    return m


def test_truncated_while_running(tiny, tmp_path):
    p = _copy(tiny, tmp_path)
    m = _streamed(p)
    os.truncate(p, os.path.getsize(p) // 2)
    with pytest.raises(stream.ModelFileChangedError, match="changed on disk"):
        for i in range(3):
            m.forward(np.array([4], np.int32), len(TOKS) + i, "last")
    # it stays failed: what was read may mix two files
    with pytest.raises(stream.ModelFileChangedError):
        m.forward(np.array([4], np.int32), 0, "last")


def test_modified_while_running(tiny, tmp_path):
    p = _copy(tiny, tmp_path)
    m = _streamed(p)
    with open(p, "r+b") as f:
        f.seek(os.path.getsize(p) - 100)
        f.write(b"\x00" * 10)
    with pytest.raises(stream.ModelFileChangedError, match="modified"):
        m.forward(np.array([4], np.int32), len(TOKS), "last")


def test_removed_while_running(tiny, tmp_path):
    p = _copy(tiny, tmp_path)
    m = _streamed(p)
    os.unlink(p)
    with pytest.raises(stream.ModelFileChangedError, match="removed"):
        m.forward(np.array([4], np.int32), len(TOKS), "last")


def test_io_error_surfaces(tiny, tmp_path):
    p = _copy(tiny, tmp_path)
    m = _streamed(p)
    m.stream._inject_error(errno.EIO)
    with pytest.raises(stream.StreamError) as e:
        for i in range(3):
            m.forward(np.array([4], np.int32), len(TOKS) + i, "last")
    assert e.value.errno == errno.EIO and not isinstance(e.value, stream.ModelFileChangedError)
    assert p in str(e.value)


def test_unreadable_file(tiny, tmp_path):
    from fastcpu import _engine

    with pytest.raises(OSError) as e:
        _engine.Stream(str(tmp_path / "missing.gguf"), [[(0, 4096, False)]], (0, 34, 8, -1), 2, 1, True, 4096)
    assert e.value.errno == errno.ENOENT
    with pytest.raises(OSError) as e:
        stream.disk_limit(str(tmp_path / "missing.gguf"))
    # a directory opens but cannot be read
    with pytest.raises(OSError) as e:
        _engine.read_bandwidth(str(tmp_path), 0, 4096, 1, False, 4096)
    assert e.value.errno == errno.EISDIR


RSS_SCRIPT = r"""
import json, sys, numpy as np
from fastcpu.model import Model
path, budget = sys.argv[1], int(sys.argv[2])
def smaps():
    rss, anon = 0, 0
    cur = None
    for line in open("/proc/self/smaps"):
        parts = line.split()
        if len(parts) >= 6 and "-" in parts[0]:
            cur = parts[5]
        elif parts[0] == "Rss:" and cur == path:
            rss += int(parts[1]) * 1024
    return rss
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
before = status("RssAnon:")
m = Model(path, ctx=64, ram_budget=budget)
for i in range(4):
    m.forward(np.array([1, 2, 3], np.int32), 3 * i, "last")
print(json.dumps({"file_rss": smaps(), "anon_growth": status("RssAnon:") - before,
                  "engine": m.engine.alloc_bytes, "plan": m.stream_plan.total_bytes, "size": m.stream_plan.weight_bytes}))
"""


def test_rss_in_subprocess(tmp_path):
    """The mapping of the file holds only what the loader parsed (header, metadata), never
    streamed weights; anonymous memory grows by the budget + the engine's KV/activations + a
    small fixed overhead."""
    p = mm.make_model(str(tmp_path / "w.gguf"), "tiny", format="Q8_0", tokenizer="none", vocab=320, seed=1,
                      layers=8, dim=512, ffn=1536, heads=8, kv_heads=4)
    lo = _minimum(p)
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, p, str(lo)], capture_output=True, text=True,
                         env=child_env(), cwd=CHILD_CWD, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["plan"] <= lo
    # a few pages come back after the loader's release (fault-around); streamed weights never do
    assert r["file_rss"] < 1024 * 1024 < (r["size"] - r["plan"]) // 4, r
    assert r["anon_growth"] <= r["plan"] + r["engine"] + 6 * 1024 * 1024, r
    assert r["size"] > 2 * lo  # the model really did not fit


@pytest.fixture(scope="module")
def tok_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    return mm.make_model(str(d / "tok.gguf"), "tiny", format="Q4_0", seed=3, layers=6)


PROMPTS = ["Once upon a time", "The capital of France is", "1, 2, 3, 4,", "Hello"]


def test_generate_batch_equals_alone_scalar(tok_model):
    with kernels.use_isa("scalar"):
        llm = fastcpu.LLM(tok_model, ctx=256, ram_budget=_minimum(tok_model) + 200_000)
        assert llm.model.stream_plan.streamed_bytes > 0
        alone = []
        for p in PROMPTS:
            llm.generate(p, max_tokens=8, temperature=0)
            alone.append(llm.last_stats["tokens"])
        texts = llm.generate_batch(PROMPTS, max_tokens=8, temperature=0)
        assert llm.last_stats["tokens"] == alone
        assert texts == [llm.detokenize(t) for t in alone]
        # the single-sequence path still works after a batch (its cache was reset)
        llm.generate(PROMPTS[0], max_tokens=8, temperature=0)
        assert llm.last_stats["tokens"] == alone[0]


def test_generate_batch_seeded_and_limits(tok_model):
    llm = fastcpu.LLM(tok_model, ctx=128)
    a = llm.generate_batch(PROMPTS[:2], max_tokens=6, temperature=0.9, seed=7)
    b = llm.generate_batch(PROMPTS[:2], max_tokens=6, temperature=0.9, seed=7)
    assert a == b and all(len(t) == 6 for t in llm.last_stats["tokens"])
    # one sequence draws as generate() with the same seed
    one = llm.generate_batch(PROMPTS[:1], max_tokens=6, temperature=0.9, seed=3)
    llm.reset()
    assert one == [llm.generate(PROMPTS[0], max_tokens=6, temperature=0.9, seed=3)]
    with pytest.raises(ValueError, match="cache positions"):
        llm.generate_batch(PROMPTS, max_tokens=40)
    with pytest.raises(TypeError):
        llm.generate_batch("one prompt")
    with pytest.raises(ValueError, match="seeds"):
        llm.generate_batch(PROMPTS[:2], max_tokens=4, seed=[1])


def test_cli_bench_and_generate_with_budget(tok_model, capsys):
    from fastcpu.cli import main

    budget = str(_minimum(tok_model) + 100_000)
    assert main(["bench", "-m", tok_model, "--ram-budget", budget, "--prompt", "8", "--gen", "4", "--ctx", "64",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["streamed_bytes_per_token"] > 0 and r["ram_budget"] == int(budget)
    assert r["disk_limit_gbps"] > 0 and r["stream_limit_pct"] > 0
    assert r["pinned_bytes"] + r["ring_bytes"] <= int(budget)
    assert main(["generate", "-m", tok_model, "--ram-budget", "1KiB", "-p", "x", "-n", "2"]) == 1
    assert "minimum working set" in capsys.readouterr().err
