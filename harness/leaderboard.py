"""Leaderboard: one tidy table per task over every finished run folder, plus a quality-vs-speed plot.

    python -m harness.leaderboard [--results results] [--out results/leaderboard]

Reads results/<run>/rows.jsonl and meta.json (never loads a model, never imports torch),
aggregates each run with `metrics.aggregate` and writes, for each task, <out>/<task>.csv,
<task>.parquet, <task>.md and <task>_quality_vs_speed.png, and an index <out>/README.md.

speedup = `metrics.speedup` of a run against the newest greedy run (by meta.json mtime) on the
same task, model, dtype and max_new_tokens: a tokens/s ratio on the example ids both finished.
The runs are measured separately, so it is indicative only. Greedy runs get 1.0; NaN when no
greedy baseline exists.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

from harness import metrics
from harness.store import read_rows

COLUMNS = ["task", "task_options", "strategy", "model", "dtype", "max_new_tokens", "draft_model", "scorer", "n", "errors", "quality",
           "quality_ci_low", "quality_ci_high", "tokens_per_s", "speedup", "speedup_kind", "mat", "chain_acceptance",
           "tree_acceptance",
           "forwards_per_token", "mean_ttft_s", "wall_s_per_example", "extra_generated_tokens", "outside_model_share", "method_mb", "peak_rss_mb", "run"]
# decimals shown in the Markdown table (the CSV and Parquet keep full precision)
DECIMALS = {"quality": 3, "quality_ci_low": 3, "quality_ci_high": 3, "tokens_per_s": 1, "speedup": 2,
            "mat": 2, "chain_acceptance": 3, "tree_acceptance": 3, "forwards_per_token": 3, "mean_ttft_s": 3,
            "wall_s_per_example": 2, "extra_generated_tokens": 1, "outside_model_share": 3, "method_mb": 2, "peak_rss_mb": 0}
SPEEDUP_NOTE = ("speedup = tokens/s ratio vs plain greedy. speedup_kind 'paired': greedy timed in the same process on the "
                "same engine and examples, interleaved (run.paired_baseline=true), the number to cite; 'across runs': vs the "
                "newest greedy run (same task and task options, model identity, dtype, device, threads, max_new_tokens) "
                "on the same examples, measured in another process, so indicative only. Search methods get no speedup: "
                "their cost is extra_generated_tokens and wall time.")


def load_runs(results: Path, out: Path) -> list[dict]:
    """Every run folder under `results` with rows.jsonl and meta.json (not _hydra, not the output)."""
    runs = []
    for d in sorted(p for p in results.iterdir() if p.is_dir()):
        if d.name == "_hydra" or d.resolve() == out.resolve():
            continue
        if not (d / "rows.jsonl").exists() or not (d / "meta.json").exists():
            continue
        try:
            meta = json.loads((d / "meta.json").read_text())
        except json.JSONDecodeError:
            print(f"[leaderboard] skipping {d.name}: unreadable meta.json")
            continue
        runs.append({"dir": d, "meta": meta, "rows": read_rows(d / "rows.jsonl"),
                     "mtime": (d / "meta.json").stat().st_mtime})
    return runs


def table_rows(runs: list[dict]) -> list[dict]:
    """One leaderboard line per run, with its speedup against the matching greedy baseline."""
    baselines: dict = {}  # key -> newest greedy run
    for r in runs:
        if r["meta"].get("strategy") == "greedy":
            k = metrics.baseline_key(r["meta"])
            if k not in baselines or r["mtime"] > baselines[k]["mtime"]:
                baselines[k] = r
    lines = []
    for r in runs:
        meta = r["meta"]
        if meta.get("strategy") == "greedy":
            sp = 1.0
        elif metrics.baseline_key(meta) in baselines:
            sp = metrics.speedup(r["rows"], baselines[metrics.baseline_key(meta)]["rows"])[0]
        else:
            sp = math.nan
        draft = (meta.get("strategy_params") or {}).get("draft") or {}
        agg = metrics.aggregate(r["rows"], meta.get("secondary_metrics", ()))
        kind = "greedy" if meta.get("strategy") == "greedy" else "across runs" if sp == sp else "n/a"
        if agg.get("paired_n") and not meta.get("search"):  # measured in the same process: preferred
            sp, kind = agg["paired_speedup"], "paired"
        elif meta.get("search"):  # a search's cost is its generated tokens and wall time, never a speedup
            sp, kind = math.nan, "search: see generated tokens"
        secondary = agg.pop("secondary")
        extra = agg.pop("extra_per_example", {})
        task, options, model, dtype, mnt = metrics.baseline_key(meta)[:5]
        line = {"task": task, "task_options": options, "strategy": meta.get("strategy"), "model": model, "dtype": dtype,
                "max_new_tokens": mnt, "draft_model": draft.get("name") if isinstance(draft, dict) else None,
                **agg, "speedup": sp, "speedup_kind": kind, **{f"score_{k}": v for k, v in secondary.items()},
                **{f"extra_{k}": v for k, v in extra.items()}, "run": r["dir"].name,
                "budget": (meta.get("strategy_params") or {}).get("budget"),
                "quality_metric": meta.get("quality_metric"), "quality_direction": meta.get("quality_direction")}
        line.setdefault("extra_generated_tokens", math.nan)
        line["scorer"] = (meta.get("row_labels") or {}).get("scorer")  # who judged a search (lm_judge(policy): itself)
        n_ok = (agg.get("n") or 0) - (agg.get("errors") or 0)
        line["wall_s_per_example"] = agg["total_wall_s"] / n_ok if n_ok else math.nan
        if meta.get("search"):  # per-token speed numbers of the chosen answer mean nothing for a search
            for k in ("tokens_per_s", "mat", "mean_ttft_s", "chain_acceptance", "tree_acceptance", "forwards_per_token"):
                line[k] = math.nan
        lines.append(line)
    return lines


def _fmt(value, col: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if col in DECIMALS:
        return f"{value:.{DECIMALS[col]}f}"
    return str(value)


def write_markdown(df, path: Path, task: str, quality_metric: str, direction: str = "higher") -> None:
    head = [f"# {task} (quality: {metrics.quality_label(quality_metric, direction)})", "", SPEEDUP_NOTE, "",
            "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    body = ["| " + " | ".join(_fmt(rec.get(c), c) for c in COLUMNS) + " |" for rec in df.to_dict("records")]
    path.write_text("\n".join(head + body) + "\n")


def write_plot(df, path: Path, task: str, quality_metric: str, direction: str = "higher") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.plots import label_points, quality_axis, zero_based

    df = df[df["tokens_per_s"].notna()]  # search runs have no per-token speed (their plot is the budget one)
    fig, ax = plt.subplots(figsize=(7, 5))
    yerr = [(df["quality"] - df["quality_ci_low"]).clip(lower=0).fillna(0),
            (df["quality_ci_high"] - df["quality"]).clip(lower=0).fillna(0)]
    ax.errorbar(df["tokens_per_s"], df["quality"], yerr=yerr, fmt="o", capsize=4, elinewidth=1.2)
    quality_axis(ax, quality_metric, direction, list(df["quality_ci_high"]) + list(df["quality"]),
                 label=f"quality: {metrics.quality_label(quality_metric, direction)}, 95% CI")
    zero_based(ax, "x", list(df["tokens_per_s"]))
    ax.set_xlabel("tokens/s")
    n = sorted({int(v) for v in df["n"].dropna()}) if "n" in df.columns else []
    ns = f"n = {n[0]}" if len(n) == 1 else f"n = {n[0]}-{n[-1]}" if n else ""
    ax.set_title(f"{task}: {quality_metric} vs tokens/s ({ns} examples per run)", fontsize=10)
    label_points(ax, list(df["tokens_per_s"]), list(df["quality"]),
                 [f"{r['strategy']}/{r['model']}" for r in df.to_dict("records")])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_budget_plot(df, path: Path, task: str, quality_metric: str, direction: str = "higher") -> None:
    """Quality vs mean generated tokens per example (all candidates counted), one line per
    strategy and model through its budget sweep (the A*-decoding paper's comparison)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for (strategy, model), g in df.groupby(["strategy", "model"], sort=True):
        g = g.sort_values("extra_generated_tokens")
        ax.plot(g["extra_generated_tokens"], g["quality"], marker="o", label=f"{strategy} / {model}")
        for rec in g.to_dict("records"):
            if isinstance(rec.get("budget"), str):
                ax.annotate(str(rec["budget"]), (rec["extra_generated_tokens"], rec["quality"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7)
    from harness.plots import quality_axis

    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per example (all candidates, log scale)")
    quality_axis(ax, quality_metric, direction, list(df["quality"]),
                 label=f"quality: {metrics.quality_label(quality_metric, direction)}")
    n = sorted({int(v) for v in df["n"].dropna()}) if "n" in df.columns else []
    ns = f"n = {n[0]}" if len(n) == 1 else f"n = {n[0]}-{n[-1]}" if n else ""
    ax.set_title(f"{task}: {quality_metric} vs generated tokens ({ns} examples per run)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def safe_name(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(task))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.leaderboard", description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results", help="folder holding the run folders")
    ap.add_argument("--out", default=None, help="output folder (default: <results>/leaderboard)")
    args = ap.parse_args(argv)
    results = Path(args.results)
    out = Path(args.out) if args.out else results / "leaderboard"

    runs = load_runs(results, out) if results.is_dir() else []
    if not runs:
        print(f"[leaderboard] no runs (folders with rows.jsonl and meta.json) under {results}; nothing written")
        return 0

    import pandas as pd

    df_all = pd.DataFrame(table_rows(runs))
    out.mkdir(parents=True, exist_ok=True)
    index = ["# Leaderboard", "", SPEEDUP_NOTE, "", "HTML report (sortable tables, plots, outputs side by side): [report.html](report.html)", ""]
    sections = []
    for task, df in df_all.groupby("task", dropna=False, sort=True):
        df = df.sort_values(["model", "dtype", "max_new_tokens", "strategy", "run"], na_position="last")
        qm = next((m for m in df["quality_metric"] if m), "quality")
        qd = next((d for d in df["quality_direction"] if isinstance(d, str) and d), "higher")
        extra = sorted(c for c in df.columns if c.startswith(("score_", "extra_")) and df[c].notna().any()
                       and c not in COLUMNS)
        full = df[COLUMNS + extra].reset_index(drop=True)  # CSV / Parquet: + secondary metrics, strategy counters
        budget_plot = "extra_generated_tokens" in df.columns and df["extra_generated_tokens"].notna().any()
        if budget_plot:
            plot = out / f"{safe_name(task)}_accuracy_vs_tokens.png"
            pts = df.copy()  # one-sample baselines generate exactly their new tokens
            single = pts["extra_generated_tokens"].isna() & pts["strategy"].isin(["greedy", "sampling"])
            pts.loc[single, "extra_generated_tokens"] = (pts.loc[single, "total_new_tokens"]
                                                         / (pts.loc[single, "n"] - pts.loc[single, "errors"]))
            write_budget_plot(pts[pts["extra_generated_tokens"].notna()], plot, str(task), qm, qd)
            print(f"[leaderboard] {task}: {plot.name} (test-time scaling: quality vs generated tokens)")
        plots = [out / f"{safe_name(task)}_accuracy_vs_tokens.png"] if budget_plot else []
        task_runs = [r for r in runs if r["dir"].name in set(df["run"])]
        df = df[COLUMNS].reset_index(drop=True)
        name = safe_name(task)
        full.to_csv(out / f"{name}.csv", index=False)
        full.to_parquet(out / f"{name}.parquet", index=False)
        write_markdown(df, out / f"{name}.md", str(task), qm, qd)
        write_plot(df, out / f"{name}_quality_vs_speed.png", str(task), qm, qd)
        sections.append({"task": task, "label": metrics.quality_label(qm, qd), "df": df, "runs": task_runs,
                         "plots": [out / f"{name}_quality_vs_speed.png"] + plots})
        index.append(f"- **{task}** ({len(df)} run(s), quality = {metrics.quality_label(qm, qd)}): [{name}.md]({name}.md), "
                     f"[{name}.csv]({name}.csv), [{name}.parquet]({name}.parquet), "
                     f"[plot]({name}_quality_vs_speed.png)")
        print(f"[leaderboard] {task}: {len(df)} run(s) -> {out / name}.{{csv,parquet,md}}, "
              f"{name}_quality_vs_speed.png")
    (out / "README.md").write_text("\n".join(index) + "\n")
    from harness.report import write_report

    report = write_report(sections, out / "report.html", SPEEDUP_NOTE)
    print(f"[leaderboard] HTML report {report} (self-contained)")
    print(f"[leaderboard] {len(runs)} run(s) in {df_all['task'].nunique(dropna=False)} task(s); index {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
