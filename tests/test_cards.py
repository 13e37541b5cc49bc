"""Paper cards: every number is recomputed from committed rows; a bad selector is an error."""

import json

import pytest
import yaml

from harness import cards, claims
from tests.conftest import ROOT


def test_every_seed_paper_has_a_card_and_the_committed_cards_match_their_rows():
    specs = cards.load_specs(ROOT / "conf" / "papers")
    assert len(specs) == 31
    pages = cards.build(ROOT / "conf" / "papers", ROOT / "docs" / "cards", write=False)
    assert len(pages) == 32  # 31 cards + the index
    stale = [n for n, t in pages.items() if (ROOT / "docs" / "cards" / n).read_text() != t]
    assert not stale, f"docs/cards out of date (run make cards): {stale}"
    assert cards.main(["--check"]) == 0


def test_every_strategy_named_on_a_card_exists():
    names = {p.stem for p in (ROOT / "conf" / "strategy").glob("*.yaml")}
    for spec in cards.load_specs(ROOT / "conf" / "papers"):
        assert set(spec.get("strategies") or []) <= names, spec["id"]


def _runs_file(tmp_path, qualities, name="runs.json"):
    runs = [{"run": "r-greedy", "strategy": "greedy", "strategy_params": {"temperature": 0.0},
             "rows": [{"example_id": str(i), "quality": q, "new_tokens": 10 + i, "extra": {"pauses": i}}
                      for i, q in enumerate(qualities)]},
            {"run": "r-samp", "strategy": "sampling", "strategy_params": {"temperature": 2.0, "min_p": 0.1},
             "rows": [{"example_id": "0", "quality": 0.0}, {"example_id": "1", "error": "boom"}]}]
    p = tmp_path / name
    p.write_text(json.dumps(runs))
    return p


def _spec(tmp_path, source, **m):
    return {"id": "x", "title": "T", "cite": "c", "family": "quality", "strategies": [],
            "claim": {"text": "t", "model": "m", "hardware": "h", "task": "k", "value": 1.0, "unit": "u"},
            "ours": {"setting": "s", "command": "c", "measurements": [{"label": "L", "source": source, **m}]},
            "differs": "d"}


def test_card_number_is_the_mean_of_the_rows_and_moves_with_them(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "ROOT", tmp_path)
    _runs_file(tmp_path, [1.0, 0.0, 1.0, 1.0])
    spec = _spec(tmp_path, "runs.json", strategy="greedy", metric="quality", digits=2)
    r = cards.measured(spec)
    assert r[0]["value"] == pytest.approx(0.75) and r[0]["n"] == 4
    assert "| L | 0.75 |" in cards.render_card(spec, r)
    _runs_file(tmp_path, [0.0, 0.0, 1.0, 1.0])  # the rows change -> the card changes
    assert cards.measured(spec)[0]["value"] == pytest.approx(0.5)
    solved = cards.measured(_spec(tmp_path, "runs.json", strategy="greedy", metric="solved"))
    assert cards.value_text(solved[0])[0] == "2/4"
    ex = cards.measured(_spec(tmp_path, "runs.json", strategy="greedy", metric="extra_pauses"))
    assert ex[0]["value"] == pytest.approx(1.5)
    # params select among runs of one strategy; an errored row does not count
    s = cards.measured(_spec(tmp_path, "runs.json", strategy="sampling", params={"min_p": 0.1}, metric="n"))
    assert s[0]["value"] == 1


@pytest.mark.parametrize("m", [{"strategy": "beam"}, {"strategy": "sampling", "params": {"min_p": 0.2}},
                               {"strategy": None}, {"strategy": "greedy", "metric": "nope"}])
def test_a_selector_that_does_not_resolve_is_an_error_never_not_run(tmp_path, monkeypatch, m):
    monkeypatch.setattr(claims, "ROOT", tmp_path)
    _runs_file(tmp_path, [1.0])
    with pytest.raises(cards.CardError):
        cards.measured(_spec(tmp_path, "runs.json", **m))


def test_missing_source_file_is_an_error_and_no_source_is_not_run(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "ROOT", tmp_path)
    with pytest.raises(cards.CardError, match="does not exist"):
        cards.measured(_spec(tmp_path, "gone.json", strategy="greedy"))
    spec = _spec(tmp_path, None)
    r = cards.measured(spec)
    assert cards.status(r) == "not run" and "| L | not run |" in cards.render_card(spec, r)


def test_bench_speedup_is_the_ratio_of_summed_rates_with_a_paired_ci(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "ROOT", tmp_path)
    runs = []
    for i, (tg, tm) in enumerate([(10.0, 5.0), (20.0, 8.0), (10.0, 4.0)]):
        runs.append({"prompt": f"p{i}", "repeat": 0, "method": "greedy", "new_tokens": 100, "seconds": tg,
                     "target_forwards": 100})
        runs.append({"prompt": f"p{i}", "repeat": 0, "method": "fast", "new_tokens": 100, "seconds": tm,
                     "target_forwards": 40})
    (tmp_path / "b.json").write_text(json.dumps({"args": {}, "totals": {"greedy": {}, "fast": {}}, "runs": runs}))
    r = claims.measure({"source": "b.json", "method": "fast", "metric": "speedup"})
    assert r["value"] == pytest.approx((300 / 17) / (300 / 40))
    assert r["ci"][0] <= r["value"] <= r["ci"][1] and r["n"] == 3
    assert claims.measure({"source": "b.json", "method": "fast", "metric": "mat"})["value"] == pytest.approx(2.5)
    with pytest.raises(claims.ClaimError):
        claims.measure({"source": "b.json", "method": "slow", "metric": "speedup"})


def test_json_paths_pick_list_items_by_filters_with_dotted_values(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "ROOT", tmp_path)
    data = {"points": [{"task": "copy", "k": 1, "t": 0.5, "acc": 0.3, "ci": [0.2, 0.4]},
                       {"task": "copy", "k": 2, "t": 0.5, "acc": 0.1, "ci": [0.0, 0.2]}], "aup": {"copy": {"x": 7.5}}}
    (tmp_path / "j.json").write_text(json.dumps(data))
    r = claims.measure({"source": "j.json", "path": "points[task=copy,k=2,t=0.5].acc", "ci_path": "points[task=copy,k=2].ci"})
    assert r["value"] == 0.1 and r["ci"] == (0.0, 0.2)
    assert claims.measure({"source": "j.json", "path": "aup.copy.x"})["value"] == 7.5
    with pytest.raises(claims.ClaimError, match="matched 2"):
        claims.measure({"source": "j.json", "path": "points[task=copy].acc"})


def test_spec_validation_names_the_file(tmp_path):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"title": "t", "cite": "c", "family": "nope", "claim": {},
                                                       "ours": {}, "differs": ""}))
    with pytest.raises(cards.CardError, match="bad.yaml"):
        cards.load_specs(tmp_path)
