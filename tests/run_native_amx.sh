#!/usr/bin/env bash
# One-shot check on a machine with AMX (Sapphire Rapids or later): CPU, build, native AMX tests
# (real tiles vs reference, tile model vs hardware bit for bit), then the AMX benchmark.
# Usage (repository root):  PY=python3 bash tests/run_native_amx.sh [bench-json-path]
# Needs: cmake, ninja, a C compiler with -mamx-*, and numpy, gguf, pytest, cython for $PY.
set -u
PY=${PY:-python3}
OUT=${1:-bench_amx.json}
cd "$(dirname "$0")/.."

echo "== lscpu"; lscpu
echo "== kernel AMX support"; grep -o -w 'amx_[a-z0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
echo "== build"
make dev DEV_PY="$PY" || exit 1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
echo "== fastcpu info"
"$PY" -c 'import fastcpu, json; i = fastcpu.cpu_info(); print(json.dumps(i, indent=1))'
echo "== tests (native AMX, tile model, every level)"
"$PY" -m pytest -q -rs tests/test_amx.py tests/test_gemm.py
rc=$?
echo "== benchmark -> $OUT"
timeout 900 "$PY" benchmarks/bench_amx.py --json "$OUT"
echo "== done (tests rc=$rc)"
exit $rc
