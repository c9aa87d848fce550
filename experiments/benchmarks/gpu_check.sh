#!/usr/bin/env bash
# The GPU figures of docs/performance.md in one short run on a GPU host (jax with CUDA there,
# the test extras installed: osqp, cvxpy, clarabel, jaxopt). Writes to $OUT (or results/).
#
#   bash experiments/benchmarks/gpu_check.sh
#
# First the issue's target, then the QP batches (a device lent for a few minutes is spent on
# what matters most first; each step has its own time limit):
# closed_loop: 10 000 samples x 8 risk levels of the paper case (target: under 5 min), in calls
#   of CL_CHUNK samples (default 1250: 10 000 (risk, sample) pairs, 70 000 agent QPs per call,
#   enough to fill the GPU, and a progress line per call, so a run cut off by CL_TIMEOUT still
#   gives the time per call);
# qp_batch: every batch size in one piece per GPU, OSQP in a loop and on all the host's cores.
set -u
cd "$(dirname "$0")/../.."
out=${OUT:-experiments/benchmarks/results}
mkdir -p "$out"
python -c "import jax; print(jax.__version__, jax.devices())" 2>&1 | tee "$out/devices.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$out/devices.txt"
timeout "${CL_TIMEOUT:-420}" python -u experiments/benchmarks/closed_loop.py --S 10000 --R 8 --chunk "${CL_CHUNK:-1250}" 2>&1 \
  | tee "$out/closed_loop.txt"
timeout "${QP_TIMEOUT:-180}" python -u experiments/benchmarks/qp_batch.py --jaxopt-iters 1000 2>&1 | tee "$out/qp_batch.txt"
cp experiments/benchmarks/results/*.json "$out/" 2>/dev/null || true
