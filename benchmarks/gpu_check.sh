#!/usr/bin/env bash
# On a machine with a CUDA GPU (a station's GPU worker, or a lent test machine), in under 8 minutes:
#   1. the tests marked `cuda` (decoder synthesis and enhancer windows on the GPU against the CPU, the golden pass,
#      the int entropy path on the GPU giving the CPU's integers: tests/unit/groundstation/test_intprior.py)
#   2. the enhancer's throughput on the GPU (demo and reference configurations, batches of 256 px windows)
#   3. the decode split on the GPU (entropy path on the CPU, g_s on the GPU), ms per tile
# Results go to $OUT (default benchmarks/results/gpu/). Compare with the paper's RTX 3090 Ti figures:
# 0.0988 s ELIC decode and 0.0155 s enhancer per 256x256 tile.
#
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
status=0
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true; } > "$OUT/gpu.txt" 2>&1
"$PY" -c 'import torch, sys; ok = torch.cuda.is_available(); print("cuda:", ok, torch.cuda.get_device_name(0) if ok else ""); sys.exit(0 if ok else 1)' \
    | tee -a "$OUT/gpu.txt" || { echo "no CUDA device visible to $PY: nothing to check"; exit 2; }

echo "== tests marked cuda"
timeout 240 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest_cuda.txt" | tail -5
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== enhancer throughput on the GPU"
timeout 150 "$PY" benchmarks/enhancer_throughput.py --device cuda --configs demo reference --batches 1 8 \
    --reps 10 --output "$OUT/enhancer_throughput_cuda.json" 2>&1 | tail -15 || status=1

echo "== decode: entropy on the CPU, synthesis on the GPU"
timeout 120 "$PY" benchmarks/decode_throughput.py --device cuda --tiles 24 --out "$OUT/decode_throughput_cuda.json" \
    2>&1 | tail -8 || status=1
echo "results in $OUT (exit $status)"
exit $status
