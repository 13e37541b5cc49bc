"""Every notebook runs top to bottom on a results folder (cells executed in order, Agg backend)."""

import json
import os
from pathlib import Path

import matplotlib
import pytest

from harness.runner import run
from tests.conftest import ROOT
from tests.test_runner import cfg_for

matplotlib.use("Agg")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_results(nb, tmp_path, monkeypatch):
    run(cfg_for(tmp_path, "task.limit=2"))
    run(cfg_for(tmp_path, "task.limit=2", "strategy=pld"))
    monkeypatch.setenv("HARNESS_RESULTS", str(tmp_path))
    scope: dict = {}
    for cell in json.loads(nb.read_text())["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{nb.name}", "exec"), scope)  # noqa: S102
    assert len(scope["table"]) == 2 and len(scope["drafting"]) == 1
