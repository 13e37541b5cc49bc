"""The Task contract over every conf/task/*.yaml (like tests/test_runner.py's over strategies):
each loads offline from HARNESS_DATA_DIR, builds chat prompts, declares its metric's direction,
scores its own gold output best and an empty output worst."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tests.conftest import ROOT

NAMES = sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml"))
OVERRIDES = {"humaneval": ["task.execute=true"]}  # score by running the code (sandboxed)


def load_task(name):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"task={name}", "task.limit=3", *OVERRIDES.get(name, [])])
    return instantiate(cfg.task, _convert_="all")


def test_every_task_yaml_has_a_module_of_its_name():
    for name in NAMES:
        text = (ROOT / "conf" / "task" / f"{name}.yaml").read_text()
        assert text.lstrip().startswith("#"), f"{name}.yaml opens with a comment saying what it is"
        assert f"tasks.{name}." in text, f"conf/task/{name}.yaml builds a class from tasks/{name}.py"
        assert (ROOT / "tasks" / f"{name}.py").exists()


@pytest.mark.parametrize("name", NAMES)
def test_task_contract(name):
    task = load_task(name)
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
