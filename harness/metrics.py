"""Metric definitions, once. Rows store raw sums; every rate here is total / total.

- quality: mean of per-example `quality` (accuracy, pass@1, EM, ...) with a percentile
  bootstrap 95% CI over examples; error rows are counted apart, never scored as wrong.
- tokens/s = sum(new tokens) / sum(generation wall time) (prefill included).
- MAT = sum(new tokens) / sum(target forwards): tokens per target forward, bonus included
  (1.00 for plain decoding).
- chain_acceptance = sum(accepted) / sum(drafted) over rows that verified chains of drafts:
  the share of proposed draft tokens that were emitted.
- tree_acceptance = sum(accepted) / sum(tree_nodes) over rows that verified token trees: the
  accepted path length per tree node (a tree spends nodes on alternatives, so this is small
  by design and not comparable with chain_acceptance).
  Neither counts drafts or nodes that could not be emitted within the token budget, nor
  accepted drafts cut by an EOS or the budget (harness/trace.py).
- forwards per token = sum(target forwards) / sum(new tokens).
- speedup = tokens/s of a run / tokens/s of a plain-decoding run on the same example ids.
- large_share (model-switching strategies only) = sum(extra.large_tokens) / sum(new tokens).
"""

from __future__ import annotations

import math

import numpy as np


def lower_is_better(direction) -> bool:
    """direction: what the task declared for its metric (Task.directions, recorded in meta.json
    as quality_direction): "lower" for error rates (HyPoradise's WER), else "higher"."""
    return str(direction or "higher") == "lower"


def quality_label(quality_metric, direction="higher") -> str:
    """'wer (lower is better)' / 'accuracy (higher is better)'."""
    qm = quality_metric or "quality"
    return f"{qm} ({'lower' if lower_is_better(direction) else 'higher'} is better)"


def bootstrap_ci(values, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def wilson_ci(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (never collapses to a point at 0 or n)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def aggregate(rows: list[dict], secondary=()) -> dict:
    """Summary numbers of a list of rows (one run, or one run restricted to some examples).

    secondary: the task's secondary metrics (Task.secondary_metrics), each a per-row score key
    to average ("strict_match") or a ratio of sums ("corpus_wer=edits/ref_words")."""
    ok = [r for r in rows if not r.get("error")]
    q = [r["quality"] for r in ok if r.get("quality") is not None]
    tot = {k: sum(r.get(k) or 0 for r in ok) for k in
           ("new_tokens", "wall_s", "target_forwards", "draft_forwards", "drafted", "accepted")}
    chain = [r for r in ok if not tree_nodes(r)]
    tree = [r for r in ok if tree_nodes(r)]
    tot["tree_nodes"] = sum(tree_nodes(r) for r in tree)
    if q and all(v in (0.0, 1.0) for v in q):  # right/wrong per example: Wilson (a bootstrap of all-0 is [0, 0])
        lo, hi = wilson_ci(int(sum(q)), len(q))
    else:
        lo, hi = bootstrap_ci(q)
    ttft = [r["ttft_s"] for r in ok if r.get("ttft_s") is not None]
    return {
        "n": len(rows), "errors": len(rows) - len(ok),
        "quality": float(np.mean(q)) if q else math.nan, "quality_ci_low": lo, "quality_ci_high": hi,
        "tokens_per_s": _ratio(tot["new_tokens"], tot["wall_s"]),
        "mat": _ratio(tot["new_tokens"], tot["target_forwards"]),
        "chain_acceptance": _ratio(sum(r.get("accepted") or 0 for r in chain), sum(r.get("drafted") or 0 for r in chain)),
        "tree_acceptance": _ratio(sum(r.get("accepted") or 0 for r in tree), tot["tree_nodes"]),
        "forwards_per_token": _ratio(tot["target_forwards"], tot["new_tokens"]),
        "mean_ttft_s": float(np.mean(ttft)) if ttft else math.nan,
        "peak_rss_mb": max((r["peak_rss_mb"] for r in rows if r.get("peak_rss_mb") is not None), default=None),
        "method_mb": max((r["method_bytes"] / 2 ** 20 for r in rows if r.get("method_bytes") is not None), default=None),
        "outside_model_share": _ratio(sum(r.get("outside_model_s") or 0 for r in ok if r.get("model_s") is not None),
                                      sum(r["wall_s"] for r in ok if r.get("model_s") is not None)),
        **{f"total_{k}": v for k, v in tot.items()},
        "secondary": secondary_metrics(ok, secondary),
        "extra_per_example": extra_means(ok),
        **large_share(ok, tot["new_tokens"]),
        **sandbox_tiers(ok),
        **pass_at_k_by_example(ok),
        **candidate_metrics(ok),
        **paired(ok),
    }


def tree_nodes(row: dict) -> int:
    """Tree nodes a row verified (rows written before the column existed kept it in `extra`)."""
    n = row.get("tree_nodes")
    return int(n if n is not None else (row.get("extra") or {}).get("tree_nodes") or 0)


def extra_means(rows: list[dict]) -> dict:
    """Per-example means of the strategies' own counters (trace.extra: generated tokens over all
    candidates, PRM calls, tree nodes, ...), over the rows that report them."""
    sums: dict = {}
    for r in rows:
        for k, v in (r.get("extra") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                s, n = sums.get(k, (0.0, 0))
                sums[k] = (s + v, n + 1)
    return {k: s / n for k, (s, n) in sorted(sums.items())}


def sandbox_tiers(rows: list[dict]) -> dict:
    """Tasks that run model-written code (HumanEval): {tier: rows} of the sandbox isolation tier
    the rows were scored under; empty when no row ran code."""
    tiers: dict = {}
    for r in rows:
        t = (r.get("score") or {}).get("tier")
        if t:
            tiers[t] = tiers.get(t, 0) + 1
    return {"sandbox_tiers": dict(sorted(tiers.items()))} if tiers else {}


def large_share(rows: list[dict], new_tokens: float) -> dict:
    """Model-switching strategies (EAD): the share of new tokens the large model produced,
    sum(extra.large_tokens) / sum(new tokens); empty when no row reports large_tokens."""
    got = [r["extra"]["large_tokens"] for r in rows if "large_tokens" in (r.get("extra") or {})]
    return {"large_share": _ratio(sum(got), new_tokens)} if got else {}


def secondary_metrics(rows: list[dict], specs) -> dict:
    """The task's secondary metrics over rows: means of score keys, or ratios of summed keys."""
    out = {}
    for spec in specs:
        name, _, ratio = spec.partition("=")
        if ratio:
            num, den = ratio.split("/")
            d = sum((r.get("score") or {}).get(den) or 0 for r in rows)
            out[name] = sum((r.get("score") or {}).get(num) or 0 for r in rows) / d if d else math.nan
        else:
            vals = [(r.get("score") or {}).get(name) for r in rows]
            vals = [float(v) for v in vals if isinstance(v, (int, float))]
            out[name] = float(np.mean(vals)) if vals else math.nan
    return out


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed: 1 - C(n-c, k) / C(n, k), computed as the
    numerically stable product 1 - prod_{i=n-c+1}^{n} (1 - k/i) (Chen et al. 2021, Fig. 3)."""
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_by_example(rows: list[dict], ks=(1, 2, 5, 10, 20, 50, 100)) -> dict:
    """Unbiased pass@k averaged over examples, from n samples per example (rows sharing an
    example_id; a sample passes when quality == 1). Only k <= the smallest n is reported;
    empty when every example has a single sample."""
    by_ex: dict = {}
    for r in rows:
        if r.get("quality") is not None:
            n, c = by_ex.get(r["example_id"], (0, 0))
            by_ex[r["example_id"]] = (n + 1, c + (r["quality"] == 1))
    if not by_ex or min(n for n, _ in by_ex.values()) < 2:
        return {}
    n_min = min(n for n, _ in by_ex.values())
    return {f"pass@{k}": float(np.mean([pass_at_k(n, c, k) for n, c in by_ex.values()]))
            for k in ks if k <= n_min}


def baseline_key(meta: dict) -> tuple:
    """What a plain-decoding baseline must share with a run: task (and its options, e.g. a
    subtask or a document order), the model's real identity (hub id, or pack + sha256: never
    the config's name), dtype, token budget, device and torch threads."""
    options = ",".join(f"{k}={v}" for k, v in sorted((meta.get("task_options") or {}).items()))
    spec = meta.get("model_spec") or {}
    return (meta.get("task"), options, spec.get("identity") or meta.get("model"), spec.get("dtype"),
            meta.get("max_new_tokens"), meta.get("device"), meta.get("threads"))


def paired(rows: list[dict]) -> dict:
    """Summary of the in-process paired baseline (run.paired_baseline): greedy timed on the same
    engine and example, interleaved with the strategy. speedup = tokens/s ratio (sums over the
    rows), with a bootstrap CI over examples; identical = share of rows whose tokens equal greedy's;
    for search methods the cost ratios (wall time, generated tokens) beside greedy's."""
    ok = [r for r in rows if not r.get("error") and r.get("paired_greedy")]
    if not ok:
        return {}
    base = [r["paired_greedy"] for r in ok]

    def sp(idx):
        a = _ratio(sum(ok[i]["new_tokens"] for i in idx), sum(ok[i]["wall_s"] for i in idx))
        b = _ratio(sum(base[i]["new_tokens"] for i in idx), sum(base[i]["wall_s"] for i in idx))
        return _ratio(a, b)

    rng = np.random.default_rng(0)
    n = len(ok)
    boots = sorted(sp(rng.integers(0, n, n)) for _ in range(1000)) if n > 1 else []
    gen = [((r.get("extra") or {}).get("generated_tokens") or r["new_tokens"]) for r in ok]
    bq = [b.get("quality") for b in base if b.get("quality") is not None]
    return {"paired_n": n, "paired_speedup": sp(range(n)),
            "paired_speedup_ci_low": boots[25] if boots else math.nan,
            "paired_speedup_ci_high": boots[974] if boots else math.nan,
            "paired_identical": float(np.mean([bool(b.get("identical")) for b in base])),
            "paired_tie_consistent": float(np.mean([bool(b.get("identical") or b.get("tie_consistent"))
                                                    for b in base])),
            "paired_greedy_quality": float(np.mean(bq)) if bq else math.nan,
            "paired_greedy_tokens_per_s": _ratio(sum(b["new_tokens"] for b in base), sum(b["wall_s"] for b in base)),
            "paired_wall_ratio": _ratio(sum(r["wall_s"] for r in ok), sum(b["wall_s"] for b in base)),
            "paired_generated_ratio": _ratio(sum(gen), sum(b["new_tokens"] for b in base))}


def strict_json(obj):
    """obj with every NaN / inf float replaced by None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def speedup(rows: list[dict], baseline_rows: list[dict]) -> tuple[float, int]:
    """tokens/s ratio on the example ids both runs finished without error; (ratio, n common)."""
    key = lambda r: (r["example_id"], r.get("sample", 0))  # noqa: E731
    base = {key(r): r for r in baseline_rows if not r.get("error")}
    mine = [r for r in rows if not r.get("error") and key(r) in base]
    if not mine:
        return math.nan, 0
    a = aggregate(mine)["tokens_per_s"]
    b = aggregate([base[key(r)] for r in mine])["tokens_per_s"]
    return _ratio(a, b), len(mine)


# ----------------------------------------------------------------------------- multi-output rows
def _ngrams(words: list[str], n: int) -> list[tuple]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): distinct word n-grams / all word n-grams over the texts."""
    grams = [g for t in texts for g in _ngrams(t.split(), n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def sentence_bleu(hyp: str, refs: list[str], max_n: int = 4) -> float:
    """BLEU of one hypothesis against references (Papineni et al. 2002): clipped n-gram precisions
    for n = 1..max_n, geometric mean, brevity penalty against the closest reference length;
    precisions for n > 1 add one to numerator and denominator (Lin & Och 2004 smoothing), so a
    short text without a matching 4-gram does not score 0 outright. Whitespace words."""
    h = hyp.split()
    rs = [r.split() for r in refs]
    if not h or not rs:
        return 0.0
    logs = 0.0
    for n in range(1, max_n + 1):
        grams = _ngrams(h, n)
        counts: dict = {}
        for g in grams:
            counts[g] = counts.get(g, 0) + 1
        best: dict = {}
        for r in rs:
            rc: dict = {}
            for g in _ngrams(r, n):
                rc[g] = rc.get(g, 0) + 1
            for g, c in rc.items():
                best[g] = max(best.get(g, 0), c)
        match = sum(min(c, best.get(g, 0)) for g, c in counts.items())
        total = len(grams)
        if n > 1:
            match, total = match + 1, total + 1
        if match == 0 or total == 0:
            return 0.0
        logs += math.log(match / total) / max_n
    ref_len = min((len(r) for r in rs), key=lambda L: (abs(L - len(h)), L))
    bp = 1.0 if len(h) > ref_len else math.exp(1 - ref_len / len(h))
    return bp * math.exp(logs)


def self_bleu(texts: list[str]) -> float:
    """Self-BLEU (Zhu et al. 2018): mean BLEU of each text against all the others (1 = the texts
    are copies of each other, near 0 = no shared n-grams). NaN with fewer than two texts."""
    if len(texts) < 2:
        return math.nan
    return float(np.mean([sentence_bleu(t, texts[:i] + texts[i + 1:]) for i, t in enumerate(texts)]))


def diversity(texts: list[str]) -> dict:
    """Diversity across one example's outputs (beams, drafts): distinct-1/2 and self-BLEU."""
    return {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2), "self_bleu": self_bleu(texts)}


def candidate_metrics(rows: list[dict]) -> dict:
    """Runs whose rows keep several outputs per example (beam search, superposed drafts): mean
    oracle quality (the best output's, by the task's direction) and mean diversity; empty
    otherwise."""
    got = [r for r in rows if r.get("oracle_quality") is not None]
    if not got:
        return {}
    out = {"oracle_quality": float(np.mean([r["oracle_quality"] for r in got]))}
    for k in ("distinct_1", "distinct_2", "self_bleu"):
        v = [r["diversity"][k] for r in got if isinstance((r.get("diversity") or {}).get(k), float)
             and not math.isnan(r["diversity"][k])]
        out[k] = float(np.mean(v)) if v else math.nan
    return out


# ---------------------------------------------------------------------------- accuracy under parallelism
def aup_weight(y: float, y_max: float, alpha: float = 3.0) -> float:
    """AUP's quality weight W(y) = min(exp(-alpha (1 - y / y_max)), 1)."""
    return min(math.exp(-alpha * (1 - y / y_max)), 1.0) if y_max > 0 else 0.0


def aup(rho: list[float], y: list[float], y_max: float | None = None, alpha: float = 3.0,
        offset: float = 5.0) -> float:
    """Accuracy Under Parallelism (Qian et al. 2026, d3LLM; the dLLM leaderboard's metric).

    rho: parallelism of each operating point (tokens per forward); y: its accuracy in PERCENT.
    Points are sorted by rho; only those with y >= y_1 - offset (y_1 = the accuracy at the
    smallest rho) count; AUP = rho_1 y_1 W(y_1) + sum_i (rho_i - rho_{i-1}) (y_i W(y_i) + y_{i-1} W(y_{i-1})) / 2,
    the area under the weighted accuracy-parallelism curve, W penalising accuracy below y_max
    (default: the best y given; the leaderboard uses the best of all methods on the task). Our reading:
    the first point is weighted too, so a fast method far below y_max is not rewarded for speed alone."""
    if len(rho) != len(y) or not rho:
        raise ValueError("aup needs equally many (> 0) parallelism and accuracy values")
    if any(r <= 0 for r in rho):
        raise ValueError("aup: parallelism values must be positive")
    pts = sorted(zip(rho, y))
    y_max = max(y) if y_max is None else y_max
    y1 = pts[0][1]
    pts = [(r, a) for r, a in pts if a >= y1 - offset]
    total = pts[0][0] * pts[0][1] * aup_weight(pts[0][1], y_max, alpha)
    for (r0, a0), (r1, a1) in zip(pts, pts[1:]):
        total += (r1 - r0) * (a1 * aup_weight(a1, y_max, alpha) + a0 * aup_weight(a0, y_max, alpha)) / 2
    return total
