#!/usr/bin/env python3
"""Write a GGUF model with its weights re-quantized to other formats (needs the gguf package).

    python tools/convert_formats.py                          # smollm2-135m -> every format, cached
    python tools/convert_formats.py -m model.gguf --to Q8_0 --to F16
    python tools/convert_formats.py -m model.gguf --to Q5_1 -o out.gguf

Outputs go to the fastcpu cache ($FASTCPU_HOME or ~/.cache/fastcpu)/converted unless -o is given;
a cached conversion of the same source contents is reused. Prints one output path per line.
See fastcpu/convert.py for what is converted and what is copied.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastcpu import convert  # noqa: E402
from fastcpu.hub import resolve  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", default=None, help="path or known model name (default: smollm2-135m)")
    p.add_argument("--to", action="append", choices=convert.TARGETS, metavar="FORMAT",
                   help=f"target format, repeatable ({', '.join(convert.TARGETS)}); default: all")
    p.add_argument("-o", "--out", help="output file (only with a single --to)")
    p.add_argument("--force", action="store_true", help="convert again even if cached")
    args = p.parse_args(argv)
    targets = args.to or [t for t in convert.TARGETS if t != "BF16"]
    if args.out and len(targets) != 1:
        p.error("-o needs exactly one --to")
    src = resolve(args.model)
    for t in targets:
        if args.out:
            path = convert.convert(src, args.out, t, progress=True)
        else:
            path = convert.converted(src, t, progress=True, force=args.force)
        print(path, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
