"""The `fastcpu` command line."""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args) -> int:
    import fastcpu

    print(json.dumps(fastcpu.cpu_info(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastcpu", description="LLM inference on CPUs")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("info", help="print detected CPU features and ISA levels as JSON")
    s.set_defaults(fn=_cmd_info)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
