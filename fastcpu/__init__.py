"""fastcpu: LLM inference on commodity server CPUs."""
from __future__ import annotations

from . import kernels
from .kernels import ISAError
from .gguf import ModelFormatError

__version__ = "0.1.0"


def get_include() -> str:
    """Directory to put on the C compiler's include path for <fastcpu/fastcpu.h> (the C API).
    Installed wheel: fastcpu/include; development tree: csrc/include."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    for d in (os.path.join(here, "include"), os.path.join(os.path.dirname(here), "csrc", "include")):
        if os.path.isfile(os.path.join(d, "fastcpu", "fastcpu.h")):
            return d
    raise FileNotFoundError("fastcpu/fastcpu.h is neither in the installed package nor in a source tree")


def get_library_dir() -> str:
    """Directory holding libfastcpu.so (link with -L<dir> -lfastcpu -Wl,-rpath,<dir>)."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    if not os.path.isfile(os.path.join(here, "libfastcpu.so")):
        raise FileNotFoundError(f"libfastcpu.so is not in {here}: build the package first")
    return here


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


def __getattr__(name):
    # The runner loads lazily: `import fastcpu` stays cheap for kernel users.
    if name == "LLM":
        from .llm import LLM

        return LLM
    raise AttributeError(f"module 'fastcpu' has no attribute {name!r}")


__all__ = ["kernels", "cpu_info", "get_include", "get_library_dir", "ISAError", "ModelFormatError", "LLM",
           "__version__"]
