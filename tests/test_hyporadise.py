"""HyPoradise: data, ids, malformed rows, WER scoring, oracles vs the README, N-best strategies."""

import json
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from harness.errors import ConfigError
from harness.runner import run
from harness.store import read_rows
from strategies.nbest_first import NBestFirst
from strategies.nbest_rerank import NBestRerank
from tasks.hyporadise import (README_ORACLES, ROWS, SETS, HyPoradise, bag_oracle_edits, cn_oracle_edits,
                              confusion_network, corpus_wer, edit_distance, format_nbest, oracle_report,
                              parse_nbest, wer_by_set, words)
from tests.conftest import ROOT

DATA = Path(os.environ["HARNESS_DATA_DIR"])
needs_data = pytest.mark.skipif(not (DATA / "hyporadise").is_dir(), reason="HARNESS_DATA_DIR has no hyporadise")


@pytest.fixture(scope="module")
def loaded():
    """Every set loaded once: {set: examples}."""
    return {s: HyPoradise(sets=[s]).load() for s in SETS}


@needs_data
def test_every_set_loads_with_its_row_count_and_unique_ids(loaded):
    ids = []
    for s in SETS:
        ex = loaded[s]
        assert len(ex) == ROWS[s], s
        assert all(len(e["nbest"]) == 5 and e["set"] == s and e["reference"] for e in ex)
        ids += [e["id"] for e in ex]
    assert len(ids) == len(set(ids)) == sum(ROWS.values())  # unique across all 11 files, WSJ twice included
    assert "asr_scores" in loaded["wsj_score"][0] and "asr_scores" in loaded["atis"][0]
    assert HyPoradise(sets=["cv", "td3"], limit=3).load() == loaded["cv"][:3] + loaded["td3"][:3]  # limit per set


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="same 836 WSJ utterances"):
        HyPoradise(sets=["wsj", "wsj_score"])
    with pytest.raises(ConfigError, match="unknown set"):
        HyPoradise(sets=["librispeech"])
    with pytest.raises(ConfigError, match="shots"):
        HyPoradise(shots=-1)
    with pytest.raises(ConfigError, match="normalize"):
        HyPoradise(normalize="whisper")


def test_malformed_rows_are_named(tmp_path):
    good = {"input": ["a b", "a c"], "output": "a b"}
    f = tmp_path / "test_cv.json"
    cases = [([good, {"input": "a b", "output": "a b"}], r"test_cv.json: row 1: 'input' must be a non-empty list"),
             ([good, good, {"input": ["x"]}], r"test_cv.json: row 2: missing field\(s\) output"),
             ([{"input": ["x"], "output": " "}], r"test_cv.json: row 0: 'output'"),
             ([{"input": ["x\ny"], "output": "x"}], r"test_cv.json: row 0: a hypothesis contains a newline"),
             ([{"input": ["x", "y"], "output": "x", "score": [1.0]}], r"row 0: 'score' must be a list of 2"),
             ({"input": ["x"]}, r"test_cv.json: expected a JSON array")]
    for data, msg in cases:
        f.write_text(json.dumps(data))
        with pytest.raises(ConfigError, match=msg):
            HyPoradise(path=str(tmp_path), sets=["cv"]).load()
    f.write_text("[{not json")
    with pytest.raises(ConfigError, match=r"test_cv.json: not valid JSON"):
        HyPoradise(path=str(f), sets=["cv"]).load()  # a single file works for a single set
    f.write_text(json.dumps([{"input": ["x"], "output": "123 !"}]))
    with pytest.raises(ConfigError, match="row 0: the reference has no words"):
        HyPoradise(path=str(tmp_path), sets=["cv"]).load()
    with pytest.raises(ConfigError, match="test_td3.json not found"):
        HyPoradise(path=str(tmp_path), sets=["cv", "td3"]).check_data()


@needs_data
def test_gold_scores_zero_and_empty_scores_one(loaded):
    for norm in ("paper", "none"):
        task = HyPoradise(sets=["chime4"], normalize=norm)
        for e in loaded["chime4"][:50] + loaded["swbd"][:50]:
            gold = task.score(e, e["reference"])
            assert gold["quality"] == gold["wer"] == 0.0 and gold["edits"] == 0
            empty = task.score(e, "")
            assert empty["quality"] == 1.0 and empty["edits"] == empty["ref_words"] == len(e["reference"].split())
    task = HyPoradise(sets=["cv"])
    e = {"set": "cv", "reference": "it was formed by floyd soileau"}
    assert task.score(e, "It was formed, by Floyd Soileau.\nExplanation: ...")["quality"] == 0.0  # paper normalisation
    s = task.score(e, "it was formed by floyd")
    assert (s["edits"], s["ref_words"], s["quality"]) == (1, 6, pytest.approx(1 / 6))
    assert words("Twenty-eight 28 don't!", "paper") == ["twentyeight", "dont"]


@needs_data
def test_onb_matches_the_readme_and_jiwer_agrees():
    sets = [s for s in README_ORACLES if s != "wsj"] + ["wsj"]
    for r in oracle_report(sets, normalize="none", compositional=False):
        assert abs(100 * r["onb_utt"] - r["readme_onb"]) <= 0.1, (r["set"], 100 * r["onb_utt"], r["readme_onb"])
        assert r["onebest_utt"] >= r["onb_utt"] >= r["bag_utt"]
        assert r["jiwer_onb_corpus"] == pytest.approx(r["onb_corpus"])
        assert r["jiwer_onebest_corpus"] == pytest.approx(r["onebest_corpus"])


@needs_data
def test_compositional_oracle_is_below_nbest_oracle():
    for s in ("swbd", "lrs2", "coraal", "chime4"):
        for r in HyPoradise(sets=[s]).raw_rows(s)[:150]:
            ref = words(r["output"], "none")
            hyps = [words(h, "none") for h in r["input"]]
            cp = cn_oracle_edits(confusion_network(hyps), ref)
            assert bag_oracle_edits(hyps, ref) <= cp <= min(edit_distance(h, ref) for h in hyps)
    rep = oracle_report(["swbd", "lrs2"], normalize="paper", limit=150)
    assert all(r["ocp_utt"] <= r["onb_utt"] and r["ocp_corpus"] <= r["onb_corpus"] for r in rep)
    assert rep[0]["ocp_utt"] < rep[0]["onb_utt"]  # composition helps somewhere


def test_confusion_network_keeps_every_hypothesis_as_a_path():
    hyps = [s.split() for s in ("a b c d", "a x c d", "a b d", "a b c d e", "q")]
    cn = confusion_network(hyps)
    for h in hyps:
        assert cn_oracle_edits(cn, h) == 0
    assert cn_oracle_edits(cn, "a x c d e".split()) == 0  # a composition no single hypothesis has
    assert cn_oracle_edits(cn, "z".split()) == 1
    assert corpus_wer(["a b c", "d e"], ["a x c", ""]) == pytest.approx(3 / 5)


def test_prompt_block_round_trips():
    for nb in (["a b .", "", "x . y", "c", "d"], ["", "", "", "", ""], ["only one"], ["i'm $one thousand,", "b"]):
        assert parse_nbest("User: " + format_nbest(nb) + "\nAssistant:") == nb
    with pytest.raises(ValueError, match="no N-best block"):
        parse_nbest("User: What is 2+2?\nAssistant:")


@needs_data
def test_few_shot_demos(loaded):
    ex = HyPoradise(sets=["chime4"], shots=3, limit=4).load()
    for e in ex:
        assert len(e["demos"]) == 3 and all(d["reference"] != e["reference"] for d in e["demos"])
        msgs = HyPoradise(sets=["chime4"]).prompt(e)
        assert [m["role"] for m in msgs] == ["user", "assistant"] * 3 + ["user"]
        assert parse_nbest("\n".join(m["content"] for m in msgs)) == e["nbest"]  # the last block is the query
    other = HyPoradise(sets=["cv"], shots=2, shot_set="atis", limit=1).load()[0]
    assert [d["reference"] for d in other["demos"]] == [e["reference"] for e in loaded["atis"][:2]]


@needs_data
def test_nbest_strategies_on_tiny_model(tiny_target, loaded):
    task = HyPoradise(sets=["ls_clean"])
    picks = [loaded["ls_clean"][i] for i in (0, 1, 552)] + loaded["td3"][:2]  # 552 holds an empty hypothesis
    for e in picks:
        ids = tiny_target.render(task.prompt(e))
        first = NBestFirst().generate(tiny_target, ids, 400, torch.Generator().manual_seed(0))
        assert tiny_target.decode(first.tokens) == e["nbest"][0] and first.target_forwards == 0
        assert first.finish == "eos" and first.tokens[-1] in tiny_target.eos_ids
        for norm in (False, True):
            tr = NBestRerank(length_norm=norm).generate(tiny_target, ids, 400, torch.Generator().manual_seed(0))
            text = tiny_target.decode(tr.tokens)
            assert text == e["nbest"][tr.extra["chosen_rank"]] and tr.finish == "eos"
            assert tr.target_forwards == tr.extra["scored_hypotheses"] == len(set(e["nbest"]))
            assert 0 <= task.score(e, text)["quality"]
    with pytest.raises(ValueError, match="no N-best block"):
        NBestFirst().generate(tiny_target, tiny_target.render("What is 2+2?"), 8, torch.Generator())


@needs_data
@pytest.mark.parametrize("strategy", ["nbest_first", "nbest_rerank"])
def test_runner_end_to_end(tmp_path, strategy):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["model=tiny_random", "task=hyporadise", f"strategy={strategy}",
                                            "task.sets=[atis,wsj_score]", "task.limit=2",
                                            f"run.results_dir={tmp_path}", "run.progress=false"])
    summary = run(cfg)
    assert summary["n"] == 4 and summary["errors"] == 0
    (d,) = [p for p in tmp_path.iterdir() if (p / "rows.jsonl").exists()]
    rows = read_rows(d / "rows.jsonl")
    assert json.loads((d / "meta.json").read_text())["quality_metric"] == "wer"
    assert all({"edits", "ref_words", "set"} <= set(r["score"]) for r in rows)
    by_set = wer_by_set(rows)
    assert set(by_set) == {"atis", "wsj_score", "all"} and by_set["all"]["n"] == 4
    if strategy == "nbest_first":  # the 1-best text, scored like the oracle report's 1-best
        assert all(r["target_forwards"] == 0 for r in rows)
        assert summary["quality"] == pytest.approx(by_set["all"]["utt_wer"])
