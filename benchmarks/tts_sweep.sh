#!/usr/bin/env bash
# Test-time scaling at equal budgets: accuracy vs generated tokens for the search strategies
# (the A*-decoding paper's comparison: A* vs best-of-N vs particle filtering, plus voting).
# Rows go to results/ (or $RESULTS); `make leaderboard` then draws
# results/leaderboard/<task>_accuracy_vs_tokens.png from them.
#   bash benchmarks/tts_sweep.sh [task=gsm8k] [limit=10] [model=qwen25_coder_05b]
#   NS="4" BUDGETS="1024" bash benchmarks/tts_sweep.sh gsm8k 8     # one point per method (quicker)
set -euo pipefail
cd "$(dirname "$0")/.."
TASK=${1:-gsm8k}; LIMIT=${2:-10}; MODEL=${3:-qwen25_coder_05b}
PY=${PY:-.venv/bin/python}
export HARNESS_DATA_DIR=${HARNESS_DATA_DIR:-$(cd .. && pwd)/shared/data}
COMMON="task=$TASK task.limit=$LIMIT model=$MODEL run.max_new_tokens=${MAX_NEW:-320} run.threads=${THREADS:-2} run.results_dir=${RESULTS:-results} run.progress=false"
run() { echo "== $*"; $PY -m harness $COMMON "$@" | grep -E "^(==|   )" || true; }
run strategy=greedy
for n in ${NS:-2 4 8}; do run strategy=self_consistency strategy.n=$n; done
for n in ${NS:-2 4 8}; do run strategy=best_of_n strategy.n=$n; done
for b in ${BUDGETS:-512 1024 2048}; do run strategy=a_star strategy.token_budget=$b; done
for n in ${NS:-2 4 8}; do
  for s in particle_filtering weighted_vote; do
    [ -f conf/strategy/$s.yaml ] && run strategy=$s strategy.n=$n
  done
done
$PY -m harness.leaderboard --results ${RESULTS:-results}
