#!/usr/bin/env bash
# Test-time search at N = 4 with a scorer that is not the policy: the value head trained on the
# policy's own GSM8K TRAIN samples (tools/train_value_head.py), on the first LIMIT GSM8K TEST
# problems. Every method samples with the same per-example seeds, so best-of-N, weighted vote and
# self-consistency choose among the SAME 4 samples; best-of-N is also run with the policy judging
# itself (lm_judge) to isolate what the scorer changes.
#   bash benchmarks/tts_value_head.sh [limit=20] [results dir=results/tts_value_head]
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=${1:-20}; OUT=${2:-results/tts_value_head}
PY=${PY:-.venv/bin/python}
export HARNESS_DATA_DIR=${HARNESS_DATA_DIR:-$(cd .. && pwd)/shared/data}
VH="scorer@strategy.scorer=value_head"
COMMON="task=gsm8k task.limit=$LIMIT model=qwen25_coder_05b model.dtype=bfloat16 run.max_new_tokens=320 run.threads=${THREADS:-2} run.results_dir=$OUT run.progress=false"
run() { echo "== $*"; $PY -m harness $COMMON "$@" | grep -E "^(==|   )" || true; }
run strategy=greedy
run strategy=self_consistency strategy.n=4
run strategy=best_of_n strategy.n=4 $VH
run strategy=weighted_vote strategy.n=4 $VH
run strategy=a_star strategy.token_budget=1024 $VH
[ -n "${WITH_JUDGE:-1}" ] && run strategy=best_of_n strategy.n=4
[ -n "${WITH_PF:-}" ] && run strategy=particle_filtering strategy.n=4 $VH
$PY -m harness.leaderboard --results $OUT
