"""Running a child Python that imports the same fastcpu as the test process.

Under `make test` the tests import the installed wheel; in a development build they import the
source tree (PYTHONPATH=.). A child started with `python -c` puts its working directory first on
sys.path, so one started in the repository root would import the uncompiled fastcpu/ there
instead. Children therefore get the parent's package directory first on PYTHONPATH and run in a
neutral working directory."""
import os
import tempfile

import fastcpu

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fastcpu.__file__)))
CHILD_CWD = tempfile.gettempdir()


def child_env(base=None, **extra) -> dict:
    env = dict(os.environ if base is None else base, **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PKG_PARENT, TESTS_DIR, env.get("PYTHONPATH")) if p)
    return env
