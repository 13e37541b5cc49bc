"""HypoGen: loading by field names, the Bit-only prompt, and the two-order LM judge."""

import json

import pytest

from harness.errors import ConfigError
from harness.runner import run
from tasks.hypogen import HypoGen, LMJudge, _flip_of
from tests.helpers import cfg_for, run_dirs
from tests.test_task_contract import hypogen_fixture


class StubJudge:
    """Prefers whichever Flip contains `word`; records the calls (to check both orders are asked)."""

    def __init__(self, word):
        self.word, self.calls = word, []

    def prefers_a(self, bit, a, b):
        self.calls.append((a, b))
        return self.word in a or self.word not in b


def task_with(tmp_path, judge=None, **kw):
    t = HypoGen(path=str(hypogen_fixture(tmp_path)), **kw)
    if judge is not None:
        t._judge = judge
    return t


def test_prompt_gives_the_bit_only(tmp_path):
    t = task_with(tmp_path)
    ex = t.load()[0]
    text = " ".join(m["content"] for m in t.prompt(ex))
    assert ex["bit"] in text and ex["flip"] not in text and ex["spark"] not in text


def test_judge_is_asked_in_both_orders_and_position_bias_cancels(tmp_path):
    ex = task_with(tmp_path).load()[0]
    better = StubJudge("linear")  # the reference contains 'linear': generated loses in both orders
    s = task_with(tmp_path, better).score(ex, "Use sparse attention patterns.")
    assert s["quality"] == 0.0 and len(better.calls) == 2
    assert better.calls[0][0] == better.calls[1][1]  # the generated Flip was A, then B
    win = StubJudge("recurrent")
    assert task_with(tmp_path, win).score(ex, "A recurrent state replaces attention.")["quality"] == 1.0

    class AlwaysA:  # pure position bias: one win, one loss
        def prefers_a(self, bit, a, b):
            return True

    assert task_with(tmp_path, AlwaysA()).score(ex, "Something else entirely.")["quality"] == 0.5


def test_identical_and_empty_outputs_need_no_judge(tmp_path):
    t = task_with(tmp_path, StubJudge("x"))
    ex = t.load()[0]
    assert t.score(ex, t.gold_output(ex))["quality"] == 1.0
    assert t.score(ex, "   ")["quality"] == 0.0
    assert t._judge.calls == []
    assert _flip_of("Flip: new idea\nmore\nSpark: why") == "new idea more"


def test_missing_field_names_the_columns(tmp_path):
    with pytest.raises(ConfigError, match="no field 'hypothesis'.*columns: Bit, Flip, Spark"):
        task_with(tmp_path, fields={"flip": "hypothesis"}).load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no test file"):
        HypoGen(path=str(tmp_path / "empty")).check_data()


def test_real_judge_path_on_the_tiny_model(tmp_path):
    """The LM judge loads a model config and compares the 'A' / 'B' logits (tiny random model)."""
    j = LMJudge("tiny_random")
    a = j.prefers_a("bit", "one flip", "another flip")
    assert isinstance(a, bool) and j._ab[0] != j._ab[1]
    with pytest.raises(ConfigError, match="not found"):
        LMJudge("nope").prefers_a("b", "x", "y")


def test_runner_writes_judged_rows(tmp_path):
    f = hypogen_fixture(tmp_path / "data")
    run(cfg_for(tmp_path / "res", "task=hypogen", f"task.path={f}", "task.judge=tiny_random", "task.limit=2"))
    (d,) = run_dirs(tmp_path / "res")
    rows = [json.loads(line) for line in (d / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["error"] is None and r["quality"] in (0.0, 0.5, 1.0) for r in rows)
    assert all("judge_first" in r["score"] for r in rows)
