"""The leaderboard on hand-written run folders: numbers, baseline choice, outputs, no torch."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness import leaderboard

ROOT = Path(__file__).resolve().parents[1]


def row(eid, quality, new_tokens, wall_s, error=None, drafted=0, accepted=0):
    return {"example_id": eid, "sample": 0, "error": error, "quality": None if error else quality,
            "new_tokens": new_tokens, "wall_s": wall_s, "target_forwards": new_tokens, "draft_forwards": drafted,
            "drafted": drafted, "accepted": accepted, "ttft_s": 0.1}


def make_run(results: Path, name: str, strategy: str, model: str, rows: list[dict], draft=None, mtime=None):
    d = results / name
    d.mkdir(parents=True)
    (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = {"run": name, "task": "arith", "strategy": strategy, "model": model,
            "model_spec": {"dtype": "float32", "name": model}, "max_new_tokens": 32, "quality_metric": "accuracy",
            "strategy_params": {"draft": {"name": draft}} if draft else {}}
    (d / "meta.json").write_text(json.dumps(meta))
    if mtime is not None:
        os.utime(d / "meta.json", (mtime, mtime))


@pytest.fixture
def results(tmp_path):
    res = tmp_path / "results"
    now = os.path.getmtime(tmp_path)
    # the newest greedy run: 30 tokens in 4 s -> 7.5 tok/s; quality 2/3
    make_run(res, "greedy-new", "greedy", "m", [row("e1", 1, 10, 1.0), row("e2", 0, 10, 1.0), row("e3", 1, 10, 2.0)],
             mtime=now + 100)
    # an older greedy run on the same key, much slower: must not be the baseline
    make_run(res, "greedy-old", "greedy", "m", [row("e1", 1, 10, 5.0), row("e2", 0, 10, 5.0)], mtime=now - 100)
    # speculative: e3 errors, e4 is not in the baseline; overall 30 tokens in 3 s -> 10 tok/s; quality 2/3
    make_run(res, "spec", "speculative", "m",
             [row("e1", 1, 10, 0.5, drafted=8, accepted=6), row("e2", 1, 10, 0.5, drafted=8, accepted=6),
              row("e3", None, 0, 0.0, error="RuntimeError: boom"), row("e4", 0, 10, 2.0, drafted=4, accepted=1)],
             draft="tiny")
    # a model nobody ran greedy on: no baseline
    make_run(res, "sampling-other", "sampling", "other", [row("e1", 1, 20, 4.0), row("e2", 1, 20, 4.0)])
    (res / "_hydra").mkdir()
    (res / "incomplete").mkdir()
    (res / "incomplete" / "rows.jsonl").write_text(json.dumps(row("e1", 1, 1, 1.0)) + "\n")
    return res


def test_leaderboard_tables(results, capsys):
    out = results / "leaderboard"
    assert leaderboard.main(["--results", str(results), "--out", str(out)]) == 0
    assert "arith" in capsys.readouterr().out
    df = pd.read_csv(out / "arith.csv").set_index("run")
    assert sorted(df.index) == ["greedy-new", "greedy-old", "sampling-other", "spec"]
    assert set(leaderboard.COLUMNS) <= set(df.columns) | {"run"}

    g, s, o = df.loc["greedy-new"], df.loc["spec"], df.loc["sampling-other"]
    assert g["quality"] == pytest.approx(2 / 3) and g["tokens_per_s"] == pytest.approx(30 / 4)
    assert g["quality_ci_low"] <= g["quality"] <= g["quality_ci_high"]
    assert s["quality"] == pytest.approx(2 / 3) and s["tokens_per_s"] == pytest.approx(30 / 3)
    assert (s["n"], s["errors"], s["draft_model"]) == (4, 1, "tiny")
    assert s["chain_acceptance"] == pytest.approx(13 / 20)
    assert o["tokens_per_s"] == pytest.approx(40 / 8)

    assert g["speedup"] == 1.0 and df.loc["greedy-old", "speedup"] == 1.0
    # on the common ids e1, e2: 20 tokens / 1 s vs the newest greedy's 20 tokens / 2 s
    assert s["speedup"] == pytest.approx((20 / 1.0) / (20 / 2.0))
    assert math.isnan(o["speedup"])

    assert len(pd.read_parquet(out / "arith.parquet")) == 4
    for f in ("arith.md", "arith_quality_vs_speed.png", "README.md"):
        assert (out / f).stat().st_size > 0
    md = (out / "arith.md").read_text()
    assert "indicative only" in md and "| spec |" in md
    assert "arith.md" in (out / "README.md").read_text()


def test_error_rate_metrics_say_lower_is_better(tmp_path, monkeypatch):
    """WER (HyPoradise) is lower-is-better: labels say so and the plot's quality axis is inverted."""
    res = tmp_path / "results"
    make_run(res, "g", "greedy", "m", [row("e1", 0.25, 10, 1.0), row("e2", 0.0, 10, 1.0)])
    meta = json.loads((res / "g" / "meta.json").read_text())
    (res / "g" / "meta.json").write_text(json.dumps({**meta, "quality_metric": "wer", "quality_direction": "lower"}))
    inverted = []
    orig = leaderboard.write_plot

    def spy(df, path, task, qm, direction):
        import matplotlib.axes

        real = matplotlib.axes.Axes.invert_yaxis
        monkeypatch.setattr(matplotlib.axes.Axes, "invert_yaxis", lambda ax: (inverted.append(qm), real(ax)))
        orig(df, path, task, qm, direction)

    monkeypatch.setattr(leaderboard, "write_plot", spy)
    assert leaderboard.main(["--results", str(res), "--out", str(res / "lb")]) == 0
    assert "wer (lower is better)" in (res / "lb" / "arith.md").read_text()
    assert "wer (lower is better)" in (res / "lb" / "README.md").read_text()
    assert inverted == ["wer"]
    from harness import metrics

    assert metrics.lower_is_better("lower") and not metrics.lower_is_better("higher")
    assert metrics.quality_label("accuracy") == "accuracy (higher is better)"
    from tasks.hyporadise import HyPoradise

    assert HyPoradise().direction() == "lower" and HyPoradise().direction("edits") == "lower"


def test_no_runs(tmp_path, capsys):
    assert leaderboard.main(["--results", str(tmp_path), "--out", str(tmp_path / "lb")]) == 0
    assert "no runs" in capsys.readouterr().out
    assert not (tmp_path / "lb").exists()


def test_no_torch_import(results):
    code = ("import sys; from harness import leaderboard; "
            f"leaderboard.main(['--results', {str(results)!r}, '--out', {str(results / 'lb')!r}]); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (results / "lb" / "arith.csv").exists()
