"""MATH-500 and AIME: data loads, gold scores 1, empty scores 0, bad rows are named, and the
answer checker (math-verify in a worker process) handles the known traps, threads and timeouts."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from harness.errors import ConfigError
from tasks import answers
from tasks.aime import AIME
from tasks.answers import (WorkerTimeout, compare_math, last_boxed, math_equal, normalize_aime,
                           run_in_worker)
from tasks.math500 import MATH500

DATA = Path(os.environ["HARNESS_DATA_DIR"])
needs_math = pytest.mark.skipif(not (DATA / "math500" / "test.jsonl").is_file(),
                                reason="HARNESS_DATA_DIR has no math500")
needs_aime = pytest.mark.skipif(not (DATA / "aime" / "aime_2024").is_dir(), reason="HARNESS_DATA_DIR has no aime")


# ---------------------------------------------------------------------- extraction helpers
@pytest.mark.parametrize("text,expected", [
    ("so \\boxed{5}.", "5"),
    ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("$\\fbox{42}$", "42"),
    ("the answer is $\\boxed 7$.", "7"),
    ("\\boxed {12}", "12"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),          # escaped set braces do not unbalance
    ("\\boxed{3} and then \\boxed{\\frac{1}{", "3"),  # truncated last box: the one before it
    ("\\boxed{}", None), ("no box 5", None), ("", None), (None, None),
    ("\\boxedx{3}", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("s,n", [("033", 33), ("33", 33), (" 204 ", 204), ("0", 0), ("000", 0), ("33.0", 33),
                                 ("n = 33", 33), ("\\text{33}", 33), ("1,000", 1000), ("$45$", 45),
                                 ("3.5", None), ("\\frac{1}{2}", None), ("", None), (None, None), ("x", None)])
def test_normalize_aime(s, n):
    assert normalize_aime(s) == n


# ---------------------------------------------------------------------- math_equal traps
TRAPS = [
    ("\\frac{1}{2}", "0.5", True),
    ("0.5", "\\frac{1}{2}", True),
    ("\\dfrac{3}{4}", "\\frac34", True),
    ("10,\\!080", "10080", True),
    ("10080", "10,080", True),
    ("\\text{(C)}", "C", True),
    ("\\text{(C)}", "(C)", True),
    ("\\text{(C)}", "D", False),
    ("1 \\pm \\sqrt{19}", "1 \\pm \\sqrt{19}", True),
    ("1 \\pm \\sqrt{19}", "1 \\pm \\sqrt{17}", False),
    ("1 \\pm \\sqrt{19}", "1 + \\sqrt{19}", False),
    ("[2, 5)", "[2,5)", True),
    ("[2, 5)", "(2,5)", False),
    ("[2, 5)", "[2,5]", False),
    ("30^\\circ", "30", True),
    ("30", "30^\\circ", True),
    ("30^\\circ", "60", False),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)", True),
    ("2\\sqrt{2}", "\\sqrt{8}", True),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}", False),
    ("x^2+2x+1", "(x+1)^2", True),
    ("5", "", False),
    ("5", "x", False),
]


@pytest.mark.parametrize("gold,pred,equal", TRAPS + [("5", "", False), ("5", None, False)])
def test_math_equal_traps(gold, pred, equal):
    assert math_equal(gold, pred) is equal


@pytest.mark.parametrize("gold,pred,equal", TRAPS)
def test_math_verify_itself_on_the_traps(gold, pred, equal):
    """The same traps through math-verify alone (no string fast path), gold first."""
    assert run_in_worker(answers._verify_pair, gold, pred, timeout_s=10) is equal


def test_math_equal_in_a_thread():
    """math-verify's own SIGALRM timeout fails outside the main thread; ours must not."""
    out, errors = {}, []

    def work():
        try:
            out["half"] = compare_math("\\frac{1}{2}", "0.5")  # not the fast path: goes to the worker
            out["wrong"] = compare_math("\\frac{1}{2}", "0.25")
        except Exception as e:  # pragma: no cover - the failure being tested for
            errors.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join(120)
    assert not t.is_alive() and not errors
    assert out == {"half": (True, "verified"), "wrong": (False, "different")}


def _hang(gold, pred):  # runs in the worker process (imported there by reference)
    time.sleep(60)
    return True


def test_timeout_kills_the_worker_and_scores_false(monkeypatch):
    math_equal("1", "1.0")  # worker started and warm
    t0 = time.monotonic()
    with pytest.raises(WorkerTimeout):
        run_in_worker(time.sleep, 60, timeout_s=1.0)
    assert time.monotonic() - t0 < 30

    monkeypatch.setattr(answers, "_verify_pair", _hang)
    before = answers.VERIFY_STATS["timeouts"]
    t0 = time.monotonic()
    assert compare_math("\\frac{1}{2}", "0.5", timeout_s=1.0) == (False, "timeout")
    assert time.monotonic() - t0 < 60  # includes re-starting the killed worker
    assert answers.VERIFY_STATS["timeouts"] == before + 1
    monkeypatch.undo()
    assert compare_math("\\frac{1}{2}", "0.5") == (True, "verified")  # a fresh worker takes over


def test_pathological_input_is_cut_by_the_timeout():
    """sympy computes (10^9)! for this pair (CPU-bound, no memory growth): the worker is killed
    after the timeout, the pair scores 0 as 'timeout', from a non-main thread too."""
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", compare_math("(10^{9})!", "(10^{9}+1)!", timeout_s=2.0)))
    t0 = time.monotonic()
    t.start()
    t.join(120)
    assert out == {"r": (False, "timeout")} and time.monotonic() - t0 < 60
    assert math_equal("\\frac{1}{2}", "0.5")


def test_worker_reports_errors():
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        run_in_worker(divmod, 1, 0)
    assert run_in_worker(divmod, 7, 2) == (3, 1)


# ---------------------------------------------------------------------- MATH-500
@needs_math
def test_math500_loads():
    task = MATH500()
    ex = task.load()
    assert len(ex) == 500 and len({e["id"] for e in ex}) == 500
    assert ex[0]["id"] == "test/precalculus/807.json" and ex[0]["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    subjects = {}
    for e in ex:
        subjects[e["subject"]] = subjects.get(e["subject"], 0) + 1
        assert e["level"] in (1, 2, 3, 4, 5) and e["problem"] and e["answer"]
    assert subjects == {"Algebra": 124, "Intermediate Algebra": 97, "Prealgebra": 82, "Number Theory": 62,
                        "Precalculus": 56, "Geometry": 41, "Counting & Probability": 38}
    assert MATH500(limit=5).load() == ex[:5]
    msg = task.prompt(ex[0])
    assert msg[0]["role"] == "user" and "\\boxed{}" in msg[0]["content"] and ex[0]["problem"] in msg[0]["content"]


@needs_math
def test_math500_gold_scores_one_and_empty_zero():
    task = MATH500()
    for e in task.load():
        s = task.score(e, "Reasoning... so the final answer is $\\boxed{" + e["answer"] + "}$.")
        assert s["quality"] == 1.0, e["id"]
        assert s["subject"] == e["subject"] and s["level"] == e["level"]
        assert task.score(e, "")["quality"] == 0.0
        assert task.score(e, "I do not know.")["quality"] == 0.0
    json.dumps(s)  # score stats are stored in result rows


@needs_math
def test_math500_solutions_verify_against_answers():
    """The reference solution's last box, compared through math-verify (not the string fast
    path), matches the answer: the parser reads the real answer formats."""
    rows = MATH500().raw_rows()
    ok = [run_in_worker(answers._verify_pair, r["answer"], last_boxed(r["solution"]), timeout_s=10) for r in rows]
    bad = [(r["unique_id"], r["answer"]) for r, k in zip(rows, ok) if not k]
    assert not bad


def test_math500_malformed_rows_are_named(tmp_path):
    f = tmp_path / "bad.jsonl"
    good = {"problem": "p", "answer": "1", "subject": "Algebra", "level": 1, "unique_id": "a"}
    f.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: not valid JSON"):
        MATH500(path=str(f)).load()
    f.write_text(json.dumps(good) + "\n" + json.dumps({k: v for k, v in good.items() if k != "level"}) + "\n")
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: missing field\(s\) level"):
        MATH500(path=str(f)).load()
    f.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(ConfigError, match="duplicate unique_id"):
        MATH500(path=str(f)).load()
    with pytest.raises(ConfigError, match="does not exist"):
        MATH500(path=str(tmp_path / "nope.jsonl")).load()
    with pytest.raises(ConfigError, match="test.jsonl' not found"):
        MATH500(path=str(tmp_path)).check_data()


# ---------------------------------------------------------------------- AIME
AIME25_I = [70, 588, 16, 117, 279, 504, 821, 77, 62, 81, 259, 510, 204, 60, 735]
AIME25_II = [468, 49, 82, 106, 336, 293, 237, 610, 149, 907, 113, 19, 248, 104, 240]


@needs_aime
def test_aime_loads_years_and_parts():
    ex = AIME().load()
    assert len(ex) == 60 and len({e["id"] for e in ex}) == 60
    assert ex[0]["id"] == "aime-2024-I-01" and ex[0]["answer"] == 204
    y24 = AIME(years=[2024]).load()
    assert len(y24) == 30 and [e["number"] for e in y24] == list(range(1, 16)) * 2
    assert {e["id"]: e["answer"] for e in y24}["aime-2024-II-04"] == 33  # "033" in the file
    y25 = AIME(years=[2025]).load()
    assert len(y25) == 30 and [e["answer"] for e in y25] == AIME25_I + AIME25_II
    i25 = AIME(years=[2025], parts=["I"]).load()
    ii25 = AIME(years=[2025], parts=["II"]).load()
    assert len(i25) == 15 and len(ii25) == 15 and i25 + ii25 == y25
    assert i25[2]["id"] == "aime-2025-I-03" and "17_b" in i25[0]["problem"]
    assert len(AIME(years=[2024], parts=["II"]).load()) == 15
    assert AIME(limit=4).load() == ex[:4]
    assert "between 0 and 999" in AIME().prompt(ex[0])[0]["content"]


@needs_aime
def test_aime_gold_scores_one_and_empty_zero():
    task = AIME()
    examples = task.load()
    by_url = {f"{e['year']}_AIME_{e['part']}_Problems/Problem_{e['number']}": e for e in examples}
    for line in (DATA / "aime" / "aime_2024" / "test.jsonl").read_text().splitlines():
        r = json.loads(line)  # the file's own answer strings, zero-padded ones included ("033")
        assert task.score(by_url["/".join(r["url"].split("/")[-2:])],
                          f"\\boxed{{{r['answer']}}}")["quality"] == 1.0
    for e in examples:
        gold = e["answer"]
        assert task.score(e, f"... so the answer is $\\boxed{{{gold}}}$.")["quality"] == 1.0, e["id"]
        assert task.score(e, f"\\boxed{{{gold:03d}}}")["quality"] == 1.0  # zero-padded
        assert task.score(e, f"The answer is {gold}.")["quality"] == 1.0  # no box: last number
        assert task.score(e, "")["quality"] == 0.0
        assert task.score(e, f"\\boxed{{{gold + 1}}}")["quality"] == 0.0
        assert task.score(e, f"{gold} ... \\boxed{{\\frac{{1}}{{2}}}}")["quality"] == 0.0  # a non-integer box


def _aime_tree(tmp_path: Path) -> Path:
    root = tmp_path / "aime"
    shutil.copytree(DATA / "aime", root)
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return root


@needs_aime
def test_aime_malformed_rows_are_named(tmp_path):
    root = _aime_tree(tmp_path)
    csv = root / "aime_2025" / "aime_2025_I" / "answers.csv"
    text = csv.read_text()
    csv.write_text(text.replace("3,16", "3;16"))
    with pytest.raises(ConfigError, match=r"aime_2025_I/answers.csv:4: expected"):
        AIME(path=str(root), years=[2025]).load()
    csv.write_text(text.replace("3,16", "3,sixteen"))
    with pytest.raises(ConfigError, match=r"answers.csv:4: answer 'sixteen' is not an integer"):
        AIME(path=str(root), years=[2025]).load()
    csv.write_text(text)
    (root / "aime_2025" / "aime_2025_I" / "problems" / "7.tex").unlink()
    with pytest.raises(ConfigError, match=r"answers.csv:8: problem file .*7.tex' not found"):
        AIME(path=str(root), years=[2025]).load()
    assert len(AIME(path=str(root), years=[2025], parts=["II"]).load()) == 15  # part I not read

    j = root / "aime_2024" / "test.jsonl"
    lines = j.read_text().splitlines()
    j.write_text("\n".join(lines[:2] + ["{broken"] + lines[2:]) + "\n")
    with pytest.raises(ConfigError, match=r"aime_2024/test.jsonl:3: not valid JSON"):
        AIME(path=str(root), years=[2024]).load()
    row = json.loads(lines[1])
    row["url"] = "https://example.org/x"
    j.write_text("\n".join([lines[0], json.dumps(row)] + lines[2:]) + "\n")
    with pytest.raises(ConfigError, match=r"aime_2024/test.jsonl:2: cannot read year/part/number"):
        AIME(path=str(root), years=[2024]).load()


def test_aime_bad_options():
    with pytest.raises(ConfigError, match="years"):
        AIME(years=[2023])
    with pytest.raises(ConfigError, match="parts"):
        AIME(parts=["III"])
    with pytest.raises(ConfigError, match="parts"):
        AIME(parts=[])


@pytest.mark.parametrize("name,cls", [("math500", MATH500), ("aime", AIME)])
def test_yaml_builds_the_task_and_every_key_is_commented(name, cls):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from tests.conftest import ROOT

    f = ROOT / "conf" / "task" / f"{name}.yaml"
    task = instantiate(OmegaConf.load(f), _convert_="all")
    assert type(task) is cls and task.name == name
    for line in f.read_text().splitlines():
        assert line.startswith("#") or " # " in line, f"uncommented key in {f.name}: {line}"


# ---------------------------------------------------------------------- undecidable is an error, not a 0
@needs_math
def test_forced_math_verify_timeout_is_an_error_row_then_retried(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from harness.runner import run
    from harness.store import read_rows
    from tests.conftest import ROOT

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["model=tiny_random", "task=math500", "task.limit=1",
                                           "task.verify_timeout_s=1.0", f"run.results_dir={tmp_path}",
                                           "run.max_new_tokens=4", "run.progress=false"])
    monkeypatch.setattr(MATH500, "extract_answer", lambda self, out: "0.123456")  # not the gold: the worker decides
    monkeypatch.setattr(answers, "_verify_pair", _hang)
    s = run(cfg)
    (d,) = [p for p in tmp_path.iterdir() if (p / "rows.jsonl").exists()]
    (row,) = read_rows(d / "rows.jsonl")
    assert row["quality"] is None and s["errors"] == 1
    assert row["error"].startswith("UndecidableComparison: math-verify timed out after 1.0 s")
    monkeypatch.setattr(answers, "_verify_pair", _real_verify_pair)  # math-verify works again
    cfg.run.retry_errors = True
    s = run(cfg)
    (row,) = read_rows(d / "rows.jsonl")
    assert row["error"] is None and row["quality"] == 0.0 and row["score"]["verify"] == "different"


_real_verify_pair = answers._verify_pair


def test_math_equal_raises_when_undecidable(monkeypatch):
    monkeypatch.setattr(answers, "_verify_pair", _hang)
    with pytest.raises(answers.UndecidableComparison, match="timed out"):
        math_equal("\\frac{1}{2}", "0.5", timeout_s=1.0)
    monkeypatch.setattr(answers, "_verify_pair", _boom)
    with pytest.raises(answers.UndecidableComparison, match="failed"):
        MATH500().same_answer("\\frac{1}{2}", "0.5")


def _boom(gold, pred):  # runs in the worker process
    raise ValueError("sympy crashed")


def test_votes_count_undecidable_comparisons():
    from types import SimpleNamespace

    from strategies.self_consistency import SelfConsistency

    def same(a, b):
        if {a, b} == {"1", "2"}:
            raise answers.UndecidableComparison("math-verify timed out")
        return a == b

    s = SelfConsistency(n=3)
    s.extract_answer, s.same_answer, s.undecidable = (lambda t: t), same, 0
    classes = s.answer_classes([SimpleNamespace(text=t) for t in ("1", "2", "1")])
    assert classes == [("1", [0, 2]), ("2", [1])] and s.undecidable == 1
