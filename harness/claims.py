"""Measured numbers for the paper cards and notebooks, read from committed result files only.

A measurement names its source file and a selector; `measure()` recomputes the number (and its
95% CI where the source has one) from the rows every time, so a card can never show a number its
rows do not back. Three source kinds, chosen by the file's shape:

- runs: a list of run records with `rows` (results/published/*.json written from run folders),
  or a folder / rows.jsonl of runs. Select by `strategy`, a subset of `strategy_params` (`params`)
  and of `task_options`;
  metric `quality` (mean of per-row quality; Wilson CI for right/wrong rows, else bootstrap), `tokens_per_example`,
  `extra_<counter>` (mean per example), `n`.
- bench: a `benchmarks/bench_decoding.py` JSON (`runs` with per-prompt seconds). Metric
  `speedup` of `method` over `baseline` (ratio of tokens/s summed over the prompts, paired
  bootstrap CI over prompts), `tok_per_s`, `mat` (tokens per target forward), `identical`.
- json: any JSON; `path` is dotted keys, with list items picked by `[key=value,...]` filters,
  e.g. `points[task=copy,strategy=dllm_topk,k=1].accuracy`; `ci_path` optionally names a
  [low, high] pair beside it.

A selector that matches nothing, or more than one run, is an error (a typo must not become
"not run"); a measurement with no `source` is "not run".
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from harness import metrics
from harness.store import read_rows

ROOT = Path(__file__).resolve().parents[1]


class ClaimError(ValueError):
    """A measurement's source or selector does not resolve."""


def _load(source: str):
    p = ROOT / source
    if not p.exists():
        raise ClaimError(f"source {source} does not exist")
    if p.is_dir():
        runs = []
        for f in sorted(p.glob("*.rows.jsonl")) + sorted(p.glob("*/rows.jsonl")):
            meta_p = f.parent / "meta.json" if f.name == "rows.jsonl" else None
            meta = json.loads(meta_p.read_text()) if meta_p and meta_p.exists() else {}
            name = f.parent.name if f.name == "rows.jsonl" else f.name[: -len(".rows.jsonl")]
            runs.append({"run": name, "strategy": meta.get("strategy") or name.split("-")[1],
                         "strategy_params": meta.get("strategy_params") or {}, "rows": read_rows(f)})
        return runs
    return json.loads(p.read_text())


def kind_of(data) -> str:
    if isinstance(data, list) and data and isinstance(data[0], dict) and "rows" in data[0]:
        return "runs"
    if isinstance(data, dict) and "runs" in data and "totals" in data and "args" in data:
        return "bench"
    return "json"


def _matches(params: dict, want: dict) -> bool:
    for k, v in want.items():
        cur = params
        for part in str(k).split("."):
            if not isinstance(cur, dict) or part not in cur:
                return False
            cur = cur[part]
        if isinstance(v, float) or isinstance(cur, float):
            try:
                if not math.isclose(float(cur), float(v), rel_tol=1e-9, abs_tol=1e-12):
                    return False
            except (TypeError, ValueError):
                return False
        elif cur != v:
            return False
    return True


def select_run(runs: list[dict], strategy: str | None, params: dict | None, task_options: dict | None = None) -> dict:
    hits = [r for r in runs if (strategy is None or r.get("strategy") == strategy)
            and _matches(r.get("strategy_params") or {}, params or {})
            and _matches(r.get("task_options") or {}, task_options or {})]
    if len(hits) != 1:
        names = [r.get("run") for r in hits] or [f"{r.get('strategy')}" for r in runs]
        raise ClaimError(f"selector strategy={strategy} params={params} task_options={task_options} matched {len(hits)} runs "
                         f"({'candidates' if not hits else 'matches'}: {names[:8]})")
    return hits[0]


def _runs_metric(run: dict, metric: str) -> tuple[float, tuple | None, int]:
    rows = [r for r in run["rows"] if not r.get("error")]
    n = len(rows)
    if metric == "quality":
        vals = [r["quality"] for r in rows if r.get("quality") is not None]
        if not vals:
            raise ClaimError(f"run {run.get('run')} has no quality values")
        binary = all(v in (0.0, 1.0) for v in vals)  # right/wrong: Wilson (a bootstrap of all-0 is [0, 0])
        ci = metrics.wilson_ci(int(sum(vals)), len(vals)) if binary else metrics.bootstrap_ci(vals)
        return float(np.mean(vals)), ci, len(vals)
    if metric == "solved":  # binary quality as a count (k of n)
        vals = [r["quality"] for r in rows if r.get("quality") is not None]
        return float(sum(v >= 1.0 for v in vals)), None, len(vals)
    if metric == "large_share":  # model-switching strategies: large-model tokens / new tokens
        got = metrics.large_share(rows, sum(r.get("new_tokens") or 0 for r in rows))
        if not got:
            raise ClaimError(f"run {run.get('run')} rows have no extra.large_tokens")
        return float(got["large_share"]), None, n
    if metric == "n":
        return float(n), None, n
    if metric == "errors":
        return float(len(run["rows"]) - n), None, len(run["rows"])
    if metric == "tokens_per_example":
        vals = [r.get("new_tokens") or 0 for r in rows]
        return float(np.mean(vals)), metrics.bootstrap_ci(vals), n
    if metric.startswith("extra_"):
        key = metric[len("extra_"):]
        vals = [(r.get("extra") or {}).get(key) for r in rows]
        vals = [float(v) for v in vals if isinstance(v, (int, float))]
        if not vals:
            raise ClaimError(f"run {run.get('run')} rows have no extra.{key}")
        return float(np.mean(vals)), metrics.bootstrap_ci(vals), len(vals)
    raise ClaimError(f"unknown runs metric {metric!r} (quality, solved, large_share, n, errors, tokens_per_example, extra_<counter>)")


def _bench_metric(data: dict, method: str, metric: str, baseline: str, n_boot: int = 2000):
    runs = data["runs"]
    if method not in data["totals"]:
        raise ClaimError(f"bench has no method {method!r} (has: {sorted(data['totals'])})")
    mine = [r for r in runs if r["method"] == method]
    if metric == "tok_per_s":
        return sum(r["new_tokens"] for r in mine) / sum(r["seconds"] for r in mine), None, len(mine)
    if metric == "mat":
        fw = sum(r.get("target_forwards") or 0 for r in mine)
        return sum(r["new_tokens"] for r in mine) / fw, None, len(mine)
    if metric == "identical":
        return float(sum(bool(r.get("identical")) for r in mine)), None, len(mine)
    if metric != "speedup":
        raise ClaimError(f"unknown bench metric {metric!r} (speedup, tok_per_s, mat, identical)")
    if baseline not in data["totals"]:
        raise ClaimError(f"bench has no baseline {baseline!r}")
    base = {(r["prompt"], r.get("repeat", 0)): r for r in runs if r["method"] == baseline}
    pairs = [(r, base[(r["prompt"], r.get("repeat", 0))]) for r in mine if (r["prompt"], r.get("repeat", 0)) in base]
    if not pairs:
        raise ClaimError(f"no prompt measured for both {method} and {baseline}")
    a = np.array([[p[0]["new_tokens"], p[0]["seconds"], p[1]["new_tokens"], p[1]["seconds"]] for p in pairs], float)

    def ratio(m):
        return (m[:, 0].sum() / m[:, 1].sum()) / (m[:, 2].sum() / m[:, 3].sum())

    rng = np.random.default_rng(0)
    boots = [ratio(a[rng.integers(0, len(a), len(a))]) for _ in range(n_boot)]
    return float(ratio(a)), (float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))), len(pairs)


_ITEM = re.compile(r"^(?P<key>[^\[\]]+)(\[(?P<filt>[^\]]*)\])?$")


def _coerce(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False, "null": None}.get(v, v)


def json_path(data, path: str):
    cur = data
    for part in re.split(r"\.(?![^\[]*\])", path):  # dots inside [..] filters belong to values
        m = _ITEM.match(part)
        if not m:
            raise ClaimError(f"bad path element {part!r}")
        key, filt = m["key"], m["filt"]
        if not isinstance(cur, dict) or key not in cur:
            raise ClaimError(f"path {path}: no key {key!r}")
        cur = cur[key]
        if filt is not None:
            want = dict(kv.split("=", 1) for kv in filt.split(",") if kv)
            hits = [x for x in cur if isinstance(x, dict) and all(str(x.get(k)) == v or x.get(k) == _coerce(v)
                                                                  for k, v in want.items())]
            if len(hits) != 1:
                raise ClaimError(f"path {path}: filter [{filt}] matched {len(hits)} items")
            cur = hits[0]
    return cur


def measure(m: dict) -> dict:
    """Recompute one measurement: {value, ci, n, source, selector, kind} (value None = not run)."""
    if not m.get("source"):
        return {"value": None, "ci": None, "n": 0, "status": "not run", **m}
    data = _load(m["source"])
    kind = kind_of(data)
    if kind == "runs":
        run = select_run(data, m.get("strategy"), m.get("params"), m.get("task_options"))
        value, ci, n = _runs_metric(run, m.get("metric", "quality"))
        selector = f"run {run.get('run')}"
    elif kind == "bench":
        value, ci, n = _bench_metric(data, m["method"], m.get("metric", "speedup"), m.get("baseline", "greedy"))
        selector = f"method {m['method']}" + (f" vs {m.get('baseline', 'greedy')}" if m.get("metric", "speedup") == "speedup" else "")
    else:
        value = json_path(data, m["path"])
        if not isinstance(value, (int, float)):
            raise ClaimError(f"{m['source']}:{m['path']} is not a number ({type(value).__name__})")
        ci = tuple(json_path(data, m["ci_path"])) if m.get("ci_path") else None
        n = int(json_path(data, m["n_path"])) if m.get("n_path") else None
        selector = m["path"]
    scale = float(m.get("scale", 1.0))
    return {**m, "value": float(value) * scale, "ci": tuple(c * scale for c in ci) if ci else None, "n": n,
            "kind": kind, "selector": selector, "status": "measured"}


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"
