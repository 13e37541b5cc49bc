"""Synthetic result rows at scale: how long `make leaderboard` and a resume take on big runs.

    python benchmarks/synthetic_rows.py --runs 100 --rows 1000 --resume-rows 10000 \
        --out /tmp/synthetic_results --json results/published/bench_synthetic_rows.json

Writes `runs` run folders (meta.json + rows.jsonl; strategies, tasks and models cycle through a
few names; every row has the fields and the size of a real GSM8K row: its prompt messages,
output text and token ids, score dict, counters and provenance) and one run of `resume-rows`
rows, then measures, in this process:
  - the leaderboard over all of them (`harness.leaderboard.main`: read, aggregate, tables, plots);
  - what a resume reads before it decodes anything: `read_rows` of the big run and the
    set of finished (example, sample) keys the runner builds from it.
Rows are generated from a fixed seed, so every invocation writes the same bytes.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STRATEGIES = ["greedy", "speculative", "pld", "self_consistency", "best_of_n", "a_star", "top_h", "lookahead"]
TASKS = ["gsm8k", "math500", "humaneval", "hyporadise"]
MODELS = ["qwen25_coder_05b", "smollm2_135m"]
WORDS = ("the number of clips sold in April is 48 so in May she sold half of that which is 24 and "
         "together that makes 72 clips in total we add them step by step").split()


def meta_for(run: str, task: str, strategy: str, model: str) -> dict:
    import hashlib

    return {"config_hash": hashlib.sha256(run.encode()).hexdigest(), "run": run, "task": task, "strategy": strategy,
            "model": f"pack:{model}", "model_name": model, "task_version": "2",
            "task_options": {"split": "test"}, "model_spec": {"name": model, "dtype": "bfloat16"},
            "strategy_params": {"name": strategy, "lossless": strategy in ("speculative", "pld", "lookahead")},
            "quality_metric": "accuracy", "quality_direction": "higher", "metric_directions": {"accuracy": "higher"},
            "summary_fields": ["generated_tokens", "candidates"], "search": strategy in ("best_of_n", "a_star"),
            "paired_baseline": False, "row_labels": {"draft_model": None, "scorer": None}, "max_new_tokens": 320,
            "seed": 0, "secondary_metrics": ["strict_match", "flexible_match"], "device": "cpu", "threads": 2,
            "starts": [{"timestamp": 0.0, "examples_to_run": 0, "already_done": 0}]}


def row_for(rng: random.Random, run: str, task: str, strategy: str, model: str, i: int) -> dict:
    n_tok = rng.randint(80, 320)
    text = " ".join(rng.choice(WORDS) for _ in range(int(n_tok * 0.75)))
    q = float(rng.random() < 0.4)
    wall = n_tok / rng.uniform(5, 25)
    fwd = n_tok if strategy in ("greedy", "top_h") else max(1, n_tok // rng.randint(1, 4))
    return {"run": run, "config_hash": "0" * 64, "example_id": f"{task}-{i:05d}-{i * 2654435761 % 10 ** 10:010d}",
            "sample": 0, "seed": i, "task": task, "task_version": "2", "strategy": strategy, "model": f"pack:{model}",
            "model_name": model, "dtype": "bfloat16", "draft_model": None, "scorer": None, "error": None,
            "prompt_hash": f"{i:016x}", "prompt_messages": [{"role": "user", "content": " ".join(WORDS[:40]) + f" #{i}"}],
            "gold": "#### 72", "prompt_tokens": 102, "output_text": text, "extracted": "72" if q else "24",
            "quality": q, "score": {"quality": q, "strict_match": q, "flexible_match": q},
            "wall_s": wall, "output_tokens": [rng.randrange(150000) for _ in range(n_tok)], "finish": "eos",
            "ttft_s": wall / n_tok, "new_tokens": n_tok, "target_forwards": fwd, "draft_forwards": 0,
            "target_tokens_fed": n_tok + 102, "drafted": 0, "tree_nodes": 0, "accepted": 0, "verifications": 0,
            "accept_hist": {}, "extra": {"generated_tokens": n_tok, "candidates": 1}, "git_sha": "0" * 40,
            "versions": {"torch": "2.13.0+cpu"}, "threads": 2, "cpu": "synthetic", "gpu": None, "device": "cpu",
            "batch_size": 1, "max_new_tokens": 320, "timestamp": 1.0e9 + i}


def write_run(root: Path, k: int, n_rows: int, rng: random.Random) -> Path:
    task, strategy, model = TASKS[k % len(TASKS)], STRATEGIES[(k // len(TASKS)) % len(STRATEGIES)], MODELS[k % 2]
    run = f"{task}-{strategy}-{model}-{k:04d}"
    d = root / run
    d.mkdir(parents=True)
    with open(d / "rows.jsonl", "w", encoding="utf-8") as f:
        for i in range(n_rows):
            f.write(json.dumps(row_for(rng, run, task, strategy, model, i)) + "\n")
    (d / "meta.json").write_text(json.dumps(meta_for(run, task, strategy, model)))
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--rows", type=int, default=1000, help="rows per run")
    ap.add_argument("--resume-rows", type=int, default=10000)
    ap.add_argument("--out", default="/tmp/synthetic_results")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(0)
    t0 = time.perf_counter()
    for k in range(args.runs):
        write_run(root / "board", k, args.rows, rng)
    big = write_run(root / "resume", 0, args.resume_rows, rng)
    gen_s = time.perf_counter() - t0
    board_bytes = sum(p.stat().st_size for p in (root / "board").rglob("rows.jsonl"))

    from harness import leaderboard
    from harness.store import read_rows, row_key

    t0 = time.perf_counter()
    rc = leaderboard.main(["--results", str(root / "board"), "--out", str(root / "board_out")])
    board_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    done = {row_key(r): r for r in read_rows(big / "rows.jsonl")}
    resume_s = time.perf_counter() - t0
    out = {"runs": args.runs, "rows_per_run": args.rows, "rows_total": args.runs * args.rows,
           "rows_bytes": board_bytes, "generate_s": round(gen_s, 2), "leaderboard_rc": rc,
           "leaderboard_s": round(board_s, 2), "resume_rows": len(done),
           "resume_bytes": (big / "rows.jsonl").stat().st_size, "resume_read_s": round(resume_s, 3)}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
