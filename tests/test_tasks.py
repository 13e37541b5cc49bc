"""Tasks: real data loads, gold scores perfect, empty scores zero, malformed rows are named."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import ConfigError
from tasks.answers import last_number, normalize_number, strict_final_number
from tasks.demo_arith import DemoArithmetic, make_problems
from tasks.gsm8k import GSM8K
from tests.conftest import ROOT

DATA = Path(os.environ["HARNESS_DATA_DIR"])
needs_data = pytest.mark.skipif(not (DATA / "gsm8k").is_dir(), reason="HARNESS_DATA_DIR has no gsm8k")


@pytest.mark.parametrize("text,strict,flex", [
    ("so 3+4=7\n#### 7", "7", "7"), ("#### 1,234", "1234", "1234"), ("#### $18.00", "18", "18"),
    ("The answer is 42.", None, "42"), ("#### -5\nthen 9", "-5", "9"), ("no digits", None, None),
    ("#### 0.50", "0.5", "0.5"), ("", None, None)])
def test_extraction(text, strict, flex):
    assert strict_final_number(text) == strict and last_number(text) == flex


def test_normalize_number():
    assert normalize_number("1,000") == "1000" and normalize_number("7.") == "7" and normalize_number("x") is None


@needs_data
def test_gsm8k_real_data_gold_and_empty():
    task = GSM8K()
    ex = task.load()
    assert len(ex) == 1319 and len({e["id"] for e in ex}) == 1319
    assert ex[0]["gold"] == "18"  # Janet's ducks
    raw = task.raw_rows()
    for e, r in zip(ex[:50], raw[:50]):
        assert task.score(e, r["answer"])["quality"] == 1.0  # the gold solution scores perfect
        assert task.score(e, "")["quality"] == 0.0
    assert GSM8K(limit=5).load() == ex[:5]
    assert "step by step" in task.prompt(ex[0])[0]["content"]


@needs_data
def test_gsm8k_socratic_config():
    assert len(GSM8K(config="socratic", limit=3).load()) == 3


def test_malformed_rows_are_named(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n{not json\n")
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: not valid JSON"):
        GSM8K(path=str(f)).load()
    f.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: missing field\(s\) answer"):
        GSM8K(path=str(f)).load()
    f.write_text(json.dumps({"question": "q", "answer": "no final marker"}) + "\n")
    with pytest.raises(ConfigError, match="row 0 has no '#### <number>'"):
        GSM8K(path=str(f)).load()


def test_missing_path_is_clear():
    with pytest.raises(ConfigError, match="does not exist"):
        GSM8K(path="/nonexistent/gsm8k.jsonl").check_data()


def test_hub_unreachable_is_one_clear_line():
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_DATA_DIR"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    code = "from tasks.gsm8k import GSM8K\ntry:\n    GSM8K(limit=1).load()\nexcept Exception as e:\n    print(type(e).__name__, e)"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.stdout.startswith("ConfigError task gsm8k: cannot load openai/gsm8k") and "HARNESS_DATA_DIR" in p.stdout


def test_demo_set_is_ours_deterministic_and_correct():
    a, b = make_problems(), make_problems()
    assert a == b and len(a) == 36 and len({r["question"] for r in a}) == 36
    t = DemoArithmetic()
    for e, r in zip(t.load(), a):
        # every annotated calculation <<expr=value>> is right, and the final line is the gold
        for expr, val in __import__("re").findall(r"<<([^=]+)=([^>]+)>>", r["answer"]):
            assert eval(expr) == float(val)  # noqa: S307 - our own generated arithmetic
        assert t.score(e, r["answer"])["quality"] == 1.0 and t.score(e, "")["quality"] == 0.0
