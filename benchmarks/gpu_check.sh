#!/usr/bin/env bash
# The device check of #17 item 6, for a lent GPU (run there, e.g. through the device tool, with
# carry [".whl"] after benchmarks/gpu_wheels.sh). Writes everything under $OUT (default ./gpu_out):
#   bench_shapes.json / bench_shapes.log   random-weight real shapes: forward-cost curve, per-step
#                                          overhead ours vs generate(), logits copied vs on device
#   tests.log                              the device tests with HARNESS_TEST_DEVICE=cuda
set -uo pipefail
OUT=${OUT:-./gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site || { echo "wheel install failed"; exit 3; }
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())' | tee -a "$OUT/gpu.txt"
timeout ${BENCH_TIMEOUT:-330} python3 benchmarks/bench_shapes.py --device cuda --dtype bfloat16 \
    --json "$OUT/bench_shapes.json" 2>&1 | grep -v -i "warn" | tee "$OUT/bench_shapes.log"
HARNESS_TEST_DEVICE=cuda timeout ${TEST_TIMEOUT:-150} python3 -m pytest -q -x -p no:cacheprovider \
    tests/test_device_logits.py tests/test_engine.py 2>&1 | tail -40 | tee "$OUT/tests.log"
