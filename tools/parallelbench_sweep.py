"""ParallelBench's finding on our own models: accuracy vs tokens per step, and AUP per strategy.

One command (make parallelbench) runs, through the harness runner (ordinary run folders and rows),
on the Waiting Line tasks (the shipped test files; --limit rows each):
  dllm_topk      k in --ks tokens per step (confidence rule; --rules adds margin / entropy / random)
  dllm_threshold gamma in --gammas
  learn2pd       filter threshold in --filter-thresholds (when the model has a filter)
  freedave       draft_steps 4 (output == k = 1: the row says so)
  AR twin        greedy on the same rows (--ar)
and writes <out>.json (every point: accuracy, its 95% CI, positions per forward, forwards), the
plot <out>.png (accuracy vs tokens per step, one panel per task, the AR twin as a dashed line) and
an AUP table (harness.metrics.aup: TPF = canvas positions settled per forward, accuracy in %,
y_max = the best accuracy of any method on the task, alpha 3, points within 5 points of the
method's lowest-parallelism accuracy).

    python -m tools.parallelbench_sweep --model waitline_mdlm --ar waitline_ar --out results/published/parallelbench_sweep
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_one(model: str, strategy: str, task: str, limit: int, results: str, extra=()) -> dict:
    from hydra import compose, initialize_config_dir

    from harness.runner import run

    over = [f"model={model}", f"strategy={strategy}", "task=parallelbench", f"task.subtask=waiting_line/{task}",
            f"task.limit={limit}", "run.max_new_tokens=32", "run.baseline=null", "run.progress=false",
            f"run.results_dir={results}", *extra]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=over)
    s = run(cfg)
    ex = s.get("extra_per_example") or {}
    return {"task": task, "strategy": strategy, "overrides": list(extra), "run": s["run"], "n": s["n"],
            "errors": s["errors"], "accuracy": s["quality"], "ci": [s["quality_ci_low"], s["quality_ci_high"]],
            "forwards_per_example": ex.get("canvas", 32) / ex["positions_per_forward"]
            if ex.get("positions_per_forward") else None,
            "positions_per_forward": ex.get("positions_per_forward"),
            "tokens_per_forward": ex.get("tokens_per_forward") or (1 / s["forwards_per_token"]
                                                                   if s.get("forwards_per_token") else None)}


def aup_table(points: list[dict], tasks: list[str]) -> dict:
    from harness.metrics import aup

    out = {}
    for t in tasks:
        pts = [p for p in points if p["task"] == t and p["accuracy"] is not None]
        y_max = 100 * max(p["accuracy"] for p in pts)
        fams: dict[str, list] = {}
        for p in pts:
            fams.setdefault(p["family"], []).append(p)
        out[t] = {f: round(aup([p["positions_per_forward"] for p in ps], [100 * p["accuracy"] for p in ps], y_max), 2)
                  for f, ps in fams.items() if all(p["positions_per_forward"] for p in ps)}
    return out


def plot(points: list[dict], tasks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.2), sharey=True, squeeze=False)
    for ax, t in zip(axes[0], tasks):
        for fam, style in (("dllm_topk", "o-"), ("dllm_threshold", "s--"), ("learn2pd", "^:")):
            ps = sorted((p for p in points if p["task"] == t and p["family"] == fam), key=lambda p: p["positions_per_forward"])
            if ps:
                x = [p["positions_per_forward"] for p in ps]
                y = [100 * p["accuracy"] for p in ps]
                err = [[100 * (p["accuracy"] - p["ci"][0]) for p in ps], [100 * (p["ci"][1] - p["accuracy"]) for p in ps]]
                ax.errorbar(x, y, yerr=err, fmt=style, capsize=2, label=fam, markersize=4)
        ar = [p for p in points if p["task"] == t and p["family"] == "ar_twin"]
        if ar:
            ax.axhline(100 * ar[0]["accuracy"], color="k", ls="--", lw=1, label="AR twin (greedy)")
        ax.set_xscale("log", base=2)
        ax.set_ylim(-3, 103)
        ax.set_title(t.replace("_", " "))
        ax.set_xlabel("tokens per forward")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="waitline_mdlm")
    ap.add_argument("--ar", default="waitline_ar", help="the autoregressive twin's model config ('' = none)")
    ap.add_argument("--tasks", default="copy,shuffle,replace_index,replace_random")
    ap.add_argument("--ks", default="1,2,4,8,16,32")
    ap.add_argument("--rules", default="confidence")
    ap.add_argument("--gammas", default="0.5,0.7,0.9,0.99")
    ap.add_argument("--filter-thresholds", default="0.3,0.5,0.7,0.9")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--task-limits", default="", help="per-task limits overriding --limit, e.g. shuffle=40,replace_random=40")
    ap.add_argument("--rule-ks", default=None, help="tokens per step for the non-confidence rules (default: --ks)")
    ap.add_argument("--results", default="results", help="where the run folders go")
    ap.add_argument("--out", required=True, help="output prefix: <out>.json, <out>.png")
    args = ap.parse_args(argv)
    tasks = args.tasks.split(",")
    filt = ROOT / "results" / "dllm" / f"learn2pd-{_model_name(args.model)}.pt"
    t0 = time.time()
    points = []
    limits = {kv.split("=")[0]: int(kv.split("=")[1]) for kv in args.task_limits.split(",") if kv}
    for t in tasks:
        limit = limits.get(t, args.limit)
        for rule in args.rules.split(","):
            ks = args.ks if rule == "confidence" or not args.rule_ks else args.rule_ks
            for k in map(int, ks.split(",")):
                p = run_one(args.model, "dllm_topk", t, limit, args.results, [f"strategy.k={k}", f"strategy.rule={rule}"])
                points.append({**p, "family": "dllm_topk" if rule == "confidence" else f"dllm_topk_{rule}", "k": k})
        for g in map(float, args.gammas.split(",")):
            p = run_one(args.model, "dllm_threshold", t, limit, args.results, [f"strategy.gamma={g}"])
            points.append({**p, "family": "dllm_threshold", "gamma": g})
        if filt.exists():
            for th in map(float, args.filter_thresholds.split(",")):
                p = run_one(args.model, "learn2pd", t, limit, args.results, [f"strategy.threshold={th}"])
                points.append({**p, "family": "learn2pd", "threshold": th})
        p = run_one(args.model, "freedave", t, limit, args.results)
        points.append({**p, "family": "freedave"})
        if args.ar:
            p = run_one(args.ar, "greedy", t, limit, args.results)
            points.append({**p, "family": "ar_twin", "positions_per_forward": p["tokens_per_forward"]})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = aup_table([p for p in points if p["family"] != "freedave"], tasks)
    rec = {"model": args.model, "ar_twin": args.ar, "tasks": tasks, "limit": args.limit,
           "task_limits": {t: limits.get(t, args.limit) for t in tasks}, "canvas": 32,
           "aup": table, "aup_definition": "harness.metrics.aup: alpha 3, offset 5 points, y_max = best accuracy on the task",
           "seconds": round(time.time() - t0, 1), "points": points}
    out.with_suffix(".json").write_text(json.dumps(rec, indent=1) + "\n")
    plot([p for p in points if p["family"] != "freedave"], tasks, out.with_suffix(".png"))
    print(f"{'task':16s} " + " ".join(f"{f:>15s}" for f in ("dllm_topk", "dllm_threshold", "learn2pd", "ar_twin")))
    for t in tasks:
        print(f"{t:16s} " + " ".join(f"{table[t].get(f, float('nan')):15.1f}" for f in
                                     ("dllm_topk", "dllm_threshold", "learn2pd", "ar_twin")))
    print(f"-> {out.with_suffix('.json')}, {out.with_suffix('.png')} ({rec['seconds']:.0f} s)")
    return 0


def _model_name(config: str) -> str:
    from omegaconf import OmegaConf

    return str(OmegaConf.load(ROOT / "conf" / "model" / f"{config}.yaml").name)


if __name__ == "__main__":
    sys.exit(main())
