"""The HTML report: self-contained, and what a reader sees in a real headless Chromium."""

import os
import re
import shutil
import subprocess

import pytest

from harness import leaderboard
from harness.report import diff_html
from harness.runner import run
from tests.helpers import cfg_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    run(cfg_for(tmp, "task.limit=3"))
    run(cfg_for(tmp, "task.limit=3", "strategy=sampling", "strategy.sampling.temperature=1.0"))
    out = tmp / "leaderboard"
    assert leaderboard.main(["--results", str(tmp), "--out", str(out)]) == 0
    return out / "report.html"


def test_report_is_self_contained_with_tables_plots_and_outputs(report):
    page = report.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the report must not fetch anything"
    assert "<link" not in page
    assert page.count('<table class="sortable">') == 1 and page.count("<tbody><tr>") == 1
    assert page.count("data:image/png;base64,") >= 1
    assert "Outputs side by side" in page and "example " in page
    assert "sampling / " in page and "greedy / " in page


def test_word_diff_marks_insertions_and_deletions():
    d = diff_html("the answer is 4", "the answer is 5 now")
    assert "<del>4</del>" in d and "<ins>5 now</ins>" in d and d.startswith("the answer is")
    assert diff_html("same text", "same text") == "same text"
    assert "&lt;b&gt;" in diff_html("x", "<b>")  # outputs are escaped, never injected


def _chromium_or_skip():
    if CHROMIUM:
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail("CI must install Debian's chromium (.ci/run) for the report's browser test")
    pytest.skip("chromium not installed (apt-get install chromium)")


def test_report_renders_in_headless_chromium(report, tmp_path):
    exe = _chromium_or_skip()
    common = [exe, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1600",
              "--virtual-time-budget=5000"]
    dom = subprocess.run([*common, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
    # the page's own script ran after load: it counts images that decoded and table rows present
    plots = re.search(r'data-plots-rendered="(\d+)"', dom)
    rows = re.search(r'data-tables="(\d+)"', dom)
    assert plots and int(plots.group(1)) >= 1, "no plot rendered in the browser"
    assert rows and int(rows.group(1)) == 2, "the table's two runs are not in the rendered DOM"
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120)
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)[..., :3]
    assert img.shape[0] >= 800
    # the table's header cells are drawn (their background colour, #f2f4f7) ...
    header = (abs(img - [242 / 255, 244 / 255, 247 / 255]).max(axis=-1) < 2 / 255).sum()
    assert header > 2000, "no table header in the screenshot"
    # ... and the plot's blue markers are on screen (matplotlib's C0, #1f77b4)
    blue = (abs(img - [31 / 255, 119 / 255, 180 / 255]).max(axis=-1) < 8 / 255).sum()
    assert blue > 20, "no plot in the screenshot"
