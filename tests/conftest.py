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
