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
NOTEBOOKS = [ROOT / "notebooks" / "acceptance_and_speed.ipynb"]  # the runs-folder notebook (the family ones: below)


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
    assert "paper's claim" in scope["claims"].columns and len(scope["claims"]) >= 5


# ---- family notebooks (#15): executed for real (nbclient + ipykernel) on the committed results
from tools import build_notebooks  # noqa: E402

FAMILY = sorted(build_notebooks.NOTEBOOKS)


def test_there_is_one_notebook_per_family_and_the_committed_ones_match_their_builder():
    import nbformat

    assert len(FAMILY) == 10  # 8 families + the two analysis papers
    for name in FAMILY:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        want = [s for _, s in build_notebooks.NOTEBOOKS[name]]
        assert ["".join(c["source"]) for c in nb.cells] == want, f"{name}.ipynb differs from tools/build_notebooks.py"


@pytest.mark.parametrize("name", FAMILY)
def test_family_notebook_executes_and_shows_a_claim_table_and_a_plot(name):
    nb = build_notebooks.build(name, build_notebooks.NOTEBOOKS[name], execute=True, timeout=240)
    outputs = [o for c in nb.cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    html = " ".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "paper&#x27;s claim" in html or "paper's claim" in html, "no claim-vs-measured table"
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot"
