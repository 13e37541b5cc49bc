"""Sweeps beyond one machine on existing engines: Hydra's Ray launcher on a local Ray cluster the
test starts (2 CPUs), and the submitit launcher's local executor. Both must write exactly the rows
a joblib sweep writes, and an interrupted Ray sweep must resume to the same rows."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.store import read_rows
from tests.conftest import ROOT
from tests.helpers import run_dirs

SWEEP = ["strategy=greedy,sampling", "task.limit=4", "run.max_new_tokens=8", "run.threads=1", "task._target_=tests.helpers.CrashDemo"]
TIMING = {"wall_s", "ttft_s", "timestamp", "peak_rss_mb", "model_s", "outside_model_s"}  # measurements of this process, not behaviour


def _need(module: str):
    try:
        __import__(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{module} must be installed in CI (pyproject's cluster extra)")
        pytest.skip(f"{module} not installed (pip install -e '.[cluster]')")


def _sweep(results: Path, *extra, env=None):
    return subprocess.run([sys.executable, "-m", "harness", "-m", "model=tiny_random", "task=demo_arith",
                           f"run.results_dir={results}", "run.progress=false", f"hydra.sweep.dir={results}/_multirun",
                           *SWEEP, *extra], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def _rows(results: Path) -> dict:
    out = {}
    for d in run_dirs(results):
        rows = read_rows(d / "rows.jsonl")
        assert len({(r["example_id"], r["sample"]) for r in rows}) == len(rows), f"duplicate rows in {d.name}"
        out[d.name] = sorted(({k: v for k, v in r.items() if k not in TIMING} for r in rows),
                             key=lambda r: (r["example_id"], r["sample"]))
    return out


@pytest.fixture(scope="module")
def joblib_rows(tmp_path_factory):
    res = tmp_path_factory.mktemp("joblib")
    p = _sweep(res)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(res)
    assert len(rows) == 2 and all(len(v) == 4 for v in rows.values())
    return rows


@pytest.fixture(scope="module")
def ray_cluster():
    _need("ray")
    _need("hydra_plugins.hydra_ray_launcher")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short path: Ray's socket names are length-limited
    ray = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    start = subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                            f"--temp-dir={tmp}", "--disable-usage-stats"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert start.returncode == 0, start.stderr[-3000:]
    yield f"127.0.0.1:{port}"
    # stop THIS cluster only (its processes carry its temp dir in their arguments): `ray stop` would
    # stop every Ray cluster on the machine, e.g. another pytest-xdist worker's
    subprocess.run(["pkill", "-TERM", "-f", str(tmp)], capture_output=True, timeout=60)
    subprocess.run(["pkill", "-KILL", "-f", str(tmp)], capture_output=True, timeout=60)
    shutil.rmtree(tmp, ignore_errors=True)


def _ray_args(address, crash_at=None):
    args = ["hydra/launcher=ray_cluster", f"+hydra.launcher.ray.init.address={address}", "~hydra.launcher.ray.init.num_cpus",
            f"+hydra.launcher.ray.init.runtime_env.env_vars.PYTHONPATH={ROOT}"]
    if crash_at is not None:  # no Ray retries: each retry would resume, crash again and wait for a new worker
        args.append("+hydra.launcher.ray.remote.max_retries=0")
        args.append(f"+hydra.launcher.ray.init.runtime_env.env_vars.HARNESS_TEST_CRASH_AT='{crash_at}'")
    return args


def test_ray_sweep_on_a_local_cluster_writes_the_joblib_rows(ray_cluster, joblib_rows, tmp_path):
    p = _sweep(tmp_path, *_ray_args(ray_cluster))
    assert p.returncode == 0, p.stderr[-3000:]
    assert _rows(tmp_path) == joblib_rows


def test_interrupted_ray_sweep_resumes_to_the_same_rows(ray_cluster, joblib_rows, tmp_path):
    crashed = _sweep(tmp_path, *_ray_args(ray_cluster, crash_at=2))
    assert crashed.returncode != 0, "the workers were meant to die at the third example"
    partial = _rows(tmp_path)
    assert partial and all(len(v) == 2 for v in partial.values()), ({k: len(v) for k, v in partial.items()},
                                                                     crashed.stderr[-3000:])
    again = _sweep(tmp_path, *_ray_args(ray_cluster))
    assert again.returncode == 0, again.stderr[-3000:]
    assert _rows(tmp_path) == joblib_rows


def test_submitit_local_sweep_writes_the_joblib_rows(joblib_rows, tmp_path):
    _need("hydra_plugins.hydra_submitit_launcher")
    p = _sweep(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=15", "hydra.launcher.cpus_per_task=1")
    assert p.returncode == 0, p.stderr[-3000:]
    assert _rows(tmp_path) == joblib_rows
