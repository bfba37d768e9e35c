"""fastcpu: LLM inference on commodity server CPUs."""
from __future__ import annotations

from . import kernels
from .kernels import ISAError
from .gguf import ModelFormatError

__version__ = "0.1.0"


def cpu_info() -> dict:
    """Detected CPU features, the ISA levels usable here and the one in use."""
    from . import _core

    info = _core.cpu_features()
    info["isa"] = kernels.isa()
    info["best_isa"] = kernels.best_isa()
    info["available_isas"] = kernels.available_isas()
    info["unavailable_isas"] = {
        n: kernels.isa_missing(n) for n in kernels.ALL_ISAS if kernels.isa_missing(n) is not None
    }
    return info


__all__ = ["kernels", "cpu_info", "ISAError", "ModelFormatError", "__version__"]
