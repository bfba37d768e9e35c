"""The `fastcpu` command line."""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args) -> int:
    import fastcpu

    print(json.dumps(fastcpu.cpu_info(), indent=2))
    return 0


# ---- model cache commands (fastcpu.hub) ----

def _fmt_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _cmd_pull(args) -> int:
    from . import hub

    try:
        path = hub.pull(args.name, progress=not args.quiet, force=args.force)
    except (hub.HubError, hub.UnknownModelError) as e:
        print(f"fastcpu pull: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _cmd_models(args) -> int:
    from . import hub

    cached = hub.list_models()
    if args.json:
        print(json.dumps({"cache_dir": hub.cache_dir(), "known": {
            n: {"description": m.description, "path": hub.model_path(n)} for n, m in hub.KNOWN_MODELS.items()},
            "cached": cached}, indent=2))
        return 0
    print(f"cache: {hub.cache_dir()}")
    print("known models:")
    for n, m in sorted(hub.KNOWN_MODELS.items()):
        state = "cached" if any(c["name"] == n for c in cached) else "not pulled"
        print(f"  {n:<16} {state:<11} {m.description}")
    print("cached files:" if cached else "cached files: none")
    for c in cached:
        print(f"  {_fmt_size(c['size']):>10}  {c['name'] or '-':<16} {c['path']}")
    return 0


def add_hub_commands(sub) -> None:
    s = sub.add_parser("pull", help="download a known model (or hf:OWNER/REPO/FILE.gguf) into the cache")
    s.add_argument("name", help="known model name (see `fastcpu models`) or hf:OWNER/REPO/FILE.gguf")
    s.add_argument("--force", action="store_true", help="fetch again even if cached")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=_cmd_pull)
    s = sub.add_parser("models", help="list known models and the cached model files")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(fn=_cmd_models)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastcpu", description="LLM inference on CPUs")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("info", help="print detected CPU features and ISA levels as JSON")
    s.set_defaults(fn=_cmd_info)
    add_hub_commands(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
