#!/usr/bin/env bash
# The project's GPU checks in one script (see benchmarks/gpu_check.py): the fused head against the reference
# on the GPU, steady bf16 + compile throughput / MFU / memory of pythia-70m and 160m, evaluation speed,
# kill + resume on the GPU, and sweep packing (--runs_per_gpu 1 vs 4). About 7 minutes on one H100; the
# timeout stops it at 8 (summary.json keeps every check finished by then). It uses the first GPU of an
# inherited CUDA_VISIBLE_DEVICES. On a machine without a GPU it builds its store and stops before the
# first GPU step.
#   bash benchmarks/gpu_check.sh [--work DIR] [--skip_160m]
# PYTHON: the interpreter (default python3 from PATH; the tests pass the one running them).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec timeout 480 "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
