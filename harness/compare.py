"""Paper-vs-paper comparison helpers for the notebooks: tables and plots from committed results only.

Nothing here loads a model or imports torch. Each notebook in notebooks/ calls these on the files
under results/published/ (the same rows the paper cards read), so a notebook, a card and the
README can never disagree about a number.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from harness import cards, claims, metrics

ROOT = claims.ROOT
PUBLISHED = ROOT / "results" / "published"


def claims_table(family: str) -> pd.DataFrame:
    """The claim-vs-measured table of one family: one line per measurement of every paper."""
    lines = []
    for spec in cards.load_specs(ROOT / "conf" / "papers"):
        if spec["family"] != family:
            continue
        c = spec["claim"]
        claim = cards.claim_headline(c)
        for r in cards.measured(spec):
            v, ci = cards.value_text(r)
            lines.append({"paper": spec["title"].split(":")[0], "paper's claim": claim,
                          "paper's setting": f"{c['model']}; {c['hardware']}; {c['task']}",
                          "our quantity": r["label"], "ours": v, "95% CI": ci, "n": r.get("n"),
                          "source": r.get("source") or "no rows"})
    if not lines:
        raise ValueError(f"no paper spec has family {family!r}")
    return pd.DataFrame(lines)


def bench_table(name: str, baseline: str = "greedy") -> pd.DataFrame:
    """Per method of one bench_decoding JSON: tok/s, speedup over `baseline` (paired bootstrap CI), MAT."""
    src = f"results/published/{name}"
    data = json.loads((ROOT / src).read_text())
    out = []
    for method in data["totals"]:
        sp = claims.measure({"source": src, "method": method, "metric": "speedup", "baseline": baseline})
        mat = claims.measure({"source": src, "method": method, "metric": "mat"})
        tps = claims.measure({"source": src, "method": method, "metric": "tok_per_s"})
        ident = claims.measure({"source": src, "method": method, "metric": "identical"})
        out.append({"method": method, "tok/s": tps["value"], "speedup": sp["value"], "ci_low": sp["ci"][0],
                    "ci_high": sp["ci"][1], "MAT": mat["value"],
                    "identical": f"{int(ident['value'])}/{ident['n']}"})
    df = pd.DataFrame(out)
    df.attrs["model"] = f"{data['args'].get('model')} (draft {data['args'].get('draft')}), {data['args'].get('dtype')}"
    return df


def runs_table(name: str) -> pd.DataFrame:
    """One line per run of a published runs file (or folder): quality with its CI, n, tokens, counters."""
    src = f"results/published/{name}"
    data = claims._load(src)
    out = []
    for run in data:
        ok = [r for r in run["rows"] if not r.get("error")]
        agg = metrics.aggregate(run["rows"])
        params = {k: v for k, v in (run.get("strategy_params") or {}).items()
                  if k in ("temperature", "top_p", "min_p", "top_h", "beams", "groups", "diversity")
                  and v not in (None, 0, 0.0, 1.0, False)}
        line = {"strategy": run["strategy"], "params": ", ".join(f"{k}={v}" for k, v in params.items()),
                "n": len(ok), "quality": agg["quality"], "ci_low": agg["quality_ci_low"],
                "ci_high": agg["quality_ci_high"],
                "new_tokens / example": sum(r.get("new_tokens") or 0 for r in ok) / max(len(ok), 1)}
        for key in ("squad_em", "squad_f1"):
            vals = [(r.get("score") or {}).get(key) for r in ok]
            if any(v is not None for v in vals):
                line[key] = sum(v or 0 for v in vals) / len(vals)
        gen = [(r.get("extra") or {}).get("generated_tokens") for r in ok]
        if any(g is not None for g in gen):
            line["generated tokens / example"] = sum(g or 0 for g in gen) / len(gen)
        out.append(line)
    return pd.DataFrame(out)


def parallelbench_points(name: str = "parallelbench_sweep.json") -> pd.DataFrame:
    data = json.loads((PUBLISHED / name).read_text())
    df = pd.DataFrame(data["points"])
    df["ci_low"] = [c[0] if isinstance(c, list) else math.nan for c in df.get("ci", [None] * len(df))]
    df["ci_high"] = [c[1] if isinstance(c, list) else math.nan for c in df.get("ci", [None] * len(df))]
    return df


def accuracy_axis(ax, label: str = "accuracy") -> None:
    """Accuracy axes always span [0, 1] (a fixed scale: two equal points must not look apart)."""
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)


def plot_speedup_vs_mat(tables: dict, ax) -> None:
    """Speedup (with its CI) against MAT, one marker per bench file, methods labelled."""
    from harness.plots import label_points, zero_based

    markers = "osD^v<>"
    xs, ys, names = [], [], []
    for i, (label, df) in enumerate(tables.items()):
        err = [(df["speedup"] - df["ci_low"]).clip(lower=0), (df["ci_high"] - df["speedup"]).clip(lower=0)]
        ax.errorbar(df["MAT"], df["speedup"], yerr=err, fmt=markers[i % len(markers)], capsize=3, label=label)
        xs += list(df["MAT"])
        ys += list(df["speedup"])
        names += list(df["method"])
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("MAT (tokens per target forward)")
    ax.set_ylabel("speedup over greedy (same process), 95% CI")
    zero_based(ax, "x", xs)
    zero_based(ax, "y", ys + [1.0])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    label_points(ax, xs, ys, names, fontsize=6)  # after the limits: labels placed apart


def per_task_curves(pts: pd.DataFrame, x: str, xlabel: str, families=None, ar_line: bool = False):
    """One panel per task: accuracy against column `x` for every family (log2 x axis)."""
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(pts["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.5), sharey=True, squeeze=False)
    for ax, t in zip(axes[0], tasks):
        d = pts[(pts["task"] == t) & (pts["family"] != "ar_twin")]
        if families is not None:
            d = d[d["family"].isin(families)]
        for fam, g in d.groupby("family"):
            g = g.sort_values(x)
            ax.plot(g[x], g["accuracy"], marker="o", label=fam)
        ar = pts[(pts["task"] == t) & (pts["family"] == "ar_twin")]
        if ar_line and len(ar):
            ax.axhline(float(ar["accuracy"].iloc[0]), color="k", ls="--", lw=1, label="AR twin")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_title(t)
        accuracy_axis(ax)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return fig
