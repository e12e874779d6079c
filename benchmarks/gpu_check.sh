#!/usr/bin/env bash
# The project's GPU checks in one script (see benchmarks/gpu_check.py): bf16 + compile throughput and MFU
# of pythia-70m / 160m, the fused head against the reference on the GPU, evaluation speed, kill + resume
# on the GPU, and sweep packing (--runs_per_gpu 1 vs 4). About 6 minutes on one H100; at most 8.
# On a machine without a GPU it builds its store and stops before the first GPU step.
#   bash benchmarks/gpu_check.sh [--work DIR] [--skip_160m]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec timeout 480 python3 benchmarks/gpu_check.py "$@"
