#!/usr/bin/env bash
# Greedy quality of each task on a small stated subset, for the README's task table.
#   bash benchmarks/quality_table.sh [model ...]     (default: smollm2_135m qwen25_coder_05b)
# Runs through the harness (rows in results/), then prints the leaderboard lines of these runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
N=${N:-5}
export HARNESS_DATA_DIR=${HARNESS_DATA_DIR:-$(cd .. && pwd)/shared/data}
models=("${@:-smollm2_135m qwen25_coder_05b}")
TASKS=${TASKS:-gsm8k math500 aime humaneval hyporadise parallelbench multihop_qa}
declare -A ARGS=(
  [gsm8k]="run.max_new_tokens=256"
  [math500]="run.max_new_tokens=256"
  [aime]="run.max_new_tokens=256"
  [humaneval]="task.execute=true run.max_new_tokens=256"
  [hyporadise]="task.sets=[wsj_score] run.max_new_tokens=64"
  [parallelbench]="task.subtask=waiting_line/copy run.max_new_tokens=32"
  [multihop_qa]="task.dataset=musique run.max_new_tokens=64"
)
for model in ${models[@]}; do
  for task in $TASKS; do
    $PY -m harness model=$model model.dtype=bfloat16 strategy=greedy task=$task task.limit=$N \
      run.progress=false ${ARGS[$task]}
  done
done
$PY -m harness.leaderboard
