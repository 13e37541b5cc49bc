"""Pack finished run folders into one committed results file (what cards and notebooks read).

    python -m tools.publish_runs --out results/published/NAME.json RUN_DIR [RUN_DIR ...]

Each run folder must hold meta.json and rows.jsonl; the file keeps, per run, its identity (run
name, strategy, parameters, model, task, options, budget, seed, git sha, machine) and every row
with its output text, so a number can always be traced back to the outputs that produced it.
Refuses an empty or unfinished folder (fewer rows than the run said it would do) unless
--allow-partial, and never overwrites a file without --force.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.store import read_rows

KEEP = ("run", "strategy", "strategy_params", "model", "model_name", "task", "task_options", "max_new_tokens",
        "seed", "git_sha", "versions", "cpu", "threads", "device", "quality_metric", "quality_direction")


def pack(run_dir: Path, allow_partial: bool = False) -> dict:
    meta_p, rows_p = run_dir / "meta.json", run_dir / "rows.jsonl"
    if not meta_p.exists() or not rows_p.exists():
        raise SystemExit(f"error: {run_dir} has no meta.json / rows.jsonl")
    meta = json.loads(meta_p.read_text())
    rows = read_rows(rows_p)
    planned = max([s.get("examples_to_run", 0) + s.get("already_done", 0) for s in meta.get("starts") or []] or [0])
    if not rows or (len(rows) < planned and not allow_partial):
        raise SystemExit(f"error: {run_dir.name} has {len(rows)} rows of {planned} planned (--allow-partial to keep it)")
    return {**{k: meta.get(k) for k in KEEP}, "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.publish_runs", description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--allow-partial", action="store_true")
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    if a.out.exists() and not a.force:
        print(f"error: {a.out} exists (--force to replace it)", file=sys.stderr)
        return 2
    packed = [pack(d, a.allow_partial) for d in a.runs if d.name != "_hydra"]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(packed, indent=1, default=str) + "\n")
    print(f"[publish] {len(packed)} run(s), {sum(len(p['rows']) for p in packed)} rows -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
