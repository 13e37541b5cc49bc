"""Metric definitions: totals over totals, bootstrap CI, pass@k over samples, speedup on common ids."""

import math

import pytest

from harness import metrics


def row(ex, q, s=0, tokens=10, wall=1.0, fw=10, drafted=0, accepted=0, score=None, error=None):
    return {"example_id": ex, "sample": s, "quality": q, "new_tokens": tokens, "wall_s": wall, "target_forwards": fw,
            "draft_forwards": 0, "drafted": drafted, "accepted": accepted, "score": score or {}, "error": error}


def test_aggregate_is_total_over_total_and_skips_errors():
    rows = [row("a", 1.0, tokens=30, wall=1.0, fw=10, drafted=20, accepted=15),
            row("b", 0.0, tokens=10, wall=4.0, fw=10, drafted=10, accepted=0),
            row("c", None, error="RuntimeError: x")]
    a = metrics.aggregate(rows)
    assert a["n"] == 3 and a["errors"] == 1 and a["quality"] == 0.5
    assert a["tokens_per_s"] == pytest.approx(40 / 5.0) and a["mat"] == pytest.approx(40 / 20)
    assert a["chain_acceptance"] == pytest.approx(15 / 30) and a["forwards_per_token"] == pytest.approx(0.5)
    assert a["quality_ci_low"] <= 0.5 <= a["quality_ci_high"]


def test_secondary_metrics_are_averaged():
    rows = [row("a", 1.0, score={"strict_match": 1.0, "flexible_match": 1.0, "extracted": "3"}),
            row("b", 0.0, score={"strict_match": 0.0, "flexible_match": 1.0, "extracted": None})]
    agg = metrics.aggregate(rows, ("strict_match", "flexible_match", "missing", "ratio=strict_match/flexible_match"))
    assert agg["secondary"]["strict_match"] == 0.5 and agg["secondary"]["flexible_match"] == 1.0
    assert math.isnan(agg["secondary"]["missing"]) and agg["secondary"]["ratio"] == 0.5


def test_pass_at_k_over_samples():
    rows = [row("a", q, s=i) for i, q in enumerate([1.0, 0.0, 0.0])] + \
           [row("b", q, s=i) for i, q in enumerate([0.0, 0.0, 0.0])]
    a = metrics.aggregate(rows)
    assert a["pass@1"] == pytest.approx((1 / 3 + 0) / 2)
    assert a["pass@2"] == pytest.approx((1 - math.comb(2, 2) / math.comb(3, 2)) / 2)
    assert "pass@5" not in a and "pass@1" not in metrics.aggregate([row("a", 1.0)])


def test_speedup_uses_common_examples_only():
    base = [row("a", 1, tokens=10, wall=2.0), row("b", 1, tokens=10, wall=2.0)]
    mine = [row("a", 1, tokens=10, wall=1.0), row("z", 1, tokens=10, wall=100.0)]
    sp, n = metrics.speedup(mine, base)
    assert n == 1 and sp == pytest.approx(2.0)


def test_sandbox_tiers_are_counted_and_a_weaker_tier_is_loud():
    from harness.runner import format_summary

    rows = [row("a", 1.0, score={"tier": "full"}), row("b", 0.0, score={"tier": "none"})]
    a = metrics.aggregate(rows)
    assert a["sandbox_tiers"] == {"full": 1, "none": 1}
    assert "WARNING: model-written code ran in a WEAKER sandbox tier" in format_summary({"run": "r", **a})
    assert "sandbox_tiers" not in metrics.aggregate([row("a", 1.0)])
