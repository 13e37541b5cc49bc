"""The Task contract over every conf/task/*.yaml (like tests/test_runner.py's over strategies):
each loads offline from HARNESS_DATA_DIR, builds chat prompts, declares its metric's direction,
scores its own gold output best and an empty output worst."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tests.conftest import ROOT

NAMES = sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml"))
OVERRIDES = {"humaneval": ["task.execute=true"]}  # score by running the code (sandboxed)
FIXTURE_TASKS = {"hypogen"}  # data not available offline here: a fixture the test writes, in the data's schema


def hypogen_fixture(folder: Path) -> Path:
    """Three rows in HypoGen's Bit-Flip-Spark schema (column case as a dump might have it)."""
    rows = [{"Bit": "Attention must be computed over every pair of tokens.",
             "Flip": "Approximate attention with a low-rank kernel so cost grows linearly with length.",
             "Spark": "Kernel feature maps factorise the softmax."},
            {"Bit": "Speculative decoding needs a separately trained draft model.",
             "Flip": "Draft from the target's own n-gram statistics, with no second model.",
             "Spark": "Text repeats itself."},
            {"Bit": "Larger batches always train faster.",
             "Flip": "Past a critical batch size, more data per step stops reducing the number of steps.",
             "Spark": "Gradient noise scale."}]
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / "test.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def load_task(name, extra=()):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"task={name}", "task.limit=3", *OVERRIDES.get(name, []), *extra])
    return instantiate(cfg.task, _convert_="all")


def test_every_task_yaml_has_a_module_of_its_name():
    for name in NAMES:
        text = (ROOT / "conf" / "task" / f"{name}.yaml").read_text()
        assert text.lstrip().startswith("#"), f"{name}.yaml opens with a comment saying what it is"
        assert f"tasks.{name}." in text, f"conf/task/{name}.yaml builds a class from tasks/{name}.py"
        assert (ROOT / "tasks" / f"{name}.py").exists()


@pytest.mark.parametrize("name", NAMES)
def test_task_contract(name, tmp_path):
    extra = [f"task.path={hypogen_fixture(tmp_path)}"] if name in FIXTURE_TASKS else []
    if name == "hub":  # the generic task on the real GSM8K test file, as a user would point it at a local dataset
        import os

        extra = [f"task.path={os.environ['HARNESS_DATA_DIR']}/gsm8k/test.jsonl", "task.answer='{answer}'",
                 "task.metric=last_number"]
    task = load_task(name, extra)
    task.check_data()
    examples = task.load()
    assert 1 <= len(examples) <= 3 * max(1, len(getattr(task, "sets", None) or [1]))
    assert len({e["id"] for e in examples}) == len(examples)
    direction = task.direction()
    assert direction in ("higher", "lower")
    for ex in examples[:2]:
        msgs = task.prompt(ex)
        assert isinstance(msgs, list) and msgs and all({"role", "content"} <= set(m) for m in msgs)
        assert msgs[-1]["role"] == "user" and msgs[-1]["content"].strip()
        assert set(task.prompt_structure(ex)) <= {"nbest", "context"}
        gold = task.score(ex, task.gold_output(ex))["quality"]
        empty = task.score(ex, "")["quality"]
        best, worst = (1.0, 0.0) if direction == "higher" else (0.0, 1.0)
        assert gold == pytest.approx(best), f"{name}: the gold output scores {gold}, not {best}"
        assert empty == pytest.approx(worst), f"{name}: the empty output scores {empty}, not {worst}"
